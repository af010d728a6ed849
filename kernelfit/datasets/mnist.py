"""MNIST and Fashion-MNIST from their IDX files (gzip as published, or uncompressed)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import ChecksumError, DataError, InputError
from . import sources
from ._fetch import download_all, missing_files_error, sha256_bytes, verify_bytes
from ._types import RawData
from .idx import IMAGES_MAGIC, LABELS_MAGIC, parse_idx, read_idx_bytes

__all__ = ["IDX_DATASETS", "locate_idx_files", "load_idx_dataset"]

MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]

#: dataset name -> class names
IDX_DATASETS: Dict[str, List[str]] = {"mnist": MNIST_CLASSES, "fashion-mnist": FASHION_CLASSES}
_ROLES = ("train_images", "train_labels", "test_images", "test_labels")


def _candidates(directory: Path, gz_name: str) -> Tuple[Path, Path]:
    raw_name = gz_name[:-3] if gz_name.endswith(".gz") else gz_name
    return directory / gz_name, directory / raw_name


def locate_idx_files(name: str, data_dir: Path, *, download_missing: bool) -> Dict[str, Path]:
    """Paths of the four IDX files of ``name`` under ``data_dir/name``, fetching missing ones.

    A ``.gz`` file is preferred; an uncompressed copy (same name without ``.gz``) is used when
    it is the only one present.
    """
    directory = Path(data_dir) / name
    files = sources.SOURCES[name]
    found: Dict[str, Path] = {}
    missing = []
    for role in _ROLES:
        gz_path, raw_path = _candidates(directory, files[role].filename)
        if gz_path.is_file():
            found[role] = gz_path
        elif raw_path.is_file():
            found[role] = raw_path
        else:
            missing.append(role)
    names = [files[r].filename for r in missing]
    if missing and Path(data_dir).absolute().name == name and all(
            any(p.is_file() for p in _candidates(Path(data_dir), f)) for f in names):
        # data_dir is the dataset's own folder (data_dir/name/ expected): not downloaded
        # again into data_dir/name/, the error says where the data directory is
        raise missing_files_error(name, directory, names, f"they are in {data_dir} itself",
                                  found_in=Path(data_dir))
    if missing and not download_missing:
        raise missing_files_error(name, directory, names, "downloading is disabled")
    paths = download_all([files[r] for r in missing], directory, name)
    found.update(zip(missing, paths))
    return found


def _check_other_dataset(name: str, role: str, path: Path, content: bytes) -> None:
    """Refuse another IDX dataset's file (e.g. MNIST's under fashion-mnist/), recognized by
    that dataset's published content checksum."""
    digest = None
    for other in IDX_DATASETS:
        remote = sources.SOURCES[other].get(role)
        if other == name or remote is None or remote.content_sha256 is None:
            continue
        digest = digest or sha256_bytes(content)
        if digest == remote.content_sha256:
            raise ChecksumError(f"{path} is {other}'s {remote.filename} (its published "
                                f"checksum), not {name}'s; put {name}'s own files in "
                                f"{path.parent}")


def _read_checked(path: Path, role: str, remote, expect_magic: int,
                  name: str = "", unverified: Optional[list] = None) -> np.ndarray:
    stored, content = read_idx_bytes(path)
    uncompressed = content is None
    verify_bytes(stored, remote, str(path), content, uncompressed_copy=uncompressed)
    if uncompressed and remote is not None and remote.content_sha256 is None:
        # only the .gz has a published checksum: this copy can be checked for structure only
        _check_other_dataset(name, role, path, stored)
        if unverified is not None:
            unverified.append(path.name)
    try:
        return parse_idx(stored if uncompressed else content, str(path),
                         expect_magic=expect_magic)
    except DataError as exc:  # a damaged copy: the way out is a good one
        raise DataError(f"{exc.message}; delete it to download it again, or replace it with "
                        "the official file", **exc.facts) from None


def _read_split(paths: Dict[str, Path], split: str, remotes, n_classes: int, name: str = "",
                unverified: Optional[list] = None):
    img_path, lab_path = paths[f"{split}_images"], paths[f"{split}_labels"]
    images = _read_checked(img_path, f"{split}_images", remotes.get(f"{split}_images"),
                           IMAGES_MAGIC, name, unverified)
    labels = _read_checked(lab_path, f"{split}_labels", remotes.get(f"{split}_labels"),
                           LABELS_MAGIC, name, unverified)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{img_path} holds {images.shape[0]} images but {lab_path} holds "
                        f"{labels.shape[0]} labels")
    if labels.size and int(labels.max()) >= n_classes:
        bad = int(labels.max())
        raise DataError(f"{lab_path}: label {bad} is outside 0..{n_classes - 1}")
    return images, labels.astype(np.int64)


def load_idx_dataset(name: str, data_dir: Path, *, download_missing: bool = True) -> RawData:
    """Load ``mnist`` or ``fashion-mnist`` as stored (uint8 images of shape (n, 28, 28))."""
    if name not in IDX_DATASETS:
        raise InputError(f"unknown IDX dataset {name!r}")  # pragma: no cover - internal
    classes = IDX_DATASETS[name]
    paths = locate_idx_files(name, data_dir, download_missing=download_missing)
    remotes = sources.SOURCES[name]
    unverified: List[str] = []
    X_train, y_train = _read_split(paths, "train", remotes, len(classes), name, unverified)
    X_test, y_test = _read_split(paths, "test", remotes, len(classes), name, unverified)
    if unverified:
        warnings.warn(f"{name}: {', '.join(unverified)} in {Path(data_dir) / name} are "
                      f"uncompressed and {name} publishes checksums of its .gz files only, so "
                      "they are checked for structure but cannot be verified; use the "
                      "published .gz files to have them checked", UserWarning, stacklevel=3)
    if X_train.shape[1:] != X_test.shape[1:]:
        raise DataError(f"{name}: training images are {X_train.shape[1:]} but test images are "
                        f"{X_test.shape[1:]}")
    return RawData(name=name, X_train=X_train, y_train=y_train, X_test=X_test, y_test=y_test,
                   image_shape=tuple(int(s) for s in X_train.shape[1:]),
                   class_names=list(classes), source=str(Path(data_dir) / name))
