"""The corruptions of the randomization tests: pure functions of their inputs and a seeded
:class:`numpy.random.Generator` (see :mod:`kernelfit.randomization` for the modes)."""

from __future__ import annotations

import hashlib
import math
from typing import List, Optional, Tuple

import numpy as np

from ..errors import InputError

__all__ = ["MODES", "PIXEL_MODES", "DEFAULT_LEVELS", "LEVEL_MEANING", "parse_modes",
           "parse_levels", "check_repeats", "derive_seed", "corrupt_labels", "shuffle_pixels",
           "randomize_pixels", "gaussian_inputs", "corrupt"]

MODES = ("labels", "shuffled-pixels", "random-pixels", "gaussian")
#: modes that permute pixel positions and therefore need images
PIXEL_MODES = ("shuffled-pixels", "random-pixels")
DEFAULT_LEVELS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)

LEVEL_MEANING = {
    "labels": "fraction of training labels resampled uniformly at random (test labels clean)",
    "shuffled-pixels": "fraction of images (train and test) given one shared fixed pixel "
                       "permutation",
    "random-pixels": "fraction of images (train and test) each given its own random pixel "
                     "permutation",
    "gaussian": "fraction of images (train and test) replaced by Gaussian noise with the "
                "training pixels' mean and variance",
}


_SEED_TAG = "kernelfit-randomize-v1"


# ---------------------------------------------------------------------------
# arguments
# ---------------------------------------------------------------------------
def parse_modes(modes) -> Tuple[str, ...]:
    """Normalize modes: a comma-separated string or a sequence; ``'all'`` expands.

    Returns the modes in the order given, without duplicates. Raises :class:`InputError`
    for an unknown or empty mode list.
    """
    if isinstance(modes, str):
        items = [t.strip() for t in modes.split(",")]
    else:
        try:
            items = [str(t).strip() for t in modes]
        except TypeError:
            raise InputError(f"modes must be a string or a list of strings, got "
                             f"{type(modes).__name__}") from None
    items = [t.lower().replace("_", "-") for t in items if t]
    if not items:
        raise InputError(f"no mode given; choose from {', '.join(MODES)} or 'all'")
    out: List[str] = []
    for t in items:
        expanded = MODES if t == "all" else (t,)
        for m in expanded:
            if m not in MODES:
                raise InputError(f"unknown mode {m!r}; choose from {', '.join(MODES)} or 'all'")
            if m not in out:
                out.append(m)
    return tuple(out)


def parse_levels(levels) -> Tuple[float, ...]:
    """Levels as sorted unique floats in ``[0, 1]``, from a comma-separated string or a
    sequence of numbers. Raises :class:`InputError` otherwise."""
    if isinstance(levels, str):
        texts = [t.strip() for t in levels.split(",")]
        if len(texts) > 1 and not all(texts):
            raise InputError(f"levels {levels!r} has an empty item between commas; e.g. "
                             "0,0.5,1", param="levels")
        texts = [t for t in texts if t]
        vals = []
        for t in texts:
            try:
                vals.append(float(t))
            except ValueError:
                raise InputError(f"could not parse level {t!r} (expected numbers in [0, 1] "
                                 "separated by commas)") from None
    else:
        try:
            vals = [float(v) for v in levels]
        except (TypeError, ValueError):
            raise InputError(f"levels must be numbers in [0, 1], got {levels!r}") from None
    if not vals:
        raise InputError("no level given; e.g. levels 0, 0.2, 0.4, 0.6, 0.8, 1.0",
                         param="levels")
    bad = [v for v in vals if not (math.isfinite(v) and 0.0 <= v <= 1.0)]
    if bad:
        raise InputError(f"levels must lie in [0, 1] (fractions of the data corrupted), got "
                         f"{', '.join(repr(b) for b in bad)}")
    return tuple(sorted(set(vals)))


def check_repeats(repeats) -> int:
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)):
        raise InputError(f"repeats must be an integer >= 1, got {repeats!r}")
    if repeats < 1:
        raise InputError(f"repeats must be at least 1, got {repeats}")
    return int(repeats)


def _check_level(level) -> float:
    level = float(level)
    if not (math.isfinite(level) and 0.0 <= level <= 1.0):
        raise InputError(f"level must lie in [0, 1], got {level!r}")
    return level


def derive_seed(base_seed: int, mode: str, level: float, repeat: int) -> int:
    """The corruption seed of one ``(mode, level, repeat)``: a SHA-256 of the four values.

    Independent of which other modes or levels are run and of the order they run in, and
    the same on every platform and Python version.
    """
    text = f"{_SEED_TAG}|{int(base_seed)}|{mode}|{float(level):.12g}|{int(repeat)}"
    digest = hashlib.sha256(text.encode("ascii")).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


# ---------------------------------------------------------------------------
# corruptions (pure functions of their inputs and a Generator)
# ---------------------------------------------------------------------------
def _count(level: float, n: int) -> int:
    return int(round(_check_level(level) * n))


def _rng(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def corrupt_labels(y, level: float, n_classes: int, rng=None) -> Tuple[np.ndarray, dict]:
    """Resample ``round(level * n)`` labels (chosen without replacement) uniformly from
    ``0 .. n_classes - 1``.

    Returns ``(y_new, info)``; ``info`` holds ``indices`` (the resampled positions, sorted),
    ``n_labels_resampled`` and ``n_labels_changed`` (resampled labels that differ from the
    original). ``y`` is not modified.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise InputError(f"labels must be 1-D, got shape {y.shape}")
    if int(n_classes) < 1:
        raise InputError(f"n_classes must be at least 1, got {n_classes}")
    if not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"labels must be integer class codes 0 .. n_classes - 1, got dtype "
                         f"{y.dtype}")
    rng = _rng(rng)
    n = y.shape[0]
    k = _count(level, n)
    idx = np.sort(rng.choice(n, size=k, replace=False)) if k else np.zeros(0, dtype=np.int64)
    y_new = y.copy()
    y_new[idx] = rng.integers(0, int(n_classes), size=k).astype(y.dtype, copy=False)
    info = {"indices": idx, "n_labels_resampled": int(k),
            "n_labels_changed": int(np.count_nonzero(y_new[idx] != y[idx]))}
    return y_new, info


def _as_pixels(X, image_shape) -> Tuple[np.ndarray, int, int]:
    """View ``X`` (n, d) as (n, pixels, channels) for an ``(H, W)`` or ``(H, W, C)`` shape."""
    shape = tuple(int(s) for s in (image_shape or ()))
    if len(shape) not in (2, 3) or any(s < 1 for s in shape):
        raise InputError(f"pixel modes need images (image_shape (H, W) or (H, W, C)); this data "
                         f"has image_shape {shape}")
    channels = shape[2] if len(shape) == 3 else 1
    n_pix = shape[0] * shape[1]
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != n_pix * channels:
        raise InputError(f"X has shape {X.shape}, expected (n, {n_pix * channels}) for images "
                         f"of shape {shape}")
    return X.reshape(X.shape[0], n_pix, channels), n_pix, channels


def _choose(n: int, level: float, rng: np.random.Generator) -> np.ndarray:
    k = _count(level, n)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    return np.sort(rng.choice(n, size=k, replace=False))


def shuffle_pixels(X_train, X_test, level: float, image_shape, rng=None,
                   corrupt_test: bool = True) -> Tuple[np.ndarray, np.ndarray, dict]:
    """Apply one random permutation of pixel positions to ``round(level * n)`` images of
    each split (of the training split only with ``corrupt_test=False``).

    Returns ``(X_train_new, X_test_new, info)``; ``info`` has ``permutation`` (length
    H*W: new pixel ``j`` is old pixel ``permutation[j]``), ``train_indices``,
    ``test_indices``, ``n_corrupted_train`` and ``n_corrupted_test``.
    """
    rng = _rng(rng)
    Ptr, n_pix, _ = _as_pixels(X_train, image_shape)
    Pte, _, _ = _as_pixels(X_test, image_shape)
    perm = rng.permutation(n_pix)
    itr = _choose(Ptr.shape[0], level, rng)
    ite = _choose(Pte.shape[0], level, rng) if corrupt_test else np.zeros(0, dtype=np.int64)
    out = []
    for P, idx in ((Ptr, itr), (Pte, ite)):
        Q = P.copy()
        if idx.size:
            Q[idx] = P[idx][:, perm, :]
        out.append(Q.reshape(P.shape[0], -1))
    info = {"permutation": perm, "train_indices": itr, "test_indices": ite,
            "n_corrupted_train": int(itr.size), "n_corrupted_test": int(ite.size)}
    return out[0], out[1], info


def _permute_each(P: np.ndarray, idx: np.ndarray, rng: np.random.Generator,
                  chunk: int = 2048) -> np.ndarray:
    Q = P.copy()
    n_pix = P.shape[1]
    for s in range(0, idx.size, chunk):
        rows = idx[s:s + chunk]
        perms = np.argsort(rng.random((rows.size, n_pix)), axis=1)
        Q[rows] = np.take_along_axis(P[rows], perms[:, :, None], axis=1)
    return Q


def randomize_pixels(X_train, X_test, level: float, image_shape, rng=None,
                     corrupt_test: bool = True) -> Tuple[np.ndarray, np.ndarray, dict]:
    """Give each of ``round(level * n)`` images of each split its own independent random
    permutation of pixel positions (channels move together).

    Returns ``(X_train_new, X_test_new, info)`` with ``train_indices``, ``test_indices``,
    ``n_corrupted_train`` and ``n_corrupted_test``.
    """
    rng = _rng(rng)
    Ptr, _, _ = _as_pixels(X_train, image_shape)
    Pte, _, _ = _as_pixels(X_test, image_shape)
    itr = _choose(Ptr.shape[0], level, rng)
    ite = _choose(Pte.shape[0], level, rng) if corrupt_test else np.zeros(0, dtype=np.int64)
    Xtr = _permute_each(Ptr, itr, rng).reshape(Ptr.shape[0], -1)
    Xte = _permute_each(Pte, ite, rng).reshape(Pte.shape[0], -1)
    info = {"train_indices": itr, "test_indices": ite,
            "n_corrupted_train": int(itr.size), "n_corrupted_test": int(ite.size)}
    return Xtr, Xte, info


def gaussian_inputs(X_train, X_test, level: float, rng=None, corrupt_test: bool = True,
                    mean: Optional[float] = None,
                    std: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray, dict]:
    """Replace ``round(level * n)`` images of each split by i.i.d. Gaussian noise.

    The noise has the mean and standard deviation of all entries of ``X_train`` (the clean
    training pixels) unless ``mean``/``std`` are given. Values are not clipped. Returns
    ``(X_train_new, X_test_new, info)`` with ``mean``, ``std``, the chosen indices and counts.
    """
    rng = _rng(rng)
    Xtr = np.array(X_train, dtype=np.float64, copy=True)
    Xte = np.array(X_test, dtype=np.float64, copy=True)
    if Xtr.ndim != 2 or Xte.ndim != 2 or (Xte.shape[0] and Xte.shape[1] != Xtr.shape[1]):
        raise InputError(f"X_train and X_test must be 2-D with the same width, got "
                         f"{Xtr.shape} and {Xte.shape}")
    mu = float(np.mean(Xtr)) if mean is None else float(mean)
    sd = float(np.std(Xtr)) if std is None else float(std)
    if not (math.isfinite(mu) and math.isfinite(sd) and sd >= 0):
        raise InputError(f"Gaussian noise needs a finite mean and std >= 0, got {mu}, {sd}")
    itr = _choose(Xtr.shape[0], level, rng)
    ite = _choose(Xte.shape[0], level, rng) if corrupt_test else np.zeros(0, dtype=np.int64)
    d = Xtr.shape[1]
    if itr.size:
        Xtr[itr] = rng.normal(mu, sd, size=(itr.size, d))
    if ite.size:
        Xte[ite] = rng.normal(mu, sd, size=(ite.size, d))
    info = {"mean": mu, "std": sd, "train_indices": itr, "test_indices": ite,
            "n_corrupted_train": int(itr.size), "n_corrupted_test": int(ite.size)}
    return Xtr, Xte, info


def corrupt(mode: str, level: float, X_train, y_train, X_test, *, image_shape=(),
            n_classes: int, seed: int, corrupt_test: bool = True,
            pixel_mean: Optional[float] = None, pixel_std: Optional[float] = None):
    """Apply one mode at one level with a seeded generator.

    Returns ``(X_train, y_train, X_test, info)`` (test labels are never changed); ``info``
    holds the counts of what was corrupted (index arrays are left out).
    """
    mode = parse_modes(mode)
    if len(mode) != 1:
        raise InputError("corrupt() takes exactly one mode")
    mode = mode[0]
    level = _check_level(level)
    rng = np.random.default_rng(seed)
    if mode == "labels":
        y_new, info = corrupt_labels(y_train, level, n_classes, rng)
        info = {k: v for k, v in info.items() if k != "indices"}
        info.update(n_corrupted_train=info["n_labels_resampled"], n_corrupted_test=0)
        return X_train, y_new, X_test, info
    if mode == "shuffled-pixels":
        Xtr, Xte, info = shuffle_pixels(X_train, X_test, level, image_shape, rng, corrupt_test)
    elif mode == "random-pixels":
        Xtr, Xte, info = randomize_pixels(X_train, X_test, level, image_shape, rng,
                                          corrupt_test)
    else:
        Xtr, Xte, info = gaussian_inputs(X_train, X_test, level, rng, corrupt_test,
                                         mean=pixel_mean, std=pixel_std)
    info = {k: v for k, v in info.items() if not isinstance(v, np.ndarray)}
    return Xtr, y_train, Xte, info
