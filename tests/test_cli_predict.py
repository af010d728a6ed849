"""`kernelfit predict` against data other than the model's own: test errors compared by
label (each dataset numbers its own classes), a regression's RMSE, predictions in the
labels' own type; and outputs that would overwrite an input file, refused."""

import json
import os
from dataclasses import replace

import numpy as np
import pytest

from kernelfit.cli import main

CENTERS = {"cat": (0.0, 0.0), "dog": (3.0, 0.0), "ship": (0.0, 3.0)}


def _points(names, n, seed):
    rng = np.random.default_rng(seed)
    y = np.array([names[i % len(names)] for i in range(n)])
    X = np.array([CENTERS[c] for c in y]) + rng.normal(0, 0.9, (n, 2))
    return X, y


def _npz(path, names, seed, n_train=90, n_test=60, label=None):
    X, y = _points(names, n_train, seed)
    Xt, yt = _points(names, n_test, seed + 100)
    label = label or (lambda v: v)
    np.savez(path, X_train=X, y_train=label(y), X_test=Xt, y_test=label(yt))
    return Xt, label(yt)


def _run(capsys, argv):
    code = main(argv)
    cap = capsys.readouterr()
    assert code == 0, cap.err
    return json.loads(cap.out), cap.err


def _solve(capsys, data, model):
    return _run(capsys, ["solve", "--dataset", f"npz:{data}", "--bandwidth", "0.5",
                         "--save", str(model), "--json"])[0]


def _predict(capsys, model, *more):
    return _run(capsys, ["predict", "--model", str(model), "--json", *more])


def test_another_npz_is_scored_by_class_name(tmp_path, capsys):
    # fitted on cat/dog/ship (indices 0, 1, 2), evaluated on dog/ship (there 0, 1): the
    # indices of the two files mean different classes
    _npz(tmp_path / "a.npz", ["cat", "dog", "ship"], 0)
    _, yt = _npz(tmp_path / "b.npz", ["dog", "ship"], 1)
    model = tmp_path / "m.pkl"
    rec = _solve(capsys, tmp_path / "a.npz", model)
    own, _ = _predict(capsys, model)  # its own data: the error solve reported
    assert own["test_error"] == pytest.approx(rec["test_error"])
    assert own["task"] == "classification"
    other, err = _predict(capsys, model, "--dataset", f"npz:{tmp_path / 'b.npz'}",
                          "--output", str(tmp_path / "p.npy"))
    pred = np.load(tmp_path / "p.npy")
    assert other["test_error"] == pytest.approx(np.mean(pred != yt))
    assert other["test_error"] < 0.3 and err == ""  # (index comparison: about 0.9)


def test_classes_the_model_never_saw_count_as_errors_with_one_warning(tmp_path, capsys):
    _npz(tmp_path / "b.npz", ["dog", "ship"], 1)
    _, yt = _npz(tmp_path / "a.npz", ["cat", "dog", "ship"], 0)
    model = tmp_path / "m.pkl"
    _solve(capsys, tmp_path / "b.npz", model)
    rec, err = _predict(capsys, model, "--dataset", f"npz:{tmp_path / 'a.npz'}",
                        "--output", str(tmp_path / "p.npy"))
    pred = np.load(tmp_path / "p.npy")
    assert rec["test_error"] == pytest.approx(np.mean(pred != yt))
    assert rec["test_error"] >= np.mean(yt == "cat")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("kernelfit predict: warning: 20 test point(s) of")
    assert "(cat)" in lines[0] and "dog, ship" in lines[0]


def test_integer_labels_of_another_file_are_compared_as_numbers(tmp_path, capsys):
    # 3/7/9 against 7/9 (indices 1, 2 in one file, 0, 1 in the other)
    code = {"cat": 3, "dog": 7, "ship": 9}
    as_int = np.vectorize(code.get)
    _npz(tmp_path / "a.npz", ["cat", "dog", "ship"], 0, label=as_int)
    _, yt = _npz(tmp_path / "b.npz", ["dog", "ship"], 1, label=lambda y: as_int(y) * 1.0)
    model = tmp_path / "m.pkl"
    _solve(capsys, tmp_path / "a.npz", model)
    rec, err = _predict(capsys, model, "--dataset", f"npz:{tmp_path / 'b.npz'}",
                        "--output", str(tmp_path / "p.npy"))
    pred = np.load(tmp_path / "p.npy")
    assert pred.dtype.kind == "i" and set(pred.tolist()) <= {3, 7, 9}
    assert rec["test_error"] == pytest.approx(np.mean(pred != yt)) and rec["test_error"] < 0.3
    # ... and as names that are numbers: '7' is 7.0 (text had made every point an error)
    _npz(tmp_path / "c.npz", ["dog", "ship"], 1, label=lambda y: as_int(y).astype(str))
    named, err = _predict(capsys, model, "--dataset", f"npz:{tmp_path / 'c.npz'}")
    assert named["test_error"] == pytest.approx(rec["test_error"]) and "warning" not in err


def test_labels_are_keyed_alike_for_predictions_classes_and_truth():
    """One rule for all three (a model class 'cat' that neither the predictions nor the
    test labels hold made the others text, the predictions numbers: every point 'unseen');
    a class named 'nan' stays text (as a number it equals nothing)."""
    import warnings
    from types import SimpleNamespace

    from kernelfit.cli.predict import score

    est = SimpleNamespace(task_="classification", classes_=np.arange(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 'labels the model was not fitted on'
        err = score(est, np.array([0, 1, 0, 1]), np.array([0, 1, 0, 0]),
                    np.array(["1", "2"]), np.array(["1", "2", "cat"]), "a test")
        assert err == pytest.approx(0.25)
        nan = score(est, np.array([0, 2]), np.array([0, 1]), np.array(["nan", "x"]),
                    np.array(["nan", "y", "x"]), "a test")
        assert nan == 0.0


@pytest.mark.parametrize("label, kind", [(lambda y: np.where(y == "cat", 0.0, 2.0), "f"),
                                         (lambda y: np.where(y == "cat", 0, 2), "i"),
                                         (lambda y: y, "U")])
def test_predictions_are_the_labels_in_their_own_type(tmp_path, capsys, label, kind):
    Xt, yt = _npz(tmp_path / "f.npz", ["cat", "dog"], 2, label=label)
    model = tmp_path / "m.pkl"
    rec = _solve(capsys, tmp_path / "f.npz", model)
    out, _ = _predict(capsys, model, "--output", str(tmp_path / "p.npy"))
    pred = np.load(tmp_path / "p.npy")
    assert pred.dtype.kind == kind and set(pred.tolist()) <= set(yt.tolist())
    assert out["test_error"] == pytest.approx(rec["test_error"])
    assert out["test_error"] == pytest.approx(np.mean(pred != yt))
    np.save(tmp_path / "x.npy", Xt)  # --input too, and the first ones shown in JSON
    shown, _ = _predict(capsys, model, "--input", str(tmp_path / "x.npy"))
    assert shown["first_predictions"] == pred[:10].tolist()
    assert all(type(v) is type(yt.tolist()[0]) for v in shown["first_predictions"])


def _regression_model(path):
    from kernelfit.options import RunOptions
    from kernelfit.run import solve_arrays

    rng = np.random.default_rng(0)
    X = rng.random((150, 2))
    opts = RunOptions()
    opts = replace(opts, save=str(path),
                   kernel=replace(opts.kernel, name="laplacian", bandwidth=0.5))
    rec = solve_arrays(X, 3 * X[:, 0], opts=opts, task="regression")
    assert rec["task"] == "regression" and rec["saved_model"] == str(path)


def test_a_regression_model_reports_its_rmse(tmp_path, capsys):
    model = tmp_path / "r.pkl"
    _regression_model(model)
    rng = np.random.default_rng(1)
    X = rng.random((40, 2))
    y = np.round(3 * X[:, 0]).astype(int)  # whole numbers: class labels to the loader
    np.savez(tmp_path / "c.npz", X_train=X, y_train=y, X_test=X, y_test=y)
    rec, _ = _predict(capsys, model, "--dataset", f"npz:{tmp_path / 'c.npz'}",
                      "--output", str(tmp_path / "p.npy"))
    pred = np.load(tmp_path / "p.npy")
    assert pred.dtype.kind == "f"
    rmse = float(np.sqrt(np.mean((pred - y) ** 2)))
    assert rec["task"] == "regression" and rec["test_error_metric"] == "rmse"
    assert rec["test_error"] == pytest.approx(rmse) and 0.1 < rmse < 0.5
    assert main(["predict", "--model", str(model), "--dataset",
                 f"npz:{tmp_path / 'c.npz'}"]) == 0
    assert "test_error (RMSE)" in capsys.readouterr().out
    # class names are not numbers: no test error, one warning saying why
    np.savez(tmp_path / "s.npz", X_train=X, y_train=np.where(y > 1, "high", "low"),
             X_test=X, y_test=np.where(y > 1, "high", "low"))
    rec, err = _predict(capsys, model, "--dataset", f"npz:{tmp_path / 's.npz'}")
    assert "test_error" not in rec and rec["n"] == 40
    assert "are class names, not numbers" in err


def _sine_npz(path, seed=0):
    """Real-valued targets (sin of the first input): no whole numbers among them."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(120, 3))
    y = np.sin(X[:, 0])
    np.savez(path, X_train=X[:80], y_train=y[:80], X_test=X[80:], y_test=y[80:])
    return X[:80], y[:80], X[80:], y[80:]


def test_a_regression_model_is_scored_on_real_valued_npz_targets(tmp_path, capsys):
    # the npz loader refused continuous labels for every caller: predict, which reads only
    # the test split of a regression model's data, exited 2 pointing at task='regression'
    from kernelfit.options import RunOptions
    from kernelfit.run import solve_arrays

    X, y, Xt, yt = _sine_npz(tmp_path / "reg.npz")
    model = tmp_path / "reg.pkl"
    fitted = solve_arrays(X, y, Xt, yt, RunOptions.from_flat(save=str(model)),
                          task="regression")
    data = f"npz:{tmp_path / 'reg.npz'}"
    rec, _ = _predict(capsys, model, "--dataset", data, "--output", str(tmp_path / "p.npy"))
    pred = np.load(tmp_path / "p.npy")
    rmse = float(np.sqrt(np.mean((pred - yt) ** 2)))
    assert rec["task"] == "regression" and rec["test_error_metric"] == "rmse"
    assert rec["n"] == 40 and rec["test_error"] == pytest.approx(rmse, rel=1e-12)
    assert rec["test_error"] == pytest.approx(fitted["test_error"], rel=1e-9)
    some, _ = _predict(capsys, model, "--dataset", data, "--n-test", "15")
    assert some["n"] == 15 and some["test_error_metric"] == "rmse"
    assert main(["predict", "--model", str(model), "--dataset", data]) == 0
    assert "test_error (RMSE)" in capsys.readouterr().out


def test_a_classifier_on_real_valued_npz_targets_is_one_line_with_ways_out(tmp_path,
                                                                          capsys):
    X, y, Xt, yt = _sine_npz(tmp_path / "reg.npz")
    np.savez(tmp_path / "cls.npz", X_train=X, y_train=(y > 0).astype(int), X_test=Xt,
             y_test=(yt > 0).astype(int))
    model = tmp_path / "cls.pkl"
    _solve(capsys, tmp_path / "cls.npz", model)
    code = main(["predict", "--model", str(model), "--dataset",
                 f"npz:{tmp_path / 'reg.npz'}"])
    cap = capsys.readouterr()
    assert code == 2 and cap.out == ""
    lines = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and ": error: " in lines[0], cap.err
    for w in ("looks continuous", "classification model", "task='regression'", "--input"):
        assert w in lines[0], cap.err
    # the way out it names works: the inputs alone
    rec, _ = _predict(capsys, model, "--input", str(tmp_path / "reg.npz"))
    assert rec["n"] == 40 and "test_error" not in rec


def test_the_npz_loader_keeps_real_valued_targets_only_when_asked(tmp_path):
    from kernelfit.datasets import load_dataset
    from kernelfit.errors import InputError

    _, y, _, yt = _sine_npz(tmp_path / "reg.npz")
    name = f"npz:{tmp_path / 'reg.npz'}"
    with pytest.raises(InputError, match="looks continuous") as info:
        load_dataset(name)
    assert info.value.facts["continuous_labels"] and info.value.facts["labels"] == "y_train"
    assert "--" not in info.value.message  # the library names no flags
    ds = load_dataset(name, continuous=True)
    assert ds.class_labels.dtype == np.float64
    np.testing.assert_array_equal(ds.class_labels[ds.y_train], y)
    np.testing.assert_array_equal(ds.class_labels[ds.y_test], yt)


# ---------------------------------------------------------------- outputs over inputs
def _refused(capsys, argv, *words):
    code = main(argv)
    cap = capsys.readouterr()
    assert code == 2, cap.err
    lines = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and ": error: " in lines[0], cap.err
    assert "give another file name" in lines[0]
    for w in words:
        assert w in lines[0], cap.err
    assert cap.out == ""


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_solve_save_over_its_npz_dataset_is_refused(tmp_path, capsys, monkeypatch):
    import kernelfit.run as run_mod

    _npz(tmp_path / "victim.npz", ["cat", "dog"], 0)
    os.symlink(tmp_path / "victim.npz", tmp_path / "link.npz")
    before = _snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)

    def no_work(*a, **k):
        raise AssertionError("the solve ran")

    monkeypatch.setattr(run_mod, "run_solve", no_work)
    for dataset, save in (("npz:victim.npz", "victim.npz"),
                          (f"npz:{tmp_path / 'victim.npz'}", "./sub/../victim.npz"),
                          ("npz:victim.npz", "link.npz")):
        (tmp_path / "sub").mkdir(exist_ok=True)
        _refused(capsys, ["solve", "--dataset", dataset, "--save", save],
                 f"--save {save} is the file of --dataset {dataset}")
    (tmp_path / "sub").rmdir()
    assert _snapshot(tmp_path) == before


def test_run_solve_refuses_to_save_over_its_dataset(tmp_path):
    from kernelfit.errors import InputError
    from kernelfit.options import RunOptions
    from kernelfit.run import run_solve

    _npz(tmp_path / "d.npz", ["cat", "dog"], 0)
    before = _snapshot(tmp_path)
    opts = RunOptions.from_flat(dataset=f"npz:{tmp_path / 'd.npz'}",
                                save=str(tmp_path / "d.npz"))
    with pytest.raises(InputError, match="the file of the dataset npz:") as info:
        run_solve(opts)
    assert info.value.facts["param"] == "save" and "--" not in info.value.message
    assert _snapshot(tmp_path) == before


def test_predict_output_over_an_input_file_is_refused(tmp_path, capsys):
    Xt, _ = _npz(tmp_path / "a.npz", ["cat", "dog"], 0)
    model = tmp_path / "m.pkl"
    _solve(capsys, tmp_path / "a.npz", model)
    np.save(tmp_path / "Xin.npy", Xt)
    # the model file named .npy, and a dataset file named .npy (npz: reads its content)
    (tmp_path / "m.npy").write_bytes(model.read_bytes())
    (tmp_path / "d.npy").write_bytes((tmp_path / "a.npz").read_bytes())
    own = tmp_path / "own.pkl"
    _solve(capsys, tmp_path / "d.npy", own)
    before = _snapshot(tmp_path)
    d = str(tmp_path)
    _refused(capsys, ["predict", "--model", str(model), "--input", f"{d}/Xin.npy",
                      "--output", f"{d}/Xin.npy"], "is the --input file")
    _refused(capsys, ["predict", "--model", f"{d}/m.npy", "--input", f"{d}/Xin.npy",
                      "--output", f"{d}/m.npy"], "is the --model file")
    _refused(capsys, ["predict", "--model", str(model), "--dataset", f"npz:{d}/d.npy",
                      "--output", f"{d}/d.npy"], "is the file of --dataset npz:")
    _refused(capsys, ["predict", "--model", str(own), "--output", f"{d}/d.npy"],
             "is the file of the model's dataset npz:")
    assert _snapshot(tmp_path) == before
    # another name is written as ever
    _predict(capsys, model, "--input", f"{d}/Xin.npy", "--output", f"{d}/p.npy")
    assert np.load(tmp_path / "p.npy").shape == (Xt.shape[0],)


def test_inputs_of_images_are_told_how_to_flatten(tmp_path, capsys):
    """An --input of images (n, h, w) was refused with 'must be 2-D (n, d)' alone: the line
    says how to save it, and the array saved that way is predicted."""
    _npz(tmp_path / "f.npz", ["cat", "dog"], 2)
    model = tmp_path / "m.pkl"
    _solve(capsys, tmp_path / "f.npz", model)
    Xt = _points(["cat", "dog"], 12, 5)[0]
    np.save(tmp_path / "img.npy", Xt.reshape(12, 2, 1))
    assert main(["predict", "--model", str(model), "--input", str(tmp_path / "img.npy")]) == 2
    err = capsys.readouterr().err
    assert "must be 2-D (n, d), got shape (12, 2, 1); save it as X.reshape(12, -1)" in err
    np.save(tmp_path / "flat.npy", np.load(tmp_path / "img.npy").reshape(12, -1))
    out, _ = _predict(capsys, model, "--input", str(tmp_path / "flat.npy"))
    assert out["n"] == 12
