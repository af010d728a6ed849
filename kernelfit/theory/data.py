"""MNIST for the checks: the shared loader (:func:`kernelfit.datasets.load_dataset`) when it
works, else a small private IDX reader of the ``*.gz`` files in ``<data_dir>/mnist``.

The data directory is, in order: the ``data_dir`` argument, ``$KERNELFIT_DATA``, and
``../shared/data`` next to the source checkout. :func:`find_data_dir` returns ``None`` when none
holds MNIST, so a check can report itself as skipped.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import DataError

__all__ = ["find_data_dir", "load_mnist"]

_FILES = {"X_train": "train-images-idx3-ubyte.gz", "y_train": "train-labels-idx1-ubyte.gz",
          "X_test": "t10k-images-idx3-ubyte.gz", "y_test": "t10k-labels-idx1-ubyte.gz"}


def _candidates(data_dir):
    if data_dir:
        yield Path(data_dir)
        return
    env = os.environ.get("KERNELFIT_DATA")
    if env:
        yield Path(env)
    yield Path(__file__).resolve().parents[3] / "shared" / "data"


def find_data_dir(data_dir: Optional[str] = None) -> Optional[Path]:
    """The first candidate directory holding the four MNIST files, or ``None``."""
    for d in _candidates(data_dir):
        if all((d / "mnist" / f).is_file() for f in _FILES.values()):
            return d
    return None


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 8 or raw[0] != 0 or raw[1] != 0 or raw[2] != 8:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    off = 4 + 4 * ndim
    if len(raw) - off != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: header says {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=off).reshape(dims)


def load_mnist(data_dir: Optional[str] = None, integer: bool = False):
    """``(X_train, y_train, X_test, y_test)``; pixels in [0, 1] float64 (or raw uint8 ints).

    Raises :class:`DataError` when MNIST is not found.
    """
    d = find_data_dir(data_dir)
    if d is None:
        raise DataError("MNIST not found (give data_dir or set KERNELFIT_DATA)",
                        param="data_dir")
    if not integer:
        try:
            from ..datasets import load_dataset  # the shared loader, once it exists
            ds = load_dataset("mnist", data_dir=str(d))
            return (np.asarray(ds.X_train, dtype=np.float64), np.asarray(ds.y_train),
                    np.asarray(ds.X_test, dtype=np.float64), np.asarray(ds.y_test))
        except (ImportError, AttributeError, TypeError):
            pass
    arrs = {k: _read_idx(d / "mnist" / f) for k, f in _FILES.items()}
    Xtr = arrs["X_train"].reshape(arrs["X_train"].shape[0], -1)
    Xte = arrs["X_test"].reshape(arrs["X_test"].shape[0], -1)
    if integer:
        return Xtr, arrs["y_train"].astype(np.int64), Xte, arrs["y_test"].astype(np.int64)
    return (Xtr / 255.0, arrs["y_train"].astype(np.int64), Xte / 255.0,
            arrs["y_test"].astype(np.int64))
