"""Datasets for kernelfit: MNIST, Fashion-MNIST, CIFAR-10, scikit-learn's digits and image
folders, as float arrays ready for kernel interpolation.

>>> from kernelfit.datasets import load_dataset
>>> ds = load_dataset("digits", n_train=100, balanced=True)
>>> ds.X_train.shape
(100, 64)

Files are read from ``data_dir`` (``--data-dir``), else ``$KERNELFIT_DATA``, else the per-user
cache (``$XDG_CACHE_HOME/kernelfit`` or ``~/.cache/kernelfit``), with one folder per dataset
(``mnist/``, ``fashion-mnist/``, ``cifar10/``). Missing files are downloaded from the canonical
sources and verified against published SHA-256 checksums (see :mod:`.sources`).
"""

from __future__ import annotations

from ._paths import ENV_VAR, default_cache_dir, resolve_data_dir
from ._types import Dataset
from .registry import (DATASET_NAMES, dataset_location, fetch_dataset, load_dataset, load_raw,
                       scaled_pixels)

__all__ = ["load_dataset", "Dataset", "DATASET_NAMES", "resolve_data_dir", "default_cache_dir",
           "fetch_dataset", "load_raw", "dataset_location", "scaled_pixels", "ENV_VAR"]
