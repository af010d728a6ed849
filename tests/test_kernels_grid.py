"""Integer-grid inputs (8-bit pixels): exact float32 inner products, float64 fallback."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from kernelfit import KernelInterpolator
from kernelfit.errors import InputError
from kernelfit.kernels import Kernel, get_kernel, integer_grid, to_integer_grid


def _exact_sq_dist(Ka, Kb):
    """Squared distances of integer rows in int64 arithmetic (exact), as float64."""
    Ka, Kb = Ka.astype(np.int64), Kb.astype(np.int64)
    g = Ka @ Kb.T
    return ((Ka * Ka).sum(1)[:, None] + (Kb * Kb).sum(1)[None, :] - 2 * g).astype(np.float64)


def test_integer_grid_detects_the_scale():
    rng = np.random.default_rng(0)
    k = rng.integers(0, 256, (300, 20))
    assert integer_grid(k / 255.0) == 255.0
    assert integer_grid(k.astype(np.float64)) == 1.0
    assert integer_grid(k / 255.0 + 1e-9) is None          # off the grid
    X = k / 255.0
    X[-1, -1] += 1e-3                                       # one entry off: the full check
    assert integer_grid(X) is None
    assert integer_grid(np.full((3, 2), 2.0 ** 25)) is None  # not exact in float32


def test_grid_expected_guesses_the_storage_from_a_sample():
    from kernelfit.grid import grid_expected

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (1000, 784)) * (rng.random((1000, 784)) < 0.2) / 255.0
    assert grid_expected("gaussian", pixels) and grid_expected("normalized", pixels)
    k, _ = to_integer_grid(get_kernel("gaussian", bandwidth=5.0), pixels)
    assert k.int_scale == 255.0                     # the guess and the solve agree
    assert not grid_expected("polynomial", pixels)  # a kernel the grid does not serve
    assert not grid_expected("gaussian", pixels + 1e-6)
    # CIFAR-like rows (3,072 8-bit values) reach |x|^2 >= 2^24: the solve keeps float64
    colour = rng.integers(0, 256, (500, 3072)) / 255.0
    assert not grid_expected("gaussian", colour)
    assert to_integer_grid(get_kernel("gaussian", bandwidth=5.0), colour)[0].int_scale is None


@settings(max_examples=30, deadline=None)
@given(arrays(np.int64, (12, 9), elements=st.integers(0, 255)),
       arrays(np.int64, (7, 9), elements=st.integers(0, 255)),
       st.sampled_from(["gaussian", "laplacian"]))
def test_grid_block_equals_exact_distances(Ka, Kb, name):
    h = 0.7
    Ka[0, 0] = Kb[0, 0] = 1  # 1/255 is off the unit grid: the scale must be 255
    kernel, G = to_integer_grid(get_kernel(name, bandwidth=h), Ka / 255.0)
    assert kernel.int_scale == 255.0 and G.dtype == np.float32
    B, _ = kernel.query(Kb / 255.0)
    assert B.dtype == np.float32
    D = _exact_sq_dist(Ka, Kb) / 255.0 ** 2
    want = np.exp(-D / (2 * h * h)) if name == "gaussian" else np.exp(-np.sqrt(D) / h)
    got = kernel.block(G, B)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-300)


def test_rows_past_the_bound_use_float64():
    """|k| |k'| >= 2^24: float32 accumulation would round; the block must stay exact."""
    rng = np.random.default_rng(1)
    Ka = rng.integers(3000, 4096, (6, 5))   # |k|^2 ~ 5 * 1.2e7 > 2^24
    Ka[:, 0] += 1                            # odd values: float32 cannot hold the sums
    kernel = Kernel("gaussian", bandwidth=2000.0, int_scale=1.0)
    G = Ka.astype(np.float32)
    # every row is past the bound: the whole block takes the float64 GEMM
    assert kernel._heavy_lines(G, G, kernel.prepare(G), kernel.prepare(G), np) is None
    want = np.exp(-_exact_sq_dist(Ka, Ka) / (2 * 2000.0 ** 2))
    np.testing.assert_allclose(kernel.block(G, G, same=True), want, rtol=1e-13)


@settings(max_examples=25, deadline=None)
@given(arrays(np.int64, (2, 8), elements=st.integers(1450, 2047)),
       arrays(np.int64, (30, 8), elements=st.integers(0, 255)), st.booleans())
def test_heavy_rows_are_made_again_exactly_in_float64(Ka, Kb, heavy_first):
    """|k|^2 just past 2^24 (MNIST has 3 such rows in 60,000): the block still takes the
    float32 GEMM, those rows' and columns' products are made again in float64, and the
    kernel values are the exact distances' (streamed or whole)."""
    Ka[:, 0] |= 1                             # odd sums: float32 rounding would show
    rows = np.vstack([Ka, Kb]) if heavy_first else np.vstack([Kb, Ka])
    kernel = Kernel("gaussian", bandwidth=1500.0, int_scale=1.0)
    G = rows.astype(np.float32)
    sq = kernel.prepare(G)
    assert sq.max() ** 2 >= 2.0 ** 48         # one GEMM would not be exact
    hr, hc = kernel._heavy_lines(G, G, sq, sq, np)
    want_idx = [0, 1] if heavy_first else [30, 31]
    assert list(hr) == want_idx and list(hc) == want_idx
    want = np.exp(-_exact_sq_dist(rows, rows) / (2 * 1500.0 ** 2))
    np.testing.assert_allclose(kernel.block(G, G, same=True), want, rtol=1e-13)
    got = np.empty_like(want)

    def sink(s, e, chunk):
        got[s:e] = chunk

    from kernelfit import kernels as kmod
    old_rows = kmod._chunk_rows
    kmod._chunk_rows = lambda ncols: 7        # several chunks, heavy rows in some of them
    try:
        assert kernel.block(G, G, same=True, sink=sink, a_stats=sq, b_stats=sq) is None
    finally:
        kmod._chunk_rows = old_rows
    np.testing.assert_allclose(got, want, rtol=1e-13)


def test_int_scale_is_validated():
    with pytest.raises(InputError, match="int_scale"):
        Kernel("polynomial", int_scale=255.0)
    with pytest.raises(InputError, match="positive"):
        Kernel("gaussian", int_scale=0.0)
    assert "int_scale" not in Kernel("gaussian", int_scale=255.0).params()


def test_estimator_stores_pixels_as_exact_integers():
    rng = np.random.default_rng(2)
    Xk = rng.integers(0, 256, (150, 30))
    y = rng.integers(0, 3, 150)
    X = Xk / 255.0
    est = KernelInterpolator(bandwidth=1.5).fit(X, y)
    assert est.fit_kernel_.int_scale == 255.0 and est.X_fit_.dtype == np.float32
    assert est.fit_kernel_.bandwidth == 1.5
    # kernel_ stays in the units of the inputs: kernel_(X) is the Gram matrix of X
    assert est.kernel_.int_scale is None
    np.testing.assert_allclose(est.kernel_(X), Kernel("gaussian", bandwidth=1.5)(X),
                               rtol=1e-13)
    KA = est.kernel_(X) @ est.alpha_
    Y = np.eye(3)[np.unique(y, return_inverse=True)[1]]
    assert np.linalg.norm(KA - Y) / np.linalg.norm(Y) < 1e-8
    assert "exact" in est.fit_info_["inner_products"]
    # the same model in plain float64 arithmetic
    ref = Kernel("gaussian", bandwidth=1.5)
    Q = rng.integers(0, 256, (20, 30)) / 255.0
    want = ref(Q, X) @ est.alpha_
    np.testing.assert_allclose(est.decision_function(Q), want, rtol=1e-9, atol=1e-9)
    # queries off the grid take the float64 path and are still right
    Qoff = Q + 1e-4
    np.testing.assert_allclose(est.decision_function(Qoff), ref(Qoff, X) @ est.alpha_,
                               rtol=1e-9, atol=1e-9)
    assert est.relative_residual_ < 1e-10


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2 ** 31), st.sampled_from(["gaussian", "laplacian"]))
def test_unit_rows_on_the_feature_grid_multiply_exactly_in_float32(seed, name):
    """Unit-norm rows rounded to multiples of 2^-11 (what the Gabor map gives) are found on
    the grid of scale 2048 (|k|^2 about 2^22 < 2^24): float32 integers, kernel values from
    exact squared distances, and an estimator fitted on them predicts as plain float64
    arithmetic does."""
    from kernelfit.grid import FEATURE_GRID

    rng = np.random.default_rng(seed)
    F = rng.standard_normal((60, 40)) * (rng.random((60, 40)) < 0.7)
    F[0] = rng.standard_normal(40)
    F /= np.maximum(np.linalg.norm(F, axis=1, keepdims=True), 1e-300)
    F = np.rint(F * FEATURE_GRID) / FEATURE_GRID
    h = 0.6
    kernel, G = to_integer_grid(get_kernel(name, bandwidth=h), F)
    assert kernel.int_scale == FEATURE_GRID and G.dtype == np.float32
    Ki = np.rint(F * FEATURE_GRID).astype(np.int64)
    D = _exact_sq_dist(Ki, Ki) / FEATURE_GRID ** 2
    want = np.exp(-D / (2 * h * h)) if name == "gaussian" else np.exp(-np.sqrt(D) / h)
    np.testing.assert_allclose(kernel(G), want, rtol=1e-13, atol=0)
    y = rng.integers(0, 3, 60)
    est = KernelInterpolator(kernel=name, bandwidth=h).fit(F, y)
    assert est.fit_kernel_.int_scale == FEATURE_GRID and est.X_fit_.dtype == np.float32
    assert "exact" in est.fit_info_["inner_products"]
    ref = get_kernel(name, bandwidth=h)
    np.testing.assert_allclose(est.decision_function(F[:10]), ref(F[:10], F) @ est.alpha_,
                               rtol=1e-9, atol=1e-9)


def test_off_grid_inputs_are_left_alone():
    rng = np.random.default_rng(3)
    X = rng.random((80, 6))
    est = KernelInterpolator(bandwidth=1.0).fit(X, rng.integers(0, 2, 80))
    assert est.fit_kernel_.int_scale is None and est.X_fit_.dtype == np.float64
    assert "inner_products" not in est.fit_info_


def test_grid_storage_is_skipped_when_most_rows_are_heavy():
    """CIFAR-like rows (|k|^2 >= 2^24 for most): no block could use float32."""
    rng = np.random.default_rng(4)
    X = rng.integers(100, 256, (50, 3072)) / 255.0
    kernel, G = to_integer_grid(get_kernel("gaussian", bandwidth=30.0), X)
    assert kernel.int_scale is None and G is X


def test_out_of_core_record_names_the_float64_products_it_ran(tmp_path):
    """The out-of-core (and Dask) placements build K's tiles from a float64 copy of X: the
    record must not claim float32 inner products for them (bench rates read it)."""
    rng = np.random.default_rng(5)
    X = rng.integers(0, 256, (120, 12)) / 255.0
    y = rng.integers(0, 3, 120)
    est = KernelInterpolator(bandwidth=1.5, ooc_dir=str(tmp_path / "ooc"), tile_size=40,
                             show_progress=False).fit(X, y)
    assert est.fit_kernel_.int_scale == 255.0 and est.fit_info_.get("out_of_core")
    note = est.fit_info_["inner_products"]
    assert note.startswith("float64") and "x * 255" in note
    from kernelfit.bench.suite import stage_dtypes

    assert stage_dtypes("mixed", note)["gram"] == "float64"
    assert est.relative_residual_ < 1e-8


def test_queries_on_the_grid_become_float32_integers_in_one_pass():
    from kernelfit.grid import _grid_float32

    rng = np.random.default_rng(4)
    X = rng.integers(0, 256, (300, 37)) / 255.0
    kernel = Kernel("gaussian", bandwidth=1.0, int_scale=255.0)
    G, _ = kernel.query(X)
    assert G.dtype == np.float32
    np.testing.assert_array_equal(G, np.rint(X * 255.0))
    off = X.copy()
    off[299, 36] += 1e-9                       # the last chunk is off the grid
    assert _grid_float32(off, 255.0, chunk=64) is None
    G64, _ = kernel.query(off)
    assert G64.dtype == np.float64 and np.allclose(G64, off * 255.0)
    Xi = X * 255.0
    assert _grid_float32(Xi, 1.0) is not None
    for bad in (np.nan, np.inf, 2.0 ** 25):   # never float32: not finite, or past 2^24
        Z = Xi.copy()
        Z[150, 3] = bad
        assert _grid_float32(Z, 1.0) is None


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 700), st.integers(1, 60), st.sampled_from(["gaussian", "laplacian",
                                                                  "normalized"]),
       st.booleans(), st.integers(0, 2 ** 16))
def test_streamed_block_hands_every_row_chunk_once_with_the_same_values(m, ncols, name,
                                                                         heavy, seed):
    """``block(sink=, scratch=)``: the finished rows reach the sink chunk by chunk, equal to
    the whole block's; on the float32 GEMM path no float64 block is written (None back),
    the float32 product reuses the scratch buffer, and a heavy row (made again in float64)
    gives the same values."""
    from kernelfit.solvers.tiles import BlockBuffer

    rng = np.random.default_rng(seed)
    Ka = rng.integers(1, 256, (m, 40))
    Kb = rng.integers(1, 256, (ncols, 40))
    if heavy:  # |k|^2 past 2^24: that row's products are made again in float64
        Ka[0] = 4000
    kernel = Kernel(name, bandwidth=900.0, degree=2, int_scale=1.0)
    A, B = Ka.astype(np.float32), Kb.astype(np.float32)
    sa, sb = kernel.prepare(A), kernel.prepare(B)
    want = kernel.block(A, B, a_stats=sa, b_stats=sb)
    got = np.full(want.shape, np.nan)
    seen = []

    def sink(s, e, chunk):
        seen.append((s, e))
        got[s:e] = chunk

    scratch = BlockBuffer(None, m, ncols)
    products = []
    for _ in range(2):  # a second block reuses the same buffers
        got[...] = np.nan
        back = kernel.block(A, B, a_stats=sa, b_stats=sb, sink=sink, scratch=scratch)
        products.append(scratch._f32)
        np.testing.assert_array_equal(got, want)
        assert seen[0][0] == 0 and seen[-1][1] == m and all(
            e == s2 and s2 < e2 for (_, e), (s2, e2) in zip(seen, seen[1:]))
        seen.clear()
    if kernel._heavy_lines(A, B, sa, sb, np) is not None:  # the float32 GEMM
        assert products[0] is not None and products[1] is products[0]
        assert back is None and scratch._flat is None  # never a whole float64 block
    else:  # the float64 GEMM, into the scratch's float64 block
        assert back is not None and products == [None, None]


def test_row_norms_of_float32_rows_are_the_float64_ones_without_a_float64_copy():
    from kernelfit.kernels import row_norms_sq

    rng = np.random.default_rng(3)
    X = rng.integers(0, 256, (1500, 33)).astype(np.float32)
    X64 = X.astype(np.float64)
    np.testing.assert_array_equal(row_norms_sq(X, rows=64), np.einsum("ij,ij->i", X64, X64))
    Y = rng.standard_normal((700, 9)).astype(np.float32)
    Y64 = Y.astype(np.float64)
    np.testing.assert_array_equal(row_norms_sq(Y, rows=100), np.einsum("ij,ij->i", Y64, Y64))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 300), st.integers(2, 40), st.integers(0, 2 ** 16), st.booleans(),
       st.sampled_from([8, 64, 1 << 15]))
def test_grid_cast_takes_columns_and_norms_in_one_pass(n, d, seed, drop, chunk):
    """The fused pass (check, column take, float32 cast, norms over all columns) gives what
    the separate steps give, bit for bit, for any chunking; the kernel's ``query`` of new
    rows keeps the fitted columns but takes its norms over all of them."""
    from kernelfit.grid import _grid_float32
    from kernelfit.kernels import active_columns, row_norms_sq

    rng = np.random.default_rng(seed)
    K = rng.integers(0, 256, (n, d)).astype(np.float64)
    if drop:
        K[:, rng.choice(d, size=d // 2, replace=False)] = 0.0
    K[0, 0] = 1.0                                  # 1/255: the scale must be 255
    X = K / 255.0
    cols = active_columns(X)
    want = (K if cols is None else K[:, cols]).astype(np.float32)
    norms = np.empty(n)
    G = _grid_float32(X, 255.0, chunk=chunk, columns=cols, norms=norms)
    np.testing.assert_array_equal(G, want)
    np.testing.assert_array_equal(norms, row_norms_sq(K))
    kernel, G2 = to_integer_grid(get_kernel("gaussian", bandwidth=2.0), X, columns=cols)
    assert kernel.int_scale == 255.0
    np.testing.assert_array_equal(G2, want)
    Q = rng.integers(0, 256, (7, d)) / 255.0     # queries: non-zero in dropped columns too
    Qg, stats = kernel.query(Q, columns=cols)
    np.testing.assert_array_equal(Qg, np.rint(Q * 255.0)[:, slice(None) if cols is None
                                                           else cols].astype(np.float32))
    np.testing.assert_array_equal(stats, row_norms_sq(np.rint(Q * 255.0)))
    Qoff = Q + 1e-9                                # off the grid: float64, same contract
    Qo, stats_o = kernel.query(Qoff, columns=cols)
    assert Qo.dtype == np.float64 and Qo.shape == Qg.shape
    np.testing.assert_allclose(stats_o, row_norms_sq(Qoff * 255.0), rtol=1e-12)


def test_grid_cast_refuses_too_many_heavy_rows_and_unchanged_inputs_keep_their_columns():
    from kernelfit.grid import grid_float32

    X = np.zeros((40, 300))
    X[:, :] = 255.0 / 255.0                     # |k|^2 = 300 * 255^2 >= 2^24: every row heavy
    X[0, 0] = 1 / 255.0
    assert grid_float32(X, max_heavy=39) is None
    assert grid_float32(X, max_heavy=40)[0] == 255.0
    cols = np.array([0, 2, 5])
    k0 = get_kernel("gaussian", bandwidth=2.0)
    kernel, Xb = to_integer_grid(k0, X, columns=cols)   # 40 heavy rows > 40 // 4096
    assert kernel.int_scale is None and Xb.dtype == np.float64
    np.testing.assert_array_equal(Xb, X[:, cols])
    kernel, Xb = to_integer_grid(get_kernel("linear"), X, columns=cols)
    np.testing.assert_array_equal(Xb, X[:, cols])


def test_query_refuses_a_zero_row_for_the_normalized_kernel_on_the_grid():
    kernel = Kernel("normalized", degree=2, int_scale=255.0)
    Q = np.ones((3, 4)) / 255.0
    Q[1] = 0.0
    with pytest.raises(InputError, match="all zeros"):
        kernel.query(Q)


def test_grid_cast_refuses_columns_outside_the_array():
    from kernelfit.grid import _grid_float32

    X = np.ones((4, 3)) / 255.0
    for bad in ([0, 3], [-1], [[0, 1]]):
        with pytest.raises(InputError, match="columns must be indices"):
            _grid_float32(X, 255.0, columns=np.array(bad))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 300), st.integers(1, 200), st.sampled_from(["gaussian", "laplacian",
                                                                  "normalized"]),
       st.booleans(), st.integers(0, 2 ** 16))
def test_float32_grid_blocks_equal_the_float64_gemm_bit_for_bit(m, ncols, name, heavy, seed):
    """The float32 GEMM path (distances made in the cast, no clamp, heavy rows again in
    float64) gives the very values of the float64 GEMM path on the same integers."""
    from kernelfit.solvers.tiles import BlockBuffer

    rng = np.random.default_rng(seed)
    A = rng.integers(0, 256, (m, 30)).astype(np.float32)
    B = rng.integers(0, 256, (ncols, 30)).astype(np.float32)
    if heavy:  # one row past 2^24 on each side: its products are made again in float64
        A = np.hstack([A, np.zeros((m, 260), np.float32)])
        B = np.hstack([B, np.zeros((ncols, 260), np.float32)])
        A[0, 30:] = 255.0
        B[-1, 30:] = 255.0
    A[0, 0] = B[0, 0] = 1.0  # no all-zero row (normalized)
    k = Kernel(name, bandwidth=0.8, degree=2, int_scale=255.0)
    a, b = k.prepare(A), k.prepare(B)
    got = np.empty((m, ncols))

    def sink(s, e, chunk):
        got[s:e] = chunk

    # (a block with more than one heavy row in 8 takes the float64 GEMM itself)
    k.block(A, B, a_stats=a, b_stats=b, sink=sink,
            scratch=BlockBuffer(None, max(m, ncols), max(m, ncols)))
    with pytest.MonkeyPatch.context() as mp:  # the same stored integers, float64 GEMM
        mp.setattr(Kernel, "_heavy_lines", lambda *args: None)
        want = k.block(A, B, a_stats=a, b_stats=b)
    np.testing.assert_array_equal(got, want)
    # float64 inputs (they need not be integers) are finished by NumPy's exp: the same
    # values off the Gaussian; its values agree within the rounding of exp's argument x
    plain = k.block(A.astype(np.float64), B.astype(np.float64), a_stats=a, b_stats=b)
    if name != "gaussian":
        np.testing.assert_array_equal(got, plain)
    else:
        x = _exact_sq_dist(A, B).max() / (2 * (0.8 * 255.0) ** 2)
        np.testing.assert_allclose(got, plain, rtol=(4 + 2 * x) * 2.0 ** -52, atol=1e-300)


def _exact_gaussian(k, h):
    """exp(-k / (2 h^2)) in extended precision, rounded once to float64."""
    c = np.longdouble(-1.0) / (2 * np.longdouble(h) ** 2)
    return np.exp(c * np.asarray(k, dtype=np.longdouble)).astype(np.float64)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2 ** 16), st.sampled_from([2 ** 13, 2 ** 22, 2 ** 26, 2 ** 32 - 1]),
       st.floats(100.0, 5000.0))
def test_gaussian_of_exact_integers_by_lookup_is_within_two_ulps(seed, top, h):
    from kernelfit.grid import LOOKUP_BITS, gaussian_of_exact

    rng = np.random.default_rng(seed)
    k = np.floor(rng.random((7, 33)) * top)
    k[0, :4] = [0, 2 ** LOOKUP_BITS - 1, 2 ** LOOKUP_BITS, top - 1]
    want = _exact_gaussian(k, h)
    for lookup in (True, False):
        S = k.copy()
        gaussian_of_exact(S, h, lookup=lookup)
        # NumPy's exp also carries the rounding of its argument x = k * (-1 / (2 h^2)), up
        # to about 2 |x| units (the scale's and the product's)
        ulps = 2.0 if lookup else 2.0 + 2.0 * (k / (2 * h * h)).max()
        np.testing.assert_allclose(S, want, rtol=ulps * 2.0 ** -52, atol=1e-300)
    assert gaussian_of_exact(np.zeros((2, 2)), h) is None  # in place


def test_gaussian_of_exact_takes_numpys_exp_past_the_table_range():
    from kernelfit.grid import gaussian_of_exact

    S = np.array([[0.0, 2.0 ** 32, 2.0 ** 40]])
    gaussian_of_exact(S, 2.0 ** 19, lookup=True)
    np.testing.assert_allclose(S, np.exp(-np.array([[0.0, 2.0 ** 32, 2.0 ** 40]])
                                         / 2.0 ** 39), rtol=1e-15)


@pytest.mark.parametrize("slow", [True, False])
def test_lookup_is_chosen_where_measured_faster_once_per_process(monkeypatch, slow):
    import time

    import kernelfit.grid as grid

    real = grid.gaussian_of_exact

    def timed(S, h, lookup=None):  # the way named ``slow`` takes 5 ms longer
        if lookup == slow:
            time.sleep(0.005)
        real(S, h, lookup=lookup)

    monkeypatch.setattr(grid, "gaussian_of_exact", timed)
    grid._lookup_measured.cache_clear()
    try:
        assert grid.lookup_exp_faster() is (not slow)
        monkeypatch.setattr(grid, "gaussian_of_exact", real)
        assert grid.lookup_exp_faster() is (not slow)  # measured once: cached
    finally:
        grid._lookup_measured.cache_clear()


def test_lookup_choice_is_measured_by_one_thread_while_the_others_wait(monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    import kernelfit.grid as grid

    real, calls = grid.gaussian_of_exact, []

    def counted(S, h, lookup=None):
        calls.append(lookup)
        real(S, h, lookup=lookup)

    monkeypatch.setattr(grid, "gaussian_of_exact", counted)
    grid._lookup_measured.cache_clear()
    try:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: grid.lookup_exp_faster(), range(8)))
    finally:
        grid._lookup_measured.cache_clear()
    assert len(set(answers)) == 1 and len(calls) == 10  # one measurement: 5 + 5 timings


def test_a_gaussian_kernel_put_on_the_grid_has_its_finish_chosen_already(monkeypatch):
    import kernelfit.grid as grid

    grid._lookup_measured.cache_clear()
    try:
        X = np.random.default_rng(0).integers(0, 256, (20, 5)) / 255.0
        k, _ = to_integer_grid(get_kernel("gaussian", bandwidth=1.0), X)
        assert k.int_scale == 255.0 and grid._lookup_measured.cache_info().currsize == 1
    finally:
        grid._lookup_measured.cache_clear()
