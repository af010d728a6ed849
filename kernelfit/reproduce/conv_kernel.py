"""Exact Gaussian-kernel solve on Gram matrices accumulated over random-conv filter chunks.

The random-conv features at 32,000 filters (256,000 numbers per image) are never stored:
:func:`kernelfit.features.random_conv.accumulate_gram` leaves ``G = F F^T`` (float32),
the squared norms (float64) and the test cross-products. Here they become the Gaussian
kernel in place, ``K = exp(-(|a|^2 + |b|^2 - 2 <a, b>) / (2 h^2))`` (each row block
expanded in float64, clamped at 0), and ``K alpha = Y`` is solved exactly: one float32
Cholesky in place (LAPACK ``spotrf`` writes the factor into one triangle and leaves the
other, with the diagonal saved aside, as the kernel itself), then float64 preconditioned
CG (:func:`kernelfit.solvers.mixed.refine`) whose products use that kept triangle in
float64 row blocks. The residual is float64, against the stored kernel matrix.
Memory: one ``n x n`` float32 matrix plus row blocks.
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import NotPositiveDefiniteError

__all__ = ["median_from_gram", "gaussian_in_place", "solve_stored", "predict_stored"]

_ROWS = 512


def median_from_gram(G, sq, *, sample: int = 1000, seed: int = 0) -> float:
    """Median pairwise distance of a seeded sample of rows, from the Gram matrix."""
    n = G.shape[0]
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, size=min(n, sample), replace=False))
    sub = np.asarray(G[np.ix_(idx, idx)], dtype=np.float64)
    d2 = sq[idx][:, None] + sq[idx][None, :] - 2.0 * sub
    iu = np.triu_indices(len(idx), 1)
    return float(np.sqrt(np.maximum(np.median(d2[iu]), 0.0)))


def gaussian_in_place(S, sq_rows, sq_cols, bandwidth: float, *, same: bool = False) -> None:
    """Turn inner products ``S`` (float32) into Gaussian kernel values, in place."""
    scale = -1.0 / (2.0 * float(bandwidth) ** 2)
    for r0 in range(0, S.shape[0], _ROWS):
        r1 = min(S.shape[0], r0 + _ROWS)
        blk = np.asarray(S[r0:r1], dtype=np.float64)
        blk *= -2.0
        blk += sq_rows[r0:r1, None]
        blk += sq_cols[None, :]
        np.maximum(blk, 0.0, out=blk)
        blk *= scale
        np.exp(blk, out=blk)
        if same:  # distance exactly 0 on the diagonal
            i = np.arange(r0, min(r1, S.shape[1]))
            blk[i - r0, i] = 1.0
        S[r0:r1] = blk


def _matvec_kept(K, diag):
    """``V -> K V`` in float64 from the strict lower triangle of ``K`` and ``diag``."""
    n = K.shape[0]

    def mv(V):
        V = np.asarray(V, dtype=np.float64)
        out = diag[:, None] * V
        for r0 in range(0, n, _ROWS):
            r1 = min(n, r0 + _ROWS)
            if r0:
                L = np.asarray(K[r0:r1, :r0], dtype=np.float64)
                out[r0:r1] += L @ V[:r0]
                out[:r0] += L.T @ V[r0:r1]
            D = np.tril(np.asarray(K[r0:r1, r0:r1], dtype=np.float64), -1)
            out[r0:r1] += D @ V[r0:r1] + D.T @ V[r0:r1]
        return out

    return mv


def solve_stored(K, Y, *, tol: float = 1e-10, max_iter: int = 30) -> dict:
    """Solve ``K alpha = Y`` for a symmetric float32 ``K`` (C-ordered, overwritten).

    Returns ``alpha``, ``K_alpha``, ``relative_residual`` (float64), ``rkhs_norm``,
    ``refinement_history``, ``converged`` and the seconds of the factorization and the
    refinement.
    """
    from scipy.linalg import lapack

    from ..solvers.mixed import refine

    n = K.shape[0]
    diag = np.array(np.diagonal(K), dtype=np.float64)
    t0 = time.perf_counter()
    KT = K.T  # Fortran-ordered view: the factor goes into K's upper triangle
    c, info = lapack.spotrf(KT, lower=1, overwrite_a=1, clean=0)
    if info != 0:
        raise NotPositiveDefiniteError(
            f"the float32 Cholesky of the {n} x {n} kernel stopped at pivot {info}: K is not "
            "numerically positive definite in float32 (bandwidth too large for these "
            "features)", index=int(info) - 1)
    if not np.shares_memory(c, K):  # pragma: no cover - LAPACK wrapper copied
        K.T[...] = c
    t_factor = time.perf_counter() - t0

    def precond(R):
        x, inf = lapack.spotrs(KT, np.asarray(R, dtype=np.float32), lower=1)
        return np.asarray(x, dtype=np.float64)

    t0 = time.perf_counter()
    out = refine(_matvec_kept(K, diag), precond, np.asarray(Y, dtype=np.float64), tol=tol,
                 max_iter=max_iter, method="cg")
    alpha, KA = out["alpha"], out["K_alpha"]
    Yf = np.asarray(Y, dtype=np.float64)
    residual = float(np.linalg.norm(KA - Yf) / np.linalg.norm(Yf))
    return {"alpha": alpha, "K_alpha": KA, "relative_residual": residual,
            "rkhs_norm": float(np.sqrt(max(float(np.sum(alpha * KA)), 0.0))),
            "refinement_history": [float(h) for h in out["history"]],
            "converged": bool(out["converged"]), "factor_seconds": t_factor,
            "refine_seconds": time.perf_counter() - t0,
            "factor_gflops_per_s": n ** 3 / 3 / max(t_factor, 1e-9) / 1e9}


def predict_stored(Kc, alpha):
    """``Kc alpha`` in float64 row blocks (``Kc`` the float32 test-train kernel)."""
    out = np.empty((Kc.shape[0], alpha.shape[1]))
    for r0 in range(0, Kc.shape[0], _ROWS):
        r1 = min(Kc.shape[0], r0 + _ROWS)
        out[r0:r1] = np.asarray(Kc[r0:r1], dtype=np.float64) @ alpha
    return out
