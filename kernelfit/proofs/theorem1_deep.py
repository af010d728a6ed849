r"""Depth-k variant of Theorem 1 (paper, appendix): width O(n/k), O(n + d + k) weights.

**Statement.** Split the sorted biases into k consecutive blocks :math:`G_1..G_k`. With
:math:`u=\max(\langle a,x\rangle-c_0,0)`, :math:`c_0<b_1`, layer :math:`l` computes
:math:`h_j=\max(u-(b_j-c_0),0)` for :math:`j\in G_l`, carries :math:`u` and the partial sum
:math:`s_{l-1}` as :math:`(\max(s,0),\max(-s,0))`, and
:math:`s_l = \max(s_{l-1},0)-\max(-s_{l-1},0)+\sum_{j\in G_l}w_jh_j`. The output
:math:`s_k` equals the two-layer :math:`c(x)`, so it fits every label; width
:math:`\lceil n/k\rceil+3`.

**Numeric check.** The exact fixed-point network evaluated layer by layer on every training
point (blocks by prefix sums) and term by term on a random subset: relative residual at most
1e-30. Float64: the literal sparse forward pass of the deep network vs the shallow one.

**Symbolic check.** :math:`\max(s,0)-\max(-s,0)=s` for real :math:`s` and
:math:`\max(u,0)=u` for :math:`u\ge 0` (sympy), the identities the carries rely on.
"""

from __future__ import annotations


import numpy as np

from kernelfit.theory import construction as C

from ._common import CheckResult, Timer, scatter_figure
from .theorem1 import _data

NAME = "theorem1_deep"
TITLE = "Theorem 1, depth-k variant: width ceil(n/k)+3 fits any labels"
STATEMENT = ("s_l = max(s_{l-1},0) - max(-s_{l-1},0) + sum_{j in G_l} w_j max(u - (b_j - c0), 0), "
             "output s_k = c(x), fits c(x_i) = y_i; width ceil(n/k) + 3, O(n + d + k) weights")
TOL = 1e-30


def symbolic_check():
    import sympy as sp

    s = sp.Symbol("s", real=True)
    u = sp.Symbol("u", nonnegative=True)
    split = sp.piecewise_fold(sp.Max(s, 0) - sp.Max(-s, 0)).rewrite(sp.Piecewise)
    ok_split = all(sp.simplify(split.subs(s, v) - v) == 0 for v in (sp.Symbol("p", positive=True),
                                                                    -sp.Symbol("m", positive=True),
                                                                    0))
    return bool(ok_split and sp.Max(u, 0) == u)


def check(quick=False, data_dir=None, seed=0, n=None, k=None, X_int=None, corrupt=None, **_):
    """``corrupt(deep_net)`` may alter the exact depth-k network before verification."""
    res = CheckResult(NAME, TITLE, STATEMENT)
    if n is None and quick:
        n = 2000
    X_int, q, source = _data(n, 784 if not quick else 64, data_dir, X_int, seed, res)
    n, d = X_int.shape
    k = k or (4 if quick else 10)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, size=n).astype(np.float64)
    with Timer() as t_fit:
        deep = C.fit_theorem1_exact_deep(X_int, q, y, k, seed=seed)
    if corrupt is not None:
        corrupt(deep)
    net = deep.shallow
    Y = net.info["Y_sorted"]
    Zx = 4 * (X_int[net.order] @ net.a_int)
    with Timer() as t_all:
        rr_all = C.exact_relative_residual(deep.outputs_scaled(Zx), Y)
    sub = np.sort(rng.choice(n, size=min(n, 30 if quick else 100), replace=False))
    with Timer() as t_dir:
        rr_dir = C.exact_relative_residual(deep.outputs_scaled(Zx[sub], direct=True),
                                           [Y[i] for i in sub])
    width = max(e - s for s, e in deep.groups) + 3
    # float64: literal layer-by-layer forward pass
    X = X_int / 255.0
    fdeep = C.fit_theorem1_deep(X, y, k, seed=seed)
    fsh = fdeep.info["shallow"]
    fsub = rng.choice(n, size=min(n, 500), replace=False)
    out_deep = fdeep.predict(X[fsub])
    out_sh = fsh.predict(X[fsub], method="direct")
    res.figures.update(data=source, n=n, d=d, k=k, seed=seed, width=width,
                       width_bound=int(np.ceil(n / k)) + 3, n_weights_float_net=fdeep.n_weights,
                       exact_rel_residual_all=rr_all, exact_rel_residual_direct_subset=rr_dir,
                       exact_seconds=t_fit.seconds + t_all.seconds + t_dir.seconds,
                       float64_deep_vs_shallow_max=float(np.max(np.abs(out_deep - out_sh))),
                       float64_deep_residual_max=float(np.max(np.abs(out_deep - y[fsub]))),
                       float64_subset_size=int(fsub.size))
    res.criteria["exact layer-by-layer fit on all points (<= 1e-30)"] = rr_all <= TOL
    res.criteria["exact term-by-term fit on a random subset"] = rr_dir <= TOL
    res.criteria["width <= ceil(n/k) + 3"] = width <= int(np.ceil(n / k)) + 3
    res.criteria["O(n + d + k) weights (<= 5n + d + 10k)"] = fdeep.n_weights <= 5 * n + d + 10 * k
    res.criteria["sympy: max(s,0) - max(-s,0) = s, max(u,0) = u for u >= 0"] = symbolic_check()
    res.data = {"out_deep": out_deep, "out_sh": out_sh, "y": y[fsub]}
    return res.decide()


def plot(res, out_dir):
    return scatter_figure(res.data["y"], res.data["out_deep"], xlabel="label y_i",
                          ylabel=f"depth-{res.figures['k']} network output (float64)",
                          title=("depth-k fit, exact rel. residual "
                                 f"{res.figures['exact_rel_residual_all']:.1e}"),
                          out_dir=out_dir, name="theorem1_deep_fit.png")
