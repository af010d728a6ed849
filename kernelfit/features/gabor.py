r"""Gabor (Morlet) wavelet features: a first- or second-order scattering-style transform.

The filter bank
---------------
For scale ``j`` in ``0..J-1`` and orientation ``theta_l = pi l / L`` (``l`` in ``0..L-1``) the
Morlet wavelet on the pixel grid ``u = (u_1, u_2)`` (row, column offsets from the centre) is

.. math::

    g_{j,l}(u) = \exp\!\Big(-\frac{(r_\theta u)_1^2 + s^2 (r_\theta u)_2^2}{2\sigma_j^2}\Big),
    \qquad \sigma_j = \sigma_0 2^j,\quad \xi_j = \xi_0 2^{-j},

    \psi_{j,l}(u) = \frac{g_{j,l}(u)}{\sum_v g_{j,l}(v)}
                    \big(e^{i \xi_j (r_\theta u)_1} - \beta_{j,l}\big),
    \qquad \beta_{j,l} = \frac{\sum_v g_{j,l}(v) e^{i \xi_j (r_\theta v)_1}}{\sum_v g_{j,l}(v)},

with ``r_theta`` the rotation by ``theta`` and ``s`` the slant (``s < 1`` elongates the
envelope along the wave fronts). ``beta`` makes every wavelet sum to exactly zero on the
truncated grid (the Morlet correction). The low-pass filter is the normalized Gaussian
``phi(u) = exp(-|u|^2 / (2 sigma_phi^2)) / sum(...)`` with ``sigma_phi = sigma_0 2^J``.
All filters share one odd support of ``2 h + 1`` pixels, ``h = ceil(3 max(sigma_{J-1}/s,
sigma_phi))``.

The transform
-------------
Convolutions are linear ('same' size, zero padding): ``(x * f)[p] = sum_u x[p - u] f[u]``
with ``f`` centred, exactly ``scipy.signal.convolve2d(x, f, mode='same')``. Wavelet
convolutions are computed by FFT on a grid padded to at least ``H + 2h`` (no
wrap-around, ``fft_shape_``): on the host by SciPy's FFT, a batch's images split into
small groups over every usable core (each image computed alone, so its features do not
depend on the batch or the core count; NumPy's FFT on one core was 3.5x slower for
MNIST's default bank on 2 cores, ``benchmarks/results/gabor_throughput_ab_*.json``), on a
GPU by CuPy's; the low-pass ``phi = f_1 f_1^T`` is separable, so low-pass
plus pooling is two small matrix products ``(P T) M (P T)^T`` (``T`` the Toeplitz matrix
of ``f_1``). Per channel ``c`` the
features are, average-pooled onto a ``pool x pool`` grid (:func:`pooling_matrix`):

* order 0: ``x_c * phi``                                      (1 map)
* order 1: ``|x_c * psi_{j,l}| * phi``                          (``J L`` maps)
* order 2: ``||x_c * psi_{j1,l1}| * psi_{j2,l2}| * phi``, ``j2 > j1`` (``L^2 J(J-1)/2`` maps)

so ``n_features_out_ = C (1 + J L [+ L^2 J (J-1)/2]) pool^2``; MNIST with the defaults
(``J = 2, L = 8, order = 2, pool = 7``): 3,969 features (784 at order 1; 5,184 and 1,088
with ``pool = 8``).

Normalization
-------------
With ``normalize='unit'`` (the default) each image's feature vector is finally divided by
its Euclidean norm (an all-zero vector stays zero), so a distance kernel compares the shape
of the scattering coefficients and not the amount of ink. On a held-out split of the MNIST
training set this took the Gaussian-kernel error from 0.80% to 0.54% at order 2
(``benchmarks/results/gabor_defaults.json``); ``normalize='none'`` keeps the raw
coefficients. ``pool = 7`` (4 x 4-pixel cells on MNIST) tied with ``pool = 8`` there (0.54%
at 10,000 fitted, 0.62% at 20,000) with 23% fewer features, hence the default.

The grid
--------
Unit-norm features are then rounded to multiples of ``2^-11`` (``grid_bits='auto'``; see
:data:`kernelfit.grid.FEATURE_GRID_BITS`): a row becomes the integers ``k / 2048`` with
``|k|^2`` about ``2^22``, so a distance kernel's inner products are exact in a float32 GEMM
(:mod:`kernelfit.grid`) and the solve builds K, checks its residual and predicts at the
float32 rate, with every kernel value still that of the rounded features exactly. Each feature
moves by at most ``2^-12`` (MNIST's default bank: typical values about 0.016). ``kernelfit
solve --dataset mnist --features gabor`` on a 2-core Zen 4 (float64 factorization both ways;
``benchmarks/results/gabor_grid_zen4_avx512.json``): n = 10,000, 0.62% -> 0.60% test error,
17.3 -> 14.7 s without the features; n = 20,000, 0.52% -> 0.48%, 73.3 -> 53.9 s; n = 60,000
0.49% -> 0.38%, 1,372 -> 1,090 s in all (README, "Full-scale results").
``grid_bits=None`` keeps the features unrounded.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import numpy as np
import scipy.fft

from ..backend import usable_cores
from ..errors import InputError
from ..grid import FEATURE_GRID, FEATURE_GRID_BITS
from ._common import FeatureMap, check_float, check_image_shape, check_int, pooling_matrix

__all__ = ["GaborFeatures", "NORMALIZE_CHOICES", "morlet_filter_bank", "fft_convolve_same"]

NORMALIZE_CHOICES = ("unit", "none")
#: images per task of the host transform, one task per core at a time: small groups keep
#: the temporaries near the cache (MNIST's default bank: 2.4 MB of second-order spectra an
#: image). 2-core EPYC, 2,048 MNIST-sized images, groups of 4: 570-800 images/s, of 8:
#: 500-580, of 32: 430-490; all 128 of a batch on one core with NumPy's FFT: 150-210
HOST_IMAGES_PER_TASK = 4
#: the most that rounding to the grid of ``grid_bits`` may move an image's features,
#: relative to their norm (see :func:`_check_rounding`)
MAX_ROUNDING = 0.5


def _check_rounding(out, rounded, bits: int, xp) -> None:
    """Refuse a grid so coarse that rounding moves some image's features by more than
    ``MAX_ROUNDING`` of their norm: the map would then hand on points that are all zero or
    duplicates of each other (MNIST: 2^-4 moves them by up to 58%, 2^-3 merges images;
    the default 2^-11 by under 1%)."""
    norms = xp.sqrt((out * out).sum(axis=1))
    moved = xp.sqrt(((rounded - out) ** 2).sum(axis=1))
    worst = float(xp.max(moved / xp.where(norms > 0, norms, 1.0))) if out.shape[0] else 0.0
    if worst > MAX_ROUNDING:
        grid = "integers" if bits == 0 else f"multiples of 2^-{bits}"
        raise InputError(
            f"grid_bits={bits} rounds the features of some images to {grid}, which moves "
            f"them by {worst:.1%} of their norm (more than {MAX_ROUNDING:.0%}: images become "
            f"all zero or identical); a larger value keeps them apart (grid_bits=auto: "
            f"2^-{FEATURE_GRID_BITS} for unit-norm features, under 1% on MNIST; no rounding "
            "without the unit norm)")


def _rot(theta: float, u1: np.ndarray, u2: np.ndarray):
    c, s = math.cos(theta), math.sin(theta)
    return c * u1 + s * u2, -s * u1 + c * u2


def morlet_filter_bank(scales: int, orientations: int, *, sigma0: float = 0.8,
                       xi0: float = 3 * math.pi / 4, slant: float = 0.5):
    """Spatial Morlet wavelets ``psi`` (``J L x S x S`` complex) and low-pass ``phi`` (``S x S``).

    Wavelet ``k = j L + l`` has scale ``j`` and orientation ``pi l / L``; see the module
    docstring for the formulas. Every ``psi`` sums to zero, ``phi`` sums to one.
    """
    J, L = int(scales), int(orientations)
    sig_phi = sigma0 * 2.0 ** J
    h = int(math.ceil(3.0 * max(sigma0 * 2.0 ** (J - 1) / slant, sig_phi)))
    ax = np.arange(-h, h + 1, dtype=np.float64)
    u1, u2 = np.meshgrid(ax, ax, indexing="ij")
    psi = np.empty((J * L, 2 * h + 1, 2 * h + 1), dtype=np.complex128)
    for j in range(J):
        sig, xi = sigma0 * 2.0 ** j, xi0 / 2.0 ** j
        for l in range(L):
            a, b = _rot(math.pi * l / L, u1, u2)
            g = np.exp(-(a * a + (slant * b) ** 2) / (2.0 * sig * sig))
            g /= g.sum()
            wave = np.exp(1j * xi * a)
            beta = (g * wave).sum()  # g sums to one
            psi[j * L + l] = g * (wave - beta)
    phi = np.exp(-(u1 * u1 + u2 * u2) / (2.0 * sig_phi * sig_phi))
    phi /= phi.sum()
    return psi, phi


def _fast_len(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (a good FFT length)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _conv_matrix(f1: np.ndarray, n: int) -> np.ndarray:
    """``T`` (``n x n``) with ``T @ v`` the 'same' convolution of ``v`` by the centred ``f1``.

    ``(v * f1)[p] = sum_q v[q] f1[p - q + h]`` for ``|p - q| <= h``, ``len(f1) = 2h + 1``.
    """
    h = len(f1) // 2
    d = np.arange(n)[:, None] - np.arange(n)[None, :]
    T = np.zeros((n, n))
    mask = np.abs(d) <= h
    T[mask] = f1[d[mask] + h]
    return T


def _padded_filter_fft(f: np.ndarray, size: tuple) -> np.ndarray:
    """FFT of filters ``f`` (``... x S x S``) zero-padded at the top-left to ``size``."""
    pad = np.zeros(f.shape[:-2] + tuple(size), dtype=np.complex128)
    pad[..., : f.shape[-2], : f.shape[-1]] = f
    return np.fft.fft2(pad)


def fft_convolve_same(x, f_hat, support: int, size: tuple, xp=np):
    """Linear 'same' convolution of real or complex maps ``x`` (``... x H x W``) by FFT.

    ``f_hat`` holds filter FFTs from :func:`_padded_filter_fft` (broadcastable against
    ``x``'s leading axes); ``support`` is the odd filter width ``S``; ``size`` the padded
    grid (``>= H + S - 1`` per axis). Equals ``scipy.signal.convolve2d(x, f, 'same')``.
    """
    H, W = x.shape[-2], x.shape[-1]
    c = support // 2
    if xp is np:  # SciPy's FFT (the caller's threads split the images)
        product = scipy.fft.fft2(x, s=size) * f_hat  # (broadcasts)
        full = scipy.fft.ifft2(product, overwrite_x=True)
    else:
        full = xp.fft.ifft2(xp.fft.fft2(x, s=size) * f_hat)
    return full[..., c:c + H, c:c + W]


class GaborFeatures(FeatureMap):
    """Morlet-wavelet (Gabor) modulus features with local average pooling.

    Parameters
    ----------
    image_shape : (H, W) or (H, W, C)
        Shape of one image; rows of ``X`` are images flattened in ``(H, W, C)`` order.
    scales : int, default 2
        Number of dyadic scales ``J`` (``>= 1``, ``2^J <= min(H, W)``).
    orientations : int, default 8
        Number of orientations ``L`` in ``[0, pi)``.
    order : {1, 2}, default 2
        Scattering order; 2 adds ``||x * psi_1| * psi_2| * phi`` for coarser ``psi_2``.
    pool : int, default 7
        Side of the output grid after low-pass filtering (average pooling cells).
    normalize : {'unit', 'none'}, default 'unit'
        ``'unit'``: each image's feature vector is scaled to unit Euclidean norm (see the
        module docstring); ``'none'``: the coefficients as computed.
    grid_bits : 'auto', int or None, default 'auto'
        Round every feature to a multiple of ``2^-grid_bits`` (exact in binary floating
        point; see "The grid" in the module docstring). ``'auto'``: 11 with
        ``normalize='unit'`` (unit rows on this grid multiply exactly at the float32 rate),
        no rounding with ``'none'``; an int from 0 to 30; None: no rounding.
    sigma0, xi0, slant : float
        Envelope width, centre frequency (radians/pixel) and slant of the finest wavelet.
    batch_size : int, default 128
        Images per batch moved to the device.
    dtype : 'float32' or 'float64', default 'float64'
        Dtype of the features.
    seed : int, default 0
        Recorded as ``seed_`` for uniformity; the map is deterministic.
    device : 'cpu', 'gpu' or 'auto'
    progress : bool or None
        Progress bar (``None``: :func:`kernelfit.progress.progress_enabled`).

    Attributes
    ----------
    psi_, phi_ : ndarray
        Spatial filters (see :func:`morlet_filter_bank`).
    psi_hat_ : ndarray
        FFTs of the wavelets on the padded grid ``fft_shape_``.
    pool_rows_, pool_cols_ : ndarray
        Low-pass-and-pool matrices ``P T`` (``pool x H`` and ``pool x W``).
    n_features_out_, n_features_in_, seed_ : int
    """

    _needs_images = True
    _desc = "gabor features"

    def __init__(self, image_shape=(28, 28), *, scales=2, orientations=8, order=2, pool=7,
                 normalize="unit", grid_bits="auto", sigma0=0.8, xi0=3 * math.pi / 4,
                 slant=0.5, batch_size=128, dtype="float64", seed=0, device="cpu",
                 progress=None):
        self.image_shape = image_shape
        self.scales = scales
        self.orientations = orientations
        self.order = order
        self.pool = pool
        self.normalize = normalize
        self.grid_bits = grid_bits
        self.sigma0 = sigma0
        self.xi0 = xi0
        self.slant = slant
        self.batch_size = batch_size
        self.dtype = dtype
        self.seed = seed
        self.device = device
        self.progress = progress

    def _check_params(self) -> None:
        H, W, C = check_image_shape(self.image_shape, who="gabor features")
        J = check_int("scales", self.scales, 1)
        check_int("orientations", self.orientations, 1, 64)
        check_int("order", self.order, 1, 2)
        if int(self.order) == 2 and J < 2:
            raise InputError("order 2 needs scales >= 2")
        if 2 ** J > min(H, W):
            raise InputError(f"scales={J} is too many for {H}x{W} images: the coarsest "
                             f"wavelet, 2^{J} pixels wide, must fit, so at most "
                             f"{int(math.log2(min(H, W)))}")
        check_int("pool", self.pool, 1, min(H, W))
        if self.normalize not in NORMALIZE_CHOICES:
            raise InputError(f"normalize must be one of {', '.join(NORMALIZE_CHOICES)}, got "
                             f"{self.normalize!r}")
        if not (self.grid_bits is None or self.grid_bits == "auto"):
            check_int("grid_bits", self.grid_bits, 0, 30)
        check_float("sigma0", self.sigma0, 0.0, strict=True)
        check_float("xi0", self.xi0, 0.0, strict=True, maximum=math.pi)
        check_float("slant", self.slant, 0.0, strict=True, maximum=1.0)

    def _fit(self, X) -> None:
        H, W, C = check_image_shape(self.image_shape, who="gabor features")
        self.psi_, self.phi_ = morlet_filter_bank(
            self.scales, self.orientations, sigma0=float(self.sigma0), xi0=float(self.xi0),
            slant=float(self.slant))
        S = self.phi_.shape[0]
        self.fft_shape_ = (_fast_len(H + S - 1), _fast_len(W + S - 1))
        self.psi_hat_ = _padded_filter_fft(self.psi_, self.fft_shape_)
        # phi is separable, phi = f1 f1^T with f1 the normalized 1-D Gaussian, so the
        # low-pass followed by pooling is M -> (P_r T_r) M (P_c T_c)^T with T the 'same'
        # convolution (Toeplitz) matrix of f1: exact and far cheaper than an FFT.
        f1 = self.phi_.sum(axis=1)
        self.pool_rows_ = pooling_matrix(H, int(self.pool)) @ _conv_matrix(f1, H)
        self.pool_cols_ = pooling_matrix(W, int(self.pool)) @ _conv_matrix(f1, W)

    def __setstate__(self, state):
        # a map pickled before grid_bits existed (a model file, a cache entry) made its
        # features unrounded: it keeps doing so
        state = dict(state)
        state.setdefault("grid_bits", None)
        super().__setstate__(state)

    def rounding_bits(self) -> Optional[int]:
        """The ``b`` of the grid ``2^-b`` the features are rounded to, or None (unrounded)."""
        if self.grid_bits == "auto":
            return FEATURE_GRID_BITS if self.normalize == "unit" else None
        return None if self.grid_bits is None else int(self.grid_bits)

    def output_grid(self) -> Optional[float]:
        """``FEATURE_GRID`` where every output row is, times it, integers whose squared sum
        stays below 2^24 (unit rows rounded to ``2^-b``, ``b <= FEATURE_GRID_BITS``: what
        :func:`kernelfit.grid.integer_grid` finds), else None."""
        bits = self.rounding_bits()
        ok = self.normalize == "unit" and bits is not None and bits <= FEATURE_GRID_BITS
        return FEATURE_GRID if ok else None

    def _n_features_out(self) -> int:
        _, _, C = check_image_shape(self.image_shape, who="gabor features")
        J, L = int(self.scales), int(self.orientations)
        maps = 1 + J * L + (L * L * J * (J - 1) // 2 if int(self.order) == 2 else 0)
        return C * maps * int(self.pool) ** 2

    def _transform_batch(self, xb, xp):
        if xp is not np or xb.shape[0] <= HOST_IMAGES_PER_TASK:
            return self._transform_images(xb, xp)
        # on the host: groups of images on every usable core (SciPy's FFT and NumPy's
        # element-wise work release the GIL); small groups keep the temporaries small
        parts = [xb[s:s + HOST_IMAGES_PER_TASK]
                 for s in range(0, xb.shape[0], HOST_IMAGES_PER_TASK)]
        with ThreadPoolExecutor(min(usable_cores(), len(parts))) as pool:
            return np.concatenate(list(pool.map(lambda p: self._transform_images(p, xp),
                                                parts)), axis=0)

    def _transform_images(self, xb, xp):
        H, W, C = check_image_shape(self.image_shape, who="gabor features")
        J, L = int(self.scales), int(self.orientations)
        S, size = self.phi_.shape[0], self.fft_shape_
        b = xb.shape[0]
        x = xp.moveaxis(xb.reshape(b, H, W, C), 3, 1)            # b, C, H, W
        psi_hat = self._on_device("psi_hat_", xp)                  # JL, Hp, Wp
        pr = self._on_device("pool_rows_", xp, xb.dtype)
        pc = self._on_device("pool_cols_", xp, xb.dtype)

        def lowpass_pool(m):                                        # (..., H, W) real
            m = m.astype(xb.dtype, copy=False)
            return xp.matmul(xp.matmul(pr, m), pc.T)               # (..., g, g)

        parts = [lowpass_pool(x)[:, :, None]]                      # b, C, 1, g, g
        u1 = xp.abs(fft_convolve_same(x[:, :, None], psi_hat, S, size, xp))  # b,C,JL,H,W
        parts.append(lowpass_pool(u1))
        if int(self.order) == 2:
            u1 = u1.reshape(b, C, J, L, H, W)
            for j1 in range(J - 1):
                hat2 = psi_hat[(j1 + 1) * L:]                      # (J-1-j1) L filters
                u2 = xp.abs(fft_convolve_same(u1[:, :, j1, :, None], hat2, S, size, xp))
                parts.append(lowpass_pool(u2))                     # b,C,L,(J-1-j1)L,g,g
        out = xp.concatenate([p.reshape(b, C, -1, int(self.pool), int(self.pool))
                              for p in parts], axis=2).reshape(b, -1)
        if self.normalize == "unit":
            norms = xp.sqrt((out * out).sum(axis=1, keepdims=True))
            out = out / xp.where(norms > 0, norms, 1)
        bits = self.rounding_bits()
        if bits is not None:  # multiplying by powers of two: exact, in float32 too
            rounded = xp.rint(out * float(2 ** bits)) * (1.0 / 2 ** bits)
            _check_rounding(out, rounded, bits, xp)
            out = rounded
        return out
