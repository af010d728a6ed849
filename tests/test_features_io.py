"""apply_features, the on-disk cache, the command-line options and every bad input."""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import pytest

from kernelfit.errors import InputError
from kernelfit.cli._features import add_feature_arguments, feature_params_from_args
from kernelfit.features import FEATURE_NAMES, apply_features, make_feature_map
from kernelfit.features.gabor import GaborFeatures
from kernelfit.features.random_conv import RandomConvFeatures
from kernelfit.features.random_fourier import RandomFourierFeatures


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.random((20, 64)), rng.random((7, 64))


CONV = {"n_filters": 6, "patch_size": 3, "n_patches": 200}


# ---------------------------------------------------------------- apply_features
def test_apply_features_raw_and_all_maps(data):
    Xtr, Xte = data
    a, b, info = apply_features("raw", {}, Xtr, Xte, image_shape=(8, 8))
    assert a is not None and np.array_equal(a, Xtr) and info["n_features"] == 64
    for name, params in [("gabor", {"pool": 2}), ("rff", {"n_components": 9}),
                         ("relu", {"n_components": 9}), ("random-conv", CONV)]:
        Ftr, Fte, info = apply_features(name, params, Xtr, Xte, image_shape=(8, 8), seed=1)
        assert Ftr.shape == (20, info["n_features"]) and Fte.shape == (7, info["n_features"])
        assert info["cache_hit"] is False and info["seed"] == 1 and info["seconds"] > 0
        assert info["images_per_second"] > 0 and info["seed_"] == 1
    _, _, info = apply_features("rff", {"n_components": 4}, Xtr, Xte, image_shape=())
    assert info["bandwidth_"] > 0


def test_apply_features_fits_on_train_only(data):
    Xtr, Xte = data
    _, Fte, _ = apply_features("random-conv", CONV, Xtr, Xte, image_shape=(8, 8))
    m = RandomConvFeatures((8, 8), **CONV).fit(Xtr)
    np.testing.assert_allclose(Fte, m.transform(Xte), atol=1e-5)


# ---------------------------------------------------------------- cache
def _entry_files(tmp_path):
    (entry,) = [p for p in (tmp_path / "k1").iterdir()]
    return entry


def test_cache_hit_miss_and_rebuild(tmp_path, data):
    Xtr, Xte = data
    kw = dict(image_shape=(8, 8), seed=0, cache_dir=str(tmp_path), cache_key="k1")
    F1, T1, i1 = apply_features("gabor", {"pool": 2}, Xtr, Xte, **kw)
    assert i1["cache_hit"] is False
    F2, T2, i2 = apply_features("gabor", {"pool": 2}, Xtr, Xte, **kw)
    assert i2["cache_hit"] is True and isinstance(F2, np.memmap)
    np.testing.assert_array_equal(F1, F2)
    np.testing.assert_array_equal(T1, T2)
    entry = _entry_files(tmp_path)
    man = json.loads((entry / "manifest.json").read_text())
    assert man["outputs"]["train"]["shape"] == [20, 4 * 81]
    assert man["seed"] == 0 and man["params"]["pool"] == 2
    # different params / seed / data: misses, new entries
    _, _, i3 = apply_features("gabor", {"pool": 1}, Xtr, Xte, **kw)
    assert i3["cache_hit"] is False
    _, _, i4 = apply_features("rff", {"n_components": 3}, Xtr, Xte,
                              **dict(kw, seed=4))
    assert i4["cache_hit"] is False
    _, _, i5 = apply_features("rff", {"n_components": 3}, Xtr, Xte, **dict(kw, seed=5))
    assert i5["cache_hit"] is False and i5["cache_path"] != i4["cache_path"]
    Xtr2 = Xtr.copy()
    Xtr2[0, 0] += 0.5  # same key, changed data: stale, rebuilt in place
    _, _, i6 = apply_features("gabor", {"pool": 2}, Xtr2, Xte, **kw)
    assert i6["cache_hit"] is False and i6["cache_path"] == i1["cache_path"]
    _, _, i7 = apply_features("gabor", {"pool": 2}, Xtr2, Xte, **kw)
    assert i7["cache_hit"] is True


@pytest.mark.parametrize("damage", ["flip", "truncate", "manifest", "no-manifest", "delete"])
def test_cache_corrupt_entry_is_rebuilt(tmp_path, data, damage):
    Xtr, Xte = data
    kw = dict(image_shape=(8, 8), seed=0, cache_dir=str(tmp_path), cache_key="k1")
    F1, _, _ = apply_features("rff", {"n_components": 50}, Xtr, Xte, **kw)
    F1 = np.array(F1)
    entry = _entry_files(tmp_path)
    train = entry / "train.npy"
    if damage == "flip":
        raw = bytearray(train.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        train.write_bytes(bytes(raw))
    elif damage == "truncate":
        train.write_bytes(train.read_bytes()[:-100])
    elif damage == "manifest":
        (entry / "manifest.json").write_text("{not json")
    elif damage == "no-manifest":
        (entry / "manifest.json").unlink()
    else:
        train.unlink()
    F2, _, info = apply_features("rff", {"n_components": 50}, Xtr, Xte, **kw)
    assert info["cache_hit"] is False
    np.testing.assert_array_equal(F1, F2)
    _, _, info = apply_features("rff", {"n_components": 50}, Xtr, Xte, **kw)
    assert info["cache_hit"] is True
    assert not [p for p in entry.iterdir() if ".tmp" in p.name]


def test_cache_key_must_be_a_plain_name(tmp_path, data):
    Xtr, Xte = data
    with pytest.raises(InputError, match="cache_key"):
        apply_features("rff", {"n_components": 2}, Xtr, Xte, image_shape=(),
                       cache_dir=str(tmp_path), cache_key="../evil")


def test_failed_write_leaves_no_entry(tmp_path, data, monkeypatch):
    Xtr, Xte = data

    def boom(self, X, out=None):
        raise RuntimeError("disk full")

    monkeypatch.setattr(RandomFourierFeatures, "transform", boom)
    with pytest.raises(RuntimeError):
        apply_features("rff", {"n_components": 2}, Xtr, Xte, image_shape=(),
                       cache_dir=str(tmp_path), cache_key="k1")
    entry = _entry_files(tmp_path)
    assert not (entry / "manifest.json").exists()
    assert not [p for p in entry.iterdir() if ".tmp" in p.name]


# ---------------------------------------------------------------- command line
def _parse(argv):
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_feature_arguments(p)
    return p, p.parse_args(argv)


def test_cli_arguments_and_params():
    p, args = _parse([])
    assert feature_params_from_args(args) == ("raw", {})
    assert args.no_feature_cache is False
    _, args = _parse(["--features", "gabor", "--gabor-scales", "3", "--feature-batch", "7"])
    assert feature_params_from_args(args) == (
        "gabor", {"scales": 3, "orientations": 8, "order": 2, "pool": 7, "normalize": "unit",
                  "grid_bits": "auto", "batch_size": 7})
    _, args = _parse(["--features", "gabor", "--gabor-order", "1", "--gabor-normalize", "none"])
    assert feature_params_from_args(args)[1] == {"scales": 2, "orientations": 8, "order": 1,
                                                 "pool": 7, "normalize": "none",
                                                 "grid_bits": "auto"}
    for text, want in (("none", None), ("NONE", None), ("8", 8), ("auto", "auto")):
        _, args = _parse(["--features", "gabor", "--gabor-grid-bits", text])
        assert feature_params_from_args(args)[1]["grid_bits"] == want
    for bad in ("-1", "31", "2.5", "fine"):
        with pytest.raises(SystemExit):
            _parse(["--features", "gabor", "--gabor-grid-bits", bad])
    _, args = _parse(["--features", "rff", "--rff-dim", "10", "--rff-bandwidth", "2.5"])
    assert feature_params_from_args(args) == ("rff", {"n_components": 10, "bandwidth": 2.5})
    _, args = _parse(["--features", "relu", "--rff-dim", "10"])
    assert feature_params_from_args(args) == ("relu", {"n_components": 10})
    _, args = _parse(["--features", "random-conv", "--conv-filters", "32000",
                      "--conv-filter-init", "gaussian", "--no-feature-cache"])
    name, params = feature_params_from_args(args)
    assert name == "random-conv" and params["n_filters"] == 32000
    assert params["filter_init"] == "gaussian" and args.no_feature_cache
    assert params["patch_norm"] == 0.3  # the map's default
    _, off = _parse(["--features", "random-conv", "--conv-patch-norm", "none"])
    assert feature_params_from_args(off)[1]["patch_norm"] is None
    _, eps = _parse(["--features", "random-conv", "--conv-patch-norm", "0.05"])
    assert feature_params_from_args(eps)[1]["patch_norm"] == 0.05
    with pytest.raises(SystemExit):
        _parse(["--features", "random-conv", "--conv-patch-norm", "0"])
    assert params["power"] == 0.5 and params["pool"] == 3  # the map's defaults
    _, pw = _parse(["--features", "random-conv", "--conv-power", "0.5"])
    assert feature_params_from_args(pw)[1]["power"] == 0.5
    est = make_feature_map(name, image_shape=(32, 32, 3), **params)
    assert est.n_filters == 32000
    for n in FEATURE_NAMES:
        _, args = _parse(["--features", n])
        feature_params_from_args(args)
    help_text = " ".join(p.format_help().split())
    assert "--conv-patch" in help_text and "in pixels (default: 6)" in help_text
    with pytest.raises(SystemExit):
        _parse(["--features", "sift"])
    with pytest.raises(SystemExit):
        _parse(["--rff-bandwidth", "-1"])


# ---------------------------------------------------------------- bad input
BAD_PARAMS = [
    ("gabor", (28, 28), {"scales": 0}, "scales"),
    ("gabor", (28, 28), {"scales": 5}, "scales"),
    ("gabor", (28, 28), {"orientations": 0}, "orientations"),
    ("gabor", (28, 28), {"order": 3}, "order"),
    ("gabor", (28, 28), {"pool": 0}, "pool"),
    ("gabor", (28, 28), {"sigma0": -1.0}, "sigma0"),
    ("gabor", (28, 28), {"slant": 2.0}, "slant"),
    ("gabor", (28, 28), {"normalize": "l1"}, "normalize"),
    ("gabor", (28, 28), {"scales": 1.5}, "scales"),
    ("gabor", (), {}, "needs images"),
    ("gabor", (28, 28, 2), {}, "channels"),
    ("gabor", (28, 28, 3, 1), {}, "image_shape"),
    ("rff", (), {"n_components": 0}, "n_components"),
    ("rff", (), {"bandwidth": 0.0}, "bandwidth"),
    ("rff", (), {"bandwidth": "mean"}, "bandwidth"),
    ("rff", (), {"batch_size": 0}, "batch_size"),
    ("rff", (), {"dtype": "int8"}, "dtype"),
    ("relu", (), {"n_components": -3}, "n_components"),
    ("random-conv", (32, 32, 3), {"patch_size": 33}, "patch_size"),
    ("random-conv", (32, 32, 3), {"patch_size": 0}, "patch_size"),
    ("random-conv", (32, 32, 3), {"n_filters": 0}, "n_filters"),
    ("random-conv", (32, 32, 3), {"threshold": -1.0}, "threshold"),
    ("random-conv", (32, 32, 3), {"threshold": float("nan")}, "threshold"),
    ("random-conv", (32, 32, 3), {"filter_init": "uniform"}, "filter_init"),
    ("random-conv", (32, 32, 3), {"pool": 28}, "pool"),
    ("random-conv", (32, 32, 3), {"chunk_size": 0}, "chunk_size"),
    ("random-conv", (), {}, "needs images"),
]


@pytest.mark.parametrize("name,shape,params,match", BAD_PARAMS)
def test_bad_parameters_raise_input_error_early(name, shape, params, match):
    with pytest.raises(InputError, match=match):
        make_feature_map(name, image_shape=shape, **params)
    width = int(np.prod(shape)) if shape else 5
    X = np.zeros((3, min(width, 3072)))
    with pytest.raises(InputError, match=match):
        apply_features(name, params, X, X, image_shape=shape)


def test_bad_arrays_raise_input_error(data, monkeypatch):
    Xtr, Xte = data
    # no heavy work may start before the check
    monkeypatch.setattr(GaborFeatures, "_fit", lambda self, X: pytest.fail("heavy work"))
    with pytest.raises(InputError, match="implies 64"):
        apply_features("gabor", {}, Xtr[:, :60], Xte[:, :60], image_shape=(8, 8))
    with pytest.raises(InputError, match="channels|implies"):
        apply_features("gabor", {}, Xtr, Xte, image_shape=(8, 8, 3))
    bad = Xtr.copy()
    bad[3, 5] = np.nan
    with pytest.raises(InputError, match="NaN"):
        apply_features("gabor", {}, bad, Xte, image_shape=(8, 8))
    bad_te = Xte.copy()
    bad_te[0, 0] = np.inf
    with pytest.raises(InputError, match="NaN"):
        apply_features("gabor", {}, Xtr, bad_te, image_shape=(8, 8))
    with pytest.raises(InputError, match="2-D"):
        apply_features("gabor", {}, Xtr.reshape(20, 8, 8), Xte, image_shape=(8, 8))
    with pytest.raises(InputError, match="features per row"):
        apply_features("gabor", {}, Xtr, Xte[:, :10], image_shape=(8, 8))
    with pytest.raises(InputError, match="no rows"):
        apply_features("gabor", {}, Xtr[:0], Xte, image_shape=(8, 8))
    with pytest.raises(InputError, match="numeric"):
        apply_features("rff", {}, np.array([["a"]]), Xte, image_shape=())
    with pytest.raises(InputError, match="unknown feature map"):
        apply_features("sift", {}, Xtr, Xte, image_shape=(8, 8))
    with pytest.raises(InputError, match="no parameters"):
        apply_features("raw", {"pool": 2}, Xtr, Xte, image_shape=(8, 8))


def test_transform_checks_width_and_nan():
    X = np.random.default_rng(1).random((5, 6))
    m = RandomFourierFeatures(4).fit(X)
    with pytest.raises(InputError, match="features per row"):
        m.transform(X[:, :5])
    Y = X.copy()
    Y[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        m.transform(Y)
    with pytest.raises(InputError, match="at least two"):
        RandomFourierFeatures(4).fit(X[:1])


def test_no_import_time_work():
    import subprocess
    import sys

    code = ("import sys, kernelfit.features as f; "
            "print(any(m.startswith('sklearn') for m in sys.modules), f.FEATURE_NAMES)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.startswith("False"), out.stdout + out.stderr


def test_progress_bar_on_stderr(capsys):
    X = np.random.default_rng(2).random((9, 64))
    F = GaborFeatures((8, 8), pool=2, batch_size=4, progress=True).fit_transform(X)
    assert F.shape == (9, 4 * 81)
    err = capsys.readouterr().err
    assert "gabor features" in err


@pytest.mark.parametrize("name,params", [("gabor", {"pool": 2}), ("random-conv", CONV),
                                         ("rff", {"n_components": 5})])
def test_fitted_transformer_returned_and_restored_from_cache(tmp_path, data, name, params):
    Xtr, Xte = data
    kw = dict(image_shape=(8, 8), seed=3, cache_dir=str(tmp_path), cache_key="k1")
    _, Fte, i1 = apply_features(name, params, Xtr, Xte, **kw)
    _, _, i2 = apply_features(name, params, Xtr, Xte, **kw)
    assert i2["cache_hit"] is True
    for info in (i1, i2):
        est = info["transformer"]
        assert est.seed_ == 3
        np.testing.assert_allclose(est.transform(Xte), Fte, atol=1e-6)
    # a corrupt pickled transformer is a miss and the entry is rebuilt
    pkl = os.path.join(i2["cache_path"], "transformer.pkl")
    with open(pkl, "r+b") as fh:
        fh.seek(10)
        fh.write(b"\x00garbage")
    _, _, i3 = apply_features(name, params, Xtr, Xte, **kw)
    assert i3["cache_hit"] is False and i3["transformer"] is not None
    _, _, i4 = apply_features(name, params, Xtr, Xte, **kw)
    assert i4["cache_hit"] is True
    _, _, raw = apply_features("raw", {}, Xtr, Xte, image_shape=(8, 8))
    assert raw["transformer"] is None


def test_a_full_disk_under_the_feature_cache_is_one_line_not_sigbus(tmp_path, monkeypatch,
                                                                    capsys):
    """The cache's memory-mapped files are reserved on the disk before the first write
    (a sparse file on a full disk killed the process with SIGBUS, exit 135, its temporary
    file left): a full disk is exit 7, one line naming the cache, nothing left there."""
    import errno

    import kernelfit.features.cache as cache
    from kernelfit.cli import main

    def full(path, size):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(cache, "_reserve", full)
    where = tmp_path / "fc"
    rc = main(["solve", "--dataset", "digits", "--n-train", "200", "--n-test", "50",
               "--features", "rff", "--rff-dim", "256", "--feature-cache-dir", str(where),
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 7 and err.count("\n") == 1
    assert "No space left on device (the feature cache needs" in err
    assert "free disk space" in err and str(where) in err
    assert not [p for p in where.rglob("*") if p.is_file()] and not any(where.iterdir())


def test_an_unwritable_default_feature_cache_names_its_origin_and_ways_out(tmp_path,
                                                                          monkeypatch, capsys):
    """The default cache folder (from the environment) that cannot be written: exit 2,
    naming the variables it comes from and both ways out, the second of which works."""
    from kernelfit.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.delenv("KERNELFIT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker / "x"))
    args = ["solve", "--dataset", "digits", "--n-train", "200", "--n-test", "50",
            "--features", "rff", "--rff-dim", "256", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "default folder (from $KERNELFIT_CACHE, else $XDG_CACHE_HOME" in err
    assert "(--feature-cache-dir)" in err and "(--no-feature-cache)" in err
    assert main(args + ["--no-feature-cache"]) == 0
