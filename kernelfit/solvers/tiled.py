"""Tile storage of a symmetric matrix and the blocked (tiled) Cholesky factorization.

A symmetric n x n matrix is stored as its lower triangle of square tiles: tile (i, j),
i >= j, is its own Fortran-ordered array of shape (b_i, b_j). Only T(T+1)/2 tiles exist
(about half the memory of a dense matrix) and every LAPACK/BLAS call works in place on
whole tiles, so no call ever sees a matrix larger than one tile. This keeps kernelfit
clear of the OpenBLAS crashes that hit one huge multithreaded syrk/potrf (bundled with
numpy 2.4 / scipy 1.17 on some CPUs, from n of about 16,000), and makes tiles the unit of
later out-of-core storage, GPU streaming and Dask chunks.

Right-looking tiled Cholesky, lower convention (A = L L^T), for k = 0 .. T-1::

    A[k][k] <- potrf(A[k][k])
    A[i][k] <- A[i][k] inv(L[k][k])^T                   i > k        (trsm)
    A[i][i] <- A[i][i] - A[i][k] A[i][k]^T              i > k        (syrk)
    A[i][j] <- A[i][j] - A[i][k] A[j][k]^T              i > j > k    (gemm)

The same tile loop serves the CPU (SciPy LAPACK/BLAS) and the GPU (cuSOLVER/cuBLAS)
through :mod:`kernelfit.backend`.
"""

from __future__ import annotations

import math
import os
from typing import Callable, List, Optional

import numpy as np

from ..backend import Backend, get_backend, gpu_tile_size
from ..errors import InputError, NotPositiveDefiniteError
from ..kernels import Kernel, _xp_of
from ..progress import progress

__all__ = ["TiledSymmetric", "default_tile_size", "build_gram", "gram_tile", "cholesky_inplace",
           "cholesky_solve", "kernel_matvec", "cross_kernel_matmul", "n_threads_default",
           "stored_kernel_matvec", "kept_copy_bytes", "kept_pairs"]


def default_tile_size(n: int, device: str = "cpu") -> int:
    """A tile size that keeps BLAS calls efficient and safely small.

    CPU: up to n = 8,192 one tile, i.e. one LAPACK potrf call (the machine's own rate;
    potrf is safe here up to n of at least 12,000). Beyond, tiles of at most 4,096 rows
    (a 128 MiB float64 tile): measured on a 2-core AVX-512 machine with OpenBLAS 0.3.31's
    default kernels, 140 GFLOP/s at n = 8,000 (LAPACK's dpotrf on one matrix: 148) and
    164-170 GFLOP/s at n = 20,000, where LAPACK's dpotrf segfaults; 1,024-row tiles reached
    only 122 and 148. Every BLAS/LAPACK call stays at or below one tile, far from the sizes
    (n of about 16,000) where multithreaded OpenBLAS crashes.
    """
    if device == "gpu":  # the backend's dense/tiles rule (dense single call when it fits)
        return gpu_tile_size(n)
    target, single = 4096, 8192
    if n <= single:
        return max(int(n), 1)
    n_tiles = math.ceil(n / target)
    return int(math.ceil(n / n_tiles))


def tile_bounds(n: int, tile_size: int) -> List[tuple]:
    if tile_size < 1:
        raise InputError(f"tile size must be at least 1, got {tile_size}")
    return [(s, min(s + tile_size, n)) for s in range(0, n, tile_size)]


class TiledSymmetric:
    """Lower-triangular tile storage of a symmetric (or lower-triangular) n x n matrix."""

    def __init__(self, n: int, tile_size: int, dtype=np.float64, backend: Backend = None):
        if n < 1:
            raise InputError(f"matrix size must be at least 1, got {n}")
        self.n = int(n)
        self.tile_size = int(tile_size)
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise InputError(f"dtype must be float32 or float64, got {self.dtype}")
        self.backend = backend if backend is not None else get_backend("cpu")
        self.bounds = tile_bounds(self.n, self.tile_size)
        self.tiles: List[List[Optional[object]]] = [[None] * (i + 1)
                                                    for i in range(len(self.bounds))]
        self.factored = False
        # build_gram(keep_copy=True): off-diagonal tiles of K and its diagonal, kept
        # through the factorization for an exact K alpha (stored_kernel_matvec)
        self.kept: Optional[dict] = None
        self.kept_diag: Optional[list] = None

    # -------------------------------------------------------------- sizes
    @property
    def n_tiles(self) -> int:
        return len(self.bounds)

    @staticmethod
    def storage_bytes(n: int, tile_size: int, dtype=np.float64) -> int:
        """Bytes held by the tiles of an n x n matrix (lower triangle of tiles)."""
        if tile_size < 1:
            raise InputError(f"tile size must be at least 1, got {tile_size}")
        item = np.dtype(dtype).itemsize
        full, rest = divmod(int(n), int(tile_size))
        # row block i holds i full tiles to its left plus its diagonal tile
        total = tile_size * tile_size * full * (full + 1) // 2
        if rest:
            total += rest * (full * tile_size + rest)
        return total * item

    @property
    def nbytes(self) -> int:
        return self.storage_bytes(self.n, self.tile_size, self.dtype)

    def block_sizes(self) -> List[int]:
        return [e - s for s, e in self.bounds]

    # -------------------------------------------------------------- access
    def to_dense(self, lower_only: bool = False) -> np.ndarray:
        """Assemble a dense NumPy array (tests and small problems only)."""
        be = self.backend
        A = np.zeros((self.n, self.n), dtype=self.dtype)
        for i, (si, ei) in enumerate(self.bounds):
            for j, (sj, ej) in enumerate(self.bounds[: i + 1]):
                t = be.to_numpy(self.tiles[i][j])
                if i == j:
                    t = np.tril(t)
                A[si:ei, sj:ej] = t
        if not (lower_only or self.factored):
            A = A + np.tril(A, -1).T
        return A

    @classmethod
    def from_dense(cls, A, tile_size: int, backend: Backend = None, dtype=None):
        """Tile a dense symmetric matrix (its lower triangle is read; ``A`` is copied)."""
        A = np.asarray(A)
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise InputError(f"expected a square matrix, got shape {A.shape}")
        be = backend if backend is not None else get_backend("cpu")
        T = cls(A.shape[0], tile_size, dtype or A.dtype, be)
        xp = be.xp
        for i, (si, ei) in enumerate(T.bounds):
            for j, (sj, ej) in enumerate(T.bounds[: i + 1]):
                T.tiles[i][j] = xp.asarray(np.array(A[si:ei, sj:ej], dtype=T.dtype, order="F",
                                                    copy=True))
        return T

    def free(self) -> None:
        """Drop every tile (the memory returns to the allocator)."""
        for row in self.tiles:
            for j in range(len(row)):
                row[j] = None
        self.kept = None
        self.kept_diag = None


# ---------------------------------------------------------------- tile loops
def n_threads_default() -> int:
    """Cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class _BlasOneThread:
    """Limit BLAS to one thread while our own threads run tiles in parallel."""

    def __init__(self, active: bool):
        self.active = active
        self._ctx = None

    def __enter__(self):
        if self.active:
            try:
                from threadpoolctl import threadpool_limits

                self._ctx = threadpool_limits(limits=1, user_api="blas")
            except Exception:  # pragma: no cover - threadpoolctl comes with scikit-learn
                self._ctx = None
        return self

    def __exit__(self, *exc):
        if self._ctx is not None:
            self._ctx.restore_original_limits()
        return False


def _parallel(parts: List[list], work: Callable[[int, list], None], n_threads: int) -> None:
    """Run ``work(t, parts[t])`` for every part, in threads when more than one."""
    if n_threads <= 1 or len(parts) <= 1:
        for t, p in enumerate(parts):
            work(t, p)
        return
    from concurrent.futures import ThreadPoolExecutor

    with _BlasOneThread(True), ThreadPoolExecutor(max_workers=len(parts)) as ex:
        futs = [ex.submit(work, t, p) for t, p in enumerate(parts)]
        for f in futs:
            f.result()


class _TaskQueue:
    """Tasks handed out one at a time to whichever thread is free (first come, first served).

    Iterating over it inside ``work(t, part)`` gives each thread the next task not yet
    taken, so threads that draw cheap tiles (or run faster) simply take more of them.
    """

    def __init__(self, tasks: list):
        import threading

        self._tasks = list(tasks)
        self._next = 0
        self._lock = threading.Lock()

    def __iter__(self):
        while True:
            with self._lock:
                if self._next >= len(self._tasks):
                    return
                task = self._tasks[self._next]
                self._next += 1
            yield task


def _run_tiles(tasks: list, work: Callable[[int, list], None], be: Backend,
               n_threads: Optional[int]) -> int:
    """Run ``work(t, tasks_of_t)`` on threads that share ``tasks``; returns the thread count.

    CPU: one thread per core, each running single-threaded BLAS, so the element-wise work
    of one tile overlaps the GEMM of another (NumPy releases the GIL); the threads draw
    tasks from one queue, so uneven task counts or costs do not leave a core idle.
    Measured at n = 20,000 on 2 cores: Gram 2.1 s against 2.9 s with one thread and
    2-thread BLAS. GPU: one stream of work (the device is parallel already).
    """
    nth = 1 if be.device != "cpu" else (n_threads or n_threads_default())
    nth = max(1, min(nth, len(tasks)))
    if nth == 1:
        work(0, list(tasks))
        return 1
    queue = _TaskQueue(tasks)
    _parallel([queue] * nth, work, nth)
    return nth


# ---------------------------------------------------------------- building
def gram_tile(kernel: Kernel, X, stats, bounds, i: int, j: int, dtype, shift: float = 0.0,
              *, backend: Optional[Backend] = None, scratch=None):
    """Tile (i, j) of K + shift I, Fortran-ordered, in ``dtype`` (computed in float64).

    With a ``backend`` the tile is allocated by it (on the CPU: without transparent huge
    pages, see :func:`kernelfit.backend.host_empty`). A float32 tile is computed in a
    float64 ``scratch`` block (a :class:`_BlockBuffer`, made when not given), then cast.
    """
    xp = _xp_of(X)
    si, ei = bounds[i]
    sj, ej = bounds[j]
    dtype = np.dtype(dtype)
    tile = (backend.empty_tile(ei - si, ej - sj, dtype) if backend is not None
            else xp.empty((ei - si, ej - sj), dtype=dtype, order="F"))
    f64 = dtype == np.float64
    if not f64 and scratch is None:
        scratch = _BlockBuffer(backend, ej - sj, ei - si, xp=xp)
    # k(X_j, X_i) in C order is tile (i, j) in Fortran order: written in place
    out = tile.T if f64 else scratch.view(ej - sj, ei - si)
    kernel.block(X[sj:ej], X[si:ei], a_stats=None if stats is None else stats[sj:ej],
                 b_stats=None if stats is None else stats[si:ei], same=(i == j), out=out)
    if i == j and shift:
        idx = xp.arange(ej - sj)
        out[idx, idx] += shift
    if not f64:
        tile.T[...] = out
    return tile


def build_gram(kernel: Kernel, X, *, tile_size: Optional[int] = None, dtype=np.float64,
               backend: Backend = None, ridge: float = 0.0, show_progress=None,
               stats=None, n_threads: Optional[int] = None,
               keep_copy: bool = False,
               keep_budget: Optional[int] = None) -> TiledSymmetric:
    """The kernel Gram matrix K = k(X, X) (+ ridge I) as lower tiles.

    ``X`` must live on ``backend`` already. Each tile is computed in float64 and stored
    in ``dtype``; peak extra memory is one float64 tile per thread (float32 tiles only).
    On the CPU, one thread per core computes tiles.

    ``keep_copy=True`` also keeps what the factorization would destroy: a copy of every
    off-diagonal tile and the diagonal of K (without the ridge). A diagonal tile's strict
    upper triangle survives the in-place Cholesky (potrf reads only the lower one), so
    together they hold all of K after factoring, in about the memory of one dense n x n
    matrix, and :func:`stored_kernel_matvec` forms K alpha exactly from them, at
    memory speed instead of recomputing K. ``keep_budget`` (bytes) caps the off-diagonal
    copies: tiles beyond it are not kept and get recomputed by the product instead (the
    diagonal tiles, which survive the factorization anyway, are always used).
    """
    be = backend if backend is not None else get_backend("cpu")
    xp = be.xp
    n = X.shape[0]
    tile_size = tile_size or default_tile_size(n, be.device)
    T = TiledSymmetric(n, tile_size, dtype, be)
    if keep_copy and T.dtype != np.float64:
        raise InputError("keep_copy needs float64 tiles")
    if stats is None:
        stats = kernel.prepare(X)
    sizes = T.block_sizes()
    tasks = [(i, j) for i in range(T.n_tiles) for j in range(i + 1)]
    if keep_copy:
        T.kept = {}
        for i, j in kept_pairs(T.n, tile_size, keep_budget):
            T.kept[(i, j)] = be.empty_tile(sizes[i], sizes[j], T.dtype)
    shift = 0.0 if keep_copy else ridge  # with a copy: the ridge goes on after it is taken
    bar = progress(total=len(tasks), desc="gram", enabled=show_progress, unit="tile")

    def work(_t, part):
        scratch = None if T.dtype == np.float64 else _BlockBuffer(be, tile_size, tile_size)
        for i, j in part:
            tile = gram_tile(kernel, X, stats, T.bounds, i, j, T.dtype, shift, backend=be,
                             scratch=scratch)
            if keep_copy and (i, j) in T.kept:
                T.kept[(i, j)][...] = tile
            T.tiles[i][j] = tile
            bar.update(1)

    try:
        _run_tiles(tasks, work, be, n_threads)
    finally:
        bar.close()
    if keep_copy:
        T.kept_diag = [xp.diagonal(T.tiles[i][i]).copy() for i in range(T.n_tiles)]
        if ridge:
            for i in range(T.n_tiles):
                k = sizes[i]
                T.tiles[i][i][xp.arange(k), xp.arange(k)] += ridge
    return T


def kept_pairs(n: int, tile_size: int, budget: Optional[int] = None) -> List[tuple]:
    """The off-diagonal tiles (i, j) that ``build_gram(keep_copy=True)`` copies.

    In order, as many as fit in ``budget`` bytes (all when None).
    """
    return [(i, j) for i, j, _ in _kept_tiles(n, tile_size, budget)]


def _kept_tiles(n: int, tile_size: int, budget: Optional[int]):
    """(i, j, bytes) of the off-diagonal float64 tiles kept within ``budget``, in order."""
    bounds = tile_bounds(n, tile_size)
    out, used = [], 0
    for i in range(len(bounds)):
        for j in range(i):
            size = 8 * (bounds[i][1] - bounds[i][0]) * (bounds[j][1] - bounds[j][0])
            if budget is not None and used + size > budget:
                return out
            out.append((i, j, size))
            used += size
    return out


def kept_copy_bytes(n: int, tile_size: int, budget: Optional[int] = None) -> int:
    """Extra bytes that ``build_gram(keep_copy=True)`` holds: kept tiles + the diagonal."""
    return sum(size for _, _, size in _kept_tiles(n, tile_size, budget)) + 8 * n


# ---------------------------------------------------------------- factoring
def cholesky_inplace(T: TiledSymmetric, *, show_progress=None,
                     on_panel: Optional[Callable[[int], None]] = None) -> TiledSymmetric:
    """Factor ``T`` = L L^T in place (tiles of L replace tiles of A).

    Raises :class:`NotPositiveDefiniteError` with the global index of the first
    non-positive pivot; ``T`` is then partly overwritten and must be rebuilt.
    ``on_panel(k)`` is called after panel ``k`` is finished (checkpoints, progress).
    """
    if T.factored:
        raise InputError("matrix is already factored")
    be = T.backend
    tiles = T.tiles
    nt = T.n_tiles
    # work per panel ~ (nt - k)^2, for an honest progress bar
    weights = [(nt - k) ** 2 for k in range(nt)]
    bar = progress(total=sum(weights), desc="cholesky", enabled=show_progress, unit="w")
    try:
        for k in range(nt):
            info = be.potrf(tiles[k][k])
            if info != 0:
                glob = T.bounds[k][0] + info - 1
                raise NotPositiveDefiniteError(
                    f"K is not numerically positive definite: the Cholesky pivot at row {glob} "
                    f"(of {T.n}) is not positive", index=glob)
            Lkk = tiles[k][k]
            for i in range(k + 1, nt):
                be.trsm_rlt(Lkk, tiles[i][k])
            for i in range(k + 1, nt):
                Aik = tiles[i][k]
                for j in range(k + 1, i):
                    be.gemm_nt_sub(Aik, tiles[j][k], tiles[i][j])
                be.syrk_sub(Aik, tiles[i][i])
            if on_panel is not None:
                on_panel(k)
            bar.update(weights[k])
    finally:
        bar.close()
    T.factored = True
    return T


def cholesky_solve(T: TiledSymmetric, B, work_dtype=None) -> object:
    """Solve (L L^T) X = B with the tiled factor; ``B`` is (n, m), returns a new array.

    The triangular solves run in ``work_dtype`` (default: the factor's dtype). With a
    float32 factor and ``work_dtype=float64`` each tile is upcast when used (one tile of
    scratch), so the solve is a fixed symmetric positive definite operator to float64
    rounding: the preconditioner of mixed-precision CG, which stalls when applied in float32
    (every application is then perturbed by about cond(K) * 6e-8 relative).
    """
    if not T.factored:
        raise InputError("factor the matrix first (cholesky_inplace)")
    be = T.backend
    xp = be.xp
    wd = np.dtype(work_dtype or T.dtype)
    B = xp.asarray(B)
    if B.ndim == 1:
        return cholesky_solve(T, B[:, None], work_dtype)[:, 0]
    if B.shape[0] != T.n:
        raise InputError(f"right-hand side has {B.shape[0]} rows, matrix has {T.n}")
    Y = [xp.asfortranarray(B[s:e].astype(wd)) for s, e in T.bounds]
    nt = T.n_tiles

    def tile(i, j):
        t = T.tiles[i][j]
        return t if t.dtype == wd else xp.asfortranarray(t.astype(wd))

    # forward: L Y = B
    for i in range(nt):
        for j in range(i):
            be.gemm_acc(tile(i, j), Y[j], Y[i], alpha=-1.0)
        be.trsm_left(tile(i, i), Y[i], trans=False)
    # backward: L^T X = Y
    for i in reversed(range(nt)):
        for j in range(i + 1, nt):
            be.gemm_acc(tile(j, i), Y[j], Y[i], trans_a=True, alpha=-1.0)
        be.trsm_left(tile(i, i), Y[i], trans=True)
    return xp.concatenate(Y, axis=0)


# ---------------------------------------------------------------- products
class _BlockBuffer:
    """One reusable float64 buffer for kernel blocks that are used and dropped.

    Fresh large arrays cost page faults on first touch (much of a block's time on some
    virtual machines); the products below reuse one C-ordered buffer instead.
    """

    def __init__(self, be: Optional[Backend], rows: int, cols: int, xp=np):
        size = max(rows * cols, 1)
        self.flat = (be.empty(size, np.float64) if be is not None
                     else xp.empty(size, dtype=xp.float64))

    def view(self, rows: int, cols: int):
        return self.flat[: rows * cols].reshape(rows, cols)


def kernel_matvec(kernel: Kernel, X, V, *, tile_size: Optional[int] = None,
                  backend: Backend = None, stats=None, show_progress=None,
                  out_dtype=np.float64, n_threads: Optional[int] = None,
                  pairs: Optional[List[tuple]] = None):
    """K V with K = k(X, X) recomputed tile by tile in float64 (K is never stored).

    Uses symmetry: each off-diagonal tile contributes to two row blocks, so the cost is
    half a Gram matrix. Memory: one tile buffer and one result per thread. ``pairs``
    restricts the sum to these lower tiles (i, j), i >= j (default: all of them).
    """
    be = backend if backend is not None else get_backend("cpu")
    xp = be.xp
    n = X.shape[0]
    V = xp.asarray(V, dtype=xp.float64)
    squeeze = V.ndim == 1
    if squeeze:
        V = V[:, None]
    tile_size = tile_size or default_tile_size(n, be.device)
    bounds = tile_bounds(n, tile_size)
    if stats is None:
        stats = kernel.prepare(X)
    tasks = pairs if pairs is not None else [(i, j) for i in range(len(bounds))
                                             for j in range(i + 1)]
    results = {}
    bar = progress(total=len(tasks), desc="K @ v", enabled=show_progress, unit="tile")

    def work(t, part):
        R = xp.zeros((n, V.shape[1]), dtype=xp.float64)
        buf = _BlockBuffer(be, tile_size, tile_size)
        for i, j in part:
            si, ei = bounds[i]
            sj, ej = bounds[j]
            # both products are formed chunk by chunk while the block is in cache
            kernel.block(X[si:ei], X[sj:ej], a_stats=None if stats is None else stats[si:ei],
                         b_stats=None if stats is None else stats[sj:ej], same=(i == j),
                         out=buf.view(ei - si, ej - sj), times=(V[sj:ej], R[si:ei]),
                         times_t=None if i == j else (V[si:ei], R[sj:ej]))
            bar.update(1)
        results[t] = R

    try:
        _run_tiles(tasks, work, be, n_threads)
    finally:
        bar.close()
    R = _sum_parts(results, xp.zeros((n, V.shape[1]), dtype=xp.float64))
    R = R.astype(out_dtype, copy=False)
    return R[:, 0] if squeeze else R


def _sum_parts(results: dict, empty):
    """Sum the per-thread partial results (``empty`` when there were no tasks)."""
    parts = [results[t] for t in sorted(results)]
    if not parts:
        return empty
    total = parts[0]
    for other in parts[1:]:
        total += other
    return total


def cross_kernel_matmul(kernel: Kernel, A, B, V, *, tile_size: Optional[int] = None,
                        backend: Backend = None, b_stats=None, show_progress=None,
                        desc: str = "predict", n_threads: Optional[int] = None,
                        a_stats=None):
    """k(A, B) @ V computed in tiles (A: queries, B: training points, V: coefficients).

    ``a_stats``/``b_stats``: the rows' :meth:`Kernel.prepare` statistics when they must
    come from other columns than those of ``A``/``B`` (see :func:`kernelfit.kernels.
    active_columns`); computed from ``A``/``B`` when omitted.
    """
    be = backend if backend is not None else get_backend("cpu")
    xp = be.xp
    V = xp.asarray(V, dtype=xp.float64)
    squeeze = V.ndim == 1
    if squeeze:
        V = V[:, None]
    ts = tile_size or default_tile_size(max(A.shape[0], B.shape[0]), be.device)
    bb = tile_bounds(B.shape[0], ts)
    # query rows in blocks small enough that the threads get several tasks each (at least
    # 8 per thread on the CPU, where a 5-to-4 split of 9 tiles left a core idle a tenth of
    # the time), but never beyond the tile size that bounds the block buffer
    nth = 1 if be.device != "cpu" else (n_threads or n_threads_default())
    a_blocks = max(math.ceil(A.shape[0] / ts), math.ceil(8 * nth / len(bb)) if bb else 1)
    a_rows = max(min(ts, math.ceil(A.shape[0] / a_blocks), A.shape[0]), 1)
    if nth > 1:
        a_rows = min(ts, max(a_rows, 256))
    ab = tile_bounds(A.shape[0], a_rows) if A.shape[0] else []
    if b_stats is None:
        b_stats = kernel.prepare(B)
    if a_stats is None:
        a_stats = kernel.prepare(A)
    tasks = [(a, b) for a in ab for b in bb]
    results = {}
    bar = progress(total=len(tasks), desc=desc, enabled=show_progress, unit="tile")

    def work(t, part):
        P = xp.zeros((A.shape[0], V.shape[1]), dtype=xp.float64)
        buf = _BlockBuffer(be, ts, ts)
        for (si, ei), (sj, ej) in part:
            kernel.block(A[si:ei], B[sj:ej],
                         a_stats=None if a_stats is None else a_stats[si:ei],
                         b_stats=None if b_stats is None else b_stats[sj:ej],
                         out=buf.view(ei - si, ej - sj), times=(V[sj:ej], P[si:ei]))
            bar.update(1)
        results[t] = P

    try:
        _run_tiles(tasks, work, be, n_threads)
    finally:
        bar.close()
    P = _sum_parts(results, xp.zeros((A.shape[0], V.shape[1]), dtype=xp.float64))
    return P[:, 0] if squeeze else P


def stored_kernel_matvec(T: TiledSymmetric, V, *, kernel: Optional[Kernel] = None, X=None,
                         stats=None, n_threads: Optional[int] = None):
    """K V from what ``build_gram(keep_copy=True)`` kept through the factorization.

    Off-diagonal tile (i, j) of K contributes K_ij V_j to row block i and K_ij^T V_i to
    row block j. A factored diagonal tile holds L in its lower triangle and K in its strict
    upper one, so a symmetric product that reads the upper triangle gives K_ii V_i once
    its diagonal (L's) is replaced by K's: ``symm_upper(T_ii) V_i + (diag K - diag L) V_i``.
    The values are exactly those that were factored. Off-diagonal tiles that were not kept
    (a ``keep_budget``) are recomputed from ``kernel`` and ``X`` (and their ``stats``). K is
    the kernel matrix without any ridge (the ridge sits only on the factored diagonal).
    """
    if T.kept is None or T.kept_diag is None:
        raise InputError("this Gram matrix was built without keep_copy=True")
    be = T.backend
    xp = be.xp
    V = xp.asarray(V, dtype=xp.float64)
    squeeze = V.ndim == 1
    if squeeze:
        V = V[:, None]
    if V.shape[0] != T.n:
        raise InputError(f"V has {V.shape[0]} rows, the matrix has {T.n}")
    missing = [(i, j) for i in range(T.n_tiles) for j in range(i) if (i, j) not in T.kept]
    if missing and (kernel is None or X is None):
        raise InputError(f"{len(missing)} off-diagonal tiles were not kept; pass the kernel "
                         "and X to recompute them")
    blocks = [xp.asfortranarray(V[s:e]) for s, e in T.bounds]
    out = [xp.zeros((e - s, V.shape[1]), dtype=xp.float64) for s, e in T.bounds]
    for i in range(T.n_tiles):
        tile = T.tiles[i][i]  # its diagonal: L's, or K + ridge before factoring
        delta = T.kept_diag[i] - xp.diagonal(tile)
        out[i] += be.symm_upper(tile, blocks[i]) + delta[:, None] * blocks[i]
        for j in range(i):
            C = T.kept.get((i, j))
            if C is not None:
                be.gemm_acc(C, blocks[j], out[i])
                be.gemm_acc(C, blocks[i], out[j], trans_a=True)
    R = xp.concatenate(out, axis=0)
    if missing:
        R += kernel_matvec(kernel, X, V, tile_size=T.tile_size, backend=be, stats=stats,
                           n_threads=n_threads, pairs=missing)
    return R[:, 0] if squeeze else R


def factor_matvec(T: TiledSymmetric, V):
    """K V = L (L^T V) from the tiled factor L (used for eigenvalue estimates).

    Diagonal tiles are applied as triangular products (their upper parts hold stale data),
    off-diagonal tiles as plain products; nothing is copied.
    """
    if not T.factored:
        raise InputError("factor the matrix first (cholesky_inplace)")
    be = T.backend
    xp = be.xp
    V = xp.asfortranarray(xp.asarray(V, dtype=xp.float64))
    nt = T.n_tiles
    tiles = T.tiles
    W = []
    for j, (sj, ej) in enumerate(T.bounds):  # W = L^T V
        acc = be.trmm_lower(tiles[j][j], V[sj:ej], trans=True)
        for i in range(j + 1, nt):
            si, ei = T.bounds[i]
            acc += tiles[i][j].T.astype(xp.float64, copy=False) @ V[si:ei]
        W.append(xp.asfortranarray(acc))
    out = xp.zeros_like(V)
    for i, (si, ei) in enumerate(T.bounds):  # out = L W
        out[si:ei] = be.trmm_lower(tiles[i][i], W[i], trans=False)
        for j in range(i):
            out[si:ei] += tiles[i][j].astype(xp.float64, copy=False) @ W[j]
    return out


def estimate_condition(T: TiledSymmetric, *, iters: int = 30, seed: int = 0) -> dict:
    """Estimate the 2-norm condition number of K = L L^T from its tiled factor.

    The largest eigenvalue comes from power iteration with K v = L (L^T v); the smallest
    from inverse iteration with the Cholesky solve. Both are lower bounds that converge
    from below after ``iters`` steps; their ratio estimates cond(K) (a lower bound,
    usually within a small factor). Cost: about 4 ``iters`` n^2 flops, far below the
    factorization.
    """
    be = T.backend
    xp = be.xp
    rng = np.random.default_rng(seed)
    v = xp.asarray(rng.standard_normal((T.n, 1)))
    v /= xp.linalg.norm(v)
    lam_max = 0.0
    for _ in range(iters):
        w = factor_matvec(T, v)
        lam_max = float(xp.linalg.norm(w))
        if lam_max == 0:
            break
        v = w / lam_max
    u = xp.asarray(rng.standard_normal((T.n, 1)))
    u /= xp.linalg.norm(u)
    inv_norm = 0.0
    for _ in range(iters):
        w = cholesky_solve(T, u).astype(xp.float64)
        inv_norm = float(xp.linalg.norm(w))
        if not np.isfinite(inv_norm) or inv_norm == 0:
            break
        u = w / inv_norm
    lam_min = 1.0 / inv_norm if inv_norm > 0 else 0.0
    cond = lam_max / lam_min if lam_min > 0 else float("inf")
    return {"lambda_max": lam_max, "lambda_min": lam_min, "condition_number": cond,
            "iterations": iters, "seed": seed}
