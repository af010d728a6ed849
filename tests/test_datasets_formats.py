"""Tests of the CIFAR-10 (official pickle batches) and image-folder loaders."""

from __future__ import annotations

import pickle
import shutil
import tarfile

import numpy as np
import pytest

from kernelfit.datasets import cifar, load_dataset
from kernelfit.errors import ChecksumError, DataError, DownloadError, InputError

from test_datasets_support import (cifar_batch, register_sources, tar_directory,
                                   write_cifar_folder, write_image_tree)

N = 12  # rows per fake CIFAR batch


@pytest.fixture(autouse=True)
def _isolated(isolated_data_env, monkeypatch):
    monkeypatch.setattr(cifar, "BATCH_ROWS", N)
    return isolated_data_env


def _expected_images(batch):
    return batch[b"data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).reshape(len(batch[b"data"]), -1)


# ------------------------------------------------------------------ CIFAR-10

def test_cifar_extracted_folder(tmp_path):
    batches = write_cifar_folder(tmp_path / "cifar10" / "cifar-10-batches-py", N)
    ds = load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert ds.X_train.shape == (5 * N, 3072) and ds.X_test.shape == (N, 3072)
    assert ds.image_shape == (32, 32, 3) and ds.class_names[0] == "airplane"
    np.testing.assert_allclose(ds.X_train[:N], _expected_images(batches["data_batch_1"]) / 255.0)
    np.testing.assert_allclose(ds.X_train[-N:], _expected_images(batches["data_batch_5"]) / 255.0)
    np.testing.assert_allclose(ds.X_test, _expected_images(batches["test_batch"]) / 255.0)
    np.testing.assert_array_equal(ds.y_test, batches["test_batch"][b"labels"])
    # (H, W, C) order: pixel (0, 1) of image 0 is red, green, blue at 3, 4, 5
    raw = batches["test_batch"][b"data"][0]
    assert [round(v * 255) for v in ds.X_test[0, 3:6]] == [raw[1], raw[1025], raw[2049]]


def test_cifar_tarball_verified(tmp_path, monkeypatch):
    src = tmp_path / "src" / "cifar-10-batches-py"
    batches = write_cifar_folder(src, N, protocol=pickle.HIGHEST_PROTOCOL)
    (tmp_path / "data" / "cifar10").mkdir(parents=True)
    blob = tar_directory(src, tmp_path / "data" / "cifar10" / "cifar-10-python.tar.gz",
                         "cifar-10-batches-py")
    register_sources(monkeypatch, "cifar10", {"archive": blob})
    ds = load_dataset("cifar10", data_dir=tmp_path / "data", n_train=20, balanced=True)
    assert ds.class_counts().tolist() == [2] * 10
    assert ds.source.endswith("cifar-10-python.tar.gz")
    full = load_dataset("cifar10", data_dir=tmp_path / "data")
    np.testing.assert_array_equal(full.y_train[:N], batches["data_batch_1"][b"labels"])
    # a different archive fails its checksum
    register_sources(monkeypatch, "cifar10", {"archive": b"other"})
    with pytest.raises(ChecksumError):
        load_dataset("cifar10", data_dir=tmp_path / "data")


def test_cifar_download_from_file_url(tmp_path, monkeypatch):
    src = tmp_path / "src" / "cifar-10-batches-py"
    write_cifar_folder(src, N)
    archive = tmp_path / "server.tar.gz"
    blob = tar_directory(src, archive, "cifar-10-batches-py")
    register_sources(monkeypatch, "cifar10", {"archive": blob},
                     urls={"archive": (archive.as_uri(),)})
    ds = load_dataset("cifar10", data_dir=tmp_path / "d")
    assert ds.X_train.shape == (60, 3072)
    assert (tmp_path / "d" / "cifar10" / "cifar-10-python.tar.gz").read_bytes() == blob
    # a bad checksum leaves nothing behind
    register_sources(monkeypatch, "cifar10", {"archive": b"not it"},
                     urls={"archive": (archive.as_uri(),)})
    with pytest.raises(ChecksumError):
        load_dataset("cifar10", data_dir=tmp_path / "e")
    # nothing is left behind: not a partial file, not even the folder the download created
    assert not (tmp_path / "e" / "cifar10").exists()


def test_cifar_missing_offline(tmp_path):
    with pytest.raises(DownloadError, match="cifar-10-python.tar.gz"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)


def _cifar_with(tmp_path, member, batch=None, raw=None):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    write_cifar_folder(folder, N)
    if raw is not None:
        (folder / member).write_bytes(raw)
    elif batch is None:
        (folder / member).unlink()
    else:
        (folder / member).write_bytes(pickle.dumps(batch, protocol=2))


@pytest.mark.parametrize("member, batch, raw, match", [
    ("data_batch_3", None, None, "data_batch_3.* missing"),
    ("test_batch", {b"labels": [0] * N}, None, "no 'data'"),
    ("data_batch_1", {b"data": np.zeros((N, 3072), np.uint8)}, None, "no 'labels'"),
    ("data_batch_2", {b"data": [[0] * 3072] * N, b"labels": [0] * N}, None, "found list"),
    ("data_batch_2", {b"data": np.zeros((N, 3071), np.uint8), b"labels": [0] * N}, None,
     "shape"),
    ("data_batch_2", {b"data": np.zeros((N, 3072), np.float32), b"labels": [0] * N}, None,
     "uint8"),
    ("data_batch_4", {b"data": np.zeros((N, 3072), np.uint8), b"labels": [0] * (N - 1)}, None,
     "labels"),
    ("test_batch", cifar_batch(N, 0, labels=[0] * (N - 1) + [10]), None, "label 10"),
    ("test_batch", None, b"garbage", "pickle"),
    ("test_batch", None, pickle.dumps([1, 2, 3], protocol=2), "dict"),
])
def test_cifar_validation(tmp_path, member, batch, raw, match):
    _cifar_with(tmp_path, member, batch, raw)
    with pytest.raises(DataError, match=match):
        load_dataset("cifar10", data_dir=tmp_path, download=False)


def test_cifar_pickle_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (shutil.rmtree, (str(tmp_path / "victim"),))

    (tmp_path / "victim").mkdir()
    _cifar_with(tmp_path, "test_batch", raw=pickle.dumps({b"data": Evil()}))
    with pytest.raises(DataError, match="not allowed"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert (tmp_path / "victim").is_dir()


def test_cifar_wrong_archives(tmp_path, monkeypatch):
    folder = tmp_path / "cifar10"
    folder.mkdir()
    archive = folder / "cifar-10-python.tar.gz"
    archive.write_bytes(b"this is not a tarball at all")
    register_sources(monkeypatch, "cifar10", {"archive": archive.read_bytes()})
    with pytest.raises(DataError, match="not a readable tar"):
        load_dataset("cifar10", data_dir=tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "readme.txt").write_text("hello")
    blob = tar_directory(other, archive, "something-else")
    register_sources(monkeypatch, "cifar10", {"archive": blob})
    with pytest.raises(DataError, match="not the official"):
        load_dataset("cifar10", data_dir=tmp_path)
    # a truncated gzip stream
    src = tmp_path / "src"
    write_cifar_folder(src, N)
    blob = tar_directory(src, archive, "cifar-10-batches-py")[:-200]
    archive.write_bytes(blob)
    register_sources(monkeypatch, "cifar10", {"archive": blob})
    with pytest.raises(DataError):
        load_dataset("cifar10", data_dir=tmp_path)


# ------------------------------------------------------------------ image folders

def test_imagefolder_directory_png(tmp_path):
    written = write_image_tree(tmp_path / "tree")
    ds = load_dataset(f"imagefolder:{tmp_path / 'tree'}", data_dir=tmp_path / "cache")
    assert ds.class_names == ["ant", "bee", "cat"]  # sorted by name
    assert ds.image_shape == (4, 5, 3)
    assert ds.X_train.shape == (9, 60) and ds.X_test.shape == (6, 60)
    assert ds.y_train.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    np.testing.assert_allclose(ds.X_train[0], written["train/ant/0000.png"].reshape(-1) / 255.0)
    np.testing.assert_allclose(ds.X_test[-1], written["test/cat/0001.png"].reshape(-1) / 255.0)


def test_imagefolder_mistakes_get_a_way_out(tmp_path):
    """A missing path and a test class without training images were refused without a
    way out ('imagefolder: /x does not exist'); following the new one works."""
    import shutil

    from kernelfit.errors import DataError, InputError

    with pytest.raises(InputError, match="does not exist; give the path of a folder holding "
                                         "train/<class>/ and test/<class>/"):
        load_dataset(f"imagefolder:{tmp_path / 'nowhere'}", data_dir=tmp_path / "cache")
    write_image_tree(tmp_path / "tree", n_train=1, n_test=1)
    shutil.rmtree(tmp_path / "tree" / "train" / "bee")
    with pytest.raises(DataError, match=r"test classes \['bee'\] have no training folder; "
                                        r"add train/bee/ .* or move test/bee/ out"):
        load_dataset(f"imagefolder:{tmp_path / 'tree'}", data_dir=tmp_path / "cache")
    shutil.rmtree(tmp_path / "tree" / "test" / "bee")  # the second way out
    assert load_dataset(f"imagefolder:{tmp_path / 'tree'}",
                        data_dir=tmp_path / "cache").class_names == ["ant", "cat"]


def test_imagefolder_jpeg(tmp_path):
    write_image_tree(tmp_path / "jpg", ext=".jpg", n_train=2, n_test=1)
    ds = load_dataset(f"imagefolder:{tmp_path / 'jpg'}", data_dir=tmp_path / "cache")
    assert ds.X_train.shape == (6, 60) and ds.image_shape == (4, 5, 3)
    assert 0.0 <= ds.X_train.min() and ds.X_train.max() <= 1.0


def test_imagefolder_grayscale_and_nested_root(tmp_path):
    write_image_tree(tmp_path / "outer" / "inner", mode="L", classes=("b", "a"))
    ds = load_dataset(f"imagefolder:{tmp_path / 'outer'}", data_dir=tmp_path / "cache")
    assert ds.image_shape == (4, 5) and ds.class_names == ["a", "b"]


def test_imagefolder_tarball_and_cache(tmp_path, monkeypatch):
    tree = tmp_path / "src" / "mini"
    written = write_image_tree(tree)
    archive = tmp_path / "mini.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname="mini")
    cache = tmp_path / "cache"
    ds = load_dataset(f"imagefolder:{archive}", data_dir=cache)
    assert ds.X_train.shape == (9, 60) and ds.source == str(archive)
    np.testing.assert_allclose(ds.X_train[0], written["train/ant/0000.png"].reshape(-1) / 255)
    entries = list((cache / "imagefolder").iterdir())
    assert len(entries) == 1 and (entries[0] / "meta.json").is_file()

    # the second load comes from the cache, without decoding
    from kernelfit.datasets import imagefolder

    def no_decode(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(imagefolder, "_decode_all", no_decode)
    again = load_dataset(f"imagefolder:{archive}", data_dir=cache, n_train=3, seed=1)
    assert again.X_train.shape == (3, 60)
    monkeypatch.undo()
    monkeypatch.setattr(cifar, "BATCH_ROWS", N)

    # a corrupt cache entry is rebuilt
    np.save(entries[0] / "X_train.npy", np.zeros((2, 2), np.uint8))
    rebuilt = load_dataset(f"imagefolder:{archive}", data_dir=cache)
    np.testing.assert_array_equal(rebuilt.X_train, ds.X_train)
    (entries[0] / "X_test.npy").write_bytes(b"garbage")
    np.testing.assert_array_equal(load_dataset(f"imagefolder:{archive}",
                                               data_dir=cache).X_test, ds.X_test)
    assert not [p for p in (cache / "imagefolder").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("corrupt", ["zeroed", "shifted-labels"])
def test_imagefolder_cache_same_size_corruption_is_rebuilt(tmp_path, corrupt):
    """Corruption that keeps shapes and dtypes (zeroed bytes, shifted labels) is caught by
    the per-array SHA-256 and the entry is rebuilt from the images."""
    write_image_tree(tmp_path / "tree")
    cache = tmp_path / "cache"
    ds = load_dataset(f"imagefolder:{tmp_path / 'tree'}", data_dir=cache)
    entry = next((cache / "imagefolder").iterdir())
    if corrupt == "zeroed":
        arr = np.load(entry / "X_train.npy")
        np.save(entry / "X_train.npy", np.zeros_like(arr))
    else:
        y = np.load(entry / "y_train.npy")
        np.save(entry / "y_train.npy", np.roll(y, 1))
    again = load_dataset(f"imagefolder:{tmp_path / 'tree'}", data_dir=cache)
    np.testing.assert_array_equal(again.X_train, ds.X_train)
    np.testing.assert_array_equal(again.y_train, ds.y_train)


def test_imagefolder_cache_falls_back_when_data_dir_read_only(tmp_path, isolated_data_env):
    write_image_tree(tmp_path / "tree")
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, so nothing can be created below it")
    from kernelfit.datasets.imagefolder import load_imagefolder
    load_imagefolder(tmp_path / "tree", cache_dirs=[blocked / "x", isolated_data_env])
    assert (isolated_data_env / "imagefolder").is_dir()


def test_imagefolder_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'missing'}")
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="train/<class>"):
        load_dataset(f"imagefolder:{tmp_path / 'flat'}")
    write_image_tree(tmp_path / "sizes")
    from PIL import Image
    Image.fromarray(np.zeros((7, 7, 3), np.uint8)).save(tmp_path / "sizes/test/bee/0009.png")
    with pytest.raises(DataError, match="0009.png.*one size"):
        load_dataset(f"imagefolder:{tmp_path / 'sizes'}", data_dir=tmp_path / "c1")
    write_image_tree(tmp_path / "broken")
    (tmp_path / "broken/train/ant/0001.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="0001.png.*cannot decode"):
        load_dataset(f"imagefolder:{tmp_path / 'broken'}", data_dir=tmp_path / "c2")
    write_image_tree(tmp_path / "extra")
    (tmp_path / "extra/test/zebra").mkdir()
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "extra/test/zebra/0.png")
    with pytest.raises(DataError, match="zebra"):
        load_dataset(f"imagefolder:{tmp_path / 'extra'}", data_dir=tmp_path / "c3")
    bad_tar = tmp_path / "bad.tar.gz"
    bad_tar.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match="not a readable tar"):
        load_dataset(f"imagefolder:{bad_tar}")


@pytest.mark.parametrize("layout", ["numpy._core", "numpy.core"])
def test_cifar_batches_load_under_either_numpy_core_layout(monkeypatch, layout):
    """The official batches name numpy.core (pickled under NumPy 1); NumPy 2 calls it
    numpy._core. The loader resolved only numpy._core, so under NumPy 1 every official
    batch was refused as unreadable; it now asks the installed NumPy (here both names
    resolve: NumPy 2 keeps numpy.core as an alias)."""
    import warnings

    import kernelfit.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "_numpy_core", lambda: layout)
    monkeypatch.setattr(cifar, "BATCH_ROWS", 2)
    data = (np.arange(2 * 3072) % 251).astype(np.uint8).reshape(2, 3072)
    raw = pickle.dumps({b"data": data, b"labels": [3, 7]}, protocol=2)
    # as NumPy 1 pickles it: its globals under numpy.core
    raw = raw.replace(b"numpy._core", b"numpy.core")
    assert b"numpy.core.multiarray" in raw
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # NumPy 2's numpy.core alias
        X, y = cifar.parse_batch(raw, "data_batch_1")
    assert X.shape == (2, 32, 32, 3) and list(y) == [3, 7]
    assert np.array_equal(X[..., 0].reshape(2, -1), data[:, :1024])  # the red plane
