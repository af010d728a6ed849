"""Exact Gaussian-kernel solve on Gram matrices accumulated over random-conv filter chunks.

The random-conv features at 32,000 filters (256,000 numbers per image) are never stored:
:func:`kernelfit.features.random_conv.accumulate_gram` leaves ``G = F F^T`` (float32),
the squared norms (float64) and the test cross-products. Here they become the Gaussian
kernel in place, ``K = exp(-(|a|^2 + |b|^2 - 2 <a, b>) / (2 h^2))`` (each row block
expanded in float64, clamped at 0), and ``K alpha = Y`` is solved exactly: a blocked float32
Cholesky in place (tile by tile into the lower triangle; the strict upper triangle, with the
diagonal saved aside, stays the kernel itself), then float64 preconditioned CG (:func:`kernelfit.solvers.mixed.refine`) whose products use that kept triangle in
float64 row blocks. The residual is float64, against the stored kernel matrix.
Memory: one ``n x n`` float32 matrix plus row blocks.
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import NotPositiveDefiniteError

__all__ = ["median_from_gram", "gaussian_in_place", "cholesky_lower_tiles", "solve_stored",
           "predict_stored"]

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
    """``V -> K V`` in float64 from the strict upper triangle of ``K`` and ``diag``."""
    n = K.shape[0]

    def mv(V):
        V = np.asarray(V, dtype=np.float64)
        out = diag[:, None] * V
        for r0 in range(0, n, _ROWS):
            r1 = min(n, r0 + _ROWS)
            if r1 < n:
                U = np.asarray(K[r0:r1, r1:], dtype=np.float64)
                out[r0:r1] += U @ V[r1:]
                out[r1:] += U.T @ V[r0:r1]
            D = np.triu(np.asarray(K[r0:r1, r0:r1], dtype=np.float64), 1)
            out[r0:r1] += D @ V[r0:r1] + D.T @ V[r0:r1]
        return out

    return mv


def _blocks(n: int, b: int):
    return [(i, min(n, i + b)) for i in range(0, n, b)]


def cholesky_lower_tiles(K, block: int = 2048) -> None:
    """Blocked Cholesky of the symmetric ``K`` into its lower triangle, in place.

    Only the lower triangle (diagonal included) is written; the strict upper triangle keeps
    the kernel. Every LAPACK/BLAS call sees one ``block x block`` tile (no whole-matrix
    ``potrf``: the bundled OpenBLAS crashes in large multithreaded factorizations on this
    project's CPUs). Raises :class:`NotPositiveDefiniteError` at a non-positive pivot.
    """
    from scipy.linalg import lapack, solve_triangular

    n = K.shape[0]
    bl = _blocks(n, block)
    for k, (k0, k1) in enumerate(bl):
        A = np.array(K[k0:k1, k0:k1], order="F")
        for j0, j1 in bl[:k]:  # left-looking: A_kk -= L_kj L_kj^T
            L = K[k0:k1, j0:j1]
            A -= L @ L.T
        L_kk, info = lapack.spotrf(A, lower=1, clean=1, overwrite_a=1)
        if info != 0:
            raise NotPositiveDefiniteError(
                f"the float32 Cholesky of the {n} x {n} kernel stopped at pivot {k0 + info}: "
                "K is not numerically positive definite in float32 (bandwidth too large for "
                "these features)", index=k0 + int(info) - 1)
        tri = np.tril_indices(k1 - k0)
        K[k0:k1, k0:k1][tri] = L_kk[tri]
        for i0, i1 in bl[k + 1:]:  # L_ik = (A_ik - sum_j L_ij L_kj^T) L_kk^-T
            B = np.array(K[i0:i1, k0:k1])
            for j0, j1 in bl[:k]:
                B -= K[i0:i1, j0:j1] @ K[k0:k1, j0:j1].T
            K[i0:i1, k0:k1] = solve_triangular(L_kk, B.T, lower=True,
                                               check_finite=False).T


def _solve_lower_tiles(K, R, block: int = 2048):
    """``(L L^T)^-1 R`` in float64 from the tiles of ``L`` in the lower triangle of ``K``."""
    from scipy.linalg import solve_triangular

    n = K.shape[0]
    bl = _blocks(n, block)
    Y = np.array(R, dtype=np.float64)
    for k, (k0, k1) in enumerate(bl):
        for j0, j1 in bl[:k]:
            Y[k0:k1] -= np.asarray(K[k0:k1, j0:j1], dtype=np.float64) @ Y[j0:j1]
        Lkk = np.tril(np.asarray(K[k0:k1, k0:k1], dtype=np.float64))
        Y[k0:k1] = solve_triangular(Lkk, Y[k0:k1], lower=True, check_finite=False)
    for k in range(len(bl) - 1, -1, -1):
        k0, k1 = bl[k]
        for i0, i1 in bl[k + 1:]:
            Y[k0:k1] -= np.asarray(K[i0:i1, k0:k1], dtype=np.float64).T @ Y[i0:i1]
        Lkk = np.tril(np.asarray(K[k0:k1, k0:k1], dtype=np.float64))
        Y[k0:k1] = solve_triangular(Lkk, Y[k0:k1], lower=True, trans="T", check_finite=False)
    return Y


def solve_stored(K, Y, *, tol: float = 1e-10, max_iter: int = 30, block: int = 2048) -> dict:
    """Solve ``K alpha = Y`` for a symmetric float32 ``K`` (C-ordered, overwritten).

    The float32 factor goes into the lower triangle (tile by tile); the strict upper
    triangle and the saved diagonal remain the kernel for the float64 products of the
    refinement. Returns ``alpha``, ``K_alpha``, ``relative_residual`` (float64),
    ``rkhs_norm``, ``refinement_history``, ``converged`` and the seconds of the
    factorization and the refinement.
    """
    from ..solvers.mixed import refine

    n = K.shape[0]
    diag = np.array(np.diagonal(K), dtype=np.float64)
    t0 = time.perf_counter()
    cholesky_lower_tiles(K, block)
    t_factor = time.perf_counter() - t0

    t0 = time.perf_counter()
    out = refine(_matvec_kept(K, diag), lambda R: _solve_lower_tiles(K, R, block),
                 np.asarray(Y, dtype=np.float64), tol=tol, max_iter=max_iter, method="cg")
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
