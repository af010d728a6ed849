"""Inputs on an integer grid: detecting them and storing them exactly in float32.

8-bit pixels scaled to [0, 1] are the integers ``k / 255``; stored as ``k`` in float32 their
inner products are exact at the float32 GEMM rate while partial sums stay below 2^24 (see
:mod:`kernelfit.kernels`, which uses these helpers through ``Kernel(int_scale=)``).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["integer_grid"]

#: float32 represents every integer of magnitude below 2^24 exactly
_F32_EXACT = float(2 ** 24)
#: the grids tried by :func:`integer_grid`: integer data, and 8-bit values scaled to [0, 1]
_GRID_SCALES = (1.0, 255.0)


def integer_grid(X, scales=_GRID_SCALES) -> Optional[float]:
    """The first ``s`` of ``scales`` for which ``X * s`` is all integers of magnitude below
    2^24 (exact in float32), else None. NumPy arrays only (None for device arrays).

    A seeded sample of 256 rows is tested first, so data off the grid are rejected after
    a few cheap passes over that sample; the whole array is checked before a scale is
    returned.
    """
    if not isinstance(X, np.ndarray) or X.size == 0 or X.dtype.kind != "f":
        return None
    rows = np.random.default_rng(0).choice(X.shape[0], size=min(256, X.shape[0]),
                                           replace=False)
    for s in scales:
        if all(_on_grid(part, s) for part in (X[np.sort(rows)], X)):
            return float(s)
    return None


def _grid_float32(X, s: float, chunk: int = 1 << 15) -> Optional[np.ndarray]:
    """``X * s`` in float32 when it is all integers of magnitude below 2^24, else None;
    one pass in row chunks of about ``chunk`` values that stay in cache (the first
    off-grid chunk stops it): 12 ms for 10,000 x 784, where scaling the whole array, then
    checking it, then casting it took 69 ms."""
    out = np.empty(X.shape, dtype=np.float32)
    rows = max(1, chunk // max(X.shape[1], 1))
    G = np.empty((rows, X.shape[1]))
    R = np.empty_like(G)
    for a in range(0, X.shape[0], rows):
        b = min(a + rows, X.shape[0])
        g, r = G[:b - a], R[:b - a]
        np.multiply(X[a:b], s, out=g)
        np.rint(g, out=r)
        if not (np.array_equal(g, r) and np.abs(r, out=r).max() < _F32_EXACT):
            return None
        out[a:b] = g
    return out


def _on_grid(X, s: float, rows: int = 4096) -> bool:
    for a in range(0, X.shape[0], rows):  # row chunks: a few MiB of temporaries
        G = X[a:a + rows] * s
        if not (np.abs(G).max() < _F32_EXACT and np.array_equal(G, np.rint(G))):
            return False
    return True
