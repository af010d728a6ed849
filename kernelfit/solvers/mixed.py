"""Mixed precision: K stored and factored in float32, the exact system solved to float64
accuracy by refinement against float64 kernel products recomputed from X.

The float32 factor L32 (half the memory of float64 tiles) is used as a preconditioner
M = L32 L32^T. The float64 system K alpha = Y is then solved by

``refinement='cg'`` (default)  preconditioned conjugate gradients, one independent CG
                               recurrence per right-hand side sharing every K product;
``refinement='ir'``            classic iterative refinement alpha += M^-1 (Y - K alpha)
                               (LAPACK's dsposv scheme).

Every product with K is computed from float64 kernel tiles recomputed from X (K is never
stored in float64). Each pass over K multiplies several columns at once: the search
directions of all classes *and* the current iterate, so the residual of every iterate is
formed from freshly computed float64 products (residual replacement: the reported
residual is ``Y - (K x_k + a_k K p_k)``, one rounding away from ``Y - K x_{k+1}``, never
a recurrence that drifts). The iteration stops at a relative residual
``||Y - K alpha||_F / ||Y||_F <= tol``.

When float32 potrf breaks down (K too ill-conditioned for single precision), the Gram
tiles are rebuilt with a diagonal shift that grows from ``1e-6 * mean(diag K)`` until the
factorization succeeds; the shifted factor is then only a preconditioner of the
*unshifted* system, and the solution info says so (``shift``, ``preconditioner_only``).
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Callable, List, Optional

import numpy as np

from ..backend import Backend, array_namespace, get_backend
from ..errors import InputError, NotPositiveDefiniteError
from ..kernels import Kernel, row_norms_sq
from .tiled import (TiledSymmetric, build_gram, cholesky_inplace, cholesky_solve,
                    default_tile_size, kernel_matvec, n_threads_default)

__all__ = ["solve_mixed", "refine", "factor_with_shift", "kernel_diagonal", "REFINEMENTS"]

REFINEMENTS = ("cg", "ir")
#: shifts tried after a float32 breakdown, as multiples of mean(diag K)
SHIFT_START = 1e-6
SHIFT_GROWTH = 10.0
SHIFT_MAX_TRIES = 7


# ---------------------------------------------------------------- kernel helpers
def kernel_diagonal(kernel: Kernel, X) -> np.ndarray:
    """diag k(X, X) in float64 (without forming any tile)."""
    xp = array_namespace(X)
    n = X.shape[0]
    if kernel.diagonal_value is not None:
        return xp.full(n, float(kernel.diagonal_value))
    sq = row_norms_sq(X)
    if kernel.name == "linear":
        return sq
    if kernel.name == "polynomial":
        return (kernel.gamma * sq + kernel.coef0) ** kernel.degree
    # generic fallback: one row at a time (any kernel added later)
    return xp.asarray([float(kernel.block(X[i:i + 1], X[i:i + 1], same=True)[0, 0])
                       for i in range(n)])


# ---------------------------------------------------------------- factor (with shift)
def factor_with_shift(kernel: Kernel, X, *, tile_size: int, dtype=np.float32,
                      backend: Backend = None, ridge: float = 0.0, show_progress=None,
                      allow_shift: bool = True, n_threads: Optional[int] = None,
                      log: Optional[list] = None):
    """Build and factor K + ridge I in ``dtype``; on breakdown rebuild with a growing shift.

    Returns ``(T, shift, attempts)`` where ``T`` is the factored :class:`TiledSymmetric`
    of K + (ridge + shift) I. ``shift`` is 0.0 when no breakdown happened.
    """
    be = backend if backend is not None else get_backend("cpu")
    stats = kernel.prepare(X)
    mean_diag = None
    shift = 0.0
    attempts = []
    timings = {"gram": 0.0, "factor": 0.0}
    for attempt in range(SHIFT_MAX_TRIES + 1):
        t0 = time.perf_counter()
        T = build_gram(kernel, X, tile_size=tile_size, dtype=dtype, backend=be,
                       ridge=ridge + shift, stats=stats, n_threads=n_threads,
                       show_progress=show_progress)
        be.synchronize()
        t1 = time.perf_counter()
        timings["gram"] += t1 - t0
        try:
            cholesky_inplace(T, show_progress=show_progress)
            be.synchronize()
            timings["factor"] += time.perf_counter() - t1
            attempts.append({"shift": shift, "ok": True})
            return T, shift, attempts, timings
        except NotPositiveDefiniteError as exc:
            timings["factor"] += time.perf_counter() - t1
            T.free()
            be.free_pool()
            attempts.append({"shift": shift, "ok": False, "pivot": exc.index})
            if not allow_shift:
                raise
            if mean_diag is None:
                mean_diag = float(np.mean(be.to_numpy(kernel_diagonal(kernel, X)))) + ridge
                if not (mean_diag > 0 and math.isfinite(mean_diag)):
                    raise
            shift = SHIFT_START * mean_diag if shift == 0.0 else shift * SHIFT_GROWTH
            if log is not None:
                log.append(f"{np.dtype(dtype).name} Cholesky broke down at row {exc.index}; "
                           f"retrying with diagonal shift {shift:.3e}")
    raise NotPositiveDefiniteError(
        f"the {np.dtype(dtype).name} factorization failed even with a diagonal shift of "
        f"{shift:.3e} ({SHIFT_MAX_TRIES} tries): the kernel matrix is probably not positive "
        "definite (duplicate points, a low-rank kernel)", index=-1, causes=["shift_failed"],
        dtype=np.dtype(dtype).name, ridge=float(ridge), n=int(X.shape[0]),
        d=int(X.shape[1]), max_diagonal=float(mean_diag or 0.0), kernel=kernel.name)


# ---------------------------------------------------------------- refinement
def _rel(R, ynorm: float) -> float:
    return float(np.linalg.norm(R) / ynorm) if ynorm > 0 else float(np.linalg.norm(R))


def refine(matvec: Callable, precond: Callable, Y, *, tol: float = 1e-10,
           max_iter: int = 30, method: str = "cg", x0=None, show_progress=None,
           log: Optional[list] = None) -> dict:
    """Solve K X = Y to ``||Y - K X||_F <= tol ||Y||_F`` with K products from ``matvec``.

    ``matvec(V)`` returns K V in float64 (V is (n, c)); ``precond(R)`` applies M^-1 (the
    float32 or float64 Cholesky solve). Returns a dict with ``alpha``, ``K_alpha``,
    ``history`` (relative residual after each pass), ``iterations`` (updates of alpha
    after the initial solve), ``matvecs`` (passes over K), ``converged``.
    """
    if method not in REFINEMENTS:
        raise InputError(f"refinement must be one of {', '.join(REFINEMENTS)}, got {method!r}")
    Y = np.asarray(Y, dtype=np.float64)
    m = Y.shape[1]
    ynorm = float(np.linalg.norm(Y))
    history: List[float] = []
    times: List[float] = []
    t0 = time.perf_counter()
    x = precond(Y) if x0 is None else np.array(x0, dtype=np.float64)
    KX = matvec(x)
    matvecs = 1
    R = Y - KX
    history.append(_rel(R, ynorm))
    times.append(time.perf_counter() - t0)
    iterations = 0
    converged = history[-1] <= tol
    stalled = 0
    best = (history[-1], x, KX)
    fresh = True  # KX is a direct product of x
    if not converged and method == "cg":
        Z = precond(R)
        P = Z.copy()
        rz = np.einsum("ij,ij->j", R, Z)
    while not converged and iterations < max_iter:
        t1 = time.perf_counter()
        if method == "cg":
            if fresh:
                KP = matvec(P)
            else:  # refresh K x in the same pass (nearly free: the tiles are the cost)
                both = matvec(np.concatenate([P, x], axis=1))
                KP, KX = both[:, :m], both[:, m:]
            matvecs += 1
            pKp = np.einsum("ij,ij->j", P, KP)
            a = np.where(pKp > 0, rz / np.where(pKp > 0, pKp, 1.0), 0.0)
            x = x + P * a
            KX = KX + KP * a
            fresh = False
            R = Y - KX
        else:
            D = precond(R)
            if fresh:
                KD = matvec(D)
            else:
                both = matvec(np.concatenate([D, x], axis=1))
                KD, KX = both[:, :m], both[:, m:]
            matvecs += 1
            x = x + D
            KX = KX + KD
            fresh = False
            R = Y - KX
        iterations += 1
        history.append(_rel(R, ynorm))
        times.append(time.perf_counter() - t1)
        if log is not None:
            log.append(f"{method} step {iterations}: relative residual {history[-1]:.3e}")
        if history[-1] < best[0]:
            best = (history[-1], x, KX)
            stalled = 0
        else:
            stalled += 1
        converged = history[-1] <= tol
        # CG minimizes the K-norm of the error, so its residual may rise for a few steps
        if converged or stalled >= (10 if method == "cg" else 3):
            break
        if method == "cg":
            Z = precond(R)
            rz_new = np.einsum("ij,ij->j", R, Z)
            beta = np.where(rz > 0, rz_new / np.where(rz > 0, rz, 1.0), 0.0)
            P = Z + P * beta
            rz = rz_new
    res, x, KX = best
    return {"alpha": x, "K_alpha": KX, "history": history, "step_seconds": times,
            "iterations": iterations, "matvecs": matvecs, "converged": bool(res <= tol),
            "relative_residual": res, "stalled": stalled >= (10 if method == "cg" else 3) and res > tol}


# ---------------------------------------------------------------- the solver
def solve_mixed(kernel: Kernel, X, Y, opts, backend: Optional[Backend] = None,
                plan=None):
    """Float32 storage + factorization, float64 solution by CG / iterative refinement."""
    from .exact import ExactSolution

    be = backend if backend is not None else get_backend(opts.device)
    xp = be.xp
    n = X.shape[0]
    if Y.ndim == 1:
        Y = Y[:, None]
    tile_size = opts.tile_size or default_tile_size(n, be.device)
    Xb = xp.asarray(X)
    Yh = np.asarray(be.to_numpy(Y), dtype=np.float64)
    log: List[str] = []
    T, shift, attempts, timings = factor_with_shift(
        kernel, Xb, tile_size=tile_size, dtype=np.float32, backend=be, ridge=opts.ridge,
        show_progress=opts.show_progress, log=log)
    stats = kernel.prepare(Xb)

    def precond(R):
        return be.to_numpy(cholesky_solve(T, xp.asarray(R), np.float64))

    def matvec(V):
        KV = kernel_matvec(kernel, Xb, xp.asarray(V), tile_size=tile_size, backend=be,
                           stats=stats, show_progress=opts.show_progress)
        KV = be.to_numpy(KV)
        if opts.ridge:
            KV = KV + opts.ridge * np.asarray(V)
        return KV

    t0 = time.perf_counter()
    out = refine(matvec, precond, Yh, tol=opts.tol, max_iter=opts.max_iter,
                 method=opts.refinement, show_progress=opts.show_progress, log=log)
    timings["solve"] = time.perf_counter() - t0
    T.free()
    del T
    be.free_pool()
    info = refinement_info(out, opts, shift=shift, attempts=attempts, log=log)
    info.update({"tile_size": tile_size, "ridge": opts.ridge, "precision": "mixed",
                 "storage_dtype": "float32",
                 "factor_flops": n ** 3 / 3.0,
                 "factor_gflops_per_s": n ** 3 / 3.0 / max(timings["factor"], 1e-12) / 1e9})
    if not out["converged"]:
        warnings.warn(f"mixed-precision refinement stopped at relative residual "
                      f"{out['relative_residual']:.3e} > tol {opts.tol:g} after "
                      f"{out['iterations']} steps", RuntimeWarning, stacklevel=2)
    sol = ExactSolution(alpha=xp.asarray(out["alpha"]), solver="cholesky", dtype="mixed",
                        device=be.device, timings=timings,
                        memory_plan=plan.as_dict() if plan is not None else {}, info=info)
    sol.K_alpha = xp.asarray(out["K_alpha"])
    return sol


def refinement_info(out: dict, opts, *, shift: float = 0.0, attempts=None, log=None) -> dict:
    """The JSON-ready part of a refinement result."""
    info = {
        "refinement": opts.refinement,
        "tol": opts.tol,
        "max_iter": opts.max_iter,
        "iterations": out["iterations"],
        "matvecs": out["matvecs"],
        "refinement_history": [float(h) for h in out["history"]],
        "refinement_step_seconds": [float(s) for s in out["step_seconds"]],
        "relative_residual": float(out["relative_residual"]),
        "converged": out["converged"],
        "shift": float(shift),
        "preconditioner_only": bool(shift > 0),
        "factor_attempts": attempts or [],
        "residual_method": ("float64 K products recomputed from X tile by tile "
                            "(K never stored in float64), residual replaced each pass"),
    }
    if shift > 0:
        info["note"] = (f"float32 Cholesky broke down; K + {shift:.3e} I was factored and used "
                        f"only as a preconditioner of the unshifted system")
    if out.get("stalled"):
        info["note_stalled"] = "residual stopped decreasing; the best iterate was kept"
    if log:
        info["log"] = list(log)
    return info


# ---------------------------------------------------------------- options and routing
PRECISIONS = ("auto", "float64", "float32", "mixed")
DEFAULT_MAX_ITER = 30


def validate_beyond_memory(opts) -> None:
    """Check the beyond-memory fields of :class:`SolveOptions` (raises InputError)."""
    if opts.precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got "
                         f"{opts.precision!r}")
    try:
        tol = float(opts.tol)
    except (TypeError, ValueError):
        raise InputError(f"tol must be a number, got {opts.tol!r}") from None
    if not (math.isfinite(tol) and 1e-15 <= tol < 1):
        raise InputError(f"tol must be a relative residual in [1e-15, 1), got {opts.tol!r} "
                         "(float64 cannot resolve residuals much below 1e-15)")
    opts.tol = tol
    if opts.max_iter is None:
        opts.max_iter = DEFAULT_MAX_ITER
    if isinstance(opts.max_iter, bool) or int(opts.max_iter) != opts.max_iter or \
            not (1 <= int(opts.max_iter) <= 100_000):
        raise InputError(f"max_iter must be a positive integer, got {opts.max_iter!r}")
    opts.max_iter = int(opts.max_iter)
    if opts.refinement not in REFINEMENTS:
        raise InputError(f"refinement must be one of {', '.join(REFINEMENTS)}, got "
                         f"{opts.refinement!r}")
    if opts.resume and not opts.ooc_dir:
        raise InputError("resume continues an out-of-core run: give its folder (ooc_dir)",
                         param="resume")
    if opts.ooc_dir is not None and not str(opts.ooc_dir).strip():
        raise InputError("the out-of-core folder is empty")
    if opts.distributed not in (None, "local"):
        raise InputError(f"distributed must be 'local' (or give a scheduler address), got "
                         f"{opts.distributed!r}", param="distributed")
    if opts.scheduler is not None and (not isinstance(opts.scheduler, str) or
                                       not opts.scheduler.strip()):
        raise InputError(f"scheduler must be an address such as tcp://host:8786, got "
                         f"{opts.scheduler!r}")
    if opts.scheduler and opts.distributed:
        raise InputError("give either a Dask scheduler address or distributed='local', not both",
                         param="scheduler")
    special = opts.precision == "mixed" or opts.ooc_dir or opts.scheduler or opts.distributed
    if special and opts.solver != "cholesky":
        raise InputError(f"mixed precision, out-of-core and Dask solves use the Cholesky "
                         f"solver, not {opts.solver!r}")


def plan_mixed(n: int, d: int, m: int, tile_size: int, *, device="cpu", available=None,
               n_threads: Optional[int] = None):
    """Memory plan of a mixed-precision solve (float32 tiles + float64 vectors)."""
    from ..memory import plan_mixed_solve

    return plan_mixed_solve(n, d, m, tile_size, device=device, available=available,
                            n_threads=n_threads or n_threads_default())


def dispatch_beyond_memory(kernel: Kernel, X, Y, opts, be: Backend):
    """Route a Cholesky solve by precision and placement (in core, mixed, out-of-core, Dask);
    None for the eigh/lstsq fallbacks, which ``solve_exact`` runs in core."""
    if opts.solver != "cholesky":
        return None
    if Y.ndim == 1:
        Y = Y[:, None]
    n, d = X.shape
    if Y.shape[0] != n:
        raise InputError(f"X has {n} rows but the targets have {Y.shape[0]}")
    if opts.scheduler or opts.distributed:
        from .distributed import solve_distributed

        return solve_distributed(kernel, X, Y, opts, be)
    if opts.ooc_dir:
        from .ooc import solve_ooc

        return solve_ooc(kernel, X, Y, opts, be)
    from ..memory import plan_exact_solve

    ts = opts.tile_size or default_tile_size(n, be.device)
    precision = opts.precision
    reason = f"asked for precision {precision}"
    available = be.free_memory() if opts.check_memory else None
    if precision == "auto":
        if opts.dtype == "float32":
            precision, reason = "float32", "auto: dtype float32 asked for"
        else:
            p64 = plan_exact_solve(n, d, Y.shape[1], dtype=np.float64, tile_size=ts,
                                   solver="cholesky", device=be.device, available=available)
            p64.items.pop("predictions", None)
            p64.items.pop("data", None)
            pm = plan_mixed(n, d, Y.shape[1], ts, device=be.device, available=available)
            if p64.fits() or not pm.fits():
                precision, reason = "float64", "auto: the float64 plan fits in memory"
                if not p64.fits():
                    reason = "auto: neither float64 nor mixed fits (float64 pre-flight refuses)"
            else:
                precision = "mixed"
                reason = (f"auto: the float64 plan ({p64.describe()}) does not fit in the "
                          f"available memory, float32 storage + float64 refinement does")
    if precision == "mixed":
        plan = plan_mixed(n, d, Y.shape[1], ts, device=be.device, available=available)
        if opts.check_memory:
            plan.check(request={"n": n, "d": d, "n_outputs": Y.shape[1], "solver": "cholesky",
                                "precision": "mixed", "tile_size": opts.tile_size})
        sol = solve_mixed(kernel, X, Y, opts, be, plan=plan)
        sol.info["precision_reason"] = reason
        return sol
    # plain float64 / float32 path of solve_exact
    import copy

    from .exact import solve_in_core

    sub = copy.copy(opts)
    sub.dtype = precision
    sol = solve_in_core(kernel, X, Y, sub, be)
    sol.info["precision"] = precision
    sol.info["precision_reason"] = reason
    return sol


def preflight_beyond_memory(cfg, n, d, n_classes, n_test, be, tile_size):
    """The pipeline's pre-flight for mixed / out-of-core / Dask solves (None: plain path).

    Returns the plan dict after checking it (raises MemoryPlanError when even the
    mixed-precision plan does not fit).
    """
    from ..memory import plan_exact_solve

    if cfg.solver != "cholesky":
        return None
    avail = be.free_memory()
    if cfg.ooc_dir or cfg.scheduler or cfg.distributed:
        plan = plan_mixed(n, d, n_classes, min(tile_size, n), device=be.device,
                          available=avail)
        plan.items.pop("K tiles (float32)", None)  # on disk / on the workers
        out = plan.as_dict()
        out["note"] = "K tiles live on disk or on the Dask workers"
        return out
    if cfg.precision == "mixed" or (cfg.precision == "auto" and cfg.dtype == "float64"):
        if cfg.precision == "auto":
            p64 = plan_exact_solve(n, d, n_classes, n_test=n_test, dtype=np.float64,
                                   tile_size=tile_size, device=be.device, available=avail)
            p64.items.pop("data", None)
            if p64.fits():
                return None
        plan = plan_mixed(n, d, n_classes, tile_size, device=be.device, available=avail)
        plan.add("predictions", 2 * 8.0 * max(n_test, 0) * max(n_classes, 1))
        if cfg.precision == "auto" and not plan.fits():
            return None  # neither fits: the plain pre-flight refuses with every way out
        plan.check(request={"n": n, "d": d, "n_outputs": n_classes, "n_test": n_test,
                            "solver": "cholesky", "precision": cfg.precision,
                            "dtype": cfg.dtype, "tile_size": cfg.tile_size})
        out = plan.as_dict()
        out["precision"] = "mixed"
        return out
    return None
