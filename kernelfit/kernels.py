"""Kernel functions and tiled kernel blocks.

Kernels (``x``, ``z`` rows of the data matrix):

============== ==========================================================
``linear``     k(x, z) = <x, z>
``polynomial`` k(x, z) = (gamma <x, z> + coef0) ^ degree
``normalized`` k(x, z) = <x/|x|, z/|z|> ^ degree   (the paper's MNIST kernel,
               degree 4: 1.2% test error on raw pixels)
``gaussian``   k(x, z) = exp(-|x - z|^2 / (2 bandwidth^2))
``laplacian``  k(x, z) = exp(-|x - z| / bandwidth)
============== ==========================================================

Every kernel is evaluated block by block (:meth:`Kernel.block`) so that callers can build
Gram and cross-kernel matrices in tiles of bounded size. Squared distances are computed
as |x|^2 + |z|^2 - 2 <x, z> in float64 (also when the result is stored in float32, since
that expansion cancels badly in single precision), clamped at zero, and set to exactly
zero on the diagonal of a diagonal block. Code is written against the array module
``xp`` of the inputs, so the same function runs on NumPy and CuPy.

Inputs on an integer grid (8-bit pixels scaled to [0, 1], ``x = k / 255``) can be stored
as their integers ``k`` in float32 with ``Kernel(..., int_scale=255)``
(:func:`integer_grid`). Their inner products are sums of integer products; while every
partial sum stays below 2^24 in magnitude, which holds when ``|k_a| |k_b| < 2^24`` for
every pair of rows (Cauchy-Schwarz bounds each partial sum by the full sum of
``|k_a,i k_b,i|``), a float32 GEMM computes them *exactly*, in any order and with fused
multiply-adds, at twice the float64 rate of the CPU's SIMD units. The products of the few
rows past the bound (``|k|^2 >= 2^24``; MNIST: 3 of 60,000) are made again in float64
(exact for 8-bit pixels: sums below 2^53); only a block with many such rows uses the
float64 GEMM throughout.
The float64 values are then finished row chunk by row chunk, in cache, and handed on
(:meth:`Kernel.block`'s ``sink`` and products) without a whole float64 block in memory.
The finish is float64 either way, the bandwidth in grid units (``h * int_scale``): the
values of ``x`` itself from exact inner products (the Gaussian's exp of those exact squared
distances by table lookups where faster: :func:`kernelfit.grid.gaussian_of_exact`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np

from .backend import array_namespace, fused_finish, to_host
from .errors import InputError
from .grid import (_F32_EXACT, INT_GRID_KERNELS, _grid_float32, exact_products,
                   gaussian_of_exact, integer_grid, to_integer_grid)

__all__ = ["Kernel", "KERNEL_NAMES", "get_kernel", "row_norms_sq", "squared_distances",
           "check_array", "median_distance", "integer_grid", "to_integer_grid",
           "INT_GRID_KERNELS"]

#: a block whose heavy rows (|k|^2 >= 2^24) are more than 1/this of its rows or columns is
#: multiplied by the float64 GEMM (see Kernel._heavy_lines)
_HEAVY_BLOCK_SHARE = 8
#: the ranges of the exact integers kept by ``Kernel.block(keep_exact=)``
_INT32_LIMIT = float(2 ** 31 - 1)
_UINT32_LIMIT = float(2 ** 32 - 1)

KERNEL_NAMES = ("linear", "polynomial", "normalized", "gaussian", "laplacian")

_ALIASES = {"rbf": "gaussian", "poly": "polynomial", "normalized-polynomial": "normalized",
            "normalized_polynomial": "normalized", "cosine-polynomial": "normalized"}


def check_array(X, name: str = "X", *, allow_empty: bool = False) -> np.ndarray:
    """Validate a 2-D finite float array; raise :class:`InputError` otherwise."""
    xp = array_namespace(X)
    if not hasattr(X, "ndim"):
        X = np.asarray(X)
        xp = np
    if X.ndim == 1:
        raise InputError(f"{name} must be 2-D (n_samples, n_features); got a 1-D array of "
                         f"length {X.shape[0]} (reshape it with X.reshape(-1, 1) or (1, -1))")
    if X.ndim != 2:
        raise InputError(f"{name} must be 2-D (n_samples, n_features); got shape {X.shape}")
    if not allow_empty and (X.shape[0] == 0 or X.shape[1] == 0):
        raise InputError(f"{name} is empty (shape {X.shape})")
    if X.dtype.kind not in "fiub":
        raise InputError(f"{name} must be numeric; got dtype {X.dtype}")
    if X.dtype.kind == "f" and not bool(xp.isfinite(X).all()):
        bad = int((~xp.isfinite(X)).sum())
        raise InputError(f"{name} contains {bad} NaN or infinite value(s)")
    return X


def row_norms_sq(X, rows: int = 512) -> Any:
    """Squared Euclidean norm of every row, accumulated in float64 (on the CPU, rows of
    other types are cast ``rows`` at a time: no float64 copy of a large ``X``)."""
    xp = array_namespace(X)
    if X.dtype == xp.float64 or xp is not np or X.shape[0] <= rows:
        X64 = X.astype(xp.float64, copy=False)
        return xp.einsum("ij,ij->i", X64, X64)
    out = np.empty(X.shape[0])
    buf = np.empty((rows, X.shape[1]))
    for s in range(0, X.shape[0], rows):
        b = buf[:min(rows, X.shape[0] - s)]
        b[...] = X[s:s + rows]
        np.einsum("ij,ij->i", b, b, out=out[s:s + rows])
    return out


def squared_distances(A, B, *, a_sq=None, b_sq=None, same: bool = False, out=None):
    """|a - b|^2 for all row pairs, in float64, clamped at zero.

    ``same=True`` declares that ``A`` and ``B`` are the same rows, so the diagonal is set
    to exactly zero (the expansion leaves rounding noise there).
    """
    xp = array_namespace(A)
    A = A.astype(xp.float64, copy=False)
    B = B.astype(xp.float64, copy=False)
    if a_sq is None:
        a_sq = row_norms_sq(A)
    if b_sq is None:
        b_sq = row_norms_sq(B)
    D = xp.matmul(A, B.T, out=out)
    D *= -2.0
    D += a_sq[:, None]
    D += b_sq[None, :]
    xp.maximum(D, 0.0, out=D)
    if same:
        k = min(D.shape)
        D[xp.arange(k), xp.arange(k)] = 0.0
    return D


def median_distance(X, *, sample: int = 1000, seed: int = 0, rng=None) -> float:
    """Median Euclidean distance between distinct points of a seeded sample of ``X``.

    The median heuristic for a bandwidth. At most ``sample`` rows are used, drawn by
    ``rng`` (default: ``numpy.random.default_rng(seed)``); distances as in
    :func:`squared_distances`.
    """
    if not hasattr(X, "shape"):
        X = np.asarray(X, dtype=np.float64)
    xp = array_namespace(X)
    n = X.shape[0]
    if n < 2:
        raise InputError("the median heuristic needs at least two rows")
    rng = np.random.default_rng(seed) if rng is None else rng
    idx = np.sort(rng.choice(n, size=min(n, int(sample)), replace=False))
    S = to_host(X[xp.asarray(idx)], dtype=np.float64)  # only the sample leaves the GPU
    D = squared_distances(S, S, same=True)
    dist = np.sqrt(D[np.triu_indices(S.shape[0], k=1)])
    dist = dist[dist > 0]  # exact duplicates are not distinct points
    if dist.size == 0:
        raise InputError("cannot choose a bandwidth: all sampled points are identical")
    return float(np.median(dist))


@dataclass(frozen=True)
class Kernel:
    """A positive-definite kernel with its parameters (see the module docstring)."""

    name: str = "gaussian"
    bandwidth: float = 5.0
    degree: int = 4
    gamma: float = 1.0
    coef0: float = 1.0
    #: inputs are the integers ``k = x * int_scale`` stored in float32 (None: plain inputs)
    int_scale: Optional[float] = None

    def __post_init__(self):
        name = _ALIASES.get(self.name, self.name)
        object.__setattr__(self, "name", name)
        if name not in KERNEL_NAMES:
            raise InputError(f"unknown kernel {self.name!r}; choose one of "
                             f"{', '.join(KERNEL_NAMES)}", param="kernel")
        if name in ("gaussian", "laplacian"):
            bw = self.bandwidth
            if not (isinstance(bw, (int, float)) and math.isfinite(bw) and bw > 0):
                raise InputError(f"bandwidth must be a positive finite number, got {bw!r}",
                                 param="bandwidth")
            if bw * bw == 0.0 or not math.isfinite(0.5 / (bw * bw)):
                raise InputError(f"bandwidth {bw!r} is too small: 1/(2 h^2) overflows; use a "
                                 "bandwidth of at least 1e-150 (or 'median')", param="bandwidth")
        deg = self.degree  # checked whatever the kernel (degree='four' passed unseen)
        if (isinstance(deg, bool) or not isinstance(deg, (int, float, np.integer, np.floating))
                or not math.isfinite(deg) or int(deg) != deg or deg < 1):
            raise InputError(f"degree must be a positive integer, got {deg!r}",
                             param="degree")
        if name in ("polynomial", "normalized"):
            object.__setattr__(self, "degree", int(self.degree))
        if self.int_scale is not None:
            sc = self.int_scale
            if name not in INT_GRID_KERNELS:
                raise InputError(f"int_scale applies to the {', '.join(INT_GRID_KERNELS)} "
                                 f"kernels, not {name!r}", param="int_scale")
            if not (isinstance(sc, (int, float)) and math.isfinite(sc) and sc > 0):
                raise InputError(f"int_scale must be a positive finite number, got {sc!r}",
                                 param="int_scale")
        # checked whatever the kernel, as degree is (gamma=nan passed unseen elsewhere)
        for key, lowest in (("gamma", None), ("coef0", 0.0)):
            v = getattr(self, key)
            if (isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating))
                    or not math.isfinite(v) or (v <= 0 if lowest is None else v < lowest)):
                what = "positive" if lowest is None else "non-negative"
                raise InputError(f"{key} must be {what} and finite, got {v!r}", param=key)

    # ------------------------------------------------------------------ info
    @property
    def needs_sq_norms(self) -> bool:
        return self.name in ("gaussian", "laplacian", "normalized")

    @property
    def diagonal_value(self) -> Optional[float]:
        """k(x, x) when it does not depend on x (1 for gaussian, laplacian, normalized)."""
        return 1.0 if self.name in ("gaussian", "laplacian", "normalized") else None

    def params(self) -> dict:
        """The parameters that matter for this kernel (for reports and model files)."""
        d = asdict(self)
        keep = {"linear": ("name",), "polynomial": ("name", "degree", "gamma", "coef0"),
                "normalized": ("name", "degree"), "gaussian": ("name", "bandwidth"),
                "laplacian": ("name", "bandwidth")}[self.name]
        return {k: d[k] for k in keep}

    def flops_per_entry(self, n_features: int) -> float:
        """Floating-point operations per kernel entry (2 d for the inner product)."""
        return 2.0 * n_features

    # --------------------------------------------------------------- blocks
    def prepare(self, X) -> Any:
        """Row statistics reused by every block: squared norms (float64), or None."""
        if not self.needs_sq_norms:
            return None
        return self._checked_stats(row_norms_sq(X))

    def _checked_stats(self, sq):
        """:meth:`prepare`'s statistics ``sq`` (squared norms), refused where the kernel
        cannot take them (a zero row for ``normalized``)."""
        if self.name == "normalized":
            xp = array_namespace(sq)
            if bool((sq == 0).any()):
                idx = int(xp.flatnonzero(sq == 0)[0])
                raise InputError(
                    f"the normalized kernel divides by |x|, but row {idx} (and "
                    f"{int((sq == 0).sum()) - 1} more) is all zeros; drop such rows or choose "
                    "another kernel")
        return sq

    def block(self, A, B, *, a_stats=None, b_stats=None, same: bool = False, out=None,
              dtype=None, times=None, times_t=None, keep_exact=None, sink=None,
              scratch=None):
        """The kernel block k(A_i, B_j) as a C-ordered array of shape (len(A), len(B)).

        ``a_stats``/``b_stats`` come from :meth:`prepare` (computed when omitted).
        ``same=True`` when ``A`` and ``B`` are the same rows (exact diagonal).
        ``out`` is an optional float64 C-ordered buffer of the right shape. The result is
        float64 unless ``dtype`` asks for another type (the cast happens last).

        One GEMM gives the inner products; every element-wise step after it
        (distance expansion, clamp, scaling, exp or power) runs on row chunks of about
        2 MiB on the CPU, so the block is read from cache rather than memory each time.

        ``times=(V, acc)`` also adds ``block @ V`` to ``acc`` (float64, ``len(A)`` rows)
        and ``times_t=(W, acc_t)`` adds ``block.T @ W`` to ``acc_t`` (``len(B)`` rows),
        chunk by chunk while each chunk is still in cache: a kernel product then never
        reads the finished block back from memory.

        ``keep_exact``: an array of the block's shape and :meth:`exact_dtype` that receives
        the exact integers the kernel values are finished from (squared distances, or inner
        products for ``normalized``), where the inputs allow; half the bytes of the float64
        block, and :meth:`exact_times` turns them back into the same kernel values, bit
        for bit. Or a callable ``keep_exact(s, e, chunk)``, handed each row chunk of them
        (float64 values, still in cache) before the finish, to store as it likes.

        ``sink(s, e, chunk)``: called with each finished row chunk (float64, still in
        cache) for the caller to store (e.g. cast into a float32 tile). With a sink or a
        product and no ``out``, the float64 block is not kept: on the CPU it is never
        written whole (float32 GEMM), and None is returned.
        ``scratch``: reusable buffers (:class:`kernelfit.solvers.tiles.BlockBuffer`: a
        float32 product, a row chunk, a whole float64 block), so that no block allocates
        fresh memory (page faults, on some virtual machines a large part of a block's time).
        """
        xp = array_namespace(A)
        if self.needs_sq_norms:
            if a_stats is None:
                a_stats = self.prepare(A)
            if b_stats is None:
                b_stats = self.prepare(B)
        K32 = Hr = Hc = None
        m, ncols = A.shape[0], B.shape[0]
        host = xp is np
        # the whole float64 block: asked for (out, or nothing takes the chunks: no sink,
        # no product), or where it is made in one piece anyway (float64 GEMM, a GPU)
        whole = (out is not None or not host
                 or (sink is None and times is None and times_t is None))
        heavy = self._heavy_lines(A, B, a_stats, b_stats, xp)
        if heavy is not None:
            # exact integer inner products at the float32 rate (but for the few heavy rows
            # and columns, made again exactly in float64); cast chunk by chunk below
            K32 = xp.matmul(A, B.T, out=None if scratch is None else scratch.product(m, ncols))
            hr, hc = heavy
            Hr = exact_products(A[hr], B, _chunk_rows(B.shape[1])) if hr.size else None
            Hc = exact_products(B[hc], A, _chunk_rows(A.shape[1])) if hc.size else None
            A64 = A
            K = out if out is not None or not whole else (
                scratch.view(m, ncols) if scratch is not None
                else xp.empty((m, ncols), dtype=xp.float64))
        else:
            A64 = A.astype(xp.float64, copy=False)
            if out is None and scratch is not None:
                out = scratch.view(m, ncols)
            K = xp.matmul(A64, B.astype(xp.float64, copy=False).T, out=out)
        rows = m if not host else _chunk_rows(ncols)
        stream = K32 is not None and not whole
        if stream:  # the float64 values live one row chunk at a time
            buf = (scratch.chunk(min(rows, m), ncols) if scratch is not None
                   else np.empty((min(rows, m), ncols)))
        # exact integer inner products give exact squared distances, >= 0 with no clamp:
        # made in the cast itself (-2 <a, b>, then the norms), two passes fewer per chunk
        dist = K32 is not None and self.name in ("gaussian", "laplacian")
        # integers stored on the grid: exact (integer) squared distances, whichever GEMM
        exact = dist or (host and self.int_scale is not None and A.dtype == np.float32
                         and B.dtype == np.float32)
        for s in range(0, m, rows):
            e = min(s + rows, m)
            chunk = buf[:e - s] if stream else K[s:e]
            if K32 is not None:
                f = -2.0 if dist else 1.0
                np.multiply(K32[s:e], f, out=chunk)
                if Hc is not None:
                    chunk[:, hc] = f * Hc[:, s:e].T
                if Hr is not None:
                    at = (hr >= s) & (hr < e)
                    if at.any():
                        chunk[hr[at] - s] = f * Hr[at]
                if dist:
                    chunk += a_stats[s:e, None]
                    chunk += b_stats[None, :]
            if keep_exact is not None and not dist:
                self._finish_pre(chunk, None if a_stats is None else a_stats[s:e], b_stats, xp)
            if keep_exact is not None:
                if callable(keep_exact):
                    keep_exact(s, e, chunk)
                else:  # exact integers within keep_exact's range (exact_dtype)
                    np.copyto(keep_exact[s:e], chunk, casting="unsafe")
            self._finish_rows(chunk, s, a_stats, b_stats, same, A64, xp, times, times_t,
                              pre=keep_exact is None and not dist, exact=exact)
            if sink is not None:
                sink(s, e, chunk)
        if stream:
            return None
        if dtype is not None and K.dtype != dtype:
            K = K.astype(dtype)
        return K

    def _finish_rows(self, chunk, s: int, a_stats, b_stats, same: bool, A64, xp, times,
                     times_t, pre: bool = True, exact: bool = False) -> None:
        """Finish rows ``s:s+len(chunk)`` of a block in place (inner products in, or with
        ``pre=False`` what :meth:`_finish_pre` made of them, ``exact``: exact integers;
        kernel values out, the exact diagonal of a diagonal block) and add their products."""
        e = s + chunk.shape[0]
        a_sq = None if a_stats is None else a_stats[s:e]
        if pre:
            self._finish(chunk, a_sq, b_stats, xp, exact)
        else:
            self._finish_post(chunk, a_sq, b_stats, xp, exact=exact)
        if same and (self.diagonal_value is not None or self.name == "linear"):
            stop = min(e, chunk.shape[1])  # the diagonal entries (t, t) of these rows
            if stop > s:
                idx = xp.arange(stop - s)
                if self.diagonal_value is not None:
                    # distance exactly 0 / cosine exactly 1
                    chunk[idx, idx + s] = self.diagonal_value
                else:
                    chunk[idx, idx + s] = row_norms_sq(A64[s:stop])
        if times is not None:
            times[1][s:e] += chunk @ times[0]
        if times_t is not None:  # (W^T chunk)^T: OpenBLAS's faster form for a short chunk
            times_t[1][...] += (times_t[0][s:e].T @ chunk).T

    def exact_dtype(self, X, stats) -> Optional[np.dtype]:
        """The integer type that keeps this kernel's blocks over rows of ``X`` exactly
        (``block(keep_exact=)``), or None. Integer-grid float32 inputs on the host have
        exact integer inner products (see the module docstring), hence exact squared
        distances |a - b|^2 <= 4 max |a|^2: uint32 while that is below 2^32 (gaussian,
        laplacian); the normalized kernel keeps the inner products, |<a, b>| <= max |a|^2,
        as int32."""
        if not (self.int_scale is not None and isinstance(X, np.ndarray)
                and X.dtype == np.float32 and X.shape[0] > 0 and stats is not None):
            return None
        top = float(np.max(stats))
        if self.name == "normalized":
            return np.dtype(np.int32) if top < _INT32_LIMIT else None
        return np.dtype(np.uint32) if 4.0 * top < _UINT32_LIMIT else None

    def exact_times(self, E, a_stats, b_stats, *, same: bool = False, times=None,
                    times_t=None, buf=None, lower: bool = False):
        """The products of :meth:`block` (``times``, ``times_t``) from the exact integers
        ``E`` a block kept with ``block(keep_exact=)``: the same float64 finish on the same
        values, so the same kernel values, bit for bit, without the GEMM. Row chunks of
        about 2 MiB are finished in ``buf`` (a float64 array, made or grown when too small)
        and multiplied while in cache. Returns the buffer, for the next call to reuse.

        ``lower=True``: ``E`` is a diagonal block (``same``, a distance kernel, ``times``
        only) of which only the strict lower triangle holds the integers (the rest may
        hold anything): each row chunk is finished left of the diagonal only, and adds its
        product and its transpose's; the diagonal, k(x, x), adds last."""
        m, ncols = E.shape
        if lower and (m != ncols or not same or times_t is not None or times is None
                      or self.name not in ("gaussian", "laplacian")):
            raise InputError("lower=True takes the square diagonal block of a distance "
                             "kernel and one product")
        rows = _chunk_rows(ncols)
        if buf is None or buf.size < min(rows, m) * ncols:
            buf = np.empty(min(rows, m) * ncols)
        for s in range(0, m, rows):
            e = min(s + rows, m)
            width = e if lower else ncols
            chunk = buf[:(e - s) * width].reshape(e - s, width)
            chunk[...] = E[s:e, :width]
            if not lower:
                self._finish_rows(chunk, s, a_stats, b_stats, same, None, np, times,
                                  times_t, pre=False, exact=True)
                continue
            upper = ~strict_lower_mask(e - s)  # not K's integers there: zero before and after
            np.copyto(chunk[:, s:e], 0.0, where=upper)
            self._finish_post(chunk, None, None, np, exact=True)
            np.copyto(chunk[:, s:e], 0.0, where=upper)
            V, acc = times
            acc[s:e] += chunk @ V[:e]
            acc[:e] += (V[s:e].T @ chunk).T
        if lower:
            times[1][...] += self.diagonal_value * times[0]
        return buf

    @property
    def _grid_bandwidth(self) -> float:
        """The bandwidth in the units of the stored inputs (grid units with int_scale)."""
        return self.bandwidth * (self.int_scale or 1.0)

    def _heavy_lines(self, A, B, a_stats, b_stats, xp) -> Optional[tuple]:
        """Where one float32 GEMM gives this block's integer inner products exactly: None
        (nowhere: the float64 GEMM), else ``(rows, cols)``, the indices of the rows of
        ``A`` and of ``B`` whose products it may round, to be made again in float64.

        Both operands must be integer-grid float32 on the CPU. The product of rows ``a``
        and ``b`` is exact when ``|a|^2 |b|^2 < 2^48`` (Cauchy-Schwarz bounds every partial
        sum by ``|a| |b| < 2^24``); so every pair of rows with ``|a|^2, |b|^2 < 2^24`` is,
        and only rows past that (MNIST: 3 of 60,000) need their products in float64. More
        than ``1 / _HEAVY_BLOCK_SHARE`` of a block's rows or columns past it: None."""
        if (self.int_scale is None or xp is not np or A.dtype != np.float32
                or B.dtype != np.float32 or a_stats is None or b_stats is None
                or A.shape[0] == 0 or B.shape[0] == 0):
            return None
        none = np.empty(0, dtype=np.intp)
        if float(a_stats.max()) * float(b_stats.max()) < _F32_EXACT * _F32_EXACT:
            return none, none
        # (statistics over more columns than the block's only overstate the norms)
        rows = np.flatnonzero(a_stats >= _F32_EXACT)
        cols = np.flatnonzero(b_stats >= _F32_EXACT)
        if (rows.size * _HEAVY_BLOCK_SHARE > A.shape[0]
                or cols.size * _HEAVY_BLOCK_SHARE > B.shape[0]):
            return None
        return rows, cols

    def query(self, X, columns=None):
        """``(Xq, stats)``: query rows ``X`` in this kernel's input units (``X`` itself
        without ``int_scale``; else the integers ``X * int_scale``, in float32 where they
        are exact integers below 2^24, in float64 where they are not: still correct, at the
        float64 rate), restricted to ``columns`` (None: all; e.g. the fitted inputs'
        :func:`active_columns`), and :meth:`prepare`'s statistics of the rows over *all*
        their columns, which the kernel values need. On the grid it is one pass over ``X``
        in cache-sized chunks (no float64 or full-width float32 copy)."""
        xp = array_namespace(X)
        if self.int_scale is not None and xp is np and X.size and X.dtype.kind == "f":
            sq = np.empty(X.shape[0]) if self.needs_sq_norms else None
            G = _grid_float32(X, self.int_scale, columns=columns, norms=sq)
            if G is not None:
                return G, (None if sq is None else self._checked_stats(sq))
        Xq = X if self.int_scale is None else xp.asarray(X, dtype=xp.float64) * self.int_scale
        stats = self.prepare(Xq)
        if columns is not None:
            Xq = xp.take(Xq, xp.asarray(columns), axis=1)
        return Xq, stats

    def _finish(self, S, a_sq, b_sq, xp, exact: bool = False) -> None:
        """Turn inner products S = <a, b> into kernel values, in place."""
        name = self.name
        fused = fused_finish(xp, name) if name in ("gaussian", "laplacian") else None
        if fused is not None:  # one GPU kernel: distance, clamp, scale, exp (and sqrt)
            h = self._grid_bandwidth
            scale = -1.0 / (2.0 * h * h) if name == "gaussian" else -1.0 / h
            fused(a_sq[:, None], b_sq[None, :], scale, S)
            return
        self._finish_pre(S, a_sq, b_sq, xp)
        self._finish_post(S, a_sq, b_sq, xp, exact)

    def _finish_pre(self, S, a_sq, b_sq, xp) -> None:
        """The first step of the finish, in place: inner products to squared distances
        for the distance kernels (what ``block(keep_exact=)`` keeps), else nothing."""
        if self.name in ("gaussian", "laplacian"):
            # |a - b|^2 = |a|^2 + |b|^2 - 2 <a, b>, clamped at zero
            S *= -2.0
            S += a_sq[:, None]
            S += b_sq[None, :]
            xp.maximum(S, 0.0, out=S)

    def _finish_post(self, S, a_sq, b_sq, xp, exact: bool = False) -> None:
        """The rest of the finish, in place: kernel values from :meth:`_finish_pre`'s
        (``exact``: they are exact integers, see :func:`~kernelfit.grid.gaussian_of_exact`)."""
        name = self.name
        if name == "gaussian" and exact and xp is np:
            gaussian_of_exact(S, self._grid_bandwidth)
        elif name in ("gaussian", "laplacian"):
            h = self._grid_bandwidth
            if name == "gaussian":
                S *= -1.0 / (2.0 * h * h)
            else:
                xp.sqrt(S, out=S)
                S *= -1.0 / h
            xp.exp(S, out=S)
        elif name == "normalized":
            S *= (1.0 / xp.sqrt(a_sq))[:, None]
            S *= (1.0 / xp.sqrt(b_sq))[None, :]
            xp.clip(S, -1.0, 1.0, out=S)
            if self.degree != 1:
                _int_power_inplace(S, self.degree, xp)
        elif name == "polynomial":
            if self.gamma != 1.0:
                S *= self.gamma
            if self.coef0 != 0.0:
                S += self.coef0
            if self.degree != 1:
                _int_power_inplace(S, self.degree, xp)

    def __call__(self, A, B=None):
        """The full kernel matrix k(A, B) (small inputs; use tiles for large ones)."""
        same = B is None
        A = check_array(A, "A", allow_empty=True)
        B = A if same else check_array(B, "B", allow_empty=True)
        if A.shape[1] != B.shape[1]:
            raise InputError(f"A and B must have the same number of features, got "
                             f"{A.shape[1]} and {B.shape[1]}", param="B")
        return self.block(A, B, same=same)


@functools.lru_cache(maxsize=8)
def strict_lower_mask(k: int) -> np.ndarray:
    """The k x k boolean mask of the strict lower triangle."""
    return np.tri(k, k, -1, dtype=bool)


def _chunk_rows(ncols: int) -> int:
    """Rows of a block finished at a time on the CPU: about 2 MiB of float64."""
    return max(1, (1 << 18) // max(ncols, 1))


def _int_power_inplace(K, p: int, xp) -> None:
    """K <- K ** p for a positive integer p, by repeated squaring, in place."""
    if p in (2, 4):
        for _ in range(p // 2):
            xp.multiply(K, K, out=K)
    else:
        xp.power(K, p, out=K)


def active_columns(X):
    """Indices of the columns of ``X`` that are non-zero in at least one row (None: all).

    Every kernel here depends on the data only through inner products <a, b> and squared
    norms |a|^2, and a column that is zero in every training row adds nothing to any
    <a, b> with a training point. So the Gram matrix, and k(x, X_train) for any query x
    whose norm is taken over all its columns, can be formed from these columns alone
    (exactly, up to the order of summation). On MNIST 13% of the pixels are zero in every
    one of 10,000 training images: 13% fewer flops in every GEMM over the data.
    """
    xp = array_namespace(X)
    nz = xp.any(X != 0, axis=0)
    k = int(nz.sum())
    if k == X.shape[1] or k == 0:
        return None
    return xp.flatnonzero(nz)


def get_kernel(name: str = "gaussian", **params) -> Kernel:
    """Build a :class:`Kernel` by name; unknown parameters raise :class:`InputError`."""
    if isinstance(name, Kernel):
        return name
    if not isinstance(name, str):
        raise InputError(f"kernel must be a name, got {type(name).__name__}")
    allowed = {"bandwidth", "degree", "gamma", "coef0"}
    unknown = set(params) - allowed
    if unknown:
        raise InputError(f"unknown kernel parameter(s): {', '.join(sorted(unknown))}")
    clean = {k: v for k, v in params.items() if v is not None}
    for key in ("bandwidth", "gamma", "coef0"):
        if key in clean:
            try:
                clean[key] = float(clean[key])
            except (TypeError, ValueError):
                raise InputError(f"{key} must be a number, got {clean[key]!r}",
                                 param=key) from None
    return Kernel(name=name, **clean)
