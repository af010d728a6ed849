"""The device script's CPU dry run: ``DEV=cpu bash benchmarks/device_check.sh``.

A session that is lent a GPU runs the script once, with no time to debug it; this test runs
every step with tiny sizes on the CPU so that a broken step shows up here first.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "device_check.sh"
STEPS = ("gpu_tests", "agreement", "mnist60k", "dense_vs_tiles", "n100k", "gabor70k",
         "randconv", "bench_cli")


def _run(out: Path, data: Path, steps=None, timeout=600):
    env = dict(os.environ, DEV="cpu", OUT=str(out), DATA=str(data), BUDGET="500")
    if steps:
        env["STEPS"] = " ".join(steps)
    return subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _shared_data():
    env = os.environ.get("KERNELFIT_TEST_DATA")
    path = Path(env) if env else (ROOT / ".." / "shared" / "data").resolve()
    return path if path.is_dir() else None


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                    reason="needs bash and coreutils' timeout")
def test_dry_run_writes_every_step(tmp_path):
    data = tmp_path / "devdata"  # staged like .devdata: links to the shared copies
    data.mkdir()
    shared = _shared_data()
    if shared is not None:
        for name in ("mnist", "cifar10-jpeg"):
            if (shared / name).is_dir():
                (data / name).symlink_to(shared / name)
    out = tmp_path / "out"
    proc = _run(out, data)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for step in STEPS:
        rec = json.loads((out / f"{step}.json").read_text())
        assert rec["step"] == step
        assert rec["tiny_dry_run"] is True
        needs_data = step not in ("gpu_tests", "dense_vs_tiles", "bench_cli")
        if shared is None and needs_data:
            assert rec["status"] == "skipped", rec
        else:
            assert rec["status"] == "ok", (step, rec.get("error"), rec.get("traceback"),
                                           rec.get("output_tail"), rec.get("stderr_tail"))
        assert rec["machine"]["cpu"]["model"]
    assert "status" in proc.stdout.splitlines()[-len(STEPS) - 1]  # the summary table


def test_missing_data_is_a_skip_with_the_staging_hint(tmp_path):
    out = tmp_path / "out"
    proc = _run(out, tmp_path / "empty", steps=["randconv", "gabor70k"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    for step in ("randconv", "gabor70k"):
        rec = json.loads((out / f"{step}.json").read_text())
        assert rec["status"] == "skipped" and "device_check.sh" in rec["reason"]


def test_a_step_out_of_budget_still_writes_its_json(tmp_path):
    env = dict(os.environ, DEV="cpu", OUT=str(tmp_path), DATA=str(tmp_path / "none"),
               BUDGET="2", STEPS="agreement")
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0
    rec = json.loads((tmp_path / "agreement.json").read_text())
    assert rec["status"].startswith("skipped") and "budget" in rec["status"]


def test_staging_is_documented_and_ignored_by_git():
    head = SCRIPT.read_text().split("set -u")[0]
    for needle in (".devdata", "carry", "/work/shared/data/mnist", "cifar10-jpeg.tar.gz",
                   "DEV=cpu"):
        assert needle in head
    assert "/.devdata/" in (ROOT / ".gitignore").read_text().split()


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                    reason="needs bash and coreutils' timeout")
def test_random_conv_device_script_dry_run(tmp_path):
    """``DEV=cpu bash benchmarks/device_random_conv.sh``: the GPU run's plumbing with
    ``--quick`` on the CPU: the reproduce folder comes back without its resume points, and
    the committed results are not touched."""
    shared = _shared_data()
    if shared is None or not (shared / "cifar10-jpeg" / "cifar10-jpeg.tar.gz").is_file():
        pytest.skip("no CIFAR-10 JPEG set in the shared data")
    data = tmp_path / "devdata"
    data.mkdir()
    (data / "cifar10-jpeg").symlink_to(shared / "cifar10-jpeg")
    committed = ROOT / "benchmarks" / "results" / "reproduce"
    before = sorted((p.relative_to(committed), p.stat().st_mtime_ns)
                    for p in committed.rglob("*"))
    out = tmp_path / "out"
    env = dict(os.environ, DEV="cpu", OUT=str(out), DATA=str(data), LIMIT="300")
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_random_conv.sh")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    log = (out / "reproduce.log").read_text() if (out / "reproduce.log").is_file() else ""
    assert proc.returncode == 0, proc.stdout[-2000:] + log[-2000:]
    back = out / "reproduce"
    for k in (8, 16, 32):  # the quick curve's points
        rec = json.loads((back / "parts" / "cifar-random-conv" / f"filters-{k}.json").read_text())
        assert rec["gram_device"]["device"] == "cpu" and rec["relative_residual"] < 1e-8
    assert (back / "results" / "cifar-random-conv.json").is_file()
    assert (back / "report.md").is_file()
    assert not (back / "work").exists()
    assert "reproduce exit code 0" in log
    after = sorted((p.relative_to(committed), p.stat().st_mtime_ns)
                   for p in committed.rglob("*"))
    assert after == before


@pytest.mark.skipif(any(shutil.which(c) is None for c in ("bash", "tar", "timeout")),
                    reason="needs bash, tar and coreutils' timeout")
def test_session_script_packs_what_the_device_tool_returns(tmp_path):
    """``benchmarks/device_session.sh``: the device tool returns at most 8 files, no more
    than two folders below $OUT; the session packs each part into one archive."""
    import tarfile

    shared = _shared_data()
    data = tmp_path / "devdata"
    data.mkdir()
    if shared is not None and (shared / "cifar10-jpeg").is_dir():
        (data / "cifar10-jpeg").symlink_to(shared / "cifar10-jpeg")
    out = tmp_path / "out"
    env = dict(os.environ, DEV="cpu", OUT=str(out), DATA=str(data), REST="gabor70k",
               TOTAL="400")
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_session.sh")], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["check_first.tgz", "check_rest.tgz", "machine.txt", "random_conv.tgz",
                     "session.log"]
    with tarfile.open(out / "check_first.tgz") as tf:
        rec = json.load(tf.extractfile("check_first/gpu_tests.json"))
    assert rec["step"] == "gpu_tests" and rec["status"] == "ok"
    with tarfile.open(out / "check_rest.tgz") as tf:
        names = tf.getnames()
    assert "check_rest/gabor70k.json" in names and "check_rest/agreement.json" not in names
    with tarfile.open(out / "random_conv.tgz") as tf:
        names = tf.getnames()
    assert "random_conv/reproduce.log" in names
    if (data / "cifar10-jpeg").exists():
        assert "random_conv/reproduce/results/cifar-random-conv.json" in names
    assert "device_session: done" in (out / "session.log").read_text()
