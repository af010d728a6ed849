"""Tests of the benchmark package and ``kernelfit bench`` (tiny sizes, < 60 s in all)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kernelfit.bench import machine, report, runner, suite
from kernelfit.errors import InputError


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    monkeypatch.setenv("KERNELFIT_PROGRESS", "0")


def test_machine_description_keys():
    m = machine.describe_machine()
    for key in ("host", "host_tag", "os", "cpu", "memory", "blas", "lapack", "gpus",
                "versions"):
        assert key in m
    assert m["cpu"]["model"]
    assert m["cpu"]["logical"] >= 1
    assert m["memory"]["total_bytes"] > 0 and m["memory"]["available_bytes"] > 0
    assert "library" in m["blas"]
    for lib in ("kernelfit", "python", "numpy", "scipy", "scikit-learn"):
        assert m["versions"][lib]
    json.dumps(m)  # JSON-ready


def test_cpu_id_from_cpuinfo(monkeypatch, tmp_path):
    """Family and model numbers tell apart CPUs whose model name is only "AMD EPYC"; the
    first processor's block is read, a missing file gives nothing."""
    import builtins

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\n"
                    "model\t\t: 2\nmodel name\t: AMD EPYC\n\nprocessor\t: 1\n"
                    "cpu family\t: 25\n")
    real_open = builtins.open

    def fake_open(path, *a, **k):
        return real_open(info if path == "/proc/cpuinfo" else path, *a, **k)

    monkeypatch.setattr(builtins, "open", fake_open)
    assert machine.cpu_id() == {"vendor": "AuthenticAMD", "family": 26, "model_number": 2}
    from kernelfit.bench.report import machine_lines

    line = machine_lines({"cpu": {"model": "AMD EPYC", "arch": "x86_64", "family": 26,
                                  "model_number": 2, "usable": 2, "logical": 2,
                                  "physical": 2}})[0]
    assert line.startswith("CPU: AMD EPYC (x86_64, family 26 model 2), 2 usable")
    info.unlink()
    assert machine.cpu_id() == {}


def test_peaks_child_describes_its_own_machine():
    """The peaks task describes the machine as the child sees it: a child started without
    OPENBLAS_CORETYPE reports no such setting (and its own BLAS kernel), whatever the
    parent's environment (bench_vs_sklearn's children run without it)."""
    from kernelfit.bench.runner import run_child

    for env, want in (({"OPENBLAS_CORETYPE": "Haswell"}, {"OPENBLAS_CORETYPE": "Haswell"}),
                      ({"OPENBLAS_CORETYPE": None}, {})):
        out = run_child({"task": "peaks", "cpu": True, "gpu": False, "size": 64,
                         "repeats": 1, "describe": True}, timeout=120, env=env)
        assert out["status"] == "ok", out
        m = out["result"]["machine"]
        assert {k: v for k, v in m["blas_env"].items() if k == "OPENBLAS_CORETYPE"} == want
        assert out["result"]["cpu"]["sgemm_gflops"] > 0


def test_cpu_peaks_small():
    p = machine.measure_cpu_peaks(size=128, repeats=2)
    assert p["dgemm_gflops"] > 0 and p["sgemm_gflops"] > 0
    assert p["dgemm"]["repeats"] == 2


def test_runner_records_segfault_as_crash():
    rec = runner.run_child({"task": "selftest", "mode": "segv"}, timeout=60)
    assert rec["status"] == "crashed"
    assert rec["signal"] == "SIGSEGV"
    assert rec["returncode"] < 0
    assert "SIGSEGV" in rec["reason"]
    assert rec["max_rss_bytes"] > 0


def test_runner_records_timeout():
    rec = runner.run_child({"task": "selftest", "mode": "sleep", "seconds": 30}, timeout=1.0)
    assert rec["status"] == "timeout"
    assert rec["wall_s"] < 20


def test_runner_kills_its_child_when_interrupted(monkeypatch):
    """Ctrl-C or SIGTERM reach the parent only (the child has its own session): the child
    is killed, not left busy after kernelfit bench stops."""
    import subprocess

    started = []
    real_popen = subprocess.Popen

    def popen(*a, **k):
        started.append(real_popen(*a, **k))
        return started[-1]

    calls = []

    def sleep(seconds):
        calls.append(seconds)
        if len(calls) == 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(runner.subprocess, "Popen", popen)
    monkeypatch.setattr(runner.time, "sleep", sleep)
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        runner.run_child({"task": "selftest", "mode": "sleep", "seconds": 60}, timeout=120)
    # killed, not waited for: the child would sleep 60 s (run_child reaps it either way,
    # so only the time tells a kill from a wait)
    assert time.monotonic() - t0 < 30
    child = started[0]
    assert child.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.kill(child.pid, 0)  # gone (and reaped)


def test_bench_json_is_one_json_object_on_stdout(tmp_path, capsys):
    """--json: standard output is the JSON object alone (the comparison lines and file
    names went before it, so json.load failed); they go to standard error."""
    from kernelfit.cli import main

    (tmp_path / "b").mkdir()
    stale = tmp_path / "b" / f"bench_{machine.host_tag()}_peak.png"
    stale.write_bytes(b"an earlier run's figure")
    rc = main(["bench", "--n", "150", "--repeats", "1", "--peers", "scipy", "--no-peaks",
               "--d", "20", "--n-test", "30", "--out", str(tmp_path / "b"), "--json",
               "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 0
    assert json.loads(cap.out)["schema"] == suite.SCHEMA
    assert "factor rate / scipy dpotrf" in cap.err and "json: " in cap.err
    # no peaks, no peak plot: an earlier run's is not left beside this report
    assert not stale.exists()


def test_runner_memory_guard():
    rec = runner.run_child({"task": "selftest", "mode": "alloc", "bytes": 400 << 20,
                            "seconds": 5}, timeout=60, memory_limit=150 << 20)
    assert rec["status"] == "memory"
    assert "guard" in rec["reason"]


def test_runner_ok_error_and_exit():
    assert runner.run_child({"task": "selftest", "mode": "ok"})["status"] == "ok"
    err = runner.run_child({"task": "selftest", "mode": "raise"})
    assert err["status"] == "error" and "selftest error" in err["reason"]
    ex = runner.run_child({"task": "selftest", "mode": "exit", "code": 3})
    assert ex["status"] == "error" and ex["returncode"] == 3


def test_runner_solve_task_all_implementations():
    for impl in runner.IMPLEMENTATIONS:
        rec = runner.run_child({"task": "solve", "impl": impl, "n": 150, "n_test": 40, "d": 20,
                                "repeats": 1}, timeout=120)
        assert rec["status"] == "ok", rec
        rep = rec["result"]["repeats"][0]
        assert rep["total"] > 0
        assert rep["relative_residual"] < 1e-6
        assert 0 <= rep["test_error"] <= 1


def test_unknown_peer_is_an_error():
    with pytest.raises(InputError, match="unknown peer"):
        suite.parse_peers("sklearn,torch")
    assert suite.parse_peers("none") == ()
    assert suite.parse_peers("scikit-learn,scipy") == ("sklearn", "scipy")


def test_unknown_peer_cli_fails_before_running(capsys, tmp_path):
    from kernelfit.cli import main

    rc = main(["bench", "--n", "100", "--peers", "nope", "--out", str(tmp_path)])
    assert rc != 0
    assert "unknown peer" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_missing_peer_is_unavailable(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "sklearn" else real(name, *a))
    reason = runner.peer_unavailable_reason("sklearn")
    assert reason and "not installed" in reason


def test_power_law_fit_on_synthetic_timings():
    ns = [1000, 2000, 4000, 8000]
    ts = [2e-10 * n ** 3 for n in ns]
    fit = suite.fit_power_law(ns, ts)
    assert fit["exponent"] == pytest.approx(3.0, abs=1e-9)
    assert fit["coef"] == pytest.approx(2e-10, rel=1e-6)
    assert fit["cubic_coef"] == pytest.approx(2e-10, rel=1e-9)
    assert suite.predict_time(fit, 16000) == pytest.approx(2e-10 * 16000 ** 3, rel=1e-6)
    # noisy small-n overhead: the c n^3 fit follows the largest n
    ts2 = [t + 0.05 for t in ts]
    fit2 = suite.fit_power_law(ns, ts2)
    assert fit2["exponent"] < 3.0
    assert suite.predict_time(fit2, 16000, cubic=True) == pytest.approx(
        2e-10 * 16000 ** 3, rel=0.01)
    one = suite.fit_power_law([500], [1.0])
    assert one["exponent"] is None and one["cubic_coef"] == pytest.approx(1.0 / 500 ** 3)
    assert suite.fit_power_law([], [])["cubic_coef"] is None


def test_largest_fitting_n_monotone():
    small = suite.largest_fitting_n("kernelfit", 1 << 30, d=784, n_test=1000)
    big = suite.largest_fitting_n("kernelfit", 8 << 30, d=784, n_test=1000)
    sk = suite.largest_fitting_n("sklearn", 8 << 30, d=784, n_test=1000)
    assert 0 < small < big
    assert sk < big  # two dense n x n matrices against half of one


def test_skipped_n_when_memory_is_limited(monkeypatch):
    monkeypatch.setenv("KERNELFIT_MEMORY_LIMIT", str(400 << 20))
    cfg = suite.BenchConfig(n_list=[100, 20000, 40000], devices=("cpu",), peers=("scipy",),
                            repeats=1, d=10, n_test=10, measure_peaks=False, timeout_s=120,
                            budget_s=0)
    res = suite.run_bench(cfg, show_progress=False)
    recs = {(r["label"], r["n"]): r for r in res["records"]}
    assert recs[("kernelfit-cpu", 100)]["status"] == "ok"
    big = recs[("kernelfit-cpu", 20000)]
    assert big["status"] == "skipped" and big["reason"].startswith("memory: needs about")
    assert recs[("kernelfit-cpu", 40000)]["status"] == "skipped"
    assert recs[("scipy", 20000)]["status"] == "skipped"
    assert any(s["n"] == 20000 for s in res["skipped"])
    assert "kernelfit-cpu" in res["extrapolation"]
    md = report.render_markdown(res)
    assert "Not measured" in md and "memory: needs about" in md


def test_cli_end_to_end_tiny(tmp_path, capsys):
    from kernelfit.cli import main

    out = tmp_path / "res"
    rc = main(["bench", "--n", "200,400", "--repeats", "1", "--out", str(out), "--d", "30",
               "--n-test", "50", "--peak-size", "256", "--device", "all", "--no-progress"])
    assert rc == 0
    files = sorted(p.name for p in out.iterdir())
    tag = machine.host_tag()
    for suffix in (".json", ".md", "_time.png", "_peak.png", "_peers.png"):
        assert f"bench_{tag}{suffix}" in files
    assert not any(f.endswith(".tmp") for f in files)
    data = json.loads((out / f"bench_{tag}.json").read_text())
    assert data["schema"] == suite.SCHEMA
    assert data["machine"]["peaks"]["cpu"]["dgemm_gflops"] > 0
    labels = {r["label"] for r in data["records"]}
    assert labels == {"kernelfit-cpu", "kernelfit-gpu", "sklearn", "scipy"}
    for r in data["records"]:
        if r["label"] == "kernelfit-gpu" and r["status"] != "ok":
            assert r["status"] == "unavailable" and r["reason"]
        elif r["label"] != "kernelfit-gpu":
            assert r["status"] == "ok", r
            assert r["total"] > 0 and r["peak_rss_bytes"] > 0
    kf = [r for r in data["records"] if r["label"] == "kernelfit-cpu"]
    assert all(r["factor_gflops"] > 0 and r["fraction_of_peak"] > 0 for r in kf)
    assert data["comparisons"] and "factor_rate_vs_scipy" in data["comparisons"][0]
    md = (out / f"bench_{tag}.md").read_text()
    assert "| n | kernelfit-cpu" in md and "kernelfit-gpu" in md
    assert (out / f"bench_{tag}_time.png").read_bytes()[:4] == b"\x89PNG"
    assert "json:" in capsys.readouterr().out


def test_report_from_synthetic_results_with_crash(tmp_path):
    m = {"host": "h", "host_tag": "h", "cpu": {}, "memory": {}, "blas": {},
         "peaks": {"cpu": {"dgemm_gflops": 100.0, "sgemm_gflops": 200.0,
                           "dgemm": {"size": 4096, "repeats": 3}},
                   "gpu": {"available": False, "reason": "no CuPy"}}}
    cfg = suite.BenchConfig(n_list=[1000, 2000], devices=("cpu",), peers=("scipy",))
    recs = []
    for n in (1000, 2000):
        row = {"label": "kernelfit-cpu", "impl": "kernelfit", "device": "cpu"}
        child = {"status": "ok", "wall_s": 1.0, "max_rss_bytes": 1 << 28,
                 "result": {"repeats": [{"factor": 1e-10 * n ** 3, "total": 2e-10 * n ** 3,
                                         "relative_residual": 1e-14}]}}
        if n == 2000:  # as a GPU run records its untimed warm-up
            child["result"].update(warmup_s=2.5, warmup_rows=1024)
        recs.append(suite._record(row, n, cfg, m, child=child))
    row = {"label": "scipy", "impl": "scipy", "device": "cpu"}
    recs.append(suite._record(row, 2000, cfg, m, child={
        "status": "crashed", "signal": "SIGSEGV", "returncode": -11, "wall_s": 3.0,
        "max_rss_bytes": 1 << 29, "reason": "crashed with SIGSEGV", "result": None,
        "stderr_tail": "Fatal Python error: Segmentation fault"}))
    assert recs[0]["factor_gflops"] == pytest.approx(1000 ** 3 / 3 / (1e-10 * 1000 ** 3) / 1e9)
    assert recs[0]["fraction_of_peak"] == pytest.approx(recs[0]["factor_gflops"] / 100.0)
    res = {"schema": suite.SCHEMA, "created": "now", "config": {}, "machine": m,
           "records": recs, "comparisons": suite.comparisons(recs),
           "extrapolation": suite.extrapolate(recs, cfg, m),
           "skipped": [{"label": "scipy", "n": 2000, "status": "crashed",
                        "reason": "crashed with SIGSEGV"}], "elapsed_s": 1.0}
    assert res["comparisons"][1]["scipy_status"] == "crashed"
    e = res["extrapolation"]["kernelfit-cpu"]
    assert e["stage_fit"]["exponent"] == pytest.approx(3.0)
    assert e["predicted_stage_s"] == pytest.approx(1e-10 * e["n_max_fits"] ** 3, rel=1e-6)
    paths = report.write_report(res, tmp_path)
    md = paths["markdown"].read_text()
    assert "crashed (SIGSEGV)" in md
    assert "n = 2000: 2.5 s on 1,024 points" in md and "n = 1000:" not in md
    assert all(p.exists() for p in paths.values())
    assert not math.isnan(json.loads(paths["json"].read_text())["records"][0]["factor"])
    assert "Rough:" not in md  # an exponent of 3: the n^3 work leads
    assert "Rough totals" not in md  # the factor is half of each total here
    # a total led by overheads (the factor a quarter of it) was scaled by n^3 in silence
    for r in recs[:2]:
        r["total"] = 4 * r["factor"]
    md = report.render_markdown(res)
    assert "Rough totals: kernelfit-cpu (factor 25% of the total at n = 2,000)" in md
    assert "c n^3 at n = 10,000 (s)" in md
    # times still led by overheads (an exponent of 1.3): the prediction gets its caveat
    e["stage_fit"] = dict(e["stage_fit"], exponent=1.3)
    md = report.render_markdown(res)
    assert "Rough: the free exponent of kernelfit-cpu factor (1.30) is outside 2-4" in md
    # the largest n that fits would run another precision than the runs fitted
    e.update(precision_at_n_max="mixed", precisions_fitted=["float64"])
    md = report.render_markdown(res)
    assert f"kernelfit-cpu (n = {e['n_max_fits']:,}: mixed; fitted on float64)" in md


def test_stage_flops_and_limit_use_the_precisions_peak():
    m = {"peaks": {"cpu": {"dgemm_gflops": 100.0, "sgemm_gflops": 200.0}}}
    f = suite.stage_flops("kernelfit", 1000, 50, 200)
    assert f == {"gram": 1000 * 1000 * 50, "factor": 1000 ** 3 / 3, "predict": 2 * 200 * 1000 * 50}
    # a peer's dense K = k(X, X) comes from NumPy's X @ X.T, a syrk: the lower half too
    assert suite.stage_flops("sklearn", 1000, 50, 200)["gram"] == f["gram"]
    f64 = suite.limit_seconds("kernelfit", 1000, 50, 200, m, precision="float64")
    mixed = suite.limit_seconds("kernelfit", 1000, 50, 200, m, precision="mixed")
    other = (f["gram"] + f["predict"]) / 100e9
    assert f64 == pytest.approx(other + f["factor"] / 100e9)
    assert mixed == pytest.approx(other + f["factor"] / 200e9)
    assert suite.limit_seconds("kernelfit", 1000, 50, 200, {}) is None
    # exact integer-grid inner products run the Gram and predictions at the float32 peak
    grid = suite.limit_seconds("kernelfit", 1000, 50, 200, m, precision="mixed",
                               inner_products="float32 GEMM, exact: ...")
    assert grid == pytest.approx((f["gram"] + f["predict"] + f["factor"]) / 200e9)
    rates = suite.stage_rates({"n": 1000, "n_test": 200, "gram": 1.0, "factor": 2.0,
                               "precision": "float64", "inner_products": "float32 GEMM"},
                              "kernelfit", 50, m)
    assert rates["gram"]["dtype"] == "float32" and rates["gram"]["peak_gflops"] == 200.0
    assert rates["factor"]["dtype"] == "float64" and rates["factor"]["peak_gflops"] == 100.0
    assert "predict" not in rates


def test_runs_alternate_and_report_medians_stage_rates_and_limit(monkeypatch):
    calls = []

    def fake_child(spec, timeout=None, env=None, memory_limit=None):
        if spec["task"] == "peaks":
            return {"status": "ok", "result": {"cpu": {
                "dgemm_gflops": 100.0, "sgemm_gflops": 200.0,
                "dgemm": {"size": 64, "repeats": 1}}}}
        calls.append((spec["impl"], spec["n"], spec["repeats"]))
        k = sum(1 for c in calls if c[:2] == (spec["impl"], spec["n"]))
        t = float(k)  # 1, 2, 3 s: median 2 s
        rep = {"gram": t, "factor": t, "predict": t, "total": 3 * t, "fit": 2 * t,
               "relative_residual": 1e-14, "test_error": 0.0, "precision": "mixed"}
        return {"status": "ok", "wall_s": 3 * t, "max_rss_bytes": k << 20,
                "result": {"repeats": [rep]}}

    monkeypatch.setattr(suite, "run_child", fake_child)
    cfg = suite.BenchConfig(n_list=[300], devices=("cpu",), peers=("sklearn", "scipy"),
                            repeats=3, peer_repeats=3, d=10, n_test=20, budget_s=0)
    res = suite.run_bench(cfg, show_progress=False)
    # one run of each per round, round after round
    assert calls == [("kernelfit", 300, 1), ("sklearn", 300, 1), ("scipy", 300, 1)] * 3
    kf = next(r for r in res["records"] if r["label"] == "kernelfit-cpu")
    assert kf["repeats"] == 3 and kf["total"] == 6.0 and kf["peak_rss_bytes"] == 3 << 20
    assert kf["precision"] == "mixed"
    rates = kf["stage_rates"]
    assert rates["factor"]["gflops"] == pytest.approx(300 ** 3 / 3 / 2.0 / 1e9)
    assert rates["factor"]["peak_gflops"] == 200.0 and rates["gram"]["peak_gflops"] == 100.0
    assert kf["limit_s"] == pytest.approx(suite.limit_seconds("kernelfit", 300, 10, 20,
                                                              res["machine"],
                                                              precision="mixed"))
    comp = res["comparisons"][0]
    assert comp["time_vs_sklearn"] == pytest.approx(1.0)
    assert comp["limit_vs_sklearn"] == pytest.approx(kf["limit_s"] / 6.0)
    md = report.render_markdown(res)
    assert "## Stage rates" in md and "limit / scikit-learn" in md


def _benchmark_dry_run(name: str, benchmark: str, tmp_path):
    """``(root, script, result)``: ``benchmarks/<name> --dry-run --out tmp_path`` run to
    success in a fresh process, and its ``<benchmark>_dry_run.json``."""
    root = Path(__file__).resolve().parents[1]
    script = root / "benchmarks" / name
    proc = subprocess.run([sys.executable, str(script), "--dry-run", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return root, script, json.loads((tmp_path / f"{benchmark}_dry_run.json").read_text())


def test_factor_ops_benchmark_dry_run(tmp_path):
    """benchmarks/bench_factor_ops.py --dry-run: each tile operation of the tiled Cholesky
    timed and counted (n = 1,500 in 3 tiles: 3 potrf, 3 trsm, 3 syrk, 1 GEMM), rates
    against an SGEMM peak measured in the same run; bad sizes refused in one line."""
    root, script, out = _benchmark_dry_run("bench_factor_ops.py", "factor_ops", tmp_path)
    (run,) = out["runs"]
    assert (run["n"], run["tile_size"], run["n_tiles"]) == (1500, 500, 3)
    assert {k: v["count"] for k, v in run["ops"].items()} == \
        {"potrf": 3, "trsm": 3, "syrk": 3, "gemm": 1}
    assert run["gflops"] > 0 and run["sgemm_peak_gflops"] > 0
    assert run["fraction_of_sgemm_peak"] == pytest.approx(run["gflops"] / run["sgemm_peak_gflops"])
    solves = run["as_solves_run"]
    assert solves["how"] == "task graph" and solves["gflops"] > 0
    assert out["machine"]["cpu"]["model"]
    bad = subprocess.run([sys.executable, str(script), "--tile-sizes", "x", "--out",
                          str(tmp_path / "x")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_code_ab_benchmark_dry_run(tmp_path):
    """benchmarks/bench_code_ab.py --dry-run: both checkouts (here the same one) in fresh
    processes, alternating, with the children's CPU time and page faults, the commits and
    the machine; a folder that is no checkout is refused in one line."""
    root, script, out = _benchmark_dry_run("bench_code_ab.py", "code_ab", tmp_path)
    assert [r["code"] for r in out["runs"]] == ["before", "after"]
    for r in out["runs"]:
        assert r["status"] == "ok" and r["precision"] == "mixed" and r["total_s"] > 0
        assert r["user_s"] > 0 and r["minor_faults"] > 0
        assert r["kernelfit_path"] == str(root / "kernelfit")  # the checkout's code ran
    assert set(out["medians"]) == {"before_1500", "after_1500"}
    assert out["code"]["before"] == out["code"]["after"] != ""
    assert out["machine"]["peaks"]["cpu"]["sgemm_gflops"] > 0
    bad = subprocess.run([sys.executable, str(script), "--dry-run", "--before", str(tmp_path),
                          "--out", str(tmp_path / "x")], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "not a kernelfit checkout" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def test_gabor_throughput_benchmark_dry_run(tmp_path):
    """benchmarks/bench_gabor_throughput.py --dry-run: both checkouts (here the same one) in
    fresh processes, alternating, images/s and the largest difference between their
    features (0: the same code); without --data-dir or --dry-run it refuses in one line."""
    root, script, out = _benchmark_dry_run("bench_gabor_throughput.py", "gabor_throughput_ab",
                                           tmp_path)
    assert [r["code"] for r in out["runs"]] == ["before", "after"]
    for r in out["runs"]:
        assert r["status"] == "ok" and r["images_per_second"] > 0 and r["n_features"] == 3969
        assert r["kernelfit_path"] == str(root / "kernelfit" / "__init__.py")
    assert out["max_abs_feature_difference_first_256"] == 0.0
    assert set(out["medians_images_per_second"]) == {"before", "after"}
    assert not list(tmp_path.glob(".gabor_features_*"))  # scratch files removed
    bad = subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--data-dir" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def test_auto_choice_benchmark_dry_run(tmp_path):
    """benchmarks/bench_auto_choice.py --dry-run: one configuration solved with
    --precision auto and with the precision auto did not pick, each in a fresh process;
    auto's expected times beside the measured stage times and passes; without --data-dir
    or --dry-run it refuses in one line."""
    root, script, out = _benchmark_dry_run("bench_auto_choice.py", "auto_choice", tmp_path)
    (row,) = out["results"]
    auto, other = row["auto"], row["other"]
    assert auto["status"] == other["status"] == "ok"
    assert {auto["precision"], other["precision"]} == {"mixed", "float64"}
    assert auto["expected_time"]["passes_range"] == [3, 14]  # auto measured and chose
    mixed = auto if auto["precision"] == "mixed" else other
    assert mixed["passes"] >= 1 and mixed["seconds_per_pass"] > 0
    if "mixed precision expected faster" in auto["precision_reason"]:  # probed before
        probe = auto["conditioning_probe"]
        assert probe["rows"] >= 1024 and probe["seconds"] == auto["timings"]["probe"] > 0
    c = row["comparison"]
    assert c["auto_was_faster"] == (c["auto_fit_s"] <= c["other_fit_s"])
    assert c["model_pass_s"] == auto["expected_time"]["pass_s"] > 0
    assert out["machine"]["cpu"] and out["commit"]
    bad = subprocess.run([sys.executable, str(script), "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--data-dir" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def test_conditioning_probe_benchmark_dry_run(tmp_path):
    """benchmarks/bench_conditioning_probe.py --dry-run: the true smallest pivot of a
    float64 factorization at each n beside the probe's predictions from seeded samples
    (whole and first quarter) and their ratios to it; without --data-dir or --dry-run it
    refuses in one line."""
    root, script, out = _benchmark_dry_run("bench_conditioning_probe.py",
                                           "conditioning_probe", tmp_path)
    assert [r["n"] for r in out["results"]] == [1000, 3000]
    for row in out["results"]:
        assert 0 < row["true_min_pivot"] < 1 and row["probe"]["rows"] >= 64
        assert len(row["probe"]["samples"]) == 4
        for s in row["probe"]["samples"]:
            for key in ("whole", "quarter"):
                assert s[key]["ratio_to_truth"] == pytest.approx(
                    s[key]["min_pivot_predicted"] / row["true_min_pivot"])
    first, second = out["results"]
    assert second["true_min_pivot"] <= first["true_min_pivot"]  # the same rows and more
    assert out["constants"]["rate_constant"] == 100.0 and out["machine"]["cpu"]
    json.loads((tmp_path / "conditioning_probe_dry_run.json").read_text(),
               parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    for argv, says in (([], "--data-dir"), (["--dry-run", "--sizes", "10k"], "--sizes")):
        bad = subprocess.run([sys.executable, str(script), *argv, "--out", str(tmp_path / "x")],
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and says in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def test_gabor_grid_benchmark_dry_run(tmp_path):
    """benchmarks/bench_gabor_grid.py --dry-run: unrounded and rounded Gabor features in
    fresh `kernelfit solve` processes (features from the warmed cache), the rounded ones
    stored as exact float32 integers; medians per n; a bad --n refuses in one line."""
    root, script, out = _benchmark_dry_run("bench_gabor_grid.py", "gabor_grid", tmp_path)
    assert [r["grid_bits"] for r in out["runs"]] == ["none", "auto"]
    for r in out["runs"]:
        assert r["status"] == "ok" and r["feature_cache_hit"] and r["exact"]
        assert r["compared_s"] > 0 and r["test_error"] is not None
    none, auto = out["runs"]
    assert auto["inner_products"].startswith("float32 GEMM, exact")
    assert "2048" in auto["inner_products"] and none["inner_products"] is None
    (row,) = out["medians"]
    assert row["time_ratio"] == pytest.approx(auto["compared_s"] / none["compared_s"])
    assert out["machine"]["cpu"] and out["commit"]
    for argv, says in (([], "--data-dir"), (["--dry-run", "--n", "10k"], "--n")):
        bad = subprocess.run([sys.executable, str(script), *argv, "--out", str(tmp_path / "x")],
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and says in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def test_budget_projection_scales_the_timed_work_not_the_process_start():
    """A GPU's runs at n = 5,000 took 0.07 s each inside 14 s of process starts: scaling
    the whole wall time by 8 projected 113 s for n = 10,000 and skipped it."""
    prev = {"n": 5000, "wall_s": 14.2, "times": {"total": [0.075, 0.062]}}
    got = suite.projected_seconds(prev, 10000)
    assert got == pytest.approx(14.2 - 0.137 + 0.137 * 8)
    slow = {"n": 5000, "wall_s": 10.0, "times": {"total": [4.0, 4.0]}}  # work-bound
    assert suite.projected_seconds(slow, 10000) == pytest.approx(2.0 + 64.0)
    assert suite.projected_seconds({"n": 1000, "wall_s": 3.0}, 2000) == pytest.approx(3.0)


def test_a_solve_that_is_not_exact_is_flagged(tmp_path):
    """The bench records `kernelfit solve`'s verdict on each median residual (peers too),
    the table and the terminal line say NOT exact, and the plot rings those points."""
    cfg = suite.BenchConfig(n_list=[500], devices=("cpu",), peers=("scipy",), repeats=1,
                            d=10, n_test=10, measure_peaks=False, dtype="float32")
    child = {"status": "ok", "result": {"repeats": [
        {"gram": 0.01, "factor": 0.01, "solve": 0.01, "total": 0.05, "relative_residual": 5e-7,
         "precision": "float32", "test_error": 0.1}]}}
    row = {"label": "kernelfit-cpu", "impl": "kernelfit", "device": "cpu"}
    loose = suite._record(row, 500, cfg, {}, child)
    assert loose["exact"] is False and "float32" in loose["inexact_reason"]
    child["result"]["repeats"][0]["relative_residual"] = 1e-12
    assert suite._record(row, 500, cfg, {}, child)["exact"] is True
    from kernelfit.cli.bench import _line

    assert _line(loose).endswith("NOT exact")
    res = {"machine": {"host": "h", "host_tag": "h"}, "records": [loose], "config": {}}
    assert "5.0e-07 (NOT exact)" in report.render_markdown(res)
    paths = report.write_report(res, tmp_path)
    assert "peak_plot" not in paths and not (tmp_path / "bench_h_peak.png").exists()


def test_the_default_test_set_fits_a_small_dataset_and_a_larger_one_is_refused(tmp_path,
                                                                               capsys):
    """digits has 359 test points: the default (1000) takes them all; an --n-test above
    them is refused once, before any child runs (each child failed with it before)."""
    from kernelfit.cli import main

    rc = main(["bench", "--dataset", "digits", "--n", "200", "--repeats", "1",
               "--peers", "none", "--device", "cpu", "--no-peaks", "--no-progress",
               "--out", str(tmp_path / "a"), "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    data = json.loads(out[out.index("{"):])
    assert {r["n_test"] for r in data["records"]} == {359}
    assert all(r["status"] == "ok" for r in data["records"])
    # its own width (64 pixels), in the records and their flop counts, not random data's
    assert data["config"]["d"] == 64 and {r["d"] for r in data["records"]} == {64}
    assert data["records"][0]["stage_rates"]["gram"]["flops"] == 200 * 200 * 64
    rc = main(["bench", "--dataset", "digits", "--n", "200", "--n-test", "2000",
               "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert rc == 2 and "--n-test 359 or less" in err and not (tmp_path / "b").exists()


@pytest.mark.parametrize("argv, says", [
    (["--bandwidth", "median"], "bench gives every implementation the same bandwidth"),
    (["--peak-size", "8"], "at least 256"),
    (["--data-dir", "somewhere"], "name a dataset with --dataset"),
])
def test_bench_refuses_what_it_cannot_do_in_one_line_that_offers_no_dead_end(
        tmp_path, capsys, argv, says):
    """A bandwidth rule (each n and peer would get its own h), a peak GEMM too small to
    measure a rate, a data folder for random data: one line, nothing written, and no way
    out that bench refuses too (the bandwidth's message named 'median')."""
    from kernelfit.cli import main

    try:
        rc = main(["bench", "--n", "100", *argv, "--out", str(tmp_path / "o")])
    except SystemExit as exc:  # argparse's refusals exit with 2
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert says in err and "median" not in err.replace(argv[1], "")
    assert not (tmp_path / "o").exists()


def test_bench_sizes_kernelfit_by_the_plan_auto_would_run():
    """bench's float64 runs --precision auto, which takes mixed precision where float64
    does not fit: full MNIST on 16 GiB is measured, not skipped as the float64 plan's
    15 GB would have it (the peers' dense K stays as it was)."""
    from kernelfit.bench.runner import dense_bytes_needed
    from kernelfit.bench.suite import largest_fitting_n
    from kernelfit.memory import SAFETY

    GiB = 2 ** 30
    from kernelfit.solvers.plan import plan_request

    f64 = dense_bytes_needed("kernelfit", 60000, 784, 1000, device_bytes=15 * GiB)
    auto = dense_bytes_needed("kernelfit", 60000, 784, 1000, device_bytes=15 * GiB, auto=True)
    assert auto <= SAFETY * 15 * GiB < f64
    # the child's data come first (the pre-flight's plan leaves them out)
    data = 8.0 * (60000 + 1000) * 784 + 8.0 * 4 * 60000 * 10
    req = {"n": 60000, "d": 784, "n_outputs": 10, "n_test": 1000, "precision": "auto"}
    assert auto == int(data + plan_request(req, int(15 * GiB - data)).memory.total)
    assert largest_fitting_n("kernelfit", 16 * GiB, d=784, n_test=1000) >= 60000
    assert dense_bytes_needed("sklearn", 60000, 784, 1000, device_bytes=16 * GiB,
                              auto=True) > 16 * GiB


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_no_size_fits_offers_an_n_that_bench_then_runs(monkeypatch, dtype):
    """The up-front refusal sizes kernelfit as the skip decision does (the child's data
    counted): the --n it offers passes it and is not skipped (float32 on 2 GiB offered
    30,865, which the skip decision then refused: 'nothing was measured')."""
    import kernelfit.backend as backend
    from kernelfit.bench.runner import dense_bytes_needed
    from kernelfit.bench.suite import BenchConfig
    from kernelfit.cli.bench import _check_some_n_fits
    from kernelfit.memory import SAFETY

    avail = 2 * 2 ** 30
    monkeypatch.setattr(backend, "available_host_memory", lambda *a, **k: avail)
    cfg = BenchConfig(n_list=[40000], dtype=dtype)
    with pytest.raises(InputError, match=r"Way out: --n \d+ or less") as exc:
        _check_some_n_fits(cfg, 784)
    offered = int(re.search(r"--n (\d+) or less", str(exc.value)).group(1))
    _check_some_n_fits(BenchConfig(n_list=[offered], dtype=dtype), 784)  # passes
    fits = dense_bytes_needed("kernelfit", offered, 784, cfg.n_test, dtype=np.dtype(dtype),
                              device_bytes=avail, auto=dtype == "float64")
    assert fits <= SAFETY * avail  # the skip decision's criterion


def test_bench_float64_leaves_the_precision_to_auto_and_float32_fixes_it():
    """bench's --dtype float64 (its default) measures kernelfit's default, --precision auto
    (which may choose mixed precision), while a dtype named to solve fixes the precision."""
    from kernelfit.bench.suite import BenchConfig

    assert BenchConfig().run_options(1000).solver.precision == "auto"
    solver = BenchConfig(dtype="float32").run_options(1000).solver
    assert solver.solve_options().fixed_precision() == "float32"


def test_a_kernelfit_record_says_the_dtype_k_was_factored_in():
    """bench's --dtype float64 is --precision auto: where auto ran mixed precision the
    record's dtype is float32 (K stored and factored in float32), as `kernelfit solve`'s
    record says, not the configuration's float64; a peer's stays the configuration's."""
    cfg = suite.BenchConfig(n_list=[500], devices=("cpu",), peers=("scipy",), repeats=1,
                            d=10, n_test=10, measure_peaks=False)
    rows = {"kernelfit": {"label": "kernelfit-cpu", "impl": "kernelfit", "device": "cpu"},
            "scipy": {"label": "scipy", "impl": "scipy", "device": "cpu"}}
    for precision, dtype in (("mixed", "float32"), ("float64", "float64"),
                             ("float32", "float32")):
        child = {"status": "ok", "result": {"repeats": [
            {"gram": 0.01, "factor": 0.01, "solve": 0.01, "total": 0.05,
             "relative_residual": 1e-13, "precision": precision, "test_error": 0.1}]}}
        rec = suite._record(rows["kernelfit"], 500, cfg, {}, child)
        assert rec["dtype"] == dtype and rec["precision"] == precision
    # a peer's record keeps the configuration's dtype, whatever its child reports
    child["result"]["repeats"][0]["precision"] = "mixed"
    assert suite._record(rows["scipy"], 500, cfg, {}, child)["dtype"] == "float64"


def test_nothing_measured_because_the_gpu_is_missing_points_to_the_cpu(tmp_path, capsys):
    from kernelfit.cli import main

    rc = main(["bench", "--n", "200", "--device", "gpu", "--peers", "none", "--no-peaks",
               "--no-progress", "--out", str(tmp_path / "g")])
    err = capsys.readouterr().err
    if rc == 0:
        pytest.skip("a GPU is usable here")
    # refused before anything runs: kernelfit itself would not be measured at all
    assert rc == 2 and "--device gpu: no usable GPU here" in err and "--device cpu" in err
    assert not (tmp_path / "g").exists()


def test_budget_counts_the_runs_already_taken_at_the_same_n(monkeypatch):
    """--budget bounds the whole benchmark: at each n the projections of the rows already
    taken add up (three rows of 242 s projected each after 96 s, budget 600: two run, the
    third is skipped, where each alone fitted and all three ran past the budget)."""
    import types

    clock = [0.0]
    monkeypatch.setattr(suite, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))

    def fake_child(spec, timeout=None, env=None, memory_limit=None):
        work = 30.0 * (spec["n"] / 1000) ** 3  # 30 s at n = 1000, 240 s at 2000
        clock[0] += work + 2.0
        rep = {"gram": 0.1 * work, "factor": 0.8 * work, "solve": 0.1 * work, "predict": 0.0,
               "fit": work, "total": work, "relative_residual": 1e-14, "test_error": 0.1}
        return {"status": "ok", "wall_s": work + 2.0, "max_rss_bytes": 1 << 20,
                "result": {"repeats": [rep]}}

    monkeypatch.setattr(suite, "run_child", fake_child)
    cfg = suite.BenchConfig(n_list=[1000, 2000], devices=("cpu",), peers=("sklearn", "scipy"),
                            repeats=1, peer_repeats=1, d=10, n_test=10, measure_peaks=False,
                            budget_s=600)
    res = suite.run_bench(cfg, show_progress=False)
    status = {(r["label"], r["n"]): r["status"] for r in res["records"]}
    assert [status[(lab, 1000)] for lab in ("kernelfit-cpu", "sklearn", "scipy")] == ["ok"] * 3
    assert [status[(lab, 2000)] for lab in ("kernelfit-cpu", "sklearn", "scipy")] == \
        ["ok", "ok", "skipped"]
    skipped = next(r for r in res["records"] if r["status"] == "skipped")
    assert "484 s projected for the runs already taken at n = 2000" in skipped["reason"]
    assert clock[0] <= 600


def test_no_peaks_keeps_the_gpu_probes_rate_out_of_the_figures(monkeypatch):
    """--no-peaks: the GPU probe (a 256^2 GEMM) says the GPU works; its rate is no peak, so
    no fraction of peak, no limit and no "GPU peaks" line come of it (fake children)."""
    def fake_child(spec, timeout=None, env=None, memory_limit=None):
        if spec["task"] == "peaks":
            assert spec["gpu_size"] == 256
            return {"status": "ok", "result": {"status": "ok", "gpu": {
                "available": True, "gpu_name": "fake", "gpu_memory_bytes": 80 << 30,
                "fp64_gflops": 3355.0, "fp32_gflops": 4194.0, "fp64": {"size": 256}}}}
        rep = {"gram": 0.05, "factor": 0.1, "solve": 0.01, "predict": 0.02, "fit": 0.2,
               "total": 0.22, "relative_residual": 1e-14, "test_error": 0.1,
               "precision": "float64"}
        return {"status": "ok", "wall_s": 5.0, "max_rss_bytes": 1 << 30,
                "result": {"repeats": [rep]}}

    monkeypatch.setattr(suite, "run_child", fake_child)
    cfg = suite.BenchConfig(n_list=[2000], devices=("gpu",), peers=(), repeats=1,
                            measure_peaks=False, budget_s=0, d=10, n_test=10)
    res = suite.run_bench(cfg, show_progress=False)
    rec = res["records"][0]
    assert rec["status"] == "ok" and rec["factor_gflops"] > 0
    assert rec["fraction_of_peak"] is None and rec["limit_s"] is None
    lines = report.machine_lines(res["machine"])
    assert "GPU: fake (peaks not measured)" in lines
    assert not any("GPU peaks" in ln for ln in lines)


def test_gpu_preflight_plans_the_gpu_solve():
    """The GPU row's memory pre-flight and its "largest n that fits" plan kernelfit's GPU
    solve (one dense call where it fits: a whole n x n K), not the CPU's lower tiles."""
    from kernelfit.memory import plan_exact_solve

    gib = 1 << 30
    cpu = runner.dense_bytes_needed("kernelfit", 40000, 784, 1000)
    gpu = runner.dense_bytes_needed("kernelfit", 40000, 784, 1000, device="gpu",
                                    device_bytes=79 * gib)
    assert gpu == plan_exact_solve(40000, 784, 10, n_test=1000, tile_size=40000,
                                   device="gpu").total
    assert gpu > 4 * cpu
    # the float64 plans (auto's mixed one, where float64 does not fit, tiles both)
    assert suite.largest_fitting_n("kernelfit", 79 * gib, d=784, n_test=1000, device="gpu",
                                   auto=False) < \
        suite.largest_fitting_n("kernelfit", 79 * gib, d=784, n_test=1000, auto=False)


def test_peer_env_is_in_the_peers_records(monkeypatch):
    """--peer-env: the peers' children run with it, and their records say so (the machine
    block and the peaks are bench's own environment's); kernelfit's runs keep bench's."""
    envs = {}

    def fake_child(spec, timeout=None, env=None, memory_limit=None):
        envs[spec["impl"]] = env
        rep = {"gram": 0.1, "factor": 0.1, "solve": 0.1, "predict": 0.0, "fit": 0.3,
               "total": 0.3, "relative_residual": 1e-14, "test_error": 0.1}
        return {"status": "ok", "wall_s": 1.0, "max_rss_bytes": 1 << 20,
                "result": {"repeats": [rep]}}

    monkeypatch.setattr(suite, "run_child", fake_child)
    cfg = suite.BenchConfig(n_list=[300], devices=("cpu",), peers=("scipy",), repeats=1,
                            peer_repeats=1, d=10, n_test=10, measure_peaks=False,
                            budget_s=0, peer_env={"OPENBLAS_CORETYPE": "Haswell"})
    res = suite.run_bench(cfg, show_progress=False)
    recs = {r["label"]: r for r in res["records"]}
    assert recs["scipy"]["env"] == {"OPENBLAS_CORETYPE": "Haswell"} == envs["scipy"]
    assert "env" not in recs["kernelfit-cpu"] and envs["kernelfit"] is None
    assert "the peers ran with it" in report.render_markdown(res)


def test_a_mixed_factor_against_scipys_dpotrf_is_labelled():
    """kernelfit's factor rate over SciPy's float64 dpotrf: where auto chose mixed
    precision (a float32 factor) the ratio says so, in the table."""
    res = {"config": {}, "machine": {}, "records": [], "comparisons": [
        {"n": 10000, "kernelfit_s": 2.0, "limit_s": 1.0, "precision": "mixed",
         "factor_rate_vs_scipy": 2.1},
        {"n": 20000, "kernelfit_s": 9.0, "limit_s": 5.0, "precision": "float64",
         "factor_rate_vs_scipy": 1.05}]}
    md = report.render_markdown(res)
    assert "| 2.10 (mixed: float32 factor) |" in md
    assert "| 1.05 |" in md


def test_machine_names_both_blas_libraries_and_what_runs_in_each():
    """NumPy and SciPy bring their own OpenBLAS: the machine block lists each with its
    owner, and the report says the tiled Cholesky runs in SciPy's, the Gram, products and
    GEMM peaks in NumPy's."""
    loaded = machine.describe_machine()["blas_loaded"]
    owners = {b["owner"] for b in loaded}
    assert "scipy" in owners  # SciPy's is loaded for the description (pip wheels: its own)
    m = {"cpu": {}, "memory": {}, "blas": {}, "blas_loaded": [
        {"owner": "scipy", "internal_api": "openblas", "version": "0.3.30",
         "architecture": "SkylakeX"},
        {"owner": "numpy", "internal_api": "openblas", "version": "0.3.31",
         "architecture": "SkylakeX"}]}
    line = next(ln for ln in report.machine_lines(m) if ln.startswith("BLAS libraries"))
    assert "scipy's openblas 0.3.30 (SkylakeX kernel) (tiled Cholesky)" in line
    assert "numpy's openblas 0.3.31 (SkylakeX kernel) (Gram, products, GEMM peaks)" in line



def test_a_kernel_singular_at_these_sizes_gets_benchs_own_ways_out(tmp_path, capsys):
    """The linear kernel on n > d points: nothing measured; the solver's ways out
    (solver='eigh', a ridge) are not bench's flags, so bench names its own."""
    from kernelfit.cli import main

    rc = main(["bench", "--n", "60", "--repeats", "1", "--peers", "none", "--no-peaks",
               "--d", "20", "--kernel", "linear", "--device", "cpu",
               "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert rc == 2 and "rank at most d = 20" in err
    assert "--solver" not in err and "ridge" not in err
    assert "(--kernel gaussian), or --n values below the rank" in err


def test_a_peers_float32_factor_is_rated_at_the_float32_peak():
    """scipy's float32 factor was rated against the DGEMM peak in the stage rates (the
    record's own fraction_of_peak used the SGEMM one): the bench's dtype now counts."""
    m = {"peaks": {"cpu": {"dgemm_gflops": 100.0, "sgemm_gflops": 200.0}}}
    rec = {"n": 1000, "n_test": 200, "gram": 1.0, "factor": 2.0}
    assert suite.stage_rates(rec, "scipy", 50, m)["factor"]["dtype"] == "float64"
    rates = suite.stage_rates(rec, "scipy", 50, m, dtype="float32")
    assert rates["factor"]["dtype"] == "float32" and rates["factor"]["peak_gflops"] == 200.0


def test_a_float32_peer_run_is_rated_and_noted_as_its_record_says(monkeypatch):
    """Through run_bench: scipy's factor in a --dtype float32 bench (its record has no
    precision) is rated at the SGEMM peak in its stage rates as in its fraction of peak,
    and a rate above the measured peak gets the note under the markdown's summary."""
    def fake_child(spec, timeout=None, env=None, memory_limit=None):
        if spec["task"] == "peaks":
            return {"status": "ok", "result": {"cpu": {
                "dgemm_gflops": 1.0, "sgemm_gflops": 2.0, "dgemm": {"size": 64, "repeats": 1}}}}
        rep = {"gram": 0.1, "factor": 0.001, "predict": 0.1, "total": 0.3, "fit": 0.2,
               "relative_residual": 1e-6, "test_error": 0.0}
        return {"status": "ok", "wall_s": 1.0, "max_rss_bytes": 1 << 20,
                "result": {"repeats": [rep]}}

    monkeypatch.setattr(suite, "run_child", fake_child)
    cfg = suite.BenchConfig(n_list=[300], devices=("cpu",), peers=("scipy",), repeats=1,
                            peer_repeats=1, d=10, n_test=20, budget_s=0, dtype="float32")
    res = suite.run_bench(cfg, show_progress=False)
    sp = next(r for r in res["records"] if r["label"] == "scipy")
    assert sp["stage_rates"]["factor"]["dtype"] == "float32"
    assert sp["stage_rates"]["factor"]["fraction_of_peak"] == pytest.approx(
        sp["fraction_of_peak"])
    assert sp["fraction_of_peak"] > 1  # 9e6 flop in 1 ms against 2 GFLOP/s
    md = report.render_markdown(res)
    assert "Note: above the measured GEMM peak (" in md and "scipy n=300" in md


def test_a_busy_start_and_a_rate_above_the_peak_are_said():
    """The load average was recorded and never shown, and a factorization at 175% (920%)
    of an under-measured peak passed without a word: both are said, in the machine lines
    (terminal and markdown) and under the summary table."""
    from kernelfit.bench.report import busy_note, machine_lines, peak_caveat

    base = {"cpu": {"model": "x", "arch": "x86_64", "usable": 2}, "memory": {}, "blas": {}}
    quiet = dict(base, load_average=[0.4, 1.2, 1.3])
    busy = dict(base, load_average=[1.97, 1.52, 1.31])
    assert busy_note(quiet) is None and busy_note(base) is None
    assert "BUSY: a load of 1.97 on 2 usable cores" in busy_note(busy)
    assert any(line.startswith("load average at start: 0.40") and "BUSY" not in line
               for line in machine_lines(quiet))
    assert any("BUSY" in line for line in machine_lines(busy))
    ok = {"status": "ok", "label": "scipy", "n": 800, "total": 0.02, "limit_s": 0.01}
    assert peak_caveat([dict(ok, fraction_of_peak=0.9)]) is None
    assert "under-measured" in peak_caveat([dict(ok, fraction_of_peak=1.75)])
    assert "scipy n=800" in peak_caveat([dict(ok, total=0.005)])  # faster than its limit
    assert peak_caveat([dict(ok, status="crashed", fraction_of_peak=9.0)]) is None


def test_bench_takes_a_bandwidth_for_the_data_and_says_which(tmp_path, capsys):
    """--dataset npz used MNIST's h = 5 whatever the data (at a scale of 1,000, K was the
    identity: residual 0, chance test error), and random data at a small --d made K all but
    ones (NOT exact): the data's own default now, the same for every implementation and
    n, printed and recorded (config.bandwidth_rule); --bandwidth still sets it."""
    from types import SimpleNamespace

    from kernelfit.cli import main
    from kernelfit.cli.bench import _default_bandwidth

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1000, (3, 20))
    y = rng.integers(0, 3, 500)
    X = centres[y] + rng.normal(0, 600, (500, 20))
    data = tmp_path / "user.npz"
    np.savez(data, X_train=X[:400], y_train=y[:400], X_test=X[400:], y_test=y[400:])
    out = tmp_path / "res"
    argv = ["bench", "--dataset", f"npz:{data}", "--n", "300", "--repeats", "1", "--peers",
            "none", "--no-peaks", "--device", "cpu", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    res = json.loads((out / f"bench_{machine.host_tag()}.json").read_text())
    cfg, rec = res["config"], res["records"][0]
    assert cfg["bandwidth_rule"]["rule"] == "0.75 x median" and cfg["bandwidth"] > 100
    assert f"bandwidth h = {cfg['bandwidth']:.4g}" in err
    assert rec["status"] == "ok" and rec["exact"] and rec["test_error"] < 0.2
    assert main(argv + ["--bandwidth", "7"]) == 0
    res = json.loads((out / f"bench_{machine.host_tag()}.json").read_text())
    assert res["config"]["bandwidth"] == 7 and "bandwidth_rule" not in res["config"]
    capsys.readouterr()
    h, rule = _default_bandwidth(SimpleNamespace(d=784), None)
    assert h == 5.0 and rule["rule"] == "random-data default"  # MNIST's width: as before
    assert _default_bandwidth(SimpleNamespace(d=20), None)[0] == pytest.approx(
        5.0 * (20 / 784) ** 0.5)
