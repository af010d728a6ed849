"""Kernels against direct formulas; distance computation properties."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from kernelfit.errors import InputError
from kernelfit.kernels import (KERNEL_NAMES, Kernel, active_columns, check_array, get_kernel,
                               squared_distances)


def _direct(name, A, B, **p):
    out = np.empty((len(A), len(B)))
    for i, a in enumerate(A):
        for j, b in enumerate(B):
            if name == "linear":
                out[i, j] = a @ b
            elif name == "polynomial":
                out[i, j] = (p.get("gamma", 1.0) * (a @ b) + p.get("coef0", 1.0)) ** p["degree"]
            elif name == "normalized":
                out[i, j] = (a @ b / np.linalg.norm(a) / np.linalg.norm(b)) ** p["degree"]
            elif name == "gaussian":
                out[i, j] = np.exp(-np.sum((a - b) ** 2) / (2 * p["bandwidth"] ** 2))
            elif name == "laplacian":
                out[i, j] = np.exp(-np.sqrt(np.sum((a - b) ** 2)) / p["bandwidth"])
    return out


@pytest.mark.parametrize("name,params", [
    ("linear", {}), ("polynomial", {"degree": 3, "gamma": 0.5, "coef0": 2.0}),
    ("normalized", {"degree": 4}), ("normalized", {"degree": 3}),
    ("gaussian", {"bandwidth": 1.7}), ("laplacian", {"bandwidth": 2.5}),
])
def test_kernel_matches_direct_formula(name, params):
    rng = np.random.default_rng(1)
    A, B = rng.random((7, 5)), rng.random((4, 5))
    k = get_kernel(name, **params)
    np.testing.assert_allclose(k(A, B), _direct(name, A, B, **params), rtol=1e-12, atol=1e-13)
    # block with precomputed statistics gives the same
    np.testing.assert_allclose(k.block(A, B, a_stats=k.prepare(A), b_stats=k.prepare(B)),
                               k(A, B), rtol=1e-13, atol=1e-14)


def test_float32_block_is_computed_in_float64_then_cast():
    rng = np.random.default_rng(0)
    A = rng.random((50, 30)).astype(np.float32)
    k = get_kernel("gaussian", bandwidth=0.5)
    K32 = k.block(A, A, same=True, dtype=np.float32)
    assert K32.dtype == np.float32
    np.testing.assert_array_equal(np.diag(K32), np.ones(50, dtype=np.float32))
    np.testing.assert_allclose(K32, _direct("gaussian", A.astype(np.float64), A.astype(np.float64),
                                            bandwidth=0.5), rtol=1e-6, atol=1e-7)


def test_exact_zero_diagonal_and_clamp():
    # large offsets make |a|^2 + |b|^2 - 2ab cancel badly
    rng = np.random.default_rng(3)
    A = 1e4 + rng.random((20, 8)) * 1e-3
    D = squared_distances(A, A, same=True)
    assert np.all(D >= 0)
    assert np.all(np.diag(D) == 0.0)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 12), st.integers(1, 6)),
              elements=st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)))
def test_squared_distances_properties(X):
    D = squared_distances(X, X, same=True)
    assert D.shape == (X.shape[0], X.shape[0])
    assert np.all(D >= 0), "distances are clamped at zero"
    assert np.all(np.diag(D) == 0), "exact zero diagonal"
    np.testing.assert_allclose(D, D.T, rtol=1e-12, atol=1e-9 * (1 + np.abs(X).max() ** 2))
    direct = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    scale = 1.0 + (X ** 2).sum(1).max()
    assert np.max(np.abs(D - direct)) <= 1e-12 * scale * 8


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(2, 10), st.integers(1, 5)),
              elements=st.floats(-10, 10, allow_nan=False)),
       st.floats(0.1, 10.0))
def test_gaussian_gram_is_symmetric_with_unit_diagonal(X, h):
    K = get_kernel("gaussian", bandwidth=h)(X)
    assert np.all(np.diag(K) == 1.0)
    assert np.all((K >= 0) & (K <= 1))


@pytest.mark.parametrize("bad", [
    dict(name="nope"), dict(name="gaussian", bandwidth=0.0), dict(name="gaussian", bandwidth=-1.0),
    dict(name="laplacian", bandwidth=float("nan")), dict(name="polynomial", degree=0),
    dict(name="normalized", degree=2.5), dict(name="polynomial", gamma=-1.0),
    dict(name="gaussian", bandwidth=1.0, degree="four"),  # unused by the kernel, still typed
])
def test_bad_kernel_parameters(bad):
    with pytest.raises(InputError):
        Kernel(**bad)


def test_get_kernel_rejects_unknown_parameter():
    with pytest.raises(InputError, match="unknown kernel parameter"):
        get_kernel("gaussian", width=3)
    with pytest.raises(InputError, match="must be a number"):
        get_kernel("gaussian", bandwidth="wide")


def test_normalized_kernel_rejects_zero_rows():
    X = np.ones((4, 3))
    X[2] = 0
    with pytest.raises(InputError, match="row 2"):
        get_kernel("normalized").prepare(X)


def test_check_array_messages():
    with pytest.raises(InputError, match="NaN"):
        check_array(np.array([[1.0, np.nan]]))
    with pytest.raises(InputError, match="2-D"):
        check_array(np.ones(3))
    with pytest.raises(InputError, match="empty"):
        check_array(np.ones((0, 3)))
    assert check_array(np.ones((2, 2))).shape == (2, 2)


def test_all_kernel_names_construct():
    for name in KERNEL_NAMES:
        assert get_kernel(name).name == name
    assert get_kernel("rbf").name == "gaussian"
    assert get_kernel("poly").name == "polynomial"


def test_estimator_takes_scikit_learns_kernel_names_as_the_readme_says():
    """``rbf``/``poly`` fit as gaussian/polynomial; get_params keeps the name given."""
    from kernelfit import KernelInterpolator

    X = np.random.default_rng(1).random((30, 3))
    y = np.arange(30) % 2
    for alias, name in (("rbf", "gaussian"), ("poly", "polynomial")):
        m = KernelInterpolator(kernel=alias, bandwidth=1.0, show_progress=False).fit(X, y)
        assert m.get_params()["kernel"] == alias and m.kernel_.name == name


def test_block_times_accumulates_the_product():
    rng = np.random.default_rng(0)
    A, B, V = rng.random((700, 5)), rng.random((90, 5)), rng.standard_normal((90, 3))
    k = get_kernel("gaussian", bandwidth=0.6)
    acc = np.ones((700, 3))
    K = k.block(A, B, times=(V, acc))
    np.testing.assert_allclose(acc, 1.0 + k(A, B) @ V, rtol=1e-13)
    np.testing.assert_array_equal(K, k(A, B))
    W = rng.standard_normal((700, 2))
    acc_t = np.zeros((90, 2))
    k.block(A, B, times_t=(W, acc_t))
    np.testing.assert_allclose(acc_t, k(A, B).T @ W, rtol=1e-12)
    # a diagonal block: the products see the exact diagonal
    acc, acc_t = np.zeros((700, 3)), np.zeros((700, 3))
    V2 = rng.standard_normal((700, 3))
    k.block(A, A, same=True, times=(V2, acc), times_t=(V2, acc_t))
    np.testing.assert_allclose(acc, k(A) @ V2, rtol=1e-12)
    np.testing.assert_allclose(acc_t, k(A).T @ V2, rtol=1e-12)


def test_active_columns():
    X = np.zeros((4, 5))
    X[1, 2] = 3.0
    X[3, 0] = -1.0
    np.testing.assert_array_equal(active_columns(X), [0, 2])
    assert active_columns(np.ones((3, 4))) is None
    assert active_columns(np.zeros((3, 4))) is None  # nothing to gain, nothing to drop
