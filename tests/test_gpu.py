"""The same test bodies on the NumPy backend and on the CuPy backend.

Covered on both: kernel blocks and the fused Gaussian/Laplacian finish, Gram tiles,
products, the tiled and the dense single-call Cholesky, float32 factors, mixed precision
(float32 factor + float64 refinement), out-of-core tiles, the feature maps (Gabor, random
convolutional, random Fourier), the estimator and the memory queries.

Every test takes the ``be`` fixture, parametrized over ``cpu`` and ``gpu``. The ``gpu``
cases are skipped, with the reason, where CuPy or a CUDA device is missing; where they
run, each asserts that its results really are CuPy arrays and that they agree with the
CPU/NumPy reference within the tolerances below.

Tolerances (float64): tile kernels and Gram blocks ``rtol=1e-12``; Cholesky factors and
solves of well-conditioned matrices ``rtol=1e-10``; estimator predictions/decision values
``rtol=1e-8`` (the solve amplifies rounding differences by cond(K)).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from kernelfit.backend import get_backend, gpu_available, gpu_unavailable_reason
from kernelfit.errors import InputError, MemoryPlanError, NotPositiveDefiniteError
from kernelfit.estimator import KernelInterpolator
from kernelfit.kernels import get_kernel
from kernelfit.solvers.exact import SolveOptions, solve_exact
from kernelfit.solvers.cholesky import cholesky_inplace, cholesky_solve
from kernelfit.solvers.products import build_gram, cross_kernel_matmul, kernel_matvec
from kernelfit.solvers.tiles import TiledSymmetric

RTOL_BLOCK = 1e-12
RTOL_SOLVE = 1e-10
RTOL_PREDICT = 1e-8

def _gpu_reason() -> str:
    """The skip reason: what the GPU probe found missing (shown by ``pytest -rs``)."""
    return f"no usable GPU: {gpu_unavailable_reason()}"


@pytest.fixture(params=["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def be(request, monkeypatch):
    if request.param == "gpu" and os.environ.get("KERNELFIT_TEST_EMULATED_GPU") == "1":
        yield _emulated_gpu(monkeypatch)  # test_backend's host emulation of CuPy (CI)
        return
    if request.param == "gpu" and not gpu_available():
        pytest.skip(_gpu_reason())
    backend = get_backend(request.param)
    yield backend
    backend.free_pool()


def _emulated_gpu(monkeypatch):
    import kernelfit.backend as kb
    from test_backend import _FakeCuda

    fake = _FakeCuda()
    for name, mod in fake.modules.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(kb, "_cache", kb._Cache())
    kb.gpu_available.cache_clear()
    be = kb.get_backend("gpu")
    monkeypatch.setattr(be, "peak_memory", lambda: 1)
    return be


def _on(be, x):
    """Move a NumPy array to the backend and check it arrived as the backend's type."""
    y = be.asarray(x)
    assert be.is_backend_array(y)
    return y


def _host(be, y):
    """Back to NumPy, asserting the result was produced as the backend's own array."""
    assert be.is_backend_array(y), f"expected a {be.name} array, got {type(y).__name__}"
    return be.to_numpy(y)


def _spd(n, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, n // 2 + 3))
    return A @ A.T + n * np.eye(n)


def _data(n=80, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d))


# ---------------------------------------------------------------- kernels and Gram
@pytest.mark.parametrize("name,params", [("gaussian", {"bandwidth": 2.0}),
                                         ("laplacian", {"bandwidth": 3.0}),
                                         ("normalized", {"degree": 4})])
def test_kernel_blocks_match_numpy(be, name, params):
    X = _data(50, 7, seed=1)
    Z = _data(30, 7, seed=2)
    k = get_kernel(name, **params)
    ref = k.block(X, Z, a_stats=k.prepare(X), b_stats=k.prepare(Z))
    Xb, Zb = _on(be, X), _on(be, Z)
    got = k.block(Xb, Zb, a_stats=k.prepare(Xb), b_stats=k.prepare(Zb))
    assert got.dtype == np.float64
    np.testing.assert_allclose(_host(be, got), ref, rtol=RTOL_BLOCK, atol=1e-14)


@pytest.mark.parametrize("tile", [16, 33, 100])
def test_build_gram_matches_numpy(be, tile):
    X = _data(100, 5, seed=3)
    k = get_kernel("gaussian", bandwidth=2.0)
    ref = k.block(X, X, a_stats=k.prepare(X), b_stats=k.prepare(X), same=True)
    T = build_gram(k, _on(be, X), tile_size=tile, backend=be)
    for row in T.tiles:
        for t in row:
            assert be.is_backend_array(t) and t.flags.f_contiguous and t.dtype == np.float64
    np.testing.assert_allclose(T.to_dense(), ref, rtol=RTOL_BLOCK, atol=1e-14)


def test_cross_kernel_and_matvec_match_numpy(be):
    X = _data(70, 4, seed=4)
    Q = _data(25, 4, seed=5)
    V = np.random.default_rng(6).standard_normal((70, 3))
    k = get_kernel("gaussian", bandwidth=1.5)
    K = k.block(X, X, a_stats=k.prepare(X), b_stats=k.prepare(X), same=True)
    KQ = k.block(Q, X, a_stats=k.prepare(Q), b_stats=k.prepare(X))
    got_mv = kernel_matvec(k, _on(be, X), _on(be, V), tile_size=20, backend=be)
    got_cross = cross_kernel_matmul(k, _on(be, Q), _on(be, X), _on(be, V), tile_size=20,
                                    backend=be)
    np.testing.assert_allclose(_host(be, got_mv), K @ V, rtol=RTOL_BLOCK, atol=1e-12)
    np.testing.assert_allclose(_host(be, got_cross), KQ @ V, rtol=RTOL_BLOCK, atol=1e-12)


# ---------------------------------------------------------------- factorization
@pytest.mark.parametrize("n,tile", [(1, 1), (7, 3), (64, 64), (130, 32), (257, 50)])
def test_cholesky_inplace_and_solve_match_numpy(be, n, tile):
    A = _spd(n, seed=n)
    B = np.random.default_rng(n + 1).standard_normal((n, 3))
    T = TiledSymmetric.from_dense(A, tile, backend=be)
    ptrs = [[_ptr(be, t) for t in row] for row in T.tiles]
    cholesky_inplace(T)
    assert ptrs == [[_ptr(be, t) for t in row] for row in T.tiles], "factor was not in place"
    np.testing.assert_allclose(T.to_dense(lower_only=True), np.linalg.cholesky(A),
                               rtol=RTOL_SOLVE, atol=1e-12)
    X = cholesky_solve(T, _on(be, B))
    np.testing.assert_allclose(_host(be, X), np.linalg.solve(A, B), rtol=RTOL_SOLVE,
                               atol=1e-12)


def test_float32_factor(be):
    A = _spd(96, seed=7).astype(np.float32)
    T = TiledSymmetric.from_dense(A, 40, backend=be)
    cholesky_inplace(T)
    assert T.tiles[1][0].dtype == np.float32
    x = _host(be, cholesky_solve(T, _on(be, np.ones(96))))
    assert np.linalg.norm(A.astype(np.float64) @ x - 1) / np.sqrt(96) < 1e-4


@pytest.mark.parametrize("bad_row", [0, 5, 47])
def test_not_positive_definite_reports_the_global_row(be, bad_row):
    n, tile = 60, 16
    A = _spd(n, seed=3)
    # the Schur complement of the leading (bad_row x bad_row) block at row bad_row is -1:
    # the pivot there is negative and every earlier one positive
    c = np.zeros(n)
    c[:bad_row] = np.random.default_rng(1).standard_normal(bad_row)
    v = A @ c
    A[bad_row, :] = v
    A[:, bad_row] = v
    A[bad_row, bad_row] = c @ v - 1.0
    T = TiledSymmetric.from_dense(A, tile, backend=be)
    with pytest.raises(NotPositiveDefiniteError) as info:
        cholesky_inplace(T)
    assert info.value.index == bad_row
    assert f"row {bad_row} " in str(info.value)


def test_potrf_returns_lapack_info(be):
    A = np.asfortranarray(np.diag([4.0, 1.0, -1.0, 2.0]))
    a = be.asarray(A)
    assert be.potrf(a) == 3
    b = be.asarray(np.asfortranarray(np.diag([4.0, 9.0])))
    assert be.potrf(b) == 0
    np.testing.assert_allclose(np.diag(be.to_numpy(b)), [2.0, 3.0])


def _ptr(be, t):
    return t.data.ptr if be.device == "gpu" else t.ctypes.data


# ---------------------------------------------------------------- solves and estimator
def test_solve_exact_and_estimator_agree_with_cpu(be):
    X = _data(120, 5, seed=8)
    y = (X[:, 0] + X[:, 1] ** 2 > 1).astype(int) + (X[:, 2] > 0.5)
    Q = _data(40, 5, seed=9)
    k = get_kernel("gaussian", bandwidth=2.0)
    Y = np.eye(3)[y]
    ref = solve_exact(k, X, Y, SolveOptions(device="cpu", tile_size=32))
    got = solve_exact(k, X, Y, SolveOptions(device=be.device, tile_size=32), backend=be)
    assert got.device == be.device
    np.testing.assert_allclose(_host(be, got.alpha), ref.alpha, rtol=RTOL_SOLVE * 100,
                               atol=1e-10)

    est_ref = KernelInterpolator(kernel="gaussian", bandwidth=2.0, device="cpu",
                                 tile_size=32).fit(X, y)
    est = KernelInterpolator(kernel="gaussian", bandwidth=2.0, device=be.device,
                             tile_size=32).fit(X, y)
    assert est.device_ == be.device
    assert be.is_backend_array(est.alpha_)
    np.testing.assert_allclose(est.decision_function(Q), est_ref.decision_function(Q),
                               rtol=RTOL_PREDICT, atol=1e-10)
    np.testing.assert_array_equal(est.predict(Q), est_ref.predict(Q))
    assert est.relative_residual_ < 1e-8


def test_memory_queries_have_the_right_types(be):
    if be.device == "gpu" and os.environ.get("KERNELFIT_TEST_EMULATED_GPU") == "1":
        pytest.skip("the emulation has no memory pool")
    free = be.free_memory()
    assert isinstance(free, int) and free > 0
    peak = be.peak_memory()
    if be.device == "cpu":
        assert peak is None
    else:
        x = be.xp.ones((1024, 1024))
        be.synchronize()
        assert isinstance(peak, int)
        assert be.peak_memory() >= x.nbytes
        stats = be.memory_stats()
        assert stats["peak_pool_bytes"] >= x.nbytes
        del x
        be.free_pool()
        assert be.peak_memory() >= 1024 * 1024 * 8  # the peak survives the release
    desc = be.describe()
    assert desc["device"] == be.device


def test_memory_refusal(be, monkeypatch):
    X = _data(200, 3)
    monkeypatch.setattr(be, "free_memory", lambda: 10_000)
    with pytest.raises(MemoryPlanError):
        solve_exact(get_kernel("gaussian", bandwidth=1.0), X, np.ones(200),
                    SolveOptions(device=be.device), backend=be)


def test_auto_reports_the_device_it_used():
    be = get_backend("auto")
    assert be.device == ("gpu" if gpu_available() else "cpu")
    est = KernelInterpolator(kernel="gaussian", bandwidth=1.0, device="auto").fit(
        _data(30, 3), np.arange(30) % 2)
    assert est.device_ == be.device


# ---------------------------------------------------------------- GPU-only checks
def test_gpu_refuses_c_ordered_tiles():
    if not gpu_available():
        pytest.skip(_gpu_reason())
    be = get_backend("gpu")
    c = be.xp.asarray(np.ascontiguousarray(_spd(8)))
    assert not c.flags.f_contiguous
    with pytest.raises(InputError, match="Fortran"):
        be.potrf(c)
    with pytest.raises(InputError, match="CuPy arrays"):
        be.potrf(np.asfortranarray(_spd(8)))



def _ran_on(be, before_peak=None):
    """Evidence that the device did the work: on the GPU, CuPy's pool held memory."""
    if be.device == "gpu":
        assert be.peak_memory() > 0


# ---------------------------------------------------------------- beyond memory
def _against_float64(be, n, classes, *, seed, **options):
    """(the CPU float64 in-core solution, the solution with ``options`` on ``be``)."""
    X = _data(n, 5, seed=seed)
    Y = np.eye(classes)[np.arange(n) % classes]
    k = get_kernel("gaussian", bandwidth=2.0)
    ref = solve_exact(k, X, Y, SolveOptions(device="cpu", precision="float64", tile_size=40))
    be.reset_peak()
    sol = solve_exact(k, _on(be, X), _on(be, Y),
                      SolveOptions(device=be.device, tile_size=40, **options), backend=be)
    return ref, sol


@pytest.mark.parametrize("refinement", ["cg", "ir"])
def test_mixed_precision_agrees_with_float64(be, refinement):
    ref, sol = _against_float64(be, 150, 3, seed=11, precision="mixed",
                                refinement=refinement)
    assert sol.device == be.device and sol.info["precision"] == "mixed"
    assert sol.info["relative_residual"] <= 1e-10
    # the low-rank part (the mean and a k-means centre at n = 150, the centre's pivot near
    # PIVOT_MIN: it may be left out) left the device's tiles
    d = sol.info["deflation"]
    assert d["candidates"] == 2 and 1 <= d["rank"] <= 2
    # both solutions have relative residual <= 1e-10 and cond(K) is about 1e6 here, so
    # they may differ by up to about 1e-4 relative; a wrong GPU path differs by O(1)
    got = _host(be, sol.alpha)
    assert np.linalg.norm(got - ref.alpha) <= 1e-5 * np.linalg.norm(ref.alpha)
    _ran_on(be)


def test_out_of_core_agrees_with_in_core(be, tmp_path):
    ref, sol = _against_float64(be, 120, 2, seed=12, precision="float64",
                                ooc_dir=str(tmp_path / "ooc"))
    assert sol.device == be.device
    got = be.to_numpy(sol.alpha)
    assert np.linalg.norm(got - ref.alpha) <= 1e-7 * np.linalg.norm(ref.alpha)
    _ran_on(be)


def test_dense_single_call_equals_tiles(be):
    """One tile = the whole matrix (the GPU's dense path) gives the tiled answer."""
    A = _spd(200, seed=13)
    B = np.random.default_rng(13).standard_normal((200, 2))
    dense = TiledSymmetric.from_dense(A, 200, backend=be)
    tiled = TiledSymmetric.from_dense(A, 48, backend=be)
    cholesky_inplace(dense)
    cholesky_inplace(tiled)
    assert dense.n_tiles == 1
    np.testing.assert_allclose(dense.to_dense(lower_only=True), tiled.to_dense(lower_only=True),
                               rtol=RTOL_SOLVE, atol=1e-12)
    np.testing.assert_allclose(_host(be, cholesky_solve(dense, _on(be, B))),
                               np.linalg.solve(A, B), rtol=RTOL_SOLVE, atol=1e-12)


# ---------------------------------------------------------------- feature maps
def _feature_maps():
    from kernelfit.features.gabor import GaborFeatures
    from kernelfit.features.random_conv import RandomConvFeatures
    from kernelfit.features.random_fourier import RandomFourierFeatures

    return {
        "gabor": (lambda dev: GaborFeatures((28, 28), device=dev, dtype="float64",
                                            batch_size=16), (28 * 28,)),
        "random_conv": (lambda dev: RandomConvFeatures((16, 16, 3), n_filters=32,
                                                       n_patches=500, device=dev,
                                                       dtype="float64", batch_size=16),
                        (16 * 16 * 3,)),
        "random_fourier": (lambda dev: RandomFourierFeatures(n_components=64, bandwidth=3.0,
                                                             device=dev, dtype="float64"),
                           (20,)),
    }


@pytest.mark.parametrize("name", ["gabor", "random_conv", "random_fourier"])
def test_feature_maps_match_numpy(be, name):
    make, (width,) = _feature_maps()[name]
    X = np.random.default_rng(14).uniform(0, 1, size=(40, width))
    ref = make("cpu").fit(X).transform(X)
    fmap = make(be.device).fit(X)
    be.reset_peak()
    got = fmap.transform(X)
    assert isinstance(got, np.ndarray) and got.shape == ref.shape
    assert fmap._backend.device == be.device
    cached = list(fmap._device_cache.values())
    assert cached and all(be.is_backend_array(v) for v in cached), "fitted arrays not on device"
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-10)
    _ran_on(be)


# ---------------------------------------------------------------- random-conv Gram sums
def _conv_map(device, X):
    from kernelfit.features.random_conv import RandomConvFeatures

    fmap = RandomConvFeatures((8, 8, 3), n_filters=9, patch_size=3, pool=2, n_patches=300,
                              dtype="float64", standardize=False, seed=0,
                              device=device).fit(X)
    fmap.standardize = True
    return fmap


def _checkpoints(fmap, X, Xt, overwrite: bool):
    """accumulate_gram's state at 4 and 8 filters (copied) and at the end; ``overwrite``
    clobbers the host arrays after each copy, as a solve does."""
    from kernelfit.features.random_conv_gram import accumulate_gram

    seen = {}

    def ckpt(k, st):
        seen[k] = {key: np.array(st[key]) for key in ("G", "C", "sq", "sq_test")}
        seen[k]["host_copy"] = bool(st.get("host_copy"))
        if overwrite:
            for key in ("G", "C", "sq", "sq_test"):
                st[key][...] = np.nan
    end = accumulate_gram(fmap, X, Xt, filter_chunk=3, batch_size=5, stop_at=[4, 8],
                          on_checkpoint=ckpt)
    return seen, end


def test_random_conv_gram_sums_stay_on_the_device(be):
    """The Gram sums on ``be`` equal the CPU's at every checkpoint; on a device the state
    handed to the checkpoint is a host copy the callback may overwrite (as a curve point's
    solve does) without changing what follows."""
    rng = np.random.default_rng(21)
    X, Xt = rng.random((23, 192)), rng.random((7, 192))
    ref, ref_end = _checkpoints(_conv_map("cpu", X), X, Xt, overwrite=False)
    fmap = _conv_map(be.device, X)
    be.reset_peak()
    got, end = _checkpoints(fmap, X, Xt, overwrite=be.device != "cpu")
    assert sorted(got) == [4, 8]
    for k in (4, 8):
        assert got[k]["host_copy"] is (be.device != "cpu")
        for key in ("G", "C", "sq", "sq_test"):
            np.testing.assert_allclose(got[k][key], ref[k][key], rtol=1e-10, atol=1e-12)
    for key in ("G", "C", "sq", "sq_test"):
        assert isinstance(end[key], np.ndarray)
        np.testing.assert_allclose(end[key], ref_end[key], rtol=1e-10, atol=1e-12)
    cached = list(fmap._device_cache.values())
    assert cached and all(be.is_backend_array(v) for v in cached), "filters not on the device"
    _ran_on(be)


def test_random_conv_gram_refuses_what_the_device_cannot_hold(be, monkeypatch):
    """Before any work, with the figure and a way out (the CPU)."""
    from kernelfit.features.random_conv_gram import accumulate_gram

    if be.device == "cpu":
        pytest.skip("the device memory check applies to a device backend")
    rng = np.random.default_rng(22)
    X = rng.random((23, 192))
    fmap = _conv_map(be.device, X)
    monkeypatch.setattr(be, "free_memory", lambda reserve=0: 1000)
    with pytest.raises(MemoryPlanError, match=r"gpu memory, 1000 B is free.*'cpu'"):
        accumulate_gram(fmap, X, None, filter_chunk=3, batch_size=5)
