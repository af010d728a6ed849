r"""SGD on underdetermined least squares and kernel SGD in alpha-space (Zhang et al., Sec. 5).

Least squares with :math:`X\in\mathbb R^{n\times d}`, :math:`d > n`, rank :math:`n`:
the per-example step on :math:`\tfrac12(x_i^\top w - y_i)^2` is

.. math::  w \leftarrow w - \eta\,(x_i^\top w - y_i)\,x_i ,

so every update lies in :math:`\operatorname{span}\{x_i\}` (the row space of :math:`X`).
From :math:`w_0` the iterates stay in :math:`w_0 + \operatorname{row}(X)`; the only
interpolant there is :math:`X^+ y + P_{\mathrm{null}}\, w_0`, and from :math:`w_0 = 0` it is the
minimum-norm solution :math:`X^+ y`.

With :math:`e = w - w^\star` in the row space, :math:`\Sigma = X^\top X / n` and rows drawn
uniformly, :math:`\mathbb E\|e_{t+1}\|^2 \le (1 - \eta(2-\eta R^2)\lambda_{\min}^+(\Sigma))
\|e_t\|^2` with :math:`R = \max_i\|x_i\|` (for :math:`\eta < 2/R^2`).

Kernel SGD keeps :math:`w = \sum_j \alpha_j \phi(x_j)`: the step on example :math:`i` changes
only :math:`\alpha_i \leftarrow \alpha_i - \eta\,((K\alpha)_i - y_i)`. One cyclic pass
(:math:`i = 1..n`) is exactly a successive over-relaxation sweep on :math:`K\alpha = y` with
relaxation :math:`\omega_i = \eta K_{ii}`; :func:`kernel_sgd` runs the sweep with two BLAS
triangular operations per epoch, :func:`kernel_sgd_loop` the literal per-example loop.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

__all__ = ["least_squares_sgd", "row_space_distance", "min_norm_solution", "null_projection",
           "kernel_sgd", "kernel_sgd_loop", "sgd_rate_bound"]


def _check_problem(X, y):
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or 0 in X.shape:
        raise InputError(f"X must be a non-empty 2-D array, got shape {X.shape}")
    if y.shape != (X.shape[0],):
        raise InputError(f"labels have shape {y.shape}, expected ({X.shape[0]},)")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise InputError("X and y must be finite (no NaN or inf)")
    return X, y


def min_norm_solution(X, y):
    """:math:`X^+ y` via the SVD (``numpy.linalg.lstsq``)."""
    X, y = _check_problem(X, y)
    return np.linalg.lstsq(X, y, rcond=None)[0]


def _row_basis(X):
    """An orthonormal basis of the row space of ``X``, also where its rows are dependent
    (duplicate images): the right singular vectors above the rank cutoff (a QR of X^T
    spanned spurious directions then)."""
    _, s, Vt = np.linalg.svd(X, full_matrices=False)
    if s.size == 0:
        return np.zeros((X.shape[1], 0))
    keep = s > max(X.shape) * np.finfo(np.float64).eps * s[0]
    return Vt[keep].T


def null_projection(X, v):
    """:math:`P_{\\mathrm{null}(X)} v = v - Q Q^\\top v` with ``Q`` an orthonormal row-space basis."""
    Q = _row_basis(np.asarray(X, dtype=np.float64))
    return v - Q @ (Q.T @ v)


def row_space_distance(X, W):
    """Distance of each column of ``W`` (or of the vector) to the row space of ``X``."""
    Q = _row_basis(np.asarray(X, dtype=np.float64))
    W = np.asarray(W, dtype=np.float64)
    R = W - Q @ (Q.T @ W)
    return np.linalg.norm(R, axis=0)


def sgd_rate_bound(X, eta):
    r"""Per-step bound :math:`1 - \eta(2-\eta R^2)\lambda^+_{\min}(X^\top X/n)` on the expected
    squared-error contraction (uniform sampling)."""
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    s = np.linalg.svd(X, compute_uv=False)
    lam = (s[s > s[0] * 1e-12][-1] ** 2) / n
    R2 = float(np.max(np.sum(X * X, axis=1)))
    return 1.0 - eta * (2.0 - eta * R2) * lam, lam, R2


def least_squares_sgd(X, y, *, eta=None, epochs=100, w0=None, seed=0, record_every=1,
                      target=None, tol=0.0):
    r"""Plain SGD (uniform sampling with replacement, batch 1) on :math:`\tfrac12\|Xw-y\|^2/n`.

    ``eta`` defaults to :math:`1/R^2`. Returns ``(w, history)``; ``history`` holds per
    recorded epoch the iterate (columns of ``history['W']``), and, when ``target`` is given,
    the relative distance to it. Stops early once that distance is at most ``tol``.
    """
    X, y = _check_problem(X, y)
    n, d = X.shape
    rng = np.random.default_rng(seed)
    R2 = float(np.max(np.sum(X * X, axis=1)))
    if eta is None:
        eta = 1.0 / R2
    if not (eta > 0):
        raise InputError(f"step size must be positive, got {eta}")
    w = np.zeros(d) if w0 is None else np.array(w0, dtype=np.float64).reshape(-1).copy()
    if w.shape != (d,):
        raise InputError(f"w0 must have length d = {d}")
    rows = [X[i] for i in range(n)]
    ys = y.tolist()
    snaps, errs, epochs_done = [w.copy()], [], 0
    tnorm = None if target is None else max(np.linalg.norm(target), 1e-300)
    if target is not None:
        errs.append(np.linalg.norm(w - target) / tnorm)
    for ep in range(epochs):
        for i in rng.integers(0, n, size=n).tolist():
            xi = rows[i]
            w -= (eta * (xi @ w - ys[i])) * xi
        epochs_done = ep + 1
        if (ep + 1) % record_every == 0:
            snaps.append(w.copy())
            if target is not None:
                errs.append(np.linalg.norm(w - target) / tnorm)
                if errs[-1] <= tol:
                    break
    return w, {"W": np.array(snaps).T, "rel_err": np.array(errs), "eta": eta,
               "epochs": epochs_done, "seed": seed}


def kernel_sgd(K, y, *, eta=1.0, epochs=100, alpha0=None, target=None, tol=0.0):
    r"""Cyclic kernel SGD, epoch by epoch as an SOR sweep (exactly the per-example loop).

    With :math:`K = L + D + U` (strict lower, diagonal, strict upper), one pass is
    :math:`(I + \eta L)\alpha^+ = \alpha - \eta\,(D + U)\alpha + \eta y` — the
    per-example updates in order, solved by one triangular solve.
    """
    from scipy.linalg import solve_triangular

    K = np.asarray(K, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = K.shape[0]
    if K.shape != (n, n) or y.shape != (n,):
        raise InputError("K must be n x n and y of length n")
    M = np.tril(K, -1) * eta
    M[np.diag_indices(n)] = 1.0
    DU = np.triu(K)
    alpha = np.zeros(n) if alpha0 is None else np.array(alpha0, dtype=np.float64)
    errs = []
    tnorm = None if target is None else max(np.linalg.norm(target), 1e-300)
    if target is not None:
        errs.append(np.linalg.norm(alpha - target) / tnorm)
    ep = 0
    for ep in range(1, epochs + 1):
        rhs = alpha - eta * (DU @ alpha) + eta * y
        alpha = solve_triangular(M, rhs, lower=True, unit_diagonal=True, check_finite=False)
        if target is not None:
            errs.append(np.linalg.norm(alpha - target) / tnorm)
            if errs[-1] <= tol:
                break
    return alpha, {"rel_err": np.array(errs), "eta": eta, "epochs": ep}


def kernel_sgd_loop(K, y, *, eta=1.0, epochs=1, alpha0=None):
    """The literal per-example kernel SGD loop (cyclic order), for cross-checking."""
    K = np.asarray(K, dtype=np.float64)
    n = K.shape[0]
    alpha = np.zeros(n) if alpha0 is None else np.array(alpha0, dtype=np.float64)
    for _ in range(epochs):
        for i in range(n):
            alpha[i] -= eta * (K[i] @ alpha - y[i])
    return alpha
