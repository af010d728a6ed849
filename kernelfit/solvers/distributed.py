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

The factorization and the substitutions are the single tile loops of
:mod:`kernelfit.solvers.cholesky`, run through :class:`DaskTileOps` (each tile operation a
task returning a new tile future). Only n x m vectors travel to the client. In mixed
precision (default) the factor is float32 and the solution is refined to float64 accuracy
by :mod:`kernelfit.solvers.refine`; ``precision='float64'`` factors in float64 (refinement
then just verifies the residual).
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Optional

import numpy as np

from ..backend import Backend, get_backend
from ..errors import InputError, NotPositiveDefiniteError
from ..kernels import Kernel
from .cholesky import backward_row, factor_columns, forward_row, substitute
from .deflate import Deflated, nystrom_landmarks
from .mixed import FLOOR_NOTE, float64_floor
from .options import real_or_nan
from .products import cross_kernel_matmul, gram_tile, kernel_diagonal
from .refine import (ExactSolution, breakdown_facts, direct_solve, refine, refined_solution,
                     retry_with_shift)
from .tiles import default_tile_size, tile_bounds

__all__ = ["solve_distributed", "connect", "distributed_predict", "DistributedFactor",
           "DaskTileOps"]

CONNECT_TIMEOUT_ENV = "KERNELFIT_DASK_TIMEOUT"


def connect(scheduler: Optional[str] = None, local: bool = False, *, n_workers: int = 2,
            processes: bool = False, timeout: Optional[float] = None):
    """A dask.distributed Client (and the LocalCluster it owns, or None)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:  # pragma: no cover - dask[distributed] is a dependency
        raise InputError("Dask solves need dask[distributed]: pip install 'dask[distributed]'")
    if timeout is None:
        text = os.environ.get(CONNECT_TIMEOUT_ENV, "5")
        timeout = real_or_nan(text)
        if not (math.isfinite(timeout) and timeout > 0):
            raise InputError(f"${CONNECT_TIMEOUT_ENV} must be a number of seconds above 0, "
                             f"got {text!r}; set it to one (e.g. 5) or unset it")
    if local:
        # its workers' own logs stay quiet (silence_logs, restored at close): a task's
        # failure, e.g. a factor that breaks down, printed distributed's 'Compute Failed'
        # traceback before kernelfit's one line about it
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=processes,
                               dashboard_address=None, silence_logs=logging.CRITICAL)
        return Client(cluster), cluster
    addr = scheduler.strip()
    if "://" not in addr:
        addr = "tcp://" + addr
    try:
        if addr.startswith("tcp://"):
            _greeting(scheduler, addr, timeout)
    except OSError as exc:
        raise _unreachable(scheduler, timeout, exc) from None
    try:
        client = Client(addr, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise _unreachable(scheduler, timeout, exc) from None
    except ValueError as exc:
        raise InputError(f"bad Dask scheduler address {scheduler!r} ({exc}): give one such as "
                         "tcp://host:8786", param="scheduler") from None
    return client, None


def _unreachable(scheduler: str, timeout: float, exc: BaseException) -> InputError:
    return InputError(f"could not reach the Dask scheduler at {scheduler} within {timeout:g} s "
                      f"({exc.__class__.__name__}: {exc}). Is it running and reachable? "
                      "(distributed='local' starts a cluster here)", param="scheduler")


#: the most bytes a Dask scheduler's greeting (its handshake message) can plausibly take
GREETING_MAX_BYTES = 1 << 24


def _greeting(scheduler: str, addr: str, timeout: float) -> None:
    """Check that a Dask scheduler listens at the TCP address ``addr`` before a Client
    connects (raises :class:`InputError`): a Dask listener greets every connection with its
    handshake, a message whose first 8 bytes give its length. Without this a server of
    another kind made the Client wait without limit (an HTTP server, which waits for a
    request) or read a text greeting as a length of exabytes (MemoryError)."""
    import socket
    import struct

    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        host, port = parse_host_port(parse_address(addr)[1])
    except (ValueError, TypeError) as exc:
        raise InputError(f"bad Dask scheduler address {scheduler!r}: {exc}",
                         param="scheduler") from None
    head = b""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            while len(head) < 8:
                chunk = sock.recv(8 - len(head))
                if not chunk:
                    break
                head += chunk
    except socket.timeout:
        pass  # connected, but nothing greeted: below
    if len(head) == 8 and 0 < struct.unpack("Q", head)[0] <= GREETING_MAX_BYTES:
        return
    said = (f"it said nothing within {timeout:g} s, where a Dask scheduler greets every "
            "connection at once" if not head else f"it began with {head!r}, which is not how "
            "a Dask scheduler greets a connection")
    raise InputError(f"the server at {scheduler} is not a Dask scheduler: {said} (is this the "
                     "scheduler's port, 8786 by default, not its dashboard's?)",
                     param="scheduler")


# ---------------------------------------------------------------- worker tasks
def _cpu():
    return get_backend("cpu")


def _t_gram(kernel, X, bounds, i, j, dtype, shift, low_rank=None):
    # row norms per block; low_rank: mixed precision's deflation (float32 tiles)
    return gram_tile(kernel, X, None, bounds, i, j, dtype, shift, low_rank=low_rank)


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
    return forward_row(_cpu(), Lii, Y, Ls, Ys, _up)


def _t_backward(Lii, Yi, Ls, Xs):
    """X_i = inv(L_ii)^T (Y_i - sum_j L_ji^T X_j)."""
    Y = np.array(Yi, dtype=np.float64, order="F", copy=True)
    return backward_row(_cpu(), Lii, Y, Ls, Xs, _up)


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
    return cross_kernel_matmul(kernel, A, B, V, tile_size=tile_size, show_progress=False)


# ---------------------------------------------------------------- the factor on the cluster
class DaskTileOps:
    """Tile operations as tasks: every tile is a future and each operation a new one."""

    def __init__(self, client, A, bounds):
        self.c, self.A, self.bounds = client, A, bounds

    def potrf(self, k: int) -> int:
        self.A[k][k] = self.c.submit(_t_potrf, self.A[k][k], self.bounds[k][0], pure=False)
        return 0  # a failing pivot surfaces when the factor is gathered

    def trsm(self, i: int, k: int) -> None:
        A = self.A
        A[i][k] = self.c.submit(_t_trsm, A[k][k], A[i][k], pure=False)

    def update(self, i: int, c: int, k: int) -> None:
        A = self.A
        other = None if i == c else A[c][k]
        A[i][c] = self.c.submit(_t_update, A[i][c], A[i][k], other, pure=False)

    def forward(self, i: int, Bi, Ys):
        L = self.A
        return self.c.submit(_t_forward, L[i][i], Bi, L[i][:i], list(Ys), pure=False)

    def backward(self, i: int, Yi, Xs):
        L = self.A
        Ls = [L[j][i] for j in range(i + 1, len(self.bounds))]
        return self.c.submit(_t_backward, L[i][i], Yi, Ls, list(Xs), pure=False)


class DistributedFactor:
    """Lower tiles (futures) of K + shift I and its Cholesky factor on a Dask cluster."""

    def __init__(self, client, kernel: Kernel, X_future, n: int, tile_size: int, dtype,
                 low_rank=None):
        self.client = client
        self.kernel = kernel
        self.X = X_future
        self.low_rank = low_rank  # a future of U (n, r) or None (kernelfit.solvers.deflate)
        self.n = n
        self.tile_size = tile_size
        self.dtype = np.dtype(dtype)
        self.bounds = tile_bounds(n, tile_size)
        self.L = None

    def factor(self, shift: float) -> None:
        c = self.client
        nt = len(self.bounds)
        A = [[c.submit(_t_gram, self.kernel, self.X, self.bounds, i, j, self.dtype, shift,
                       self.low_rank, pure=False) for j in range(i + 1)] for i in range(nt)]
        factor_columns(DaskTileOps(c, A, self.bounds), self.bounds)
        # wait for the whole factor (raises NotPositiveDefiniteError from a worker)
        c.gather([A[i][i] for i in range(nt)])
        self.L = A

    def solve(self, R) -> np.ndarray:
        """(L L^T)^-1 R, substitutions as tasks (float64 arithmetic)."""
        c = self.client
        B = [c.scatter(np.asfortranarray(R[s:e], dtype=np.float64)) for s, e in self.bounds]
        Xs = substitute(DaskTileOps(c, self.L, self.bounds), len(self.bounds), B)
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


#: what Dask raises when a worker or the scheduler goes away with tasks of the solve
_LOST = ("FutureCancelledError", "CancelledError", "CommClosedError", "KilledWorker",
         "StreamClosedError")


def _lost(exc: BaseException) -> bool:
    """Whether ``exc`` is Dask's word for a worker or scheduler lost mid-solve."""
    return any(cls.__name__ in _LOST for cls in type(exc).__mro__)


def solve_distributed(kernel: Kernel, X, Y, opts, be: Optional[Backend] = None,
                      splan=None) -> ExactSolution:
    """Exact solve with Gram, factorization, substitutions and K products on Dask."""
    be = be if be is not None else get_backend(opts.device)
    Xh = np.ascontiguousarray(be.to_numpy(X), dtype=np.float64)
    Yh = np.asarray(be.to_numpy(Y), dtype=np.float64)
    if Yh.ndim == 1:
        Yh = Yh[:, None]
    n = Xh.shape[0]
    precision = splan.precision if splan is not None else opts.route_precision()
    dtype = np.float64 if precision == "float64" else np.float32
    ts = splan.tile_size if splan is not None else (opts.tile_size
                                                    or default_tile_size(n, "cpu"))
    t_start = time.perf_counter()
    client, cluster = connect(opts.scheduler, local=opts.distributed == "local")
    timings = {"connect": time.perf_counter() - t_start}
    log: list = []
    try:
        workers = list(client.scheduler_info().get("workers", {}))
        if not workers:  # the tasks would wait for one without limit
            raise InputError(f"the Dask scheduler at {opts.scheduler} has no workers; start "
                             f"some (dask worker {opts.scheduler}) and try again",
                             param="scheduler")
        Xf = client.scatter(Xh, broadcast=True)
        # plain float32: K's own factor, unrefined, as in memory (nothing to deflate)
        U, deflation = (None, None) if precision == "float32" else nystrom_landmarks(
            kernel, Xh, None, get_backend("cpu"), tiles=dtype)
        Uf = None if U is None else client.scatter(U, broadcast=True)
        F = DistributedFactor(client, kernel, Xf, n, ts, dtype, low_rank=Uf)

        def attempt(shift):
            try:
                F.factor(opts.ridge + shift)
            except NotPositiveDefiniteError:
                F.release()
                raise

        def mean_diagonal():
            return float(np.mean(kernel_diagonal(kernel, Xh))) + opts.ridge

        t0 = time.perf_counter()
        try:
            _, shift, attempts = retry_with_shift(attempt, mean_diagonal,
                                                  allow_shift=precision == "mixed",
                                                  dtype_name=np.dtype(dtype).name, log=log,
                                                  facts=breakdown_facts(kernel, Xh, opts.ridge,
                                                                        Y.shape[1]))
        except NotPositiveDefiniteError as exc:
            raise NotPositiveDefiniteError(
                f"K is not numerically positive definite in {np.dtype(dtype).name} "
                f"(Dask factorization: {exc}); a ridge > 0 regularizes the solve",
                index=exc.index, causes=exc.causes or ["ill_conditioned"],
                **dict(breakdown_facts(kernel, Xh, opts.ridge, Y.shape[1]),
                       dtype=np.dtype(dtype).name)) from None
        timings["gram_and_factor"] = time.perf_counter() - t0

        def matvec(V):
            KV = F.matvec(V)
            return KV + opts.ridge * V if opts.ridge else KV

        t1 = time.perf_counter()
        precond = F.solve
        if U is not None:  # the factor is of K - U U^T: M = L L^T + U U^T
            precond = Deflated(U, precond)
        out = direct_solve(matvec, precond, Yh) if precision == "float32" else refine(
            matvec, precond, Yh, tol=opts.tol, max_iter=opts.max_iter,
            method=opts.refinement, log=log)
        timings["solve"] = time.perf_counter() - t1
        if U is not None:
            deflation["woodbury_c"] = precond.c
        F.release()
    except KeyboardInterrupt:
        # the tasks cancelled by the interruption end in the client's event loop; their
        # "Task exception was never retrieved" and workers' warnings are noise then
        for name in ("asyncio", "distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        raise
    except Exception as exc:
        if _lost(exc):  # a worker or the scheduler went away mid-solve
            raise InputError(f"the Dask cluster at {opts.scheduler or 'local'} lost a worker "
                             f"or its scheduler during the solve ({exc.__class__.__name__}: "
                             f"{str(exc)[:160]}); nothing was returned. Run it again once "
                             "the cluster is whole, or solve on a local cluster "
                             "(distributed='local') or out of core (ooc_dir)",
                             param="scheduler") from None
        text = str(exc)
        if not (isinstance(exc, ImportError)
                or (isinstance(exc, RuntimeError) and "deserializ" in text)):
            raise
        raise InputError(f"the Dask cluster at {opts.scheduler or 'local'} could not load "
                         f"kernelfit's tasks ({exc.__class__.__name__}: "
                         f"{text.split('. ')[0].strip()}): its scheduler and workers "
                         "need kernelfit and the same packages as this process; install "
                         "them there", param="scheduler") from None
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    dist = {"scheduler": opts.scheduler or "local", "n_workers": len(workers),
            "workers": workers}
    extra = {"distributed": dist, **({} if deflation is None else {"deflation": deflation})}
    if precision == "mixed" and not out["converged"]:  # as in memory and out of core
        extra["float64_floor"] = floor = float64_floor(kernel, Xh, opts.ridge, out["alpha"],
                                                       Yh, get_backend("cpu"))
        if opts.precision == "auto" and out["relative_residual"] <= floor:
            out["converged"], extra["note_target"] = True, FLOOR_NOTE
    return refined_solution(out, opts, be, n=n, precision=precision, storage_dtype=dtype,
                            tile_size=ts, timings=timings, shift=shift, attempts=attempts,
                            log=log, extra=extra)
