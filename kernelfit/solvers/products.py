"""Kernel products over tiles: the Gram matrix K = k(X, X) as lower tiles, K V with the
tiles recomputed (or read from a kept copy), and the cross-kernel product k(A, B) V.

Every kernel value is computed in float64 (a float32 tile is a float64 block cast last);
the work runs on one thread per core, each thread with single-threaded BLAS
(:func:`kernelfit.solvers.tiles.run_tiles`).
"""

from __future__ import annotations

import math
from typing import List, Optional

import numpy as np

from ..backend import Backend, array_namespace, get_backend
from ..errors import InputError
from ..kernels import Kernel, row_norms_sq, strict_lower_mask
from ..progress import progress
from .machine import n_threads_default
from .tiles import BlockBuffer, TiledSymmetric, default_tile_size, run_tiles, tile_bounds

__all__ = ["gram_tile", "build_gram", "IN_TILE", "diagonal_in_tiles", "kept_pairs",
           "kept_copy_bytes", "kept_dtype", "values_fit", "kept_storage", "kept_bytes",
           "kernel_matvec", "cross_kernel_matmul", "stored_kernel_matvec", "kernel_diagonal"]


def gram_tile(kernel: Kernel, X, stats, bounds, i: int, j: int, dtype, shift: float = 0.0,
              *, backend: Optional[Backend] = None, scratch=None, keep=None, low_rank=None,
              low_rank_buf=None):
    """Tile (i, j) of K + shift I, Fortran-ordered, in ``dtype`` (computed in float64).

    With a ``backend`` the tile is allocated by it (on the CPU: without transparent huge
    pages, see :func:`kernelfit.backend.host_empty`). A float32 tile is computed in a
    float64 ``scratch`` block (a :class:`BlockBuffer`, made when not given), then cast.
    ``keep``: a kept copy of the tile (no shift), either a float64 Fortran tile that
    receives K's float64 values, or an integer C-ordered (b_j, b_i) array that receives
    the exact integers k(X_j, X_i) is finished from (see :func:`kept_dtype`), or
    :data:`IN_TILE` for a float32 diagonal tile (gaussian, laplacian) that keeps its exact
    squared distances as uint32 bits in its own strict upper triangle (see
    :func:`_in_tile_keep`).
    ``low_rank``: an (n, m) float64 array U whose part ``U_i U_j^T`` a float32 tile leaves
    out, subtracted in float64 before the cast (the kept copy stays K's), by chunks in
    ``low_rank_buf`` (:func:`_low_rank_buffer`; made when not given). ``scratch``: the
    block's reusable buffers (a :class:`BlockBuffer` of the tile's size; made when not
    given): a float32 tile's float64 values pass through it one row chunk at a time.
    """
    xp = array_namespace(X)
    si, ei = bounds[i]
    sj, ej = bounds[j]
    dtype = np.dtype(dtype)
    tile = (backend.empty_tile(ei - si, ej - sj, dtype) if backend is not None
            else xp.empty((ei - si, ej - sj), dtype=dtype, order="F"))
    f64 = dtype == np.float64
    in_tile = keep is IN_TILE
    if in_tile and (i != j or dtype != np.float32 or xp is not np):
        raise InputError("IN_TILE keeps a float32 diagonal tile's integers on the CPU only")
    keep = None if in_tile else keep
    exact = keep if keep is not None and _holds_exact(keep) else None
    keep64 = keep if exact is None else None
    if low_rank is not None and f64:
        raise InputError("low_rank applies to float32 tiles only")
    if scratch is None:  # (its buffers are made only as the block needs them)
        scratch = BlockBuffer(backend, ej - sj, ei - si, xp=xp)
    # k(X_j, X_i) in C order is tile (i, j) in Fortran order: written in place (float64
    # tiles, the kept float64 copy), or cast row chunk by row chunk while in cache
    dst = tile.T
    sink = None
    if not f64:
        if low_rank is not None and low_rank_buf is None:
            low_rank_buf = _low_rank_buffer(ei - si, xp)
        sink = _cast_sink(dst, None if low_rank is None else low_rank[sj:ej],
                          None if low_rank is None else low_rank[si:ei], xp, low_rank_buf)
    if in_tile:
        exact, sink = _in_tile_keep(dst, sink)
    out = dst if f64 else (keep64.T if keep64 is not None else None)
    kernel.block(X[sj:ej], X[si:ei], a_stats=None if stats is None else stats[sj:ej],
                 b_stats=None if stats is None else stats[si:ei], same=(i == j), out=out,
                 keep_exact=exact, sink=sink, scratch=scratch)
    if keep64 is not None and f64:
        keep64.T[...] = out
    if i == j and shift:
        idx = xp.arange(ej - sj)
        tile[idx, idx] += shift
    return tile


def _cast_sink(dst, Ua, Ub, xp, buf):
    """The ``sink`` of :meth:`Kernel.block` that casts each finished row chunk into the
    rows of ``dst`` (minus ``Ua Ub^T`` when given, see :func:`_cast_minus_low_rank`)."""
    def sink(s, e, chunk):
        if Ua is None:
            dst[s:e] = chunk
        else:
            _cast_minus_low_rank(dst[s:e], chunk, Ua[s:e], Ub, xp, buf)
    return sink


#: ``gram_tile(keep=IN_TILE)``: the diagonal tile keeps its exact integers itself
IN_TILE = "in tile"
#: the exact integers a float32 tile may hold as uint32 bits: below 0x7F800000 every pattern
#: is a finite float32, so an upcast of the whole tile meets no NaN or infinity
_IN_TILE_LIMIT = float(0x7F800000)


def diagonal_in_tiles(kernel: Kernel, X, stats, item, dtype) -> bool:
    """Whether the kept copies of K's diagonal tiles can live in the float32 tiles
    themselves: the Cholesky (potrf, syrk, trsm) and the triangular solves read only a
    diagonal tile's lower triangle, so its strict upper triangle is free, and it has
    exactly the entries of the symmetric tile's strict lower one. It holds them as uint32
    bits: the exact squared distances of integer-grid inputs (``item``, from
    :func:`kept_dtype`), whose diagonal is 0, below ``_IN_TILE_LIMIT`` (4 max |x|^2)."""
    return (np.dtype(dtype) == np.float32 and isinstance(X, np.ndarray)
            and np.dtype(item) == np.uint32 and kernel.name in ("gaussian", "laplacian")
            and stats is not None and 4.0 * float(np.max(stats)) < _IN_TILE_LIMIT)


def _in_tile_keep(dst, sink):
    """``(keep_exact, sink)`` for :meth:`Kernel.block` on a float32 diagonal tile (``dst``:
    its C-ordered transpose) that keeps its exact integers in its strict upper triangle,
    the strict lower one of ``dst``: each row chunk's integers are saved (uint32), the
    float32 values written (``sink``, whole rows), then the integers over the part of the
    rows left of the diagonal."""
    bits = dst.view(np.uint32)
    saved: list = []

    def keep(s, e, chunk):
        if not saved or saved[0].shape[0] < e - s:
            saved[:] = [np.empty((e - s, chunk.shape[1]), dtype=np.uint32)]
        np.copyto(saved[0][:e - s, :e], chunk[:, :e], casting="unsafe")

    def write(s, e, chunk):
        sink(s, e, chunk)
        ints = saved[0][:e - s]
        bits[s:e, :s] = ints[:, :s]
        np.copyto(bits[s:e, s:e], ints[:, s:e], where=strict_lower_mask(e - s))

    return keep, write


def _low_rank_rows(cols: int, xp) -> int:
    """Rows of a chunk of :func:`_cast_minus_low_rank`: about 1 MiB of float64 on the CPU,
    so the product never leaves the cache; 128 MiB on a GPU."""
    return max(1, (1 << (17 if xp is np else 24)) // max(cols, 1))


def _low_rank_buffer(tile_size: int, xp=np):
    """The float64 chunk buffer of :func:`_cast_minus_low_rank` for tiles of up to
    ``tile_size`` columns (one per thread: fresh memory per tile cost page faults)."""
    return xp.empty(min(_low_rank_rows(tile_size, xp), tile_size) * tile_size,
                    dtype=xp.float64)


def _cast_minus_low_rank(dst, src, Ua, Ub, xp, buf=None) -> None:
    """``dst[...] = src - Ua Ub^T`` (cast to dst's dtype), ``src`` unchanged, by row
    chunks in ``buf`` (:func:`_low_rank_buffer`)."""
    m, cols = src.shape
    host = xp is np
    rows = _low_rank_rows(cols, xp)
    if buf is None or buf.size < min(rows, m) * cols:
        buf = xp.empty(min(rows, m) * cols, dtype=xp.float64)
    rank_one = Ua.shape[1] == 1
    ub = Ub.T
    for s in range(0, m, rows):
        e = min(s + rows, m)
        d = buf[:(e - s) * cols].reshape(e - s, cols)
        if rank_one:  # an outer product: cheaper broadcast than a GEMM of inner size 1
            xp.multiply(Ua[s:e], ub, out=d)
        else:
            xp.matmul(Ua[s:e], ub, out=d)
        if host:  # NumPy casts on output: one pass
            xp.subtract(src[s:e], d, out=dst[s:e], casting="unsafe")
        else:
            xp.subtract(src[s:e], d, out=d)
            dst[s:e] = d


def build_gram(kernel: Kernel, X, *, tile_size: Optional[int] = None, dtype=np.float64,
               backend: Backend = None, ridge: float = 0.0, show_progress=None,
               stats=None, n_threads: Optional[int] = None,
               keep_copy: bool = False,
               keep_budget: Optional[int] = None, low_rank=None) -> TiledSymmetric:
    """The kernel Gram matrix K = k(X, X) (+ ridge I) as lower tiles.

    ``X`` must live on ``backend`` already. Each tile is computed in float64 and stored
    in ``dtype``; peak extra memory is one float64 tile per thread (float32 tiles only).
    On the CPU, one thread per core computes tiles.

    ``keep_copy=True`` also keeps what the factorization would destroy. Float64 tiles: a
    copy of every off-diagonal tile and the diagonal of K (without the ridge); a diagonal
    tile's strict upper triangle survives the in-place Cholesky (potrf reads only the lower
    one), so together they hold all of K after factoring. Float32 tiles (mixed precision):
    copies of the diagonal tiles, then of the off-diagonal ones. A copy is K's float64
    values, or, where the kernel allows (:func:`kept_dtype`: integer-grid inputs) and the
    budget does not hold the values of every tile (:func:`values_fit`), the exact integers
    they are finished from (squared distances), in half the bytes.
    :func:`stored_kernel_matvec` forms K V exactly from them, at memory speed instead of
    recomputing K. ``keep_budget`` (bytes) caps the copies: tiles beyond it are not kept
    and get recomputed by the product instead. Float32 tiles of exact squared distances
    keep the diagonal tiles' integers in those tiles' own strict upper triangles, which
    the factorization never reads (:func:`diagonal_in_tiles`; ``T.diagonal_in_tiles``):
    no bytes, and the whole budget for off-diagonal tiles.

    ``low_rank`` (float32 tiles only): an (n, m) float64 array U on ``backend``; the tiles
    then hold ``K - U U^T`` (+ ridge I), each entry rounded once from float64 (mixed
    precision's deflation, :mod:`kernelfit.solvers.deflate`); kept copies stay K's.
    """
    be = backend if backend is not None else get_backend("cpu")
    xp = be.xp
    n = X.shape[0]
    tile_size = max(1, min(tile_size or default_tile_size(n, be.device), n))
    T = TiledSymmetric(n, tile_size, dtype, be)
    f64 = T.dtype == np.float64
    if low_rank is not None and f64:
        raise InputError("low_rank applies to float32 tiles only")
    if stats is None:
        stats = kernel.prepare(X)
    sizes = T.block_sizes()
    tasks = [(i, j) for i in range(T.n_tiles) for j in range(i + 1)]
    in_tile = False
    if keep_copy:
        T.kept = {}
        item = kept_dtype(kernel, X, stats, values=values_fit(
            n, tile_size, keep_budget, diagonal=not f64))
        # the diagonal tiles' exact integers in their own free triangles (no bytes): kept
        # whatever the budget, which then goes to off-diagonal tiles
        in_tile = T.diagonal_in_tiles = diagonal_in_tiles(kernel, X, stats, item, T.dtype)
        for i, j in kept_pairs(T.n, tile_size, keep_budget, diagonal=not (f64 or in_tile),
                               item_bytes=item.itemsize):
            T.kept[(i, j)] = (be.empty_tile(sizes[i], sizes[j], np.float64)
                              if item == np.float64 else be.empty((sizes[j], sizes[i]), item))
    # float64 copies: the ridge goes on after they are taken
    shift = 0.0 if keep_copy and f64 else ridge
    bar = progress(total=len(tasks), desc="gram", enabled=show_progress, unit="tile")

    def work(_t, part):
        scratch = BlockBuffer(be, tile_size, tile_size)
        lr_buf = None if low_rank is None else _low_rank_buffer(tile_size, xp)
        for i, j in part:
            keep = (IN_TILE if in_tile and i == j
                    else T.kept.get((i, j)) if keep_copy else None)
            tile = gram_tile(kernel, X, stats, T.bounds, i, j, T.dtype, shift, backend=be,
                             scratch=scratch, keep=keep, low_rank=low_rank,
                             low_rank_buf=lr_buf)
            T.tiles[i][j] = tile
            if keep is IN_TILE:  # (b_i, b_i) C-ordered: the integers in its strict lower part
                T.kept[(i, i)] = tile.view(np.uint32).T
            bar.update(1)

    try:
        run_tiles(tasks, work, be, n_threads)
    finally:
        bar.close()
    if keep_copy and f64:
        T.kept_diag = [xp.diagonal(T.tiles[i][i]).copy() for i in range(T.n_tiles)]
        if ridge:
            for i in range(T.n_tiles):
                k = sizes[i]
                T.tiles[i][i][xp.arange(k), xp.arange(k)] += ridge
    return T


def _holds_exact(tile) -> bool:
    """Whether a kept tile holds the exact integers K is finished from (see
    :func:`kept_dtype`) rather than K's values."""
    return tile.dtype.kind in "iu"


def kept_dtype(kernel: Kernel, X, stats, *, values: bool = False) -> np.dtype:
    """What ``build_gram(keep_copy=True)`` keeps per entry of K: K's float64 values (8
    bytes) where ``values`` (the budget holds them for every tile: see :func:`values_fit`),
    else the exact integers K is finished from where the kernel and inputs allow
    (:meth:`Kernel.exact_dtype`, 4 bytes: twice the tiles in the same bytes, but each
    product finishes them again), else float64 values."""
    if values:
        return np.dtype(np.float64)
    return kernel.exact_dtype(X, stats) or np.dtype(np.float64)


def values_fit(n: int, tile_size: int, budget: Optional[int], *, diagonal: bool) -> bool:
    """Whether a keep ``budget`` (bytes; None: no limit) holds K's float64 values for every
    tile that ``build_gram(keep_copy=True)`` copies (the diagonal ones too where
    ``diagonal``). Then the copy holds values, not exact integers: a product reads them
    at memory speed instead of finishing them (n = 10,000, 2 Zen 3 cores: 0.08-0.12 s a
    refinement product against 0.23-0.29 s)."""
    return budget is None or budget >= kept_copy_bytes(n, tile_size, None, diagonal=diagonal)


def kept_storage(T: TiledSymmetric) -> Optional[str]:
    """How ``T``'s kept copy holds K: its values' type ('float64'; 'float32' for a Gram
    made outside the solvers), the integer type of exact integers ('uint32', 'int32'; see
    :func:`kept_dtype`), or None (nothing kept)."""
    if not T.kept:
        return None
    return np.dtype(next(iter(T.kept.values())).dtype).name


def kept_bytes(T: TiledSymmetric) -> int:
    """Bytes of ``T``'s kept tiles (and of the kept diagonal of K)."""
    total = sum(int(t.nbytes) for (i, j), t in (T.kept or {}).items()
                if not (i == j and T.diagonal_in_tiles))  # those live in the tiles
    return total + sum(int(d.nbytes) for d in (T.kept_diag or []))


def kept_pairs(n: int, tile_size: int, budget: Optional[int] = None, *,
               diagonal: bool = False, item_bytes: int = 8) -> List[tuple]:
    """The tiles (i, j) that ``build_gram(keep_copy=True)`` copies, ``item_bytes`` per entry.

    Off-diagonal tiles (and first the diagonal ones when ``diagonal``), in order, as many
    as fit in ``budget`` bytes (all when None).
    """
    return [(i, j) for i, j, _ in _kept_tiles(n, tile_size, budget, diagonal, item_bytes)]


def _kept_tiles(n: int, tile_size: int, budget: Optional[int], diagonal: bool = False,
                item_bytes: int = 8):
    """(i, j, bytes) of the tiles kept within ``budget``, in order."""
    bounds = tile_bounds(n, tile_size)
    order = [(i, i) for i in range(len(bounds))] if diagonal else []
    order += [(i, j) for i in range(len(bounds)) for j in range(i)]
    out, used = [], 0
    for i, j in order:
        size = item_bytes * (bounds[i][1] - bounds[i][0]) * (bounds[j][1] - bounds[j][0])
        if budget is not None and used + size > budget:
            return out
        out.append((i, j, size))
        used += size
    return out


def kept_copy_bytes(n: int, tile_size: int, budget: Optional[int] = None, *,
                    diagonal: bool = False, item_bytes: int = 8) -> int:
    """Extra bytes that ``build_gram(keep_copy=True)`` holds: the kept tiles (+ the
    float64 diagonal of K when the diagonal tiles themselves are not copied)."""
    return _kept_total(n, tile_size, budget, diagonal, item_bytes) + (0 if diagonal else 8 * n)


def _kept_total(n: int, tile_size: int, budget: Optional[int], diagonal: bool,
                item_bytes: int) -> int:
    """The bytes of :func:`_kept_tiles`, counted by runs of equal tiles: the plans ask
    this of sizes (n = 10^8: 10^9 tile pairs) no list of tiles could hold."""
    bounds_n = len(tile_bounds(n, tile_size)) if n > 0 else 0
    ts = int(tile_size)
    last = n - (bounds_n - 1) * ts  # rows of the last tile row
    # the tiles in _kept_tiles's order, as runs (count, bytes of each)
    runs = [(bounds_n - 1, ts * ts), (1, last * last)] if diagonal else []
    runs += [((bounds_n - 1) * (bounds_n - 2) // 2, ts * ts), (bounds_n - 1, last * ts)]
    total = 0
    for count, entries in runs:
        size = item_bytes * entries
        if count <= 0 or size <= 0:
            continue
        take = count if budget is None else max(0, min(count, (budget - total) // size))
        total += take * size
        if take < count:
            break
    return int(total)


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
    if V.ndim not in (1, 2) or V.shape[0] != n:
        raise InputError(f"V must have one row per row of X ({n}), as (n,) or (n, m); got "
                         f"shape {tuple(V.shape)}", param="V")
    squeeze = V.ndim == 1
    if squeeze:
        V = V[:, None]
    tile_size = max(1, min(tile_size or default_tile_size(n, be.device), n))
    bounds = tile_bounds(n, tile_size)
    if stats is None:
        stats = kernel.prepare(X)
    tasks = pairs if pairs is not None else [(i, j) for i in range(len(bounds))
                                             for j in range(i + 1)]
    bar = progress(total=len(tasks), desc="K @ v", enabled=show_progress, unit="tile")

    def product(task, buf, R):
        i, j = task
        si, ei = bounds[i]
        sj, ej = bounds[j]
        # both products are formed chunk by chunk while the block is in cache
        kernel.block(X[si:ei], X[sj:ej], a_stats=None if stats is None else stats[si:ei],
                     b_stats=None if stats is None else stats[sj:ej], same=(i == j),
                     scratch=buf, times=(V[sj:ej], R[si:ei]),
                     times_t=None if i == j else (V[si:ei], R[sj:ej]))

    R = _summed_products(tasks, product, (n, V.shape[1]), be, tile_size, n_threads, bar)
    R = R.astype(out_dtype, copy=False)
    return R[:, 0] if squeeze else R


def _summed_products(tasks: list, product, shape: tuple, be: Backend, edge: int,
                     n_threads: Optional[int], bar):
    """Run ``product(task, buffer, acc)`` over ``tasks`` on the tile threads, each thread
    adding into its own float64 ``acc`` of ``shape`` with its own block buffer; the sum."""
    xp = be.xp
    results = {}

    def work(t, part):
        acc = xp.zeros(shape, dtype=xp.float64)
        buf = BlockBuffer(be, edge, edge)
        for task in part:
            product(task, buf, acc)
            bar.update(1)
        results[t] = acc

    try:
        run_tiles(tasks, work, be, n_threads)
    finally:
        bar.close()
    parts = [results[t] for t in sorted(results)]
    if not parts:
        return xp.zeros(shape, dtype=xp.float64)
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
    # no block is larger than the rows there are (a tile size above them, given by the
    # user, would size the block buffers for nothing: 74.5 GiB at 100,000)
    ts = max(1, min(ts, max(A.shape[0], B.shape[0])))
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
    bar = progress(total=len(tasks), desc=desc, enabled=show_progress, unit="tile")

    def product(task, buf, P):
        (si, ei), (sj, ej) = task
        kernel.block(A[si:ei], B[sj:ej],
                     a_stats=None if a_stats is None else a_stats[si:ei],
                     b_stats=None if b_stats is None else b_stats[sj:ej],
                     scratch=buf, times=(V[sj:ej], P[si:ei]))

    P = _summed_products(tasks, product, (A.shape[0], V.shape[1]), be, ts, n_threads, bar)
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
    Float32 storage (mixed precision): diagonal tiles are kept like the others. Tiles kept
    as exact integers (:func:`kept_dtype`) are finished by ``kernel`` chunk by chunk in
    cache, with X's ``stats``: the same values, half the bytes read; diagonal tiles kept in
    the float32 tiles' strict upper triangles (``T.diagonal_in_tiles``) are made whole from
    that triangle.
    """
    if T.kept is None:
        raise InputError("this Gram matrix was built without keep_copy=True")
    be = T.backend
    xp = be.xp
    V = xp.asarray(V, dtype=xp.float64)
    squeeze = V.ndim == 1
    if squeeze:
        V = V[:, None]
    if V.shape[0] != T.n:
        raise InputError(f"V has {V.shape[0]} rows, the matrix has {T.n}")
    # float64 storage: the diagonal tiles hold K in their upper triangles (kept_diag);
    # float32 storage: float64 diagonal tiles are kept like the others, or recomputed
    own_diag = T.kept_diag is not None
    missing = [(i, j) for i in range(T.n_tiles) for j in range(i + 1)
               if (i, j) not in T.kept and not (i == j and own_diag)]
    if missing and (kernel is None or X is None):
        raise InputError(f"{len(missing)} tiles were not kept; pass the kernel "
                         "and X to recompute them")
    exact = any(_holds_exact(t) for t in T.kept.values())
    if exact and (kernel is None or (X is None and stats is None)):
        raise InputError("the kept tiles hold the exact integers K is finished from; pass "
                         "the kernel and X (or its stats) to finish them")
    if exact and stats is None:
        stats = kernel.prepare(X)
    blocks = [xp.asfortranarray(V[s:e]) for s, e in T.bounds]
    m = V.shape[1]
    tasks = [(i, i) for i in range(T.n_tiles) if own_diag or (i, i) in T.kept]
    tasks += [(i, j) for i in range(T.n_tiles) for j in range(i) if (i, j) in T.kept]
    results = {}

    def work(t, part):
        out = [xp.zeros((e - s, m), dtype=xp.float64, order="F") for s, e in T.bounds]
        buf = None
        for i, j in part:
            C = T.kept.get((i, j))
            if C is not None and _holds_exact(C):  # (b_j, b_i): from k(X_j, X_i)
                (si, ei), (sj, ej) = T.bounds[i], T.bounds[j]
                buf = kernel.exact_times(
                    C, stats[sj:ej], stats[si:ei], same=(i == j), buf=buf,
                    lower=i == j and T.diagonal_in_tiles,
                    times=(blocks[i], out[j]), times_t=None if i == j else (blocks[j], out[i]))
            elif i != j:
                be.gemm_acc(C, blocks[j], out[i])
                be.gemm_acc(C, blocks[i], out[j], trans_a=True)
            elif own_diag:
                tile = T.tiles[i][i]  # its diagonal: L's, or K + ridge before factoring
                delta = T.kept_diag[i] - xp.diagonal(tile)
                out[i] += be.symm_upper(tile, blocks[i]) + delta[:, None] * blocks[i]
            else:
                be.gemm_acc(T.kept[(i, i)], blocks[i], out[i])
        results[t] = out

    # memory-bound products with a few columns: one thread per core, each with
    # single-threaded BLAS, each streaming its own tiles
    run_tiles(tasks, work, be, n_threads)
    parts = [results[t] for t in sorted(results)]
    out = parts[0] if parts else [xp.zeros((e - s, m)) for s, e in T.bounds]
    for other in parts[1:]:
        for k in range(len(out)):
            out[k] += other[k]
    R = xp.concatenate(out, axis=0)
    if missing:
        R += kernel_matvec(kernel, X, V, tile_size=T.tile_size, backend=be, stats=stats,
                           n_threads=n_threads, pairs=missing)
    return R[:, 0] if squeeze else R




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
