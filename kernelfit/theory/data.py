"""MNIST for the checks in ``proofs/``, read through :mod:`kernelfit.datasets` (the same
files, validated against the same checksums as ``kernelfit solve`` reads).

The data directory is the ``data_dir`` argument, else ``$KERNELFIT_DATA``, else the per-user
cache (:func:`kernelfit.datasets.resolve_data_dir`). Nothing is downloaded here:
:func:`find_data_dir` returns ``None`` when MNIST is not there, so a check can report itself
as skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from ..datasets import load_dataset, load_raw, resolve_data_dir
from ..datasets.mnist import locate_idx_files
from ..errors import DataError

__all__ = ["find_data_dir", "load_mnist", "mnist_missing_message"]


def _candidates(data_dir) -> Iterator[Path]:
    yield resolve_data_dir(data_dir)


def find_data_dir(data_dir: Optional[str] = None) -> Optional[Path]:
    """The data directory when it holds the four MNIST files, else ``None``."""
    for d in _candidates(data_dir):
        try:
            locate_idx_files("mnist", Path(d), download_missing=False)
        except DataError:
            continue
        return Path(d)
    return None


def mnist_missing_message(data_dir: Optional[str] = None) -> str:
    """What a check says when MNIST is not in the data directory: the folder it looked in."""
    return (f"MNIST not found in {resolve_data_dir(data_dir)} (its four IDX files in mnist/; "
            "nothing is downloaded for the checks); give the folder holding mnist/, or set "
            "$KERNELFIT_DATA")


def load_mnist(data_dir: Optional[str] = None, integer: bool = False):
    """``(X_train, y_train, X_test, y_test)``; pixels in [0, 1] float64 (or raw uint8 ints).

    Raises :class:`DataError` when MNIST is not found.
    """
    d = find_data_dir(data_dir)
    if d is None:
        raise DataError(mnist_missing_message(data_dir), param="data_dir")
    if integer:
        raw = load_raw("mnist", data_dir=d, download=False)
        return (raw.X_train.reshape(raw.X_train.shape[0], -1), raw.y_train.astype(np.int64),
                raw.X_test.reshape(raw.X_test.shape[0], -1), raw.y_test.astype(np.int64))
    ds = load_dataset("mnist", data_dir=d, download=False)
    return (np.asarray(ds.X_train, dtype=np.float64), np.asarray(ds.y_train, dtype=np.int64),
            np.asarray(ds.X_test, dtype=np.float64), np.asarray(ds.y_test, dtype=np.int64))
