"""Low-rank deflation of mixed precision's float32 factor.

A Gaussian or Laplacian Gram matrix has all its entries positive, around a common level
(MNIST with h = 5: mean 0.14 against the diagonal's 1; Gabor features: 0.59), and much of K
is a smooth low-rank part. The float32 factor's error grows with the entries it rounds, so
mixed precision factors K minus that part instead, and adds it back exactly:

- the part is the Nystrom part of a few landmarks Z: the mean of the training rows and
  k-means centres of a seeded sample of them (:func:`nystrom_landmarks`),
  ``U = k(X, Z) L_Z^-T`` with ``L_Z L_Z^T = k(Z, Z)``. ``K - U U^T`` is the Schur
  complement of Z in the Gram matrix of (X, Z), positive definite when the kernel is
  strictly positive definite (gaussian, laplacian) and no landmark is one of the rows
  (checked: ``k(x, z) < NEAR k(z, z)`` for every row); landmarks that add little to the
  others (a pivot of k(Z, Z) below ``PIVOT_MIN``) are left out, so L_Z is well conditioned;
- the float32 tiles hold ``K - U U^T`` rounded once from float64
  (:func:`kernelfit.solvers.products.build_gram`'s ``low_rank``); the kept copy, the
  products and the residual stay those of K itself;
- the preconditioner is ``M = L L^T + U U^T``, applied by the Woodbury identity
  (:class:`Deflated`): ``M^-1 R = S (R - U C^-1 W^T R)`` with ``S = (L L^T)^-1``,
  ``W = S U`` and ``C = I + U^T W`` (W made by each application's first sweep; the
  float32 one takes the float64 one's where its own is too far off). It is symmetric, so
  CG's theory holds.

Measured on a 2-core Zen 5 (``benchmarks/results/mnist_full_deflation_rank_zen5.json``,
``deflation_rank_zen5.json``): the design card's command (Gabor features of MNIST,
n = 60,000) refines in 7 passes instead of 18 with the mean alone, the residual falling 35
to 190 times a pass instead of 2 to 15 times (238-249 s against 288 s end to end); at
n = 20,000 ranks 1, 8, 32 and 64 took 7, 4, 4 and 3 passes on Gabor features and 3, 2, 2
and 2 on MNIST's pixels.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import numpy as np

from ..backend import Backend
from ..kernels import Kernel

__all__ = ["nystrom_landmarks", "planned_rank", "Deflated", "LANDMARK_KERNELS", "NEAR",
           "JOINT_C", "C_MIN", "ENABLED", "RANK", "PIVOT_MIN", "LANDMARK_SEED"]

#: deflate the float32 factors of mixed precision (in memory, out of core, on Dask); False only
#: for before/after comparisons (``benchmarks/bench_deflation.py``)
ENABLED = True
#: the most landmarks (the rows' mean and RANK - 1 k-means centres); also at most one per
#: SAMPLE_PER_LANDMARK rows, so small problems get fewer
RANK = 32
#: rows of the seeded k-means sample per landmark
SAMPLE_PER_LANDMARK = 64
#: Lloyd iterations of the k-means (seeded start: distinct sampled rows)
KMEANS_ITERATIONS = 8
#: the seed of the k-means sample and start (recorded)
LANDMARK_SEED = 0
#: a landmark whose pivot in the landmarks' own Gram matrix (greedy pivoted Cholesky, the
#: mean first) is below this share of k(z, z) adds little to the others and is left out,
#: so L_Z, whose inverse makes U, stays well conditioned
PIVOT_MIN = 1e-3

#: strictly positive definite kernels with positive values: the ones deflated
LANDMARK_KERNELS = ("gaussian", "laplacian")
#: a landmark this near a row (k(x, z) >= NEAR k(z, z)) would leave K - U U^T nearly
#: singular: it is left out
NEAR = 0.999
#: the first application subtracts the low-rank part after the solve (one sweep for both
#: S R and W) when c, the largest eigenvalue of C = I + U^T S U, is at most this. The
#: cancellation magnifies that solve's rounding by up to about c: on MNIST (rank one,
#: c = 72, n = 20,000) the first residual was the same either way (2.0e-5 and 2.2e-5); at
#: c ~ 1e5 (a shifted factor) it lost the gain
JOINT_C = 1e3
#: C = I + U^T S U is at least I for a positive definite S: a computed C whose smallest
#: eigenvalue is below this came from a W too far off (a float32 solve's), and the float64
#: application's W is used instead
C_MIN = 0.5
#: rows of X per chunk of the landmarks' kernel columns (a float64 copy of about 4 MiB,
#: reused: fresh memory is costly to touch on some VMs)
_CHUNK_BYTES = 1 << 22


def planned_rank(n: int, rank: Optional[int] = None) -> int:
    """The landmarks asked for with ``n`` rows: ``rank`` (default :data:`RANK`), at most one
    per :data:`SAMPLE_PER_LANDMARK` rows, at least one (the mean)."""
    return max(1, min(RANK if rank is None else int(rank), n // SAMPLE_PER_LANDMARK))


def _kmeans_centres(S: np.ndarray, k: int, rng) -> np.ndarray:
    """``k`` centres of the rows of ``S`` (float64, host) by Lloyd's iterations from ``k``
    distinct rows drawn with ``rng``; a centre left without rows keeps its place."""
    Z = S[rng.choice(S.shape[0], size=k, replace=False)].copy()
    s_sq = np.einsum("ij,ij->i", S, S)
    member = np.zeros((S.shape[0], k))
    for _ in range(KMEANS_ITERATIONS):
        d = s_sq[:, None] + np.einsum("ij,ij->i", Z, Z)[None, :] - 2.0 * (S @ Z.T)
        near = np.argmin(d, axis=1)
        counts = np.bincount(near, minlength=k)
        member[...] = 0.0
        member[np.arange(S.shape[0]), near] = 1.0
        sums = member.T @ S  # one GEMM (np.add.at took 10 ms a call on 2,048 x 784)
        have = counts > 0
        Z[have] = sums[have] / counts[have, None]
    return Z


def _pivoted_selection(G: np.ndarray, first: Optional[int], floor: float):
    """Greedy pivoted Cholesky of the small Gram matrix ``G`` (host float64): the indices
    chosen, in order (``first`` first when given), while the largest remaining pivot is at
    least ``floor``, and the lower factor of ``G`` over them."""
    m = G.shape[0]
    L = np.zeros((m, m))
    piv = np.diag(G).astype(np.float64).copy()
    chosen: list = []
    for k in range(m):
        free = [i for i in range(m) if i not in chosen]
        if not free:
            break
        i = first if (k == 0 and first is not None) else max(free, key=lambda t: piv[t])
        if not piv[i] >= floor:
            break
        L[i, k] = math.sqrt(piv[i])
        rest = [t for t in free if t != i]
        if rest:
            L[rest, k] = (G[rest, i] - L[rest, :k] @ L[i, :k]) / L[i, k]
            piv[rest] -= L[rest, k] ** 2
        chosen.append(i)
    r = len(chosen)
    return chosen, L[np.ix_(chosen, list(range(r)))]


def nystrom_landmarks(kernel: Kernel, X, stats, be: Backend, tiles=np.float32,
                      rank: Optional[int] = None) -> Tuple[Optional[object], dict]:
    """``(U, record)``: the Nystrom part ``U = k(X, Z) L_Z^-T`` (float64, shape (n, r), on
    ``be``) of the landmarks Z, or None with the reason in the record. The candidates: the
    mean of ``X``'s rows, then the k-means centres of a seeded sample of the rows
    (:data:`SAMPLE_PER_LANDMARK` per landmark, :data:`KMEANS_ITERATIONS` iterations,
    :data:`LANDMARK_SEED`), ``rank`` in all (default :data:`RANK`, at most one per
    SAMPLE_PER_LANDMARK rows). Those within :data:`NEAR` of a row are left out, then, by a
    greedy pivoted Cholesky of k(Z, Z) (the mean first), those that add less than
    :data:`PIVOT_MIN` of k(z, z). ``X`` and ``stats`` are in the kernel's input units
    (``kernel.prepare``; computed when None). ``tiles``: the dtype of the tiles to factor;
    only float32 ones are deflated."""
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
    want = planned_rank(n, rank)
    Zc = [be.to_numpy(xp.mean(X, axis=0, dtype=xp.float64))[None, :]]
    sample = 0
    if want > 1:
        rng = np.random.default_rng(LANDMARK_SEED)
        sample = min(n, SAMPLE_PER_LANDMARK * want)
        idx = np.sort(rng.choice(n, size=sample, replace=False))
        S = np.asarray(be.to_numpy(X[xp.asarray(idx)]), dtype=np.float64)
        Zc.append(_kmeans_centres(S, want - 1, rng))
    Z = np.concatenate(Zc, axis=0)
    m = Z.shape[0]
    Zb = xp.asarray(Z)
    kzz = np.asarray(be.to_numpy(kernel.block(Zb, Zb, same=True)), dtype=np.float64)
    Kxz = xp.empty((n, m), dtype=xp.float64)
    rows = max(1, min(n, _CHUNK_BYTES // (8 * max(d, 1))))
    buf = xp.empty((rows, d), dtype=xp.float64)  # one float64 copy of a chunk, reused
    for s in range(0, n, rows):
        e = min(s + rows, n)
        buf[:e - s] = X[s:e]
        kernel.block(buf[:e - s], Zb, a_stats=stats[s:e], out=Kxz[s:e])
    top = np.asarray(be.to_numpy(xp.max(Kxz, axis=0)), dtype=np.float64)
    diag = np.diag(kzz)
    ok = np.isfinite(top) & (diag > 0) & (top < NEAR * diag)
    record = {"candidates": m, "near_a_row": int(m - np.count_nonzero(ok)),
              "seed": LANDMARK_SEED, "sample_rows": sample,
              "kmeans_iterations": KMEANS_ITERATIONS if m > 1 else 0}
    if not ok.any():
        why = ("the mean of the rows is (nearly) one of them" if m == 1 else
               "every landmark is (nearly) one of the rows")
        return None, {"rank": 0, "why": why, **record}
    keep = np.flatnonzero(ok)
    G = kzz[np.ix_(keep, keep)]
    chosen, Lz = _pivoted_selection(G, 0 if ok[0] else None, PIVOT_MIN * float(diag.max()))
    sel = keep[chosen]
    # U = Kxz[:, sel] L_Z^-T; L_Z is well conditioned (pivots >= PIVOT_MIN k(z, z))
    inv = np.linalg.inv(Lz).T
    U = xp.asarray(Kxz[:, xp.asarray(sel)] @ xp.asarray(inv))
    colsum = np.asarray(be.to_numpy(xp.sum(U, axis=0)), dtype=np.float64)
    what = ("mean of the training rows" if len(sel) == 1 and sel[0] == 0 else
            ("the mean of the training rows and " if sel[0] == 0 else "")
            + f"k-means centres of {sample:,} seeded rows")
    return U, {"rank": len(sel), "landmark": what, **record,
               "dependent": int(len(keep) - len(sel)),
               "max_k_row_landmark": float(np.max(top[sel] / diag[sel])),
               "mean_entry_removed": float(colsum @ colsum) / float(n) ** 2}


class Deflated:
    """``R -> M^-1 R`` for ``M = L L^T + U U^T``, given one application ``p`` of
    ``S = (L L^T)^-1`` (host arrays in and out), by the Woodbury identity:
    ``M^-1 R = S (R - U C^-1 W^T R)`` with ``W = S U`` and ``C = I + U^T W``.

    The low-rank part leaves R in float64 before the solve. Subtracting it after,
    ``S R - W C^-1 W^T R``, cancels two terms that each carry the solve's error, by about
    c, C's largest eigenvalue: in float32 that lost the whole gain where K is nearly
    singular (c ~ 1e5). The first application makes W with ``p`` in the same sweep as
    S R (U's columns appended) and uses that form when c <= ``JOINT_C``; else it sweeps
    again. With a ``fallback`` (a :class:`Deflated` whose ``p`` is the float64 solve, for a
    float32 ``p``), W and C come from it instead (one sweep of its ``p`` over U) where the
    C that ``p`` made is not at least ``C_MIN`` I (C >= I when S is positive definite: a
    W too far off) or c > JOINT_C (the Woodbury part then cancels that W's error by about
    c: digits with a wide Gaussian, c ~ 3e6, refined no further than 1e-7 with a float32
    W). ``c`` is None until the first application; ``w_from`` says which made W.
    """

    def __init__(self, U, p: Callable, fallback: Optional["Deflated"] = None):
        U = np.asarray(U, dtype=np.float64)
        self.u = U[:, None] if U.ndim == 1 else U
        self.p = p
        self.fallback = fallback
        self.w: Optional[np.ndarray] = None
        self.c: Optional[float] = None
        self.w_from: Optional[str] = None
        self._cinv: Optional[np.ndarray] = None

    def _make(self, R=None):
        """W, C^-1 and c from one sweep of ``p`` over U (and ``R`` before it): returns
        ``(S R or None, whether C is at least C_MIN I with c <= JOINT_C)``."""
        r = self.u.shape[1]
        Z = np.asarray(self.p(self.u if R is None else np.hstack([R, self.u])),
                       dtype=np.float64)
        self.w = Z[:, -r:].copy()
        self.w_from = "own"
        SR = None if R is None else Z[:, :-r]
        if not np.isfinite(self.w).all():  # a solve gone wrong: no low-rank part then
            self.w[...] = 0.0
            self.c, self._cinv = float("nan"), np.zeros((r, r))
            return SR, False
        C = np.eye(r) + self.u.T @ self.w
        C = 0.5 * (C + C.T)
        eig = np.linalg.eigvalsh(C)
        self.c = float(eig[-1])
        self._cinv = np.linalg.inv(C)
        ok = bool(eig[0] >= C_MIN and self.c <= JOINT_C)
        return SR, ok

    def _part(self, R):
        return self._cinv @ (self.w.T @ R)

    def __call__(self, R):
        R = np.asarray(R, dtype=np.float64)
        if self.w is None:
            SR, ok = self._make(R)
            if not ok and self.fallback is not None:
                fb = self.fallback
                if fb.w is None:
                    fb._make()
                self.w, self.c, self._cinv = fb.w, fb.c, fb._cinv
                self.w_from = "fallback"
            elif self.c <= JOINT_C:
                return SR - self.w @ self._part(R)
        return np.asarray(self.p(R - self.u @ self._part(R)), dtype=np.float64)
