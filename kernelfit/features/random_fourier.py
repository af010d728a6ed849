r"""Random Fourier features (Rahimi & Recht 2007) and random ReLU features.

Random Fourier features
-----------------------
For the Gaussian kernel ``k(x, z) = exp(-|x - z|^2 / (2 b^2))`` (bandwidth ``b``), Bochner's
theorem gives ``k(x, z) = E_w[cos(w.(x - z))]`` with ``w ~ N(0, I / b^2)``. With ``D`` draws
``w_i`` and phases ``c_i ~ U[0, 2 pi)``,

.. math::  \phi(x)_i = \sqrt{2 / D}\, \cos(w_i \cdot x + c_i), \qquad
           E[\phi(x) \cdot \phi(z)] = k(x, z),

and ``phi(x).phi(z)`` has variance ``O(1/D)`` (each term is bounded by ``2/D``, so by
Hoeffding ``|phi(x).phi(z) - k(x, z)| <= 2 sqrt(log(2/delta) / (2 D))`` with probability
``1 - delta`` for a fixed pair).

Random ReLU features
--------------------
With ``w_i ~ N(0, I)`` and ``phi(x)_i = sqrt(2 / D) max(0, w_i . x)``,
``E[phi(x) . phi(z)] = k_1(x, z) = |x| |z| (sin t + (pi - t) cos t) / pi`` with ``t`` the
angle between ``x`` and ``z``: the first-order arc-cosine kernel of Cho & Saul (2009).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..kernels import median_distance
from ._common import FeatureMap, check_float, check_int, rng_for

__all__ = ["RandomFourierFeatures", "RandomReLUFeatures", "median_heuristic",
           "arccos1_kernel"]

_MAX_DIM = 1 << 24


def median_heuristic(X, *, n_sample: int = 1000, seed: int = 0) -> float:
    """The median heuristic on this module's own random stream ``(seed, 7)``, independent
    of the streams that draw the features (see :func:`kernelfit.kernels.median_distance`)."""
    return median_distance(X, sample=n_sample, rng=rng_for(seed, 7))


def arccos1_kernel(X, Z) -> np.ndarray:
    """First-order arc-cosine kernel ``|x||z| (sin t + (pi - t) cos t) / pi``."""
    X, Z = np.asarray(X, float), np.asarray(Z, float)
    nx, nz = np.linalg.norm(X, axis=1), np.linalg.norm(Z, axis=1)
    denom = np.outer(nx, nz)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(denom > 0, (X @ Z.T) / np.where(denom > 0, denom, 1.0), 1.0)
    t = np.arccos(np.clip(cos, -1.0, 1.0))
    return denom * (np.sin(t) + (np.pi - t) * np.cos(t)) / np.pi


class _RandomProjection(FeatureMap):
    """Shared code: a seeded Gaussian projection ``W`` (``d x D``) applied in row batches."""

    def _check_params(self) -> None:
        check_int("n_components", self.n_components, 1, _MAX_DIM)
        if self.image_shape not in (None, ()) and len(tuple(self.image_shape)) not in (1, 2, 3):
            raise InputError(f"image_shape must be (), (d,), (H, W) or (H, W, C), got "
                             f"{self.image_shape!r}")

    def _expected_width(self):
        if self.image_shape in (None, ()):
            return None
        return int(np.prod([int(s) for s in self.image_shape]))

    def _n_features_out(self) -> int:
        return int(self.n_components)

    def _draw(self, d: int, scale: float) -> None:
        rng = rng_for(self.seed, 1)
        D = int(self.n_components)
        self.weights_ = rng.standard_normal((d, D)) * scale
        self.offsets_ = rng.uniform(0.0, 2.0 * np.pi, size=D)


class RandomFourierFeatures(_RandomProjection):
    """Random Fourier features for ``exp(-|x - z|^2 / (2 bandwidth^2))``.

    Parameters
    ----------
    n_components : int, default 4096
        Feature dimension ``D`` (``>= 1``).
    bandwidth : float or 'median', default 'median'
        Kernel bandwidth ``b``; ``'median'`` takes :func:`median_heuristic` of the training
        rows (recorded as ``bandwidth_``).
    image_shape : tuple, default ()
        Optional shape of a row (only used to check widths).
    batch_size, dtype, seed, device, progress : as in :class:`GaborFeatures`.

    Attributes
    ----------
    weights_ : ndarray (d, D), ``N(0, 1/b^2)`` entries
    offsets_ : ndarray (D,), ``U[0, 2 pi)``
    bandwidth_ : float
    """

    _desc = "random Fourier features"

    def __init__(self, n_components=4096, *, bandwidth="median", image_shape=(),
                 batch_size=1024, dtype="float64", seed=0, device="cpu", progress=None):
        self.n_components = n_components
        self.bandwidth = bandwidth
        self.image_shape = image_shape
        self.batch_size = batch_size
        self.dtype = dtype
        self.seed = seed
        self.device = device
        self.progress = progress

    def _check_params(self) -> None:
        super()._check_params()
        if not (isinstance(self.bandwidth, str) and self.bandwidth == "median"):
            check_float("bandwidth", self.bandwidth, 0.0, strict=True)

    def _fit(self, X) -> None:
        if isinstance(self.bandwidth, str):
            self.bandwidth_ = median_heuristic(X, seed=self.seed)
        else:
            self.bandwidth_ = float(self.bandwidth)
        self._draw(X.shape[1], 1.0 / self.bandwidth_)

    def _transform_batch(self, xb, xp):
        W = self._on_device("weights_", xp, xb.dtype)
        c = self._on_device("offsets_", xp, xb.dtype)
        z = xb @ W
        z += c
        xp.cos(z, out=z)
        z *= np.sqrt(2.0 / int(self.n_components))
        return z


class RandomReLUFeatures(_RandomProjection):
    """Random ReLU features ``sqrt(2/D) max(0, W^T x)``, ``W ~ N(0, I)``.

    ``phi(x) . phi(z)`` estimates the arc-cosine kernel :func:`arccos1_kernel`.

    Parameters
    ----------
    n_components : int, default 4096
    image_shape, batch_size, dtype, seed, device, progress : as in
        :class:`RandomFourierFeatures`.

    Attributes
    ----------
    weights_ : ndarray (d, D)
    """

    _desc = "random ReLU features"

    def __init__(self, n_components=4096, *, image_shape=(), batch_size=1024,
                 dtype="float64", seed=0, device="cpu", progress=None):
        self.n_components = n_components
        self.image_shape = image_shape
        self.batch_size = batch_size
        self.dtype = dtype
        self.seed = seed
        self.device = device
        self.progress = progress

    def _fit(self, X) -> None:
        self._draw(X.shape[1], 1.0)
        del self.offsets_

    def _transform_batch(self, xb, xp):
        W = self._on_device("weights_", xp, xb.dtype)
        z = xb @ W
        xp.maximum(z, 0, out=z)
        z *= np.sqrt(2.0 / int(self.n_components))
        return z
