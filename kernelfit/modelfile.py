"""Model files: a fitted estimator and its fitted feature map, stored atomically.

:func:`save_model` writes what ``kernelfit solve --save`` stores and :func:`load_model`
reads it back for ``kernelfit predict``. The file is a pickle: load only model files you
made or trust.
"""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Optional

from . import __version__
from ._io import check_format
from .errors import InputError

__all__ = ["MODEL_FORMAT", "MODEL_VERSION", "check_save_path", "save_model", "load_model"]

MODEL_FORMAT = "kernelfit-model"
MODEL_VERSION = 1


def check_save_path(path) -> None:
    """Raise :class:`InputError` unless ``path`` can be written as a new model file."""
    from ._io import check_writable_file

    check_writable_file(path, param="save")


def _host_copy(estimator):
    """``estimator`` itself when it lives on the CPU, else a shallow copy whose arrays are
    host (NumPy) arrays, so the file loads anywhere. The fitted estimator is not changed."""
    from .backend import get_backend

    be = get_backend(estimator.device_)
    if be.device == "cpu":
        return estimator
    host = copy.copy(estimator)
    host.X_fit_ = be.to_numpy(estimator.X_fit_)
    host.alpha_ = be.to_numpy(estimator.alpha_)
    host.device_ = "cpu"
    return host


def save_model(path, estimator, *, feature_map=None, meta: Optional[dict] = None) -> None:
    """Store a fitted model (estimator + fitted feature map) atomically.

    A GPU estimator is stored as a host copy; the estimator passed in stays on the GPU.
    """
    check_save_path(path)
    payload = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "kernelfit": __version__,
               "estimator": _host_copy(estimator), "feature_map": feature_map,
               "meta": meta or {}}
    from ._io import atomic_writer

    with atomic_writer(path, "wb") as fh:
        pickle.dump(payload, fh, protocol=pickle.HIGHEST_PROTOCOL)


def load_model(path) -> dict:
    """Load a model file written by :func:`save_model`; raises InputError if it is not one."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"model file {path} does not exist")
    try:
        with open(p, "rb") as fh:
            payload = pickle.load(fh)
    except Exception as exc:  # unpickling garbage raises many exception types
        raise InputError(f"{path} is not a readable kernelfit model file ({exc.__class__.__name__})"
                         ) from None
    return check_format(payload, path, MODEL_FORMAT, MODEL_VERSION, "model file")
