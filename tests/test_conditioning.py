"""precision='auto''s conditioning probe: a float64 Cholesky of K on a sample of rows, its
smallest pivot extrapolated to n, and the float32 refinement rate it predicts."""

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernelfit.backend import get_backend
from kernelfit.kernels import get_kernel
from kernelfit.solvers import conditioning as cond
from kernelfit.solvers.exact import SolveOptions, solve_exact
from test_mixed import _fast_float32 as _auto_plans_mixed

CPU = get_backend("cpu")


def _fast_float32(monkeypatch):
    """auto plans mixed precision for a few hundred points (tests/test_mixed.py's
    stand-in rates) and probes them (a sample of 64 rows is enough here)."""
    _auto_plans_mixed(monkeypatch)
    monkeypatch.setattr(cond, "PROBE_MIN_ROWS", 64)
    monkeypatch.setattr(cond, "PROBE_SHARE", 1.0)


def _data(n, d, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, d))
    return X, np.stack([np.sin(3 * X.sum(1)), np.cos(2 * X[:, 0])], 1)


def test_probe_rows_cost_a_share_of_the_factorization():
    assert cond.probe_rows(5_000, 784) == 0  # too small to be worth a sample
    assert cond.probe_rows(8_000, 3_969) == 0
    m10, m20 = cond.probe_rows(10_000, 784), cond.probe_rows(20_000, 784)
    assert cond.PROBE_MIN_ROWS <= m10 < m20 <= cond.PROBE_MAX_ROWS
    for n, d in ((10_000, 784), (20_000, 784), (20_000, 3_969)):
        m = cond.probe_rows(n, d)
        cost = m ** 3 / 3 + 2 * m * m * d
        assert cost <= cond.PROBE_SHARE * n ** 3 / 3
        more = (m + 1) ** 3 / 3 + 2 * (m + 1) ** 2 * d  # ... and the most rows that do
        assert more > cond.PROBE_SHARE * n ** 3 / 3 or m == cond.PROBE_MAX_ROWS
    assert cond.probe_rows(60_000, 784) == cond.PROBE_MAX_ROWS


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 200_000), d=st.integers(1, 10_000))
def test_probe_rows_within_bounds_budget_and_growing_with_n(n, d):
    m = cond.probe_rows(n, d)
    assert m == 0 or cond.PROBE_MIN_ROWS <= m <= min(cond.PROBE_MAX_ROWS, n // 2)
    assert m ** 3 / 3 + 2 * m * m * d <= cond.PROBE_SHARE * n ** 3 / 3
    assert cond.probe_rows(n + 1000, d) >= m and cond.probe_rows(n, d + 100) <= m


@pytest.mark.parametrize("power", [0.7, 1.3, 2.0])
def test_a_power_law_running_minimum_extrapolates_exactly(power):
    j = np.arange(1, 2049, dtype=np.float64)
    rec = cond.extrapolate_min_pivot(0.5 * j ** -power, 60_000)
    assert rec["slope"] == pytest.approx(-power, rel=1e-9)
    assert rec["min_pivot_predicted"] == pytest.approx(0.5 * 60_000 ** -power, rel=1e-9)
    assert rec["sample_min_pivot"] == pytest.approx(0.5 * 2048 ** -power)


def test_extrapolation_never_rises_above_the_sample():
    flat = np.r_[1.0, np.full(511, 0.3)]  # a running minimum that stops falling
    rec = cond.extrapolate_min_pivot(flat, 10_000)
    assert rec["slope"] == pytest.approx(0.0, abs=1e-12)
    assert rec["min_pivot_predicted"] == pytest.approx(0.3)


def test_sample_pivots_are_those_of_a_float64_cholesky_of_the_sampled_rows():
    X, _ = _data(400, 6)
    k = get_kernel("gaussian", bandwidth=0.3)
    rows = np.random.default_rng(3).choice(400, size=100, replace=False)
    piv = cond.sample_pivots(k, X, rows, CPU)
    L = np.linalg.cholesky(k(X[rows]))
    np.testing.assert_allclose(piv, np.diag(L) ** 2, rtol=1e-12)
    assert piv[0] == pytest.approx(1.0) and np.all((piv > 0) & (piv <= 1 + 1e-12))


def test_the_rate_constant_of_a_deflated_factor(monkeypatch):
    """Mixed precision's float32 factor is of K less its Nystrom part on RANK landmarks
    (Gaussian and Laplacian kernels, n >= RANK * 64): its refinement came out faster than
    RATE_CONSTANT's rate, and the probe counts passes with DEFLATED_RATE_CONSTANT there;
    elsewhere (no landmarks, fewer of them, deflation off) RATE_CONSTANT. The landmarks
    the solve plans at that n are RANK (where the data leave them: none at a row or
    dependent)."""
    from kernelfit.solvers import deflate

    big = deflate.RANK * deflate.SAMPLE_PER_LANDMARK
    assert cond.DEFLATED_RATE_CONSTANT < cond.RATE_CONSTANT
    for name in ("gaussian", "laplacian"):
        assert cond.rate_constant(get_kernel(name), big) == cond.DEFLATED_RATE_CONSTANT
        assert cond.rate_constant(get_kernel(name), big - 1) == cond.RATE_CONSTANT
    for name in ("polynomial", "linear", "normalized"):
        assert cond.rate_constant(get_kernel(name), 10 * big) == cond.RATE_CONSTANT
    assert cond.predicted_rate(1e-3, cond.DEFLATED_RATE_CONSTANT) == pytest.approx(
        cond.DEFLATED_RATE_CONSTANT * 2.0 ** -24 / 1e-3)
    # what solve_mixed deflates with at that n, on rows that leave every landmark in (40
    # separated clusters; uniform random rows leave centres near each other: dependent)
    rng = np.random.default_rng(0)
    X = (10 * rng.standard_normal((40, 6)))[rng.integers(0, 40, big)]
    X += 0.5 * rng.standard_normal(X.shape)
    U, rec = deflate.nystrom_landmarks(get_kernel("gaussian", bandwidth=3.0), X, None, CPU)
    assert rec["rank"] == deflate.RANK == U.shape[1]
    monkeypatch.setattr(deflate, "ENABLED", False)
    assert cond.rate_constant(get_kernel("gaussian"), big) == cond.RATE_CONSTANT


def test_the_probe_records_and_uses_the_deflated_constant(monkeypatch):
    """A probed Gaussian solve of n >= RANK * 64 rows predicts its rate with the deflated
    constant (the record says which); with deflation off, the same sample with
    RATE_CONSTANT."""
    monkeypatch.setattr(cond, "PROBE_MIN_ROWS", 64)
    monkeypatch.setattr(cond, "PROBE_SHARE", 1.0)
    X, _ = _data(2100, 6)
    k = get_kernel("gaussian", bandwidth=0.3)
    times = _times(2.3, 392.0)
    rec = cond.conditioning_probe(k, X, CPU, times, 1e-12)
    assert rec["rate_constant"] == cond.DEFLATED_RATE_CONSTANT
    pivot = rec["samples"][-1]["min_pivot_predicted"]
    assert cond.RATE_CONSTANT * cond.U32 / pivot < 1.0  # neither rate capped at 1
    assert rec["samples"][-1]["rate_predicted"] == pytest.approx(
        cond.predicted_rate(pivot, cond.DEFLATED_RATE_CONSTANT))
    from kernelfit.solvers import deflate

    monkeypatch.setattr(deflate, "ENABLED", False)
    off = cond.conditioning_probe(k, X, CPU, times, 1e-12)
    assert off["rate_constant"] == cond.RATE_CONSTANT
    assert off["samples"][-1]["rate_predicted"] == pytest.approx(
        cond.predicted_rate(pivot, cond.RATE_CONSTANT))


def test_a_deflated_solve_keeps_the_risk_gates_on_k_s_own_rate(monkeypatch):
    """The deflated constant counts passes only: RISKY_RATE and BREAKDOWN_RATE stay on the
    rate RATE_CONSTANT predicts (K's own factor, for which they were measured; MNIST
    pixels at n = 60,000 passed up to 3.4 times that rate). A sample whose own-factor rate
    is past the breakdown rate is float64 even where the deflated rate would pass."""
    monkeypatch.setattr(cond, "PROBE_MIN_ROWS", 64)
    monkeypatch.setattr(cond, "PROBE_SHARE", 1.0)
    X, _ = _data(2100, 6)
    k = get_kernel("gaussian", bandwidth=0.3)
    own = cond.BREAKDOWN_RATE * 1.2
    monkeypatch.setattr(cond, "predicted_rate", lambda pivot, constant: own * constant
                        / cond.RATE_CONSTANT)
    cheap = dict(_times(0.01, 1e6), pass64_s=0.01)  # mixed would win by time at any rate
    rec = cond.conditioning_probe(k, X, CPU, cheap, 1e-12)
    assert rec["rate_constant"] == cond.DEFLATED_RATE_CONSTANT
    last = rec["samples"][-1]
    assert last["rate_predicted"] < cond.BREAKDOWN_RATE <= last["gate_rate"]
    assert rec["verdict"] == "float64" and "too ill-conditioned" in rec["why"]
    assert "which the risk gates take" in rec["why"]
    # a risky own-factor rate costs the passes in float64 (at RATE_ERROR times the
    # deflated rate), as for K's own factor
    own = cond.RISKY_RATE * 1.5
    rec = cond.conditioning_probe(k, X, CPU, cheap, 1e-12)
    assert "pessimistic" in rec["samples"][-1] and rec["verdict"] == "mixed"
    assert rec["samples"][-1]["pessimistic"]["rate_predicted"] == pytest.approx(
        cond.RATE_ERROR * own * cond.DEFLATED_RATE_CONSTANT / cond.RATE_CONSTANT)


def test_sample_with_duplicate_rows_is_not_positive_definite():
    X = np.repeat(np.random.default_rng(0).random((50, 4)), 4, axis=0)
    assert cond.sample_pivots(get_kernel("gaussian", bandwidth=1.0), X, np.arange(0, 200, 2),
                              CPU) is None


def test_rate_and_passes():
    # MNIST pixels at n = 60,000: a smallest pivot ~1e-3 -> a rate ~6e-3, 6 passes to 1e-12
    rate = cond.predicted_rate(1e-3)
    assert rate == pytest.approx(100 * 2.0 ** -24 / 1e-3)
    assert cond.predicted_passes(rate, 1e-12) == 6
    assert cond.predicted_rate(1e-9) == 1.0 and cond.predicted_rate(0.0) == 1.0
    assert cond.predicted_passes(1.0, 1e-12) is None  # never
    assert cond.predicted_passes(1e-20, 1e-12) == 1
    # a rate that is let through keeps the refinement's float32 application of the factor
    from kernelfit.solvers.refine import FAST_GAIN

    assert cond.RISKY_RATE < 1.0 / FAST_GAIN


def _times(pass_s, float64_s):
    return {"mixed_s": 1.0 + 6 * pass_s, "once_s": 1.0, "passes_assumed": 6, "pass_s": pass_s,
            "float64_s": float64_s}


def test_probe_verdicts(monkeypatch):
    monkeypatch.setattr(cond, "PROBE_MIN_ROWS", 64)
    monkeypatch.setattr(cond, "PROBE_SHARE", 1.0)
    X, _ = _data(600, 6)
    good = get_kernel("gaussian", bandwidth=0.3)
    rec = cond.conditioning_probe(good, X, CPU, _times(0.1, 10.0), 1e-12)
    assert rec["verdict"] == "mixed" and rec["rows"] >= 64 and rec["seed"] == 0
    assert rec["rate_predicted"] < cond.RISKY_RATE and rec["passes_predicted"] <= 6
    # the passes, and the product that certifies the answer
    assert rec["mixed_s_predicted"] == pytest.approx(1.0 + 0.1 * (rec["passes_predicted"] + 1))
    # the same rate, but each pass so slow that a float64 factorization wins
    slow = cond.conditioning_probe(good, X, CPU, _times(5.0, 10.0), 1e-12)
    assert slow["verdict"] == "float64" and "against 10 s float64" in slow["why"]
    # a kernel far too ill-conditioned for float32 (cond ~ 1e14 at n = 600)
    bad = cond.conditioning_probe(get_kernel("gaussian", bandwidth=0.3), X[:, :3], CPU,
                                  _times(0.1, 10.0), 1e-12)
    assert bad["verdict"] == "float64" and bad["rate_predicted"] >= cond.RISKY_RATE
    assert "too ill-conditioned" in bad["why"]
    monkeypatch.setattr(cond, "PROBE_MIN_ROWS", 1024)
    small = cond.conditioning_probe(good, X, CPU, _times(0.1, 10.0), 1e-12)
    assert small["verdict"] == "mixed" and small["rows"] == 0 and "not probed" in small["why"]


def test_a_slow_rate_is_costed_in_float64_passes_at_its_error_and_a_breakdown_ruled_out(
        monkeypatch):
    """From RISKY_RATE the probe does not rule mixed precision out by the rate alone: it
    costs the passes as the refinement runs them then (float64 preconditioner solves,
    pass64_s) at RATE_ERROR times the rate, within the refinement's steps; from
    BREAKDOWN_RATE, where the true rate may reach the float32 breakdown, float64."""
    monkeypatch.setattr(cond, "PROBE_MIN_ROWS", 64)
    monkeypatch.setattr(cond, "PROBE_SHARE", 1.0)
    X, _ = _data(600, 6)
    k = get_kernel("gaussian", bandwidth=0.3)
    said = {}
    monkeypatch.setattr(cond, "predicted_rate", lambda pivot, constant: said["rate"])
    assert cond.RISKY_RATE < cond.BREAKDOWN_RATE < 0.4 and cond.RATE_ERROR > 1.0
    # the README quotes them: 2.6 times the rate, ruled out from 0.155
    assert cond.RATE_ERROR == pytest.approx(2.58) and cond.BREAKDOWN_RATE == pytest.approx(
        0.155, abs=5e-4)
    # the measured case: Gabor features at n = 60,000, every tile kept (the model's
    # pass64_s 3.9 s; 4.1 s measured)
    cheap = dict(_times(2.3, 392.0), once_s=178.0, pass64_s=3.9)
    said["rate"] = 0.098
    rec = cond.conditioning_probe(k, X, CPU, cheap, 1e-12)
    pess = cond.predicted_passes(cond.RATE_ERROR * 0.098, 1e-12)
    assert rec["verdict"] == "mixed" and f"{pess} passes (at" in rec["why"]
    assert rec["samples"][-1]["pessimistic"]["mixed_s_predicted"] == pytest.approx(
        178.0 + (pess + 1) * 3.9)
    # the record's passes are those the verdict was weighed on; its rate the sample's own
    assert rec["passes_predicted"] == pess and rec["rate_predicted"] == pytest.approx(0.098)
    assert rec["mixed_s_predicted"] == pytest.approx(178.0 + (pess + 1) * 3.9)
    # the refinement's own steps bound the passes: fewer steps (--max-iter 10) than the
    # pessimistic passes, and mixed precision would only fall back
    assert pess > 10
    rec = cond.conditioning_probe(k, X, CPU, cheap, 1e-12, max_iter=10)
    assert rec["verdict"] == "float64" and "too ill-conditioned" in rec["why"]
    # with steps enough, a rate just under BREAKDOWN_RATE is weighed by time, one just
    # over it is ruled out (at 30 steps the cap stops it at about the same rate)
    said["rate"] = cond.BREAKDOWN_RATE * 0.99
    assert cond.conditioning_probe(k, X, CPU, cheap, 1e-12, max_iter=100)["verdict"] == "mixed"
    said["rate"] = cond.BREAKDOWN_RATE * 1.01
    rec = cond.conditioning_probe(k, X, CPU, cheap, 1e-12, max_iter=100)
    assert rec["verdict"] == "float64" and "too ill-conditioned" in rec["why"]
    said["rate"] = 0.098
    # the same rate with passes that recompute K (26 s each): float64, by time
    dear = dict(cheap, pass64_s=27.6)
    rec = cond.conditioning_probe(k, X, CPU, dear, 1e-12)
    assert rec["verdict"] == "float64" and "against 392 s float64" in rec["why"]
    # a plan without the float64 pass time (older callers): ruled out as before
    rec = cond.conditioning_probe(k, X, CPU, _times(2.3, 392.0), 1e-12)
    assert rec["verdict"] == "float64" and "too ill-conditioned" in rec["why"]
    # a rate that may reach the breakdown, however cheap the passes
    said["rate"] = cond.BREAKDOWN_RATE * 1.01
    rec = cond.conditioning_probe(k, X, CPU, cheap, 1e-12)
    assert rec["verdict"] == "float64" and "too ill-conditioned" in rec["why"]
    # below RISKY_RATE nothing changed: the predicted rate and the float32 pass
    said["rate"] = 0.01
    rec = cond.conditioning_probe(k, X, CPU, cheap, 1e-12)
    assert rec["verdict"] == "mixed" and "pessimistic" not in rec["samples"][-1]
    assert rec["mixed_s_predicted"] == pytest.approx(
        178.0 + (cond.predicted_passes(0.01, 1e-12) + 1) * 2.3)
    # the other direction: auto planned float64 (hedging), the float64-costed passes say
    # mixed precision is faster
    said["rate"] = 0.06
    rec = cond.conditioning_probe(k, X, CPU, cheap, 1e-12, planned="float64")
    assert rec["verdict"] == "mixed" and "in float64" in rec["why"]


def test_a_quarter_sample_weighs_float64_passes_at_its_margin_times_the_error(monkeypatch):
    """The first quarter of the sample decides alone where its rate, taken FIRST_MARGIN
    times worse and then RATE_ERROR times worse again in float64 passes, still favours
    mixed precision."""
    monkeypatch.setattr(cond, "PROBE_SHARE", 1.0)
    X, _ = _data(2400, 6)
    k = get_kernel("gaussian", bandwidth=0.3)
    monkeypatch.setattr(cond, "predicted_rate", lambda pivot, constant: 0.01)
    cheap = dict(_times(2.3, 392.0), once_s=178.0, pass64_s=3.9)
    rec = cond.conditioning_probe(k, X, CPU, cheap, 1e-12)
    assert len(rec["samples"]) == 1 and rec["samples"][0]["margin"] == cond.FIRST_MARGIN
    costed = rec["samples"][0]["with_margin"]["pessimistic"]
    assert costed["rate_predicted"] == pytest.approx(cond.RATE_ERROR * cond.FIRST_MARGIN * 0.01)
    assert rec["verdict"] == "mixed" and rec["passes_predicted"] == costed["passes_predicted"]


def test_auto_skips_mixed_without_trying_where_the_probe_predicts_a_breakdown(monkeypatch,
                                                                              caplog):
    _fast_float32(monkeypatch)
    X, Y = _data(300, 3)
    k = get_kernel("gaussian", bandwidth=0.3)  # cond ~ 5e10: too much for float32
    ref = solve_exact(k, X, Y, SolveOptions(precision="float64", tile_size=64))
    with caplog.at_level(logging.INFO, logger="kernelfit"):
        sol = solve_exact(k, X, Y, SolveOptions(tile_size=64))
    info = sol.info
    assert info["precision"] == "float64" and sol.dtype == "float64"
    assert "precision_fallback" not in info  # no float32 factorization was tried
    assert not [r for r in caplog.records if "falling back" in r.getMessage()]
    assert "mixed precision expected faster" in info["precision_reason"]
    assert "sampled rows" in info["precision_reason"]
    assert info["conditioning_probe"]["verdict"] == "float64"
    assert "mixed_s" in info["plan_choice"]["expected_time"]  # what auto expected
    np.testing.assert_allclose(sol.alpha, ref.alpha, rtol=1e-12, atol=0)


def test_auto_keeps_mixed_where_the_probe_predicts_a_short_refinement(monkeypatch):
    _fast_float32(monkeypatch)
    X, Y = _data(300, 6)
    sol = solve_exact(get_kernel("gaussian", bandwidth=0.3), X, Y, SolveOptions(tile_size=64))
    info = sol.info
    assert info["precision"] == "mixed" and info["converged"]
    probe = info["conditioning_probe"]
    assert probe["verdict"] == "mixed" and probe["rows"] >= 64
    assert len(info["refinement_history"]) <= probe["passes_predicted"] + 2


def test_no_probe_where_auto_did_not_choose_mixed_by_time(monkeypatch):
    _fast_float32(monkeypatch)
    X, Y = _data(300, 6)
    k = get_kernel("gaussian", bandwidth=0.3)
    for opts in (SolveOptions(precision="mixed", tile_size=64),
                 SolveOptions(precision="float64", tile_size=64)):
        assert "conditioning_probe" not in solve_exact(k, X, Y, opts).info


def test_a_quarter_sample_decides_alone_only_where_it_clearly_favours_mixed(monkeypatch):
    monkeypatch.setattr(cond, "PROBE_MIN_ROWS", 64)
    monkeypatch.setattr(cond, "PROBE_SHARE", 1.0)
    monkeypatch.setattr(cond, "FIRST_MIN_ROWS", 32)
    X, _ = _data(600, 6)
    good = get_kernel("gaussian", bandwidth=0.3)
    rec = cond.conditioning_probe(good, X, CPU, _times(0.1, 10.0), 1e-12)
    (first,) = rec["samples"]
    assert rec["verdict"] == "mixed" and first["rows"] == rec["rows"] // 4
    assert first["margin"] == cond.FIRST_MARGIN and "10x margin" in rec["why"]
    assert rec["seconds"] == first["seconds"]
    # the full sample's rate without the margin is what decides otherwise
    # (here 6 passes at the quarter sample's rate with its margin, 4 at the full one's)
    slow = cond.conditioning_probe(good, X, CPU, _times(2.0, 12.0), 1e-12)
    first, full = slow["samples"]
    assert (first["rows"], full["rows"]) == (slow["rows"] // 4, slow["rows"])
    assert full["margin"] == 1.0 and "with_margin" not in full
    margin = first["with_margin"]
    assert margin["rate_predicted"] == pytest.approx(10 * first["rate_predicted"])
    assert margin["mixed_s_predicted"] >= 12.0 > full["mixed_s_predicted"]
    assert margin["passes_predicted"] > first["passes_predicted"]
    assert slow["verdict"] == "mixed" and slow["rate_predicted"] == full["rate_predicted"]
    bad = cond.conditioning_probe(good, X[:, :3], CPU, _times(0.1, 10.0), 1e-12)
    assert bad["verdict"] == "float64" and len(bad["samples"]) == 2


def _run_record(d: int) -> dict:
    """The run layer's record of a default solve of 300 points in ``d`` columns (Gaussian,
    h = 0.3: too ill-conditioned for float32 at d = 3, well conditioned at d = 6)."""
    from kernelfit.options import RunOptions
    from kernelfit.run import solve_arrays

    X, _ = _data(300, d)
    y = (X[:, 0] > 0.5).astype(int)
    opts = RunOptions.from_flat(kernel="gaussian", bandwidth=0.3, tile_size=64,
                                show_progress=False)
    return solve_arrays(X, y, opts=opts)


def test_run_record_shows_the_float64_plan_that_ran_after_a_veto(monkeypatch):
    _fast_float32(monkeypatch)
    rec = _run_record(3)
    assert rec["precision"] == "float64" and rec["conditioning_probe"]["verdict"] == "float64"
    plan = rec["memory_plan"]
    assert plan.get("precision") != "mixed" and "K tiles (float32)" not in plan["items"]
    assert plan["planned_first"]["precision"] == "mixed"
    assert rec["timings"]["probe"] == rec["conditioning_probe"]["seconds"] > 0


def _hedged_to_float64(monkeypatch):
    """auto's stand-in rates (as above), with a worst case of so many refinement passes
    that the plan hedges to float64 although mixed precision's fewest passes are faster."""
    from kernelfit.solvers import plan

    _fast_float32(monkeypatch)
    monkeypatch.setattr(plan, "WORST_PASSES", 10_000)


def test_plan_offers_mixed_as_an_alternative_only_where_it_hedged_by_time(monkeypatch):
    from kernelfit.solvers.plan import plan_solve

    _hedged_to_float64(monkeypatch)
    sp = plan_solve(300, 6, 2, SolveOptions(tile_size=64).validate(), device="cpu",
                    available=8 << 30, backend=CPU)
    times = sp.choice["expected_time"]
    assert sp.precision == "float64" and times["by_time"]
    assert times["mixed_best_s"] < times["float64_s"] < times["mixed_worst_s"]
    alt = sp.alternative
    assert alt.route == "mixed" and alt.may_fall_back and alt.fallback.precision == "float64"
    assert alt.tol <= 1e-12 and alt.memory.fits()
    for opts in (SolveOptions(precision="float64", tile_size=64),
                 SolveOptions(precision="mixed", tile_size=64)):
        assert plan_solve(300, 6, 2, opts.validate(), device="cpu", available=8 << 30,
                          backend=CPU).alternative is None
    # a plan that chose mixed precision outright has nothing to switch to
    monkeypatch.setattr("kernelfit.solvers.plan.WORST_PASSES", 14)
    assert plan_solve(300, 6, 2, SolveOptions(tile_size=64).validate(), device="cpu",
                      available=8 << 30, backend=CPU).alternative is None


def test_auto_switches_to_mixed_where_the_probe_predicts_few_passes(monkeypatch, caplog):
    _hedged_to_float64(monkeypatch)
    X, Y = _data(300, 6)
    k = get_kernel("gaussian", bandwidth=0.3)
    ref = solve_exact(k, X, Y, SolveOptions(precision="float64", tile_size=64))
    with caplog.at_level(logging.INFO, logger="kernelfit"):
        sol = solve_exact(k, X, Y, SolveOptions(tile_size=64))
    info = sol.info
    probe = info["conditioning_probe"]
    assert probe["verdict"] == "mixed" and probe["rows"] >= 64
    assert info["precision"] == "mixed" and info["converged"] and sol.dtype == "mixed"
    assert "a float64 factorization expected faster" in info["precision_reason"]
    assert info["precision_reason"].endswith("mixed precision instead")
    assert probe["mixed_s_predicted"] < info["plan_choice"]["expected_time"]["float64_s"]
    assert any("precision auto: mixed" in r.getMessage() for r in caplog.records)
    assert info["relative_residual"] <= 1e-12
    np.testing.assert_allclose(sol.alpha, ref.alpha, rtol=1e-9, atol=1e-9 * abs(ref.alpha).max())


def test_auto_keeps_float64_where_the_probe_does_not_favour_mixed(monkeypatch):
    _hedged_to_float64(monkeypatch)
    X, Y = _data(300, 3)
    k = get_kernel("gaussian", bandwidth=0.3)  # cond ~ 5e10: too much for float32
    sol = solve_exact(k, X, Y, SolveOptions(tile_size=64))
    info = sol.info
    assert info["precision"] == "float64" and sol.dtype == "float64"
    assert info["conditioning_probe"]["verdict"] == "float64"
    assert "too ill-conditioned" in info["precision_reason"]
    # too small to probe: the plan's float64 stands, and the record says it was not probed
    monkeypatch.setattr(cond, "PROBE_MIN_ROWS", 1024)
    X, Y = _data(300, 6)
    sol = solve_exact(k, X, Y, SolveOptions(tile_size=64))
    probe = sol.info["conditioning_probe"]
    assert sol.info["precision"] == "float64" and probe["verdict"] == "float64"
    assert probe["rows"] == 0 and "not probed" in probe["why"]


def test_run_record_shows_the_mixed_plan_that_ran_after_a_switch(monkeypatch):
    _hedged_to_float64(monkeypatch)
    rec = _run_record(6)
    assert rec["precision"] == "mixed" and rec["conditioning_probe"]["verdict"] == "mixed"
    plan = rec["memory_plan"]
    assert plan["precision"] == "mixed" and "K tiles (float32)" in plan["items"]
    assert plan["planned_first"].get("precision") != "mixed"


def test_small_samples_run_on_one_blas_thread_and_large_ones_on_all(monkeypatch):
    """A sample of at most ONE_THREAD_ROWS rows is taken on one BLAS thread (its kernel
    and its Cholesky come from two BLAS libraries whose idle threads slowed each other);
    a larger one keeps the BLAS threads, which it uses well; both restored after."""
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def blas_threads():
        return {p["num_threads"] for p in threadpoolctl.threadpool_info()
                if p["user_api"] == "blas"}

    if not blas_threads():
        pytest.skip("no BLAS that threadpoolctl sees")
    monkeypatch.setattr(cond, "PROBE_MIN_ROWS", 64)
    monkeypatch.setattr(cond, "PROBE_SHARE", 1.0)
    monkeypatch.setattr(cond, "FIRST_MIN_ROWS", 32)
    seen = []
    real = cond.sample_pivots

    def spy(kernel, X, rows, be):
        seen.append((len(rows), blas_threads()))
        return real(kernel, X, rows, be)

    monkeypatch.setattr(cond, "sample_pivots", spy)
    X, _ = _data(600, 6)
    good = get_kernel("gaussian", bandwidth=0.3)
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        m = cond.probe_rows(600, 6)
        monkeypatch.setattr(cond, "ONE_THREAD_ROWS", m // 4)
        # each pass so slow that the quarter sample with its margin does not decide alone
        rec = cond.conditioning_probe(good, X, CPU, _times(2.0, 10.0), 1e-12)
        assert [s["rows"] for s in rec["samples"]] == [m // 4, m]
        assert seen == [(m // 4, {1}), (m, {2})] and blas_threads() == {2}
