"""``kernelfit reproduce``: every experiment runs (quick), results are stored atomically and
resumed, missing data and memory refusals are reported per experiment."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kernelfit.cli import main
from kernelfit.reproduce import list_experiments
from kernelfit.reproduce.experiments import EXPERIMENTS

from test_datasets_support import (make_idx_arrays, register_sources, tar_directory,
                                   write_idx_dataset, write_image_tree)

REPO = Path(__file__).resolve().parent.parent


def _fake_data(root: Path, monkeypatch, *, mnist=True, cifar=True) -> Path:
    """Small MNIST (IDX, checksums registered) and a small CIFAR-10 JPEG set (the official
    reader insists on 10,000-image batches, too big to write here)."""
    data = root / "data"
    if mnist:
        arrays = make_idx_arrays(n_train=400, n_test=250, shape=(28, 28), seed=3)
        stored = write_idx_dataset(data, arrays=arrays)
        register_sources(monkeypatch, "mnist", stored)
        (root / "mnist_sources.pkl").write_bytes(pickle.dumps(stored))
    if cifar:
        classes = [f"c{i}" for i in range(10)]
        write_image_tree(root / "jpeg" / "cifar10-jpeg", classes=classes, n_train=21,
                         n_test=11, size=(32, 32), ext=".jpg")
        (data / "cifar10-jpeg").mkdir(parents=True)
        tar_directory(root / "jpeg" / "cifar10-jpeg", data / "cifar10-jpeg" / "cifar10-jpeg.tar.gz",
                      "cifar10-jpeg")
    data.mkdir(parents=True, exist_ok=True)
    return data


def _data_dir(tmp_path, monkeypatch) -> Path:
    env = os.environ.get("KERNELFIT_TEST_DATA")
    if env and Path(env).is_dir():
        return Path(env)
    return _fake_data(tmp_path, monkeypatch)


def _run(args) -> int:
    return main(["reproduce", "--no-progress"] + [str(a) for a in args])


def _no_tmp_files(out: Path) -> bool:
    return not [p for p in out.rglob("*") if p.name.endswith(".tmp") or ".tmp-" in p.name]


def test_list(capsys):
    assert _run(["--list"]) == 0
    text = capsys.readouterr().out
    for name, *_ in list_experiments():
        assert name in text
    assert set(EXPERIMENTS) == {"mnist-raw", "mnist-gabor", "mnist-norms", "mnist-ridge",
                                "cifar-pixels", "cifar-random-conv", "randomization"}
    assert _run(["--list", "--json"]) == 0  # one JSON object (it printed the text list)
    listed = json.loads(capsys.readouterr().out)["experiments"]
    assert [e["name"] for e in listed] == [name for name, *_ in list_experiments()]


def test_quick_runs_every_experiment(tmp_path, monkeypatch, capsys):
    data = _data_dir(tmp_path, monkeypatch)
    out = tmp_path / "out"
    assert _run(["--quick", "--data-dir", data, "--out", out]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["quick"] is True
    for name in EXPERIMENTS:
        assert report["experiments"][name]["status"] == "done", report["experiments"][name]
        assert (out / "results" / f"{name}.json").is_file()
    for p in ("report.md", "report.png", "figures/mnist_ridge.png",
              "figures/cifar_random_conv_filters.png", "figures/randomization_overview.png"):
        assert (out / p).stat().st_size > 0, p
    md = (out / "report.md").read_text()
    assert "| claim | paper | kernelfit | n | residual |" in md
    assert "quartic <x/\\|x\\|, z/\\|z\\|>^4 |" in md  # bars escaped inside the cell
    blas = report["machine"]["blas"]
    if blas.get("library"):  # the header names the BLAS in words, not as a cut-off dict
        assert f"BLAS {blas['library']} " in md and "{" not in md.splitlines()[2]
    rows = report["rows"]
    assert {r["verdict"] for r in rows} == {"not compared"}
    assert all(r["exact"] for r in rows if r["relative_residual"] is not None)
    cifar_rows = [r for r in rows if r["claim"].startswith("CIFAR")]
    jpeg = "JPEG" in str(cifar_rows[0]["data"])
    assert ("lossy CIFAR-10 JPEG set" in md) == jpeg
    conv = json.loads((out / "results" / "cifar-random-conv.json").read_text())
    stages = conv["details"]["curve"][-1]["stages"]
    assert stages["conv"]["flop"] > 0 and stages["gram"]["flop"] > 0
    assert 0 < stages["gram"]["fraction_of_sgemm_peak"]
    # a second run keeps everything stored and solves nothing
    calls = []
    import kernelfit.reproduce.adapter as adapter

    monkeypatch.setattr(adapter, "solve", lambda spec: calls.append(spec))
    assert _run(["--quick", "--data-dir", data, "--out", out]) == 0
    assert calls == []
    out_text = capsys.readouterr().out
    assert out_text.count("stored: finished earlier; kept") == len(EXPERIMENTS)


def test_missing_dataset_others_still_run(tmp_path, monkeypatch, capsys):
    data = _fake_data(tmp_path, monkeypatch, cifar=False)
    out = tmp_path / "out"
    rc = _run(["--quick", "--data-dir", data, "--out", out, "--only",
               "mnist-raw,cifar-pixels,cifar-random-conv"])
    assert rc == 3
    text = capsys.readouterr().out
    assert "cifar-10-python.tar.gz" in text and str(data / "cifar10") in text
    assert text.count("missing cifar-10-python.tar.gz") == 1  # one clear message
    assert "cifar-random-conv  missing-data: the same message as cifar-pixels" in text
    assert "data_dir" not in text
    # missing MNIST files: the way out names the flag, not the Python parameter
    (tmp_path / "empty").mkdir()
    assert _run(["--quick", "--data-dir", tmp_path / "empty", "--out", tmp_path / "out2",
                 "--only", "mnist-raw"]) == 3
    text = capsys.readouterr().out
    assert "mnist-raw          missing-data: mnist: missing train-images-idx3-ubyte" in text
    assert "point --data-dir (or $KERNELFIT_DATA) at a folder holding mnist/" in text
    assert "data_dir" not in text
    # --data-dir at the dataset's own folder: the way out names its parent first, as solve
    assert _run(["--quick", "--data-dir", data / "mnist", "--out", tmp_path / "out3",
                 "--only", "mnist-raw"]) == 3
    text = capsys.readouterr().out
    assert f"its files are in {data / 'mnist'} itself" in text, text
    assert f"Ways out: --data-dir {data}" in text
    report = json.loads((out / "report.json").read_text())
    assert report["experiments"]["mnist-raw"]["status"] == "done"
    assert report["experiments"]["cifar-pixels"]["status"] == "missing-data"
    assert not (out / "results" / "cifar-pixels.json").exists()
    assert "missing-data" in (out / "report.md").read_text()


def test_memory_refusal_before_work(tmp_path, monkeypatch, capsys):
    data = _fake_data(tmp_path, monkeypatch)
    out = tmp_path / "out"
    import kernelfit.features.random_conv_gram as rc_mod
    import kernelfit.reproduce.adapter as adapter

    monkeypatch.setattr(adapter, "available_memory", lambda device="cpu": 1 << 20)
    started = []
    monkeypatch.setattr(rc_mod, "accumulate_gram", lambda *a, **k: started.append(1))
    rc = _run(["--quick", "--data-dir", data, "--out", out, "--only",
               "cifar-random-conv,mnist-raw"])
    assert rc == 4
    report = json.loads((out / "report.json").read_text())
    st = report["experiments"]["cifar-random-conv"]
    assert st["status"] == "refused" and "not enough memory" in st["message"]
    assert "GiB" in st["message"] or "MiB" in st["message"]
    assert started == [] and not (out / "parts" / "cifar-random-conv").exists()
    assert report["experiments"]["mnist-raw"]["status"] == "done"


def test_interrupted_run_resumes(tmp_path, monkeypatch):
    data = _fake_data(tmp_path, monkeypatch, cifar=False)
    out = tmp_path / "out"
    import kernelfit.reproduce.adapter as adapter

    real = adapter.solve
    calls = []

    def dying(spec):
        calls.append(spec)
        if len(calls) == 3:  # the first solve of mnist-gabor
            raise KeyboardInterrupt
        return real(spec)

    monkeypatch.setattr(adapter, "solve", dying)
    with pytest.raises(KeyboardInterrupt):
        from kernelfit.reproduce import run_reproduce

        run_reproduce(["mnist-raw", "mnist-gabor"], quick=True, data_dir=data, out_dir=out,
                      progress=False)
    assert (out / "results" / "mnist-raw.json").is_file()
    assert not (out / "results" / "mnist-gabor.json").exists()
    assert len(list((out / "runs").glob("*.json"))) == 2
    # a write killed half-way leaves a temporary file only; the next run removes it
    (out / "results" / ".mnist-gabor.json.k3x9_q2a.tmp").write_text('{"rows": [')
    # ... and a user's own temporary files under the folder stay
    mine = [out / ".draft.tmp", out / "notes" / ".draft.tmp", out / "results" / ".keep.tmp"]
    for p in mine:
        p.parent.mkdir(exist_ok=True)
        p.write_text("mine")
    again = []
    monkeypatch.setattr(adapter, "solve", lambda spec: again.append(spec) or real(spec))
    assert _run(["--quick", "--data-dir", data, "--out", out, "--only",
                 "mnist-raw,mnist-gabor,mnist-norms"]) == 0
    assert len(again) == 1  # only the Gabor solve; mnist-norms reuses both stored solves
    assert all(p.read_text() == "mine" for p in mine)
    for p in mine:
        p.unlink()
    assert _no_tmp_files(out)
    json.loads((out / "results" / "mnist-gabor.json").read_text())


def test_killed_process_leaves_only_whole_results(tmp_path, monkeypatch):
    data = _fake_data(tmp_path, monkeypatch, cifar=False)
    out = tmp_path / "out"
    script = (
        "import pickle, sys\n"
        f"sys.path[:0] = [{str(REPO)!r}, {str(REPO / 'tests')!r}]\n"
        "import pytest\n"
        "from test_datasets_support import register_sources\n"
        f"register_sources(pytest.MonkeyPatch(), 'mnist', pickle.load(open("
        f"{str(tmp_path / 'mnist_sources.pkl')!r}, 'rb')))\n"
        "from kernelfit.cli import main\n"
        f"sys.exit(main(['reproduce', '--quick', '--no-progress', '--data-dir', {str(data)!r}, "
        f"'--out', {str(out)!r}, '--only', 'mnist-ridge,randomization']))\n")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if len(list((out / "runs").glob("*.json"))) >= 2:
            break
        time.sleep(0.05)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    for p in (out / "runs").glob("*.json"):
        json.loads(p.read_text())  # every stored solve is whole
    done_before = {p.name for p in (out / "runs").glob("*.json")}
    assert done_before
    assert _run(["--quick", "--data-dir", data, "--out", out, "--only",
                 "mnist-ridge,randomization"]) == 0
    assert done_before <= {p.name for p in (out / "runs").glob("*.json")}
    assert _no_tmp_files(out)
    json.loads((out / "results" / "mnist-ridge.json").read_text())


def test_a_stored_point_names_the_machine_it_ran_on(tmp_path):
    from kernelfit.reproduce.rows import row
    from kernelfit.reproduce.runner import Context

    ctx = Context(tmp_path / "out", quick=True, data_dir=tmp_path)
    ctx.store_part("cifar-random-conv", "filters-8", {"test_error": 0.5, "n_test": 10})
    here = ctx.part("cifar-random-conv", "filters-8")
    assert here["machine_short"] == ctx.machine["short"]
    # a point stored on another machine keeps that machine in its row
    ctx.store_part("cifar-random-conv", "filters-16",
                   {"test_error": 0.5, "n_test": 10, "machine_short": "elsewhere, 64 cores"})
    there = ctx.part("cifar-random-conv", "filters-16")
    assert row(ctx, "claim", None, there)["machine"] == "elsewhere, 64 cores"


def test_official_cifar_preferred(tmp_path):
    from kernelfit.reproduce.runner import Context

    ctx = Context(tmp_path / "out", quick=True, data_dir=tmp_path)
    (tmp_path / "cifar10-jpeg").mkdir()
    (tmp_path / "cifar10-jpeg" / "cifar10-jpeg.tar.gz").write_bytes(b"x")
    name, note = ctx.cifar()
    assert name.startswith("imagefolder:") and "LOSSY" in note
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "cifar-10-python.tar.gz").write_bytes(b"x")
    assert ctx.cifar() == ("cifar10", "official CIFAR-10 (cifar-10-python.tar.gz)")


def test_unknown_experiment(capsys):
    assert _run(["--quick", "--only", "nope"]) == 2
    assert "unknown experiment" in capsys.readouterr().err


def test_verdicts():
    from kernelfit.reproduce.rows import verdict

    assert verdict(0.012, 0.0118, n_test=10000, quick=False)[0] == "reproduced"
    assert verdict(0.012, 0.0094, n_test=10000, quick=False)[0] == "better"
    assert verdict(0.006, 0.0094, n_test=10000, quick=False)[0] == "worse"
    v, why = verdict(0.006, 0.0094, n_test=10000, quick=False, exact=False)
    assert "not exact" in why
    assert verdict(0.006, None, n_test=10, quick=False)[0] == "failed"
    assert verdict(0.006, 0.5, n_test=10, quick=True)[0] == "not compared"


def test_conv_kernel_solve_matches_direct():
    from scipy.spatial.distance import cdist

    from kernelfit.reproduce.conv_kernel import (gaussian_in_place, median_from_gram,
                                                 predict_stored, solve_stored)

    rng = np.random.default_rng(1)
    F = rng.standard_normal((700, 30)).astype(np.float32)
    Ft = rng.standard_normal((50, 30)).astype(np.float32)
    sq = np.einsum("ij,ij->i", F, F, dtype=np.float64)
    sqt = np.einsum("ij,ij->i", Ft, Ft, dtype=np.float64)
    G = F @ F.T
    h = median_from_gram(G, sq, seed=0)
    D = cdist(F.astype(np.float64), F.astype(np.float64))
    assert 0.5 * np.median(D) < h < 2 * np.median(D)
    gaussian_in_place(G, sq, sq, h, same=True)
    K = np.exp(-D ** 2 / (2 * h * h))
    np.testing.assert_allclose(G, K, atol=1e-5)
    Y = np.eye(4)[rng.integers(0, 4, 700)]
    sol = solve_stored(G.copy(), Y, block=128)  # several tiles
    assert sol["relative_residual"] <= 1e-8
    stored = G.astype(np.float64)
    assert np.linalg.norm(stored @ sol["alpha"] - Y) / np.linalg.norm(Y) <= 1e-8
    Kc = Ft @ F.T
    gaussian_in_place(Kc, sqt, sq, h)
    direct = np.exp(-cdist(Ft.astype(np.float64), F.astype(np.float64), "sqeuclidean")
                    / (2 * h * h)) @ sol["alpha"]
    np.testing.assert_allclose(predict_stored(Kc, sol["alpha"]), direct,
                               atol=1e-4 * np.abs(direct).max())


def test_tiled_cholesky_keeps_the_kernel_and_refuses_singular():
    """The solvers' Cholesky on view tiles: L in the upper triangle, K kept below it."""
    from kernelfit.errors import NotPositiveDefiniteError
    from kernelfit.reproduce.conv_kernel import gram_tiles, solve_stored
    from kernelfit.solvers.cholesky import cholesky_inplace
    from kernelfit.solvers.products import stored_kernel_matvec

    rng = np.random.default_rng(2)
    A = rng.standard_normal((150, 200))
    K = (A @ A.T / 200 + 0.05 * np.eye(150)).astype(np.float32)
    F = K.copy()
    T = gram_tiles(F, block=40)
    assert all(np.shares_memory(t, F) for row in T.tiles for t in row)  # views, no copy
    V = rng.standard_normal((150, 3))
    np.testing.assert_allclose(stored_kernel_matvec(T, V), K.astype(np.float64) @ V,
                               rtol=1e-12, atol=1e-12)
    cholesky_inplace(T)
    L = np.triu(F).T.astype(np.float64)
    np.testing.assert_allclose(L @ L.T, K, atol=1e-5)
    assert np.array_equal(np.tril(F, -1), np.tril(K, -1))
    # the kept kernel still gives exact float64 products after the factorization
    np.testing.assert_allclose(stored_kernel_matvec(T, V), K.astype(np.float64) @ V,
                               rtol=1e-12, atol=1e-12)
    B = rng.standard_normal((150, 5))
    with pytest.raises(NotPositiveDefiniteError, match="float32 Cholesky") as info:
        solve_stored((B @ B.T - np.eye(150)).astype(np.float32), np.ones((150, 1)), block=40)
    assert info.value.index >= 0


def _spy_gram_starts(monkeypatch) -> list:
    """The filter count each accumulate_gram call starts from (None: from scratch)."""
    import kernelfit.features.random_conv_gram as rc_mod

    real_acc = rc_mod.accumulate_gram
    starts = []

    def acc(*a, **k):
        starts.append(None if k.get("start_from") is None else k["start_from"]["n_done"])
        return real_acc(*a, **k)

    monkeypatch.setattr(rc_mod, "accumulate_gram", acc)
    return starts


def test_random_conv_curve_resumes_from_its_saved_point(tmp_path, monkeypatch):
    data = _fake_data(tmp_path, monkeypatch, mnist=False)
    out = tmp_path / "out"
    import kernelfit.reproduce.conv_run as conv_run

    real_solve = conv_run._solve_point
    calls = []

    def dying(ctx, st, *a, **k):
        calls.append(int(st["n_done"]))
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed after the 16-filter point was saved
        return real_solve(ctx, st, *a, **k)

    monkeypatch.setattr(conv_run, "_solve_point", dying)
    from kernelfit.reproduce import run_reproduce

    with pytest.raises(KeyboardInterrupt):
        run_reproduce(["cifar-random-conv"], quick=True, data_dir=data, out_dir=out,
                      progress=False)
    parts = out / "parts" / "cifar-random-conv"
    assert sorted(p.name for p in parts.glob("*.json")) == ["filters-8.json"]
    saved = sorted(p.name for p in (out / "work" / "cifar-random-conv").iterdir())
    assert saved == ["gram-000016"]  # the older resume point was removed
    (out / "work" / "cifar-random-conv" / ".tmp-gram-000032-1").mkdir()  # killed mid-write
    starts = _spy_gram_starts(monkeypatch)
    monkeypatch.setattr(conv_run, "_solve_point", real_solve)
    report = run_reproduce(["cifar-random-conv"], quick=True, data_dir=data, out_dir=out,
                           progress=False)
    assert report["experiments"]["cifar-random-conv"]["status"] == "done"
    assert starts == [16]  # resumed from the saved 16-filter Gram, not from 0
    assert sorted(p.name for p in parts.glob("*.json")) == [
        "filters-16.json", "filters-32.json", "filters-8.json"]
    assert not (out / "work" / "cifar-random-conv").exists()
    assert _no_tmp_files(out)
    part = json.loads((parts / "filters-32.json").read_text())
    assert part["bandwidth_rule"] == "0.75 x median (kernelfit.kernel_defaults)"


def test_random_conv_points_made_with_other_features_are_made_again(tmp_path, monkeypatch):
    data = _fake_data(tmp_path, monkeypatch, mnist=False)
    out = tmp_path / "out"
    import kernelfit.reproduce.conv_run as conv_run
    from kernelfit.reproduce import run_reproduce

    run_reproduce(["cifar-random-conv"], quick=True, data_dir=data, out_dir=out,
                  progress=False, max_filters=12)
    parts = out / "parts" / "cifar-random-conv"
    first = json.loads((parts / "filters-8.json").read_text())
    assert first["feature_params"]["threshold"] == 1.0  # the map's default
    assert first["features_dim"] == 8 * 2 * first["feature_params"]["pool"] ** 2
    meta = out / "work" / "cifar-random-conv" / "gram-000012" / "meta.json"
    assert json.loads(meta.read_text())["feature_params"] == first["feature_params"]
    # a kernelfit whose feature defaults differ: neither the points nor the resume point fit
    real = conv_run.feature_params
    monkeypatch.setattr(conv_run, "feature_params", lambda f: dict(real(f), threshold=0.25))
    starts = _spy_gram_starts(monkeypatch)
    full = run_reproduce(["cifar-random-conv"], quick=True, data_dir=data, out_dir=out,
                         progress=False)
    assert full["experiments"]["cifar-random-conv"]["status"] == "done"
    assert starts == [None]  # started over, not from the 12-filter Gram
    again = json.loads((parts / "filters-8.json").read_text())
    assert again["feature_params"]["threshold"] == 0.25
    # points stored before the parameters were recorded: the defaults of then (31cae27)
    from kernelfit.features import RandomConvFeatures

    then = {"dtype": "float32", "filter_init": "zca", "image_shape": [32, 32, 3],
            "n_patches": 20000, "patch_norm": None, "patch_size": 6, "pool": 2, "seed": 0,
            "threshold": 0.5, "zca_eps": 0.1}
    # today's maps also record ``power`` (added later; 1 reproduces the points without it)
    now = dict(then, power=1.0)
    assert conv_run._made_with({}, now) and conv_run._made_with({"feature_params": then}, now)
    assert not conv_run._made_with({}, real(RandomConvFeatures()))  # today's: normalized
    assert not conv_run._made_with({}, dict(now, threshold=0.25))
    assert not conv_run._made_with({"feature_params": then}, dict(now, power=0.5))
    assert not conv_run._made_with(None, now)


def test_max_filters_cuts_the_curve_and_a_full_run_continues_it(tmp_path, monkeypatch):
    data = _fake_data(tmp_path, monkeypatch, mnist=False)
    out = tmp_path / "out"
    from kernelfit.reproduce import run_reproduce

    starts = _spy_gram_starts(monkeypatch)
    cut = run_reproduce(["cifar-random-conv"], quick=True, data_dir=data, out_dir=out,
                        progress=False, max_filters=12)
    assert cut["experiments"]["cifar-random-conv"]["status"] == "done"
    curve = cut["experiments"]["cifar-random-conv"]["details"]["curve"]
    assert [c["n_filters"] for c in curve] == [8, 12]  # the quick curve is 8, 16, 32
    parts = out / "parts" / "cifar-random-conv"
    assert sorted(p.name for p in parts.glob("*.json")) == ["filters-12.json", "filters-8.json"]
    kept = sorted(p.name for p in (out / "work" / "cifar-random-conv").iterdir())
    assert kept == ["gram-000012"]  # the resume point stays for the full curve
    stored = json.loads((out / "results" / "cifar-random-conv.json").read_text())
    assert stored["scope"] == {"max_filters": 12}
    assert any("curve cut at 12" in r["claim"] for r in stored["rows"])
    # a report under no limit shows the cut result as partial, with its rows
    from kernelfit.reproduce.report import write_report
    from kernelfit.reproduce.runner import Context, _machine_line

    rep = write_report(Context(out, quick=True, data_dir=data), {}, _machine_line())
    assert rep["experiments"]["cifar-random-conv"]["status"] == "partial"
    assert "max_filters = 12" in rep["experiments"]["cifar-random-conv"]["message"]
    assert rep["rows"]
    # the same limit again: kept; no limit: the curve continues from the 12-filter point
    again = run_reproduce(["cifar-random-conv"], quick=True, data_dir=data, out_dir=out,
                          progress=False, max_filters=12)
    assert again["experiments"]["cifar-random-conv"]["status"] == "stored"
    full = run_reproduce(["cifar-random-conv"], quick=True, data_dir=data, out_dir=out,
                         progress=False)
    assert full["experiments"]["cifar-random-conv"]["status"] == "done"
    assert starts == [None, 12]
    curve = full["experiments"]["cifar-random-conv"]["details"]["curve"]
    assert [c["n_filters"] for c in curve] == [8, 16, 32]
    assert not (out / "work" / "cifar-random-conv").exists()
    # the full curve covers any cut: kept as it is
    for cap in (12, 32, 100):
        kept_full = run_reproduce(["cifar-random-conv"], quick=True, data_dir=data,
                                  out_dir=out, progress=False, max_filters=cap)
        assert kept_full["experiments"]["cifar-random-conv"]["status"] == "stored"
    stored = json.loads((out / "results" / "cifar-random-conv.json").read_text())
    assert stored["scope"] == {} and starts == [None, 12]



def test_max_filters_beyond_the_curve_is_no_cut(tmp_path, monkeypatch):
    data = _fake_data(tmp_path, monkeypatch, mnist=False)
    out = tmp_path / "out"
    from kernelfit.reproduce import run_reproduce

    rep = run_reproduce(["cifar-random-conv"], quick=True, data_dir=data, out_dir=out,
                        progress=False, max_filters=1000)  # the quick curve ends at 32
    assert rep["experiments"]["cifar-random-conv"]["status"] == "done"
    stored = json.loads((out / "results" / "cifar-random-conv.json").read_text())
    assert stored["scope"] == {}
    assert not (out / "work" / "cifar-random-conv").exists()
    again = run_reproduce(["cifar-random-conv"], quick=True, data_dir=data, out_dir=out,
                          progress=False)
    assert again["experiments"]["cifar-random-conv"]["status"] == "stored"


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8000"])
def test_max_filters_must_be_a_positive_whole_number(tmp_path, bad):
    from kernelfit.errors import InputError
    from kernelfit.reproduce.runner import Context

    with pytest.raises(InputError, match="max_filters"):
        Context(tmp_path, quick=True, max_filters=bad)


def test_cli_max_filters_rejects_zero_in_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["reproduce", "--max-filters", "0", "--quick"])
    assert exc.value.code == 2
    assert "--max-filters" in capsys.readouterr().err


def _randomization_verdict(records, quick=False):
    """The randomization experiment's row for given records (a fake context)."""
    from types import SimpleNamespace

    from kernelfit.reproduce.experiments import run_randomization_exp

    result = {"records": records, "n_train": 200, "n_test": 100, "seconds": 1.0,
              "summary": [], "all_train_errors_zero": True}
    ctx = SimpleNamespace(quick=quick, data_dir=None, progress=False,
                          plan=lambda *a: None, randomize=lambda cfg, levels: result)
    return run_randomization_exp(ctx)["rows"][0]


def test_randomization_verdict_uses_each_solves_exact_flag():
    def rec(level, exact, residual):
        r = {"status": "ok", "mode": "labels", "level": level, "repeat": 0,
             "train_error": 0.0, "test_error": 0.9 if level == 1.0 else 0.1,
             "relative_residual": residual, "exact": exact}
        if not exact:
            r["inexact_reason"] = "float64 relative residual 2.0e-07 > 1e-08: K is too ill"
        return r

    row = _randomization_verdict([rec(0.0, True, 1e-12), rec(1.0, True, 1e-11)])
    assert row["verdict"] == "reproduced" and row["exact"] is True
    # one solve not exact: the claim (exact fits at every level) is not met, and said why
    row = _randomization_verdict([rec(0.0, True, 1e-12), rec(1.0, False, 2e-7)])
    assert row["verdict"] == "worse" and row["exact"] is False
    assert "1 of 2 solves not exact" in row["reason"] and "labels level 1" in row["reason"]
    row = _randomization_verdict([rec(0.0, True, 1e-12), rec(1.0, False, 2e-7)], quick=True)
    assert row["verdict"] == "not compared" and "not exact" in row["reason"]
    assert row["exact"] is False
    # a solve that failed is no exact fit either, quick or not
    gone = {"status": "failed", "mode": "random-pixels", "level": 0.5, "repeat": 0,
            "error": "MemoryPlanError: not enough memory"}
    for quick in (False, True):
        row = _randomization_verdict([rec(0.0, True, 1e-12), rec(1.0, True, 1e-11), gone],
                                     quick=quick)
        assert row["verdict"] == "failed" and row["exact"] is False
        assert "1 of 3 solves failed (the first: random-pixels level 0.5: MemoryPlanError"\
            in row["reason"]


def test_random_conv_memory_check_is_the_planners(monkeypatch):
    """The Gram solve's bytes come from the solvers' planner, checked with its headroom."""
    import types

    import kernelfit.reproduce.adapter as adapter
    from kernelfit.errors import MemoryPlanError
    from kernelfit.memory import SAFETY
    from kernelfit.reproduce.conv_run import conv_memory_plan, run_conv_curve
    from kernelfit.solvers.plan import plan_gram_solve

    n, m = 3000, 500
    plan = conv_memory_plan(n, m)
    gram = plan_gram_solve(n, 10, 2048, n_test=m)
    assert all(plan.items[k] == v for k, v in gram.items.items())
    assert plan.items["K and its factor (n x n float32)"] == 4 * n * n
    # enough for the bytes, not for the headroom: refused before any data is read
    monkeypatch.setattr(adapter, "available_memory", lambda device="cpu": plan.total + 1)
    assert not conv_memory_plan(n, m, plan.total + 1).fits()
    ctx = types.SimpleNamespace(cifar=lambda: ("cifar10", None))
    with pytest.raises(MemoryPlanError, match="headroom") as info:
        run_conv_curve(ctx, (n, m), (8,))
    assert info.value.required_bytes == plan.total
    assert conv_memory_plan(n, m, int(plan.total / SAFETY) + 2).fits()


def test_random_conv_refuses_when_the_resume_points_do_not_fit_on_disk(tmp_path,
                                                                     monkeypatch):
    """Too little disk for the resume points: one clear refusal naming both figures."""
    import collections
    import types

    import kernelfit.reproduce.adapter as adapter
    import kernelfit.reproduce.conv_run as conv_run
    from kernelfit.errors import MemoryPlanError

    monkeypatch.setattr(adapter, "available_memory", lambda device="cpu": 1 << 40)
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(conv_run.shutil, "disk_usage", lambda p: usage(1 << 30, 0, 1 << 20))
    ctx = types.SimpleNamespace(cifar=lambda: ("cifar10", None),
                                work_dir=lambda name: tmp_path)
    with pytest.raises(MemoryPlanError, match="of disk under .* free") as info:
        conv_run.run_conv_curve(ctx, (3000, 500), (8,))
    assert info.value.available_bytes == 1 << 20
    assert info.value.required_bytes == 2 * (4 * 3000 * 3000 + 4 * 500 * 3000)


def test_results_made_under_other_defaults_are_run_again(tmp_path, monkeypatch):
    """A stored mnist-gabor result (and its solve) made with other Gabor defaults is not
    kept: the result carries the defaults' digest, the solve's key spells out the map's
    parameters. Raw solves, whose specs did not change, are reused."""
    data = _fake_data(tmp_path, monkeypatch, cifar=False)
    out = tmp_path / "out"
    import kernelfit.reproduce.adapter as adapter
    from kernelfit.features.gabor import GaborFeatures
    from kernelfit.reproduce import run_reproduce

    real = adapter.solve
    calls = []
    monkeypatch.setattr(adapter, "solve", lambda spec: calls.append(spec) or real(spec))
    run_reproduce(["mnist-raw", "mnist-gabor"], quick=True, data_dir=data, out_dir=out,
                  progress=False)
    assert len(calls) == 3
    # same defaults: everything kept, nothing solved
    calls.clear()
    rep = run_reproduce(["mnist-raw", "mnist-gabor"], quick=True, data_dir=data,
                        out_dir=out, progress=False)
    assert calls == [] and rep["experiments"]["mnist-gabor"]["status"] == "stored"
    # a new default pool for the Gabor map: the Gabor result is stale in the report...
    init = GaborFeatures.__init__
    if init.__kwdefaults__ and "pool" in init.__kwdefaults__:
        monkeypatch.setattr(init, "__kwdefaults__", {**init.__kwdefaults__, "pool": 4})
    else:
        names = init.__code__.co_varnames[1:init.__code__.co_argcount]
        defaults = list(init.__defaults__)
        defaults[list(names[-len(defaults):]).index("pool")] = 4
        monkeypatch.setattr(init, "__defaults__", tuple(defaults))
    from kernelfit.reproduce.report import write_report
    from kernelfit.reproduce.runner import Context, _machine_line

    stale = write_report(Context(out, quick=True, data_dir=data, progress=False), {},
                         _machine_line())
    assert stale["experiments"]["mnist-gabor"]["status"] == "stale"
    assert not any("Gabor" in r["claim"] for r in stale["rows"])
    # ...and the next run solves it again (with pool 4), keeping the raw solves
    rep = run_reproduce(["mnist-raw", "mnist-gabor"], quick=True, data_dir=data,
                        out_dir=out, progress=False)
    assert [s["features"] for s in calls] == ["gabor"]
    assert calls[0]["feature_params"]["pool"] == 4
    assert rep["experiments"]["mnist-gabor"]["status"] == "done"


def test_rows_name_the_machine_their_solve_ran_on(tmp_path, monkeypatch):
    """A row built from a solve stored earlier (maybe on another machine) names that
    solve's machine, not the one assembling the report."""
    data = _fake_data(tmp_path, monkeypatch, cifar=False)
    out = tmp_path / "out"
    from kernelfit.reproduce import run_reproduce

    rep = run_reproduce(["mnist-raw"], quick=True, data_dir=data, out_dir=out, progress=False)
    here = rep["rows"][0]["machine"]
    assert here and all(r["machine"] == here for r in rep["rows"])
    for f in (out / "runs").glob("*.json"):
        rec = json.loads(f.read_text())
        assert rec["machine_short"] == here
        f.write_text(json.dumps(dict(rec, machine_short="Other CPU, 64 cores")))
    (out / "results" / "mnist-raw.json").unlink()
    rep = run_reproduce(["mnist-raw"], quick=True, data_dir=data, out_dir=out, progress=False)
    assert {r["machine"] for r in rep["rows"]} == {"Other CPU, 64 cores"}


def test_log_axis_plots_label_their_points(tmp_path, monkeypatch):
    """A log-x line plot labels the data points (8,000 not 8 x 10^3; 0 drawn a decade
    below the smallest x and labelled 0), with no minor-tick labels to overlap them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from kernelfit.reproduce import report as rep

    seen = {}
    real_close = plt.close

    def keep(fig=None):
        ax = fig.axes[0]
        seen["labels"] = [t.get_text() for t in ax.get_xticklabels()]
        seen["ticks"] = list(ax.get_xticks())
        seen["minor"] = [t.get_text() for t in ax.get_xticklabels(minor=True)]
        return real_close(fig)

    monkeypatch.setattr(plt, "close", keep)
    rep.save_line_plot(tmp_path / "a.png", {"e": ([0, 256, 8000], [0.3, 0.29, 0.25])},
                       xlabel="x", ylabel="y", title="t", xlog=True)
    assert seen["labels"] == ["0", "256", "8,000"]
    assert seen["ticks"] == [25.6, 256, 8000]
    assert not any(seen["minor"])
    assert (tmp_path / "a.png").stat().st_size > 0


def test_a_point_with_another_pooling_is_solved_like_a_curve_point(tmp_path, monkeypatch):
    """run_conv_point (benchmarks/bench_random_conv_point.py): the map's parameters reach
    the features (3x3 pooling: 18 per filter), the solve is exact, nothing is stored."""
    from kernelfit.datasets import resolve_data_dir
    from kernelfit.reproduce.conv_run import run_conv_point
    from kernelfit.reproduce.runner import locate_cifar

    data = _fake_data(tmp_path, monkeypatch, mnist=False)
    rec = run_conv_point(locate_cifar(resolve_data_dir(data)), data, (150, 60), 16,
                         map_params={"pool": 3}, progress=False)
    assert rec["feature_params"]["pool"] == 3 and rec["features_dim"] == 18 * 16
    assert rec["n_train"] == 150 and rec["n_test"] == 60 and rec["n_filters"] == 16
    assert rec["relative_residual"] <= 1e-8 and rec["exact"]
    assert 0.0 <= rec["test_error"] <= 1.0 and set(rec["stages"]) == {"conv", "gram"}
    # no report, part or resume point anywhere (the dataset's decoded cache is the data's)
    assert not [p for p in tmp_path.rglob("*") if "imagefolder" not in p.parts
                and (p.name in ("results", "parts", "work") or p.name.startswith("gram-")
                     or p.suffix == ".npy")]


def test_device_gpu_without_a_gpu_is_refused_before_any_work(tmp_path, capsys):
    """One line with the reason and the way out; exit code 2; nothing written."""
    from kernelfit.backend import gpu_available

    if gpu_available():
        pytest.skip("a GPU is usable here")
    out = tmp_path / "rq"
    code = _run(["--quick", "--only", "cifar-random-conv", "--device", "gpu", "--out", out])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "GPU" in err[0] and "pip install" in err[0], err
    assert not out.exists()


def test_device_is_not_part_of_a_stored_solve(tmp_path):
    """A solve stored by a CPU run is reused by a GPU run of the same spec."""
    from kernelfit.reproduce.runner import Context

    ctx = Context(tmp_path, quick=True)
    spec = {"dataset": "digits", "n_train": 100, "n_test": 50}
    assert ctx.spec_key(spec) == ctx.spec_key(dict(spec, device="gpu"))


def test_random_conv_feature_chunk_grows_with_free_memory(monkeypatch):
    """The chunk of features takes what the free memory leaves beyond the plan (headroom
    kept), between the planned minimum and the maximum; a plan that does not fit is
    refused whatever the chunk."""
    import kernelfit.reproduce.adapter as adapter
    from kernelfit.errors import MemoryPlanError
    from kernelfit.memory import SAFETY
    from kernelfit.reproduce import conv_run

    n, m = 20000, 5000
    base = conv_run.conv_memory_plan(n, m).total  # with the minimum chunk
    lo, hi = conv_run._CHUNK_MIN, conv_run._CHUNK_MAX
    for spare, want in ((0, lo), (512 << 20, lo + (512 << 20)), (64 << 30, hi)):
        free = int((base + spare) / SAFETY) + 1
        monkeypatch.setattr(adapter, "available_memory", lambda device="cpu", f=free: f)
        got = conv_run._refuse_unless_fits(n, m, "x", "y")
        assert abs(got - want) <= 1, (spare, got, want)
    monkeypatch.setattr(adapter, "available_memory", lambda device="cpu": base // 2)
    with pytest.raises(MemoryPlanError):
        conv_run._refuse_unless_fits(n, m, "x", "y")


@pytest.mark.parametrize("stored_quick", [False, True])
def test_a_folder_holds_one_size_of_run(tmp_path, monkeypatch, capsys, stored_quick):
    """Quick and full-scale runs share file names (and the random-conv curve's resume
    points): a run into a folder holding the other size's results is refused, exit 2,
    before anything is written."""
    data = _fake_data(tmp_path, monkeypatch, cifar=False)
    out = tmp_path / "out"
    (out / "results").mkdir(parents=True)
    stored = {"name": "mnist-raw", "quick": stored_quick, "rows": []}
    (out / "results" / "mnist-raw.json").write_text(json.dumps(stored))
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    args = ["--data-dir", data, "--out", out, "--only", "mnist-raw"]
    assert _run(args if stored_quick else ["--quick"] + args) == 2
    err = capsys.readouterr().err
    assert ("full-scale results" if not stored_quick else "quick-run results") in err
    assert "folder of its own" in err and err.count("\n") == 1
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert json.loads((out / "results" / "mnist-raw.json").read_text()) == stored


def test_another_commands_report_is_refused_and_ours_names_itself(tmp_path, monkeypatch,
                                                                 capsys):
    data = _fake_data(tmp_path, monkeypatch, cifar=False)
    out = tmp_path / "v"
    out.mkdir()
    (out / "report.json").write_text(json.dumps({"command": "verify", "checks": []}))
    assert _run(["--quick", "--data-dir", data, "--out", out, "--only", "mnist-raw"]) == 2
    assert "not kernelfit reproduce's" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["report.json"]
    mine = tmp_path / "r"
    assert _run(["--quick", "--data-dir", data, "--out", mine, "--only", "mnist-raw"]) == 0
    report = json.loads((mine / "report.json").read_text())
    assert report["command"] == "reproduce" and report["seed"] == 0 and report["quick"]
    assert "seed 0" in (mine / "report.md").read_text()


def test_a_result_with_failed_solves_is_not_stored_and_runs_again(tmp_path, monkeypatch,
                                                                   capsys):
    """A randomization run with a failed solve is no result: exit 1, nothing stored, and
    the next run makes it again (it had been kept as finished, exit 1 ever after)."""
    from kernelfit.reproduce.runner import Context

    data = _fake_data(tmp_path, monkeypatch, cifar=False)
    out = tmp_path / "out"
    real = Context.randomize
    calls = []

    def once_failing(self, cfg, levels):
        result = real(self, cfg, levels)
        calls.append(1)
        if len(calls) == 1:
            result["records"][0].update(status="failed", error="MemoryPlanError: no room")
        return result

    monkeypatch.setattr(Context, "randomize", once_failing)
    args = ["--quick", "--data-dir", data, "--out", out, "--only", "randomization"]
    assert _run(args) == 1
    assert "randomization      failed: " in capsys.readouterr().out
    assert not (out / "results" / "randomization.json").exists()
    assert _run(args) == 0 and len(calls) == 2
    assert (out / "results" / "randomization.json").is_file()


def test_a_stored_result_with_a_failed_row_is_made_again(tmp_path, monkeypatch, capsys):
    """A result stored (by an earlier version) with a failed row is not 'finished': the
    next run makes it again instead of keeping it (and exiting 0 over it)."""
    data = _fake_data(tmp_path, monkeypatch, cifar=False)
    out = tmp_path / "out"
    args = ["--quick", "--data-dir", data, "--out", out, "--only", "mnist-raw"]
    assert _run(args) == 0
    path = out / "results" / "mnist-raw.json"
    res = json.loads(path.read_text())
    res["rows"][0]["verdict"] = "failed"
    path.write_text(json.dumps(res))
    capsys.readouterr()
    assert _run(args) == 0
    assert "stored: finished earlier; kept" not in capsys.readouterr().out
    assert all(r["verdict"] != "failed" for r in json.loads(path.read_text())["rows"])
