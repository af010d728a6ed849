"""Exact solves of K alpha = Y (all right-hand sides at once), with honest diagnostics.

``solver='cholesky'`` (default) builds K in lower tiles and factors it in place with the
blocked Cholesky of :mod:`kernelfit.solvers.tiled`; no ridge unless asked for. When K is
not numerically positive definite the error says why (a linear kernel of rank at most d,
duplicate training points, an indefinite kernel) and points to the explicit minimum-norm
fallbacks instead of switching silently:

``solver='eigh'``   alpha = V diag(1/lambda) V^T Y over eigenvalues lambda > rcond * max
                    (the minimum-norm solution for a singular positive semi-definite K);
``solver='lstsq'``  SciPy's least-squares (gelsd) minimum-norm solution.

Both fallbacks hold a dense K (n x n) and its eigenvectors or workspace.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Dict, Optional

import numpy as np

from ..backend import Backend, get_backend
from ..errors import InputError, NotPositiveDefiniteError
from ..kernels import Kernel
from ..memory import plan_exact_solve
from .tiled import (TiledSymmetric, build_gram, cholesky_inplace, cholesky_solve,
                    default_tile_size, estimate_condition, kept_copy_bytes, kept_pairs,
                    stored_kernel_matvec)

__all__ = ["SolveOptions", "ExactSolution", "solve_exact", "SOLVERS", "diagnose_not_pd"]

SOLVERS = ("cholesky", "eigh", "lstsq")

# The most bytes of off-diagonal tiles copied through the factorization for the residual
# (the diagonal tiles keep K in their upper triangles at no cost; tiles beyond the budget
# are recomputed). A kept tile turns its share of the residual check from recomputation
# into one pass over memory, but the copy is fresh memory, and first writes to fresh
# memory can cost more than the recomputation. Measured on a 2-core VM: at n = 10,000 a
# 0.27 GB copy took the residual from 0.74 s to 0.06 s; at n = 20,000 copying all 1.3 GB
# slowed the Gram build from 2.5-3.5 s to 4.8-5.8 s, about what it saved: past the memory
# the VM's guest freed in the last seconds (1.2-1.7 GB in these runs), fresh pages cost
# 3.5-3.7 s/GB instead of 0.47 s/GB, against about 1.2 s/GB of kernel tiles recomputed.
KEEP_COPY_MAX_BYTES = 256 << 20
DTYPES = ("float64", "float32")


@dataclass
class SolveOptions:
    """Options of an exact solve (all have safe defaults)."""

    solver: str = "cholesky"
    ridge: float = 0.0
    dtype: str = "float64"
    tile_size: Optional[int] = None
    device: str = "cpu"
    rcond: Optional[float] = None
    show_progress: Optional[bool] = None
    check_memory: bool = True
    estimate_condition: bool = False
    # also form K alpha (for the residual): on the CPU from a copy of K kept through the
    # factorization when memory allows (kernelfit.solvers.tiled.stored_kernel_matvec)
    residual: bool = False
    # beyond memory (kernelfit.solvers.mixed / ooc / distributed)
    precision: str = "auto"            # 'auto' | 'float64' | 'float32' | 'mixed'
    tol: float = 1e-10                 # relative residual target of mixed-precision refinement
    max_iter: Optional[int] = None     # refinement steps (None: 30)
    refinement: str = "cg"             # 'cg' (preconditioned CG) | 'ir' (iterative refinement)
    ooc_dir: Optional[str] = None      # out-of-core: tiles and checkpoints in this folder
    resume: bool = False               # continue an interrupted out-of-core run
    scheduler: Optional[str] = None    # Dask scheduler address
    distributed: Optional[str] = None  # 'local': a local Dask cluster

    def validate(self) -> "SolveOptions":
        if self.solver not in SOLVERS:
            raise InputError(f"unknown solver {self.solver!r}; choose one of {', '.join(SOLVERS)}")
        if str(self.dtype) not in DTYPES:
            raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        self.dtype = str(self.dtype)
        try:
            self.ridge = float(self.ridge)
        except (TypeError, ValueError):
            raise InputError(f"ridge must be a number, got {self.ridge!r}") from None
        if not np.isfinite(self.ridge) or self.ridge < 0:
            raise InputError(f"ridge must be a non-negative finite number, got {self.ridge!r}")
        if self.tile_size is not None:
            if int(self.tile_size) != self.tile_size or self.tile_size < 16:
                raise InputError(f"tile size must be an integer of at least 16, got "
                                 f"{self.tile_size!r}")
            self.tile_size = int(self.tile_size)
        if self.rcond is not None and not (0 <= float(self.rcond) < 1):
            raise InputError(f"rcond must be in [0, 1), got {self.rcond!r}")
        from .mixed import validate_beyond_memory

        validate_beyond_memory(self)
        return self


@dataclass
class ExactSolution:
    """The coefficients of an exact solve and what it took."""

    alpha: object                      # (n, m) array on the solve's backend
    solver: str
    dtype: str
    device: str
    timings: Dict[str, float] = field(default_factory=dict)
    memory_plan: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    K_alpha: object = None             # K alpha in float64 when the solver formed it

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("alpha")
        d.pop("K_alpha")
        return d


def diagnose_not_pd(kernel: Kernel, X, ridge: float = 0.0, index: int = -1,
                    dtype: str = "float64", n_outputs: int = 1) -> NotPositiveDefiniteError:
    """Why K = k(X, X) may fail to be numerically positive definite: the error to raise,
    its message in words and its facts (``causes``, ``n_duplicates``, ...) as data."""
    n, _ = X.shape
    Xn = np.asarray(X)
    # the data span at most as many dimensions as X has columns that are not all zero
    d = int(np.any(Xn != 0, axis=0).sum())
    dims = f"d = {d} (the columns of X that are not zero in every row)"
    reasons, causes = [], []
    if kernel.name == "linear" and d < n and not ridge:
        causes.append("low_rank_linear")
        reasons.append(f"the linear kernel K = X X^T has rank at most {dims} < n = {n}, so "
                       "it is singular")
    if kernel.name == "polynomial" and not ridge:
        # rank of a degree-p polynomial kernel is at most C(d + p, p)
        from math import comb

        r = comb(d + kernel.degree, kernel.degree)
        if r < n:
            causes.append("low_rank_polynomial")
            reasons.append(f"a degree-{kernel.degree} polynomial kernel in {dims} "
                           f"has rank at most {r} < n = {n}")
    try:
        uniq = np.unique(np.ascontiguousarray(Xn).view(
            np.dtype((np.void, Xn.dtype.itemsize * Xn.shape[1]))).ravel())
        dup = n - uniq.shape[0]
    except (TypeError, ValueError):  # pragma: no cover - non-contiguous exotic dtypes
        dup = 0
    if dup:
        causes.append("duplicates")
        reasons.append(f"{dup} training point(s) are exact duplicates of others, which makes "
                       "rows of K equal")
    if not reasons:
        causes.append("ill_conditioned")
        reasons.append(f"K is too ill-conditioned for {dtype} (points very close together, "
                       "a large bandwidth), or the kernel is not positive definite")
    where = f" (first failing pivot at row {index})" if index >= 0 else ""
    from .mixed import kernel_diagonal

    diag = np.asarray(kernel_diagonal(kernel, Xn), dtype=np.float64)
    mean_diag = float(np.mean(np.abs(diag))) if diag.size else 0.0
    max_diag = float(np.max(np.abs(diag))) if diag.size else 0.0
    return NotPositiveDefiniteError(
        f"K is not numerically positive definite in {dtype}{where}: " + "; ".join(reasons) +
        ". Ways out: solver='eigh' or 'lstsq' (the explicit minimum-norm solution), "
        "a ridge > 0 (a regularized solve)" + (", removing the duplicate points" if dup else ""),
        index=index, causes=causes, dtype=str(dtype), ridge=float(ridge), n=int(n),
        d=int(Xn.shape[1]), n_outputs=int(n_outputs), n_duplicates=int(dup),
        mean_diagonal=mean_diag, max_diagonal=max_diag, kernel=kernel.name,
        problem=f"K is not numerically positive definite in {dtype}{where}: " +
                "; ".join(reasons))


def _sync(be: Backend):
    be.synchronize()
    return time.perf_counter()


def solve_exact(kernel: Kernel, X, Y, options: Optional[SolveOptions] = None,
                backend: Optional[Backend] = None) -> ExactSolution:
    """Solve k(X, X) alpha = Y exactly.

    ``X`` (n, d) and ``Y`` (n, m) may be NumPy arrays; they are moved to the backend.
    Returns an :class:`ExactSolution` whose ``alpha`` lives on the backend.
    """
    opts = (options or SolveOptions()).validate()
    be = backend if backend is not None else get_backend(opts.device)
    from .mixed import dispatch_beyond_memory  # mixed precision, out-of-core, Dask

    routed = dispatch_beyond_memory(kernel, X, Y, opts, be)
    if routed is not None:
        return routed
    return solve_in_core(kernel, X, Y, opts, be)


def solve_in_core(kernel: Kernel, X, Y, opts: SolveOptions, be: Backend) -> ExactSolution:
    """The in-memory solve with K stored in ``opts.dtype`` (validated options)."""
    xp = be.xp
    n, d = X.shape
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.shape[0] != n:
        raise InputError(f"X has {n} rows but the targets have {Y.shape[0]}")
    if be.device == "gpu" and opts.solver != "cholesky" and n * n >= 2 ** 31:
        raise InputError(f"solver {opts.solver!r} on the GPU builds a dense n x n K, and at "
                         f"n = {n} that exceeds the 2^31 elements cuSOLVER's 32-bit workspace "
                         "sizes allow; use solver 'cholesky', or the CPU", param="solver")
    dtype = np.float64 if opts.dtype == "float64" else np.float32
    tile_size = opts.tile_size or default_tile_size(n, be.device)
    plan = plan_exact_solve(n, d, Y.shape[1], dtype=dtype, tile_size=tile_size,
                            solver=opts.solver, device=be.device,
                            available=be.free_memory() if opts.check_memory else None)
    if opts.check_memory:
        plan.items.pop("predictions", None)
        plan.items.pop("data", None)  # already resident when we get here
        plan.check(request={"n": n, "d": d, "n_outputs": Y.shape[1], "dtype": opts.dtype,
                            "precision": opts.dtype, "solver": opts.solver,
                            "tile_size": opts.tile_size})
    # K alpha for the residual: from a copy of K kept through the factorization (memory
    # speed) where that copy is small and fits, else recomputed tile by tile by the
    # caller. On the GPU recomputing is fast and device memory is the scarce resource.
    keep = bool(opts.residual and opts.solver == "cholesky" and be.device == "cpu"
                and dtype == np.float64)
    budget = KEEP_COPY_MAX_BYTES
    if keep:
        plan.add("K copy (residual)", kept_copy_bytes(n, tile_size, budget))
        if opts.check_memory and not plan.fits():
            budget = 0  # the diagonal alone: the diagonal tiles still count, for n floats
            plan.items["K copy (residual)"] = kept_copy_bytes(n, tile_size, budget)
            if not plan.fits():
                keep = False
                plan.items.pop("K copy (residual)")
    timings: Dict[str, float] = {}
    info: dict = {"tile_size": tile_size, "ridge": opts.ridge, "kept_k_for_residual": keep}
    if keep:
        info["kept_off_diagonal_tiles"] = len(kept_pairs(n, tile_size, budget))

    Xb = xp.asarray(X)
    Yb = xp.asarray(Y, dtype=xp.float64)
    if opts.solver == "cholesky":
        t0 = _sync(be)
        K = build_gram(kernel, Xb, tile_size=tile_size, dtype=dtype, backend=be,
                       ridge=opts.ridge, show_progress=opts.show_progress, keep_copy=keep,
                       keep_budget=budget)
        t1 = _sync(be)
        timings["gram"] = t1 - t0
        try:
            cholesky_inplace(K, show_progress=opts.show_progress)
        except NotPositiveDefiniteError as exc:
            K.free()
            be.free_pool()
            raise diagnose_not_pd(kernel, be.to_numpy(Xb), opts.ridge, exc.index,
                                  dtype=np.dtype(dtype).name, n_outputs=Yb.shape[1]) from None
        t2 = _sync(be)
        timings["factor"] = t2 - t1
        alpha = cholesky_solve(K, Yb).astype(xp.float64)
        if not bool(xp.isfinite(alpha).all()):
            K.free()
            raise diagnose_not_pd(kernel, be.to_numpy(Xb), opts.ridge,
                                  dtype=np.dtype(dtype).name, n_outputs=Yb.shape[1])
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
            K_alpha = stored_kernel_matvec(K, alpha, kernel=kernel, X=Xb)
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
    return ExactSolution(alpha=alpha, solver=opts.solver, dtype=opts.dtype, device=be.device,
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
    if opts.solver == "eigh":
        if be.device == "cpu":
            from scipy.linalg import eigh

            w, V = eigh(K, overwrite_a=True, check_finite=False, driver="evd")
        else:
            w, V = xp.linalg.eigh(K)
        wmax = float(xp.abs(w).max()) if n else 0.0
        rcond = opts.rcond if opts.rcond is not None else n * np.finfo(np.float64).eps
        keep = w > rcond * wmax
        rank = int(keep.sum())
        inv = xp.where(keep, 1.0 / xp.where(keep, w, 1.0), 0.0)
        alpha = V @ (inv[:, None] * (V.T @ Y))
        return alpha, rank, be.to_numpy(w)
    if be.device == "cpu":
        from scipy.linalg import lstsq

        rcond = opts.rcond if opts.rcond is not None else None
        alpha, _res, rank, _sv = lstsq(K, be.to_numpy(Y), cond=rcond, overwrite_a=True,
                                       check_finite=False, lapack_driver="gelsd")
        return alpha, int(rank), None
    alpha, _res, rank, _sv = xp.linalg.lstsq(K, Y, rcond=opts.rcond)
    return alpha, int(rank), None
