"""Tests of kernelfit.theory: Theorem 1 construction (float64, exact, depth k) and SGD."""

import numpy as np
import pytest

from kernelfit.errors import InputError
from kernelfit.kernels import get_kernel
from kernelfit.theory import construction as C
from kernelfit.theory import sgd as S


def _pts(n=300, d=20, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, d)), rng.standard_normal(n)


@pytest.mark.parametrize("direction,biases", [("gaussian", "midpoint"), ("best", "contractive")])
def test_float_fit(direction, biases):
    Xi, y = _pts()
    net = C.fit_theorem1(Xi / 255.0, y, direction=direction, biases=biases)
    assert net.n_weights == 2 * 300 + 20
    assert np.max(np.abs(net.predict(Xi / 255.0, method="direct") - y)) < 1e-6
    assert np.max(np.abs(net.predict(Xi / 255.0) - y)) < 1e-6


def test_exact_fit_and_deep():
    Xi, y = _pts()
    y = np.round(y * 64) / 64
    net = C.fit_theorem1_exact(Xi, 255, y)
    Z = 4 * (Xi[net.order] @ net.a_int)
    assert C.exact_relative_residual(net.outputs_scaled(Z), net.info["Y_sorted"]) < 1e-60
    assert C.exact_relative_residual(net.outputs_scaled_direct(Z[:20]),
                                     net.info["Y_sorted"][:20]) < 1e-60
    deep = C.fit_theorem1_exact_deep(Xi, 255, y, 5)
    Y = deep.shallow.info["Y_sorted"]
    Zd = 4 * (Xi[deep.shallow.order] @ deep.shallow.a_int)
    assert C.exact_relative_residual(deep.outputs_scaled(Zd), Y) < 1e-60
    assert C.exact_relative_residual(deep.outputs_scaled(Zd[:10], direct=True), Y[:10]) < 1e-60


def test_deep_float_equals_shallow():
    Xi, y = _pts(200, 10, 1)
    deep = C.fit_theorem1_deep(Xi / 255.0, y, 7)
    Xq = np.random.default_rng(2).random((50, 10))  # also off the data
    sh = deep.info["shallow"]
    assert np.allclose(deep.predict(Xq), sh.predict(Xq, method="direct"), rtol=1e-8, atol=1e-6)
    assert deep.width <= int(np.ceil(200 / 7)) + 3


def test_contractive_beats_midpoint_on_weights():
    rng = np.random.default_rng(3)
    z = np.sort(rng.random(2000)) ** 3
    y = rng.standard_normal(2000)
    w_mid = C.solve_weights(z, C.place_biases(z, "midpoint"), y)
    w_con = C.solve_weights(z, C.place_biases(z, "contractive"), y)
    assert np.abs(w_con).max() <= np.abs(w_mid).max()


@pytest.mark.parametrize("X,y,msg", [
    (np.zeros((0, 3)), np.zeros(0), "n = 0"),
    (np.zeros((3, 0)), np.zeros(3), "d = 0"),
    (np.array([[np.nan, 1.0], [1.0, 2.0]]), np.zeros(2), "NaN"),
    (np.eye(3), np.zeros(2), "length 2"),
    (np.array([[1.0, 2.0], [1.0, 2.0]]), np.array([0.0, 1.0]), "no function can fit"),
    (np.array([[1.0, 2.0], [1.0, 2.0]]), np.array([1.0, 1.0]), "identical"),
])
def test_bad_input(X, y, msg):
    with pytest.raises(InputError, match=msg):
        C.fit_theorem1(X, y)


def test_sgd_min_norm_and_row_space():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 120)) / 11
    y = rng.standard_normal(30)
    ws = S.min_norm_solution(X, y)
    w, h = S.least_squares_sgd(X, y, epochs=3000, target=ws, tol=1e-11)
    assert np.linalg.norm(w - ws) / np.linalg.norm(ws) < 1e-8
    assert S.row_space_distance(X, h["W"]).max() < 1e-12 * np.linalg.norm(w)


def test_kernel_sgd_sweep_equals_loop():
    rng = np.random.default_rng(0)
    A = rng.random((40, 30))
    K = get_kernel("gaussian", bandwidth=1.0)(A)
    y = rng.standard_normal(40)
    a1, _ = S.kernel_sgd(K, y, eta=0.7, epochs=3)
    a2 = S.kernel_sgd_loop(K, y, eta=0.7, epochs=3)
    assert np.allclose(a1, a2, atol=1e-12)


def test_null_projection_with_dependent_rows():
    """Rows of X that are dependent (duplicates, rank 5 of 10): the projection onto the
    null space is exact (a QR of X^T spanned spurious directions: off by 1.8 of 7)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10, 5)) @ rng.normal(size=(5, 50))
    v = rng.normal(size=50)
    Q = np.linalg.svd(X)[2][:5].T
    np.testing.assert_allclose(S.null_projection(X, v), v - Q @ (Q.T @ v), atol=1e-12)
    assert S.row_space_distance(X, Q @ rng.normal(size=5)) < 1e-12
