"""Exact solves of K alpha = Y (all right-hand sides at once), with honest diagnostics.

``solver='cholesky'`` (default) builds K in lower tiles and factors it in place with the
blocked Cholesky of :mod:`kernelfit.solvers.cholesky`; no ridge unless asked for. When K is
not numerically positive definite the error says why (a linear kernel of rank at most d,
duplicate training points, an indefinite kernel) and points to the explicit minimum-norm
fallbacks instead of switching silently:

``solver='eigh'``   alpha = V diag(1/lambda) V^T Y over eigenvalues lambda > rcond * max
                    (the minimum-norm solution for a singular positive semi-definite K);
``solver='lstsq'``  SciPy's least-squares (gelsd) minimum-norm solution.

Both fallbacks hold a dense K (n x n) and its eigenvectors or workspace.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from typing import Dict, Optional, Tuple

import numpy as np

from ..backend import Backend, get_backend
from ..errors import InputError, NotPositiveDefiniteError
from ..kernels import Kernel
from .cholesky import cholesky_inplace, cholesky_solve, estimate_condition
from .conditioning import conditioning_probe
from .distributed import solve_distributed
from .mixed import Fallback, solve_mixed
from .ooc import solve_ooc
from .options import DTYPES, SOLVERS, SolveOptions
from .plan import SolvePlan, check, plan_solve
from .products import build_gram, kept_storage, kernel_diagonal, stored_kernel_matvec
from .refine import ExactSolution
from .tiles import TiledSymmetric

__all__ = ["SolveOptions", "ExactSolution", "solve_exact", "solve_in_core", "SOLVERS",
           "DTYPES", "diagnose_not_pd", "duplicate_points"]

log = logging.getLogger(__name__)


def duplicate_points(X, Y=None) -> Tuple[int, int]:
    """``(duplicates, conflicting)``: rows of ``X`` that repeat an earlier row, and those of
    them whose target (a row of ``Y``: a label or values) differs from that row's, which no
    function interpolates both of (0 without ``Y``)."""
    Xn = np.ascontiguousarray(X)
    n = Xn.shape[0]
    try:
        _, first, group = np.unique(Xn.view(np.dtype((np.void, Xn.dtype.itemsize * Xn.shape[1])))
                                    .ravel(), return_index=True, return_inverse=True)
    except (TypeError, ValueError):  # pragma: no cover - exotic dtypes
        return 0, 0
    dup = n - first.shape[0]
    if not dup or Y is None:
        return dup, 0
    Yn = np.asarray(Y).reshape(n, -1)
    return dup, int(np.any(Yn != Yn[first[group.ravel()]], axis=1).sum())


def rank_deficiency(kernel: Kernel, X) -> Optional[Tuple[str, str]]:
    """``(cause, words)`` where K = k(X, X) has rank below n by construction, else None:
    the linear kernel in d < n dimensions, a degree-p polynomial kernel in d dimensions (rank
    at most C(d + p, p)); d counts the columns of X that are not zero in every row."""
    from math import comb

    if kernel.name not in ("linear", "polynomial"):
        return None
    Xn = np.asarray(X)
    n = Xn.shape[0]
    d = int(np.any(Xn != 0, axis=0).sum())
    dims = f"d = {d} (the columns of X that are not zero in every row)"
    if kernel.name == "linear" and d < n:
        return ("low_rank_linear", f"the linear kernel K = X X^T has rank at most {dims} < "
                                   f"n = {n}, so it is singular")
    if kernel.name == "polynomial" and comb(d + kernel.degree, kernel.degree) < n:
        r = comb(d + kernel.degree, kernel.degree)
        return ("low_rank_polynomial", f"a degree-{kernel.degree} polynomial kernel in {dims} "
                                       f"has rank at most {r} < n = {n}")
    return None


def diagnose_not_pd(kernel: Kernel, X, ridge: float = 0.0, index: int = -1,
                    dtype: str = "float64", n_outputs: int = 1,
                    Y=None) -> NotPositiveDefiniteError:
    """Why K = k(X, X) may fail to be numerically positive definite: the error to raise,
    its message in words and its facts (``causes``, ``n_duplicates``, ``n_conflicting``:
    duplicates whose target ``Y`` differs from the first of their copies, ...) as data."""
    n, _ = X.shape
    Xn = np.asarray(X)
    reasons, causes = [], []
    low = None if ridge else rank_deficiency(kernel, Xn)
    if low is not None:
        causes.append(low[0])
        reasons.append(low[1])
    dup, conflicting = duplicate_points(Xn, Y)
    if dup:
        causes.append("duplicates")
        reasons.append(f"{dup} training point(s) are exact duplicates of others, which makes "
                       "rows of K equal" + (
                           f"; {conflicting} of them with another target than their copy: "
                           "no function interpolates both" if conflicting else ""))
    if not reasons:
        causes.append("ill_conditioned")
        reasons.append(f"K is too ill-conditioned for {dtype} (points very close together, "
                       "a large bandwidth), or the kernel is not positive definite")
    where = f" (first failing pivot at row {index})" if index >= 0 else ""
    diag = np.asarray(kernel_diagonal(kernel, Xn), dtype=np.float64)
    mean_diag = float(np.mean(np.abs(diag))) if diag.size else 0.0
    max_diag = float(np.max(np.abs(diag))) if diag.size else 0.0
    return NotPositiveDefiniteError(
        f"K is not numerically positive definite in {dtype}{where}: " + "; ".join(reasons) +
        ". Ways out: " + ("precision='float64' (a float64 factorization: enough where "
                          "cond(K) is below about 1e15), "
                          if str(dtype) == "float32" and not dup else "") +
        "solver='eigh' or 'lstsq' (the explicit minimum-norm solution), "
        "a ridge > 0 (a regularized solve)" + (
            ", removing the duplicate points (one target per point)" if conflicting else
            ", removing the duplicate points" if dup else ""),
        index=index, causes=causes, dtype=str(dtype), ridge=float(ridge), n=int(n),
        d=int(Xn.shape[1]), n_outputs=int(n_outputs), n_duplicates=int(dup),
        n_conflicting=conflicting,
        mean_diagonal=mean_diag, max_diagonal=max_diag, kernel=kernel.name,
        problem=f"K is not numerically positive definite in {dtype}{where}: " +
                "; ".join(reasons))


def _sync(be: Backend):
    be.synchronize()
    return time.perf_counter()


def solve_exact(kernel: Kernel, X, Y, options: Optional[SolveOptions] = None,
                backend: Optional[Backend] = None, *,
                plan: Optional[SolvePlan] = None) -> ExactSolution:
    """Solve k(X, X) alpha = Y exactly.

    ``X`` (n, d) and ``Y`` (n, m) may be NumPy arrays; they are moved to the backend.
    Returns an :class:`ExactSolution` whose ``alpha`` lives on the backend. The route
    (in core, mixed precision, out of core, Dask) and the memory are planned once, by
    :func:`kernelfit.solvers.plan.plan_solve`: ``plan`` is that plan when the caller made
    it already (the run layer's pre-flight, :func:`kernelfit.solvers.plan.preflight_plan`,
    for these options and n); without it the solve plans, and checks, here. Where
    ``precision='auto'`` planned mixed precision by time, the conditioning probe
    (:func:`kernelfit.solvers.conditioning.conditioning_probe`) may rule it out first, on
    a sample of these rows: the solve then runs the plan's float64 fallback; where it chose
    float64 by time although mixed precision is faster at its fewest refinement passes
    (the plan's ``alternative``), the probe's predicted passes may pick mixed precision.
    """
    opts = (options or SolveOptions()).validate()
    be = backend if backend is not None else get_backend(opts.device)
    if Y.ndim == 1:
        Y = Y[:, None]
    n, d = X.shape
    if Y.shape[0] != n:
        raise InputError(f"X has {n} rows but the targets have {Y.shape[0]}")
    if plan is not None and plan.n is not None and plan.n != n:
        raise InputError(f"the plan was made for n = {plan.n} training points, X has {n}")
    splan = plan if plan is not None else _plan(n, d, Y.shape[1], opts, be,
                                                grid=kernel.int_scale is not None)
    probe = None
    if splan.route == "mixed" and splan.may_fall_back:
        # auto chose mixed by time before seeing the data: a sample of K may say otherwise
        probe = conditioning_probe(kernel, X, be, splan.choice["expected_time"], splan.tol,
                                   max_iter=opts.max_iter)
        if probe["verdict"] == "float64":
            log.info("precision auto: float64: %s", probe["why"])
            splan = dataclasses.replace(splan.fallback, choice=splan.choice, reason=(
                f"{splan.reason}; but {probe['why']}: float64 instead"))
    elif splan.alternative is not None:
        # auto chose float64 by time, hedging on the refinement's pass count: a sample of
        # K may predict passes few enough for mixed precision to be the faster
        alt = splan.alternative
        probe = conditioning_probe(kernel, X, be, splan.choice["expected_time"], alt.tol,
                                   planned="float64", max_iter=opts.max_iter)
        if probe["verdict"] == "mixed":
            log.info("precision auto: mixed: %s", probe["why"])
            splan = dataclasses.replace(alt, reason=(
                f"{splan.reason}; but {probe['why']}: mixed precision instead"))
        elif probe["rows"]:
            splan = dataclasses.replace(splan, reason=f"{splan.reason}; {probe['why']}")
    fell_back = False
    if splan.route == "dask":
        sol = solve_distributed(kernel, X, Y, opts, be, splan)
    elif splan.route == "ooc":
        try:
            sol = solve_ooc(kernel, X, Y, opts, be, splan)
        except Fallback as fb:  # auto's mixed precision out of core: float64 tiles instead
            log.warning("precision auto: falling back to a float64 factorization out of "
                        "core: %s", fb.reason)
            sub = copy.copy(opts)
            sub.precision = "float64"
            sol = solve_ooc(kernel, X, Y, sub, be,
                            dataclasses.replace(splan, precision="float64"))
            _fell_back(sol, splan, fb, reused=False)
            fell_back = True
    elif splan.route == "mixed":
        try:
            sol = solve_mixed(kernel, X, Y, opts, be, splan)
        except Fallback as fb:
            log.warning("precision auto: falling back to a float64 factorization: %s",
                        fb.reason)
            sub = copy.copy(opts)
            sub.precision = "float64"
            # the float64 plan was made with the mixed one (fb.gram: K in float64 tiles
            # already, factored in place)
            sol = solve_in_core(kernel, X, Y, sub, be, splan.fallback, gram=fb.gram)
            _fell_back(sol, splan, fb, reused=fb.gram is not None)
            fell_back = True
    else:
        sol = solve_in_core(kernel, X, Y, opts, be, splan)
    if not fell_back and opts.solver == "cholesky":
        sol.info["precision"] = sol.info.get("precision", splan.precision)
        sol.info["precision_reason"] = (
            splan.reason if sol.info["precision"] == splan.precision
            else f"{splan.reason}; instead: {sol.info.get('precision_note', 'another')}")
    sol.info["plan_choice"] = splan.choice  # after a fallback: what auto expected of mixed
    if probe is not None:
        sol.info["conditioning_probe"] = probe
        if probe.get("seconds"):
            sol.timings["probe"] = probe["seconds"]
    return sol


def _fell_back(sol: ExactSolution, splan: SolvePlan, fb: Fallback, *, reused: bool) -> None:
    """Record on ``sol`` that auto's mixed precision fell back to float64, and why."""
    sol.info["precision"] = "float64"
    sol.info["precision_reason"] = f"{splan.reason}; fell back to float64: {fb.reason}"
    sol.info["precision_fallback"] = {"reason": fb.reason, "mixed_timings": dict(fb.timings),
                                      "reused_float64_tiles": reused}


def _plan(n: int, d: int, m: int, opts: SolveOptions, be: Backend, *,
          grid: bool = False) -> SolvePlan:
    splan = plan_solve(n, d, m, opts, device=be.device, available=be.free_memory(),
                       check=opts.check_memory, backend=be, grid=grid)
    if opts.check_memory:
        check(splan, opts, n, d, m)
    return splan


def solve_in_core(kernel: Kernel, X, Y, opts: SolveOptions, be: Backend,
                  splan: SolvePlan, gram: Optional[TiledSymmetric] = None) -> ExactSolution:
    """The in-memory solve with K stored in the plan's precision (validated options).

    ``gram``: K + ridge I already built in float64 tiles (factored in place; no copy is
    kept for the residual then).
    """
    xp = be.xp
    n, d = X.shape
    if Y.ndim == 1:
        Y = Y[:, None]
    if be.device == "gpu" and opts.solver != "cholesky" and n * n >= 2 ** 31:
        raise InputError(f"solver {opts.solver!r} on the GPU builds a dense n x n K, and at "
                         f"n = {n} that exceeds the 2^31 elements cuSOLVER's 32-bit workspace "
                         "sizes allow; use solver 'cholesky', or the CPU", param="solver")
    # the minimum-norm solvers hold K, its eigenvectors or workspace in float64 whatever
    # dtype asks for: the precision recorded is the one computed in
    precision = splan.precision if opts.solver == "cholesky" else "float64"
    dtype = np.float64 if precision == "float64" else np.float32
    tile_size = splan.tile_size
    plan = splan.memory
    # K alpha for the residual: from a copy of K kept through the factorization (memory
    # speed) where the plan made room for it, else recomputed tile by tile by the caller.
    keep = splan.keep_budget is not None and gram is None
    budget = splan.keep_budget
    timings: Dict[str, float] = {}
    info: dict = {"tile_size": tile_size, "ridge": opts.ridge, "kept_k_for_residual": keep}
    Xb = xp.asarray(X)
    Yb = xp.asarray(Y, dtype=xp.float64)
    if opts.solver == "cholesky":
        t0 = _sync(be)
        # row statistics once, for the Gram and for the kept copy's residual product
        stats = kernel.prepare(Xb) if gram is None else None
        K = gram if gram is not None else build_gram(
            kernel, Xb, tile_size=tile_size, dtype=dtype, backend=be, ridge=opts.ridge,
            show_progress=opts.show_progress, keep_copy=keep, keep_budget=budget, stats=stats)
        t1 = _sync(be)
        timings["gram"] = t1 - t0
        if keep:
            info["kept_off_diagonal_tiles"] = len(K.kept)
            info["kept_storage"] = kept_storage(K)
        try:
            cholesky_inplace(K, show_progress=opts.show_progress)
        except NotPositiveDefiniteError as exc:
            K.free()
            be.free_pool()
            raise diagnose_not_pd(kernel, be.to_numpy(Xb), opts.ridge, exc.index,
                                  dtype=np.dtype(dtype).name, n_outputs=Yb.shape[1],
                                  Y=be.to_numpy(Yb)) from None
        t2 = _sync(be)
        timings["factor"] = t2 - t1
        alpha = cholesky_solve(K, Yb).astype(xp.float64)
        if not bool(xp.isfinite(alpha).all()):
            K.free()
            raise diagnose_not_pd(kernel, be.to_numpy(Xb), opts.ridge,
                                  dtype=np.dtype(dtype).name, n_outputs=Yb.shape[1],
                                  Y=be.to_numpy(Yb))
        t3 = _sync(be)
        timings["solve"] = t3 - t2
        if opts.estimate_condition:
            info["condition"] = estimate_condition(K)
            timings["condition"] = _sync(be) - t3
        info["factor_flops"] = n ** 3 / 3.0
        info["factor_gflops_per_s"] = n ** 3 / 3.0 / max(timings["factor"], 1e-12) / 1e9
        K_alpha = None
        if keep:
            t4 = _sync(be)
            K_alpha = stored_kernel_matvec(K, alpha, kernel=kernel, X=Xb, stats=stats)
            timings["residual"] = _sync(be) - t4
        K.free()
        del K
        be.free_pool()
    else:
        t0 = _sync(be)
        K = build_gram(kernel, Xb, tile_size=tile_size, dtype=np.float64, backend=be,
                       ridge=opts.ridge, show_progress=opts.show_progress)
        Kd = _dense_from_tiles(K, be)
        K.free()
        del K
        t1 = _sync(be)
        timings["gram"] = t1 - t0
        alpha, rank, evals = _min_norm_solve(Kd, Yb, opts, be)
        info["rank"] = rank
        info["precision"] = "float64"
        info["precision_reason"] = (f"solver {opts.solver} computes in float64" + (
            f" (dtype {opts.dtype} applies to the Cholesky solver only)"
            if opts.dtype != "float64" else ""))
        if opts.estimate_condition and evals is not None:
            lo, hi = float(evals[0]), float(evals[-1])
            info["condition"] = {"lambda_max": hi, "lambda_min": lo,
                                 "condition_number": hi / lo if lo > 0 else float("inf"),
                                 "method": "eigh"}
        del Kd
        t2 = _sync(be)
        timings["factor"] = t2 - t1
        timings["solve"] = 0.0
        be.free_pool()
        K_alpha = None
    return ExactSolution(alpha=alpha, solver=opts.solver, dtype=precision, device=be.device,
                         timings=timings, memory_plan=plan.as_dict(), info=info,
                         K_alpha=K_alpha)


def _dense_from_tiles(T: TiledSymmetric, be: Backend):
    xp = be.xp
    K = xp.empty((T.n, T.n), dtype=xp.float64)
    for i, (si, ei) in enumerate(T.bounds):
        for j, (sj, ej) in enumerate(T.bounds[: i + 1]):
            t = T.tiles[i][j]
            K[si:ei, sj:ej] = t
            if i != j:
                K[sj:ej, si:ei] = t.T
        T.tiles[i] = [None] * (i + 1)
    return K


def _min_norm_solve(K, Y, opts: SolveOptions, be: Backend):
    """Minimum-norm solution of K alpha = Y for a symmetric, possibly singular K."""
    xp = be.xp
    n = K.shape[0]
    # one spectral cutoff for both, n eps of the largest: lstsq's LAPACK default (eps) kept
    # directions of pure rounding, and gave coefficients of 1e11 and a negative
    # alpha^T K alpha where eigh's minimum-norm solution has 156
    rcond = opts.rcond if opts.rcond is not None else n * np.finfo(np.float64).eps
    if opts.solver == "eigh":
        if be.device == "cpu":
            from scipy.linalg import eigh

            # K is symmetric: its transpose is the same matrix in Fortran order, which
            # LAPACK overwrites in place (a C-ordered K is copied first), and 'evr' needs
            # O(n) workspace beside its n x n eigenvectors where 'evd' needs 2 n^2: K plus
            # the eigenvectors, the 16 n^2 bytes the memory plan counts (memory first:
            # 'evr' took 3.4 s against 'evd''s 2.7 s at n = 3,000 on 2 Zen 3 cores)
            w, V = eigh(K.T, overwrite_a=True, check_finite=False, driver="evr")
        else:
            w, V = xp.linalg.eigh(K)
        wmax = float(xp.abs(w).max()) if n else 0.0
        keep = w > rcond * wmax
        rank = int(keep.sum())
        inv = xp.where(keep, 1.0 / xp.where(keep, w, 1.0), 0.0)
        alpha = V @ (inv[:, None] * (V.T @ Y))
        return alpha, rank, be.to_numpy(w)
    if be.device == "cpu":
        from scipy.linalg import lstsq

        # SciPy hands gelsd a copy of K whatever overwrite_a says (SciPy 1.17): the memory
        # plan counts it
        alpha, _res, rank, _sv = lstsq(K, be.to_numpy(Y), cond=rcond, overwrite_a=True,
                                       check_finite=False, lapack_driver="gelsd")
        return alpha, int(rank), None
    alpha, _res, rank, _sv = xp.linalg.lstsq(K, Y, rcond=rcond)
    return alpha, int(rank), None
