"""Tests of kernelfit.datasets: paths, IDX parsing, MNIST-style loading, subsets, downloads."""

from __future__ import annotations

import gzip
import io
import urllib.error

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

from kernelfit.datasets import DATASET_NAMES, Dataset, load_dataset, resolve_data_dir
from kernelfit.datasets import _fetch, sources
from kernelfit.datasets._subset import balanced_quota
from kernelfit.datasets.idx import encode_idx, parse_idx, read_idx
from kernelfit.errors import ChecksumError, DataError, DownloadError, InputError

from test_datasets_support import (IDX_NAMES, make_idx_arrays, register_sources,
                                   write_idx_dataset)


@pytest.fixture(autouse=True)
def _isolated(isolated_data_env):
    return isolated_data_env


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    """A small MNIST-format dataset in tmp_path/data/mnist with matching checksums."""
    arrays = make_idx_arrays()
    stored = write_idx_dataset(tmp_path / "data", arrays=arrays)
    register_sources(monkeypatch, "mnist", stored)
    return tmp_path / "data", arrays


# ------------------------------------------------------------------ data directory

def test_data_dir_precedence(tmp_path, monkeypatch, isolated_data_env):
    assert resolve_data_dir() == isolated_data_env
    monkeypatch.setenv("KERNELFIT_DATA", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir(str(tmp_path / "arg")) == tmp_path / "arg"


def test_default_cache_without_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_data_dir() == tmp_path / ".cache" / "kernelfit"


def test_data_dir_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InputError):
        resolve_data_dir(f)


def test_env_var_is_used_for_loading(fake_mnist, monkeypatch):
    data_dir, _ = fake_mnist
    monkeypatch.setenv("KERNELFIT_DATA", str(data_dir))
    ds = load_dataset("mnist", download=False)
    assert ds.source == str(data_dir / "mnist")


def test_argument_beats_env(fake_mnist, monkeypatch, tmp_path):
    data_dir, _ = fake_mnist
    monkeypatch.setenv("KERNELFIT_DATA", str(tmp_path / "empty"))
    assert load_dataset("mnist", data_dir=data_dir, download=False).source == str(data_dir / "mnist")
    with pytest.raises(DownloadError, match="empty"):
        load_dataset("mnist", download=False)


# ------------------------------------------------------------------ IDX parser

def test_idx_roundtrip_and_magic():
    a = np.arange(60, dtype=np.uint8).reshape(3, 4, 5)
    blob = encode_idx(a)
    assert blob[:4] == b"\x00\x00\x08\x03"
    np.testing.assert_array_equal(parse_idx(blob), a)
    assert encode_idx(np.zeros(7, np.uint8))[:4] == b"\x00\x00\x08\x01"


@pytest.mark.parametrize("blob, match", [
    (b"", "truncated"),
    (b"\x00\x00", "truncated"),
    (b"\x01\x00\x08\x03" + b"\x00" * 12, "magic"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x00", "magic"),
    (b"\x00\x00\x08\x00", "magic"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x02", "truncated"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x05abc", "truncated"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x02abc", "trailing"),
])
def test_idx_malformed(blob, match):
    with pytest.raises(DataError, match=match):
        parse_idx(blob, "f.idx")


def test_idx_expected_magic():
    with pytest.raises(DataError, match="0x00000801.*expected 0x00000803"):
        parse_idx(encode_idx(np.zeros(3, np.uint8)), "x", expect_magic=0x803)


def test_read_idx_gzip_and_raw(tmp_path):
    a = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    (tmp_path / "a.gz").write_bytes(gzip.compress(encode_idx(a)))
    (tmp_path / "a").write_bytes(encode_idx(a))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), a)
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), a)
    (tmp_path / "bad.gz").write_bytes(gzip.compress(encode_idx(a))[:-10])
    with pytest.raises(DataError, match="bad.gz"):
        read_idx(tmp_path / "bad.gz")


_IDX_DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@st.composite
def _idx_arrays(draw):
    dtype = draw(st.sampled_from(_IDX_DTYPES))
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=1, max_size=4)))
    n = int(np.prod(shape))
    raw = draw(st.binary(min_size=n * np.dtype(dtype).itemsize,
                         max_size=n * np.dtype(dtype).itemsize))
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_idx_arrays(), st.data())
def test_idx_property_roundtrip_and_truncation(arr, data):
    blob = encode_idx(arr)
    back = parse_idx(blob)
    assert back.shape == arr.shape and back.dtype == arr.dtype.newbyteorder("=")
    assert back.tobytes() == arr.tobytes()
    cut = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(DataError):
        parse_idx(blob[:cut])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_idx_property_random_bytes(blob):
    try:
        parse_idx(blob)
    except DataError:
        pass


# ------------------------------------------------------------------ MNIST-style loading

@pytest.mark.parametrize("compress", [True, False])
def test_load_fake_mnist(tmp_path, monkeypatch, compress):
    arrays = make_idx_arrays()
    stored = write_idx_dataset(tmp_path, arrays=arrays, compress=compress)
    if compress:
        register_sources(monkeypatch, "mnist", stored)
    else:  # raw copies are verified by their content hash
        register_sources(monkeypatch, "mnist", {r: b"unused" for r in stored}, content=stored)
    ds = load_dataset("mnist", data_dir=tmp_path, download=False)
    assert isinstance(ds, Dataset)
    X_train, y_train, X_test, y_test = arrays
    assert ds.X_train.shape == (40, 30) and ds.X_test.shape == (20, 30)
    assert ds.X_train.dtype == np.float64 and ds.X_train.flags.c_contiguous
    np.testing.assert_allclose(ds.X_train, X_train.reshape(40, -1) / 255.0)
    np.testing.assert_array_equal(ds.y_train, y_train)
    np.testing.assert_array_equal(ds.y_test, y_test)
    assert ds.y_train.dtype == np.int64
    assert ds.image_shape == (6, 5) and ds.n_classes == 10 and ds.class_names[3] == "3"
    assert 0.0 <= ds.X_train.min() and ds.X_train.max() <= 1.0


def test_fashion_mnist_and_float32(tmp_path, monkeypatch):
    stored = write_idx_dataset(tmp_path, name="fashion-mnist")
    register_sources(monkeypatch, "fashion-mnist", stored)
    ds = load_dataset("fashion-mnist", data_dir=tmp_path, dtype=np.float32)
    assert ds.X_train.dtype == np.float32
    assert ds.class_names[0] == "T-shirt/top" and ds.name == "fashion-mnist"


def test_uncompressed_copy_without_content_hash_is_structure_checked(tmp_path, monkeypatch):
    stored = write_idx_dataset(tmp_path, name="fashion-mnist", compress=False)
    register_sources(monkeypatch, "fashion-mnist", {r: b"other" for r in stored})
    assert load_dataset("fashion-mnist", data_dir=tmp_path).X_train.shape == (40, 30)


def test_recompressed_gzip_accepted_by_content_hash(tmp_path, monkeypatch):
    arrays = make_idx_arrays()
    contents = {r: encode_idx(a) for r, a in zip(IDX_NAMES, arrays)}
    write_idx_dataset(tmp_path, arrays=arrays)
    # published gzip bytes differ (different compressor), content is the same
    published = {r: gzip.compress(c, compresslevel=1, mtime=12345) + b"" for r, c in contents.items()}
    published = {r: b"published-" + b for r, b in published.items()}
    register_sources(monkeypatch, "mnist", published, content=contents)
    assert load_dataset("mnist", data_dir=tmp_path).X_train.shape == (40, 30)


def test_checksum_mismatch_local_file(tmp_path, monkeypatch):
    stored = write_idx_dataset(tmp_path)
    register_sources(monkeypatch, "mnist", {**stored, "test_labels": b"something else"})
    with pytest.raises(ChecksumError, match="t10k-labels"):
        load_dataset("mnist", data_dir=tmp_path)


def _write_with(tmp_path, monkeypatch, **overrides):
    stored = write_idx_dataset(tmp_path, overrides=overrides)
    register_sources(monkeypatch, "mnist", stored)


def test_bad_magic(tmp_path, monkeypatch):
    labels = encode_idx(np.zeros(40, np.uint8))
    _write_with(tmp_path, monkeypatch, train_images=labels)
    with pytest.raises(DataError, match=r"train-images.*magic.*0x00000801"):
        load_dataset("mnist", data_dir=tmp_path)


def test_truncated_file(tmp_path, monkeypatch):
    full = encode_idx(np.zeros((20, 6, 5), np.uint8))
    _write_with(tmp_path, monkeypatch, test_images=full[:-7])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: truncated"):
        load_dataset("mnist", data_dir=tmp_path)


def test_count_mismatch(tmp_path, monkeypatch):
    _write_with(tmp_path, monkeypatch, train_labels=encode_idx(np.zeros(39, np.uint8)))
    with pytest.raises(DataError, match="40 images but .* 39 labels"):
        load_dataset("mnist", data_dir=tmp_path)


def test_label_out_of_range(tmp_path, monkeypatch):
    y = np.zeros(20, np.uint8)
    y[7] = 12
    _write_with(tmp_path, monkeypatch, test_labels=encode_idx(y))
    with pytest.raises(DataError, match="label 12 is outside 0..9"):
        load_dataset("mnist", data_dir=tmp_path)


def test_corrupt_gzip(tmp_path, monkeypatch):
    stored = write_idx_dataset(tmp_path)
    bad = stored["train_labels"][:15]
    (tmp_path / "mnist" / IDX_NAMES["train_labels"]).write_bytes(bad)
    register_sources(monkeypatch, "mnist", {**stored, "train_labels": bad})
    with pytest.raises(DataError, match="gzip.*delete it to download it again, or replace"):
        load_dataset("mnist", data_dir=tmp_path)


def test_a_damaged_uncompressed_idx_file_names_the_way_out(tmp_path, monkeypatch):
    stored = write_idx_dataset(tmp_path)
    good = gzip.decompress(stored["train_labels"])
    (tmp_path / "mnist" / IDX_NAMES["train_labels"]).unlink()
    raw = tmp_path / "mnist" / IDX_NAMES["train_labels"].removesuffix(".gz")
    raw.write_bytes(good[:-3])  # truncated
    register_sources(monkeypatch, "mnist", stored)
    with pytest.raises(DataError, match="truncated IDX file.*delete it to download it again"):
        load_dataset("mnist", data_dir=tmp_path)


# ------------------------------------------------------------------ subsets

def test_subset_sizes_and_order(fake_mnist):
    data_dir, arrays = fake_mnist
    ds = load_dataset("mnist", data_dir=data_dir, n_train=10, n_test=5, seed=3)
    assert ds.X_train.shape == (10, 30) and ds.y_test.shape == (5,)
    # rows are original rows, in the original order
    full = arrays[0].reshape(40, -1) / 255.0
    rows = [int(np.flatnonzero((full == r).all(axis=1))[0]) for r in ds.X_train]
    assert rows == sorted(rows)


def test_subset_determinism(fake_mnist):
    data_dir, _ = fake_mnist
    a = load_dataset("mnist", data_dir=data_dir, n_train=12, n_test=6, seed=7)
    b = load_dataset("mnist", data_dir=data_dir, n_train=12, n_test=6, seed=7)
    c = load_dataset("mnist", data_dir=data_dir, n_train=12, n_test=6, seed=8)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.X_train, c.X_train)
    # the training subset does not depend on n_test
    d = load_dataset("mnist", data_dir=data_dir, n_train=12, n_test=3, seed=7)
    np.testing.assert_array_equal(a.X_train, d.X_train)


def test_balanced_subset(fake_mnist):
    data_dir, _ = fake_mnist
    ds = load_dataset("mnist", data_dir=data_dir, n_train=20, n_test=13, balanced=True)
    assert ds.class_counts("train").tolist() == [2] * 10
    assert sorted(ds.class_counts("test").tolist()) == [1] * 7 + [2] * 3


def test_balanced_quota_redistributes():
    assert balanced_quota([5, 1, 10, 10], 12).tolist() == [4, 1, 4, 3]
    assert balanced_quota([3, 0, 3], 5).tolist() == [3, 0, 2]
    assert balanced_quota([2, 2], 4).tolist() == [2, 2]
    q = balanced_quota([100, 3, 50, 7], 60)
    assert q.sum() == 60 and q[1] == 3 and q[3] == 7 and abs(int(q[0]) - int(q[2])) <= 1


@pytest.mark.parametrize("kw, match", [
    ({"n_train": 41}, "n_train 41 .* 40 examples"),
    ({"n_test": 21}, "n_test 21 .* 20 examples"),
    ({"n_train": -1}, "non-negative"),
    ({"n_train": 2.5}, "whole number"),
    ({"dtype": np.int32}, "floating"),
    ({"seed": -3}, "seed"),
])
def test_bad_arguments(fake_mnist, kw, match):
    data_dir, _ = fake_mnist
    with pytest.raises(InputError, match=match):
        load_dataset("mnist", data_dir=data_dir, **kw)


@pytest.mark.parametrize("name", ["nope", "imagefolder", "imagefolder:", "mnist:x", "", 3])
def test_unknown_names(name):
    with pytest.raises(InputError):
        load_dataset(name)


def test_dataset_names():
    assert set(DATASET_NAMES) == {"mnist", "fashion-mnist", "cifar10", "digits", "imagefolder",
                                  "npz"}


# ------------------------------------------------------------------ digits

def test_digits():
    ds = load_dataset("digits")
    assert ds.X_train.shape == (1438, 64) and ds.X_test.shape == (359, 64)
    assert ds.image_shape == (8, 8) and ds.X_train.max() == 1.0 and ds.X_train.min() == 0.0
    from sklearn.datasets import load_digits
    ref = load_digits()
    np.testing.assert_allclose(ds.X_test, ref.data[-359:] / 16.0)
    np.testing.assert_array_equal(ds.y_test, ref.target[-359:])
    small = load_dataset("digits", n_train=50, balanced=True, seed=1)
    assert small.class_counts().tolist() == [5] * 10


# ------------------------------------------------------------------ downloads

def _leftovers(directory):
    return sorted(p.name for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


def _serve(tmp_path, monkeypatch, name="mnist", corrupt=()):
    """Publish fake files under tmp_path/server and register file:// URLs for them."""
    stored = write_idx_dataset(tmp_path / "server", name=name)
    served = {}
    for role, blob in stored.items():
        path = tmp_path / "server" / name / IDX_NAMES[role]
        if role in corrupt:
            path.write_bytes(blob[:-3] + b"xyz")
        served[role] = ("file:///nonexistent/mirror/" + IDX_NAMES[role], path.as_uri())
    register_sources(monkeypatch, name, stored, urls=served)
    return stored


def test_download_from_mirror(tmp_path, monkeypatch, isolated_data_env):
    stored = _serve(tmp_path, monkeypatch)
    ds = load_dataset("mnist")  # data dir: the per-user cache
    assert ds.X_train.shape == (40, 30)
    assert _leftovers(isolated_data_env) == sorted(IDX_NAMES.values())
    for role, name in IDX_NAMES.items():
        assert (isolated_data_env / "mnist" / name).read_bytes() == stored[role]


def test_download_checksum_mismatch_leaves_nothing(tmp_path, monkeypatch):
    _serve(tmp_path, monkeypatch, corrupt=("train_images",))
    target = tmp_path / "target"
    with pytest.raises(ChecksumError, match="train-images"):
        load_dataset("mnist", data_dir=target)
    assert _leftovers(target) == []


def test_download_offline(tmp_path, monkeypatch):
    _serve(tmp_path, monkeypatch)

    def offline(url, timeout):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(_fetch, "_urlopen", offline)
    target = tmp_path / "target"
    with pytest.raises(DownloadError) as info:
        load_dataset("mnist", data_dir=target)
    msg = str(info.value)
    assert str(target / "mnist") in msg and "KERNELFIT_DATA" in msg and "data_dir" in msg
    assert "--" not in msg  # the library names no command-line flags
    # all four missing files are named, not only the first
    assert len(info.value.missing) == 4
    for name in info.value.missing:
        assert name in msg
    assert _leftovers(target) == []
    assert not target.exists()  # nor the data folder the download made (nor its parents)
    deep = tmp_path / "a" / "b"
    with pytest.raises(DownloadError):
        load_dataset("mnist", data_dir=deep)
    assert not (tmp_path / "a").exists()


def test_download_interrupted_midway(tmp_path, monkeypatch):
    _serve(tmp_path, monkeypatch)

    class Broken(io.BytesIO):
        headers = {"Content-Length": "1000"}

        def read(self, n=-1):
            if self.tell() > 0:
                raise OSError("connection reset")
            return super().read(10)

    monkeypatch.setattr(_fetch, "_urlopen", lambda url, timeout: Broken(b"x" * 100))
    target = tmp_path / "target"
    with pytest.raises(DownloadError, match="connection reset"):
        load_dataset("mnist", data_dir=target)
    assert _leftovers(target) == []


def test_download_disabled(tmp_path):
    with pytest.raises(DownloadError, match="downloading is disabled"):
        load_dataset("mnist", data_dir=tmp_path, download=False)
    assert _leftovers(tmp_path) == []


def test_published_checksums_are_well_formed():
    for name, files in sources.SOURCES.items():
        for remote in files.values():
            assert len(remote.sha256) == 64 and remote.urls
            assert all(u.startswith("http") for u in remote.urls)
    mnist_urls = [u for r in sources.SOURCES["mnist"].values() for u in r.urls]
    assert any("ossci-datasets" in u for u in mnist_urls)
    assert any("lecun.com" in u for u in mnist_urls)
