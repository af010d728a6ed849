"""Past one machine: the tiled work on a dask.distributed cluster.

``--scheduler ADDRESS`` connects to a running scheduler (short connect timeout, a clear
message when it cannot be reached); ``--distributed local`` starts a LocalCluster on this
machine. The work is expressed as tasks on tiles:

* Gram tiles: one task per lower tile (X is broadcast to every worker once);
* the right-looking tiled Cholesky as a task graph (potrf / trsm / syrk / gemm on tiles,
  each task returning a new tile), so tiles stay on the workers;
* the preconditioner solves (forward and backward substitution) as tasks on the factor
  tiles, and the float64 products K V as one task per row block recomputing its kernel
  tiles from X;
* prediction: :func:`distributed_predict`, one task per block of test rows.

Only n x m vectors travel to the client. In mixed precision (default) the factor is float32
and the solution is refined to float64 accuracy with the same CG / iterative refinement as
:mod:`kernelfit.solvers.mixed`; ``precision='float64'`` factors in float64 (refinement then
just verifies the residual).
"""

from __future__ import annotations

import os
import time
from typing import Optional

import numpy as np

from ..backend import Backend, get_backend
from ..errors import InputError, NotPositiveDefiniteError
from ..kernels import Kernel
from .mixed import (SHIFT_GROWTH, SHIFT_MAX_TRIES, SHIFT_START, kernel_diagonal, refine,
                    refinement_info)
from .tiled import default_tile_size, gram_tile, tile_bounds

__all__ = ["solve_distributed", "connect", "distributed_predict", "DistributedFactor"]

CONNECT_TIMEOUT_ENV = "KERNELFIT_DASK_TIMEOUT"


def connect(scheduler: Optional[str] = None, local: bool = False, *, n_workers: int = 2,
            processes: bool = False, timeout: Optional[float] = None):
    """A dask.distributed Client (and the LocalCluster it owns, or None)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:  # pragma: no cover - dask[distributed] is a dependency
        raise InputError("Dask solves need dask[distributed]: pip install 'dask[distributed]'")
    if timeout is None:
        timeout = float(os.environ.get(CONNECT_TIMEOUT_ENV, "5"))
    if local:
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=processes,
                               dashboard_address=None)
        return Client(cluster), cluster
    addr = scheduler.strip()
    if "://" not in addr:
        addr = "tcp://" + addr
    try:
        client = Client(addr, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise InputError(f"could not reach the Dask scheduler at {scheduler} within "
                         f"{timeout:g} s ({exc.__class__.__name__}: {exc}). Is it running "
                         "and reachable? (distributed='local' starts a cluster here)",
                         param="scheduler") from None
    except ValueError as exc:
        raise InputError(f"bad Dask scheduler address {scheduler!r}: {exc}") from None
    return client, None


# ---------------------------------------------------------------- worker tasks
def _cpu():
    return get_backend("cpu")


def _t_gram(kernel, X, bounds, i, j, dtype, shift):
    return gram_tile(kernel, X, None, bounds, i, j, dtype, shift)  # row norms per block


def _t_potrf(a, row0):
    a = np.array(a, order="F", copy=True)
    info = _cpu().potrf(a)
    if info != 0:
        raise NotPositiveDefiniteError(f"pivot at row {row0 + info - 1} is not positive",
                                       index=row0 + info - 1)
    return a


def _t_trsm(l, b):
    b = np.array(b, order="F", copy=True)
    _cpu().trsm_rlt(l, b)
    return b


def _t_update(c, a, b=None):
    c = np.array(c, order="F", copy=True)
    if b is None:
        _cpu().syrk_sub(a, c)
    else:
        _cpu().gemm_nt_sub(a, b, c)
    return c


def _up(t):
    return np.asfortranarray(t, dtype=np.float64)


def _t_forward(Lii, B, Ls, Ys):
    """Y_i = inv(L_ii) (B_i - sum_j L_ij Y_j), float64 arithmetic."""
    Y = np.array(B, dtype=np.float64, order="F", copy=True)
    for L, Yj in zip(Ls, Ys):
        _cpu().gemm_acc(_up(L), Yj, Y, alpha=-1.0)
    _cpu().trsm_left(_up(Lii), Y, trans=False)
    return Y


def _t_backward(Lii, Yi, Ls, Xs):
    """X_i = inv(L_ii)^T (Y_i - sum_j L_ji^T X_j)."""
    Y = np.array(Yi, dtype=np.float64, order="F", copy=True)
    for L, Xj in zip(Ls, Xs):
        _cpu().gemm_acc(_up(L), Xj, Y, trans_a=True, alpha=-1.0)
    _cpu().trsm_left(_up(Lii), Y, trans=True)
    return Y


def _t_rows_matvec(kernel, X, bounds, i, V):
    """Row block i of K V, tiles recomputed in float64."""
    si, ei = bounds[i]
    stats = kernel.prepare(X[si:ei]) if kernel.needs_sq_norms else None
    R = np.zeros((ei - si, V.shape[1]))
    for sj, ej in bounds:
        G = kernel.block(X[si:ei], X[sj:ej], a_stats=stats, same=(sj == si))
        R += G @ V[sj:ej]
    return R


def _t_cross(kernel, A, B, V, tile_size):
    from .tiled import cross_kernel_matmul

    return cross_kernel_matmul(kernel, A, B, V, tile_size=tile_size, show_progress=False)


# ---------------------------------------------------------------- the factor on the cluster
class DistributedFactor:
    """Lower tiles (futures) of K + shift I and its Cholesky factor on a Dask cluster."""

    def __init__(self, client, kernel: Kernel, X_future, n: int, tile_size: int, dtype):
        self.client = client
        self.kernel = kernel
        self.X = X_future
        self.n = n
        self.tile_size = tile_size
        self.dtype = np.dtype(dtype)
        self.bounds = tile_bounds(n, tile_size)
        self.L = None

    def factor(self, shift: float) -> None:
        c = self.client
        nt = len(self.bounds)
        A = [[c.submit(_t_gram, self.kernel, self.X, self.bounds, i, j, self.dtype, shift,
                       pure=False) for j in range(i + 1)] for i in range(nt)]
        for k in range(nt):
            A[k][k] = c.submit(_t_potrf, A[k][k], self.bounds[k][0], pure=False)
            for i in range(k + 1, nt):
                A[i][k] = c.submit(_t_trsm, A[k][k], A[i][k], pure=False)
            for i in range(k + 1, nt):
                for j in range(k + 1, i):
                    A[i][j] = c.submit(_t_update, A[i][j], A[i][k], A[j][k], pure=False)
                A[i][i] = c.submit(_t_update, A[i][i], A[i][k], pure=False)
        # wait for the whole factor (raises NotPositiveDefiniteError from a worker)
        c.gather([A[i][i] for i in range(nt)])
        self.L = A

    def solve(self, R) -> np.ndarray:
        """(L L^T)^-1 R, substitutions as tasks (float64 arithmetic)."""
        c = self.client
        L = self.L
        nt = len(self.bounds)
        B = [c.scatter(np.asfortranarray(R[s:e], dtype=np.float64)) for s, e in self.bounds]
        Y = []
        for i in range(nt):
            Y.append(c.submit(_t_forward, L[i][i], B[i], [L[i][j] for j in range(i)],
                              Y[:i], pure=False))
        Xs = [None] * nt
        for i in reversed(range(nt)):
            Xs[i] = c.submit(_t_backward, L[i][i], Y[i], [L[j][i] for j in range(i + 1, nt)],
                             [Xs[j] for j in range(i + 1, nt)], pure=False)
        return np.concatenate(c.gather(Xs), axis=0)

    def matvec(self, V) -> np.ndarray:
        c = self.client
        Vf = c.scatter(np.ascontiguousarray(V, dtype=np.float64), broadcast=True)
        parts = [c.submit(_t_rows_matvec, self.kernel, self.X, self.bounds, i, Vf, pure=False)
                 for i in range(len(self.bounds))]
        return np.concatenate(c.gather(parts), axis=0)

    def release(self) -> None:
        if self.L is not None:
            for row in self.L:
                for f in row:
                    f.release()
        self.L = None


def distributed_predict(client, kernel: Kernel, X_test, X_train, alpha, *,
                        tile_size: int = 1024) -> np.ndarray:
    """k(X_test, X_train) alpha on the cluster, one task per block of test rows."""
    Xf = client.scatter(np.asarray(X_train, dtype=np.float64), broadcast=True)
    Af = client.scatter(np.asarray(alpha, dtype=np.float64), broadcast=True)
    X_test = np.asarray(X_test, dtype=np.float64)
    parts = [client.submit(_t_cross, kernel, X_test[s:e], Xf, Af, tile_size, pure=False)
             for s, e in tile_bounds(X_test.shape[0], tile_size)]
    return np.concatenate(client.gather(parts), axis=0)


def solve_distributed(kernel: Kernel, X, Y, opts, be: Optional[Backend] = None):
    """Exact solve with Gram, factorization, substitutions and K products on Dask."""
    from .exact import ExactSolution

    be = be if be is not None else get_backend(opts.device)
    Xh = np.ascontiguousarray(be.to_numpy(X), dtype=np.float64)
    Yh = np.asarray(be.to_numpy(Y), dtype=np.float64)
    if Yh.ndim == 1:
        Yh = Yh[:, None]
    n = Xh.shape[0]
    precision = "mixed" if opts.precision == "auto" else opts.precision
    dtype = np.float64 if precision == "float64" else np.float32
    ts = opts.tile_size or default_tile_size(n, "cpu")
    t_start = time.perf_counter()
    client, cluster = connect(opts.scheduler, local=opts.distributed == "local")
    timings = {"connect": time.perf_counter() - t_start}
    log = []
    try:
        workers = list(client.scheduler_info().get("workers", {}))
        Xf = client.scatter(Xh, broadcast=True)
        F = DistributedFactor(client, kernel, Xf, n, ts, dtype)
        shift, attempts = 0.0, []
        t0 = time.perf_counter()
        for attempt in range(SHIFT_MAX_TRIES + 1):
            try:
                F.factor(opts.ridge + shift)
                attempts.append({"shift": shift, "ok": True})
                break
            except NotPositiveDefiniteError as exc:
                attempts.append({"shift": shift, "ok": False, "pivot": exc.index})
                F.release()
                if precision == "float64" or attempt == SHIFT_MAX_TRIES:
                    raise NotPositiveDefiniteError(
                        f"K is not numerically positive definite in {np.dtype(dtype).name} "
                        f"(Dask factorization: {exc}); a ridge > 0 regularizes the solve",
                        index=exc.index, causes=["ill_conditioned"],
                        dtype=np.dtype(dtype).name, ridge=float(opts.ridge)) from None
                base = float(np.mean(kernel_diagonal(kernel, Xh))) + opts.ridge
                shift = SHIFT_START * base if shift == 0.0 else shift * SHIFT_GROWTH
                log.append(f"float32 Cholesky broke down; retrying with shift {shift:.3e}")
        timings["gram_and_factor"] = time.perf_counter() - t0

        def matvec(V):
            KV = F.matvec(V)
            return KV + opts.ridge * V if opts.ridge else KV

        t1 = time.perf_counter()
        out = refine(matvec, F.solve, Yh, tol=opts.tol,
                     max_iter=0 if precision == "float32" else opts.max_iter,
                     method=opts.refinement, log=log)
        timings["solve"] = time.perf_counter() - t1
        F.release()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    info = refinement_info(out, opts, shift=shift, attempts=attempts, log=log)
    info.update({"tile_size": ts, "ridge": opts.ridge, "precision": precision,
                 "storage_dtype": np.dtype(dtype).name,
                 "distributed": {"scheduler": opts.scheduler or "local",
                                 "n_workers": len(workers), "workers": workers}})
    xp = be.xp
    sol = ExactSolution(alpha=xp.asarray(out["alpha"]), solver="cholesky", dtype=precision,
                        device=be.device, timings=timings, memory_plan={}, info=info)
    sol.K_alpha = xp.asarray(out["K_alpha"])
    return sol
