"""Writers of small dataset files in the real formats, shared by the dataset tests (no tests here)."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import tarfile
import tempfile
from pathlib import Path
from typing import Dict

import numpy as np
import pytest

from kernelfit.datasets import sources
from kernelfit.datasets.idx import encode_idx
from kernelfit.datasets.sources import RemoteFile


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_idx_arrays(n_train=40, n_test=20, shape=(6, 5), n_classes=10, seed=0):
    rng = np.random.default_rng(seed)
    X_train = rng.integers(0, 256, size=(n_train,) + shape, dtype=np.uint8)
    X_test = rng.integers(0, 256, size=(n_test,) + shape, dtype=np.uint8)
    y_train = (np.arange(n_train) % n_classes).astype(np.uint8)
    rng.shuffle(y_train)
    y_test = (np.arange(n_test) % n_classes).astype(np.uint8)
    return X_train, y_train, X_test, y_test


IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def write_idx_dataset(data_dir: Path, name="mnist", arrays=None, compress=True,
                      overrides: Dict[str, bytes] = None) -> Dict[str, bytes]:
    """Write the four IDX files under ``data_dir/name``; return role -> stored bytes."""
    arrays = arrays if arrays is not None else make_idx_arrays()
    contents = dict(zip(("train_images", "train_labels", "test_images", "test_labels"),
                        (encode_idx(a) for a in arrays)))
    contents.update(overrides or {})
    folder = Path(data_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    stored = {}
    for role, body in contents.items():
        fname = IDX_NAMES[role] if compress else IDX_NAMES[role][:-3]
        blob = gzip.compress(body, mtime=0) if compress else body
        (folder / fname).write_bytes(blob)
        stored[role] = blob
    return stored


def register_sources(monkeypatch, name: str, stored: Dict[str, bytes], urls=None,
                     content: Dict[str, bytes] = None) -> None:
    """Make ``sources.SOURCES[name]`` describe the given files (so checksums match)."""
    table = {}
    for role, blob in stored.items():
        fname = IDX_NAMES.get(role, "cifar-10-python.tar.gz")
        table[role] = RemoteFile(
            filename=fname, urls=tuple((urls or {}).get(role, ())), sha256=sha256(blob),
            content_sha256=sha256(content[role]) if content and role in content else None)
    monkeypatch.setitem(sources.SOURCES, name, table)


def cifar_batch(n: int, seed: int, labels=None, **extra) -> dict:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    batch = {b"batch_label": b"test batch", b"data": data,
             b"labels": list(labels if labels is not None else (np.arange(n) % 10).tolist()),
             b"filenames": [f"img{i}.png".encode() for i in range(n)]}
    batch.update(extra)
    return batch


CIFAR_MEMBERS = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def write_cifar_folder(folder: Path, n: int, batches=None, protocol=2) -> Dict[str, dict]:
    folder.mkdir(parents=True, exist_ok=True)
    batches = batches or {m: cifar_batch(n, i) for i, m in enumerate(CIFAR_MEMBERS)}
    for member, batch in batches.items():
        (folder / member).write_bytes(pickle.dumps(batch, protocol=protocol))
    meta = {b"label_names": [c.encode() for c in ["airplane", "automobile", "bird", "cat",
                                                  "deer", "dog", "frog", "horse", "ship",
                                                  "truck"]], b"num_cases_per_batch": n}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=protocol))
    return batches


def tar_directory(src: Path, dest: Path, arcname: str) -> bytes:
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(src, arcname=arcname)
    return dest.read_bytes()


def write_image_tree(root: Path, classes=("cat", "ant", "bee"), n_train=3, n_test=2,
                     size=(5, 4), mode="RGB", ext=".png", seed=0) -> Dict[str, np.ndarray]:
    """Write train/<class>/ and test/<class>/ images; return the pixel arrays by path."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    written = {}
    for split, count in (("train", n_train), ("test", n_test)):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
                arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i:04d}{ext}")
                written[f"{split}/{c}/{i:04d}{ext}"] = arr
    return written


def unwritable_folder(base: Path) -> Path:
    """A folder nobody can create files in: permission bits for a normal user, a read-only
    mount for root (which ignores the bits); skips the test where there is none."""
    ro = base / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    for c in (ro, Path("/sys/fs"), Path("/proc")):
        try:
            fd, p = tempfile.mkstemp(dir=c)
        except OSError:
            return c
        os.close(fd)
        os.unlink(p)
    pytest.skip("no unwritable folder available")
