"""KernelInterpolator: exactness, scikit-learn compatibility, fallbacks and bad input."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler

from kernelfit import KernelInterpolator
from kernelfit.errors import InputError, MemoryPlanError, NotPositiveDefiniteError


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


def test_interpolates_exactly_and_generalizes(digits):
    X, y = digits
    m = KernelInterpolator(kernel="gaussian", bandwidth=2.0, tile_size=200).fit(X[:1200], y[:1200])
    assert m.train_error_ == 0.0
    assert m.relative_residual_ < 1e-10
    assert m.rkhs_norm_ > 0
    assert m.score(X[1200:], y[1200:]) > 0.95
    assert m.alpha_.shape == (1200, 10)
    assert set(m.timings_) >= {"gram", "factor", "solve", "residual"}
    # the solve really satisfies K alpha = Y
    K = m.kernel_(X[:1200])
    Y = np.eye(10)[y[:1200]]
    assert np.linalg.norm(K @ m.alpha_ - Y) / np.linalg.norm(Y) < 1e-10


def test_matches_dense_solve(digits):
    X, y = digits
    X, y = X[:300], y[:300]
    m = KernelInterpolator(kernel="laplacian", bandwidth=3.0, tile_size=64).fit(X, y)
    K = m.kernel_(X)
    alpha_ref = np.linalg.solve(K, np.eye(10)[y])
    np.testing.assert_allclose(m.alpha_, alpha_ref, rtol=1e-8, atol=1e-8)


def test_string_labels_and_regression(digits):
    X, y = digits
    labels = np.array(["even", "odd"])[y[:200] % 2]
    m = KernelInterpolator(bandwidth=2.0).fit(X[:200], labels)
    assert set(m.predict(X[200:220])) <= {"even", "odd"}
    target = X[:200, 10] * 3 - 1
    with pytest.warns(UserWarning, match="continuous"):
        r = KernelInterpolator(bandwidth=2.0).fit(X[:200], target)
    assert r.task_ == "regression" and r.predict(X[:5]).shape == (5,)
    np.testing.assert_allclose(r.predict(X[:200]), target, atol=1e-8)


def test_sklearn_pipeline_clone_and_cv(digits):
    X, y = digits
    pipe = make_pipeline(MinMaxScaler(), KernelInterpolator(bandwidth=2.5))
    scores = cross_val_score(pipe, X[:600], y[:600], cv=3)
    assert scores.mean() > 0.9
    c = clone(KernelInterpolator(kernel="normalized", degree=3))
    assert c.get_params()["degree"] == 3 and not hasattr(c, "alpha_")


def test_float32_storage(digits):
    X, y = digits
    m = KernelInterpolator(bandwidth=2.0, dtype="float32").fit(X[:500], y[:500])
    assert m.train_error_ == 0.0 and m.relative_residual_ < 1e-3


def test_singular_kernel_error_and_fallbacks(digits):
    X, y = digits
    # 9 of the 64 pixel columns are zero in every one of these 300 images
    with pytest.raises(NotPositiveDefiniteError,
                       match=r"rank at most d = 55 \(the columns of X that are not zero in "
                             r"every row\) < n = 300"):
        KernelInterpolator(kernel="linear").fit(X[:300], y[:300])
    for solver in ("eigh", "lstsq"):
        m = KernelInterpolator(kernel="linear", solver=solver).fit(X[:300], y[:300])
        assert m.fit_info_["rank"] <= 64
        # minimum-norm solution: alpha lies in the range of K
        assert np.isfinite(m.rkhs_norm_)


def test_duplicate_points_are_named(digits):
    X, y = digits
    Xd = np.vstack([X[:50], X[:1]])
    yd = np.concatenate([y[:50], [(y[0] + 1) % 10]])
    with pytest.raises(NotPositiveDefiniteError, match="duplicates") as err:
        KernelInterpolator(bandwidth=2.0).fit(Xd, yd)
    # the copy's label differs: no function interpolates both, whatever the solver
    assert err.value.facts["n_duplicates"] == 1 and err.value.facts["n_conflicting"] == 1
    assert "1 of them with another target than their copy" in str(err.value)
    assert "removing the duplicate points (one target per point)" in str(err.value)
    yd[-1] = y[0]  # the same label: removing the copy changes nothing the fit needs
    with pytest.raises(NotPositiveDefiniteError, match="duplicates") as err:
        KernelInterpolator(bandwidth=2.0).fit(Xd, yd)
    assert err.value.facts["n_conflicting"] == 0 and "another target" not in str(err.value)


def test_median_bandwidth(digits):
    X, y = digits
    m = KernelInterpolator(bandwidth="median").fit(X[:300], y[:300])
    assert 1.0 < m.kernel_.bandwidth < 10.0


@pytest.mark.parametrize("kwargs,X,y,match", [
    ({}, np.array([[1.0, np.nan], [0.0, 1.0]]), [0, 1], "NaN"),
    ({}, np.ones((3, 2)), [0, 1], "inconsistent numbers of samples"),
    ({"kernel": "bogus"}, np.eye(3), [0, 1, 2], "unknown kernel"),
    ({"solver": "qr"}, np.eye(3), [0, 1, 2], "is unknown"),
    ({"dtype": "float16"}, np.eye(3), [0, 1, 2], "dtype"),
    ({"ridge": -1.0}, np.eye(3), [0, 1, 2], "ridge"),
    ({"bandwidth": "wide"}, np.eye(3), [0, 1, 2], "bandwidth"),
    ({"device": "tpu"}, np.eye(3), [0, 1, 2], "unknown device"),
    ({"kernel": "normalized"}, np.array([[0.0, 0.0], [1.0, 0.0]]), [0, 1], "all zeros"),
])
def test_bad_input(kwargs, X, y, match):
    with pytest.raises(InputError, match=match):
        KernelInterpolator(**kwargs).fit(X, y)


def test_predict_checks_features(digits):
    X, y = digits
    m = KernelInterpolator(bandwidth=2.0).fit(X[:100], y[:100])
    with pytest.raises(InputError, match="features"):
        m.predict(X[:5, :10])


def test_memory_refusal(monkeypatch, digits):
    X, y = digits
    monkeypatch.setenv("KERNELFIT_MEMORY_LIMIT", str(200_000))
    with pytest.raises(MemoryPlanError, match="available") as err:
        KernelInterpolator(bandwidth=2.0).fit(X[:1000], y[:1000])
    assert err.value.required_bytes > err.value.available_bytes


def test_zero_columns_are_dropped_exactly():
    """Columns zero in every training row are left out of the GEMMs; predictions on
    queries that are non-zero there still use their full norms."""
    rng = np.random.default_rng(4)
    X = rng.random((120, 8))
    X[:, [0, 5, 6]] = 0.0
    y = rng.integers(0, 3, 120)
    Q = rng.random((30, 8))
    for kname in ("gaussian", "normalized", "laplacian", "polynomial"):
        m = KernelInterpolator(kernel=kname, bandwidth=1.5, degree=2, ridge=1e-3).fit(X, y)
        np.testing.assert_array_equal(m.support_, [1, 2, 3, 4, 7])
        assert m.X_fit_.shape == (120, 5) and m.n_features_in_ == 8
        k = m.kernel_
        alpha = np.linalg.solve(k(X) + 1e-3 * np.eye(120), np.eye(3)[y])
        np.testing.assert_allclose(m.decision_function(Q), k(Q, X) @ alpha, rtol=1e-7,
                                   atol=1e-9)
    m = KernelInterpolator().fit(rng.random((20, 3)), rng.integers(0, 2, 20))
    assert m.support_ is None


def test_residual_from_kept_copy_and_fallback(monkeypatch):
    """K alpha comes from the copy of K kept through the factorization when it fits (the
    diagonal tiles alone when only they fit), and is recomputed otherwise; all give the
    same residual."""
    rng = np.random.default_rng(2)
    X, y = rng.random((300, 6)), rng.integers(0, 4, 300)
    kept = KernelInterpolator(bandwidth=0.8, tile_size=128).fit(X, y)
    assert kept.fit_info_["kept_k_for_residual"] is True
    assert kept.fit_info_["kept_off_diagonal_tiles"] == 3
    assert "K copy (residual)" in kept.memory_plan_["items"]
    # memory for the tiles and the solve: plus n floats, or not even that
    from kernelfit.memory import plan_exact_solve

    plan = plan_exact_solve(300, 6, 4, tile_size=128)
    plan.items.pop("predictions")
    plan.items.pop("data")
    monkeypatch.setenv("KERNELFIT_MEMORY_LIMIT", str(int(plan.total / 0.9) + 5000))
    diag = KernelInterpolator(bandwidth=0.8, tile_size=128).fit(X, y)
    assert diag.fit_info_["kept_k_for_residual"] is True
    assert diag.fit_info_["kept_off_diagonal_tiles"] == 0
    assert diag.memory_plan_["items"]["K copy (residual)"] == 8 * 300
    monkeypatch.setenv("KERNELFIT_MEMORY_LIMIT", str(int(plan.total / 0.9) + 1000))
    redone = KernelInterpolator(bandwidth=0.8, tile_size=128).fit(X, y)
    assert redone.fit_info_["kept_k_for_residual"] is False
    assert "K copy (residual)" not in redone.memory_plan_["items"]
    for m in (kept, diag, redone):
        assert m.relative_residual_ < 1e-10 and m.train_error_ == 0.0
        np.testing.assert_allclose(m.relative_residual_, kept.relative_residual_, rtol=0.2,
                                   atol=1e-15)
        np.testing.assert_allclose(m.rkhs_norm_, kept.rkhs_norm_, rtol=1e-10)
    monkeypatch.delenv("KERNELFIT_MEMORY_LIMIT")
    no_res = KernelInterpolator(bandwidth=0.8, compute_residual=False).fit(X, y)
    assert no_res.fit_info_["kept_k_for_residual"] is False
    assert no_res.relative_residual_ is None


def test_one_label_rule_continuous_targets_warn_unless_regression_asked(digits):
    import warnings

    X, y = digits
    target = X[:100, 10] * 3 - 1
    with pytest.warns(UserWarning, match="continuous"):
        m = KernelInterpolator(bandwidth=2.0).fit(X[:100], target)
    assert m.task_ == "regression"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = KernelInterpolator(bandwidth=2.0, task="regression").fit(X[:100], target)
        # whole-number floats are classes, as in the datasets (kernelfit.labels)
        c = KernelInterpolator(bandwidth=2.0).fit(X[:100], y[:100].astype(float))
    assert r.task_ == "regression" and c.task_ == "classification"


def test_labels_of_one_type_and_at_least_two_classes(digits):
    """Mixed strings and numbers, or other objects, are refused naming what was found
    (np.unique raised a bare TypeError); one class is refused with the regression way out,
    which works."""
    X, _ = digits
    for y, found in (([1, "a", 2, "b", 1, "a"], "strings mixed with other values"),
                     (["a", None, "b", "a", "b", "a"], "strings mixed with other values"),
                     ([1.5, None, 1, 2, 3, 4], "objects of type float")):
        with pytest.raises(InputError, match=found):
            KernelInterpolator(bandwidth=2.0).fit(X[:6], np.array(y, dtype=object))
    with pytest.raises(InputError, match="only one class"):
        KernelInterpolator(bandwidth=2.0).fit(X[:6], np.full(6, 3))
    m = KernelInterpolator(bandwidth=2.0, task="regression").fit(X[:6], np.full(6, 3.0))
    np.testing.assert_allclose(m.predict(X[:6]), 3.0)
    # lists are checked before NumPy turns them into strings; task='classification' too;
    # one string class gets no regression advice, string targets no bare ValueError
    for y, task, found in ((["a", 1] * 3, "auto", "strings mixed"),
                           ([b"a", "a"] * 3, "auto", "bytes mixed with str"),
                           (np.array(["a", 1] * 3, dtype=object), "classification",
                            "strings mixed"),
                           (np.array(["a"] * 6), "auto", r"only one class \(a\): a "
                                                         r"classifier needs at least two$"),
                           (np.array(["a"] * 6), "regression", "regression targets must be "
                                                               "numbers"),
                           ([None] * 6, "regression", "missing \\(None\\)")):
        with pytest.raises(InputError, match=found):
            KernelInterpolator(bandwidth=2.0, task=task).fit(X[:6], y)


def test_dtype_precision_contradiction_refused(digits):
    X, y = digits
    with pytest.raises(InputError, match="contradicts") as info:
        KernelInterpolator(dtype="float32", precision="float64").fit(X[:50], y[:50])
    assert "--" not in str(info.value)


def test_library_error_facts_are_data(digits):
    X, y = digits
    with pytest.raises(NotPositiveDefiniteError) as info:
        KernelInterpolator(kernel="linear").fit(X[:300], y[:300])
    exc = info.value
    assert exc.causes == ["low_rank_linear"] and exc.index >= 0
    assert exc.facts["n"] == 300 and exc.facts["dtype"] == "float64"
    assert "--" not in str(exc)


def test_a_1d_regression_target_gets_its_true_residual_and_an_rmse():
    """y of shape (n,) against the solver's (n, 1) columns: the residual and the training
    RMSE were taken over an n x n broadcast (a residual of about 10 for an exact solve)."""
    import warnings

    from kernelfit.options import RunOptions
    from kernelfit.run import solve_arrays

    rng = np.random.default_rng(0)
    X, Xt = rng.random((300, 20)), rng.random((50, 20))
    y, yt = X.sum(1), Xt.sum(1)
    m = KernelInterpolator(bandwidth=1.0, task="regression").fit(X, y)
    true = np.linalg.norm(m.decision_function(X).ravel() - y) / np.linalg.norm(y)
    assert m.relative_residual_ == pytest.approx(true, abs=1e-14) and true < 1e-12
    assert m.train_error_ < 1e-10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "y looks continuous"
        rec = solve_arrays(X, y, Xt, yt, RunOptions.from_flat(bandwidth=1.0))
    assert rec["exact"] and rec["task"] == "regression" and rec["n_classes"] is None
    assert rec["test_error"] == pytest.approx(np.sqrt(np.mean((m.predict(Xt) - yt) ** 2)))


def test_min_norm_solvers_agree_and_predictions_never_overflow_silently(digits):
    """lstsq cuts the singular values where eigh does (LAPACK's default cutoff kept
    rounding directions: coefficients 1e11, alpha^T K alpha < 0, a norm of 0); a column
    of class labels is classified; inputs whose kernel values overflow are refused at
    predict instead of NaN becoming class 0."""
    import warnings

    X, y = digits
    fits = {s: KernelInterpolator(kernel="linear", solver=s).fit(X[:200], y[:200])
            for s in ("eigh", "lstsq")}
    np.testing.assert_allclose(fits["lstsq"].alpha_, fits["eigh"].alpha_, rtol=1e-6,
                               atol=1e-6 * np.abs(fits["eigh"].alpha_).max())
    assert fits["lstsq"].rkhs_norm_ == pytest.approx(fits["eigh"].rkhs_norm_, rel=1e-6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = KernelInterpolator(bandwidth=2.0).fit(X[:300], y[:300].reshape(-1, 1))
    assert m.task_ == "classification" and any("y.ravel()" in str(w.message) for w in caught)
    assert m.predict(X[300:305]).shape == (5,)
    p = KernelInterpolator(kernel="polynomial", gamma=1 / 64).fit(X[:200], y[:200])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning before the refusal
        with pytest.raises(InputError, match="overflow"):
            p.predict(X[:2] * 1e100)
    for bad in ("x", -1, 1.5, True):
        with pytest.raises(InputError, match="random_state must be"):
            KernelInterpolator(bandwidth="median", random_state=bad).fit(X[:20], y[:20])


@pytest.mark.parametrize("solver", ["eigh", "lstsq"])
def test_minimum_norm_solvers_factor_the_dense_k_in_place(solver):
    """Their memory beside the dense K stays within what the plan counts for it: eigh's
    eigenvectors (a C-ordered K was copied by SciPy before LAPACK overwrote it, and 'evd'
    took 2 n^2 of workspace besides: 24 n^2 bytes on top of K), lstsq's copy of K."""
    import tracemalloc

    from kernelfit import memory
    from kernelfit.backend import get_backend
    from kernelfit.solvers.exact import SolveOptions, _min_norm_solve

    n = 600
    rng = np.random.default_rng(0)
    A = rng.standard_normal((n, n))
    K = A @ A.T + n * np.eye(n)
    Y = rng.standard_normal((n, 2))
    want = np.linalg.solve(K, Y)
    opts = SolveOptions(solver=solver).validate()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        alpha, rank, _ = _min_norm_solve(K, Y, opts, get_backend("cpu"))
        extra = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert rank == n
    np.testing.assert_allclose(alpha, want, rtol=1e-8, atol=1e-12)
    # the plan's "eigenvectors/workspace": eigh's eigenvectors (evd on a C-ordered K had
    # 24 n^2), lstsq's copy of K (SciPy makes one for gelsd) and O(n) workspace
    assert extra <= memory.plan_exact_solve(n, 4, 2, solver=solver).items["eigenvectors/workspace"]


def test_dtype_as_numpy_types_and_old_pickles_of_mixed_estimators():
    """dtype=np.float32 is NumPy's usual spelling (it was refused as "<class ...>"); an
    estimator pickled when dtype's default was 'float64' with precision='mixed' refits."""
    import pickle

    rng = np.random.default_rng(0)
    X, y = rng.random((40, 3)), np.arange(40) % 2
    est = KernelInterpolator(dtype=np.float32, precision="float32", bandwidth=0.3).fit(X, y)
    assert est.precision_ == "float32"
    est = KernelInterpolator(dtype=np.dtype("float64"), bandwidth=0.3).fit(X, y)
    assert est.precision_ == "float64"
    old = KernelInterpolator(precision="mixed", bandwidth=0.3)
    old.dtype = "float64"  # the old default, as an older pickle holds it (no dtype rule)
    state = old.__getstate__()
    del state["_kernelfit_dtype_rule"]
    new = KernelInterpolator.__new__(KernelInterpolator)
    new.__setstate__(state)
    assert new.dtype is None and new.fit(X, y).precision_ in ("mixed", "float64")
    # a model saved before 2026-12-06 (no dtype rule in its state) by `kernelfit solve`
    # holds dtype 'float64' under auto, which meant auto: it loads as auto; one saved now
    # with dtype 'float64' named keeps its float64 factorization
    saved = KernelInterpolator(dtype="float64", bandwidth=0.3)
    state = saved.__getstate__()
    assert state.pop("_kernelfit_dtype_rule") == 2
    before = KernelInterpolator.__new__(KernelInterpolator)
    before.__setstate__(state)
    assert before.dtype is None and before._solver_options().precision == "auto"
    now = pickle.loads(pickle.dumps(saved))
    assert now.dtype == "float64" and now._solver_options().precision == "float64"
    assert "_kernelfit_dtype_rule" not in now.__dict__
    assert "_kernelfit_dtype_rule" not in saved.__dict__  # pickling leaves the original be
    # a new pickle keeps even a contradicting pair as given (fit refuses it, as before)
    import copy

    pair = KernelInterpolator(dtype="float64", precision="mixed")
    for twin in (pickle.loads(pickle.dumps(pair)), copy.deepcopy(pair), copy.copy(pair)):
        assert twin.get_params() == pair.get_params()


def test_a_tile_size_above_n_sizes_no_buffer_beyond_n():
    """tile_size larger than the rows (10^6 for 200 points): every buffer is sized by the
    rows there are (predict's block buffer asked for 7.3 TiB and raised MemoryError)."""
    rng = np.random.default_rng(0)
    X = rng.random((200, 5))
    y = (X[:, 0] > 0.5).astype(int)
    est = KernelInterpolator(bandwidth=0.5, tile_size=10 ** 6, show_progress=False).fit(X, y)
    assert (est.predict(X) == y).all()



def test_a_fit_that_does_not_interpolate_says_so():
    """exact_ and inexact_reason_ from the certified residual; an InexactFitWarning where
    nothing asked for an inexact fit (a ridge does: exact_ False, no warning); the run
    layer, whose records say it, leaves the warning out."""
    import warnings

    from kernelfit import run
    from kernelfit.errors import InexactFitWarning
    from kernelfit.options import RunOptions

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 3)), rng.integers(0, 3, 60)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InexactFitWarning)
        good = KernelInterpolator(bandwidth=0.5).fit(X, y)
        assert good.exact_ is True and good.inexact_reason_ is None
        ridged = KernelInterpolator(bandwidth=0.5, ridge=1e-3).fit(X, y)
        assert ridged.exact_ is False and "ridge" in ridged.inexact_reason_
        opts = RunOptions.from_flat(bandwidth=5.0, show_progress=False)
        assert run.fit(opts, X, y).exact_ is False  # no warning from the run layer
    with pytest.warns(InexactFitWarning, match="does not interpolate the labels: float64 "
                                               "relative residual .* bandwidth 5"):
        wide = KernelInterpolator(bandwidth=5.0).fit(X, y)
    assert wide.exact_ is False and wide.relative_residual_ > 1e-8
    assert "K is too ill-conditioned" in wide.inexact_reason_
    quiet = KernelInterpolator(bandwidth=5.0, compute_residual=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InexactFitWarning)
        assert quiet.fit(X, y).exact_ is None


@pytest.mark.parametrize("kw, words", [
    (dict(kernel="rbf", gamma=0.001), "gamma 0.001 is bandwidth 22.36"),
    (dict(kernel="gaussian", gamma=0.02), "gamma 0.02 is bandwidth 5"),
    (dict(kernel="laplacian", gamma=2.0), "give the width as bandwidth h instead"),
])
def test_gamma_as_the_width_is_refused(kw, words):
    """scikit-learn's habit kernel='rbf', gamma=... would leave the width at its default
    silently: refused, in the estimator and in the run layer's options, with the width
    that gamma means. degree and coef0 stay ignored by the kernels without them, as in
    scikit-learn (they set no width; a grid over kernels may share them)."""
    from kernelfit.options import RunOptions

    X, y = np.random.default_rng(0).normal(size=(30, 3)), np.arange(30) % 2
    with pytest.raises(InputError, match=words):
        KernelInterpolator(**kw).fit(X, y)
    with pytest.raises(InputError, match=words):
        RunOptions.from_flat(**kw)
    KernelInterpolator(kernel="rbf", gamma=None).fit(X, y)  # scikit-learn's 'not given'
    with pytest.raises(InputError, match="gamma 0.02 is bandwidth 5"):
        KernelInterpolator(kernel="rbf", gamma=np.float32(0.02)).fit(X, y)
    fine = KernelInterpolator(kernel="poly", gamma=0.5, degree=2, coef0=2.0, bandwidth=None)
    assert fine.fit(X[:8], y[:8]).kernel_.gamma == 0.5
    assert KernelInterpolator(kernel="rbf", degree=3, coef0=0.5).fit(X, y).exact_


def test_an_rkhs_norm_lost_to_rounding_is_none_not_zero():
    """alpha^T K alpha summed with huge coefficients (a tiny ridge on a singular K) cancels
    to rounding noise, once below zero and reported as a norm of 0: None now; a
    well-conditioned fit's norm is the direct sum's."""
    rng = np.random.default_rng(0)
    X, y = rng.random((200, 50)), rng.integers(0, 10, 200)
    tiny = KernelInterpolator(kernel="linear", ridge=1e-10).fit(X, y)
    assert tiny.rkhs_norm_ is None
    good = KernelInterpolator(bandwidth=1.0).fit(X, y)
    K = good.kernel_(X)
    direct = np.sqrt(np.sum(good.alpha_ * (K @ good.alpha_)))
    assert good.rkhs_norm_ == pytest.approx(direct, rel=1e-10)
    zero = KernelInterpolator(task="regression").fit(X[:50], np.zeros(50))
    assert zero.rkhs_norm_ == 0.0 and zero.exact_


def test_a_bandwidth_far_below_the_datas_distances_warns():
    """The default bandwidth 5 (for [0, 1] pixels) on 0-255 data makes K the identity:
    every prediction away from the training points about 0, 10% accuracy on digits,
    which came without a word; now a warning names the median distance and the way out.
    Data on the scale the bandwidth is for stays quiet."""
    import warnings

    X, y = load_digits(return_X_y=True)  # 0..16: the median distance is about 50
    with pytest.warns(UserWarning, match=r"bandwidth 0.5 is .* times below the median "
                                         r"distance .* give no bandwidth \(None"):
        KernelInterpolator(bandwidth=0.5).fit(X[:300], y[:300])
    with pytest.warns(UserWarning, match="K is the identity to float64"):
        KernelInterpolator(kernel="laplacian", bandwidth=0.05).fit(X[:300], y[:300])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        KernelInterpolator(bandwidth=None).fit(X[:300], y[:300])
        KernelInterpolator(bandwidth=5.0).fit(X[:300] / 16, y[:300])


def test_a_kernel_singular_by_construction_is_named_as_the_cause():
    """The linear kernel on d < n columns (rank <= d): the cause is its rank, not
    ill-conditioning, in the estimator and in the run layer's record (whose advice offers
    a full-rank kernel or a ridge, not a bandwidth or a precision)."""
    import warnings

    from kernelfit.errors import InexactFitWarning
    from kernelfit.options import RunOptions
    from kernelfit.run import solve_arrays

    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 6))
    y = (X @ rng.normal(size=6) > 0).astype(int)
    with pytest.warns(InexactFitWarning, match="rank at most d = 6"):
        m = KernelInterpolator(kernel="linear", solver="eigh").fit(X, y)
    assert "no coefficients interpolate every label" in m.inexact_reason_
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        rec = solve_arrays(X, y, opts=RunOptions.from_flat(kernel="linear", solver="eigh",
                                                            show_progress=False))
    assert rec["exact"] is False and rec["cause"] == "low_rank"
