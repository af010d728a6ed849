"""Mixed precision: K stored and factored in float32, the exact system solved to float64
accuracy by refinement (:mod:`kernelfit.solvers.refine`) against float64 kernel products.

The float32 factor L32 (half the memory and, on CPUs, about twice the GEMM rate of
float64) is a preconditioner M = L32 L32^T of the float64 system K alpha = Y; for the
Gaussian and Laplacian kernels L32 factors K minus a low-rank Nystrom part U U^T, and
M = L32 L32^T + U U^T (:mod:`kernelfit.solvers.deflate`: smaller entries to round, a
better preconditioner). The float64
products K V come from tiles of K kept while the Gram matrix was built, as many as
the plan's budget allows (:func:`kernelfit.solvers.plan.plan_solve`), and from tiles
recomputed from X for the rest; K itself is never rounded to float32 in a product.

``precision='mixed'``: when float32 potrf breaks down (K too ill-conditioned for single
precision) the Gram tiles are rebuilt with a growing diagonal shift
(:func:`kernelfit.solvers.refine.retry_with_shift`); the shifted factor is then only a
preconditioner of the *unshifted* system. ``precision='auto'``: the target is
:data:`kernelfit.solvers.plan.AUTO_TOL`, or the float64 backward-error bound
u * trace(K) * |alpha| / |Y| where that is larger (no float64 solve does better); a
breakdown, or a refinement that stalls above both (cond(K) times the float32 rounding
unit too large), raises :class:`Fallback` instead, and the caller factors in float64.
"""

from __future__ import annotations

import time
import warnings
from typing import List

import numpy as np

from ..backend import Backend
from ..errors import NotPositiveDefiniteError
from ..kernels import Kernel
from .cholesky import cholesky_inplace, cholesky_solve
from .deflate import Deflated, nystrom_landmarks
from .products import (build_gram, kept_bytes, kept_storage, kernel_diagonal, kernel_matvec,
                       stored_kernel_matvec)
from .refine import (ExactSolution, breakdown_facts, refine, refined_solution,
                     retry_with_shift)
from .tiles import BlasOneThread, TiledSymmetric

__all__ = ["solve_mixed", "solve_gram", "Fallback"]

F64_EPS = float(np.finfo(np.float64).eps)


#: the record's note where auto counted a refinement within float64's reach as converged
FLOOR_NOTE = ("the refinement stopped below tol's reach but within the float64 backward-"
              "error bound u * trace(K) * |alpha| / |Y| (what a float64 factorization "
              "reaches at best)")


def float64_floor(kernel: Kernel, X, ridge: float, alpha, Y, be: Backend) -> float:
    """A residual as small as float64 arithmetic allows: the backward-error bound of a
    float64 solve, u * trace(K + ridge I) * ||alpha|| / ||Y|| (trace(K) >= ||K||_2), for
    the rows ``X`` on ``be``. ``precision='auto'`` counts a mixed refinement that stopped
    within it as converged (in memory, out of core and on Dask alike)."""
    trace = float(np.sum(be.to_numpy(kernel_diagonal(kernel, X)))) + X.shape[0] * ridge
    return (F64_EPS * trace * float(np.linalg.norm(alpha))
            / max(float(np.linalg.norm(Y)), 1e-300))


class Fallback(Exception):
    """precision='auto' gave up on mixed precision; ``reason`` says why (one line)."""

    def __init__(self, reason: str, timings: dict, gram=None):
        super().__init__(reason)
        self.reason = reason
        self.timings = timings
        self.gram = gram  # K + ridge I in float64 tiles, when every tile was kept


def _fallback_seconds(splan, T: TiledSymmetric, timings: dict):
    """What falling back to float64 is expected to cost, for the refinement to give up
    when its remaining passes would cost more: the plan's float64 factorization and
    residual (:func:`kernelfit.solvers.plan.expected_times`), plus a new float64 Gram
    (what this one took) unless every tile was kept in float64; None without a plan's
    expected times."""
    t = (splan.choice or {}).get("expected_time")
    if not t:
        return None
    return float(t["float64_s"]) + (0.0 if _all_kept_float64(T)
                                    else float(timings.get("gram", 0.0)))


def _all_kept_float64(T) -> bool:
    """Whether every tile of K was kept as float64 values (what a fallback can factor
    instead of a new Gram matrix; kept exact integers would need twice their memory)."""
    nt = T.n_tiles
    return bool(T.kept) and len(T.kept) == nt * (nt + 1) // 2 and \
        kept_storage(T) == "float64"


def _float64_gram(T, ridge: float):
    """K + ridge I as float64 tiles made of the kept copies (None unless all were kept as
    float64 values, :func:`_all_kept_float64`)."""
    if not _all_kept_float64(T):
        return None
    G = TiledSymmetric(T.n, T.tile_size, np.float64, T.backend)
    xp = T.backend.xp
    for (i, j), tile in T.kept.items():
        G.tiles[i][j] = tile
        if i == j and ridge:
            k = tile.shape[0]
            tile[xp.arange(k), xp.arange(k)] += ridge
    return G


def _preconditioner(T: TiledSymmetric):
    """``R -> (L L^T)^-1 R`` in float64 from the factored tiles ``T`` (host arrays in and
    out): the preconditioner of the refinement, a fixed operator whatever T's dtype."""
    be = T.backend

    def precond(R):
        return be.to_numpy(cholesky_solve(T, be.xp.asarray(R), np.float64))

    return precond


def _fast_preconditioner(T: TiledSymmetric):
    """The same solve in the factor's own precision when that is float32 (LAPACK dsposv's
    refinement step): half the bytes read and no upcast, at the price of a rounding error
    of the factor's own size; None for a float64 factor. Each column is scaled to a
    maximum of 1 first, so residuals far below 1 stay clear of float32's underflow."""
    if np.dtype(T.dtype) != np.float32:
        return None
    be = T.backend
    xp = be.xp

    def precond(R):
        R = np.asarray(R, dtype=np.float64)
        scale = np.max(np.abs(R), axis=0)
        scale[~(scale > 0)] = 1.0
        Z = cholesky_solve(T, xp.asarray((R / scale).astype(np.float32)), np.float32)
        return np.asarray(be.to_numpy(Z), dtype=np.float64) * scale

    return precond


def solve_gram(T: TiledSymmetric, Y, matvec=None, *, tol: float = 1e-10, max_iter: int = 30,
               refinement: str = "cg", show_progress=None) -> dict:
    """Solve K alpha = Y for a Gram matrix made outside the solvers, given as its tiles.

    ``T`` holds K's lower tiles (float32 or float64; e.g. K accumulated over chunks of
    features, the tiles views of one dense matrix). The one tiled Cholesky factors them
    in place (:func:`~kernelfit.solvers.cholesky.cholesky_inplace`), and the refinement
    (:func:`~kernelfit.solvers.refine.refine`) solves the float64 system with that factor
    as preconditioner, applied in float64, and K products from ``matvec`` (``V -> K V`` in
    float64; default: :func:`~kernelfit.solvers.products.stored_kernel_matvec` of the copy
    of K kept with ``T``, ``T.kept`` and ``T.kept_diag``). Returns refine's dict (``alpha``,
    ``K_alpha``, ``history``, ``converged``, ...) with ``factor_seconds`` and
    ``refine_seconds``. A factorization that breaks down raises
    :class:`~kernelfit.errors.NotPositiveDefiniteError` (no shift is tried).
    """
    be = T.backend
    if matvec is None:
        def matvec(V):
            return be.to_numpy(stored_kernel_matvec(T, be.xp.asarray(V)))
    t0 = time.perf_counter()
    cholesky_inplace(T, show_progress=show_progress)
    be.synchronize()
    t_factor = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = refine(matvec, _preconditioner(T), np.asarray(Y, dtype=np.float64), tol=tol,
                 max_iter=max_iter, method=refinement, show_progress=show_progress,
                 fast_precond=_fast_preconditioner(T))
    out.update(factor_seconds=t_factor, refine_seconds=time.perf_counter() - t0)
    return out


def solve_mixed(kernel: Kernel, X, Y, opts, be: Backend, splan) -> ExactSolution:
    """Float32 storage + factorization, float64 solution by CG / iterative refinement."""
    xp = be.xp
    n = X.shape[0]
    if Y.ndim == 1:
        Y = Y[:, None]
    ts = splan.tile_size
    # auto chose mixed by time (a float64 solve fits): give up early and fall back
    auto = opts.precision == "auto" and splan.may_fall_back
    Xb = xp.asarray(X)
    Yh = np.asarray(be.to_numpy(Y), dtype=np.float64)
    stats = kernel.prepare(Xb)
    keep = bool(splan.keep_budget)
    log: List[str] = []
    timings = {"gram": 0.0, "factor": 0.0}
    t0 = time.perf_counter()
    # the landmarks' products on one BLAS thread where tile threads follow: BLAS threads
    # woken here would spin beside the Gram's tile threads (MNIST n = 10,000, 2 Zen 5
    # cores: 7% of the Gram's CPU time; the solve and prediction 0.08-0.1 s faster)
    with BlasOneThread(be.device == "cpu" and n > ts):
        U, deflation = nystrom_landmarks(kernel, Xb, stats, be)
    be.synchronize()
    if U is not None:
        deflation["landmark_seconds"] = time.perf_counter() - t0
    timings["gram"] += time.perf_counter() - t0

    def attempt(shift):
        t0 = time.perf_counter()
        T = build_gram(kernel, Xb, tile_size=ts, dtype=np.float32, backend=be,
                       ridge=opts.ridge + shift, stats=stats, show_progress=opts.show_progress,
                       keep_copy=keep, keep_budget=splan.keep_budget, low_rank=U)
        be.synchronize()
        t1 = time.perf_counter()
        timings["gram"] += t1 - t0
        try:
            cholesky_inplace(T, show_progress=opts.show_progress)
        except NotPositiveDefiniteError as exc:
            gram = _float64_gram(T, opts.ridge) if auto else None
            T.free()
            be.free_pool()
            if auto:
                raise Fallback(f"the float32 Cholesky broke down at row {exc.index} (K is too "
                               "ill-conditioned for float32)", timings, gram) from None
            raise
        finally:
            be.synchronize()
            timings["factor"] += time.perf_counter() - t1
        return T

    def mean_diagonal():
        return float(np.mean(be.to_numpy(kernel_diagonal(kernel, Xb)))) + opts.ridge

    T, shift, attempts = retry_with_shift(attempt, mean_diagonal, allow_shift=not auto,
                                          dtype_name="float32", log=log,
                                          facts=breakdown_facts(kernel, Xb, opts.ridge,
                                                                Y.shape[1]))

    precond, fast = _preconditioner(T), _fast_preconditioner(T)
    if U is not None:  # the factor is of K - U U^T: M = L L^T + U U^T
        u = be.to_numpy(U)
        precond = Deflated(u, precond)
        # the float32 application makes its own W in its first sweep; where that W is too
        # far off (C not >= C_MIN I), it takes the float64 one's (one float64 sweep over U)
        fast = None if fast is None else Deflated(u, fast, fallback=precond)

    def matvec(V):
        Vb = xp.asarray(V)
        if keep:
            KV = stored_kernel_matvec(T, Vb, kernel=kernel, X=Xb, stats=stats)
        else:
            KV = kernel_matvec(kernel, Xb, Vb, tile_size=ts, backend=be, stats=stats,
                               show_progress=opts.show_progress)
        KV = be.to_numpy(KV)
        return KV + opts.ridge * np.asarray(V) if opts.ridge else KV

    t0 = time.perf_counter()
    # one BLAS thread through the refinement on the CPU: its K products and triangular
    # solves run on the tile threads with one BLAS thread each already, and the small
    # products between them (norms, the Woodbury low-rank part) would otherwise wake
    # the BLAS libraries' own threads, which keep spinning beside the tile threads for a
    # while after each call (MNIST n = 10,000 on 2 Zen 3 cores: 0.71-0.78 s -> 0.60 s)
    with BlasOneThread(be.device == "cpu" and T.n_tiles > 1):
        out = refine(matvec, precond, Yh, tol=splan.tol, max_iter=opts.max_iter,
                     method=opts.refinement, log=log, give_up_slow=auto, fast_precond=fast,
                     give_up_after=_fallback_seconds(splan, T, timings) if auto else None)
    timings["solve"] = time.perf_counter() - t0
    if U is not None:  # C's largest eigenvalue, of the application the refinement began with
        first = fast if fast is not None else precond
        deflation["woodbury_c"] = first.c
        deflation["woodbury_w"] = {"own": "the first application's own sweep",
                                   "fallback": "the float64 application's sweep"}.get(
                                       first.w_from, "not made")
    nt = T.n_tiles
    kept = len(T.kept) if T.kept else 0
    storage, stored_bytes = kept_storage(T), kept_bytes(T)
    diag_in_tiles = bool(T.diagonal_in_tiles)
    floor = None
    if not out["converged"]:  # (auto's tol is its own: within float64's reach counts)
        floor = float64_floor(kernel, Xb, opts.ridge, out["alpha"], Yh, be)
        if opts.precision == "auto" and out["relative_residual"] <= floor:
            out["converged"] = True
    gram = _float64_gram(T, opts.ridge) if auto and not out["converged"] else None
    T.free()
    T = None  # the tiles are freed: no reference left (matvec, above, is done with them)
    be.free_pool()
    if not out["converged"]:
        why = (f"mixed-precision refinement stopped at relative residual "
               f"{out['relative_residual']:.3e} > tol {splan.tol:g} after "
               f"{out['iterations']} step{'' if out['iterations'] == 1 else 's'}")
        if auto:
            because = out.get("gave_up") or (
                f"it used all {out['iterations']} step"
                f"{'' if out['iterations'] == 1 else 's'} max_iter allows"
                if out["iterations"] >= opts.max_iter and not out.get("stalled") else
                "cond(K) times the float32 rounding unit is too large")
            raise Fallback(f"{why}: {because}", timings, gram)
        warnings.warn(why, RuntimeWarning, stacklevel=2)
    what = ("float64 K" if storage == "float64" else
            f"K as the exact integers it is finished from ({storage}; float64 values each "
            "pass)")
    if kept == nt * (nt + 1) // 2:
        method = f"{what} kept in memory (all tiles), residual replaced each pass"
    elif kept:
        method = (f"{what}: {kept} of {nt * (nt + 1) // 2} tiles kept in memory, the "
                  "rest recomputed from X, residual replaced each pass")
    else:
        method = None
    extra = {"tol": splan.tol, "kept_tiles": kept, "kept_storage": storage,
             "kept_bytes": stored_bytes, "n_tiles_lower": nt * (nt + 1) // 2,
             "kept_diagonal_in_tiles": diag_in_tiles,
             "deflation": deflation}
    if floor is not None:
        extra["float64_floor"] = floor
    if floor is not None and out["converged"]:
        extra["note_target"] = FLOOR_NOTE
    kw = {"residual_method": method} if method else {}
    return refined_solution(out, opts, be, n=n, precision="mixed", storage_dtype=np.float32,
                            tile_size=ts, timings=timings, shift=shift, attempts=attempts,
                            log=log, memory_plan=splan.record(), extra=extra, **kw)
