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

With ``patch_norm = c`` (Coates & Ng's brightness and contrast normalization) every patch,
those sampled for ``mu``, ``Sigma`` and the filters and those convolved, is first replaced by
``(p - mean(p) 1) / sqrt(var(p) + eps)``, its own mean and variance over its ``d`` values,
with ``eps = c`` times the mean patch variance of the sample (``patch_eps_``); ``None``
skips it. It is a few passes over each im2col patch matrix: ``1 / chunk_size`` of the GEMM's
flop; the convolution of 8,000 filters on 60,000 CIFAR-10 images took 906 s with it and
835 s without (2 Zen 3 cores).

Each filter's response is then calibrated on the training patch sample to mean 0 and
standard deviation 1, ``r <- (r - m_f) / s_f``, so the threshold ``t`` is in units of the
response's spread for both initializations. All of this folds into an effective filter
``e`` and bias ``a`` per filter: ``r(p) = e . p + a`` (``filters_``, ``biases_``).

For every filter and every one of the ``(H - s + 1) x (W - s + 1)`` patch positions,
``max(0, r - t)`` and ``max(0, -r - t)`` are average-pooled onto a ``pool x pool`` grid
(:func:`pooling_matrix`), giving ``2 pool^2`` features per filter laid out
``(filter, sign, row, col)``. With ``power = p < 1`` each pooled feature ``v >= 0`` becomes
``v^p`` (power normalization, as for pooled codes and Fisher vectors: it damps the few
large averages). With ``standardize`` each output feature is finally centred and scaled by
its mean and standard deviation over the training images.

Chunking
--------
Filters are generated in blocks of ``_BLOCK`` from independent streams ``(seed, 1, block)``,
so the first ``k`` filters (and features) of a map with ``n_filters > k`` are exactly those
of a map with ``n_filters = k``: more filters extend, never redraw. They are applied
``chunk_size`` at a time to batches of ``batch_size`` images, so memory is bounded by
``batch_size x positions x (d + chunk_size)`` numbers whatever ``n_filters`` is. The Gram
matrices of many filters, without storing their features, are
:func:`kernelfit.features.random_conv_gram.accumulate_gram`'s.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ._common import FeatureMap, check_float, check_image_shape, check_int, pooling_matrix, rng_for

__all__ = ["RandomConvFeatures", "extract_patches"]

_BLOCK = 128
# bytes of one piece of responses on the CPU: small enough for the element-wise passes to
# stay in cache, big enough for an efficient GEMM (1-3 images of 729 positions x 256-560
# filters). With one batch per core (accumulate_gram's threads) 2 MiB pieces measured 6%
# faster than 6 MiB on a 2-core Zen 3; whole 64-image batches were 4x slower.
_PIECE_BYTES = 2 << 20
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
    pool : int, default 3
        Side of the pooling grid; ``2 pool^2`` features per filter. 3x3 regions tile the
        27 x 27 response map of 6x6 filters on 32 x 32 images evenly; on a held-out split
        of the CIFAR-10 (JPEG) training set 2,048 filters with 3x3 pooling beat 4,096 with
        2x2 (29.5% against 31.9%, ``benchmarks/results/random_conv_pooling_heldout.json``).
    threshold : float, default 1.0
        ``t`` in ``max(0, r - t)``, ``max(0, -r - t)`` (calibrated response units). With
        the square root (``power=0.5``) 1.0 beat 0.25, 0.5, 1.5 and 2 on that split
        (27.8% against 29.7%, 28.8%, 28.1%, 29.1%;
        ``benchmarks/results/random_conv_power_heldout.json``).
    filter_init : {'zca', 'gaussian'}, default 'zca'
    patch_norm : float or None, default 0.3
        Normalize each patch by its own mean and spread (see above); the value is ``eps``
        relative to the mean patch variance. ``None``: off. On a held-out split of the
        CIFAR-10 (JPEG) training set (n = 10,000, 2,048 filters) 0.3 gave 29.85% against
        33.2% without it; 0.03 and 1 gave 30.6% and 31.1%
        (``benchmarks/results/random_conv_patch_norm*.json``).
    zca_eps : float, default 0.1
        Regularization of the whitening, relative to the mean eigenvalue.
    n_patches : int, default 20000
        Training patches sampled for ``mu``, ``Sigma`` and the calibration.
    power : float in (0, 1], default 0.5
        Each pooled feature ``v >= 0`` becomes ``v ** power`` before the standardization
        (power normalization; 0.5 is the square root). 1: off. On the same split, at
        threshold 0.5: 29.5% (1), 29.1% (0.75), 28.8% (0.5), 29.5% (0.25). At full scale
        (8,000 filters, 3x3 pooling, 50,000 images) the defaults gave 19.22% against 20.94%
        with ``power=1, threshold=0.5``
        (``benchmarks/results/random_conv_point_8000_pool3*.json``).
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
    patch_eps_ : float or None             the ``eps`` of ``patch_norm``
    whitening_ : ndarray (d, d) or None
    feature_mean_, feature_scale_ : ndarray (n_features_out_,) or None
    n_features_out_, n_features_in_, seed_ : int
    """

    _needs_images = True
    _desc = "random-conv features"

    def __init__(self, image_shape=(32, 32, 3), *, n_filters=1024, patch_size=6, pool=3,
                 threshold=1.0, filter_init="zca", patch_norm=0.3, zca_eps=0.1,
                 n_patches=20000, power=0.5,
                 chunk_size=256, standardize=True, batch_size=64, dtype="float32", seed=0,
                 device="cpu", progress=None):
        self.image_shape = image_shape
        self.n_filters = n_filters
        self.patch_size = patch_size
        self.pool = pool
        self.threshold = threshold
        self.filter_init = filter_init
        self.patch_norm = patch_norm
        self.zca_eps = zca_eps
        self.n_patches = n_patches
        self.power = power
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
        if self.patch_norm is not None:
            check_float("patch_norm", self.patch_norm, 0.0, strict=True)
        check_float("zca_eps", self.zca_eps, 0.0, strict=True)
        check_int("n_patches", self.n_patches, 2)
        check_float("power", self.power, 0.0, strict=True, maximum=1.0)
        check_int("chunk_size", self.chunk_size, 1)
        if not isinstance(self.standardize, (bool, np.bool_)):
            raise InputError(f"standardize must be True or False, got {self.standardize!r}")

    @property
    def features_per_filter(self) -> int:
        """Output features of one filter: two signs times ``pool^2`` regions."""
        return 2 * int(self.pool) ** 2

    def _n_features_out(self) -> int:
        return int(self.n_filters) * self.features_per_filter

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

    def _normalize_patches(self, M, xp=np):
        """Normalize the first ``d`` columns of each row of ``M`` in place (``patch_norm``)."""
        if getattr(self, "patch_norm", None) is None:  # model files made before it
            return M
        d = self._geometry[3] ** 2 * self._geometry[2]
        V = M[:, :d]
        V -= V.mean(axis=1, keepdims=True)
        scale = xp.einsum("ij,ij->i", V, V)[:, None]   # no d-wide temporary
        scale /= d
        scale += self.patch_eps_
        V *= 1.0 / xp.sqrt(scale)
        return M

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
        self.patch_eps_ = None
        if self.patch_norm is not None:
            var = P.var(axis=1).mean()
            self.patch_eps_ = float(self.patch_norm) * max(float(var), np.finfo(float).tiny)
            self._normalize_patches(P)
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
                q = self._normalize_patches(self._sample_patches(X, _BLOCK, rng))
                q = (q - mu) @ self.whitening_
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
    def _patch_matrix(self, xb, xp):
        """im2col: the ``(b P) x (d + 1)`` patch matrix of a batch (last column ones).

        On the CPU one copy from a sliding-window view straight into place (measured 4x
        faster than ``s^2`` strided copies); elsewhere :func:`extract_patches`."""
        H, W, C, s, Ho, Wo = self._geometry
        b = xb.shape[0]
        imgs = xb.reshape(b, H, W, C)
        out = xp.empty((b * Ho * Wo, s * s * C + 1), dtype=xb.dtype)
        out[:, -1] = 1
        if xp is np:
            from numpy.lib.stride_tricks import sliding_window_view

            win = sliding_window_view(imgs, (s, s), axis=(1, 2))   # b, Ho, Wo, C, s, s
            view = out[:, :-1].reshape(b, Ho, Wo, s, s, C)
            if np.shares_memory(view, out):
                view[...] = win.transpose(0, 1, 2, 4, 5, 3)
                return self._normalize_patches(out, xp)
        out[:, :-1] = extract_patches(imgs, s, xp).reshape(b * Ho * Wo, -1)
        return self._normalize_patches(out, xp)

    def _chunk_block(self, pm, b: int, lo: int, hi: int, xp, out=None):
        """Raw features of filters ``lo:hi`` for one batch from its patch matrix ``pm``.

        One GEMM ``pm @ [e; a - t]`` gives ``r - t`` for all patches of a piece of the batch
        and the ``k`` filters at once; ``max(0, r - t)`` and ``max(0, -r - t) =
        max(0, -(r - t) - 2t)`` are formed in place; one batched GEMM with the ``pool^2 x P``
        pooling weights averages them. On the CPU the batch is cut into pieces of a few
        images (``_PIECE_BYTES``) so the element-wise passes run on cache-resident blocks.
        Returns ``b x k x 2 x pool^2`` (the ``(filter, sign, row, col)`` layout)."""
        k = hi - lo
        P = pm.shape[0] // b
        g2 = int(self.pool) ** 2
        t = float(self.threshold)
        pw = float(self.power)
        E = self._on_device("filters_", xp, pm.dtype)
        a = self._on_device("biases_", xp, pm.dtype)
        pool = self._on_device("pool_weights_", xp, pm.dtype)      # g^2, P
        A = xp.empty((pm.shape[1], k), dtype=pm.dtype)
        A[:-1] = E[lo:hi].T
        A[-1] = a[lo:hi] - t
        if out is None:
            out = xp.empty((b, k, 2, g2), dtype=pm.dtype)
        piece = b if xp is not np else max(1, min(b, _PIECE_BYTES // max(1, 4 * P * k)))
        r = xp.empty((piece * P, k), dtype=pm.dtype)
        neg = xp.empty_like(r)
        # NumPy 2.4's maximum against a scalar 0 ran at 0.48 ns per value on a Zen 4 core,
        # against an array of zeros of the same shape at 0.11 (subtract: 0.06)
        zero = xp.zeros_like(r) if xp is np else None
        for i0 in range(0, b, piece):
            i1 = min(b, i0 + piece)
            rows = (i1 - i0) * P
            rr, nn = r[:rows], neg[:rows]
            z = 0 if zero is None else zero[:rows]
            xp.matmul(pm[i0 * P:i1 * P], A, out=rr)                # r - t
            xp.subtract(-2.0 * t, rr, out=nn)                       # -r - t
            xp.maximum(nn, z, out=nn)
            xp.maximum(rr, z, out=rr)
            for sign, act in enumerate((rr, nn)):
                pooled = xp.matmul(pool, act.reshape(i1 - i0, P, k))   # piece, g^2, k
                if pw == 0.5:  # averages of max(0, .) are >= 0
                    xp.sqrt(pooled, out=pooled)
                elif pw != 1.0:
                    xp.power(pooled, pw, out=pooled)
                out[i0:i1, :, sign, :] = pooled.transpose(0, 2, 1)
        return out

    def _transform_batch(self, xb, xp):
        """Features of one batch: im2col once, then one GEMM per chunk of ``chunk_size``
        filters (:meth:`_chunk_block`); never a loop over single filters."""
        b = xb.shape[0]
        g2 = int(self.pool) ** 2
        n = int(self.n_filters)
        pm = self._patch_matrix(xb, xp)
        out = xp.empty((b, n, 2, g2), dtype=xb.dtype)
        cs = int(self.chunk_size)
        for lo in range(0, n, cs):
            hi = min(n, lo + cs)
            out[:, lo:hi] = self._chunk_block(pm, b, lo, hi, xp)
        out = out.reshape(b, -1)
        if self.feature_mean_ is not None:
            out -= self._on_device("feature_mean_", xp, xb.dtype)
            out /= self._on_device("feature_scale_", xp, xb.dtype)
        return out
