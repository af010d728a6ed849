"""Mixed precision: float32 factor + float64 refinement reaches tol and equals float64."""

import json
import math

import numpy as np
import pytest

from kernelfit import KernelInterpolator
from kernelfit.errors import InputError
from kernelfit.kernels import get_kernel
from kernelfit.solvers.exact import SolveOptions, solve_exact
from kernelfit.solvers.products import kernel_matvec
from kernelfit.solvers.refine import refinement_info


def _problem(n=300, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, d))
    Y = np.eye(3)[rng.integers(0, 3, n)]
    return X, Y


@pytest.mark.parametrize("refinement", ["cg", "ir"])
def test_mixed_reaches_tol_and_equals_float64(refinement):
    X, Y = _problem()
    k = get_kernel("gaussian", bandwidth=0.8)   # cond(K) ~ 1e7: ill-conditioned for float32
    K = k(X)
    assert np.linalg.cond(K) > 1e6
    ref = solve_exact(k, X, Y, SolveOptions(precision="float64"))
    sol = solve_exact(k, X, Y, SolveOptions(precision="mixed", tile_size=64,
                                            refinement=refinement))
    assert sol.dtype == "mixed" and sol.info["precision"] == "mixed"
    assert sol.info["converged"] and sol.info["shift"] == 0.0
    assert sol.info["relative_residual"] <= 1e-10
    hist = sol.info["refinement_history"]
    assert len(hist) == sol.info["iterations"] + 1 and hist[-1] <= 1e-10 < hist[0]
    true_res = np.linalg.norm(K @ sol.alpha - Y) / np.linalg.norm(Y)
    assert true_res <= 1e-9
    np.testing.assert_allclose(sol.alpha, ref.alpha, rtol=0, atol=1e-7 * np.abs(ref.alpha).max())
    json.dumps(sol.as_dict())  # the record is JSON-ready


def test_breakdown_shifts_and_uses_preconditioner_only():
    rng = np.random.default_rng(0)
    X = rng.random((300, 3))
    Y = np.stack([np.sin(3 * X.sum(1)), np.cos(2 * X[:, 0])], 1)
    k = get_kernel("gaussian", bandwidth=0.3)  # cond ~ 5e10: float32 potrf breaks down
    sol = solve_exact(k, X, Y, SolveOptions(precision="mixed", tile_size=64, max_iter=400))
    info = sol.info
    assert info["shift"] > 0 and info["preconditioner_only"]
    assert "preconditioner" in info["note"] and not info["factor_attempts"][0]["ok"]
    assert info["converged"] and info["relative_residual"] <= 1e-10
    K = k(X)
    assert np.linalg.norm(K @ sol.alpha - Y) / np.linalg.norm(Y) < 1e-9


def test_auto_picks_float64_when_it_fits_and_mixed_otherwise(monkeypatch):
    X, Y = _problem(n=400)
    k = get_kernel("gaussian", bandwidth=0.5)
    assert solve_exact(k, X, Y, SolveOptions()).info["precision"] == "float64"
    # the float64 plan (818 KB) no longer fits in 90% of 800 KB, the mixed one (613 KB) does
    monkeypatch.setenv("KERNELFIT_MEMORY_LIMIT", str(800_000))
    sol = solve_exact(k, X, Y, SolveOptions(tile_size=50))
    assert sol.info["precision"] == "mixed" and "does not fit" in sol.info["precision_reason"]
    assert sol.info["relative_residual"] <= 1e-10


def test_estimator_and_fast_matvec():
    X, Y = _problem(n=250)
    y = Y.argmax(1)
    m = KernelInterpolator(bandwidth=0.5, precision="mixed", tile_size=64).fit(X, y)
    assert m.precision_ == "mixed" and m.relative_residual_ <= 1e-10
    assert m.refinement_history_[-1] == pytest.approx(m.relative_residual_, rel=1e-3, abs=1e-14)
    assert m.train_error_ == 0.0
    k = get_kernel("normalized", degree=4)
    V = np.random.default_rng(1).standard_normal((250, 4))
    np.testing.assert_allclose(kernel_matvec(k, X, V, tile_size=40, n_threads=2),
                               kernel_matvec(k, X, V, tile_size=64, n_threads=1),
                               rtol=1e-12, atol=1e-10)


def test_ridge_solve_reports_the_residual_against_k_whatever_the_precision(tmp_path):
    """With a ridge the refinement solves (K + ridge I) alpha = Y, but the residual, norm
    and training error the estimator reports are against K, as the float64 path's are:
    mixed precision reported 1e-14 ('exact') where float64 reported 0.06. Out of core
    (mixed and float64) alike."""
    X, Y = _problem(n=250)
    y = Y.argmax(1)
    K = get_kernel("gaussian", bandwidth=0.5)(X)
    ridge = 1e-3
    runs = {p: KernelInterpolator(bandwidth=0.5, precision=p, ridge=ridge,
                                  tile_size=64).fit(X, y) for p in ("float64", "mixed")}
    runs["ooc"] = KernelInterpolator(bandwidth=0.5, precision="mixed", ridge=ridge,
                                     tile_size=64, ooc_dir=str(tmp_path / "ck")).fit(X, y)
    Yc = np.eye(3)[y]
    for name, m in runs.items():
        true = np.linalg.norm(K @ m.alpha_ - Yc) / np.linalg.norm(Yc)
        assert true > 1e-4  # a ridge solve does not interpolate
        assert m.relative_residual_ == pytest.approx(true, rel=1e-6), name
        assert m.rkhs_norm_ == pytest.approx(np.sqrt(np.sum(m.alpha_ * (K @ m.alpha_))),
                                             rel=1e-9), name


@pytest.mark.parametrize("bad", [dict(tol=0), dict(tol=-1e-3), dict(tol=2.0), dict(tol="x"),
                                 dict(tol=float("nan")), dict(max_iter=0), dict(max_iter=1.5),
                                 dict(refinement="gmres"), dict(precision="float16"),
                                 dict(tile_size=8), dict(resume=True),
                                 dict(precision="mixed", solver="eigh"),
                                 dict(distributed="yarn"),
                                 dict(scheduler="tcp://a:1", distributed="local")])
def test_bad_options_are_input_errors(bad):
    X, Y = _problem(n=50)
    with pytest.raises(InputError):
        solve_exact(get_kernel("gaussian"), X, Y, SolveOptions(**bad))


def test_cli_flags_reach_the_record(capsys):
    from kernelfit.cli import main

    rc = main(["solve", "--dataset", "digits", "--n-train", "300", "--n-test", "100",
               "--bandwidth", "5", "--precision", "mixed", "--tol", "1e-11", "--refine", "ir",
               "--json", "--no-progress"])
    assert rc in (0, None)
    rec = json.loads(capsys.readouterr().out)
    assert rec["precision"] == "mixed" and rec["refinement"] == "ir"
    assert rec["relative_residual"] <= 1e-11 and rec["refinement_history"]
    app = rec["preconditioner_application"]
    assert app["float32_passes"] + app["float64_passes"] == rec["solve_iterations"]
    assert len(rec["refinement_step_seconds"]) == len(rec["refinement_history"])


# ---------------------------------------------------------------- precision='auto' by time
def _fast_float32(monkeypatch, ratio=2.0):
    """Make auto measure nothing and see float32 GEMM ``ratio`` times faster, on a machine
    slow enough that a float64 solve of these few hundred points is expected to take about
    as long as the Python passes of a refinement do (a refinement gives up when its passes
    would cost more than the float64 factorization expected)."""
    from kernelfit.solvers import plan

    monkeypatch.setattr(plan, "MEASURE_MIN_RATIO", 0)
    monkeypatch.setattr(plan, "gemm_rates", lambda be: {
        "float64": 1e7, "float32": ratio * 1e7, "memory_bytes_per_s": 1e8,
        "thin_seconds_per_entry": {"float64": 1e-8, "float32": 5e-9},
        "finish_entries_per_s": 1e10})


def test_auto_picks_mixed_when_expected_faster_and_keeps_float64_tiles(monkeypatch):
    _fast_float32(monkeypatch)
    X, Y = _problem(n=300)
    k = get_kernel("gaussian", bandwidth=0.8)
    sol = solve_exact(k, X, Y, SolveOptions(tile_size=64))
    info = sol.info
    assert info["precision"] == "mixed" and "expected faster" in info["precision_reason"]
    times = info["plan_choice"]["expected_time"]
    assert times["mixed_s"] < times["float64_s"]
    # the float64 target of auto, reached with every float64 tile of K kept in memory:
    # 1e-12, or what float64 arithmetic allows on this cond ~ 1e7 kernel
    ref = solve_exact(k, X, Y, SolveOptions(precision="float64", tile_size=64, residual=True))
    K = k(X)
    res64 = np.linalg.norm(K @ ref.alpha - Y) / np.linalg.norm(Y)
    assert info["tol"] == 1e-12 and info["converged"]
    assert info["relative_residual"] <= max(1e-12, 3 * res64)
    assert info["kept_tiles"] == info["n_tiles_lower"] == 15
    assert "kept in memory" in info["residual_method"]
    assert np.linalg.norm(K @ sol.alpha - Y) / np.linalg.norm(Y) <= max(1e-12, 3 * res64)
    assert info["plan_choice"]["tiles"]["tile_size"] == 64
    json.dumps(sol.as_dict())


def test_auto_picks_float64_when_float32_is_not_faster(monkeypatch):
    _fast_float32(monkeypatch, ratio=1.0)  # e.g. a GPU with equal float32/float64 rates
    X, Y = _problem(n=300)
    sol = solve_exact(get_kernel("gaussian", bandwidth=0.8), X, Y, SolveOptions(tile_size=64))
    assert sol.info["precision"] == "float64"
    assert "float64 factorization expected faster" in sol.info["precision_reason"]


def test_auto_falls_back_to_float64_with_one_line(monkeypatch, caplog):
    _fast_float32(monkeypatch)
    rng = np.random.default_rng(0)
    X = rng.random((300, 3))
    Y = np.stack([np.sin(3 * X.sum(1)), np.cos(2 * X[:, 0])], 1)
    k = get_kernel("gaussian", bandwidth=0.3)  # cond ~ 5e10: too much for float32
    ref = solve_exact(k, X, Y, SolveOptions(precision="float64", tile_size=64))
    with caplog.at_level("WARNING", logger="kernelfit"):
        sol = solve_exact(k, X, Y, SolveOptions(tile_size=64))
    lines = [r for r in caplog.records if "falling back" in r.getMessage()]
    assert len(lines) == 1 and "float32" in lines[0].getMessage()
    assert sol.info["precision"] == "float64" and sol.dtype == "float64"
    assert "fell back to float64" in sol.info["precision_reason"]
    assert sol.info["precision_fallback"]["reason"]
    assert "mixed_s" in sol.info["plan_choice"]["expected_time"]  # what auto expected
    # every float64 tile was kept: the fallback factors those instead of a new Gram
    assert sol.info["precision_fallback"]["reused_float64_tiles"]
    assert not sol.info["kept_k_for_residual"]
    np.testing.assert_allclose(sol.alpha, ref.alpha, rtol=1e-12, atol=0)


def test_refinement_that_stalls_falls_back(monkeypatch):
    _fast_float32(monkeypatch)
    from kernelfit.solvers import mixed

    real = mixed.refine

    def slow(*a, **kw):  # a refinement that gains nothing: cond * u32 too large
        kw["max_iter"] = 0
        out = real(*a, **kw)
        out["converged"] = False
        return out

    monkeypatch.setattr(mixed, "refine", slow)
    X, Y = _problem(n=200)
    sol = solve_exact(get_kernel("gaussian", bandwidth=0.8), X, Y, SolveOptions(tile_size=64))
    assert sol.info["precision"] == "float64"
    assert "refinement stopped" in sol.info["precision_fallback"]["reason"]


def test_auto_refinement_is_told_what_falling_back_costs(monkeypatch):
    """auto's mixed refinement gives up once its remaining passes would cost more than the
    float64 way: the plan's expected float64 time, plus a new float64 Gram where not every
    tile was kept in float64; the fallback says why."""
    _fast_float32(monkeypatch)
    from kernelfit.solvers import mixed

    real, seen = mixed.refine, []

    def spy(*a, **kw):
        seen.append(kw["give_up_after"])
        return real(*a, **kw)

    monkeypatch.setattr(mixed, "refine", spy)
    X, Y = _problem(n=300)
    k = get_kernel("gaussian", bandwidth=0.8)
    sol = solve_exact(k, X, Y, SolveOptions(tile_size=64))
    assert sol.info["precision"] == "mixed" and sol.info["kept_storage"] == "float64"
    assert seen == [sol.info["plan_choice"]["expected_time"]["float64_s"]]  # all kept
    # a slow refinement (weak preconditioner) against a float64 way that costs nothing
    monkeypatch.setattr(mixed, "refine", lambda *a, **kw: real(
        a[0], lambda R: 0.2 * R, *a[2:],
        **dict(kw, give_up_after=1e-9, fast_precond=None, max_iter=1000)))
    sol = solve_exact(k, X, Y, SolveOptions(tile_size=64))
    assert sol.info["precision"] == "float64"
    assert "would take longer than" in sol.info["precision_fallback"]["reason"]


def test_full_mnist_plan_stays_within_10_gib(monkeypatch):
    from kernelfit.solvers.plan import plan_solve

    _fast_float32(monkeypatch)
    from kernelfit.backend import get_backend

    opts = SolveOptions(residual=True).validate()
    sp = plan_solve(60000, 784, 10, opts, device="cpu", available=22 << 30, n_test=10000,
                    backend=get_backend("cpu"))
    assert sp.route == "mixed" and sp.tol == 1e-12
    # float32 lower tiles (7.2 GB) + as many float64 tiles as the share allows
    assert 7.2e9 <= sp.memory.items["K tiles (float32)"] <= 7.7e9
    assert 0 < sp.memory.items["K tiles kept (refinement)"] < 14.4e9
    assert sp.memory.total <= 10 * 2 ** 30
    # at n = 10,000 every float64 tile is kept (about 0.5 GB)
    from kernelfit.solvers.tiles import TiledSymmetric

    sp = plan_solve(10000, 784, 10, opts, device="cpu", available=22 << 30,
                    backend=get_backend("cpu"))
    assert sp.memory.items["K tiles kept (refinement)"] == TiledSymmetric.storage_bytes(
        10000, sp.tile_size, np.float64)


def test_gpu_mixed_plan_has_no_per_cpu_thread_buffers():
    from kernelfit.solvers.plan import plan_mixed

    cpu = plan_mixed(20000, 784, 10, 4096, device="cpu", n_threads=16)
    gpu = plan_mixed(20000, 784, 10, 4096, device="gpu", n_threads=16)
    assert gpu.items["tile buffers"] == 3 * 8 * 4096 ** 2 < cpu.items["tile buffers"]


@pytest.mark.filterwarnings("ignore:mixed-precision refinement stopped")
def test_auto_mixed_by_memory_does_not_fall_back(monkeypatch):
    # only mixed fits: a breakdown shifts (no float64 plan to fall back to)
    rng = np.random.default_rng(0)
    X = rng.random((400, 3))
    Y = np.stack([np.sin(3 * X.sum(1)), np.cos(2 * X[:, 0])], 1)
    monkeypatch.setenv("KERNELFIT_MEMORY_LIMIT", str(800_000))
    sol = solve_exact(get_kernel("gaussian", bandwidth=0.3), X, Y,
                      SolveOptions(tile_size=50, max_iter=400))
    assert sol.info["precision"] == "mixed" and "does not fit" in sol.info["precision_reason"]
    assert sol.info["shift"] > 0 and "precision_fallback" not in sol.info


@pytest.mark.parametrize("refinement", ["cg", "ir"])
def test_solve_gram_on_a_ready_tile_store(refinement):
    """A Gram matrix made outside the solvers: factored and refined by the solvers' code."""
    from kernelfit.solvers.mixed import solve_gram
    from kernelfit.solvers.products import build_gram

    X, Y = _problem(n=300)
    k = get_kernel("gaussian", bandwidth=0.8)
    K = k(X)
    T = build_gram(k, X, tile_size=64, dtype=np.float32, keep_copy=True)  # K kept: default
    out = solve_gram(T, Y, tol=1e-10, refinement=refinement)
    assert T.factored and out["converged"] and out["factor_seconds"] >= 0
    assert np.linalg.norm(K @ out["alpha"] - Y) / np.linalg.norm(Y) <= 1e-10
    calls = []

    def product(V):  # a K product given by the caller
        calls.append(V.shape)
        return K @ V

    T = build_gram(k, X, tile_size=64, dtype=np.float32)
    out = solve_gram(T, Y, product, tol=1e-10, refinement=refinement)
    assert calls and out["converged"]
    assert np.linalg.norm(K @ out["alpha"] - Y) / np.linalg.norm(Y) <= 1e-10


@pytest.mark.parametrize("method", ["cg", "ir"])
def test_the_returned_residual_is_a_direct_product_not_the_steps_recurrence(method):
    """A float64 preconditioner (the Dask and out-of-core float64 paths): CG's own
    residual, updated by recurrence, falls to 1e-20 after one step while the true one sits
    at the rounding floor of x (about cond(K) x 1e-16). The answer's residual is the true
    one, from a direct product of the iterate returned (iterative refinement makes each
    pass that product)."""
    from kernelfit.solvers.refine import refine

    rng = np.random.default_rng(0)
    n = 200
    Q = np.linalg.qr(rng.standard_normal((n, n)))[0]
    K = (Q * np.logspace(0, -7, n)) @ Q.T
    L = np.linalg.cholesky(K)
    Y = rng.standard_normal((n, 3))
    out = refine(lambda V: K @ V, lambda R: np.linalg.solve(L.T, np.linalg.solve(L, R)), Y,
                 tol=1e-13, max_iter=5, method=method)
    true = np.linalg.norm(K @ out["alpha"] - Y) / np.linalg.norm(Y)
    assert out["relative_residual"] == pytest.approx(true, rel=1e-6)
    if method == "cg":
        assert out["tracked_residual"] < out["relative_residual"]  # the recurrence's illusion
    else:  # each iterative-refinement pass is the direct product of its iterate
        assert out["tracked_residual"] == out["relative_residual"]
    assert out["converged"] == (true <= 1e-13)


def _float32_factor_problem(n=300):
    """K with cond 1e3, a float32 Cholesky factor's solve as its preconditioner, Y."""
    import scipy.linalg as sl

    rng = np.random.default_rng(0)
    Q = np.linalg.qr(rng.standard_normal((n, n)))[0]
    K = (Q * np.logspace(0, -3, n)) @ Q.T
    L32 = np.linalg.cholesky(K.astype(np.float32)).astype(np.float64)
    return K, (lambda R: sl.cho_solve((L32, True), R)), rng.standard_normal((n, 3))


def test_cg_takes_its_last_step_as_a_refinement_step_certified_in_its_own_pass(monkeypatch):
    """Where one more step is expected to reach tol (the residual within the smallest gain
    so far), CG's last step is alpha += M^-1 r with a direct product of the new iterate:
    one pass fewer than a CG step plus the product that certifies it, the same residual
    target, and the residual returned is the true one."""
    import kernelfit.solvers.refine as rf

    K, precond, Y = _float32_factor_problem()
    log = []
    out = rf.refine(lambda V: K @ V, precond, Y, tol=1e-13, method="cg", log=log)
    true = np.linalg.norm(K @ out["alpha"] - Y) / np.linalg.norm(Y)
    assert out["converged"] and true <= 1e-13
    assert out["relative_residual"] == pytest.approx(true, rel=1e-9)
    assert log[-1].startswith("closing ir step") and not any("certified" in ln for ln in log)
    assert out["certify_seconds"] == 0.0 and out["matvecs"] == len(out["history"])
    monkeypatch.setattr(rf, "closing_step_enough", lambda history, tol: False)
    plain = rf.refine(lambda V: K @ V, precond, Y, tol=1e-13, method="cg")
    assert plain["converged"] and plain["matvecs"] == out["matvecs"] + 1


def test_a_closing_step_that_falls_short_restarts_cg_from_its_certified_iterate(monkeypatch):
    """The closing step is a guess: where it does not reach tol, CG goes on (restarted from
    that certified iterate) and still converges; the closing step is tried once a solve."""
    import kernelfit.solvers.refine as rf

    K, precond, Y = _float32_factor_problem()
    asked = []

    def always(history, tol):
        asked.append(len(history))
        return True

    monkeypatch.setattr(rf, "closing_step_enough", always)
    log = []
    out = rf.refine(lambda V: K @ V, precond, Y, tol=1e-15, method="cg", log=log,
                    max_iter=30)
    closing = [ln for ln in log if ln.startswith("closing ir step")]
    assert len(closing) == 1 and asked == [2]
    true = np.linalg.norm(K @ out["alpha"] - Y) / np.linalg.norm(Y)
    assert out["relative_residual"] == pytest.approx(true, rel=1e-9)
    # never worse than the closing step's iterate (its log line has 4 significant digits)
    assert out["relative_residual"] <= float(closing[0].split("residual ")[1]) * (1 + 1e-3)


def test_a_closing_step_that_loses_ground_restarts_cg_from_the_best_iterate(monkeypatch):
    """A closing step that raises the residual (here: a preconditioner that overshoots
    on the closing step only) is not where CG goes on from: it restarts from the best
    iterate before it, and converges."""
    import kernelfit.solvers.refine as rf

    K, precond, Y = _float32_factor_problem()
    monkeypatch.setattr(rf, "closing_step_enough", lambda history, tol: len(history) == 2)
    calls = []

    def overshooting(R):  # the third application is the closing step's (initial, z0, z1)
        calls.append(1)
        return precond(R) * (40.0 if len(calls) == 3 else 1.0)

    log = []
    out = rf.refine(lambda V: K @ V, overshooting, Y, tol=1e-13, method="cg", log=log)
    h = out["history"]
    assert log[1].startswith("closing ir step") and h[2] > h[1]  # it lost ground
    assert h[3] < h[1] / 10  # the restart went on from the best iterate, not the worse one
    assert out["converged"]
    true = np.linalg.norm(K @ out["alpha"] - Y) / np.linalg.norm(Y)
    assert out["relative_residual"] == pytest.approx(true, rel=1e-9) and true <= 1e-13


def test_closing_step_rule_needs_every_step_so_far_to_have_gained_enough():
    from kernelfit.solvers.refine import closing_step_enough

    assert closing_step_enough([1e-4, 1e-6, 5e-11], 1e-12)  # gains 100, 2e4: 50 needed
    assert not closing_step_enough([1e-4, 1e-6, 2e-10], 1e-12)  # 200 needed
    assert not closing_step_enough([1e-4, 2e-4, 1e-12 * 1.5], 1e-12)  # a step that rose
    assert not closing_step_enough([1e-4], 1e-12)  # no step yet
    assert closing_step_enough([1e-4, 0.0], 1e-12)


def test_where_only_the_recurrence_reached_tol_the_refinement_goes_on_once(monkeypatch):
    """A float32 factor's preconditioner: the steps' residual reaches tol, the certified
    one does not; the refinement goes on, once, from the certified iterate, and returns the
    better certified iterate. (CG's closing step, which would reach tol first here, is
    left out.)"""
    import scipy.linalg as sl

    import kernelfit.solvers.refine as rf
    from kernelfit.solvers.refine import refine

    monkeypatch.setattr(rf, "closing_step_enough", lambda history, tol: False)
    rng = np.random.default_rng(0)
    n, m = 300, 3
    Q = np.linalg.qr(rng.standard_normal((n, n)))[0]
    K = (Q * np.logspace(0, -3, n)) @ Q.T
    L32 = np.linalg.cholesky(K.astype(np.float32)).astype(np.float64)
    Y = rng.standard_normal((n, m))
    # a recurrence that drifts, made on purpose: the steps' products of [P, x] (2 m
    # columns) come from K + E, E symmetric of norm 1e-14, while every direct product of an
    # iterate alone (m columns: the first, the certifications, the steps' P alone) is K's
    # own. The steps then track K + E's residual, which falls below K's (where the two
    # part by rounding alone, which is the smaller depends on the CPU's BLAS kernel:
    # 3.38e-14 lay between them on a Zen 3, not on a Zen 5)
    E = rng.standard_normal((n, n))
    E = 1e-14 * (E + E.T) / np.linalg.norm(E + E.T, 2)

    def matvec(V):
        return K @ V if V.shape[1] == m else (K + E) @ V

    def precond(R):
        return sl.cho_solve((L32, True), R)

    floor = refine(matvec, precond, Y, tol=0.0, max_iter=30, method="cg")
    assert floor["tracked_residual"] < 0.1 * floor["relative_residual"]
    tol = math.sqrt(floor["tracked_residual"] * floor["relative_residual"])
    log = []
    out = refine(matvec, precond, Y, tol=tol, max_iter=30, method="cg", log=log)
    certified = [ln for ln in log if ln.startswith("certified")]
    assert len(certified) == 2  # the first certification, and the one after going on
    true = np.linalg.norm(K @ out["alpha"] - Y) / np.linalg.norm(Y)
    assert out["relative_residual"] == pytest.approx(true, rel=1e-9)
    first = float(certified[0].split("residual ")[1].split()[0])
    assert out["relative_residual"] <= first * (1 + 1e-3)  # never the worse of the two
    assert out["matvecs"] == len(out["history"]) + 2


@pytest.mark.parametrize("method", ["cg", "ir"])
def test_refinement_stops_soon_after_its_floor_and_keeps_the_best(method):
    """Products with an error floor (as float64 rounding gives a badly conditioned K): the
    residual stops falling near the floor; refinement stops a few passes later, not after
    many more, and returns the best iterate it saw."""
    from kernelfit.solvers.refine import refine

    rng = np.random.default_rng(0)
    n = 60
    Q = np.linalg.qr(rng.standard_normal((n, n)))[0]
    K = (Q * np.logspace(0, -3, n)) @ Q.T
    M = np.linalg.inv(K + 1e-6 * np.eye(n))  # a good preconditioner
    floor = 1e-9
    noise = np.random.default_rng(1)

    def matvec(V):  # K V with a relative error of `floor`
        KV = K @ V
        return KV + floor * np.linalg.norm(KV) / np.sqrt(KV.size) * noise.standard_normal(KV.shape)

    Y = rng.standard_normal((n, 2))
    out = refine(matvec, lambda R: M @ R, Y, tol=1e-15, max_iter=30, method=method)
    h = out["history"]
    best_at = int(np.argmin(h))
    assert not out["converged"] and out["stalled"]
    # the best iterate by the steps' own residual, certified by a direct product
    assert out["tracked_residual"] == min(h)
    assert out["relative_residual"] == pytest.approx(
        np.linalg.norm(out["K_alpha"] - Y) / np.linalg.norm(Y), rel=1e-12)
    # CG's best iterate came from the recurrence: one more pass certifies it; each
    # iterative-refinement pass is already the direct product of its iterate
    assert out["matvecs"] == len(h) + (method == "cg")
    assert len(h) - 1 - best_at <= 4  # DRIFT_STEPS (3) rises, or PATIENCE["ir"] (3)
    assert out["iterations"] < 30
    assert min(h) < 1e-6  # it did converge down to near the floor first


def test_refinement_gives_up_when_its_passes_would_cost_more_than_the_other_way():
    """A steady 0.8 per pass to 1e-6 needs about 60 passes: allowed 200 and no time limit
    it goes on; told the other way costs less than those passes, it stops at the third
    pass and says why; given plenty of time it still converges."""
    import time

    from kernelfit.solvers.refine import refine

    Y = np.ones((5, 1))

    def slow(V):  # K = I, each product 10 ms: a pass costs about that
        time.sleep(0.01)
        return V.copy()

    def run(**kw):
        return refine(slow, lambda R: 0.2 * R, Y, tol=1e-6, max_iter=200, method="ir",
                      give_up_slow=True, **kw)

    out = run(give_up_after=0.2)  # 60 passes of >= 10 ms: more than 0.2 s
    assert not out["converged"] and out["iterations"] == 3
    assert "longer than the 0.2 s" in out["gave_up"]
    out = run(give_up_after=60.0)
    assert out["converged"] and out["gave_up"] is None and out["iterations"] > 20
    out = run()  # no time limit: 60 passes are within the 197 left
    assert out["converged"] and out["gave_up"] is None


def test_refinement_keeps_going_while_it_makes_progress():
    """A slow but steady rate (0.8 per pass) is not a stall."""
    from kernelfit.solvers.refine import refine

    n = 5
    Y = np.ones((n, 1))
    # K = I and M^-1 = 0.2 I: each IR step keeps 0.8 of the residual
    out = refine(lambda V: V.copy(), lambda R: 0.2 * R, Y, tol=1e-6, max_iter=200,
                 method="ir")
    assert out["converged"]
    assert out["iterations"] > 20


def _spd_system(n=80, cond=1e4, seed=0):
    rng = np.random.default_rng(seed)
    Q = np.linalg.qr(rng.standard_normal((n, n)))[0]
    K = (Q * np.logspace(0, -np.log10(cond), n)) @ Q.T
    return K, rng.standard_normal((n, 3))


@pytest.mark.parametrize("method", ["cg", "ir"])
def test_fast_preconditioner_is_used_while_it_gains(method):
    """A float32 application of a good factor gains as much per pass as the float64 one:
    every pass uses it, and the float64 residual reaches tol."""
    from kernelfit.solvers.refine import refine

    K, Y = _spd_system()
    M = np.linalg.inv(K.astype(np.float32).astype(np.float64))  # float32 K's inverse
    M32 = M.astype(np.float32)
    exact = []

    def precond(R):
        exact.append(1)
        return M @ R

    out = refine(lambda V: K @ V, precond, Y, tol=1e-12, max_iter=30, method=method,
                 fast_precond=lambda R: (M32 @ R.astype(np.float32)).astype(np.float64))
    assert out["converged"] and out["relative_residual"] <= 1e-12
    assert out["fast_passes"] == out["iterations"] > 0 and not exact
    assert np.linalg.norm(K @ out["alpha"] - Y) / np.linalg.norm(Y) <= 1e-11


@pytest.mark.parametrize("method", ["cg", "ir"])
def test_fast_preconditioner_that_gains_little_is_dropped(method):
    """A cheap application that cuts the residual less than FAST_GAIN times per pass is
    replaced by the float64 one after that pass; the solve still reaches tol."""
    from kernelfit.solvers.refine import FAST_GAIN, refine

    K, Y = _spd_system()
    M = np.linalg.inv(K + 1e-7 * np.eye(len(K)))
    rng = np.random.default_rng(5)

    def poor(R):  # M R with an error of half its size in a random direction
        Z = M @ R
        E = rng.standard_normal(Z.shape)
        return Z + 0.5 * np.linalg.norm(Z, axis=0) / np.linalg.norm(E, axis=0) * E

    log = []
    out = refine(lambda V: K @ V, lambda R: M @ R, Y, tol=1e-12, max_iter=30, method=method,
                 log=log, fast_precond=poor)
    h = out["history"]
    assert out["converged"] and h[-1] <= 1e-12
    assert out["fast_passes"] == 1 and h[1] > h[0] / FAST_GAIN
    assert out["iterations"] - out["fast_passes"] >= 1
    assert any("applied in float64 from here" in line for line in log)
    info = refinement_info(out, SolveOptions(refinement=method))
    assert info["preconditioner_application"]["float32_passes"] == 1


def test_mixed_solve_records_float32_preconditioner_passes():
    X, Y = _problem()
    k = get_kernel("gaussian", bandwidth=0.3)   # well conditioned for float32
    sol = solve_exact(k, X, Y, SolveOptions(precision="mixed", tile_size=64, tol=1e-12))
    app = sol.info["preconditioner_application"]
    assert sol.info["converged"] and sol.info["relative_residual"] <= 1e-12
    assert app["float32_passes"] >= 1
    assert app["float32_passes"] + app["float64_passes"] == sol.info["iterations"]
    K = k(X)
    assert np.linalg.norm(K @ sol.alpha - Y) / np.linalg.norm(Y) <= 1e-11


def test_mixed_on_integer_grid_keeps_exact_distances_and_falls_back_without_them(
        monkeypatch, caplog, keep_values):
    # 8-bit inputs: K is kept as its float64 values where the budget holds them all, else
    # as exact squared distances (uint32, half the bytes); the refinement reaches the
    # float64 answer from either, and a fallback to float64 factors the kept values, or
    # builds its own tiles from integers (which are not K's float64 values)
    from kernelfit.kernels import to_integer_grid

    rng = np.random.default_rng(5)
    X = rng.integers(0, 256, size=(300, 8)) / 255.0
    Y = np.eye(3)[rng.integers(0, 3, 300)]
    k, G = to_integer_grid(get_kernel("gaussian", bandwidth=0.6), X)
    ref = solve_exact(k, G, Y, SolveOptions(precision="float64", tile_size=64, residual=True))
    values = solve_exact(k, G, Y, SolveOptions(precision="mixed", tile_size=64))
    # the budget holds every tile's float64 values: those are kept (no finish per product)
    assert values.info["kept_storage"] == "float64" and not values.info["kept_diagonal_in_tiles"]
    assert values.info["kept_bytes"] == 8 * sum(min(64, 300 - 64 * i) * min(64, 300 - 64 * j)
                                                for i in range(5) for j in range(i + 1))
    # where it does not, the exact integers: twice the tiles in the same bytes
    keep_values(False)
    sol = solve_exact(k, G, Y, SolveOptions(precision="mixed", tile_size=64))
    np.testing.assert_allclose(sol.alpha, values.alpha, rtol=0,
                               atol=1e-6 * np.abs(values.alpha).max())
    info = sol.info
    assert info["kept_storage"] == "uint32" and info["kept_tiles"] == info["n_tiles_lower"]
    # the off-diagonal tiles; the diagonal ones live in the float32 tiles' free triangles
    assert info["kept_diagonal_in_tiles"]
    assert info["kept_bytes"] == 4 * sum(min(64, 300 - 64 * i) * min(64, 300 - 64 * j)
                                         for i in range(5) for j in range(i))
    assert "exact integers" in info["residual_method"] and info["converged"]
    Kd = get_kernel("gaussian", bandwidth=0.6)(X)
    assert np.linalg.norm(Kd @ sol.alpha - Y) / np.linalg.norm(Y) <= 1e-10
    np.testing.assert_allclose(sol.alpha, ref.alpha, rtol=0, atol=1e-6 * np.abs(ref.alpha).max())
    # the float64 path's copy for the residual: values too, where its budget holds them
    assert ref.info["kept_storage"] == "float64"

    _fast_float32(monkeypatch)
    X2 = X[:, :3]  # cond ~ 7e10: too much for float32
    k2, G2 = to_integer_grid(get_kernel("gaussian", bandwidth=0.3), X2)
    with caplog.at_level("WARNING", logger="kernelfit"):
        fb = solve_exact(k2, G2, Y, SolveOptions(tile_size=64))
    assert fb.info["precision"] == "float64", fb.info.get("precision_reason")
    assert not fb.info["precision_fallback"]["reused_float64_tiles"]
    ref2 = solve_exact(k2, G2, Y, SolveOptions(precision="float64", tile_size=64))
    np.testing.assert_allclose(fb.alpha, ref2.alpha, rtol=1e-12, atol=0)
    # kept as values, they are K's float64 tiles: the fallback factors those
    keep_values(True)
    fb = solve_exact(k2, G2, Y, SolveOptions(tile_size=64))
    assert fb.info["precision_fallback"]["reused_float64_tiles"]
    np.testing.assert_allclose(fb.alpha, ref2.alpha, rtol=1e-12, atol=0)


# ------------------------------------------------ auto's time model: grid, passes, regrets
#: rates of a 2-core Zen 4 (AVX-512) VM as the probe measured them
_ZEN4 = {"float64": 87e9, "float32": 174e9, "memory_bytes_per_s": 33e9,
         "thin_seconds_per_entry": {"float64": 1.2e-9, "float32": 0.5e-9},
         "thin_columns": 16, "finish_entries_per_s": 1.8e9}


def _plan_auto(monkeypatch, n, d, grid, available=int(21.5 * 2 ** 30), tile_size=None):
    from kernelfit.backend import get_backend
    from kernelfit.solvers import plan

    monkeypatch.setattr(plan, "gemm_rates", lambda be: dict(_ZEN4))
    opts = SolveOptions(residual=True, tile_size=tile_size).validate()
    return plan.plan_solve(n, d, 10, opts, device="cpu", available=available, n_test=10000,
                           backend=get_backend("cpu"), grid=grid)


def test_time_model_costs_grid_inputs_at_the_float32_rate_and_keeps_twice_the_tiles():
    from kernelfit.memory import MemoryPlan
    from kernelfit.solvers import plan

    n, ts = 60000, 2500
    _, off, off_exact = plan._mixed_keep(n, ts, MemoryPlan(device="cpu"), 8 << 30)
    _, on, on_exact = plan._mixed_keep(n, ts, MemoryPlan(device="cpu"), 8 << 30, grid=True)
    assert on_exact and not off_exact  # 8 GiB does not hold 14 GB of values: integers
    # the same budget: on the grid the 24 diagonal tiles (of 300) come free and the
    # off-diagonal ones take 4 bytes an entry instead of 8
    assert 0 < off < 0.5 and 2 * off < on < 1
    t_off = plan.expected_times(n, 717, 10, ts, _ZEN4, off, 0.0)
    t_on = plan.expected_times(n, 717, 10, ts, _ZEN4, on, 0.0, grid=True)
    assert t_on["integer_grid"] and not t_off["integer_grid"]
    assert t_on["pass_s"] < 0.6 * t_off["pass_s"]
    # the same factorization either way; only the passes and the residual product differ
    assert t_on["mixed_best_s"] - 4 * t_on["pass_s"] == pytest.approx(  # 3 + certifying
        n ** 3 / 3 / 174e9 + on * n * n / 2 * 4 / 33e9)
    assert t_on["float64_s"] < t_off["float64_s"]
    for t in (t_on, t_off):
        assert t["mixed_best_s"] < t["mixed_s"] < t["mixed_worst_s"]
        assert t["passes_range"] == [plan.FEWEST_PASSES, plan.WORST_PASSES]
        json.dumps(t)


def test_values_are_kept_where_the_budget_holds_every_tile():
    """Where the budget holds K's float64 values for every tile, mixed precision keeps
    values, not exact integers: a refinement product reads them instead of finishing them
    (n = 10,000 on 2 Zen 3 cores: 0.08-0.12 s a product against 0.23-0.29 s)."""
    from kernelfit.memory import MemoryPlan
    from kernelfit.solvers import plan
    from kernelfit.solvers.products import kept_copy_bytes, values_fit

    n, ts = 10000, 2000
    full = kept_copy_bytes(n, ts, None, diagonal=True)
    assert values_fit(n, ts, full, diagonal=True) and values_fit(n, ts, None, diagonal=True)
    assert not values_fit(n, ts, full - 1, diagonal=True)
    budget, share, exact = plan._mixed_keep(n, ts, MemoryPlan(device="cpu"), 8 << 30,
                                            grid=True)
    assert budget == full and share == 1.0 and not exact
    t_values = plan.expected_times(n, 784, 10, ts, _ZEN4, 1.0, 0.0, grid=True,
                                   kept_exact=False)
    t_ints = plan.expected_times(n, 784, 10, ts, _ZEN4, 1.0, 0.0, grid=True)
    assert not t_values["kept_exact"] and t_ints["kept_exact"]
    assert t_values["pass_s"] < t_ints["pass_s"]
    # the factorization's part of the mixed time also writes the copy: 8 bytes, not 4
    assert t_values["once_s"] > t_ints["once_s"]


def test_time_model_pass_matches_the_measured_full_mnist_passes():
    """Six passes of 15-18 s each at n = 60,000 on MNIST pixels (2 Zen 4 cores, 99 of 300
    tiles kept as exact integers): the model's pass, with rates measured on such a VM."""
    from kernelfit.solvers import plan

    t = plan.expected_times(60000, 717, 10, 2500, _ZEN4, 99 / 300, 0.0, grid=True)
    assert 12 <= t["pass_s"] <= 21


def test_auto_keeps_float64_where_mixed_wins_only_if_its_refinement_is_short(monkeypatch):
    """Gabor features (off the grid, d = 3,969) at n = 43,000 in 21.5 GiB: a third of K
    is recomputed in float64 at every pass (32 s a pass). Six passes would win, seven
    tie; Gabor refinements took 3 to 14 passes, so auto factors in float64. (Tiles of
    2,048 rows, as on a 512 KiB L2: with this machine's own tiles the balance moves, with
    2,530-row tiles six passes already tie.)"""
    sp = _plan_auto(monkeypatch, 43000, 3969, grid=False, tile_size=2048)
    t = sp.choice["expected_time"]
    assert t["mixed_s"] < t["float64_s"] < t["mixed_worst_s"]
    assert sp.precision == "float64" and "3-14 refinement passes" in sp.reason
    # the same sizes on the integer grid (MNIST pixels): recomputed tiles at the float32
    # rate, twice the tiles kept: mixed wins even at 14 passes
    sp = _plan_auto(monkeypatch, 43000, 717, grid=True)
    assert sp.precision == "mixed" and "expected faster" in sp.reason
    t = sp.choice["expected_time"]
    assert t["integer_grid"] and t["mixed_worst_s"] < t["float64_s"]


def test_auto_full_mnist_pixels_mixed_and_full_gabor_float64(monkeypatch):
    sp = _plan_auto(monkeypatch, 60000, 717, grid=True)
    assert sp.precision == "mixed"
    sp = _plan_auto(monkeypatch, 60000, 3969, grid=False)
    assert sp.precision == "float64" and "float64 factorization expected faster" in sp.reason


def test_auto_keeps_more_of_k_up_to_the_float64_plans_memory_where_that_wins(monkeypatch):
    """Gabor features on the 2^-11 grid (d = 3,969) at n = 60,000 in 21.5 GiB: within
    KEEP_F64_SHARE of the memory mixed precision keeps a third of K and recomputes the
    rest at every pass, and loses to float64; keeping K's tiles up to the memory the
    float64 solve itself takes, its passes read exact integers and it wins (measured on
    2 Zen 5 cores: 282 s against 425 s, 17.0 against 17.8 GiB). Not with a memory budget
    (that is filled anyway), and not where the narrower plan already wins (MNIST pixels:
    their 10 GiB stay)."""
    from kernelfit.backend import get_backend
    from kernelfit.solvers import plan

    sp = _plan_auto(monkeypatch, 60000, 3969, grid=True)
    assert sp.precision == "mixed" and "within the float64 plan's memory" in sp.reason
    share = sp.choice["keep_share"]
    assert plan.KEEP_F64_SHARE < share <= 1.0
    t = sp.choice["expected_time"]
    assert t["kept_fraction"] == 1.0 and t["mixed_worst_s"] < t["float64_s"]
    assert sp.memory.total <= sp.fallback.memory.total  # no more than float64 would take
    assert sp.keep_budget > 0 and sp.fallback.precision == "float64"
    # the plan that runs keeps them: more than the 40% plan could hold
    avail = int(21.5 * 2 ** 30)
    assert sp.memory.total > plan.KEEP_F64_SHARE * avail
    assert sp.memory.items["K tiles kept (refinement)"] > 0.9 * (share * avail - (
        sp.memory.total - sp.memory.items["K tiles kept (refinement)"]))
    # a pass whose preconditioner solve runs in float64: two float64 sweeps in its place
    e, w = 60000 * 60000 / 2.0, max(1.0, 10 / 16)
    assert t["pass64_s"] - t["pass_s"] == pytest.approx(
        2 * 2 * e * 1.2e-9 * w - 2 * e * 0.5e-9 * w)
    # not on a GPU, where the float64 passes were not measured: the same case asked there
    opts = SolveOptions(residual=True).validate()
    p64 = plan._in_core(60000, 3969, 10, 10000, np.float64, 2500, "cholesky", "cpu", avail)
    pm = plan._add_predictions(plan.plan_mixed(60000, 3969, 10, 2500, device="cpu",
                                               available=avail), 10000, 10)
    _, kept, _ = plan._mixed_keep(60000, 2500, pm, avail, True)
    narrow = plan.expected_times(60000, 3969, 10, 2500, _ZEN4, kept, 0.0, grid=True)
    args = (60000, 3969, 10, 10000, 2500, opts)
    rest = (avail, True, p64, _ZEN4, 0.0, narrow)
    assert plan._wider_keep(*args, "cpu", *rest)[0] > plan.KEEP_F64_SHARE
    assert plan._wider_keep(*args, "gpu", *rest) is None
    # a memory budget given: filled as before, no wider share
    opts = SolveOptions(residual=True, memory_budget=int(21.5 * 2 ** 30)).validate()
    given = plan.plan_solve(60000, 3969, 10, opts, device="cpu",
                            available=int(21.5 * 2 ** 30), n_test=10000,
                            backend=get_backend("cpu"), grid=True)
    assert "keep_share" not in given.choice
    # MNIST pixels: the narrower plan wins already and keeps its memory
    sp = _plan_auto(monkeypatch, 60000, 717, grid=True)
    assert sp.precision == "mixed" and "keep_share" not in sp.choice
    assert sp.memory.total <= plan.KEEP_F64_SHARE * 21.5 * 2 ** 30


def test_auto_hedges_by_regret_not_by_the_worst_case_alone(monkeypatch):
    """n = 10,000 MNIST pixels: every tile kept, a pass costs a small share of the float32
    factorization's saving; mixed would lose at 14 passes (by less than float64 loses at
    3), and auto takes it."""
    sp = _plan_auto(monkeypatch, 10000, 717, grid=True)
    t = sp.choice["expected_time"]
    assert sp.precision == "mixed"
    assert t["mixed_worst_s"] > t["float64_s"]  # a rule on the worst case would not
    assert t["mixed_worst_s"] / t["float64_s"] < t["float64_s"] / t["mixed_best_s"]


def _blas_threads(threadpoolctl) -> set:
    return {p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"}


def _spy_blas_threads(monkeypatch, threadpoolctl, owner, name: str) -> list:
    """Replace ``owner.name`` by a spy that records the BLAS thread counts it is called
    under (skips where threadpoolctl sees no BLAS); returns the list it fills."""
    if not _blas_threads(threadpoolctl):
        pytest.skip("no BLAS that threadpoolctl sees")
    seen = []
    real = getattr(owner, name)

    def spy(*args, **kwargs):
        seen.append(_blas_threads(threadpoolctl))
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)
    return seen


def test_refinement_over_several_tiles_runs_on_one_blas_thread(monkeypatch):
    """Over several tiles the refinement runs with every BLAS library limited to one
    thread (its products and solves use the tile threads, and a library's own threads,
    spinning beside them after a small product, slowed it), restored afterwards; over a
    single tile, whose products are one BLAS call each, the BLAS keeps its threads."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from kernelfit.solvers import mixed

    seen = _spy_blas_threads(monkeypatch, threadpoolctl, mixed, "refine")
    X, Y = _problem()
    k = get_kernel("gaussian", bandwidth=0.8)
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        for tile_size in (64, 300):
            sol = solve_exact(k, X, Y, SolveOptions(precision="mixed", tile_size=tile_size))
            assert sol.info["converged"] and sol.info["relative_residual"] <= 1e-10
        assert seen == [{1}, {2}] and _blas_threads(threadpoolctl) == {2}



@pytest.mark.parametrize("tile_size, threads", [(64, {1}), (300, {2})])
def test_landmarks_run_on_one_blas_thread_where_tile_threads_follow(monkeypatch, tile_size,
                                                                     threads):
    """The landmarks' products run on one BLAS thread where the Gram's tile threads follow
    (BLAS threads they woke would spin beside those); a single-tile solve, whose Gram and
    factor are BLAS calls of their own, keeps BLAS's threads."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from kernelfit.solvers import mixed

    seen = _spy_blas_threads(monkeypatch, threadpoolctl, mixed, "nystrom_landmarks")
    X, Y = _problem()
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        sol = solve_exact(get_kernel("gaussian", bandwidth=0.8), X, Y,
                          SolveOptions(precision="mixed", tile_size=tile_size))
        assert sol.info["converged"] and sol.info["relative_residual"] <= 1e-10
        assert seen == [threads] and _blas_threads(threadpoolctl) == {2}


def test_the_fits_certification_runs_on_one_blas_thread(monkeypatch):
    """The fit's residual and training error (norms: threaded dot products) run on one
    BLAS thread, whose threads would otherwise spin into a prediction's tile threads."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    seen = _spy_blas_threads(monkeypatch, threadpoolctl, KernelInterpolator, "_certify")
    X, Y = _problem()
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        m = KernelInterpolator(bandwidth=0.8).fit(X, Y.argmax(axis=1))
        assert seen == [{1}] and _blas_threads(threadpoolctl) == {2}
    assert m.relative_residual_ <= 1e-10 and m.train_error_ == 0.0


def test_blas_limits_entered_at_once_are_undone_by_the_last_to_leave():
    """Two scopes from two fits in threads, interleaved A in, B in, A out, B out: each had
    restored its predecessor's limits, leaving BLAS on one thread for good."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from kernelfit.backend import BlasOneThread

    if not _blas_threads(threadpoolctl):
        pytest.skip("no BLAS that threadpoolctl sees")
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        a, b = BlasOneThread(True), BlasOneThread(True)
        a.__enter__()
        b.__enter__()
        assert _blas_threads(threadpoolctl) == {1}
        a.__exit__(None, None, None)
        assert _blas_threads(threadpoolctl) == {1}  # b still works on one thread
        b.__exit__(None, None, None)
        assert _blas_threads(threadpoolctl) == {2}
        with BlasOneThread(False):  # inactive: nothing changes
            assert _blas_threads(threadpoolctl) == {2}
        one = BlasOneThread(True)
        with one:  # one object nested in itself
            with one:
                assert _blas_threads(threadpoolctl) == {1}
        assert _blas_threads(threadpoolctl) == {2}
