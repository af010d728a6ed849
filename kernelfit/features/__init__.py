"""Feature maps applied before the kernel: Gabor wavelets, random Fourier / ReLU features
and random convolutional features, each a scikit-learn transformer written against the
``xp`` array module of :mod:`kernelfit.backend`, streamed over the data in batches, and
cached on disk (:mod:`kernelfit.features.cache`).

=============  ====================================  =========================================
name           transformer                           what it computes
=============  ====================================  =========================================
``raw``        none                                  the pixels themselves
``gabor``      :class:`~.gabor.GaborFeatures`        pooled Morlet-wavelet moduli (scattering)
``rff``        :class:`~.random_fourier.RandomFourierFeatures`  Gaussian-kernel random features
``relu``       :class:`~.random_fourier.RandomReLUFeatures`     arc-cosine random features
``random-conv`` :class:`~.random_conv.RandomConvFeatures`       random filters, ReLU, pooling
=============  ====================================  =========================================

Nothing is imported or computed at import time beyond this module's small tables.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pickle
import time
from typing import Optional

import numpy as np

from ..errors import InputError

__all__ = [
    "FEATURE_NAMES",
    "make_feature_map",
    "apply_features",
    "GaborFeatures",
    "RandomFourierFeatures",
    "RandomReLUFeatures",
    "RandomConvFeatures",
    "default_params",
    "check_param_names",
]

FEATURE_NAMES = ("raw", "gabor", "rff", "relu", "random-conv")

_CLASSES = {
    "gabor": ("kernelfit.features.gabor", "GaborFeatures"),
    "rff": ("kernelfit.features.random_fourier", "RandomFourierFeatures"),
    "relu": ("kernelfit.features.random_fourier", "RandomReLUFeatures"),
    "random-conv": ("kernelfit.features.random_conv", "RandomConvFeatures"),
}
_BY_CLASS = {cls: name for name, (_, cls) in _CLASSES.items()}

# parameters that change how, not what, is computed (or are keyed separately)
_NOT_IN_DIGEST = ("seed", "device", "progress", "image_shape", "batch_size", "chunk_size")

def __getattr__(name):
    if name in _BY_CLASS:
        modname, cls = _CLASSES[_BY_CLASS[name]]
        return getattr(importlib.import_module(modname), cls)
    raise AttributeError(f"module 'kernelfit.features' has no attribute {name!r}")


def _feature_class(name: str):
    if name not in FEATURE_NAMES:
        raise InputError(f"unknown feature map {name!r}; choose one of {', '.join(FEATURE_NAMES)}")
    modname, cls = _CLASSES[name]
    return getattr(importlib.import_module(modname), cls)


def check_param_names(name: str, params) -> None:
    """Raise :class:`InputError` for a parameter that feature map ``name`` does not have
    (``'raw'`` has none): one of another map is refused, not ignored."""
    if name == "raw":
        if params:
            raise InputError(f"feature parameters {', '.join(sorted(params))} given with "
                             "features 'raw', which has none; choose the feature map they "
                             "belong to, or leave them out", param="feature_params")
        return
    valid = set(_feature_class(name)._get_param_names()) - {"image_shape", "seed", "device"}
    unknown = sorted(set(params) - valid)
    if unknown:
        raise InputError(f"unknown parameter(s) for {name!r} features: {', '.join(unknown)}; "
                         f"valid: {', '.join(sorted(valid))}", param="feature_params")


def default_params(name: str) -> dict:
    """The defaults of the parameters of feature map ``name`` that decide what it computes
    (not how: seed, device, batch sizes...); ``{}`` for ``'raw'``."""
    if name == "raw":
        return {}
    sig = inspect.signature(_feature_class(name).__init__)
    return {k: p.default for k, p in sig.parameters.items()
            if k != "self" and k not in _NOT_IN_DIGEST and p.default is not p.empty}


# ---------------------------------------------------------------------------
# building and applying
# ---------------------------------------------------------------------------
def make_feature_map(name: str, *, image_shape, seed: int = 0, device: str = "cpu",
                     **params):
    """The unfitted transformer for ``name`` (``None`` for ``'raw'``), parameters checked.

    Raises :class:`InputError` for an unknown name or parameter, an out-of-range value, or
    a map that needs images (gabor, random-conv) given ``image_shape=()``.
    """
    check_param_names(name, params)
    if name == "raw":
        return None
    cls = _feature_class(name)
    shape = tuple(image_shape) if image_shape is not None else ()
    est = cls(image_shape=shape, seed=seed, device=device, **params)
    est.check_params()
    return est


def _fitted_summary(est) -> dict:
    out = {}
    for key in ("bandwidth_", "n_features_out_", "n_features_in_", "seed_"):
        if hasattr(est, key):
            out[key] = getattr(est, key)
    return out


def apply_features(name: str, params: dict, X_train, X_test, *, image_shape, seed: int = 0,
                   device: str = "cpu", cache_dir: Optional[str] = None,
                   cache_key: Optional[str] = None):
    """Fit the map on ``X_train``, transform both sets; use the on-disk cache when asked.

    Returns ``(F_train, F_test, info)``. With ``cache_dir`` and ``cache_key`` the features
    are read from / written to memory-mapped ``.npy`` files (returned read-only); the
    entry is keyed by the map's name, parameters, seed and image shape and validated
    against fingerprints of ``X_train``/``X_test`` (see :mod:`kernelfit.features.cache`).
    ``info`` holds ``name``, ``params``, ``seed``, ``n_features``, ``seconds`` (fit plus
    transform; 0 on a hit), ``images_per_second``, ``cache_hit``, ``cache_path`` and the
    fitted summary (e.g. the bandwidth chosen by the median heuristic), and
    ``transformer``: the fitted map (restored from the cache on a hit), to transform new
    data later (``None`` for ``'raw'``).
    """
    params = dict(params or {})
    t0 = time.perf_counter()
    if name == "raw":
        if params:
            raise InputError(f"'raw' features take no parameters, got {sorted(params)}")
        Xtr, Xte = np.asarray(X_train), np.asarray(X_test)
        return Xtr, Xte, {"name": "raw", "params": {}, "seed": int(seed),
                          "n_features": int(Xtr.shape[1]), "seconds": 0.0,
                          "images_per_second": None, "cache_hit": False, "cache_path": None,
                          "transformer": None}
    est = make_feature_map(name, image_shape=image_shape, seed=seed, device=device, **params)
    # validate inputs before anything heavy (and before touching the cache)
    from ._common import check_array_2d

    width = est._expected_width()
    X_train = check_array_2d(X_train, who=f"{name} features (train)", n_features=width,
                             image_shape=image_shape or None)
    X_test = check_array_2d(X_test, who=f"{name} features (test)",
                            n_features=X_train.shape[1], image_shape=image_shape or None)
    n_total = X_train.shape[0] + X_test.shape[0]
    info = {"name": name, "params": params, "seed": int(seed), "device": str(device),
            "cache_hit": False, "cache_path": None}

    cache = None
    if cache_dir is not None and cache_key is not None:
        from .cache import FeatureCache, array_fingerprint, params_digest

        cache = FeatureCache(cache_dir, cache_key)
        full_params = {k: v for k, v in est.get_params().items()
                       if k not in _NOT_IN_DIGEST}
        digest = params_digest(name, full_params, seed, image_shape)
        inputs = {"train": array_fingerprint(X_train), "test": array_fingerprint(X_test)}
        hit = cache.load(name, digest, inputs)
        info["cache_path"] = cache.entry_dir(name, digest)
        if hit is not None:
            try:
                fitted_est = pickle.loads(hit["transformer.pkl"])
            except Exception:  # missing or unreadable: rebuild the entry
                fitted_est = None
            if not isinstance(fitted_est, type(est)):
                hit = None
        if hit is not None:
            info["transformer"] = fitted_est
            man = hit["_manifest"]
            info.update(cache_hit=True, n_features=int(hit["train"].shape[1]), seconds=0.0,
                        images_per_second=None,
                        computed=man.get("info", {}))
            info.update(man.get("fitted", {}))
            return hit["train"], hit["test"], info

    D = est._n_features_out()
    dtype = np.dtype(est.dtype)
    if cache is None:
        F_train = est.fit_transform(X_train)
        t_fit = time.perf_counter()
        F_test = est.transform(X_test)
    else:
        writer = cache.begin(name, digest)
        try:
            F_train = writer.allocate("train", (X_train.shape[0], D), dtype)
            est.fit_transform(X_train, out=F_train)
            t_fit = time.perf_counter()
            F_test = writer.allocate("test", (X_test.shape[0], D), dtype)
            est.transform(X_test, out=F_test)
        except BaseException:
            writer.abort()
            raise
    t1 = time.perf_counter()
    seconds = t1 - t0
    fitted = _fitted_summary(est)
    info.update(n_features=int(D), seconds=seconds, fit_transform_seconds=t_fit - t0,
                transform_seconds=t1 - t_fit,
                images_per_second=n_total / seconds if seconds > 0 else None)
    info.update(fitted)
    info["transformer"] = est
    if cache is not None:
        computed = {k: info[k] for k in ("seconds", "images_per_second", "device")}
        manifest = {"name": name, "params": full_params, "seed": int(seed),
                    "image_shape": list(image_shape or ()), "cache_key": cache_key,
                    "inputs": inputs, "fitted": fitted, "info": computed}
        writer.commit({"train": F_train, "test": F_test}, manifest,
                      files={"transformer.pkl": pickle.dumps(est, protocol=4)})
        del F_train, F_test
        d = info["cache_path"]
        F_train = np.load(os.path.join(d, "train.npy"), mmap_mode="r")
        F_test = np.load(os.path.join(d, "test.npy"), mmap_mode="r")
    return F_train, F_test, info
