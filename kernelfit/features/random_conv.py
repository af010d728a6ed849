r"""Random convolutional features for (colour) images.

The map (Coates & Ng 2011; the random-features pipeline of Recht et al.)
-----------------------------------------------------------------------
Let ``p in R^d`` (``d = s^2 C``) be an ``s x s`` patch in ``(row, col, channel)`` order and
``mu``, ``Sigma`` the mean and covariance of patches sampled from the training images.

* ``filter_init='zca'``: the ZCA whitening ``Z = U (Lambda + eps mean(Lambda))^{-1/2} U^T``
  (``Sigma = U Lambda U^T``). A filter is a random training patch ``q``, whitened and
  normalized, ``f = Z (q - mu) / |Z (q - mu)|``, applied to whitened patches:
  ``r(p) = f . Z (p - mu) = (Z f) . (p - mu)``.
* ``filter_init='gaussian'``: ``f ~ N(0, I_d)`` normalized, ``r(p) = f . (p - mu)``.

Each filter's response is then calibrated on the training patch sample to mean 0 and
standard deviation 1, ``r <- (r - m_f) / s_f``, so the threshold ``t`` is in units of the
response's spread for both initializations. All of this folds into an effective filter
``e`` and bias ``a`` per filter: ``r(p) = e . p + a`` (``filters_``, ``biases_``).

For every filter and every one of the ``(H - s + 1) x (W - s + 1)`` patch positions,
``max(0, r - t)`` and ``max(0, -r - t)`` are average-pooled onto a ``pool x pool`` grid
(:func:`pooling_matrix`), giving ``2 pool^2`` features per filter laid out
``(filter, sign, row, col)``. With ``standardize`` each output feature is finally centred
and scaled by its mean and standard deviation over the training images.

Chunking
--------
Filters are generated in blocks of ``_BLOCK`` from independent streams ``(seed, 1, block)``,
so the first ``k`` filters (and features) of a map with ``n_filters > k`` are exactly those
of a map with ``n_filters = k``: more filters extend, never redraw. They are applied
``chunk_size`` at a time to batches of ``batch_size`` images, so memory is bounded by
``batch_size x positions x (d + chunk_size)`` numbers whatever ``n_filters`` is.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ._common import FeatureMap, check_float, check_image_shape, check_int, pooling_matrix, rng_for

__all__ = ["RandomConvFeatures", "extract_patches"]

_BLOCK = 128
_INITS = ("gaussian", "zca")


def extract_patches(imgs, s: int, xp=np):
    """All ``s x s`` patches of ``imgs`` (``b x H x W x C``): ``b x (H-s+1)(W-s+1) x s^2 C``.

    Patch features are ordered ``(row offset, col offset, channel)``; positions row-major.
    """
    b, H, W, C = imgs.shape
    Ho, Wo = H - s + 1, W - s + 1
    out = xp.empty((b, Ho, Wo, s, s, C), dtype=imgs.dtype)
    for dy in range(s):
        for dx in range(s):
            out[:, :, :, dy, dx, :] = imgs[:, dy:dy + Ho, dx:dx + Wo, :]
    return out.reshape(b, Ho * Wo, s * s * C)


class RandomConvFeatures(FeatureMap):
    """Random convolutional features with two-sided thresholded ReLU and average pooling.

    Parameters
    ----------
    image_shape : (H, W) or (H, W, C), default (32, 32, 3)
    n_filters : int, default 1024
        Number of random filters (any number; generated and applied in chunks).
    patch_size : int, default 6
        Filter side ``s`` (``<= min(H, W)``).
    pool : int, default 2
        Side of the pooling grid; ``2 pool^2`` features per filter.
    threshold : float, default 0.5
        ``t`` in ``max(0, r - t)``, ``max(0, -r - t)`` (calibrated response units; 0.5
        beat 0.25, 1.0 and 1.5 on CIFAR-10 JPEG, n = 2,000, 256 ZCA filters).
    filter_init : {'zca', 'gaussian'}, default 'zca'
    zca_eps : float, default 0.1
        Regularization of the whitening, relative to the mean eigenvalue.
    n_patches : int, default 20000
        Training patches sampled for ``mu``, ``Sigma`` and the calibration.
    chunk_size : int, default 256
        Filters applied at once.
    standardize : bool, default True
        Centre and scale each output feature by its training mean and std.
    batch_size : int, default 64
    dtype : 'float32' or 'float64', default 'float32'
        Dtype of the computation and of the features.
    seed, device, progress : as in :class:`GaborFeatures`.

    Attributes
    ----------
    filters_ : ndarray (n_filters, d)      effective filters ``e``
    biases_ : ndarray (n_filters,)         biases ``a``
    patch_mean_ : ndarray (d,)
    whitening_ : ndarray (d, d) or None
    feature_mean_, feature_scale_ : ndarray (n_features_out_,) or None
    n_features_out_, n_features_in_, seed_ : int
    """

    _needs_images = True
    _desc = "random-conv features"

    def __init__(self, image_shape=(32, 32, 3), *, n_filters=1024, patch_size=6, pool=2,
                 threshold=0.5, filter_init="zca", zca_eps=0.1, n_patches=20000,
                 chunk_size=256, standardize=True, batch_size=64, dtype="float32", seed=0,
                 device="cpu", progress=None):
        self.image_shape = image_shape
        self.n_filters = n_filters
        self.patch_size = patch_size
        self.pool = pool
        self.threshold = threshold
        self.filter_init = filter_init
        self.zca_eps = zca_eps
        self.n_patches = n_patches
        self.chunk_size = chunk_size
        self.standardize = standardize
        self.batch_size = batch_size
        self.dtype = dtype
        self.seed = seed
        self.device = device
        self.progress = progress

    # -- parameters ---------------------------------------------------------------
    def _check_params(self) -> None:
        H, W, C = check_image_shape(self.image_shape, who="random-conv features")
        check_int("n_filters", self.n_filters, 1)
        s = check_int("patch_size", self.patch_size, 1)
        if s > min(H, W):
            raise InputError(f"patch_size={s} is larger than the {H}x{W} images")
        check_int("pool", self.pool, 1, min(H, W) - s + 1)
        check_float("threshold", self.threshold, 0.0)
        if self.filter_init not in _INITS:
            raise InputError(f"filter_init must be one of {', '.join(_INITS)}, got "
                             f"{self.filter_init!r}")
        check_float("zca_eps", self.zca_eps, 0.0, strict=True)
        check_int("n_patches", self.n_patches, 2)
        check_int("chunk_size", self.chunk_size, 1)
        if not isinstance(self.standardize, (bool, np.bool_)):
            raise InputError(f"standardize must be True or False, got {self.standardize!r}")

    def _n_features_out(self) -> int:
        return int(self.n_filters) * 2 * int(self.pool) ** 2

    @property
    def _geometry(self):
        H, W, C = check_image_shape(self.image_shape, who="random-conv features")
        s = int(self.patch_size)
        return H, W, C, s, H - s + 1, W - s + 1

    # -- fitting ------------------------------------------------------------------
    def _sample_patches(self, X, m: int, rng) -> np.ndarray:
        H, W, C, s, Ho, Wo = self._geometry
        img = rng.integers(0, X.shape[0], size=m)
        r = rng.integers(0, Ho, size=m)
        c = rng.integers(0, Wo, size=m)
        order = np.argsort(img, kind="stable")  # sequential reads of a memory map
        out = np.empty((m, s * s * C))
        for k in order:
            im = np.asarray(X[img[k]], dtype=np.float64).reshape(H, W, C)
            out[k] = im[r[k]:r[k] + s, c[k]:c[k] + s, :].ravel()
        return out

    def _fit(self, X) -> None:
        self._fit_filters(X)
        self.feature_mean_ = None
        self.feature_scale_ = None
        if self.standardize:
            self._fit_standardization(X, out=None)

    def _fit_filters(self, X) -> None:
        H, W, C, s, Ho, Wo = self._geometry
        d = s * s * C
        P = self._sample_patches(X, int(self.n_patches), rng_for(self.seed, 0))
        mu = P.mean(axis=0)
        Pc = P - mu
        self.patch_mean_ = mu
        if self.filter_init == "zca":
            cov = Pc.T @ Pc / max(1, len(P) - 1)
            lam, U = np.linalg.eigh(cov)
            lam = np.maximum(lam, 0.0)
            eps = float(self.zca_eps) * max(float(lam.mean()), np.finfo(float).tiny)
            self.whitening_ = (U / np.sqrt(lam + eps)) @ U.T
        else:
            self.whitening_ = None
        n = int(self.n_filters)
        filters = np.empty((n, d))
        biases = np.empty(n)
        for blk in range(-(-n // _BLOCK)):
            lo, hi = blk * _BLOCK, min(n, (blk + 1) * _BLOCK)
            rng = rng_for(self.seed, 1, blk)
            if self.filter_init == "gaussian":
                f = rng.standard_normal((_BLOCK, d))
                f /= np.linalg.norm(f, axis=1, keepdims=True)
            else:
                q = (self._sample_patches(X, _BLOCK, rng) - mu) @ self.whitening_
                nrm = np.linalg.norm(q, axis=1, keepdims=True)
                f = q / np.where(nrm > 0, nrm, 1.0)
                f = f @ self.whitening_  # Z symmetric: e = Z f
            f = f[: hi - lo]
            resp = Pc @ f.T  # calibration on the patch sample
            m_f, s_f = resp.mean(axis=0), resp.std(axis=0)
            s_f = np.where(s_f > 0, s_f, 1.0)
            filters[lo:hi] = f / s_f[:, None]
            biases[lo:hi] = -(mu @ f.T + m_f) / s_f
        self.filters_ = filters
        self.biases_ = biases
        # pooled[g, f] = sum_{h, w} P_r[g, h] act[h, w] P_c[f, w] = kron(P_r, P_c) @ vec(act)
        self.pool_weights_ = np.kron(pooling_matrix(Ho, int(self.pool)),
                                     pooling_matrix(Wo, int(self.pool)))

    def _fit_standardization(self, X, out):
        """Per-feature mean and std over the training images (one streaming pass).

        Raw features are written to ``out`` when given (then standardized in place);
        sums are accumulated in float64.
        """
        self.feature_mean_ = None
        self.feature_scale_ = None
        self.n_features_out_ = self._n_features_out()
        D = self.n_features_out_
        s1 = np.zeros(D)
        s2 = np.zeros(D)
        n = X.shape[0]
        bs = max(1, int(self.batch_size))
        # stream in blocks of rows (about 64 MiB of float64 features per block)
        step = max(bs, (64 << 20) // (8 * D) // bs * bs)
        for start in range(0, n, step):
            stop = min(n, start + step)
            blockX = X[start:stop]
            blk = self._stream(blockX, None if out is None else out[start:stop])
            b64 = np.asarray(blk, dtype=np.float64)
            s1 += b64.sum(axis=0)
            s2 += np.einsum("ij,ij->j", b64, b64)
        mean = s1 / n
        var = np.maximum(s2 / n - mean * mean, 0.0)
        std = np.sqrt(var)
        tiny = 1e-8 * max(1.0, float(np.abs(mean).max(initial=0.0)))
        self.feature_mean_ = mean
        self.feature_scale_ = np.where(std > tiny, std, 1.0)
        if out is not None:
            m = self.feature_mean_.astype(out.dtype)
            sc = self.feature_scale_.astype(out.dtype)
            for start in range(0, n, step):
                stop = min(n, start + step)
                out[start:stop] -= m
                out[start:stop] /= sc

    def fit_transform(self, X, y=None, out=None):
        """Fit and return the standardized training features in one pass over ``X``."""
        if not self.standardize:
            return super().fit_transform(X, y, out=out)
        saved = self.standardize
        try:
            self.standardize = False  # fit the filters only
            self.fit(X)
        finally:
            self.standardize = saved
        Xc = np.asarray(X)
        if out is None:
            out = np.empty((Xc.shape[0], self.n_features_out_), dtype=np.dtype(self.dtype))
        self._fit_standardization(Xc, out)
        return out

    # -- transform ----------------------------------------------------------------
    def _transform_batch(self, xb, xp):
        """Features of one batch: for each chunk of ``k`` filters, one GEMM of the patches
        (with a column of ones) against ``[[e, -e], [a - t, -a - t]]`` gives ``r - t`` and
        ``-r - t`` together; ReLU in place; one GEMM with the ``pool^2 x positions``
        pooling weights ``kron(P_rows, P_cols)`` averages them."""
        H, W, C, s, Ho, Wo = self._geometry
        b = xb.shape[0]
        g2 = int(self.pool) ** 2
        t = float(self.threshold)
        n = int(self.n_filters)
        patches = extract_patches(xb.reshape(b, H, W, C), s, xp)   # b, P, d
        ones = xp.ones(patches.shape[:2] + (1,), dtype=xb.dtype)
        patches = xp.concatenate([patches, ones], axis=2)          # b, P, d + 1
        E = self._on_device("filters_", xp, xb.dtype)
        a = self._on_device("biases_", xp, xb.dtype)
        pool = self._on_device("pool_weights_", xp, xb.dtype)      # g^2, P
        out = xp.empty((b, n, 2, g2), dtype=xb.dtype)
        cs = int(self.chunk_size)
        for lo in range(0, n, cs):
            hi = min(n, lo + cs)
            k = hi - lo
            A = xp.empty((E.shape[1] + 1, 2 * k), dtype=xb.dtype)
            A[:-1, :k] = E[lo:hi].T
            A[:-1, k:] = -E[lo:hi].T
            A[-1, :k] = a[lo:hi] - t
            A[-1, k:] = -a[lo:hi] - t
            act = xp.matmul(patches, A)                            # b, P, 2k
            xp.maximum(act, 0, out=act)
            pooled = xp.matmul(pool, act)                          # b, g^2, 2k
            out[:, lo:hi] = pooled.reshape(b, g2, 2, k).transpose(0, 3, 2, 1)
        out = out.reshape(b, -1)
        if self.feature_mean_ is not None:
            out -= self._on_device("feature_mean_", xp, xb.dtype)
            out /= self._on_device("feature_scale_", xp, xb.dtype)
        return out
