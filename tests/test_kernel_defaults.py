"""Bandwidth defaults chosen for the features, and the exact/inexact verdict of a solve."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from kernelfit.cli import main
from kernelfit.kernel_defaults import (EXACT_RESIDUAL, FEATURE_MEDIAN_FACTOR, INEXACT_EXIT_CODE,
                                       RAW_BANDWIDTH, choose_bandwidth, exactness, exit_code_for,
                                       median_factor)
from kernelfit.kernels import median_distance


def test_raw_pixels_keep_calibrated_value():
    X = np.random.default_rng(0).random((50, 20))
    h, rule = choose_bandwidth("gaussian", "raw", None, X)
    assert h == RAW_BANDWIDTH == 5.0
    assert rule["rule"] == "raw-pixels-default" and "held-out" in rule["why"]


@pytest.mark.parametrize("features", ["gabor", "random-conv", "rff"])
def test_feature_maps_get_a_multiple_of_the_median(features):
    X = np.random.default_rng(1).random((80, 12))
    h, rule = choose_bandwidth("gaussian", features, None, X, seed=3)
    assert h == pytest.approx(median_factor(features) * median_distance(X, seed=3))
    assert rule["median_distance"] == pytest.approx(median_distance(X, seed=3))
    assert rule["value"] == h and features in rule["why"]
    assert rule["rule"] == f"{median_factor(features):g} x median"


def test_measured_median_factors():
    # gabor (order 2, unit norm): 1 x median was best held out; the other maps keep 0.75
    assert median_factor("gabor") == 1.0
    assert median_factor("random-conv") == median_factor("rff") == FEATURE_MEDIAN_FACTOR == 0.75
    X = np.random.default_rng(2).random((60, 5))
    _, rule = choose_bandwidth("gaussian", "gabor", None, X)
    assert rule["rule"] == "1 x median" and "gabor_defaults.json" in rule["why"]


@settings(max_examples=20, deadline=None)
@given(scale=st.floats(0.01, 100.0), seed=st.integers(0, 50))
def test_feature_rule_follows_the_scale_of_the_features(scale, seed):
    X = np.random.default_rng(seed).standard_normal((40, 6))
    h1, _ = choose_bandwidth("laplacian", "gabor", None, X, seed=seed)
    h2, _ = choose_bandwidth("laplacian", "gabor", None, scale * X, seed=seed)
    assert h2 == pytest.approx(scale * h1, rel=1e-9)


def test_given_values_are_kept_and_other_kernels_have_no_rule():
    X = np.ones((3, 2))
    assert choose_bandwidth("gaussian", "gabor", 2.5, X) == (2.5, {"rule": "given",
                                                                  "why": "given by the user"})
    h, rule = choose_bandwidth("gaussian", "raw", "median", X)
    assert h == "median" and rule["rule"] == "median"
    assert choose_bandwidth("normalized", "gabor", None, X)[1] is None


def test_exactness_and_exit_codes():
    assert exactness(1e-12) == {"exact": True, "exact_threshold": EXACT_RESIDUAL}
    bad = exactness(3e-5, kernel_params={"bandwidth": 5.0},
                    bandwidth_rule={"median_distance": 1.0})
    assert bad["exact"] is False and bad["cause"] == "bandwidth"
    assert "3.0e-05" in bad["inexact_reason"] and "5 x the median" in bad["inexact_reason"]
    assert exactness(None)["exact"] is False
    assert exactness(float("nan"))["exact"] is False
    rec = {"relative_residual": 3e-5, **bad}
    assert exit_code_for(rec) == INEXACT_EXIT_CODE == 6
    assert exit_code_for(rec, tolerance=1e-4) == 0
    assert exit_code_for(rec, tolerance=1e-6) == INEXACT_EXIT_CODE
    assert exit_code_for({"relative_residual": 1e-12, "exact": True}) == 0


def _solve(capsys, args):
    rc = main(["solve", "--dataset", "digits", "--n-train", "300", "--n-test", "100",
               "--json"] + args)
    cap = capsys.readouterr()
    return rc, json.loads(cap.out), cap.err


def test_cli_inexact_solve_exits_6_and_names_the_way_out(capsys):
    rc, rec, err = _solve(capsys, ["--bandwidth", "200"])
    assert rc == 6
    assert rec["exact"] is False and rec["relative_residual"] > EXACT_RESIDUAL
    assert "inexact_reason" in rec and rec["bandwidth_rule"]["rule"] == "given"
    assert "--tolerance" in err and "leave out --bandwidth" in err
    # a float64 solve: mixed precision would not be more exact, so it is not offered
    assert rec["precision"] == "float64" and "--precision mixed" not in err
    rc, rec, err = _solve(capsys, ["--bandwidth", "200", "--tolerance", "1e-3"])
    assert rc == 0 and rec["exact"] is False and "accepted" in err


def test_cli_default_bandwidth_follows_features(capsys):
    rc, rec, _ = _solve(capsys, [])
    assert rc == 0 and rec["exact"] is True
    assert rec["kernel_params"]["bandwidth"] == 5.0
    assert rec["bandwidth_rule"]["rule"] == "raw-pixels-default"
    rc, rec, _ = _solve(capsys, ["--features", "gabor", "--no-feature-cache"])
    assert rc == 0 and rec["exact"] is True
    assert rec["bandwidth_rule"]["rule"] == f"{median_factor('gabor'):g} x median"
    assert rec["kernel_params"]["bandwidth"] == pytest.approx(
        median_factor("gabor") * rec["bandwidth_rule"]["median_distance"])


def test_offered_tolerance_accepts_the_residual_and_ridge_is_named(capsys):
    import re

    rc, rec, err = _solve(capsys, ["--ridge", "1e-3"])
    assert rc == 6 and rec["cause"] == "ridge" and "ridge" in rec["inexact_reason"]
    tol = re.search(r"--tolerance (\S+) to accept", err).group(1)
    rc, rec, err = _solve(capsys, ["--ridge", "1e-3", "--tolerance", tol])
    assert rc == 0 and "accepted" in err
