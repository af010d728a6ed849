r"""Curvature does not distinguish the global minima of a linear model.

**Statement.** For :math:`L(w)=\frac1{2n}\|Xw-y\|^2` the Hessian
:math:`\nabla^2L(w)=X^\top X/n` does not depend on :math:`w`: at every global minimum
:math:`w^\star+v`, :math:`v\in\operatorname{null}(X)`, it is the same matrix, of rank at most
:math:`n<d`. Flatness therefore cannot tell the minimum-norm solution from any other.

**Numeric check.** Hessians by central differences of the gradient at several distinct global
minima (checked to interpolate): pairwise relative differences at most 1e-6; numerical rank at
most n; also equal to :math:`X^\top X/n`.

**Symbolic check.** The sympy Hessian of the loss for symbolic 2x3 data is free of :math:`w`.
"""

from __future__ import annotations


import numpy as np

from kernelfit.theory.sgd import min_norm_solution, null_projection

from ._common import CheckResult, pyplot, save_figure

NAME = "curvature"
TITLE = "Curvature: the Hessian is the same at every global minimum of a linear model"
STATEMENT = "L(w) = ||Xw - y||^2 / (2n): Hessian X^T X / n for all w; rank <= n < d"


def symbolic_check():
    import sympy as sp

    X = sp.Matrix(2, 3, sp.symbols("x1:7", real=True))
    w = sp.Matrix(sp.symbols("w1:4", real=True))
    y = sp.Matrix(sp.symbols("y1:3", real=True))
    r = X * w - y
    L = (r.T * r)[0] / 4
    H = sp.hessian(L, list(w))
    return all(not (H[i, j].free_symbols & set(w)) for i in range(3) for j in range(3))


def _hessian_fd(grad, w, h=1e-4):
    d = w.size
    H = np.empty((d, d))
    for j in range(d):
        e = np.zeros(d)
        e[j] = h
        H[:, j] = (grad(w + e) - grad(w - e)) / (2 * h)
    return 0.5 * (H + H.T)


def check(quick=False, seed=0, n=None, d=None, n_minima=4, grad=None, **_):
    """``grad(w, X, y)`` overrides the gradient of the loss (default: the linear model's), so a
    test can feed a loss whose curvature does depend on ``w`` and see the check fail."""
    res = CheckResult(NAME, TITLE, STATEMENT)
    rng = np.random.default_rng(seed)
    n = n or (10 if quick else 40)
    d = d or (30 if quick else 120)
    X = rng.standard_normal((n, d))
    y = rng.standard_normal(n)
    g = (lambda w: X.T @ (X @ w - y) / n) if grad is None else (lambda w: grad(w, X, y))
    wstar = min_norm_solution(X, y)
    minima = [wstar] + [wstar + null_projection(X, 3 * rng.standard_normal(d))
                        for _ in range(n_minima - 1)]
    Hs = [_hessian_fd(g, w) for w in minima]
    ref = X.T @ X / n
    diffs = [float(np.linalg.norm(Hs[i] - Hs[j]) / np.linalg.norm(Hs[0]))
             for i in range(len(Hs)) for j in range(i + 1, len(Hs))]
    ranks = [int(np.linalg.matrix_rank(H, tol=1e-6 * np.linalg.norm(H, 2))) for H in Hs]
    interp = [float(np.linalg.norm(X @ w - y) / np.linalg.norm(y)) for w in minima]
    res.figures.update(n=n, d=d, seed=seed, n_minima=len(minima),
                       norms_of_minima=[float(np.linalg.norm(w)) for w in minima],
                       max_interp_residual=max(interp), max_pairwise_rel_diff=max(diffs),
                       rel_diff_to_XtX_over_n=float(np.linalg.norm(Hs[0] - ref) /
                                                    np.linalg.norm(ref)),
                       ranks=ranks)
    res.criteria["all points are global minima (interpolate, <= 1e-10)"] = max(interp) <= 1e-10
    res.criteria["Hessians equal at all minima (<= 1e-6)"] = max(diffs) <= 1e-6
    res.criteria["rank <= n < d"] = max(ranks) <= n < d
    res.criteria["sympy: Hessian independent of w"] = symbolic_check()
    res.data = {"Hs": Hs, "norms": res.figures["norms_of_minima"]}
    return res.decide()


def plot(res, out_dir):
    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for H, nm in zip(res.data["Hs"], res.data["norms"]):
        ev = np.sort(np.linalg.eigvalsh(H))[::-1]
        ax[0].semilogy(np.maximum(ev, 1e-18), label=f"minimum with ||w|| = {nm:.2f}")
    ax[0].axvline(res.figures["n"], color="k", ls=":")
    ax[0].set_title("Hessian spectra at distinct global minima")
    ax[0].legend(fontsize=7)
    ax[1].bar(range(len(res.data["norms"])), res.data["norms"])
    ax[1].set_title("norms of the minima (first = min-norm)")
    return save_figure(fig, out_dir, "curvature.png")
