"""Correctness of the feature maps against direct formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone

from kernelfit.errors import InputError
from kernelfit.features import make_feature_map
from kernelfit.features._common import pooling_matrix
from kernelfit.features.gabor import (GaborFeatures, _conv_matrix, _fast_len,
                                      _padded_filter_fft, fft_convolve_same,
                                      morlet_filter_bank)
from kernelfit.features.random_conv import RandomConvFeatures, extract_patches
from kernelfit.features.random_fourier import (RandomFourierFeatures, RandomReLUFeatures,
                                               arccos1_kernel, median_heuristic)
from kernelfit.grid import FEATURE_GRID, integer_grid


def _imgs(n, shape, seed=0):
    return np.random.default_rng(seed).random((n, int(np.prod(shape))))


# ---------------------------------------------------------------- Gabor
def test_morlet_bank_zero_mean_and_normalized_lowpass():
    psi, phi = morlet_filter_bank(3, 6)
    assert psi.shape[0] == 18 and psi.shape[1] == psi.shape[2] == phi.shape[0]
    np.testing.assert_allclose(psi.sum(axis=(1, 2)), 0, atol=1e-12)
    assert phi.sum() == pytest.approx(1.0)
    # phi is separable: outer product of its marginal
    f1 = phi.sum(axis=1)
    np.testing.assert_allclose(np.outer(f1, f1), phi, atol=1e-15)
    # orientation l rotates the wave vector by pi l / L: the filter's Fourier peak moves
    S = psi.shape[1]
    peaks = [np.unravel_index(np.argmax(np.abs(np.fft.fft2(psi[k], s=(64, 64)))), (64, 64))
             for k in (0, 3)]
    assert peaks[0] != peaks[1]
    assert S % 2 == 1


def test_fft_convolution_equals_direct_convolution():
    rng = np.random.default_rng(1)
    x = rng.random((2, 11, 9))
    psi, phi = morlet_filter_bank(2, 4)
    S = psi.shape[1]
    size = (_fast_len(11 + S - 1), _fast_len(9 + S - 1))
    got = fft_convolve_same(x[:, None], _padded_filter_fft(psi, size), S, size)
    for b in range(2):
        for k in range(len(psi)):
            want = scipy.signal.convolve2d(x[b], psi[k], mode="same")
            np.testing.assert_allclose(got[b, k], want, atol=1e-12)


def test_gabor_features_equal_direct_pipeline():
    H, W = 12, 10
    X = _imgs(3, (H, W))
    g = GaborFeatures((H, W), scales=2, orientations=4, pool=3, order=2,
                      normalize="none").fit(X)
    F = g.transform(X)
    assert F.shape == (3, g.n_features_out_) == (3, (1 + 8 + 16) * 9)
    psi, phi = g.psi_, g.phi_
    Pr, Pc = pooling_matrix(H, 3), pooling_matrix(W, 3)

    def low(m):
        return Pr @ scipy.signal.convolve2d(m, phi, mode="same") @ Pc.T

    img = X[1].reshape(H, W)
    u1 = [np.abs(scipy.signal.convolve2d(img, p, mode="same")) for p in psi]
    maps = [low(img)] + [low(u) for u in u1]
    for l1 in range(4):                       # j1 = 0, then j2 = 1 (all l2)
        for l2 in range(4):
            maps.append(low(np.abs(scipy.signal.convolve2d(u1[l1], psi[4 + l2], "same"))))
    np.testing.assert_allclose(F[1], np.concatenate([m.ravel() for m in maps]), atol=1e-10)


def test_gabor_mnist_default_dimension_and_colour():
    g = GaborFeatures((28, 28)).fit(_imgs(2, (28, 28)))
    assert (g.order, g.pool, g.normalize, g.n_features_out_) == (2, 7, "unit", 81 * 49)
    assert GaborFeatures((28, 28), order=1, pool=8).fit(_imgs(2, (28, 28))).n_features_out_ == 1088
    g3 = GaborFeatures((16, 16, 3), pool=4).fit(_imgs(2, (16, 16, 3)))
    F = g3.transform(_imgs(2, (16, 16, 3)))
    assert F.shape == (2, 3 * 81 * 16)          # (1 + J L + L^2 J (J-1) / 2) maps


@pytest.mark.parametrize("order", [1, 2])
def test_gabor_unit_normalize_divides_each_row_by_its_norm(order):
    X = _imgs(5, (12, 12))
    X[2] = 0.0                                     # an all-zero image stays all zero
    raw = GaborFeatures((12, 12), pool=3, order=order, normalize="none").fit_transform(X)
    unit = GaborFeatures((12, 12), pool=3, order=order, grid_bits=None).fit_transform(X)
    norms = np.linalg.norm(raw, axis=1)
    assert norms[2] == 0.0 and not unit[2].any()
    keep = norms > 0
    np.testing.assert_allclose(unit[keep], raw[keep] / norms[keep, None], atol=1e-14)
    np.testing.assert_allclose(np.linalg.norm(unit[keep], axis=1), 1.0, atol=1e-13)
    # the scale of the image no longer matters
    np.testing.assert_allclose(
        GaborFeatures((12, 12), pool=3, order=order, grid_bits=None).fit_transform(7.5 * X),
        unit, atol=1e-13)


@pytest.mark.parametrize("order", [1, 2])
def test_gabor_unit_features_rounded_to_the_feature_grid(order):
    """The default rounds unit rows to the nearest multiples of 2^-11: the integers
    k / 2048 with |k|^2 below 2^24 (exact float32 inner products), none further than 2^-12
    from the unrounded features; an all-zero image stays zero."""
    X = _imgs(6, (12, 12), seed=5)
    X[3] = 0.0
    exact = GaborFeatures((12, 12), pool=3, order=order, grid_bits=None).fit_transform(X)
    g = GaborFeatures((12, 12), pool=3, order=order)
    F = g.fit_transform(X)
    assert g.output_grid() == FEATURE_GRID == 2.0 ** 11
    K = F * FEATURE_GRID
    assert np.array_equal(K, np.rint(K)) and not F[3].any()
    np.testing.assert_array_equal(F, np.rint(exact * 2048.0) / 2048.0)
    assert np.abs(F - exact).max() <= 2.0 ** -12
    assert ((K * K).sum(axis=1) < 2.0 ** 24).all()
    assert integer_grid(F) == FEATURE_GRID  # what the solve finds
    # a coarser grid is a subset of the finer one; no rounding, or unnormalized: no promise
    coarse = GaborFeatures((12, 12), pool=3, order=order, grid_bits=6)
    F6 = coarse.fit_transform(X)
    assert np.array_equal(F6 * 64.0, np.rint(F6 * 64.0)) and coarse.output_grid() == 2048.0
    assert GaborFeatures((12, 12), grid_bits=None).output_grid() is None
    assert GaborFeatures((12, 12), grid_bits=12).output_grid() is None
    assert GaborFeatures((12, 12), normalize="none").output_grid() is None
    assert GaborFeatures((12, 12), normalize="none").rounding_bits() is None
    raw = GaborFeatures((12, 12), pool=3, order=order, normalize="none", grid_bits=4)
    R = raw.fit_transform(X)
    assert np.array_equal(R * 16.0, np.rint(R * 16.0)) and raw.output_grid() is None


def test_gabor_grid_too_coarse_is_refused_before_it_merges_images():
    """A grid so coarse that rounding moves an image's unit features by more than half
    their norm (all zero at 2^-0, duplicates a little finer) is refused with the figure and
    the grid that works, instead of a later diagnosis of identical points; a fine grid and
    an all-zero image pass."""
    X = _imgs(6, (12, 12), seed=5)
    X[3] = 0.0
    for bits in (0, 1):
        with pytest.raises(InputError, match=rf"grid_bits={bits} rounds .* by [\d.]+% of their "
                                             r"norm .*grid_bits=auto: 2\^-11"):
            GaborFeatures((12, 12), pool=3, grid_bits=bits).fit_transform(X)
    F = GaborFeatures((12, 12), pool=3, grid_bits=11).fit_transform(X)
    assert not F[3].any() and F[0].any()


def test_gabor_map_pickled_before_the_grid_keeps_its_unrounded_features():
    """A model file or cache entry made before ``grid_bits`` existed holds a map without
    it: loaded, it computes the unrounded features it was fitted with."""
    import pickle

    X = _imgs(3, (12, 12), seed=2)
    g = GaborFeatures((12, 12), pool=3).fit(X)
    old = pickle.loads(pickle.dumps(g))
    del old.__dict__["grid_bits"]
    old = pickle.loads(pickle.dumps(old))
    assert old.grid_bits is None and old.get_params()["grid_bits"] is None
    want = GaborFeatures((12, 12), pool=3, grid_bits=None).fit(X).transform(X)
    np.testing.assert_array_equal(old.transform(X), want)
    assert not np.array_equal(g.transform(X), want)


@pytest.mark.parametrize("bits", [-1, 31, 2.5, "fine", True])
def test_gabor_grid_bits_refused(bits):
    with pytest.raises(InputError, match="grid_bits"):
        GaborFeatures((12, 12), grid_bits=bits).check_params()


def test_gabor_dtype_float32_close_to_float64():
    X = _imgs(4, (16, 16))
    a = GaborFeatures((16, 16), pool=4, grid_bits=None).fit_transform(X)
    b = GaborFeatures((16, 16), pool=4, dtype="float32", grid_bits=None).fit_transform(X)
    assert b.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # rounded to the grid (exact in float32 too), the two agree to within one step
    a = GaborFeatures((16, 16), pool=4).fit_transform(X)
    b = GaborFeatures((16, 16), pool=4, dtype="float32").fit_transform(X)
    assert b.dtype == np.float32 and np.abs(a - b).max() <= 2.0 ** -11
    assert np.array_equal(b * 2048.0, np.rint(b * 2048.0))


def test_batching_does_not_change_gabor(monkeypatch):
    """Each image's features are computed alone (one FFT per map, per-row norms): the same
    bits whatever the batch, the image groups of the host's threads, or the core count."""
    import kernelfit.features.gabor as gabor_mod

    X = _imgs(11, (16, 16))
    a = GaborFeatures((16, 16), pool=4, batch_size=1).fit_transform(X)
    for batch, group, cores in [(3, 4, 2), (100, 4, 2), (100, 1, 3), (100, 2, 1)]:
        monkeypatch.setattr(gabor_mod, "HOST_IMAGES_PER_TASK", group)
        monkeypatch.setattr(gabor_mod, "usable_cores", lambda: cores)
        b = GaborFeatures((16, 16), pool=4, batch_size=batch).fit_transform(X)
        assert np.array_equal(a, b), (batch, group, cores)


def test_gabor_threaded_batch_equals_direct_pipeline(monkeypatch):
    """A batch split over threads (image groups of 2) still gives the direct formulas."""
    import kernelfit.features.gabor as gabor_mod

    monkeypatch.setattr(gabor_mod, "HOST_IMAGES_PER_TASK", 2)
    H, W = 12, 10
    X = _imgs(9, (H, W), seed=3)
    g = GaborFeatures((H, W), scales=2, orientations=4, pool=3, order=1,
                      normalize="none").fit(X)
    F = g.transform(X)
    Pr, Pc = pooling_matrix(H, 3), pooling_matrix(W, 3)
    for i in (0, 5, 8):
        img = X[i].reshape(H, W)
        maps = [img] + [np.abs(scipy.signal.convolve2d(img, p, mode="same")) for p in g.psi_]
        want = [Pr @ scipy.signal.convolve2d(m, g.phi_, mode="same") @ Pc.T for m in maps]
        np.testing.assert_allclose(F[i], np.concatenate([m.ravel() for m in want]),
                                   atol=1e-10)


@settings(max_examples=30, deadline=None)
@given(n_in=st.integers(1, 40), n_out=st.integers(1, 40))
def test_pooling_matrix_property(n_in, n_out):
    """Rows average (sum to 1, nonnegative); pooling a constant gives the constant; every
    pixel's total weight is n_out / n_in (mass is conserved)."""
    P = pooling_matrix(n_in, n_out)
    assert P.shape == (n_out, n_in) and (P >= 0).all()
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(P.sum(axis=0), n_out / n_in, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(3, 30), h=st.integers(0, 6), seed=st.integers(0, 1000))
def test_conv_matrix_matches_numpy_convolve(n, h, seed):
    rng = np.random.default_rng(seed)
    f1, v = rng.standard_normal(2 * h + 1), rng.standard_normal(n)
    full = np.convolve(v, f1, mode="full")
    np.testing.assert_allclose(_conv_matrix(f1, n) @ v, full[h:h + n], atol=1e-12)


# ---------------------------------------------------------------- RFF / ReLU
def _gauss(X, Z, bw):
    d2 = ((X[:, None, :] - Z[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / (2 * bw * bw))


def test_rff_approaches_gaussian_kernel_as_D_grows():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 5))
    K = _gauss(X, X, 2.0)
    errs = []
    for D in (64, 1024, 16384):
        F = RandomFourierFeatures(D, bandwidth=2.0, seed=3).fit_transform(X)
        errs.append(np.abs(F @ F.T - K).max())
        # Hoeffding + union bound over the 40*41/2 pairs, delta = 1e-3 overall
        bound = 2 * math.sqrt(math.log(2 * 820 / 1e-3) / (2 * D))
        assert errs[-1] <= bound
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 0.05


def test_relu_features_approach_arccos_kernel():
    X = np.random.default_rng(2).standard_normal((30, 4))
    K = arccos1_kernel(X, X)
    F = RandomReLUFeatures(40000, seed=1).fit_transform(X)
    rel = np.abs(F @ F.T - K).max() / np.abs(K).max()
    assert rel < 0.05
    assert (F >= 0).all()


def test_median_heuristic_and_seeds():
    X = np.random.default_rng(0).standard_normal((300, 3))
    rff = RandomFourierFeatures(16, seed=5).fit(X)
    d = np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1))[np.triu_indices(300, 1)]
    assert rff.bandwidth_ == pytest.approx(np.median(d))
    assert median_heuristic(X) == pytest.approx(np.median(d))
    a = RandomFourierFeatures(16, seed=5).fit_transform(X)
    b = RandomFourierFeatures(16, seed=5).fit_transform(X)
    c = RandomFourierFeatures(16, seed=6).fit_transform(X)
    assert np.array_equal(a, b) and not np.allclose(a, c)
    assert rff.seed_ == 5


# ---------------------------------------------------------------- random conv
def test_extract_patches_and_conv_equal_direct_correlation():
    rng = np.random.default_rng(3)
    imgs = rng.random((2, 7, 8, 3))
    P = extract_patches(imgs, 3)
    assert P.shape == (2, 5 * 6, 27)
    np.testing.assert_array_equal(P[1, 2 * 6 + 4], imgs[1, 2:5, 4:7, :].ravel())
    f = rng.standard_normal((3, 3, 3))
    want = sum(scipy.signal.correlate2d(imgs[0, :, :, c], f[:, :, c], mode="valid")
               for c in range(3))
    np.testing.assert_allclose((P[0] @ f.ravel()).reshape(5, 6), want, atol=1e-12)


def _conv(**kw):
    # power 1 (no power normalization): the direct formulas below are of the pooled values
    base = dict(image_shape=(10, 10, 3), n_filters=37, patch_size=3, pool=2, n_patches=500,
                dtype="float64", power=1.0)
    base.update(kw)
    return RandomConvFeatures(**base)


@pytest.mark.parametrize("init", ["zca", "gaussian"])
def test_random_conv_chunked_equals_unchunked_and_direct(init):
    X = _imgs(9, (10, 10, 3), seed=4)
    # without per-patch normalization (its formula: the patch_norm test below)
    a = _conv(filter_init=init, chunk_size=5, batch_size=2, standardize=False,
              patch_norm=None).fit(X)
    b = _conv(filter_init=init, chunk_size=1000, batch_size=100, standardize=False,
              patch_norm=None).fit(X)
    np.testing.assert_array_equal(a.filters_, b.filters_)
    Fa, Fb = a.transform(X), b.transform(X)
    np.testing.assert_allclose(Fa, Fb, atol=1e-12)
    # direct formula for one image, one filter
    img = X[3].reshape(10, 10, 3)
    r = np.array([[img[i:i + 3, j:j + 3].ravel() @ a.filters_[11] + a.biases_[11]
                   for j in range(8)] for i in range(8)])
    P = pooling_matrix(8, 2)
    t = a.threshold
    pos = P @ np.maximum(r - t, 0) @ P.T
    neg = P @ np.maximum(-r - t, 0) @ P.T
    np.testing.assert_allclose(Fa[3, 11 * 8:12 * 8], np.concatenate([pos.ravel(), neg.ravel()]),
                               atol=1e-12)


def test_random_conv_calibration_and_zca():
    X = _imgs(30, (10, 10, 3), seed=5)
    m = _conv(n_patches=2000, patch_norm=None).fit(X)
    # whitening: Z Sigma Z ~ I up to the regularization (eigenvalues lam/(lam+eps))
    P = m._sample_patches(X, 2000, np.random.default_rng([0, 0]))
    Pc = P - m.patch_mean_
    assert np.allclose(m.patch_mean_, P.mean(0))
    ev = np.linalg.eigvalsh(m.whitening_ @ (Pc.T @ Pc / 1999) @ m.whitening_)
    assert ev.max() <= 1.0 + 1e-9
    # responses are calibrated to mean 0, std 1 on the sample patches
    resp = P @ m.filters_.T + m.biases_
    np.testing.assert_allclose(resp.mean(0), 0, atol=1e-9)
    np.testing.assert_allclose(resp.std(0), 1, atol=1e-9)


def test_random_conv_prefix_and_seeds_and_standardize():
    X = _imgs(12, (10, 10, 3), seed=6)
    small = _conv(n_filters=130, standardize=False).fit(X)
    big = _conv(n_filters=300, standardize=False).fit(X)
    np.testing.assert_array_equal(big.filters_[:130], small.filters_)
    np.testing.assert_allclose(big.transform(X)[:, :130 * 8], small.transform(X), atol=1e-12)
    other = _conv(n_filters=130, standardize=False, seed=1).fit(X)
    assert not np.allclose(other.filters_, small.filters_)
    again = _conv(n_filters=130, standardize=False).fit(X)
    np.testing.assert_array_equal(again.filters_, small.filters_)
    # standardized: fit_transform (one pass) == fit then transform; train stats 0/1
    s = _conv(n_filters=20)
    F1 = s.fit_transform(X)
    F2 = _conv(n_filters=20).fit(X).transform(X)
    np.testing.assert_allclose(F1, F2, atol=1e-10)
    live = s.feature_scale_ != 1.0
    np.testing.assert_allclose(F1.mean(0), 0, atol=1e-9)
    np.testing.assert_allclose(F1.std(0)[live], 1, atol=1e-7)


def test_random_conv_patch_norm_is_the_per_patch_formula():
    X = _imgs(9, (10, 10, 3), seed=8)
    m = _conv(patch_norm=0.05, standardize=False).fit(X)
    # eps is relative to the mean variance of the (raw) patch sample
    P = m._sample_patches(X, 500, np.random.default_rng([0, 0]))
    assert m.patch_eps_ == pytest.approx(0.05 * P.var(axis=1).mean(), rel=1e-12)
    # direct formula for one image, one filter: each patch normalized by its own mean/var
    img = X[2].reshape(10, 10, 3)

    def resp(p):
        q = (p - p.mean()) / np.sqrt(p.var() + m.patch_eps_)
        return q @ m.filters_[5] + m.biases_[5]

    r = np.array([[resp(img[i:i + 3, j:j + 3].ravel()) for j in range(8)] for i in range(8)])
    Pm = pooling_matrix(8, 2)
    t = m.threshold
    want = np.concatenate([(Pm @ np.maximum(r - t, 0) @ Pm.T).ravel(),
                           (Pm @ np.maximum(-r - t, 0) @ Pm.T).ravel()])
    F = m.transform(X)
    np.testing.assert_allclose(F[2, 5 * 8:6 * 8], want, atol=1e-12)
    # the filters and the calibration see normalized patches: responses on the normalized
    # sample have mean 0 and std 1
    Q = m._normalize_patches(P.copy())
    np.testing.assert_allclose(Q.mean(axis=1), 0, atol=1e-12)
    rs = Q @ m.filters_.T + m.biases_
    np.testing.assert_allclose(rs.mean(0), 0, atol=1e-9)
    np.testing.assert_allclose(rs.std(0), 1, atol=1e-9)
    # a brightness shift of the images is removed patch by patch; without it, it is not
    shifted = X + 0.3
    np.testing.assert_allclose(m.transform(shifted), F, atol=1e-9)
    plain = _conv(standardize=False, patch_norm=None).fit(X)
    assert not np.allclose(plain.transform(shifted), plain.transform(X), atol=1e-3)
    assert plain.patch_eps_ is None


def test_random_conv_power_raises_each_pooled_feature():
    X = _imgs(7, (10, 10, 3), seed=3)
    plain = _conv(standardize=False).fit(X).transform(X)
    assert plain.min() >= 0 and (plain > 0).any()  # averages of max(0, .)
    for p in (0.5, 0.7):
        F = _conv(standardize=False, power=p).fit(X).transform(X)
        np.testing.assert_allclose(F, plain ** p, rtol=1e-12, atol=1e-15)
    # standardized after the power: each live feature has mean 0 and std 1 over the fit set
    m = _conv(power=0.5).fit(X)
    S = m.transform(X)
    live = m.feature_scale_ != 1.0
    np.testing.assert_allclose(S.mean(0), 0, atol=1e-9)
    np.testing.assert_allclose(S.std(0)[live], 1, atol=1e-7)


@pytest.mark.parametrize("bad", [0, -0.5, 1.5, float("nan"), "x"])
def test_random_conv_power_rejects_bad_values(bad):
    with pytest.raises(InputError, match="power"):
        _conv(power=bad).fit(_imgs(4, (10, 10, 3)))


@pytest.mark.parametrize("bad", [0, -0.1, float("nan"), "x"])
def test_random_conv_patch_norm_rejects_bad_values(bad):
    with pytest.raises(InputError, match="patch_norm"):
        _conv(patch_norm=bad).fit(_imgs(4, (10, 10, 3)))


# ---------------------------------------------------------------- sklearn API
@pytest.mark.parametrize("est", [
    GaborFeatures((12, 12), pool=3),
    RandomFourierFeatures(8, bandwidth=1.5),
    RandomReLUFeatures(8),
    RandomConvFeatures((10, 10, 3), n_filters=4, patch_size=3, n_patches=100),
])
def test_sklearn_api(est):
    params = est.get_params()
    c = clone(est)
    assert c.get_params() == params
    c.set_params(seed=3)
    assert c.seed == 3 and est.seed == 0
    width = 144 if isinstance(est, GaborFeatures) else 300
    X = _imgs(6, (width,))
    F = c.fit(X).transform(X)
    assert F.shape == (6, c.n_features_out_)
    assert c.seed_ == 3 and c.n_features_in_ == width
    assert not hasattr(est, "seed_")  # clone did not fit the original
    with pytest.raises(Exception, match="not fitted"):
        clone(est).transform(X)
    np.testing.assert_allclose(c.fit_transform(X), F, atol=1e-6)


def test_make_feature_map_names():
    assert make_feature_map("raw", image_shape=(28, 28)) is None
    g = make_feature_map("gabor", image_shape=(28, 28), seed=2, scales=3)
    assert isinstance(g, GaborFeatures) and g.scales == 3 and g.seed == 2
    r = make_feature_map("rff", image_shape=(), n_components=5)
    assert isinstance(r, RandomFourierFeatures)
    with pytest.raises(InputError, match="unknown parameter"):
        make_feature_map("rff", image_shape=(), scales=3)
    with pytest.raises(InputError, match="unknown feature map"):
        make_feature_map("sift", image_shape=(28, 28))
