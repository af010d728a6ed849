r"""Kernel-trick identity for the minimum-norm interpolant.

**Statement.** For a feature matrix :math:`\Phi\in\mathbb R^{n\times D}` of rank n
(:math:`D\ge n`), the minimum-norm solution of :math:`\Phi w=y` is

.. math::  w^\star = \Phi^+ y = \Phi^\top(\Phi\Phi^\top)^{-1}y = \Phi^\top\alpha,\qquad K\alpha=y,
           \ K=\Phi\Phi^\top,

so its predictions :math:`\phi(x)^\top w^\star = k(x,\cdot)^\top K^{-1}y` are the kernel
solution's.

**Numeric check.** Random ReLU features (:math:`D=4n`) of an MNIST subset (or synthetic data):
SVD min-norm solution vs :math:`\Phi^\top K^{-1}y` (Cholesky), and predictions on held-out
points, relative differences at most 1e-8.

**Symbolic check.** :math:`G=A^\top(AA^\top)^{-1}` for a symbolic 2x3 :math:`A` satisfies the
four Moore-Penrose conditions (sympy).
"""

from __future__ import annotations


import numpy as np

from ._common import CheckResult, Timer, mnist_or_none, note_stand_in, scatter_figure

NAME = "kernel_trick"
TITLE = "Min-norm solution = Phi^T (Phi Phi^T)^{-1} y; predictions = kernel solution's"
STATEMENT = "Phi^+ y = Phi^T (Phi Phi^T)^{-1} y = Phi^T alpha with K alpha = y, K = Phi Phi^T"
TOL = 1e-8


def symbolic_check():
    import sympy as sp

    A = sp.Matrix(2, 3, sp.symbols("a1:7", real=True))
    G = A.T * (A * A.T).inv()
    conds = [A * G * A - A, G * A * G - G, (A * G).T - A * G, (G * A).T - G * A]
    return all(sp.simplify(c) == sp.zeros(*c.shape) for c in conds)


def check(quick=False, data_dir=None, seed=0, n=None, D=None, null_perturbation=0.0, **_):
    """``null_perturbation`` adds that multiple of a unit null-space vector to the claimed
    minimum-norm solution (a test uses it to make the check fail)."""
    from scipy.linalg import cho_factor, cho_solve

    res = CheckResult(NAME, TITLE, STATEMENT)
    rng = np.random.default_rng(seed)
    n = n or (100 if quick else 400)
    D = D or 4 * n
    m = mnist_or_none(data_dir)
    if m is not None:
        X, Xt, src = m[0][:n], m[2][:200], f"MNIST train[:{n}], test[:200]"
    else:
        X, Xt, src = rng.random((n, 784)), rng.random((200, 784)), "synthetic uniform"
        note_stand_in(res, data_dir, f"synthetic uniform [0,1]^784, n={n}")
    G = rng.standard_normal((X.shape[1], D)) / np.sqrt(X.shape[1])
    feat = lambda A: np.maximum(A @ G, 0.0) / np.sqrt(D)  # noqa: E731
    Phi, Phit = feat(X), feat(Xt)
    y = rng.standard_normal(n)
    with Timer() as t_svd:
        w_svd = np.linalg.lstsq(Phi, y, rcond=None)[0]
    if null_perturbation:
        v = rng.standard_normal(D)
        Q = np.linalg.qr(Phi.T)[0]
        v -= Q @ (Q.T @ v)
        w_svd = w_svd + null_perturbation * v / np.linalg.norm(v)
    with Timer() as t_ker:
        K = Phi @ Phi.T
        alpha = cho_solve(cho_factor(K), y)
        w_ker = Phi.T @ alpha
    pred_w = Phit @ w_svd
    pred_k = (Phit @ Phi.T) @ alpha
    rel_w = float(np.linalg.norm(w_svd - w_ker) / np.linalg.norm(w_ker))
    rel_p = float(np.linalg.norm(pred_w - pred_k) / np.linalg.norm(pred_k))
    fit = float(np.linalg.norm(Phi @ w_svd - y) / np.linalg.norm(y))
    res.figures.update(data=src, n=n, D=D, seed=seed, cond_K=float(np.linalg.cond(K)),
                       rel_diff_weights=rel_w, rel_diff_predictions=rel_p,
                       rel_residual_fit=fit, norm_min_norm=float(np.linalg.norm(w_ker)),
                       seconds_svd=t_svd.seconds, seconds_kernel=t_ker.seconds)
    res.criteria["Phi^+ y = Phi^T K^{-1} y (<= 1e-8)"] = rel_w <= TOL
    res.criteria["predictions equal (<= 1e-8)"] = rel_p <= TOL
    res.criteria["sympy: A^T (A A^T)^{-1} is the Moore-Penrose inverse (2x3)"] = symbolic_check()
    res.data = {"pred_w": pred_w, "pred_k": pred_k}
    return res.decide()


def plot(res, out_dir):
    return scatter_figure(res.data["pred_k"], res.data["pred_w"],
                          xlabel="kernel prediction k(x,.)^T K^-1 y",
                          ylabel="feature prediction phi(x)^T Phi^+ y",
                          title=f"rel. diff {res.figures['rel_diff_predictions']:.1e}",
                          out_dir=out_dir, name="kernel_trick.png")
