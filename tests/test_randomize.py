"""Randomization tests (kernelfit.randomization and ``kernelfit randomize``)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from kernelfit import randomization as rz
from kernelfit.randomization import experiment
from kernelfit.cli import main
from kernelfit.datasets import Dataset
from kernelfit.errors import InputError, NotPositiveDefiniteError
from kernelfit.options import RunOptions

REQUIRED = ("mode", "level", "repeat", "train_error", "test_error", "rkhs_norm",
            "relative_residual", "solve_seconds", "seed", "condition_number", "n_train",
            "n_test", "status", "error")


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("KERNELFIT_PROGRESS", "0")


def _cfg(**kw):
    base = dict(dataset="digits", n_train=240, n_test=80, show_progress=False)
    base.update(kw)
    return RunOptions.from_flat(**base)


def _images(n, shape, seed=0):
    rng = np.random.default_rng(seed)
    # distinct values in every image so that permutations can be recovered
    return rng.random((n, int(np.prod(shape))))


# ------------------------------------------------------------------ arguments
def test_parse_modes():
    assert rz.parse_modes("all") == rz.MODES
    assert rz.parse_modes("labels, random_pixels") == ("labels", "random-pixels")
    assert rz.parse_modes(["gaussian", "gaussian", "labels"]) == ("gaussian", "labels")
    for bad in ("foo", "labels,pixels", "", ","):
        with pytest.raises(InputError):
            rz.parse_modes(bad)


def test_parse_levels():
    assert rz.parse_levels("1,0,0.5,0.5") == (0.0, 0.5, 1.0)
    assert rz.parse_levels([0, 1]) == (0.0, 1.0)
    for bad in ("1.5", "-0.1", "nan", "a", "", "0,2", [0.1, float("inf")]):
        with pytest.raises(InputError):
            rz.parse_levels(bad)


def test_derive_seed_deterministic_and_distinct():
    s = rz.derive_seed(0, "labels", 0.2, 0)
    assert s == rz.derive_seed(0, "labels", 0.2, 0)
    assert 0 <= s < 2 ** 63
    others = {rz.derive_seed(1, "labels", 0.2, 0), rz.derive_seed(0, "gaussian", 0.2, 0),
              rz.derive_seed(0, "labels", 0.4, 0), rz.derive_seed(0, "labels", 0.2, 1)}
    assert s not in others and len(others) == 4
    # pinned: a change of the derivation would silently change published figures
    assert rz.derive_seed(0, "labels", 1.0, 0) == 502614401423034121


# ------------------------------------------------------------------ corruptions
@pytest.mark.parametrize("level", [0.0, 0.1, 0.37, 0.5, 1.0])
def test_corrupt_labels_counts(level):
    y = np.arange(1000) % 10
    y_new, info = rz.corrupt_labels(y, level, 10, np.random.default_rng(3))
    k = int(round(level * y.size))
    idx = info["indices"]
    assert info["n_labels_resampled"] == k == idx.size == np.unique(idx).size
    untouched = np.setdiff1d(np.arange(y.size), idx)
    assert np.array_equal(y_new[untouched], y[untouched])
    assert info["n_labels_changed"] == np.count_nonzero(y_new != y)
    assert y_new.min() >= 0 and y_new.max() < 10 and y_new.dtype == y.dtype
    assert np.array_equal(y, np.arange(1000) % 10)  # input not modified
    if level == 0:
        assert np.array_equal(y_new, y)


def test_corrupt_labels_uniform_classes():
    y = np.zeros(20000, dtype=np.int64)
    y_new, info = rz.corrupt_labels(y, 1.0, 10, np.random.default_rng(0))
    counts = np.bincount(y_new, minlength=10)
    assert np.all(np.abs(counts - 2000) < 200)
    assert abs(info["n_labels_changed"] / y.size - 0.9) < 0.01


def test_shuffle_pixels_one_permutation_for_all_images_including_test():
    shape = (4, 5, 3)
    Xtr, Xte = _images(30, shape, 1), _images(12, shape, 2)
    Ytr, Yte, info = rz.shuffle_pixels(Xtr, Xte, 1.0, shape, np.random.default_rng(0))
    perm = info["permutation"]
    assert sorted(perm) == list(range(20)) and not np.array_equal(perm, np.arange(20))
    for X, Y in ((Xtr, Ytr), (Xte, Yte)):
        expect = X.reshape(len(X), 20, 3)[:, perm, :].reshape(len(X), -1)
        assert np.array_equal(Y, expect)  # channels move together
    assert info["n_corrupted_train"] == 30 and info["n_corrupted_test"] == 12


def test_shuffle_pixels_partial_and_train_only():
    shape = (6, 6)
    Xtr, Xte = _images(50, shape, 1), _images(20, shape, 2)
    Ytr, Yte, info = rz.shuffle_pixels(Xtr, Xte, 0.3, shape, np.random.default_rng(5))
    changed = np.flatnonzero(np.any(Ytr != Xtr, axis=1))
    assert np.array_equal(changed, info["train_indices"]) and changed.size == 15
    assert np.flatnonzero(np.any(Yte != Xte, axis=1)).size == 6
    assert np.array_equal(Ytr[changed], Xtr[changed][:, info["permutation"]])
    Ytr, Yte, info = rz.shuffle_pixels(Xtr, Xte, 0.3, shape, np.random.default_rng(5),
                                       corrupt_test=False)
    assert np.array_equal(Yte, Xte) and info["n_corrupted_test"] == 0
    Ytr, Yte, _ = rz.shuffle_pixels(Xtr, Xte, 0.0, shape, np.random.default_rng(5))
    assert np.array_equal(Ytr, Xtr) and np.array_equal(Yte, Xte)


def test_random_pixels_independent_and_multiset_preserving():
    shape = (5, 5, 2)
    Xtr, Xte = _images(40, shape, 3), _images(10, shape, 4)
    Ytr, Yte, info = rz.randomize_pixels(Xtr, Xte, 1.0, shape, np.random.default_rng(1))
    perms = set()
    for X, Y in ((Xtr, Ytr), (Xte, Yte)):
        P, Q = X.reshape(len(X), 25, 2), Y.reshape(len(Y), 25, 2)
        for p, q in zip(P, Q):
            assert np.array_equal(np.sort(p[:, 0]), np.sort(q[:, 0]))  # same pixel multiset
            order = np.argsort(p[:, 0])
            perm = order[np.searchsorted(p[order, 0], q[:, 0])]
            assert np.array_equal(q, p[perm])  # channels moved together
            perms.add(tuple(perm))
    assert len(perms) == 50  # one independent permutation per image
    Ytr, Yte, info = rz.randomize_pixels(Xtr, Xte, 0.5, shape, np.random.default_rng(1))
    assert np.flatnonzero(np.any(Ytr != Xtr, axis=1)).tolist() == info["train_indices"].tolist()
    assert info["n_corrupted_train"] == 20 and info["n_corrupted_test"] == 5
    Ytr, Yte, _ = rz.randomize_pixels(Xtr, Xte, 0.0, shape, np.random.default_rng(1))
    assert np.array_equal(Ytr, Xtr) and np.array_equal(Yte, Xte)


def test_gaussian_matches_mean_and_variance():
    rng = np.random.default_rng(0)
    Xtr = (rng.random((400, 64)) < 0.2).astype(float)  # mean 0.2, var 0.16
    Xte = (rng.random((100, 64)) < 0.2).astype(float)
    Ytr, Yte, info = rz.gaussian_inputs(Xtr, Xte, 1.0, np.random.default_rng(1))
    assert info["mean"] == pytest.approx(Xtr.mean()) and info["std"] == pytest.approx(Xtr.std())
    for Y in (Ytr, Yte):
        assert Y.mean() == pytest.approx(Xtr.mean(), abs=0.01)
        assert Y.var() == pytest.approx(Xtr.var(), rel=0.03)
    Ytr, Yte, info = rz.gaussian_inputs(Xtr, Xte, 0.25, np.random.default_rng(1))
    same = np.all(Ytr == Xtr, axis=1)
    assert np.flatnonzero(~same).tolist() == info["train_indices"].tolist()
    assert info["n_corrupted_train"] == 100 and info["n_corrupted_test"] == 25


def test_corrupt_is_reproducible_from_seed():
    X = _images(30, (4, 4))
    y = np.arange(30) % 3
    for mode in rz.MODES:
        a = rz.corrupt(mode, 0.5, X, y, X[:5], image_shape=(4, 4), n_classes=3, seed=7)
        b = rz.corrupt(mode, 0.5, X, y, X[:5], image_shape=(4, 4), n_classes=3, seed=7)
        c = rz.corrupt(mode, 0.5, X, y, X[:5], image_shape=(4, 4), n_classes=3, seed=8)
        for u, v in zip(a[:3], b[:3]):
            assert np.array_equal(u, v)
        assert any(not np.array_equal(u, v) for u, v in zip(a[:3], c[:3]))


def test_pixel_modes_need_images():
    X = np.random.default_rng(0).random((10, 6))
    with pytest.raises(InputError, match="image"):
        rz.shuffle_pixels(X, X, 0.5, (), 0)
    with pytest.raises(InputError):
        rz.randomize_pixels(X, X, 0.5, (4, 4), 0)  # wrong width


# ------------------------------------------------------------------ the experiment
def test_run_records_train_error_zero_and_seeds():
    levels = (0.0, 0.5, 1.0)
    res = rz.run_randomization(_cfg(), "all", levels, 1, estimate_condition=False)
    recs = res["records"]
    assert len(recs) == 4 * 3
    for r in recs:
        assert all(k in r for k in REQUIRED)
        assert r["status"] == "ok" and r["error"] is None
        assert r["train_error"] == 0.0
        assert r["relative_residual"] < 1e-6 and r["rkhs_norm"] > 0
        assert r["seed"] == rz.derive_seed(0, r["mode"], r["level"], r["repeat"])
        assert r["n_train"] == 240 and r["n_test"] == 80
    assert res["all_train_errors_zero"] and res["n_failed"] == 0
    by = {(r["mode"], r["level"]): r for r in recs}
    clean = by[("labels", 0.0)]
    assert by[("gaussian", 0.0)]["clean_reused"] and not clean["clean_reused"]
    assert by[("gaussian", 0.0)]["test_error"] == clean["test_error"]
    # random labels: test error near chance; the norm grows with label noise
    assert by[("labels", 1.0)]["test_error"] > 0.6 > clean["test_error"]
    assert by[("labels", 1.0)]["rkhs_norm"] > by[("labels", 0.5)]["rkhs_norm"] > clean["rkhs_norm"]
    # the Gaussian kernel is invariant under one fixed permutation of all images
    assert by[("shuffled-pixels", 1.0)]["test_error"] == pytest.approx(clean["test_error"])
    assert by[("labels", 0.5)]["n_labels_resampled"] == 120
    summ = {(s["mode"], s["level"]): s for s in res["summary"]}
    assert set(summ) == set(by)
    assert summ[("labels", 1.0)]["test_error"]["mean"] == by[("labels", 1.0)]["test_error"]
    json.dumps(res)  # JSON-ready


def test_run_repeats_spread_and_reproducible():
    kw = dict(estimate_condition=False)
    a = rz.run_randomization(_cfg(n_train=150, n_test=60), "labels", (0.0, 0.6), 3, **kw)
    b = rz.run_randomization(_cfg(n_train=150, n_test=60), "labels", (0.6,), 2, **kw)
    ra = {(r["level"], r["repeat"]): r for r in a["records"]}
    for r in b["records"]:  # a record depends on (base seed, mode, level, repeat) only
        assert r["test_error"] == ra[(r["level"], r["repeat"])]["test_error"]
        assert r["rkhs_norm"] == pytest.approx(ra[(r["level"], r["repeat"])]["rkhs_norm"])
    s = {x["level"]: x for x in a["summary"]}
    assert s[0.6]["n_repeats"] == 3 and s[0.6]["rkhs_norm"]["std"] > 0
    assert s[0.0]["test_error"]["std"] == 0.0  # clean data: nothing random


def test_condition_number_and_shared_for_labels():
    res = rz.run_randomization(_cfg(n_train=150, n_test=40), "labels,gaussian", (0.0, 1.0), 1)
    by = {(r["mode"], r["level"]): r for r in res["records"]}
    c = by[("labels", 0.0)]["condition_number"]
    assert c > 1
    assert by[("labels", 1.0)]["condition_number"] == c and by[("labels", 1.0)]["condition_shared"]
    assert by[("gaussian", 1.0)]["condition_number"] < c  # noise makes K better conditioned


def test_condition_endpoints_policy():
    res = rz.run_randomization(_cfg(n_train=120, n_test=30), "gaussian", (0.0, 0.5, 1.0), 1,
                               estimate_condition="endpoints")
    cond = {r["level"]: r["condition_number"] for r in res["records"]}
    assert cond[0.0] > 1 and cond[1.0] > 1 and cond[0.5] is None
    with pytest.raises(InputError):
        rz.run_randomization(_cfg(), "labels", (0.0,), 1, estimate_condition="some")


def test_pixel_mode_on_non_image_data_fails_before_any_solve(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("solved")

    monkeypatch.setattr(experiment, "_solve_one", boom)
    rng = np.random.default_rng(0)
    ds = Dataset("flat", rng.random((20, 5)), np.arange(20) % 2, rng.random((5, 5)),
                 np.arange(5) % 2, (), 2, ["a", "b"], "test")
    with pytest.raises(InputError, match="image"):
        rz.run_randomization(_cfg(), "labels,random-pixels", (0.5,), 1, dataset=ds)
    for bad in [dict(levels=(1.5,)), dict(repeats=0), dict(modes="nope")]:
        kw = dict(modes="labels", levels=(0.5,), repeats=1)
        kw.update(bad)
        with pytest.raises(InputError):
            rz.run_randomization(_cfg(), kw["modes"], kw["levels"], kw["repeats"], dataset=ds)


def test_failed_solve_recorded_or_raised(monkeypatch):
    real = experiment._solve_one

    def flaky(cfg, Xtr, ytr, *a, **k):
        if not np.array_equal(Xtr[0], Xtr[0].round(6)):  # gaussian noise: fail
            raise NotPositiveDefiniteError("K is not numerically positive definite (test)")
        return real(cfg, Xtr, ytr, *a, **k)

    monkeypatch.setattr(experiment, "_solve_one", flaky)
    res = rz.run_randomization(_cfg(n_train=100, n_test=30), "gaussian", (0.0, 1.0), 1,
                               estimate_condition=False)
    bad = [r for r in res["records"] if r["status"] == "failed"]
    assert len(bad) == 1 and "positive definite" in bad[0]["error"]
    assert bad[0]["train_error"] is None and res["n_failed"] == 1
    assert bad[0]["exact"] is False and bad[0]["inexact_reason"]
    assert "failed" in rz.failure_message(res)
    assert "Failed solves" in rz.render_markdown(res)
    with pytest.raises(NotPositiveDefiniteError, match="gaussian level 1"):
        rz.run_randomization(_cfg(n_train=100, n_test=30), "gaussian", (1.0,), 1,
                             estimate_condition=False, on_error="raise")


def test_every_record_carries_the_exact_verdict_and_tables_mark_inexact_points():
    res = rz.run_randomization(_cfg(n_train=200, n_test=40), "labels", (0.0, 1.0), 1,
                               estimate_condition=False)
    assert res["all_exact"] and res["n_inexact"] == 0
    assert all(r["exact"] is True and "inexact_reason" not in r for r in res["records"])
    assert "NOT exact" not in rz.render_text(res)
    # a large bandwidth: K nearly all ones, residuals above 1e-8 (as `kernelfit solve`)
    res = rz.run_randomization(_cfg(n_train=200, n_test=40, bandwidth=100.0), "labels",
                               (0.0, 1.0), 1, estimate_condition=False)
    for r in res["records"]:
        assert r["exact"] is False and r["relative_residual"] > 1e-8
        assert r["cause"] == "bandwidth" and "bandwidth 100" in r["inexact_reason"]
    assert res["n_inexact"] == 2 and not res["all_exact"]
    assert [s["n_inexact"] for s in res["summary"]] == [1, 1]
    assert all(row[6].endswith("(NOT exact)") for row in rz.table_rows(res)[1:])
    md = rz.render_markdown(res)
    assert "Solves that are not exact" in md and "NO, 2 not exact" in md
    assert rz.inexact_records(res) == res["records"]
    json.dumps(res)


def test_min_norm_solver_records_the_float64_it_computes_in():
    res = rz.run_randomization(_cfg(n_train=100, n_test=20, solver="eigh", dtype="float32"),
                               "labels", (0.0,), 1, estimate_condition=False)
    assert res["dtype"] == "float64" and res["records"][0]["dtype"] == "float64"
    assert "eigh/float64" in rz.describe(res)


# ------------------------------------------------------------------ command line
def _randomize(capsys, args):
    code = main(["randomize", "--dataset", "digits", "--n-train", "200", "--n-test", "40",
                 "--mode", "labels", "--levels", "0,1", "--no-condition", "--json"] + args)
    cap = capsys.readouterr()
    return code, json.loads(cap.out), cap.err


def test_cli_failed_solve_warning_names_the_failure_and_how_to_see_it(capsys, tmp_path):
    """Without --out or --json there are no records to look in: the warning names the first
    failure's message (in flags) and the flags that show the records or the ways out."""
    code = main(["randomize", "--dataset", "digits", "--n-train", "200", "--n-test", "40",
                 "--mode", "labels", "--levels", "1", "--no-condition", "--kernel", "linear"])
    err = capsys.readouterr().err.strip()
    assert code == 5 and len(err.splitlines()) == 1
    assert "1 solve(s) failed; the first, labels level 1 repeat 0: K is not numerically" in err
    assert "--out DIR or --json writes the records" in err
    assert "--stop-on-error stops at the first failure and gives the ways out" in err
    assert "solver='" not in err and "on_error" not in err
    # with --out: the records file is named
    out = tmp_path / "r"
    code = main(["randomize", "--dataset", "digits", "--n-train", "200", "--n-test", "40",
                 "--mode", "labels", "--levels", "1", "--no-condition", "--kernel", "linear",
                 "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 5 and f"each record in {out / 'randomize_records.json'} holds" in err


def test_cli_inexact_points_exit_6_with_the_ways_out_unless_a_tolerance_accepts(capsys):
    import re

    code, obj, err = _randomize(capsys, ["--bandwidth", "100"])
    assert code == 6 and obj["n_inexact"] == 2
    assert all(r["exact"] is False for r in obj["records"])
    assert "2 of 2 solves not exact" in err and "labels level" in err
    assert "leave out --bandwidth" in err
    tol = re.search(r"--tolerance (\S+) to accept these residuals", err).group(1)
    assert float(tol) >= max(r["relative_residual"] for r in obj["records"])
    code, obj, err = _randomize(capsys, ["--bandwidth", "100", "--tolerance", tol])
    assert code == 0 and "accepted" in err
    code, obj, err = _randomize(capsys, ["--bandwidth", "100", "--tolerance", "1e-8"])
    assert code == 6
    code, obj, err = _randomize(capsys, [])
    assert code == 0 and obj["all_exact"] and "not exact" not in err


def test_cli_json_and_out(tmp_path, capsys):
    out = tmp_path / "res" / "sub"
    code = main(["randomize", "--dataset", "digits", "--n-train", "200", "--n-test", "60",
                 "--mode", "labels,random-pixels", "--levels", "0,1", "--repeats", "2",
                 "--json", "--out", str(out), "--note", "digits test"])
    assert code == 0
    obj = json.loads(capsys.readouterr().out)
    assert len(obj["records"]) == 2 * 2 * 2
    for r in obj["records"]:
        assert all(k in r for k in REQUIRED) and r["train_error"] == 0
    assert {(s["mode"], s["level"]) for s in obj["summary"]} == {
        ("labels", 0.0), ("labels", 1.0), ("random-pixels", 0.0), ("random-pixels", 1.0)}
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["randomize_records.json", "randomize_table.md",
                            "randomize_overview.png", "randomize_test_error.png",
                            "randomize_rkhs_norm.png", "randomize_solve_seconds.png"])
    saved = json.loads((out / "randomize_records.json").read_text())
    assert saved["records"] == obj["records"] and saved["note"] == "digits test"
    assert "| labels | 1 |" in (out / "randomize_table.md").read_text()
    assert (out / "randomize_overview.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_text_output(capsys):
    code = main(["randomize", "--dataset", "digits", "--n-train", "120", "--n-test", "30",
                 "--levels", "0,1", "--no-condition"])
    assert code == 0
    text = capsys.readouterr().out
    assert "labels" in text and "test error" in text


@pytest.mark.parametrize("args,msg", [
    (["--levels", "0,1.5"], "[0, 1]"),
    (["--levels", "-0.2"], "[0, 1]"),
    (["--levels", "x"], "level"),
    (["--mode", "labels,pixels"], "unknown mode"),
    (["--mode", ""], "mode"),
    (["--repeats", "0"], "repeats"),
    (["--dataset", "nosuch"], "unknown dataset"),
])
def test_cli_bad_input(tmp_path, capsys, args, msg):
    out = tmp_path / "out"
    code = main(["randomize", "--out", str(out)] + args)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert msg in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_cli_out_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["randomize", "--out", str(f), "--levels", "0"]) != 0
    assert "not a folder" in capsys.readouterr().err
    assert f.read_text() == "x"


def test_cli_subprocess_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "kernelfit", "randomize", "--levels", "2",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_solver_options_and_features_pass_through():
    cfg = _cfg(n_train=100, n_test=30, solver="eigh", features="rff",
               feature_params={"n_components": 64})
    res = rz.run_randomization(cfg, "labels,random-pixels", (0.0, 1.0), 1,
                               estimate_condition=False)
    assert res["n_features"] == 64 and res["solver"] == "eigh"
    for r in res["records"]:
        assert r["status"] == "ok" and r["n_features"] == 64 and r["train_error"] == 0
    by = {(r["mode"], r["level"]): r for r in res["records"]}
    # features are recomputed from the corrupted pixels
    assert by[("random-pixels", 1.0)]["rkhs_norm"] != by[("labels", 0.0)]["rkhs_norm"]


def test_labels_must_be_integer_codes():
    with pytest.raises(InputError, match="integer"):
        rz.corrupt_labels(np.array(["a", "b"]), 0.5, 2, 0)


def test_bandwidth_line_comes_from_the_one_rule(monkeypatch):
    from kernelfit.kernel_defaults import choose_bandwidth

    def no_solve(*args, **kwargs):
        return {k: None for k in rz.METRICS} | {"timings": {}, "train_error": 0.0,
                                                 "exact": True, "dtype": "float64"}

    monkeypatch.setattr(experiment, "_solve_one", no_solve)
    small = dict(n_train=60, n_test=20)

    def result(**kw):
        return rz.run_randomization(_cfg(**small, **kw), "labels", (0.5,), 1,
                                    estimate_condition=False)

    out = result()  # digits: pixels in [0, 1], the raw-pixel default and its reason
    _, rule = choose_bandwidth("gaussian", "raw", None, None, dataset="digits")
    assert out["bandwidth_rule"] == rule["why"] and out["kernel_params"]["bandwidth"] == 5.0
    assert out["config"]["bandwidth"] == 5.0 and "Bandwidth: raw pixels" in \
        rz.render_markdown(out)
    out = result(bandwidth=2.0)
    assert out["bandwidth_rule"] == "given" and "Bandwidth:" not in rz.render_markdown(out)
    out = result(bandwidth="median")
    assert out["bandwidth_rule"] == choose_bandwidth("gaussian", "raw", "median", None)[1]["why"]
    assert out["config"]["bandwidth"] == "median"
    assert result(kernel="linear")["bandwidth_rule"] is None
    # npz-like arrays of another scale get the median rule, named in the report
    rng = np.random.default_rng(0)
    ds = Dataset("npz:big.npz", 100 * rng.random((30, 5)), np.arange(30) % 2,
                 rng.random((6, 5)), np.arange(6) % 2, (), 2, ["a", "b"], "test")
    out = rz.run_randomization(_cfg(), "labels", (0.5,), 1, dataset=ds,
                               estimate_condition=False)
    assert "npz:big.npz" in out["bandwidth_rule"] and out["kernel_params"]["bandwidth"] > 5


# ------------------------------------------------------------------ memory plan
def test_one_plan_made_first_serves_every_solve(monkeypatch, plan_calls):
    import kernelfit.estimator as est_mod

    plans = []
    real = est_mod.solve_exact

    def spy(*a, plan=None, **k):
        plans.append(plan)
        return real(*a, plan=plan, **k)

    monkeypatch.setattr(est_mod, "solve_exact", spy)
    # gaussian noise makes every pixel column non-zero: the clean digits have zero columns,
    # which change no memory figure of the solve, so the one plan still serves it
    res = rz.run_randomization(_cfg(n_train=100, n_test=30), "labels,gaussian",
                               (0.0, 0.5, 1.0), 1, estimate_condition=False)
    assert all(r["status"] == "ok" for r in res["records"])
    assert plan_calls == [100]  # one solve shape: planned once, for the whole run
    assert len(plans) == 5  # labels 0, 0.5, 1; gaussian 0.5, 1 (its level 0 is shared)
    assert plans[0] is not None and all(p is plans[0] for p in plans)
    assert res["memory_plan"] == plans[0].record()


def test_a_request_that_cannot_fit_is_refused_before_any_feature(monkeypatch, rff_touched):
    from kernelfit import run
    from kernelfit.errors import MemoryPlanError

    monkeypatch.setenv("KERNELFIT_MEMORY_LIMIT", "100000")
    cfg = _cfg(n_train=1000, n_test=50, features="rff", feature_params={"n_components": 4000},
               feature_cache=False)
    with pytest.raises(MemoryPlanError) as refused:
        rz.run_randomization(cfg, "labels,gaussian", (0.0, 1.0), 1)
    assert rff_touched == []
    # the same structured refusal as `kernelfit solve` on the same request
    with pytest.raises(MemoryPlanError) as solve_refused:
        run.run_solve(cfg)
    assert refused.value.request == solve_refused.value.request
    assert refused.value.request["n"] == 1000 and refused.value.request["d"] == 4000
    assert refused.value.required_bytes == solve_refused.value.required_bytes


def test_cli_randomize_memory_refusal_exits_4_with_advice(capsys, monkeypatch):
    monkeypatch.setenv("KERNELFIT_MEMORY_LIMIT", "1000000")
    code = main(["randomize", "--dataset", "digits", "--mode", "labels", "--levels", "0,1"])
    assert code == 4 and "Ways out" in capsys.readouterr().err


def test_markdown_does_not_call_a_run_without_a_successful_solve_exact(monkeypatch):
    def failing(*a, **k):
        raise NotPositiveDefiniteError("K is not numerically positive definite (test)")

    monkeypatch.setattr(experiment, "_solve_one", failing)
    res = rz.run_randomization(_cfg(n_train=60, n_test=20), "labels", (0.0,), 1,
                               estimate_condition=False)
    assert res["n_failed"] == 1 and not res["all_exact"]
    md = rz.render_markdown(res)
    assert "All solves exact" in md and "exact (float64 relative residual at most 1e-08): yes" \
        not in md


def test_out_of_core_gives_each_solve_its_own_checkpoint(tmp_path, monkeypatch):
    """Every solve (pixel modes: its own K) has its own folder inside the one asked for,
    removed once done; an interrupted solve's folder is what --resume continues."""
    top = tmp_path / "ooc"
    res = rz.run_randomization(_cfg(n_train=120, n_test=30, ooc_dir=str(top)),
                               "labels,shuffled-pixels", (0.0, 1.0), 1,
                               estimate_condition=False, reuse_clean=False)
    assert res["n_failed"] == 0 and res["all_exact"]
    assert "mixed" in res["precisions"] and "mixed precision" in rz.describe(res)
    assert not top.exists()  # each folder removed when its solve was done, then the top
    # interrupted in the second solve: its checkpoint stays for --resume
    from kernelfit.solvers import ooc

    real, calls = ooc.ooc_factor, []

    def stop_in_second(*a, **kw):
        calls.append(a[2])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(ooc, "ooc_factor", stop_in_second)
    with pytest.raises(KeyboardInterrupt):
        rz.run_randomization(_cfg(n_train=120, n_test=30, ooc_dir=str(top)),
                             "shuffled-pixels", (0.0, 1.0), 1, estimate_condition=False,
                             reuse_clean=False)
    assert [p.name for p in map(type(top), calls)] == ["shuffled-pixels-0-r0",
                                                       "shuffled-pixels-1-r0"]
    monkeypatch.setattr(ooc, "ooc_factor", real)
    res = rz.run_randomization(_cfg(n_train=120, n_test=30, ooc_dir=str(top), resume=True),
                               "shuffled-pixels", (0.0, 1.0), 1, estimate_condition=False,
                               reuse_clean=False)
    assert res["n_failed"] == 0 and not top.exists()


def test_a_condition_number_not_estimated_is_explained():
    res = rz.run_randomization(_cfg(n_train=120, n_test=30, precision="mixed"), "labels",
                               (0.0, 1.0), 1, estimate_condition=True)
    assert all(r["condition_number"] is None for r in res["records"])
    assert "cond(K) was not estimated for 2 solve(s)" in res["condition_note"]
    assert res["condition_note"] in rz.render_text(res)
    assert res["condition_note"] in rz.render_markdown(res)
    res = rz.run_randomization(_cfg(n_train=120, n_test=30, precision="float64"), "labels",
                               (0.0, 1.0), 1, estimate_condition=True)
    assert res["condition_note"] is None and "mixed" not in rz.describe(res)
    assert all(r["condition_number"] > 1 for r in res["records"])


def test_a_full_disk_leaves_no_part_of_the_report_and_names_the_file(tmp_path, monkeypatch):
    """All the report files or none; the error names the file being written."""
    import errno

    from matplotlib.figure import Figure

    res = rz.run_randomization(_cfg(n_train=60, n_test=20), "labels", (0.0, 1.0), 1,
                               estimate_condition=False)
    out = tmp_path / "old"
    rz.write_outputs(res, out)  # an earlier report, left as it was
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real, calls = Figure.savefig, []

    def full_at_second(self, fh, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, fh, **kw)

    monkeypatch.setattr(Figure, "savefig", full_at_second)
    with pytest.raises(OSError) as exc:
        rz.write_outputs(res, out)
    assert exc.value.filename.endswith(".png")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temporaries
    calls.clear()
    fresh = tmp_path / "fresh"
    with pytest.raises(OSError):
        rz.write_outputs(res, fresh)
    assert not fresh.exists()
    from kernelfit.cli._advice import explain_os_error

    assert "No space left on device" in explain_os_error(exc.value)
    assert exc.value.filename in explain_os_error(exc.value)


def test_plots_of_a_run_whose_solves_all_failed_warn_nothing(monkeypatch):
    import warnings

    def fail(*a, **kw):
        raise NotPositiveDefiniteError("K is not numerically positive definite (test)")

    monkeypatch.setattr(experiment, "_solve_one", fail)
    res = rz.run_randomization(_cfg(n_train=60, n_test=20), "labels", (0.0, 1.0), 1,
                               estimate_condition=False)
    assert res["n_failed"] == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figs = rz.plot_results(res)
    texts = [t.get_text() for t in figs["rkhs_norm"].axes[0].texts]
    assert "no successful solve" in texts
