"""Inputs on an integer grid: detecting them and storing them exactly in float32.

8-bit pixels scaled to [0, 1] are the integers ``k / 255``; stored as ``k`` in float32 their
inner products are exact at the float32 GEMM rate while partial sums stay below 2^24 (see
:mod:`kernelfit.kernels`, which uses these helpers through ``Kernel(int_scale=)``).

Feature maps with unit-norm rows round them to the grid of ``2^-FEATURE_GRID_BITS``
(:class:`kernelfit.features.gabor.GaborFeatures`): a row is then the integers ``k / 2048``
with ``|k|^2`` about ``2^22``, below the ``2^24`` bound, so the same float32 GEMM gives their
inner products exactly.
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import replace
from typing import Optional

import numpy as np

from .backend import array_namespace
from .errors import InputError

__all__ = ["integer_grid", "grid_float32", "grid_expected", "to_integer_grid",
           "gaussian_of_exact", "lookup_exp_faster", "exact_products", "INT_GRID_KERNELS",
           "FEATURE_GRID_BITS", "FEATURE_GRID"]

#: float32 represents every integer of magnitude below 2^24 exactly
_F32_EXACT = float(2 ** 24)
#: unit-norm feature rows are rounded to multiples of 2^-FEATURE_GRID_BITS: the largest
#: power of two whose grid keeps |k|^2 (about FEATURE_GRID^2 for a unit row) below 2^24
FEATURE_GRID_BITS = 11
FEATURE_GRID = float(2 ** FEATURE_GRID_BITS)
#: the grids tried by :func:`integer_grid`: integer data, 8-bit values scaled to [0, 1], and
#: the grid of unit-norm feature maps (powers of two: every value on a coarser dyadic grid
#: is on this one too)
_GRID_SCALES = (1.0, 255.0, FEATURE_GRID)
#: kernels whose values depend on the inputs only through distances or cosines, so that
#: integer-grid inputs need only their bandwidth rescaled (see :mod:`kernelfit.kernels`)
INT_GRID_KERNELS = ("gaussian", "laplacian", "normalized")
#: at most one row with |k|^2 >= 2^24 per this many rows for the integer-grid storage
_HEAVY_ROWS_PER = 4096


def integer_grid(X, scales=_GRID_SCALES) -> Optional[float]:
    """The first ``s`` of ``scales`` for which ``X * s`` is all integers of magnitude below
    2^24 (exact in float32), else None. NumPy arrays only (None for device arrays).

    A seeded sample of 256 rows is tested first, so data off the grid are rejected after
    a few cheap passes over that sample; the whole array is checked before a scale is
    returned.
    """
    for s in _sampled_scales(X, scales):
        if _on_grid(X, s):
            return s
    return None


def _sample(X):
    """A seeded sample of 256 rows of ``X`` (a float NumPy array), or None."""
    if not isinstance(X, np.ndarray) or X.size == 0 or X.dtype.kind != "f":
        return None
    rows = np.sort(np.random.default_rng(0).choice(X.shape[0], size=min(256, X.shape[0]),
                                                   replace=False))
    return X[rows]


def _sampled_scales(X, scales=_GRID_SCALES, sample=None):
    """The scales of ``scales`` under which a seeded sample of 256 rows of ``X`` (a float
    NumPy array; ``sample``: that sample, taken already) is on the grid: the candidates,
    each still to be checked on all of ``X``."""
    sample = _sample(X) if sample is None else sample
    if sample is None:
        return
    for s in scales:
        if _on_grid(sample, s):
            yield float(s)


def grid_expected(kernel_name: str, X) -> bool:
    """Whether :func:`to_integer_grid` is expected to store ``X`` as exact integers, for a
    plan made before the solve: the kernel allows it and a seeded sample of 256 rows is on
    a grid with no row whose squared norm there reaches 2^24 (a guess from the sample; the
    solve checks every row)."""
    sample = _sample(X) if kernel_name in INT_GRID_KERNELS else None
    if sample is None:
        return False
    norms = np.einsum("ij,ij->i", sample, sample)
    return any(np.count_nonzero(norms * (s * s) >= _F32_EXACT)
               <= sample.shape[0] // _HEAVY_ROWS_PER
               for s in _sampled_scales(X, sample=sample))


def grid_float32(X, scales=_GRID_SCALES, *, columns=None, max_heavy=None):
    """``(s, G)``: the first scale ``s`` of ``scales`` under which ``X`` is on the grid and
    ``G = X[:, columns] * s`` in float32 (:func:`_grid_float32`, one pass), or None.

    ``max_heavy``: None as well when more than this many rows have ``|X s|^2 >= 2^24``
    (their float32 products may round; see :mod:`kernelfit.kernels`)."""
    for s in _sampled_scales(X, scales):
        G = _grid_float32(X, s, columns=columns, max_heavy=max_heavy)
        if G is not None:
            return s, G
    return None


def _grid_float32(X, s: float, chunk: int = 1 << 15, *, columns=None, norms=None,
                  max_heavy=None) -> Optional[np.ndarray]:
    """``X[:, columns] * s`` in float32 (all columns when ``columns`` is None) when
    ``X * s`` is all integers of magnitude below 2^24, else None; one pass in row chunks of
    about ``chunk`` values that stay in cache (the first off-grid chunk stops it), with
    reused buffers: no full-size temporary, no float64 copy of the columns kept (MNIST,
    fresh processes on a 2-core VM: 0.05-0.12 s at n = 10,000 and 0.3 s at 60,000, where a
    float64 column take, a separate grid check and a cast took 0.07-0.41 s and 0.5-1.9 s,
    mostly first-touch page faults).

    ``norms``: a float64 array of ``len(X)`` that receives every row's squared norm over
    *all* its columns, in grid units (exact: integer sums below 2^53).
    ``max_heavy``: None when more than this many rows have such a norm ``>= 2^24``."""
    n, d = X.shape
    if columns is not None:
        columns = np.asarray(columns, dtype=np.intp)
        if columns.ndim != 1 or (columns.size and not 0 <= columns.min() <= columns.max() < d):
            raise InputError(f"columns must be indices of the {d} columns of X")
    out = np.empty((n, d if columns is None else len(columns)), dtype=np.float32)
    rows = max(1, chunk // max(d, 1))
    G = np.empty((min(rows, n), d))
    R = np.empty_like(G)
    sq = np.empty(G.shape[0]) if norms is None else None
    # the kept columns of a chunk, taken in float64 (a take into the float32 rows would
    # first cast their uninitialized contents: a spurious "invalid value" warning)
    C = None if columns is None else np.empty((G.shape[0], len(columns)))
    heavy = 0
    for a in range(0, n, rows):
        b = min(a + rows, n)
        g, r = G[:b - a], R[:b - a]
        np.multiply(X[a:b], s, out=g)
        np.rint(g, out=r)
        if not (np.array_equal(g, r) and np.abs(r, out=r).max() < _F32_EXACT):
            return None
        if norms is not None or max_heavy is not None:
            q = norms[a:b] if norms is not None else sq[:b - a]
            np.einsum("ij,ij->i", g, g, out=q)
            if max_heavy is not None:
                heavy += int(np.count_nonzero(q >= _F32_EXACT))
                if heavy > max_heavy:
                    return None
        if columns is not None:
            g = np.take(g, columns, axis=1, out=C[:b - a], mode="clip")
        out[a:b] = g
    return out


def _on_grid(X, s: float, rows: int = 4096) -> bool:
    for a in range(0, X.shape[0], rows):  # row chunks: a few MiB of temporaries
        G = X[a:a + rows] * s
        if not (np.abs(G).max() < _F32_EXACT and np.array_equal(G, np.rint(G))):
            return False
    return True


def to_integer_grid(kernel, X, columns=None):
    """``(kernel, X[:, columns])`` with the inputs stored as exact integers in float32 when
    ``X`` (a NumPy array) lies on an integer grid and the kernel allows it, else unchanged
    (``columns``: the columns kept, e.g. :func:`kernelfit.kernels.active_columns`;
    None: all).

    The returned kernel carries ``int_scale`` (its bandwidth is unchanged: the kernel
    values are those of the original inputs); half the memory for the inputs, and every
    block whose rows satisfy the 2^24 bound multiplies at the float32 rate, exactly. One
    pass over ``X`` in cache-sized row chunks checks the grid, takes the columns and casts
    (:func:`grid_float32`): no float64 copy of the columns first.
    """
    def unchanged():
        return kernel, (X if columns is None else array_namespace(X).take(X, columns, axis=1))

    if kernel.int_scale is not None or kernel.name not in INT_GRID_KERNELS:
        return unchanged()
    # a block multiplies in float32 only when its largest rows pass the 2^24 bound: worth it
    # when such heavy rows are rare (MNIST: 3 of 60,000), not when most rows are heavy
    # (CIFAR-10's 3,072 pixels), where every block would take the float64 GEMM anyway; the
    # count decides the storage only (each block checks its own bound exactly)
    found = grid_float32(X, columns=columns, max_heavy=X.shape[0] // _HEAVY_ROWS_PER)
    if found is None:
        return unchanged()
    s, G = found
    if kernel.name == "gaussian":
        lookup_exp_faster()  # measured now, on one thread, not amid the tile threads
    return replace(kernel, int_scale=s), G


# ---------------------------------------------------------------- the Gaussian's exp
#: exact squared distances k = a 2^LOOKUP_BITS + b are finished by two table lookups
LOOKUP_BITS = 13
#: ... while they are below this (a larger one: NumPy's exp)
_LOOKUP_MAX = float(2 ** 32)


@functools.lru_cache(maxsize=8)
def _exp_tables(h: float, hi_len: int):
    """``(HI, LO)``: exp(-k / (2 h^2)) at k = a 2^LOOKUP_BITS (a < hi_len) and at
    k = b < 2^LOOKUP_BITS, each rounded once to float64 from extended precision (x86's
    80-bit long double; float64 where NumPy has nothing wider)."""
    c = np.longdouble(-1.0) / (np.longdouble(2.0) * np.longdouble(h) ** 2)
    lo = np.arange(1 << LOOKUP_BITS, dtype=np.longdouble)
    hi = np.arange(hi_len, dtype=np.longdouble) * (1 << LOOKUP_BITS)
    return np.exp(c * hi).astype(np.float64), np.exp(c * lo).astype(np.float64)


def gaussian_of_exact(S, h: float, lookup: Optional[bool] = None) -> None:
    """``S <- exp(-S / (2 h^2))`` in place, for a float64 array ``S`` that holds exact
    non-negative integers (the squared distances of inputs on the integer grid; ``h``
    in grid units).

    ``lookup`` (None: :func:`lookup_exp_faster`): as ``HI[a] LO[b]`` for
    ``k = a 2^LOOKUP_BITS + b``, two gathers from tables in cache, each entry rounded once
    from extended precision: within about 1.5 units in the last place of the exact value
    (NumPy's exp of the scaled argument carries the argument's rounding too, up to about
    2|x| units), and on a CPU whose NumPy has no SIMD float64 exp (AVX2: 5.9 ns an entry on a
    Zen 3 core) about twice as fast; else NumPy's exp, as off the grid."""
    if lookup is None:
        lookup = lookup_exp_faster()
    top = float(S.max()) if lookup and S.size else 0.0  # NumPy's exp needs no pass for it
    if not lookup or top >= _LOOKUP_MAX:
        S *= -1.0 / (2.0 * h * h)
        np.exp(S, out=S)
        return
    k = S.astype(np.int64)
    hi_len = 1 << max(1, (int(top) >> LOOKUP_BITS).bit_length())  # a power of two
    hi, lo = _exp_tables(float(h), hi_len)
    np.take(hi, np.right_shift(k, LOOKUP_BITS), out=S, mode="clip")
    np.bitwise_and(k, (1 << LOOKUP_BITS) - 1, out=k)
    S *= np.take(lo, k, mode="clip")


_LOOKUP_LOCK = threading.Lock()


def lookup_exp_faster() -> bool:
    """Whether :func:`gaussian_of_exact`'s table lookups beat NumPy's exp on this CPU,
    measured once per process on 64K entries (a few ms; the best of five each). One thread
    measures, the others wait for its answer: every tile of a solve finishes the same way
    (:func:`to_integer_grid` asks first, before any tile work starts)."""
    with _LOOKUP_LOCK:
        return _lookup_measured()


@functools.lru_cache(maxsize=1)
def _lookup_measured() -> bool:
    rng = np.random.default_rng(0)
    k = np.floor(rng.random((64, 1024)) * 2.0 ** 26)
    S = np.empty_like(k)
    best = {}
    for way in (True, False):
        times = []
        for _ in range(5):
            S[...] = k
            t0 = time.perf_counter()
            gaussian_of_exact(S, 4000.0, lookup=way)
            times.append(time.perf_counter() - t0)
        best[way] = min(times)
    return best[True] < best[False]


def exact_products(P, Q, rows: int) -> np.ndarray:
    """``P @ Q.T`` in float64 for a few rows ``P`` of integer-grid float32 inputs (those
    past float32's exact range), ``Q`` cast ``rows`` rows at a time: exact while the
    integer partial sums stay below 2^53 (8-bit pixels: always; as the float64 GEMM
    otherwise)."""
    out = np.empty((P.shape[0], Q.shape[0]))
    P64 = P.astype(np.float64)
    for s in range(0, Q.shape[0], rows):
        out[:, s:s + rows] = P64 @ Q[s:s + rows].astype(np.float64).T
    return out
