"""`kernelfit solve` and `kernelfit predict` end to end, and every foreseeable mistake."""

import json
import subprocess
import sys

import numpy as np
import pytest

from kernelfit.cli import main

REQUIRED = {"dataset", "features", "kernel", "n_train", "n_test", "dtype", "device", "seed",
            "train_error", "test_error", "relative_residual", "rkhs_norm", "timings",
            "peak_memory_bytes"}


def _json(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def test_solve_digits_json(capsys):
    rec = _json(capsys, ["solve", "--dataset", "digits", "--bandwidth", "2", "--json"])
    assert REQUIRED <= set(rec)
    assert rec["train_error"] == 0.0
    assert rec["test_error"] < 0.05
    assert rec["relative_residual"] < 1e-10
    assert {"load", "features", "gram", "factor", "solve", "predict", "total"} <= set(rec["timings"])
    assert rec["peak_memory_bytes"] > 0 and rec["seed"] == 0 and rec["device"] == "cpu"
    # the times come with the machine that made them: CPU, cores, BLAS and its kernel
    machine = rec["machine"]
    assert machine["cpu"]["model"] and machine["cpu"]["usable"] >= 1
    assert machine["memory"]["total_bytes"] > 0 and "versions" in machine
    assert "blas" in machine and "blas_loaded" in machine


def test_solve_record_says_how_k_was_kept(tmp_path, capsys, keep_values):
    # 8-bit pixels scaled to [0, 1]: where memory holds every tile's float64 values the
    # refinement keeps those; else K as exact squared distances
    rng = np.random.default_rng(4)
    X = rng.integers(0, 256, (500, 12)) / 255.0
    y = rng.integers(0, 3, 500)
    np.savez(tmp_path / "d.npz", X_train=X[:450], y_train=y[:450], X_test=X[450:],
             y_test=y[450:])
    args = ["solve", "--dataset", f"npz:{tmp_path / 'd.npz'}", "--bandwidth", "0.8",
            "--precision", "mixed", "--tile-size", "100", "--json"]
    rec = _json(capsys, args)
    sizes = [min(100, rec["n_train"] - s) for s in range(0, rec["n_train"], 100)]
    assert rec["kept_storage"] == "float64" and not rec["kept_diagonal_in_tiles"]
    assert rec["kept_bytes"] == 8 * sum(a * b for i, a in enumerate(sizes)
                                        for b in sizes[:i + 1])
    assert rec["relative_residual"] < 1e-10
    keep_values(False)
    rec = _json(capsys, args)
    assert rec["kept_storage"] == "uint32"
    assert rec["kept_tiles"] == rec["n_tiles_lower"] == len(sizes) * (len(sizes) + 1) // 2
    # all lower tiles, 4 bytes an entry (half of float64's); the diagonal ones in the
    # float32 tiles' own free triangles, no bytes
    assert rec["kept_diagonal_in_tiles"]
    assert rec["kept_bytes"] == 4 * sum(a * b for i, a in enumerate(sizes) for b in sizes[:i])
    assert rec["relative_residual"] < 1e-10


def test_solve_table_output(capsys):
    assert main(["solve", "--dataset", "digits", "--n-train", "300", "--n-test", "100",
                 "--kernel", "normalized", "--degree", "4"]) == 0
    out = capsys.readouterr().out
    assert "test error" in out and "relative residual" in out and "time per stage" in out
    assert "precision                float64" in out  # 300 points: auto keeps float64
    assert main(["solve", "--dataset", "digits", "--n-train", "300", "--n-test", "100",
                 "--bandwidth", "5", "--precision", "mixed", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "mixed (float32 factor, " in out and "float64 products with K)" in out
    from kernelfit.cli.solve import _precision

    fell_back = {"precision": "float64", "dtype": "float64", "precision_fallback": {"r": 1}}
    assert _precision(fell_back).startswith("float64 (fell back from mixed precision")
    ruled_out = {"precision": "float64", "dtype": "float64",
                 "conditioning_probe": {"verdict": "float64", "passes_predicted": None}}
    assert _precision(ruled_out).startswith("float64 (a sample of K ruled mixed precision out")
    probed = {"precision": "mixed", "dtype": "float64", "refinement_history": [1e-5, 1e-13],
              "conditioning_probe": {"verdict": "mixed", "passes_predicted": 3}}
    assert _precision(probed) == ("mixed (float32 factor, 1 refinement step; 3 expected, 2 "
                                  "float64 products with K)")


def test_save_and_predict_roundtrip(tmp_path, capsys):
    model = tmp_path / "m.pkl"
    rec = _json(capsys, ["solve", "--dataset", "digits", "--n-train", "400", "--bandwidth", "2",
                         "--save", str(model), "--json"])
    assert model.is_file()
    pred = _json(capsys, ["predict", "--model", str(model), "--json"])
    assert abs(pred["test_error"] - rec["test_error"]) < 1e-12
    # predict on a user array, labels written atomically
    X = np.random.default_rng(0).random((5, 64))
    np.save(tmp_path / "x.npy", X)
    _json(capsys, ["predict", "--model", str(model), "--input", str(tmp_path / "x.npy"),
                   "--output", str(tmp_path / "p.npy"), "--json"])
    assert np.load(tmp_path / "p.npy").shape == (5,)
    # without --output: the first predictions shown, and how to save them all
    shown = _json(capsys, ["predict", "--model", str(model), "--input", str(tmp_path / "x.npy"),
                           "--json"])
    assert shown["first_predictions"] == np.load(tmp_path / "p.npy").tolist()
    assert "--output" in shown["note"] and "output" not in shown


def test_user_arrays_npz(tmp_path, capsys):
    rng = np.random.default_rng(1)
    X = rng.random((120, 5))
    y = (X[:, 0] > 0.5).astype(int)
    np.savez(tmp_path / "d.npz", X_train=X[:100], y_train=y[:100], X_test=X[100:], y_test=y[100:])
    rec = _json(capsys, ["solve", "--dataset", f"npz:{tmp_path / 'd.npz'}", "--bandwidth", "0.5",
                         "--json"])
    assert rec["n_train"] == 100 and rec["train_error"] == 0.0


def test_predict_finds_an_npz_models_data_from_another_folder(tmp_path, capsys,
                                                               monkeypatch):
    # saved with a relative npz:PATH in one folder, predicted from another
    rng = np.random.default_rng(2)
    X = rng.random((90, 4))
    y = (X[:, 0] > 0.5).astype(int)
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    (home / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    np.savez(home / "sub" / "d.npz", X_train=X[:70], y_train=y[:70], X_test=X[70:],
             y_test=y[70:])
    # a decoy with the same name in the other folder must not be used
    np.savez(elsewhere / "d.npz", X_train=X[:70], y_train=1 - y[:70], X_test=X[70:],
             y_test=1 - y[70:])
    monkeypatch.chdir(home)
    rec = _json(capsys, ["solve", "--dataset", "npz:sub/d.npz", "--bandwidth", "0.5",
                         "--save", "m.pkl", "--json"])
    assert rec["dataset"] == "npz:d.npz"  # the name as shown
    monkeypatch.chdir(elsewhere)
    pred = _json(capsys, ["predict", "--model", str(home / "m.pkl"), "--json"])
    assert pred["dataset_path"] == str((home / "sub" / "d.npz").resolve())
    assert pred["test_error"] == pytest.approx(rec["test_error"]) and pred["n"] == 20
    # the file is gone: one error naming its path and how to pass the data
    (home / "sub" / "d.npz").rename(home / "sub" / "moved.npz")
    err = _bad(capsys, ["predict", "--model", str(home / "m.pkl")], code=2)
    assert str((home / "sub" / "d.npz").resolve()) in err and "no longer exists" in err
    assert "--dataset npz:PATH" in err and "--input FILE" in err
    assert len(err.strip().splitlines()) == 1
    pred = _json(capsys, ["predict", "--model", str(home / "m.pkl"), "--dataset",
                          f"npz:{home / 'sub' / 'moved.npz'}", "--json"])
    assert pred["test_error"] == pytest.approx(rec["test_error"])
    # a model saved before the path was stored: its relative name, not found, said so
    from kernelfit.modelfile import load_model, save_model

    payload = load_model(home / "m.pkl")
    del payload["meta"]["dataset_path"]
    save_model(home / "old.pkl", payload["estimator"], feature_map=payload["feature_map"],
               meta=payload["meta"])
    (elsewhere / "d.npz").unlink()
    err = _bad(capsys, ["predict", "--model", str(home / "old.pkl")], code=2)
    assert "relative to the folder" in err and "--input FILE" in err


def _bad(capsys, argv, code=None, match=None):
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc != 0
    if code is not None:
        assert rc == code
    assert "Traceback" not in err
    if match:
        assert match in err, err
    return err


@pytest.mark.parametrize("argv,match", [
    (["solve", "--dataset", "nope"], "unknown dataset"),
    (["solve", "--dataset", "digits", "--n-train", "5000"], "--n-train 5000 is more"),
    (["solve", "--dataset", "digits", "--kernel", "linear"], "not numerically positive definite"),
    (["solve", "--dataset", "digits", "--save", "/nonexistent-dir/m.pkl"], "does not exist"),
    (["predict", "--model", "/nonexistent/model.pkl"], "does not exist"),
])
def test_bad_input_messages(capsys, argv, match):
    _bad(capsys, argv, match=match)


@pytest.mark.parametrize("argv", [
    ["solve", "--kernel", "bogus"], ["solve", "--bandwidth", "-1"], ["solve", "--bandwidth", "x"],
    ["solve", "--n-train", "0"], ["solve", "--dtype", "float16"], ["solve", "--ridge", "nan"],
    ["solve", "--solver", "qr"], ["solve", "--device", "tpu"],
])
def test_bad_option_values_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as ex:
        main(argv)
    assert ex.value.code == 2
    assert "error" in capsys.readouterr().err


def test_memory_refusal_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KERNELFIT_MEMORY_LIMIT", "1000000")
    model = tmp_path / "m.pkl"
    err = _bad(capsys, ["solve", "--dataset", "digits", "--save", str(model)], code=4,
               match="Ways out")
    assert list(tmp_path.iterdir()) == []
    # float32 would not fit either (the tile buffers are float64), so it is not offered;
    # the --n-train offered does fit
    assert "--dtype float32" not in err
    import re

    n_max = re.search(r"--n-train (\d+) or less", err).group(1)
    assert main(["solve", "--dataset", "digits", "--n-train", n_max, "--json"]) == 0


def test_nan_in_user_array(tmp_path, capsys):
    X = np.ones((4, 2))
    X[1, 1] = np.nan
    np.savez(tmp_path / "d.npz", X_train=X, y_train=np.arange(4))
    _bad(capsys, ["solve", "--dataset", f"npz:{tmp_path / 'd.npz'}"], match="NaN")


def test_shape_mismatch_in_user_array(tmp_path, capsys):
    np.savez(tmp_path / "d.npz", X_train=np.eye(4), y_train=np.arange(3))
    _bad(capsys, ["solve", "--dataset", f"npz:{tmp_path / 'd.npz'}"], match="labels")


def test_zero_rows_with_normalized_kernel(tmp_path, capsys):
    X = np.eye(4)
    X[2] = 0
    np.savez(tmp_path / "d.npz", X_train=X, y_train=np.arange(4))
    _bad(capsys, ["solve", "--dataset", f"npz:{tmp_path / 'd.npz'}", "--kernel", "normalized"],
         match="all zeros")


def test_corrupt_model_file(tmp_path, capsys):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"not a pickle at all")
    _bad(capsys, ["predict", "--model", str(bad)], match="cannot be read as a kernelfit model")


def test_console_script_and_module_entry_points():
    r = subprocess.run([sys.executable, "-m", "kernelfit", "--version"], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "kernelfit" in r.stdout
    r = subprocess.run([sys.executable, "-m", "kernelfit", "solve", "--dataset", "nope"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" not in r.stderr and "unknown dataset" in r.stderr


@pytest.mark.data
def test_real_mnist_subset(shared_data_dir, capsys):
    rec = _json(capsys, ["solve", "--dataset", "mnist", "--data-dir", str(shared_data_dir),
                         "--n-train", "1000", "--n-test", "500", "--json"])
    assert rec["n_train"] == 1000 and rec["train_error"] == 0.0
    assert rec["test_error"] < 0.12
    assert rec["relative_residual"] < 1e-10


@pytest.mark.data
def test_predict_reads_the_models_dataset_from_the_data_dir_it_was_fitted_with(
        shared_data_dir, tmp_path, capsys, isolated_data_env, monkeypatch):
    """`solve --dataset mnist --data-dir D --save m.pkl` then `predict --model m.pkl`: the
    MNIST files are read from D again (predict looked in the default places only, and
    tried to download what was in D all along); --data-dir still says otherwise."""
    if not (shared_data_dir / "mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("no MNIST in the shared data folder")
    import shutil

    data = tmp_path / "data"
    shutil.copytree(shared_data_dir / "mnist", data / "mnist")
    model = tmp_path / "m.pkl"
    _json(capsys, ["solve", "--dataset", "mnist", "--data-dir", str(data),
                   "--n-train", "300", "--n-test", "50", "--save", str(model), "--json"])
    from kernelfit.datasets import _fetch

    tried = []

    def no_network(url, timeout):
        tried.append(url)
        raise OSError("no network in this test")

    monkeypatch.setattr(_fetch, "_urlopen", no_network)
    monkeypatch.chdir(tmp_path)
    rec = _json(capsys, ["predict", "--model", str(model), "--n-test", "50", "--json"])
    assert rec["dataset"] == "mnist" and rec["n"] == 50 and rec["test_error"] < 0.3
    # the model's dataset under another spelling the loaders read alike
    rec = _json(capsys, ["predict", "--model", str(model), "--dataset", "MNIST",
                         "--n-test", "50", "--json"])
    assert rec["n"] == 50 and tried == []
    code = main(["predict", "--model", str(model), "--n-test", "50", "--data-dir",
                 str(tmp_path / "empty"), "--json"])
    assert code == 3 and tried, capsys.readouterr().err  # the folder named wins
    # the folder it was fitted with is gone: said, then the usual places
    shutil.rmtree(data)
    code = main(["predict", "--model", str(model), "--n-test", "50", "--json"])
    err = capsys.readouterr().err
    assert code == 3 and f"fitted with --data-dir {data}, which no longer exists" in err


def test_feature_maps_on_an_npz_file_are_cached_under_a_safe_folder(tmp_path, capsys):
    """`--features` on `npz:PATH` (and `imagefolder:PATH`) datasets: the feature cache's
    folder is made from the name's safe characters and a digest of the whole name (the
    name itself, with its colon and slashes, was refused as a folder name); a second run
    reads the cache."""
    from kernelfit.run import feature_cache_key

    rng = np.random.default_rng(3)
    X, y = rng.random((300, 8)), rng.integers(0, 3, 300)
    (tmp_path / "sub").mkdir()
    np.savez(tmp_path / "sub" / "d.npz", X_train=X[:250], y_train=y[:250], X_test=X[250:],
             y_test=y[250:])
    cache = tmp_path / "cache"
    args = ["solve", "--dataset", f"npz:{tmp_path / 'sub' / 'd.npz'}", "--features", "rff",
            "--rff-dim", "512", "--feature-cache-dir", str(cache), "--json"]
    first = _json(capsys, args)
    assert first["feature_info"]["cache_hit"] is False
    (folder,) = [p.name for p in cache.iterdir()]
    assert folder.startswith("npz_") and folder.endswith("-n250-t50-seed0-bal0")
    assert "/" not in folder and ":" not in folder
    second = _json(capsys, args)
    assert second["feature_info"]["cache_hit"] is True
    assert second["test_error"] == first["test_error"]
    assert [p.name for p in cache.iterdir()] == [folder]
    # different files, same file name: different folders
    a = feature_cache_key("npz:/x/d.npz", 250, 50, 0, False)
    b = feature_cache_key("npz:/y/d.npz", 250, 50, 0, False)
    assert a != b and feature_cache_key("mnist", 250, 50, 0, False) == "mnist-n250-t50-seed0-bal0"
    assert len(feature_cache_key("imagefolder:/" + "a" * 300, 1, 1, 0, True)) < 100


def test_ctrl_c_while_the_parser_is_built_is_one_line(monkeypatch, capsys):
    """Ctrl-C in the first second (the parser imports each command's module) exits 130
    with one line, as later."""
    import kernelfit.cli as cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert main(["datasets", "list"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "kernelfit datasets: interrupted"  # the command, as typed
    assert main(["--bogus"]) == 130
    assert capsys.readouterr().err.strip() == "kernelfit: interrupted"


def _ooc_solve_argv(ck) -> list:
    """A small float64 out-of-core solve of digits into ``ck`` (three tile columns)."""
    return ["solve", "--dataset", "digits", "--n-train", "300", "--n-test", "20",
            "--out-of-core", str(ck), "--tile-size", "100", "--precision", "float64"]


def test_sigterm_is_handled_like_ctrl_c_and_an_ooc_checkpoint_names_resume(
        tmp_path, monkeypatch, capsys):
    """SIGTERM (kill, a batch system's limit) runs the clean-up Ctrl-C runs and exits 143
    with one line (it was Python's default: no message, temporary files left); an
    interrupted out-of-core solve's line names --resume, which continues it; the SIGTERM
    handler that was there before comes back."""
    import signal

    from kernelfit import run

    before = signal.getsignal(signal.SIGTERM)
    real = run.evaluate
    monkeypatch.setattr(run, "evaluate", lambda *a, **k: signal.raise_signal(signal.SIGTERM))
    argv = ["solve", "--dataset", "digits", "--n-train", "300", "--n-test", "20", "--json",
            "--save", str(tmp_path / "m.pkl")]
    assert main(argv) == 143
    err = capsys.readouterr().err
    assert err.strip() == "kernelfit solve: terminated"
    assert signal.getsignal(signal.SIGTERM) == before
    assert not list(tmp_path.iterdir())  # no model, no temporary file
    # out of core: stopped after its first panel, the checkpoint stays and --resume works
    from kernelfit.solvers import ooc

    monkeypatch.setattr(run, "evaluate", real)
    real_panels = ooc._factor_panels

    def one_panel_then_ctrl_c(store, state, *a, **k):
        def stop(k1):
            raise KeyboardInterrupt
        return real_panels(store, state, *a[:-1], stop)

    monkeypatch.setattr(ooc, "_factor_panels", one_panel_then_ctrl_c)
    ck = tmp_path / "ck"
    argv = _ooc_solve_argv(ck)
    assert main(argv) == 130
    err = capsys.readouterr().err.strip()
    assert err == (f"kernelfit solve: interrupted; the checkpoint in {ck} stays: the same "
                   "command with --resume continues it")
    monkeypatch.setattr(ooc, "_factor_panels", real_panels)
    assert main(argv + ["--resume"]) == 0
    capsys.readouterr()
    # an interruption Python drops (raised inside a finalizer: "Exception ignored in ...")
    # still ends the command with 130 and its line, not 0 as if never interrupted
    def swallowed(*a, **k):
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            pass  # what Python does with it inside a weakref callback
        return real(*a, **k)

    monkeypatch.setattr(run, "evaluate", swallowed)
    assert main(["solve", "--dataset", "digits", "--n-train", "300", "--n-test", "20",
                 "--json"]) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("kernelfit solve: interrupted (the signal came while Python was "
                          "finishing an object") and len(err.splitlines()) == 1
    assert signal.getsignal(signal.SIGINT) is not None and main(["datasets", "list"]) == 0


def test_predict_scale_check_refuses_far_above_warns_near_and_below(tmp_path, capsys):
    """A model of 0-16 digits: inputs / 16 (16x too small) get a warning, a blank image
    none, inputs x 5 a refusal; all in the training range pass quietly."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    np.savez(tmp_path / "d.npz", X_train=X[:300], y_train=y[:300], X_test=X[300:360],
             y_test=y[300:360])
    model = tmp_path / "m.pkl"
    assert main(["solve", "--dataset", f"npz:{tmp_path / 'd.npz'}", "--save", str(model),
                 "--json", "--no-progress"]) == 0
    capsys.readouterr()
    cases = {"same": (X[:5], ""), "small": (X[:5] / 16, "warning: "),
             "blank": (np.zeros((1, 64)), ""), "large": (X[:5] * 5, "error: ")}
    for name, (inputs, said) in cases.items():
        np.save(tmp_path / f"{name}.npy", inputs)
        rc = main(["predict", "--model", str(model), "--input", str(tmp_path / f"{name}.npy"),
                   "--json"])
        err = capsys.readouterr().err
        assert rc == (2 if name == "large" else 0), (name, err)
        if said:
            assert f"kernelfit predict: {said}" in err and "from 0 to 16" in err, err
        else:
            assert err == "", (name, err)


def test_a_full_disk_out_of_core_names_the_checkpoint_and_resume(tmp_path, monkeypatch,
                                                                 capsys):
    """The disk filling up during an out-of-core solve: the line names the file system's
    refusal (exit 7) and that the checkpoint stays for --resume, which then continues."""
    import errno

    from kernelfit.solvers.tiles import DiskTiles

    real, written = DiskTiles.write, []

    def write(self, kind, i, j, arr):
        if len(written) == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path(kind, i, j)))
        written.append((kind, i, j))
        return real(self, kind, i, j, arr)

    monkeypatch.setattr(DiskTiles, "write", write)
    ck = tmp_path / "ck"
    argv = _ooc_solve_argv(ck)
    assert main(argv) == 7
    err = capsys.readouterr().err.strip()
    assert "No space left on device" in err and err.endswith(
        f"the checkpoint in {ck} stays: once that is mended, the same command with --resume "
        "continues it")
    monkeypatch.setattr(DiskTiles, "write", real)
    assert main(argv + ["--resume"]) == 0


def test_console_entry_ends_at_once_after_an_interruption(monkeypatch):
    """The console script exits with os._exit after Ctrl-C/SIGTERM (interpreter shutdown
    with native threads still running aborted with exit 134), normally through sys.exit."""
    import kernelfit.cli as cli

    class HardExit(BaseException):
        pass

    def hard_exit(code):
        raise HardExit(code)

    ended = []
    monkeypatch.setattr(cli.os, "_exit", hard_exit)
    for rc in (130, 143, 0, 2):
        monkeypatch.setattr(cli, "main", lambda rc=rc: rc)
        try:
            cli.console_main()
        except HardExit as exc:
            ended.append(("os._exit", exc.args[0]))
        except SystemExit as exc:
            ended.append(("sys.exit", exc.code))
    assert ended == [("os._exit", 130), ("os._exit", 143), ("sys.exit", 0), ("sys.exit", 2)]


def test_predict_gives_the_datasets_own_labels(tmp_path, capsys):
    """A dataset with string labels is fitted on class indices; predict maps them back
    to the labels the model file keeps (digits' and MNIST's indices are their labels)."""
    from sklearn.datasets import load_digits

    from kernelfit.cli import main

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    lab = np.array(list("abcdefghij"))
    np.savez(tmp_path / "s.npz", X_train=X[:400], y_train=lab[y[:400]], X_test=X[400:450],
             y_test=lab[y[400:450]])
    model = tmp_path / "m.pkl"
    assert main(["solve", "--dataset", f"npz:{tmp_path / 's.npz'}", "--save", str(model),
                 "--json"]) == 0
    capsys.readouterr()
    assert main(["predict", "--model", str(model), "--output", str(tmp_path / "p.npy"),
                 "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    pred = np.load(tmp_path / "p.npy")
    assert pred.dtype.kind == "U" and set(pred) <= set(lab)
    assert np.mean(pred != lab[y[400:450]]) == pytest.approx(rec["test_error"])
    assert main(["predict", "--model", str(model), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)["first_predictions"]
    assert all(p in lab for p in first)


def test_auto_fallback_is_said_as_a_warning(tmp_path, capsys, monkeypatch):
    """The library logs auto's fallback to float64 (logger kernelfit.solvers.exact); the
    command says it once, as its other warnings: ``kernelfit solve: warning: ...``."""
    from kernelfit.solvers import plan

    # auto measures nothing and sees float32 twice as fast (300 rows are too few for the
    # conditioning probe): it tries mixed precision, whose float32 factor breaks down
    monkeypatch.setattr(plan, "MEASURE_MIN_RATIO", 0)
    monkeypatch.setattr(plan, "gemm_rates", lambda be: {
        "float64": 1e7, "float32": 2e7, "memory_bytes_per_s": 1e8,
        "thin_seconds_per_entry": {"float64": 1e-8, "float32": 5e-9},
        "finish_entries_per_s": 1e10})
    rng = np.random.default_rng(0)
    X = rng.random((320, 3))
    y = (np.sin(3 * X.sum(1)) > 0).astype(int)
    np.savez(tmp_path / "d.npz", X_train=X[:300], y_train=y[:300], X_test=X[300:],
             y_test=y[300:])
    rc = main(["solve", "--dataset", f"npz:{tmp_path / 'd.npz'}", "--bandwidth", "0.3",
               "--tile-size", "64", "--json"])
    cap = capsys.readouterr()
    rec = json.loads(cap.out)
    assert rec["precision"] == "float64" and rec["precision_fallback"]["reason"], rec
    lines = [ln for ln in cap.err.splitlines() if "falling back" in ln]
    assert len(lines) == 1, cap.err
    assert lines[0].startswith("kernelfit solve: warning: precision auto: falling back to a "
                               "float64 factorization: ")
    assert rc in (0, 6)
    import logging

    assert not logging.getLogger("kernelfit").handlers  # the command's handler is gone


def test_data_dir_that_is_the_dataset_folder_itself_names_its_parent(tmp_path, capsys,
                                                                      monkeypatch):
    """--data-dir pointed at mnist/ itself (its files directly there): the line says they
    are there and offers --data-dir <the parent> first, which works; nothing is downloaded
    (it said they were missing in mnist/mnist and tried the network)."""
    from test_datasets_support import register_sources, write_idx_dataset

    from kernelfit.datasets import _fetch, load_raw
    from kernelfit.errors import DownloadError

    data = tmp_path / "data"
    register_sources(monkeypatch, "mnist", write_idx_dataset(data))
    tried = []
    monkeypatch.setattr(_fetch, "_urlopen", lambda url, timeout: tried.append(url))
    args = ["solve", "--dataset", "mnist", "--n-train", "30", "--n-test", "10"]
    assert main([*args, "--data-dir", str(data / "mnist")]) == 3
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and tried == []
    assert (f"mnist: its files are in {data / 'mnist'} itself, not in {data / 'mnist' / 'mnist'}"
            in err)
    assert f"Ways out: --data-dir {data} " in err and "download" not in err
    assert not (data / "mnist" / "mnist").exists()
    assert main([*args, "--data-dir", str(data)]) == 0  # the way out offered works
    # the library's error states the facts in its own words (no flags)
    with pytest.raises(DownloadError) as exc:
        load_raw("mnist", data_dir=data / "mnist", download=False)
    facts = exc.value.facts
    assert facts["found_in"] == str(data / "mnist") and facts["parent_data_dir"] == str(data)
    assert "--" not in exc.value.message and f"point data_dir at {data}" in exc.value.message
