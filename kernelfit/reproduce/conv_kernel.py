"""Exact Gaussian-kernel solve on Gram matrices accumulated over random-conv filter chunks.

The random-conv features at 32,000 filters (256,000 numbers per image) are never stored:
:func:`kernelfit.features.random_conv_gram.accumulate_gram` leaves ``G = F F^T`` (float32),
the squared norms (float64) and the test cross-products. Here they become the Gaussian
kernel in place, ``K = exp(-(|a|^2 + |b|^2 - 2 <a, b>) / (2 h^2))`` (each row block
expanded in float64, clamped at 0), and ``K alpha = Y`` is solved exactly by the solvers'
own code (:func:`kernelfit.solvers.mixed.solve_gram`): their tiled float32 Cholesky in
place, on tiles that are views of the matrix (:func:`gram_tiles`: the factor goes into the
upper triangle; the strict lower triangle, with the diagonal saved aside, stays the kernel
itself), then float64 preconditioned CG whose products use that kept triangle in float64
tiles. The residual is float64, against the stored kernel matrix.
Memory: one ``n x n`` float32 matrix plus tile buffers
(:func:`kernelfit.solvers.plan.plan_gram_solve`).
"""

from __future__ import annotations

import numpy as np

from ..errors import NotPositiveDefiniteError

__all__ = ["median_from_gram", "gaussian_in_place", "gram_tiles", "solve_stored",
           "predict_stored", "BLOCK"]

_ROWS = 512
BLOCK = 2048  #: tile edge of the factorization (every BLAS/LAPACK call sees one tile)


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


def gram_tiles(K, block: int = BLOCK):
    """The tile store (:class:`~kernelfit.solvers.tiles.TiledSymmetric`) of the symmetric
    float32 ``K`` (C-ordered, n x n), made of views: nothing is copied.

    Tile (i, j), i >= j, is the block of K's upper triangle in row block j and column
    block i, transposed (K is symmetric, and the transpose of a C-ordered block is
    Fortran-ordered): the factorization overwrites it with L. The strict lower triangle and
    the diagonal saved aside stay the kernel (``kept``, ``kept_diag``): the float64 K
    products of :func:`kernelfit.solvers.products.stored_kernel_matvec` read them.
    """
    from ..backend import get_backend
    from ..solvers.tiles import TiledSymmetric

    T = TiledSymmetric(K.shape[0], block, K.dtype, get_backend("cpu"))
    T.kept = {}
    for i, (si, ei) in enumerate(T.bounds):
        for j, (sj, ej) in enumerate(T.bounds[: i + 1]):
            T.tiles[i][j] = K[sj:ej, si:ei].T
            if i != j:
                T.kept[(i, j)] = K[si:ei, sj:ej]
    diag = np.array(np.diagonal(K), dtype=np.float64)
    T.kept_diag = [diag[s:e] for s, e in T.bounds]
    return T


def solve_stored(K, Y, *, tol: float = 1e-10, max_iter: int = 30, block: int = BLOCK) -> dict:
    """Solve ``K alpha = Y`` for a symmetric float32 ``K`` (C-ordered, overwritten).

    The solvers' one tiled Cholesky and refinement
    (:func:`kernelfit.solvers.mixed.solve_gram`) on the tiles of :func:`gram_tiles`: the
    float32 factor goes into the upper triangle (tile by tile); the strict lower triangle
    and the saved diagonal remain the kernel for the float64 products of the refinement.
    Returns ``alpha``, ``K_alpha``, ``relative_residual`` (float64), ``rkhs_norm``,
    ``refinement_history``, ``converged`` and the seconds of the factorization and the
    refinement.
    """
    from ..solvers.mixed import solve_gram

    n = K.shape[0]
    try:
        out = solve_gram(gram_tiles(K, block), Y, tol=tol, max_iter=max_iter,
                         refinement="cg", show_progress=False)
    except NotPositiveDefiniteError as exc:
        raise NotPositiveDefiniteError(
            f"the float32 Cholesky of the {n} x {n} kernel stopped at pivot {exc.index + 1}: "
            "K is not numerically positive definite in float32 (bandwidth too large for "
            "these features)", index=exc.index) from None
    alpha, KA = out["alpha"], out["K_alpha"]
    Yf = np.asarray(Y, dtype=np.float64)
    residual = float(np.linalg.norm(KA - Yf) / np.linalg.norm(Yf))
    t_factor = out["factor_seconds"]
    return {"alpha": alpha, "K_alpha": KA, "relative_residual": residual,
            "rkhs_norm": float(np.sqrt(max(float(np.sum(alpha * KA)), 0.0))),
            "refinement_history": [float(h) for h in out["history"]],
            "converged": bool(out["converged"]), "factor_seconds": t_factor,
            "refine_seconds": out["refine_seconds"],
            "factor_gflops_per_s": n ** 3 / 3 / max(t_factor, 1e-9) / 1e9}


def predict_stored(Kc, alpha):
    """``Kc alpha`` in float64 row blocks (``Kc`` the float32 test-train kernel)."""
    out = np.empty((Kc.shape[0], alpha.shape[1]))
    for r0 in range(0, Kc.shape[0], _ROWS):
        r1 = min(Kc.shape[0], r0 + _ROWS)
        out[r0:r1] = np.asarray(Kc[r0:r1], dtype=np.float64) @ alpha
    return out
