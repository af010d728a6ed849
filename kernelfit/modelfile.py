"""Model files: a fitted estimator and its fitted feature map, stored atomically.

:func:`save_model` writes what ``kernelfit solve --save`` stores and :func:`load_model`
reads it back for ``kernelfit predict``. The file is a pickle: load only model files you
made or trust. Since version 2 the model is pickled into bytes stored with their SHA-256,
so a file changed after it was saved (a damaged copy, a partial overwrite) is refused
instead of predicting with altered coefficients; version 1 files (no checksum) still load.
"""

from __future__ import annotations

import copy
import hashlib
import pickle
from pathlib import Path
from typing import Optional

from . import __version__
from ._io import check_format
from .errors import InputError

__all__ = ["MODEL_FORMAT", "MODEL_VERSION", "check_save_path", "save_model", "load_model",
           "input_range"]

MODEL_FORMAT = "kernelfit-model"
MODEL_VERSION = 2
#: versions :func:`load_model` reads (1: the model pickled in the file itself, no checksum)
READ_VERSIONS = (1, 2)


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
    body = pickle.dumps({"estimator": _host_copy(estimator), "feature_map": feature_map,
                         "meta": meta or {}}, protocol=pickle.HIGHEST_PROTOCOL)
    payload = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "kernelfit": __version__,
               "sha256": hashlib.sha256(body).hexdigest(), "body": body}
    from ._io import atomic_writer

    with atomic_writer(path, "wb") as fh:
        pickle.dump(payload, fh, protocol=pickle.HIGHEST_PROTOCOL)


def input_range(X) -> list:
    """``[min, max]`` of the training inputs a model was fitted on, as given (before any
    feature map): ``kernelfit predict`` compares new inputs with it."""
    import numpy as np

    X = np.asarray(X)
    return [float(X.min()), float(X.max())] if X.size else [0.0, 0.0]


def _unpickled(data: bytes, path):
    try:
        return pickle.loads(data)
    except Exception as exc:  # unpickling garbage raises many exception types
        raise InputError(f"{path} cannot be read as a kernelfit model file "
                         f"({exc.__class__.__name__}): damaged, truncated, or not a model "
                         "file", cause="unreadable") from None


def load_model(path) -> dict:
    """Load a model file written by :func:`save_model`: a dict with ``estimator`` (fitted),
    ``feature_map`` (fitted, or None) and ``meta``. Raises InputError if the file is not
    one, is damaged (its checksum does not match) or holds no fitted model."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{path} is a folder, not a model file", cause="folder")
    if p.exists() and not p.is_file():
        raise InputError(f"{path} is not a regular file", cause="not_a_model")
    if not p.is_file():
        raise InputError(f"model file {path} does not exist", cause="missing")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}", cause="unreadable"
                         ) from None
    payload = _unpickled(data, path)
    if isinstance(payload, dict) and payload.get("format") == MODEL_FORMAT:
        version = payload.get("version")
        if version not in READ_VERSIONS:
            raise InputError(f"{path} has model file version {version!r}, this kernelfit "
                             f"reads versions {', '.join(map(str, READ_VERSIONS))}",
                             cause="version")
    else:
        version = MODEL_VERSION
    check_format(payload, path, MODEL_FORMAT, version, "model file")
    if version >= 2:
        body = payload.get("body")
        if not isinstance(body, bytes) or (hashlib.sha256(body).hexdigest()
                                           != payload.get("sha256")):
            raise InputError(f"{path} is damaged: its contents do not match the checksum "
                             "stored when it was saved (changed or truncated since)",
                             cause="damaged")
        inner = _unpickled(body, path)
        if not isinstance(inner, dict):
            raise InputError(f"{path} is not a kernelfit model file: its body is not a "
                             "model", cause="not_a_model")
        payload = dict(payload, **inner)
    return _checked_model(payload, path)


def _checked_model(payload: dict, path) -> dict:
    """``payload`` when it holds a fitted estimator (and a fitted feature map or none)."""
    from .estimator import KernelInterpolator
    from .features._common import FeatureMap

    est, fmap = payload.get("estimator"), payload.get("feature_map")
    if not isinstance(est, KernelInterpolator) or not hasattr(est, "alpha_"):
        raise InputError(f"{path} is not a kernelfit model file: it holds no fitted "
                         "estimator", cause="not_a_model")
    if fmap is not None and not (isinstance(fmap, FeatureMap)
                                 and hasattr(fmap, "n_features_out_")):
        raise InputError(f"{path} is not a kernelfit model file: its feature map is not a "
                         "fitted one", cause="not_a_model")
    if not isinstance(payload.get("meta", {}), dict):
        raise InputError(f"{path} is not a kernelfit model file: its metadata is not a "
                         "mapping", cause="not_a_model")
    payload.setdefault("meta", {})
    return payload
