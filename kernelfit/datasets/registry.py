"""``load_dataset``: one entry point over every dataset kernelfit knows."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ..errors import InputError
from ._paths import PathLike, default_cache_dir, resolve_data_dir
from ._subset import check_count, select_indices
from ._types import Dataset, RawData

__all__ = ["DATASET_NAMES", "DATASET_DESCRIPTIONS", "PIXEL_DATASETS", "parse_name",
           "scaled_pixels", "dataset_location", "load_raw", "load_dataset", "fetch_dataset"]

#: the dataset names; ``imagefolder`` is used as ``imagefolder:PATH``
DATASET_NAMES = ("mnist", "fashion-mnist", "cifar10", "digits", "imagefolder", "npz")

DATASET_DESCRIPTIONS: Dict[str, str] = {
    "mnist": "MNIST handwritten digits, 60,000 + 10,000 images of 28x28 (IDX files)",
    "fashion-mnist": "Fashion-MNIST clothing, 60,000 + 10,000 images of 28x28 (IDX files)",
    "cifar10": "CIFAR-10, 50,000 + 10,000 colour images of 32x32 (official Python batches)",
    "digits": "scikit-learn's bundled 8x8 digits, 1,438 + 359 images (no download)",
    "imagefolder": "imagefolder:PATH, a train/<class>/ + test/<class>/ tree of images or a "
                   "tar archive of one",
    "npz": "npz:PATH, your own arrays: X_train, y_train (and X_test, y_test, image_shape) "
           "saved with numpy.savez; values are used as given",
}

#: the datasets whose loaders scale pixels to [0, 1] (``RawData.scale``: 255 for 8-bit images,
#: 16 for digits); ``npz:`` arrays are used as given
PIXEL_DATASETS = ("mnist", "fashion-mnist", "cifar10", "digits", "imagefolder")

#: share of scikit-learn's digits kept for testing (the last examples)
DIGITS_TEST_FRACTION = 0.2


def parse_name(name: str):
    """Split a dataset name into ``(kind, argument)``; raise InputError for unknown names."""
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"dataset name must be a non-empty string, got {name!r}")
    text = name.strip()
    kind, sep, arg = text.partition(":")
    kind = kind.strip().lower().replace("_", "-")
    if kind in ("fashion", "fashionmnist"):
        kind = "fashion-mnist"
    if kind in ("cifar-10",):
        kind = "cifar10"
    if kind in ("imagefolder", "npz"):
        if not sep or not arg.strip():
            raise InputError(f"{kind} needs a path: {kind}:PATH")
        return kind, arg.strip()
    if kind not in DATASET_NAMES or sep:
        low = text.strip().lower()
        hint = (f"; for your arrays, npz:{text.strip()}" if low.endswith(".npz") else
                f"; for a folder or archive of images, imagefolder:{text.strip()}"
                if low.endswith((".tar.gz", ".tgz", ".tar")) or os.path.isdir(text.strip())
                else "")
        raise InputError(f"unknown dataset {name!r}{hint}; known: "
                         f"{', '.join(DATASET_NAMES[:-2])}, imagefolder:PATH, npz:PATH")
    return kind, None


def scaled_pixels(name) -> bool:
    """Whether ``name`` is a dataset of :data:`PIXEL_DATASETS` (pixels scaled to [0, 1]);
    False for ``npz:`` arrays, for None and for names kernelfit does not know (no error)."""
    try:
        kind, _ = parse_name(name)
    except InputError:
        return False
    return kind in PIXEL_DATASETS


def dataset_location(name: str) -> Optional[str]:
    """The absolute path behind a dataset read from a file or folder (``npz:PATH``,
    ``imagefolder:PATH``; a relative PATH is resolved against the current folder), else
    None. A model file stores it, so that its data is found from any folder."""
    kind, arg = parse_name(name)
    if kind in ("npz", "imagefolder"):
        return str(Path(arg).expanduser().resolve())
    return None


def _load_digits() -> RawData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.asarray(bunch.images).astype(np.uint8)  # values 0..16
    labels = np.asarray(bunch.target, dtype=np.int64)
    n_test = int(round(len(labels) * DIGITS_TEST_FRACTION))
    cut = len(labels) - n_test
    return RawData(name="digits", X_train=images[:cut], y_train=labels[:cut],
                   X_test=images[cut:], y_test=labels[cut:], image_shape=(8, 8),
                   class_names=[str(d) for d in range(10)],
                   source="sklearn.datasets.load_digits (bundled with scikit-learn)", scale=16.0)


def _imagefolder_cache_dirs(data_dir: Path) -> List[Path]:
    dirs = [data_dir, default_cache_dir()]
    return [d for i, d in enumerate(dirs) if d not in dirs[:i]]


def load_raw(name: str, *, data_dir: Optional[PathLike] = None, download: bool = True,
             continuous: bool = False) -> RawData:
    """Load a dataset as stored: integer images of shape ``(n, *image_shape)``, all examples.
    ``continuous``: accept an ``npz:`` file's real-valued labels (regression targets; see
    :func:`~kernelfit.datasets.userarrays.load_npz`), else refuse them."""
    kind, arg = parse_name(name)
    if kind == "digits":
        return _load_digits()
    if kind == "npz":
        from .userarrays import load_npz

        return load_npz(arg, continuous=continuous)
    directory = resolve_data_dir(data_dir)
    if kind in ("mnist", "fashion-mnist"):
        from .mnist import load_idx_dataset

        return load_idx_dataset(kind, directory, download_missing=bool(download))
    if kind == "cifar10":
        from .cifar import load_cifar10

        return load_cifar10(directory, download_missing=bool(download))
    from .imagefolder import load_imagefolder

    return load_imagefolder(arg, cache_dirs=_imagefolder_cache_dirs(directory))


def fetch_dataset(name: str, *, data_dir: Optional[PathLike] = None) -> RawData:
    """Download (when missing) and verify every file of ``name``; return the stored data."""
    return load_raw(name, data_dir=data_dir, download=True)


def _check_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise InputError(f"dtype must be a floating-point type, got {dtype!r}") from None
    if not np.issubdtype(dt, np.floating):
        raise InputError(f"dtype must be a floating-point type, got {dt}")
    return dt


def _to_features(images: np.ndarray, idx: Optional[np.ndarray], scale: float,
                 dtype: np.dtype) -> np.ndarray:
    picked = images if idx is None else images[idx]
    X = np.empty((picked.shape[0], int(np.prod(picked.shape[1:], dtype=np.int64))), dtype=dtype)
    np.divide(picked.reshape(X.shape), dtype.type(scale), out=X, casting="unsafe")
    return X


def load_dataset(name: str, *, data_dir: Optional[PathLike] = None, n_train: Optional[int] = None,
                 n_test: Optional[int] = None, balanced: bool = False, seed: int = 0,
                 download: bool = True, dtype=np.float64, continuous: bool = False) -> Dataset:
    """Load a dataset as ``(n, d)`` float arrays scaled to ``[0, 1]``.

    Parameters
    ----------
    name:
        ``mnist``, ``fashion-mnist``, ``cifar10``, ``digits`` or ``imagefolder:PATH``.
    data_dir:
        Where dataset files live (and are downloaded to); default ``$KERNELFIT_DATA``, then
        the per-user cache (see :func:`resolve_data_dir`).
    n_train, n_test:
        Subset sizes (``None``: all). More than available raises InputError.
    balanced:
        Take (as near as possible) equal numbers of each class.
    seed:
        Seed of the subset choice (``numpy.random.default_rng``); train and test use
        independent streams, so ``n_test`` does not change the training subset. Subsets keep
        the original order.
    download:
        Fetch missing files; with ``False`` a missing file raises DownloadError.
    dtype:
        Floating-point dtype of ``X_train`` and ``X_test``.
    continuous:
        Accept an ``npz:`` file's real-valued labels (regression targets): ``y_*`` are then
        indices of their distinct values, which ``class_labels`` holds as stored. Without
        it they are refused (classes are integers or strings).
    """
    dt = _check_dtype(dtype)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    raw = load_raw(name, data_dir=data_dir, download=download, continuous=continuous)
    k_train = check_count(n_train, len(raw.y_train), "n_train")
    k_test = check_count(n_test, len(raw.y_test), "n_test")
    train_seq, test_seq = np.random.SeedSequence(int(seed)).spawn(2)
    idx_train = select_indices(raw.y_train, k_train, balanced=balanced,
                               n_classes=raw.n_classes, rng=np.random.default_rng(train_seq))
    idx_test = select_indices(raw.y_test, k_test, balanced=balanced,
                              n_classes=raw.n_classes, rng=np.random.default_rng(test_seq))
    y_train = raw.y_train if idx_train is None else raw.y_train[idx_train]
    y_test = raw.y_test if idx_test is None else raw.y_test[idx_test]
    return Dataset(
        name=raw.name,
        X_train=_to_features(raw.X_train, idx_train, raw.scale, dt),
        y_train=np.ascontiguousarray(y_train, dtype=np.int64),
        X_test=_to_features(raw.X_test, idx_test, raw.scale, dt),
        y_test=np.ascontiguousarray(y_test, dtype=np.int64),
        image_shape=tuple(raw.image_shape),
        n_classes=raw.n_classes,
        class_names=list(raw.class_names),
        source=raw.source,
        class_labels=raw.class_labels,
    )
