"""Gram matrices of random-conv features accumulated over filter chunks.

At 32,000 filters with 3x3 pooling the features of one CIFAR-10 image are 576,000 numbers:
all 60,000 images would take 138 GB. :func:`accumulate_gram` never stores them. For each
chunk of filters it computes the chunk's features of every image (one GEMM per image batch
over the im2col patch matrix, :meth:`RandomConvFeatures._chunk_block`) and adds their
products into the Gram matrices, so only the Gram matrices and one chunk of features
exist. On a device backend everything stays in device memory until a checkpoint.
"""

from __future__ import annotations

import numpy as np

from .random_conv import RandomConvFeatures

__all__ = ["accumulate_gram", "chunk_flop", "symmetrize_lower"]


def chunk_flop(fmap: RandomConvFeatures, n: int, m: int, k: int) -> tuple:
    """``(convolution, Gram)`` flop of ``k`` filters of ``fmap`` over ``n`` training and
    ``m`` test images, as :func:`accumulate_gram` counts them: the patch-matrix GEMM and
    the pooling per position, then the lower triangle of ``G`` (diagonal included) and
    the test cross-products."""
    H, W, C, s, Ho, Wo = fmap._geometry
    per = fmap.features_per_filter
    conv = 2.0 * (n + m) * Ho * Wo * k * (s * s * C + 1 + per)
    D = k * per
    return conv, float(n) * (n + 1) * D + 2.0 * m * n * D


def _raw_chunk(fmap: RandomConvFeatures, X, lo: int, hi: int, batch: int, xp, be, bar,
               threads: int = 1):
    """Raw features of filters ``lo:hi`` for all rows of ``X`` (``n x 2 pool^2 k``).

    On a device backend (``X`` already there or on the host) the features stay on the
    device. On the CPU with ``threads > 1`` the image batches run in that many threads with
    BLAS held to one thread each: a batch's GEMM and its element-wise passes (single-threaded
    in NumPy) then overlap on all cores, where one multithreaded GEMM at a time leaves the
    other cores idle during the element-wise passes (measured 1.5x faster on 2 cores)."""
    n = X.shape[0]
    dt = np.dtype(fmap.dtype)
    on_device = be.device != "cpu"
    out = (be.empty if on_device else np.empty)((n, (hi - lo) * fmap.features_per_filter),
                                                dtype=dt)

    def one(start: int) -> int:
        stop = min(n, start + batch)
        xb = (X[start:stop] if on_device and be.is_backend_array(X)
              else xp.asarray(np.asarray(X[start:stop], dtype=dt)))
        pm = fmap._patch_matrix(xb, xp)
        blk = fmap._chunk_block(pm, stop - start, lo, hi, xp).reshape(stop - start, -1)
        out[start:stop] = blk if on_device else be.to_numpy(blk)
        return (stop - start) * (hi - lo)

    starts = range(0, n, batch)
    if on_device or threads <= 1 or len(starts) <= 1:
        for start in starts:
            bar.update(one(start))
        return out
    from concurrent.futures import ThreadPoolExecutor

    from ..backend._host import BlasOneThread

    with BlasOneThread(True), ThreadPoolExecutor(max_workers=threads) as ex:
        for done in ex.map(one, starts):
            bar.update(done)
    return out


def _add_gram(G, A, B=None, rows: int = 2048, *, xp=np) -> None:
    """``G += A @ B.T`` in row blocks (``B = A``: lower triangle blocks only), in place.
    NumPy arrays: one BLAS GEMM per block into ``G``'s memory; a device array module
    ``xp``: its product, added into the block."""
    from scipy.linalg import blas

    same = B is None
    B = A if same else B
    if xp is not np:
        for r0 in range(0, G.shape[0], rows):
            r1 = min(G.shape[0], r0 + rows)
            c1 = r1 if same else B.shape[0]
            blk = G[r0:r1, :c1]
            blk += A[r0:r1] @ B[:c1].T
        return
    gemm = blas.sgemm if G.dtype == np.float32 else blas.dgemm
    for r0 in range(0, G.shape[0], rows):
        r1 = min(G.shape[0], r0 + rows)
        c1 = r1 if same else B.shape[0]
        # G[r0:r1, :c1] is C-ordered, so its transpose is Fortran-ordered: accumulate
        # G.T += B[:c1] A[r0:r1].T with one GEMM (beta = 1, no temporary of the block)
        blockT = G[r0:r1, :c1].T
        if blockT.flags.f_contiguous:
            res = gemm(1.0, B[:c1].T, A[r0:r1].T, beta=1.0, c=blockT, trans_a=True,
                       trans_b=False, overwrite_c=True)
            if res is not blockT and not np.shares_memory(res, blockT):
                blockT[...] = res
        else:  # a column slice: not contiguous
            G[r0:r1, :c1] += A[r0:r1] @ B[:c1].T


def accumulate_gram(fmap: RandomConvFeatures, X_train, X_test=None, *, filter_chunk=None,
                    batch_size: int = 32, memory_budget: int = 1 << 29, stop_at=None,
                    start_from=None, on_checkpoint=None, progress=None,
                    threads=None) -> dict:
    """Gram matrices of random-conv features accumulated over filter chunks.

    The features of ``fmap`` (fitted; its ``standardize`` flag is honoured, with the
    per-feature training mean and spread of each chunk) are never stored in full: for each
    chunk of filters the chunk's features of all training (and test) images are computed
    (one GEMM per image batch over the im2col patch matrix), standardized, and added into

    * ``G = F_train F_train^T`` (lower triangle; mirrored at the end), ``sq`` its diagonal
      in float64 (squared norms),
    * ``C = F_test F_train^T`` and ``sq_test``,

    so only ``G``, ``C`` and one chunk of features exist. ``G``/``C`` are in the map's
    dtype. ``stop_at`` (ascending filter counts) makes ``on_checkpoint(k, state)`` run when
    the first ``k`` filters are in; ``start_from`` (a state from a checkpoint) resumes.
    Because filters are drawn in independent blocks, the first ``k`` filters (and so the
    Gram after ``k`` filters) equal those of a map with ``n_filters = k``.

    ``threads`` (default: the usable cores) run the convolution's image batches in
    parallel on the CPU (:func:`_raw_chunk`).

    On a device backend (the map's ``device``) the images, the chunk's features and the
    running sums stay in device memory (refused before any work, with the figure, when
    they do not fit) and batches grow to fill ``memory_budget``; the state handed to
    ``on_checkpoint`` and returned is a host copy (``state["host_copy"]`` True), so the
    callback may overwrite it without restoring it.

    Returns the state: ``G, sq, C, sq_test, n_done`` and ``stages`` (seconds and flop of
    the convolution and of the Gram/cross products).
    """
    import time

    from ..backend._host import usable_cores
    from ..progress import progress as _progress

    fmap._check_fitted()
    threads = usable_cores() if threads is None else max(1, int(threads))
    be = fmap._backend
    xp = be.xp
    on_device = be.device != "cpu"
    dt = np.dtype(fmap.dtype)
    n = X_train.shape[0]
    m = 0 if X_test is None else X_test.shape[0]
    n_f = int(fmap.n_filters)
    per_filter = fmap.features_per_filter
    if filter_chunk is None:  # one chunk of features of all images within the budget
        filter_chunk = max(1, int(memory_budget) // (dt.itemsize * per_filter * max(1, n + m)))
    filter_chunk = int(min(filter_chunk, n_f))
    H, W, C_, s, Ho, Wo = fmap._geometry
    d1 = s * s * C_ + 1
    if start_from is not None:
        st = start_from
    else:
        st = {"G": np.zeros((n, n), dtype=dt), "sq": np.zeros(n),
              "C": np.zeros((m, n), dtype=dt), "sq_test": np.zeros(m), "n_done": 0,
              "stages": {"conv": {"seconds": 0.0, "flop": 0.0},
                         "gram": {"seconds": 0.0, "flop": 0.0}}}
    marks = sorted(int(k) for k in (stop_at or ()) if st["n_done"] < int(k) <= n_f)
    if on_device:  # batches of images whose patch matrix and responses fill the budget
        # bytes of one image's work: patch matrix and both signs' responses, with room for
        # the pooling's temporaries (3x)
        per_image = 3 * dt.itemsize * Ho * Wo * (d1 + 2 * filter_chunk)
        batch_size = max(int(batch_size), int(memory_budget) // per_image)
        acc, Xtr, Xte = _device_state(be, st, X_train, X_test, dt, filter_chunk * per_filter,
                                      batch_size * per_image)
    else:
        acc, Xtr, Xte = st, X_train, X_test
    bar = _progress(total=(n + m) * (n_f - st["n_done"]), desc="random-conv Gram",
                    enabled=progress, unit="img-filter")
    try:
        while st["n_done"] < n_f:
            lo = st["n_done"]
            hi = min(n_f, lo + filter_chunk, marks[0] if marks else n_f)
            k = hi - lo
            t0 = time.perf_counter()
            Ftr = _raw_chunk(fmap, Xtr, lo, hi, batch_size, xp, be, bar, threads)
            Fte = (_raw_chunk(fmap, Xte, lo, hi, batch_size, xp, be, bar, threads) if m
                   else xp.empty((0, Ftr.shape[1]), dtype=dt))
            if fmap.standardize:
                _standardize_columns(Ftr, Fte, xp)
            be.synchronize()
            flop_conv, flop_gram = chunk_flop(fmap, n, m, k)
            conv = st["stages"]["conv"]
            conv["seconds"] += time.perf_counter() - t0
            conv["flop"] += flop_conv
            t0 = time.perf_counter()
            _add_gram(acc["G"], Ftr, xp=xp)
            acc["sq"] += _row_squares(Ftr, xp)
            if m:
                _add_gram(acc["C"], Fte, Ftr, xp=xp)
                acc["sq_test"] += _row_squares(Fte, xp)
            be.synchronize()
            gram = st["stages"]["gram"]
            gram["seconds"] += time.perf_counter() - t0
            gram["flop"] += flop_gram
            del Ftr, Fte
            st["n_done"] = hi
            if marks and hi == marks[0]:
                marks.pop(0)
                if on_checkpoint is not None:
                    if on_device:
                        _copy_to_host(be, acc, st)
                    on_checkpoint(hi, st)
    finally:
        bar.close()
    if on_device:
        _copy_to_host(be, acc, st)
    return st


_SUMS = ("G", "sq", "C", "sq_test")


def _device_state(be, st: dict, X_train, X_test, dt, chunk_width: int, batch_bytes: int):
    """The running sums of ``st`` and the images on ``be``'s device (``acc, X_train,
    X_test``), after checking that they, one chunk of features and one batch's work fit
    in its free memory."""
    from ..errors import MemoryPlanError
    from ..memory import fmt_bytes

    n, m = X_train.shape[0], (0 if X_test is None else X_test.shape[0])
    need = (dt.itemsize * (n * n + m * n + (n + m) * (X_train.shape[1] + chunk_width))
            + batch_bytes + 8 * (n + m) + 4 * 2048 * max(n, 1) * dt.itemsize)  # sums; a block
    free = int(be.free_memory())
    if need > free:
        raise MemoryPlanError(
            f"the random-conv Gram at n = {n} (+ {m} test) needs about {fmt_bytes(need)} of "
            f"{be.device} memory, {fmt_bytes(free)} is free; use a smaller n or the CPU "
            "(device 'cpu')", required_bytes=need, available_bytes=free)
    acc = {k: be.asarray(st[k]) for k in _SUMS}
    Xtr = be.asarray(np.asarray(X_train, dtype=dt))
    Xte = None if X_test is None else be.asarray(np.asarray(X_test, dtype=dt))
    return acc, Xtr, Xte


def _copy_to_host(be, acc: dict, st: dict, rows: int = 4096) -> None:
    """Copy the device sums ``acc`` into the host arrays of ``st`` (row blocks; marks
    ``st["host_copy"]``: the host arrays are a copy the caller may overwrite)."""
    be.synchronize()
    for key in _SUMS:
        src, dst = acc[key], st[key]
        for r0 in range(0, max(dst.shape[0], 1), rows):
            dst[r0:r0 + rows] = be.to_numpy(src[r0:r0 + rows])
    st["host_copy"] = True


def _row_squares(F, xp, rows: int = 4096):
    """Squared norms of the rows of ``F`` (float32 or float64), summed in float64."""
    if xp is np:
        return np.einsum("ij,ij->i", F, F, dtype=np.float64)
    out = xp.empty(F.shape[0], dtype=np.float64)
    for r0 in range(0, F.shape[0], rows):
        blk = F[r0:r0 + rows].astype(np.float64)
        out[r0:r0 + rows] = (blk * blk).sum(axis=1)
    return out


def _standardize_columns(Ftr, Fte, xp, rows: int = 4096) -> None:
    """Centre and scale each column of ``Ftr`` and ``Fte`` in place by the training
    column's mean and spread (float64 sums over row blocks: no full-size temporary);
    columns with no spread are only centred."""
    n = Ftr.shape[0]
    dt = Ftr.dtype
    s1 = xp.zeros(Ftr.shape[1])
    s2 = xp.zeros(Ftr.shape[1])
    for r0 in range(0, n, rows):
        blk = Ftr[r0:r0 + rows].astype(np.float64)
        s1 += blk.sum(axis=0)
        s2 += (np.einsum("ij,ij->j", blk, blk) if xp is np else (blk * blk).sum(axis=0))
    mean = s1 / n
    std = xp.sqrt(xp.maximum(s2 / n - mean * mean, 0.0))
    tiny = 1e-8 * max(1.0, float(xp.abs(mean).max()))
    scale = xp.where(std > tiny, std, 1.0)
    for F in (Ftr, Fte):
        F -= mean.astype(dt)
        F /= scale.astype(dt)


def symmetrize_lower(G, rows: int = 2048) -> None:
    """Copy the lower triangle of the square ``G`` into its upper triangle, in blocks."""
    n = G.shape[0]
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        G[r0:r1, r1:] = G[r1:, r0:r1].T
        blk = G[r0:r1, r0:r1]
        iu = np.triu_indices(r1 - r0, 1)
        blk[iu] = blk.T[iu]
