"""Shared pieces of the feature maps: input validation, batching, the transformer base class.

Every feature map in :mod:`kernelfit.features` is a scikit-learn transformer whose
``__init__`` only stores its parameters. ``fit`` validates them (raising
:class:`kernelfit.errors.InputError` before any heavy work), builds the map's fixed
pieces (filters, random projections) from ``seed`` and records the seed as ``seed_``.
``transform`` streams over the rows of ``X`` in batches of ``batch_size`` images, moving
each batch to the array module ``xp`` of the chosen device (NumPy or CuPy), and writes
the features of the batch into a host array (NumPy, or a memory-mapped ``.npy`` file
when the caller passes one as ``out``).
"""

from __future__ import annotations

import numbers
from abc import ABCMeta, abstractmethod
from typing import Optional, Sequence

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from ..backend import get_backend, to_host
from ..errors import InputError
from ..progress import progress

__all__ = [
    "FeatureMap",
    "check_int",
    "check_float",
    "check_image_shape",
    "check_array_2d",
    "pooling_matrix",
    "rng_for",
]


# ---------------------------------------------------------------------------
# parameter checks
# ---------------------------------------------------------------------------
def check_int(name: str, value, minimum: int = 1, maximum: Optional[int] = None) -> int:
    """``value`` as an int in ``[minimum, maximum]``, else :class:`InputError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if (not isinstance(value, bool) and isinstance(value, numbers.Real)
                and float(value).is_integer()):
            value = int(value)
        else:
            raise InputError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum:
        raise InputError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise InputError(f"{name} must be at most {maximum}, got {value}")
    return value


def check_float(name: str, value, minimum: Optional[float] = None, *, strict: bool = False,
                maximum: Optional[float] = None) -> float:
    """``value`` as a finite float ``>= minimum`` (``> minimum`` when ``strict``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise InputError(f"{name} must be finite, got {value}")
    if minimum is not None:
        if strict and value <= minimum:
            raise InputError(f"{name} must be greater than {minimum}, got {value}")
        if not strict and value < minimum:
            raise InputError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise InputError(f"{name} must be at most {maximum}, got {value}")
    return value


def check_image_shape(image_shape, *, who: str) -> tuple:
    """``(H, W, C)`` from ``(H, W)`` or ``(H, W, C)``; :class:`InputError` otherwise."""
    if image_shape is None or len(tuple(image_shape)) == 0:
        raise InputError(f"{who} needs images: pass image_shape=(H, W) or (H, W, C), "
                         f"got {image_shape!r}")
    shape = tuple(image_shape)
    if len(shape) not in (2, 3):
        raise InputError(f"{who}: image_shape must be (H, W) or (H, W, C), got {shape!r}")
    shape = tuple(check_int("image_shape entry", s, 1) for s in shape)
    if len(shape) == 2:
        shape = shape + (1,)
    if shape[2] not in (1, 3, 4):
        raise InputError(f"{who}: images must have 1, 3 or 4 channels, got {shape[2]}")
    return shape


def check_array_2d(X, *, who: str, n_features: Optional[int] = None,
                   image_shape: Optional[Sequence[int]] = None) -> np.ndarray:
    """A 2-D float array without NaN/inf whose width matches ``n_features``.

    Images arrive flattened, ``(n, H*W*C)`` in ``(H, W, C)`` order. The NaN check streams
    over the rows so a memory-mapped input is not copied as a whole.
    """
    X = to_host(X)  # a CuPy array is copied to the host; NumPy arrays and memmaps stay
    if X.dtype == object or not (np.issubdtype(X.dtype, np.floating)
                                 or np.issubdtype(X.dtype, np.integer)):
        raise InputError(f"{who}: X must be a numeric array, got dtype {X.dtype}")
    if X.ndim != 2:
        hint = ""
        if image_shape is not None and X.ndim >= 3:
            hint = " (flatten images to (n, H*W*C) in (H, W, C) order)"
        raise InputError(f"{who}: X must be 2-D (n_samples, n_features), got shape "
                         f"{X.shape}{hint}")
    if X.shape[0] < 1:
        raise InputError(f"{who}: X has no rows")
    if n_features is not None and X.shape[1] != n_features:
        what = f"image_shape {tuple(image_shape)}" if image_shape is not None else "fit"
        raise InputError(f"{who}: X has {X.shape[1]} features per row but {what} implies "
                         f"{n_features}")
    if np.issubdtype(X.dtype, np.floating):
        step = max(1, (1 << 24) // max(1, X.shape[1]))
        for start in range(0, X.shape[0], step):
            if not np.isfinite(X[start:start + step]).all():
                raise InputError(f"{who}: X contains NaN or infinite values")
    return X


# ---------------------------------------------------------------------------
# numerics shared by the image maps
# ---------------------------------------------------------------------------
def pooling_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Average-pooling weights ``P`` (``n_out x n_in``) over ``n_out`` equal cells.

    Cell ``k`` covers ``[k n_in / n_out, (k+1) n_in / n_out)``; pixel ``i`` covers
    ``[i, i+1)`` and ``P[k, i] = |cell_k & pixel_i| / (n_in / n_out)``, so every row sums
    to one and cells of fractional width are handled exactly. ``P @ M @ P.T`` average-pools
    an ``n_in x n_in`` map onto an ``n_out x n_out`` grid.
    """
    edges = np.arange(n_out + 1) * (n_in / n_out)
    lo = np.maximum(edges[:-1, None], np.arange(n_in)[None, :])
    hi = np.minimum(edges[1:, None], np.arange(n_in)[None, :] + 1)
    return np.clip(hi - lo, 0.0, None) / (n_in / n_out)


def rng_for(seed: int, *stream: int) -> np.random.Generator:
    """A NumPy generator for ``(seed, *stream)``: independent streams from one seed.

    Randomness is always drawn on the host with NumPy so a seed gives the same map on
    CPU and GPU.
    """
    return np.random.default_rng([int(seed), *[int(s) for s in stream]])


def _numpy_dtype(name) -> np.dtype:
    try:
        dt = np.dtype(name)
    except TypeError:
        raise InputError(f"dtype must be 'float32' or 'float64', got {name!r}") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise InputError(f"dtype must be 'float32' or 'float64', got {name!r}")
    return dt


# ---------------------------------------------------------------------------
# the transformer base class
# ---------------------------------------------------------------------------
class FeatureMap(TransformerMixin, BaseEstimator, metaclass=ABCMeta):
    """Base class: parameter checking, batching and streaming over ``xp``.

    Subclasses implement ``_check_params()`` (returns nothing, raises
    :class:`InputError`), ``_fit(X)`` (sets the fitted attributes, host arrays),
    ``_transform_batch(xb, xp)`` (features of one batch on the device) and
    ``_n_features_out()``.
    """

    _needs_images = False
    _desc = "features"

    # -- hooks (every map implements all four) --------------------------------
    @abstractmethod
    def _check_params(self) -> None:
        """Raise :class:`InputError` for out-of-range parameters."""

    @abstractmethod
    def _fit(self, X: np.ndarray) -> None:
        """Set the fitted attributes (host arrays)."""

    @abstractmethod
    def _transform_batch(self, xb, xp):
        """Features of one batch, on the device of ``xp``."""

    @abstractmethod
    def _n_features_out(self) -> int:
        """Number of output features."""

    # -- common machinery ----------------------------------------------------
    def check_params(self) -> "FeatureMap":
        """Validate the parameters (no data needed); returns ``self``."""
        check_int("seed", self.seed, 0)
        check_int("batch_size", self.batch_size, 1)
        _numpy_dtype(self.dtype)
        if self.device not in ("cpu", "gpu", "auto") and not hasattr(self.device, "xp"):
            raise InputError(f"unknown device {self.device!r}; choose cpu, gpu or auto")
        self._check_params()
        return self

    def output_dim(self, input_shape) -> int:
        """The number of features this map makes of inputs of ``input_shape`` (``(n, d)``
        or ``(d,)``), from its parameters alone: nothing is fitted or computed (what a
        memory plan needs before the features exist). Raises :class:`InputError` for a bad
        parameter or an input width that the map's image shape does not imply."""
        self.check_params()
        d = int(tuple(input_shape)[-1])
        width = self._expected_width()
        if width is not None and d != width:
            raise InputError(f"{type(self).__name__}: X has {d} features per row but "
                             f"image_shape {tuple(self.image_shape)} implies {width}")
        return int(self._n_features_out())

    def output_grid(self) -> Optional[float]:
        """The scale ``s`` under which every output row is integers whose squared sum stays
        below 2^24 (exact in a float32 GEMM, see :mod:`kernelfit.grid`), or None: no such
        promise (the base class; :class:`~kernelfit.features.gabor.GaborFeatures` makes it).
        For a memory and time plan made before the features exist; the solve checks the
        features themselves."""
        return None

    @property
    def _backend(self):
        return get_backend(self.device)

    def _expected_width(self) -> Optional[int]:
        if self._needs_images:
            h, w, c = check_image_shape(self.image_shape, who=type(self).__name__)
            return h * w * c
        return None

    def __getstate__(self):
        # device copies of the fitted arrays (possibly CuPy) are not pickled
        state = super().__getstate__()
        state.pop("_device_cache", None)
        return state

    def fit(self, X, y=None):
        """Validate parameters and ``X``, then build the map from ``seed``."""
        self.check_params()
        X = check_array_2d(X, who=type(self).__name__, n_features=self._expected_width(),
                           image_shape=getattr(self, "image_shape", None))
        self.n_features_in_ = int(X.shape[1])
        self.seed_ = int(self.seed)
        self._device_cache = {}
        self._fit(X)
        self.n_features_out_ = int(self._n_features_out())
        self._device_cache = {}
        return self

    def _check_fitted(self):
        if not hasattr(self, "n_features_out_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit first")

    def _on_device(self, name: str, xp, dtype=None):
        """The fitted host array ``self.<name>`` on ``xp`` (moved once, then cached)."""
        cache = self.__dict__.setdefault("_device_cache", {})
        key = (name, xp.__name__, None if dtype is None else np.dtype(dtype).str)
        if key not in cache:
            arr = getattr(self, name)
            cache[key] = xp.asarray(arr if dtype is None else np.asarray(arr, dtype=dtype))
        return cache[key]

    def transform(self, X, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Features of ``X`` (``n x n_features_out_``), streamed in batches.

        ``out`` may be a preallocated host array (for example a memory-mapped ``.npy``)
        of shape ``(n, n_features_out_)``; it is filled and returned.
        """
        self._check_fitted()
        X = check_array_2d(X, who=type(self).__name__, n_features=self.n_features_in_,
                           image_shape=getattr(self, "image_shape", None))
        return self._stream(X, out)

    def _stream(self, X: np.ndarray, out: Optional[np.ndarray]) -> np.ndarray:
        n = X.shape[0]
        dt = _numpy_dtype(self.dtype)
        if out is None:
            out = np.empty((n, self.n_features_out_), dtype=dt)
        elif out.shape != (n, self.n_features_out_):
            raise InputError(f"out has shape {out.shape}, expected {(n, self.n_features_out_)}")
        be = self._backend
        xp = be.xp
        bs = int(self.batch_size)
        bar = progress(total=n, desc=self._desc, enabled=getattr(self, "progress", None),
                       unit="img")
        try:
            for start in range(0, n, bs):
                stop = min(n, start + bs)
                xb = xp.asarray(np.asarray(X[start:stop], dtype=dt))
                fb = self._transform_batch(xb, xp)
                out[start:stop] = be.to_numpy(fb)
                bar.update(stop - start)
        finally:
            bar.close()
        return out

    def fit_transform(self, X, y=None, out: Optional[np.ndarray] = None):
        """``fit(X).transform(X)``; subclasses may do it in a single pass."""
        return self.fit(X, y).transform(X, out=out)
