"""What the solvers need to know about the machine: cores, caches, BLAS, GEMM rates.

Nothing here is tuned on one CPU: the tile size follows from the cache sizes the kernel
reports, the thread count from the cores this process may run on, and the expected-time
model of ``--precision auto`` from the float64 GEMM rate and memory bandwidth measured in
this process (a fraction of a second, once). Every choice is returned as data so that
results can record it.
"""

from __future__ import annotations

import math
import time
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np

from ..backend._host import usable_cores
from ..grid import gaussian_of_exact

__all__ = ["n_threads_default", "cache_sizes", "choose_tile_size", "min_tiles", "tile_choice",
           "given_tiles_rule", "gemm_rates", "blas_threads", "cache_block_edge"]

#: every BLAS/LAPACK call stays at or below one tile of this many rows: far from the
#: sizes (n of about 16,000) where multithreaded OpenBLAS dsyrk/dpotrf crashed
MAX_TILE = 8192
#: tiles are never smaller than this (below it per-call overheads dominate)
MIN_TILE = 512
#: one tile edge is this many "BLAS cache blocks" (sqrt(L2 / 8 bytes)): GEMM on a tile
#: then runs many full register/cache blocks per call and reaches the library's rate
BLOCKS_PER_TILE = 8


def n_threads_default() -> int:
    """Cores this process may run on."""
    return usable_cores()


@lru_cache(maxsize=1)
def cache_sizes() -> dict:
    """Data/unified cache sizes in bytes by level ({'L1': .., 'L2': .., 'L3': ..})."""
    out = {}
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    try:
        entries = sorted(base.glob("index*"))
    except OSError:  # pragma: no cover - no sysfs
        entries = []
    for e in entries:
        try:
            if (e / "type").read_text().strip() == "Instruction":
                continue
            level = int((e / "level").read_text())
            text = (e / "size").read_text().strip().upper()
        except (OSError, ValueError):
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        try:
            size = int(text.rstrip("KMG")) * mult
        except ValueError:
            continue
        out[f"L{level}"] = max(out.get(f"L{level}", 0), size)
    return out


def _round_to(x: float, step: int) -> int:
    return int(max(step, step * round(x / step)))


@lru_cache(maxsize=4)
def choose_tile_size(device: str = "cpu") -> tuple:
    """(target tile edge, largest n kept as one tile) for ``device`` on this machine.

    CPU: the tile edge is ``BLOCKS_PER_TILE`` times the edge of a float64 block that fills
    the per-core L2 cache (sqrt(L2 / 8)), rounded to 256 and kept in [MIN_TILE, MAX_TILE /
    2]; matrices up to MAX_TILE rows stay one tile. GPU: MAX_TILE for both (the device is
    parallel within one tile; fewer, larger calls).
    """
    if device == "gpu":
        return MAX_TILE, MAX_TILE
    edge = BLOCKS_PER_TILE * cache_block_edge()
    target = min(max(_round_to(edge, 256), MIN_TILE), MAX_TILE // 2)
    return target, MAX_TILE


def min_tiles(n: int) -> int:
    """The fewest tile rows an n x n matrix split into tiles on the CPU gets: 2 per core
    plus one, as far as tiles of at least ``MIN_TILE`` rows allow. With fewer, the tiled
    Cholesky's task graph leaves cores idle behind each column's potrf and trsm: on 2 Zen 5
    cores the float32 factorization at n = 10,000 took 0.78-0.81 s in 5 tiles against
    0.82-0.88 s in 4, at n = 9,000 0.62-0.65 s against 0.66-0.68 s (and n = 12,000-20,000,
    which the cache rule splits into 5 or more, alike)."""
    return max(1, min(2 * n_threads_default() + 1, int(n) // MIN_TILE))


def cache_block_edge() -> int:
    """Edge of a float64 square block that fills the per-core L2 cache (multiple of 64)."""
    l2 = cache_sizes().get("L2") or (1 << 20)
    return max(64, 64 * int(math.sqrt(l2 / 8.0) // 64))


def blas_threads() -> dict:
    """The BLAS library threadpoolctl sees: API, kernel (architecture), threads, version."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return {}
    for lib in threadpool_info():
        if lib.get("user_api") == "blas":
            return {"internal_api": lib.get("internal_api"), "version": lib.get("version"),
                    "architecture": lib.get("architecture"),
                    "num_threads": lib.get("num_threads")}
    return {}


def tile_choice(n: int, tile_size: int, device: str) -> dict:
    """The JSON record of how tiles and threads were chosen for this solve."""
    target, single = choose_tile_size(device)
    return {"tile_size": int(tile_size), "n": int(n), "device": device,
            "target_tile": int(target), "single_tile_up_to": int(single),
            "min_tiles": min_tiles(n) if device == "cpu" and n > single else 1,
            "cache_bytes": cache_sizes() if device == "cpu" else {},
            "tile_threads": n_threads_default() if device == "cpu" else 1,
            "blas": blas_threads() if device == "cpu" else {},
            "rule": ("one tile up to single_tile_up_to rows, else equal tiles of at most "
                     "target_tile rows and at least min_tiles of them (2 per tile "
                     "thread plus one, tiles of at least 512 rows); target = "
                     "8 * sqrt(L2 / 8 B) rounded to 256"
                     if device == "cpu" else "the GPU backend's dense/tiles rule")}


def given_tiles_rule(opts) -> str:
    """:func:`tile_choice`'s ``rule`` where the tile size was not the rule's: ``tile_size``
    given in ``opts``, or else the checkpoint's that a resumed out-of-core solve keeps."""
    if opts.tile_size is not None:
        return "given (tile_size); the machine's rule, for a solve without one, is not applied"
    return ("the checkpoint's: a resumed out-of-core solve keeps the tile size its checkpoint "
            f"in {opts.ooc_dir} was made with, whatever the machine's rule would choose now")


_RATES: dict = {}


def gemm_rates(backend, size: Optional[int] = None, repeats: int = 3) -> dict:
    """Rates of this process for auto's time model: GEMM (FLOP/s) in float64 and float32,
    thin products, the element-wise finish of kernel values, memory bandwidth.

    float64: one ``size``^3 product per repeat, best of ``repeats`` (a few milliseconds on
    a CPU). float32 on a CPU: estimated as twice float64 (SIMD lanes hold twice as many
    float32 values; a small float32 product does not reach the library's rate, so timing
    one would understate it); on a GPU it is measured like float64. Memory: a matrix-vector
    product that reads a 32 MiB matrix (read bandwidth, as K products read kept tiles),
    best of ``repeats``. Thin products (``thin_seconds_per_entry``, per dtype):
    the same 32 MiB, read as float64 or as float32, times ``THIN_COLUMNS`` columns, as the
    refinement multiplies tiles it reads from memory by its search directions and the
    preconditioner's factor by its right-hand sides; timed per matrix entry, since with a
    few columns the library's packing of the matrix, not the flops, sets the time (2 Zen 4
    cores: 1.15-1.36 ns a float64 entry from 3 to 20 columns, 0.46-0.6 float32). Finish
    (``finish_entries_per_s``, all cores together): the scaling and exp that turn a chunk
    of squared distances into kernel values, on one core in cache, times the cores (tiles
    are finished one per core); on a CPU also that of exact integer squared distances
    (``finish_exact_entries_per_s``: inputs on the integer grid, the Gaussian's finish by
    :func:`kernelfit.grid.gaussian_of_exact`). Cached per device. In a fresh process on a
    2-core virtual machine this took 0.1-0.2 s. Returns {'float64': .., 'float32': ..,
    'float32_source': .., 'memory_bytes_per_s': .., 'thin_seconds_per_entry':
    {'float64': .., 'float32': ..}, 'thin_columns': .., 'finish_entries_per_s': ..,
    'finish_exact_entries_per_s': .. (CPU), 'size': ..}.
    """
    key = (backend.device, size)
    if key in _RATES:
        return _RATES[key]
    xp = backend.xp
    size = size or (768 if backend.device == "cpu" else 4096)
    out = {"size": size}
    kinds = (("float64", np.float64),) if backend.device == "cpu" else (
        ("float64", np.float64), ("float32", np.float32))
    # operands in [0, 1) without a random generator (the rate does not depend on values)
    ramp = (np.arange(size * size, dtype=np.float64) % 1021.0 / 1021.0).reshape(size, size)
    for name, dt in kinds:
        A = xp.asarray(ramp, dtype=dt)
        B = A.T.copy()
        A @ B  # warm up (thread pools, GPU handles)
        backend.synchronize()
        out[name] = 2.0 * size ** 3 / _best_seconds(lambda: A @ B, backend, repeats)
    if backend.device == "cpu":
        out["float32"] = 2.0 * out["float64"]
        out["float32_source"] = "estimated: twice the measured float64 rate (SIMD width)"
    else:
        out["float32_source"] = "measured"
    M = xp.ones((4096, 1024), dtype=xp.float64)   # 32 MiB, read by each product
    v = xp.ones(1024, dtype=xp.float64)
    M @ v
    out["memory_bytes_per_s"] = M.nbytes / _best_seconds(lambda: M @ v, backend, repeats)
    out["thin_seconds_per_entry"] = {}
    for name, dt in (("float64", xp.float64), ("float32", xp.float32)):
        A = M.view(dt)  # the same 32 MiB (1.0 read as float32: finite values)
        V = xp.ones((A.shape[1], THIN_COLUMNS), dtype=dt)
        A @ V
        out["thin_seconds_per_entry"][name] = _best_seconds(lambda: A @ V, backend,
                                                            repeats) / A.size
    out["thin_columns"] = THIN_COLUMNS
    out["finish_entries_per_s"] = _finish_rate(backend, repeats)
    if backend.device == "cpu":
        out["finish_exact_entries_per_s"] = _finish_rate(backend, repeats, exact=True)
    _RATES[key] = out
    return out


#: columns of the thin products :func:`gemm_rates` times (MNIST's 10 classes, and the
#: refinement's directions and iterate together: 20)
THIN_COLUMNS = 16


def _finish_rate(backend, repeats: int, exact: bool = False) -> float:
    """Kernel values finished per second from squared distances (scale, then exp) on a
    2 MiB float64 chunk, as :meth:`kernelfit.kernels.Kernel.block` does chunk by chunk; a
    CPU finishes one tile per core at once, a GPU one block (measured as is). ``exact``:
    exact integers below 2^26 (MNIST's squared distances in grid units reach about 2^25.6)
    by :func:`kernelfit.grid.gaussian_of_exact` (host arrays)."""
    xp = backend.xp
    ramp = np.arange(1 << 18, dtype=np.float64)
    chunk = xp.asarray(ramp * 256.0 % 2.0 ** 26 if exact else ramp % 977.0)
    work = xp.empty_like(chunk)

    def finish():
        if exact:
            work[...] = chunk
            gaussian_of_exact(work, 1275.0)
            return
        xp.multiply(chunk, -1e-3, out=work)
        xp.exp(work, out=work)

    finish()
    rate = chunk.size / _best_seconds(finish, backend, repeats)
    return rate * (n_threads_default() if backend.device == "cpu" else 1)


def _best_seconds(f, backend, repeats: int) -> float:
    """The shortest of ``repeats`` timed calls of ``f`` (synchronized), at least 1 ns."""
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        backend.synchronize()
        best = min(best, time.perf_counter() - t0)
    return max(best, 1e-9)
