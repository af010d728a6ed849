r"""SGD on underdetermined least squares converges to the minimum-norm interpolant.

**Statement.** For :math:`X\in\mathbb R^{n\times d}`, :math:`d>n`, rank n, the SGD step
:math:`w\leftarrow w-\eta(x_i^\top w-y_i)x_i` adds multiples of rows, so from :math:`w_0=0`
every iterate lies in :math:`\operatorname{row}(X)`, and the limit (an interpolant in the row
space) is :math:`X^+y`. From :math:`w_0\ne0` the limit is :math:`X^+y+P_{\mathrm{null}}w_0`.
Kernel SGD in :math:`\alpha`-space (:math:`\alpha_i\leftarrow\alpha_i-\eta((K\alpha)_i-y_i)`)
converges to :math:`K^{-1}y`. Expected squared error contracts per step by at most
:math:`1-\eta(2-\eta R^2)\lambda^+_{\min}(X^\top X/n)`.

**Numeric check.** Gaussian :math:`X` (n=200, d=1000): relative distance to :math:`X^+y` at most
1e-8 and distance of every recorded iterate to the row space at most 1e-12 relative; from a
random :math:`w_0` the limit matches :math:`X^+y+P_{\mathrm{null}}w_0` to 1e-8; measured rates
for several step sizes vs the bound. Kernel SGD (cyclic, = SOR sweep) on an MNIST subset
(Gaussian kernel, bandwidth 5) reaches relative distance 1e-6 to :math:`K^{-1}y`.

**Symbolic check.** For symbolic :math:`x, w, y` the update direction is a multiple of
:math:`x` (sympy).
"""

from __future__ import annotations


import numpy as np

from kernelfit.kernels import get_kernel
from kernelfit.theory import sgd as S

from ._common import CheckResult, Timer, mnist_or_none, note_stand_in, pyplot, save_figure

NAME = "sgd_min_norm"
TITLE = "SGD from zero converges to the minimum-norm solution X^+ y"
STATEMENT = ("w <- w - eta (x_i^T w - y_i) x_i stays in w0 + row(X); limit X^+ y + P_null(w0); "
             "kernel SGD alpha_i <- alpha_i - eta((K alpha)_i - y_i) -> K^{-1} y")


def symbolic_check():
    import sympy as sp

    d = 3
    x = sp.Matrix(sp.symbols("x1:4", real=True))
    w = sp.Matrix(sp.symbols("w1:4", real=True))
    y, eta = sp.symbols("y eta", real=True)
    step = -eta * ((x.T * w)[0] - y) * x
    # step is parallel to x: the 2x2 minors of [step, x] vanish
    M = step.row_join(x)
    return all(sp.simplify(M[i, 0] * M[j, 1] - M[j, 0] * M[i, 1]) == 0
               for i in range(d) for j in range(i + 1, d))


def check(quick=False, data_dir=None, seed=0, n=None, d=None, w0=None, X=None, y=None,
          kernel_n=None, etas=(0.25, 0.5, 1.0), **_):
    """``w0`` is the start of the run *claimed* to start from zero (default zeros); a test
    passes a non-zero one to show the check fails."""
    res = CheckResult(NAME, TITLE, STATEMENT)
    rng = np.random.default_rng(seed)
    n = n or (50 if quick else 200)
    d = d or (250 if quick else 1000)
    if X is None:
        X = rng.standard_normal((n, d)) / np.sqrt(d)
    if y is None:
        y = rng.standard_normal(X.shape[0])
    X, y = np.asarray(X, float), np.asarray(y, float)
    n, d = X.shape
    wstar = S.min_norm_solution(X, y)
    start = np.zeros(d) if w0 is None else np.asarray(w0, float)
    with Timer() as t0:
        w, h = S.least_squares_sgd(X, y, epochs=2000, w0=start, seed=seed, target=wstar,
                                   tol=1e-11)
    rel = float(np.linalg.norm(w - wstar) / np.linalg.norm(wstar))
    dist = S.row_space_distance(X, h["W"]) / np.maximum(np.linalg.norm(h["W"], axis=0), 1e-300)
    dist[np.linalg.norm(h["W"], axis=0) == 0] = 0.0
    # non-zero start
    w0b = rng.standard_normal(d)
    target_b = wstar + S.null_projection(X, w0b)
    wb, hb = S.least_squares_sgd(X, y, epochs=2000, w0=w0b, seed=seed + 1, target=target_b,
                                 tol=1e-11)
    rel_b = float(np.linalg.norm(wb - target_b) / np.linalg.norm(target_b))
    rel_b_vs_minnorm = float(np.linalg.norm(wb - wstar) / np.linalg.norm(wstar))
    # rates vs the bound
    R2 = float(np.max(np.sum(X * X, axis=1)))
    rates = []
    curves = {}
    for f in etas:
        eta = f / R2
        _, hr = S.least_squares_sgd(X, y, eta=eta, epochs=150 if quick else 100, seed=seed,
                                    target=wstar, tol=1e-13)
        e = hr["rel_err"]
        k = max(2, int(np.argmax(e < 1e-10)) or len(e))
        slope = np.polyfit(np.arange(1, k), np.log(e[1:k] ** 2), 1)[0]  # per epoch, squared
        bound, lam, _ = S.sgd_rate_bound(X, eta)
        rates.append({"eta_times_R2": f, "measured_sq_rate_per_epoch": float(np.exp(slope)),
                      "bound_sq_rate_per_epoch": float(bound ** n), "lambda_min_plus": lam})
        curves[f] = e
    res.figures.update(n=n, d=d, seed=seed, epochs=h["epochs"], eta=h["eta"],
                       rel_dist_to_min_norm=rel, max_rel_dist_to_row_space=float(dist.max()),
                       nonzero_start_rel_dist_to_pinv_plus_null=rel_b,
                       nonzero_start_rel_dist_to_min_norm=rel_b_vs_minnorm,
                       rates=rates, seconds_zero_start=t0.seconds)
    res.criteria["from w0 = 0: ||w - X^+y|| / ||X^+y|| <= 1e-8"] = rel <= 1e-8
    res.criteria["iterates in row(X): distance <= 1e-12 relative"] = dist.max() <= 1e-12
    res.criteria["from w0 != 0: limit X^+y + P_null w0 (<= 1e-8)"] = rel_b <= 1e-8
    res.criteria["measured rate within the bound (x1.1)"] = all(
        r["measured_sq_rate_per_epoch"] <= min(1.0, 1.1 * r["bound_sq_rate_per_epoch"]) or
        r["bound_sq_rate_per_epoch"] < 1e-12 for r in rates)

    # kernel SGD on MNIST (or synthetic)
    kn = kernel_n or (150 if quick else 500)
    m = mnist_or_none(data_dir)
    if m is not None:
        Xk, yk, src = m[0][:kn], m[1][:kn].astype(float), f"MNIST train[:{kn}]"
    else:
        Xk = rng.random((kn, 784))
        yk = rng.integers(0, 10, kn).astype(float)
        src = f"synthetic uniform [0,1]^{784}, n={kn}"
        note_stand_in(res, data_dir, f"{src} (its kernel part)")
    K = get_kernel("gaussian", bandwidth=5.0)(Xk)
    ak = np.linalg.solve(K, yk)
    lam = np.linalg.eigvalsh(K)
    with Timer() as tk:
        alpha, hk = S.kernel_sgd(K, yk, eta=1.0, epochs=30000, target=ak, tol=1e-9)
    relk = float(np.linalg.norm(alpha - ak) / np.linalg.norm(ak))
    res.figures.update(kernel_data=src, kernel_bandwidth=5.0, kernel_n=kn,
                       kernel_lambda_min=float(lam[0]), kernel_lambda_max=float(lam[-1]),
                       kernel_epochs=hk["epochs"], kernel_rel_dist_to_Kinv_y=relk,
                       kernel_seconds=tk.seconds)
    res.criteria["kernel SGD -> K^{-1} y (<= 1e-6 relative)"] = relk <= 1e-6
    res.criteria["sympy: each step is parallel to x_i"] = symbolic_check()
    res.data = {"curves": curves, "kernel": hk["rel_err"], "dist": dist}
    return res.decide()


def plot(res, out_dir):
    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for f, e in res.data["curves"].items():
        ax[0].semilogy(np.maximum(e, 1e-17), label=f"eta = {f}/R^2")
    ax[0].set_xlabel("epoch")
    ax[0].set_ylabel("||w_t - X^+ y|| / ||X^+ y||")
    ax[0].set_title(f"least squares n={res.figures['n']}, d={res.figures['d']}")
    ax[0].legend()
    ax[1].semilogy(np.maximum(res.data["kernel"], 1e-17))
    ax[1].set_xlabel("epoch (cyclic)")
    ax[1].set_ylabel("||alpha_t - K^-1 y|| / ||K^-1 y||")
    ax[1].set_title(f"kernel SGD, lambda_min(K) = {res.figures['kernel_lambda_min']:.2e}")
    return save_figure(fig, out_dir, "sgd_min_norm.png")
