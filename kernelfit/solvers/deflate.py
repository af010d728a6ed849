"""Rank-one deflation of mixed precision's float32 factor.

A Gaussian or Laplacian Gram matrix has all its entries positive, around a common level
(MNIST with h = 5: mean 0.14 against the diagonal's 1), and most of that level is one
smooth rank-one part. The float32 factor's error grows with the entries it rounds, so
mixed precision factors K minus that part instead, and adds it back exactly:

- the part is the Nystrom part of one landmark z, the mean of the training rows:
  ``u = k(X, z) / sqrt(k(z, z))``. ``K - u u^T`` is the Schur complement of z in the Gram
  matrix of (X, z), positive definite when the kernel is strictly positive definite
  (gaussian, laplacian) and z is none of the rows (checked: ``k(x, z) < NEAR k(z, z)``);
- the float32 tiles hold ``K - u u^T`` rounded once from float64
  (:func:`kernelfit.solvers.products.build_gram`'s ``low_rank``); the kept copy, the
  products and the residual stay those of K itself;
- the preconditioner is ``M = L L^T + u u^T``, applied by Sherman-Morrison
  (:class:`Deflated`): ``M^-1 R = S (R - u (w^T R) / c)`` with ``S = (L L^T)^-1``,
  ``w = S u`` and ``c = 1 + u^T w`` (w made once, with the first solve). It is
  symmetric, so CG's theory holds.

Measured with kernelfit's defaults (MNIST, Gaussian h = 5; ``benchmarks/bench_deflation.py``,
``benchmarks/results/deflation_ab_zen4_avx512.json``): the residual after the first pass
falls 1.8e-5 -> 8.4e-6 at n = 10,000 and 3.3e-5 -> 2.2e-5 at n = 20,000, where the
refinement needs 3 iterations instead of 4 to reach 1e-12. In a prototype (SciPy's
potrf, the factor applied in float64), 16 or 64 landmarks saved no further iteration at
n = 20,000.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import numpy as np

from ..backend import Backend
from ..kernels import Kernel

__all__ = ["mean_landmark", "Deflated", "LANDMARK_KERNELS", "NEAR", "JOINT_C", "ENABLED"]

#: deflate the float32 factors of mixed precision (in memory, out of core, on Dask); False only
#: for before/after comparisons (``benchmarks/bench_deflation.py``)
ENABLED = True

#: strictly positive definite kernels with positive values: the ones deflated
LANDMARK_KERNELS = ("gaussian", "laplacian")
#: a landmark this near a row (k(x, z) >= NEAR k(z, z)) would leave K - u u^T nearly
#: singular: no deflation then
NEAR = 0.999
#: the first application subtracts the rank-one part after the solve (one sweep for
#: both S R and w) when c = 1 + u^T S u is at most this. The cancellation magnifies that
#: solve's rounding by up to about c: on MNIST (c = 72, n = 20,000) the first residual was
#: the same either way (2.0e-5 and 2.2e-5); at c ~ 1e5 (a shifted factor) it lost the gain
JOINT_C = 1e3
#: rows of X per chunk of the landmark's kernel column (a float64 copy of about 4 MiB,
#: reused: fresh memory is costly to touch on some VMs)
_CHUNK_BYTES = 1 << 22


def mean_landmark(kernel: Kernel, X, stats, be: Backend,
                  tiles=np.float32) -> Tuple[Optional[object], dict]:
    """``(u, record)``: the landmark column ``u = k(X, z) / sqrt(k(z, z))`` (float64,
    shape (n, 1), on ``be``) with z the mean of ``X``'s rows, or None with the reason in
    the record. ``X`` and ``stats`` are in the kernel's input units (``kernel.prepare``;
    computed when None). ``tiles``: the dtype of the tiles to factor; only float32 ones
    are deflated."""
    if np.dtype(tiles) != np.float32:
        return None, {"rank": 0, "why": f"{np.dtype(tiles).name} tiles"}
    if not ENABLED:
        return None, {"rank": 0, "why": "turned off"}
    if kernel.name not in LANDMARK_KERNELS:
        return None, {"rank": 0, "why": f"only {' and '.join(LANDMARK_KERNELS)} kernels "
                                        f"are deflated, not {kernel.name}"}
    n, d = X.shape
    if n < 2:
        return None, {"rank": 0, "why": "fewer than two rows"}
    xp = be.xp
    if stats is None:
        stats = kernel.prepare(X)
    z = xp.mean(X, axis=0, dtype=xp.float64)[None, :]
    kzz = float(be.to_numpy(kernel.block(z, z, same=True))[0, 0])
    u = xp.empty((n, 1), dtype=xp.float64)
    rows = max(1, min(n, _CHUNK_BYTES // (8 * max(d, 1))))
    buf = xp.empty((rows, d), dtype=xp.float64)  # one float64 copy of a chunk, reused
    for s in range(0, n, rows):
        e = min(s + rows, n)
        buf[:e - s] = X[s:e]
        kernel.block(buf[:e - s], z, a_stats=stats[s:e], out=u[s:e])
    k_max = float(xp.max(u))
    if not (math.isfinite(k_max) and kzz > 0) or k_max >= NEAR * kzz:
        return None, {"rank": 0, "why": "the mean of the rows is (nearly) one of them"}
    u /= math.sqrt(kzz)
    return u, {"rank": 1, "landmark": "mean of the training rows",
               "max_k_row_landmark": k_max / kzz,
               "mean_entry_removed": float(xp.mean(u)) ** 2}


class Deflated:
    """``R -> M^-1 R`` for ``M = L L^T + u u^T``, given one application ``p`` of
    ``S = (L L^T)^-1`` (host arrays in and out), by Sherman-Morrison:
    ``M^-1 R = S (R - u (w^T R) / c)`` with ``w = S u`` and ``c = 1 + u^T w``.

    The rank-one part leaves R in float64 before the solve. Subtracting it after,
    ``S R - w (w^T R) / c``, cancels two terms that each carry the solve's error, by about
    c: in float32 that lost the whole gain where K is nearly singular (c ~ 1e5). The first
    application makes w in the same sweep as S R (one column more: at n = 60,000 a sweep of
    its own took 4.7 s) and uses that form when c <= ``JOINT_C``; else it sweeps again.
    ``c`` is None until then."""

    def __init__(self, u, p: Callable):
        self.u, self.p = np.asarray(u, dtype=np.float64), p
        self.w: Optional[np.ndarray] = None
        self.c: Optional[float] = None

    def __call__(self, R):
        R = np.asarray(R, dtype=np.float64)
        if self.w is None:
            Z = np.asarray(self.p(np.hstack([R, self.u])), dtype=np.float64)
            self.w = Z[:, -1:].copy()
            self.c = 1.0 + float(self.u[:, 0] @ self.w[:, 0])
            if self.c <= JOINT_C:
                return Z[:, :-1] - self.w @ ((self.w.T @ R) / self.c)
        return np.asarray(self.p(R - self.u @ ((self.w.T @ R) / self.c)), dtype=np.float64)
