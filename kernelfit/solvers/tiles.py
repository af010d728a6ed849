"""Tile stores: where the lower tiles of a symmetric matrix live, and the tile work loop.

A symmetric n x n matrix is stored as its lower triangle of square tiles: tile (i, j),
i >= j, is its own Fortran-ordered array of shape (b_i, b_j). Only T(T+1)/2 tiles exist
(about half the memory of a dense matrix) and every LAPACK/BLAS call works in place on
whole tiles, so no call ever sees a matrix larger than one tile. This keeps kernelfit
clear of the OpenBLAS crashes that hit one huge multithreaded syrk/potrf (bundled with
numpy 2.4 / scipy 1.17 on some CPUs, from n of about 16,000).

Stores:

* :class:`TiledSymmetric` - tiles in memory (host or GPU);
* :class:`DiskTiles` - tiles as ``.npy`` files, read back memory-mapped (out of core);
* the Dask placement keeps tiles as futures on the workers
  (:class:`kernelfit.solvers.distributed.DaskTileOps`).

The factorization and the triangular solves over any of them are written once, in
:mod:`kernelfit.solvers.cholesky`.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np

from .._io import atomic_writer
from ..backend import Backend, get_backend, gpu_tile_size
from ..backend._host import BlasOneThread
from ..errors import InputError
from .machine import choose_tile_size, min_tiles, n_threads_default

__all__ = ["TiledSymmetric", "DiskTiles", "default_tile_size", "tile_bounds",
           "n_threads_default", "run_tiles", "BlockBuffer", "BlasOneThread"]


def default_tile_size(n: int, device: str = "cpu") -> int:
    """The tile edge for an n x n matrix on ``device``, chosen for this machine.

    GPU: :func:`kernelfit.backend.gpu_tile_size` (one dense call when it fits). CPU: small
    matrices are one tile (one LAPACK call at the library's own rate). Larger ones
    are split into equal tiles no larger than :func:`kernelfit.solvers.machine.
    choose_tile_size` gives for this machine's caches and cores, and into at least
    :func:`kernelfit.solvers.machine.min_tiles` of them (enough tile operations for every
    core from the first columns of the Cholesky on); every BLAS/LAPACK call then stays at
    or below one tile, far from the sizes (n of about 16,000) where multithreaded
    OpenBLAS has crashed.
    """
    if device == "gpu":  # the backend's dense/tiles rule (dense single call when it fits)
        return gpu_tile_size(n)
    target, single = choose_tile_size(device)
    if n <= single:
        return max(int(n), 1)
    n_tiles = max(math.ceil(n / target), min_tiles(n))
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
        # float32 tiles: the kept diagonal tiles are uint32 views of the tiles' own strict
        # upper triangles (kernelfit.solvers.products.diagonal_in_tiles)
        self.diagonal_in_tiles = False
        # one reusable tile of scratch for upcasting tiles in the triangular solves
        self.scratch: Optional[BlockBuffer] = None

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
        self.diagonal_in_tiles = False
        self.scratch = None




class DiskTiles:
    """Tiles as ``.npy`` files in a folder: ``{kind}_{i}_{j}.npy`` (kind A: K, L: factor).

    Each file is written atomically (temporary file + rename), so a tile file exists only
    when complete; tiles are read back as read-only memory maps.
    """

    def __init__(self, directory: Path, n: int, tile_size: int, dtype):
        self.dir = directory
        self.n = n
        self.tile_size = tile_size
        self.dtype = np.dtype(dtype)
        self.bounds = tile_bounds(n, tile_size)

    @property
    def nt(self) -> int:
        return len(self.bounds)

    def path(self, kind: str, i: int, j: int) -> Path:
        return self.dir / f"{kind}_{i}_{j}.npy"

    def exists(self, kind, i, j) -> bool:
        return self.path(kind, i, j).is_file()

    def tile_nbytes(self, i: int, j: int) -> int:
        """The bytes of tile (i, j)'s values (its ``.npy`` file holds a header more)."""
        (si, ei), (sj, ej) = self.bounds[i], self.bounds[j]
        return (ei - si) * (ej - sj) * self.dtype.itemsize

    def write(self, kind, i, j, arr) -> None:
        arr = np.asfortranarray(arr, dtype=self.dtype)
        with atomic_writer(self.path(kind, i, j), "wb") as fh:
            np.save(fh, arr, allow_pickle=False)

    def mmap(self, kind, i, j):
        a = np.load(self.path(kind, i, j), mmap_mode="r", allow_pickle=False)
        if not a.flags.f_contiguous:  # pragma: no cover - we only write Fortran tiles
            a = np.asfortranarray(a)
        return a

    def remove(self, kind, i, j) -> None:
        try:
            self.path(kind, i, j).unlink()
        except FileNotFoundError:
            pass

    def clear(self) -> None:
        for p in self.dir.glob("[AL]_*_*.npy"):
            p.unlink()
        for p in self.dir.glob(".[AL]_*.tmp"):
            p.unlink()

    def bytes_on_disk(self) -> int:
        return sum(p.stat().st_size for p in self.dir.glob("[AL]_*_*.npy"))

    def factor_in_memory_maps(self, backend: Backend) -> "TiledSymmetric":
        """The finished factor as a :class:`TiledSymmetric` of read-only memory maps."""
        T = TiledSymmetric(self.n, self.tile_size, self.dtype, backend)
        for i in range(self.nt):
            for j in range(i + 1):
                T.tiles[i][j] = self.mmap("L", i, j)
        T.factored = True
        return T


# ---------------------------------------------------------------- the tile work loop
def _parallel(parts: List[list], work: Callable[[int, list], None], n_threads: int) -> None:
    """Run ``work(t, parts[t])`` for every part, in threads when more than one."""
    if n_threads <= 1 or len(parts) <= 1:
        for t, p in enumerate(parts):
            work(t, p)
        return
    from concurrent.futures import ThreadPoolExecutor

    with BlasOneThread(True), ThreadPoolExecutor(max_workers=len(parts)) as ex:
        futs = [ex.submit(work, t, p) for t, p in enumerate(parts)]
        for f in futs:
            f.result()


class _TaskQueue:
    """Tasks handed out one at a time to whichever thread is free (first come, first served).

    Iterating over it inside ``work(t, part)`` gives each thread the next task not yet
    taken, so threads that draw cheap tiles (or run faster) simply take more of them.
    """

    def __init__(self, tasks: list):
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


def run_tiles(tasks: list, work: Callable[[int, list], None], be: Backend,
              n_threads: Optional[int]) -> int:
    """Run ``work(t, tasks_of_t)`` on threads that share ``tasks``; returns the thread count.

    CPU: one thread per core, each running single-threaded BLAS, so the element-wise work
    of one tile overlaps the GEMM of another (NumPy releases the GIL); the threads draw
    tasks from one queue, so uneven task counts or costs do not leave a core idle.
    GPU: one stream of work (the device is parallel already).
    """
    nth = 1 if be.device != "cpu" else (n_threads or n_threads_default())
    nth = max(1, min(nth, len(tasks)))
    if nth == 1:
        work(0, list(tasks))
        return 1
    queue = _TaskQueue(tasks)
    _parallel([queue] * nth, work, nth)
    return nth


class BlockBuffer:
    """Reusable buffers for kernel blocks that are used and dropped: a float64 block, a
    float32 block for the float32 GEMM of integer-grid inputs, and a float64 row chunk
    (:meth:`kernelfit.kernels.Kernel.block`'s ``scratch``), each made on first use.

    Fresh large arrays cost page faults on first touch (much of a block's time on some
    virtual machines); the products below reuse these instead.
    """

    def __init__(self, be: Optional[Backend], rows: int, cols: int, xp=np):
        self._be, self._xp = be, xp
        self._size = max(rows * cols, 1)
        self._flat = self._f32 = self._chunk = None

    def _empty(self, size: int, dtype):
        return (self._be.empty(size, dtype) if self._be is not None
                else self._xp.empty(size, dtype=dtype))

    @property
    def flat(self):
        """The float64 block buffer (flat)."""
        if self._flat is None:
            self._flat = self._empty(self._size, np.float64)
        return self._flat

    def fortran_view(self, rows: int, cols: int):
        """A Fortran-ordered (rows, cols) view of the buffer."""
        return self.flat[: rows * cols].reshape(cols, rows).T

    def view(self, rows: int, cols: int):
        return self.flat[: rows * cols].reshape(rows, cols)

    def product(self, rows: int, cols: int):
        """A C-ordered float32 (rows, cols) block (as large as the float64 one)."""
        if self._f32 is None:
            self._f32 = self._empty(self._size, np.float32)
        return self._f32[: rows * cols].reshape(rows, cols)

    def chunk(self, rows: int, cols: int):
        """A C-ordered float64 (rows, cols) row chunk; grown when too small."""
        if self._chunk is None or self._chunk.size < rows * cols:
            self._chunk = self._empty(max(rows * cols, 1), np.float64)
        return self._chunk[: rows * cols].reshape(rows, cols)
