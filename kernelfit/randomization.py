"""Randomization tests on exact kernel interpolation (Zhang et al., ICLR 2017, Figure 1).

The paper shows that networks which generalize can also fit noise. Kernel machines do the
same (Belkin, Ma and Mandal, 2018): an exact interpolant ``K alpha = y`` reaches zero
training error on any labels and any distinct inputs. This module corrupts a dataset step
by step, solves exactly at every step and records what changes: the test error, the RKHS
norm of the interpolant, the solve time and the condition number of ``K``.

Modes (``level`` is always a fraction in ``[0, 1]``; ``0`` is the clean data):

``labels``
    ``round(level * n_train)`` training labels, chosen without replacement, are resampled
    uniformly from the ``n_classes`` classes (a resampled label may by chance equal the old
    one, as in the paper; ``n_labels_changed`` counts the real changes). Test labels and
    all inputs are untouched. ``1.0`` = random labels.
``shuffled-pixels``
    One random permutation of the pixel positions (an image's channels move together) is
    drawn per (level, repeat) and applied to ``round(level * n)`` images of each split.
``random-pixels``
    Each of ``round(level * n)`` images of each split gets its own independent random
    permutation of pixel positions (its multiset of pixel values is preserved).
``gaussian``
    ``round(level * n)`` images of each split are replaced by i.i.d. Gaussian noise with the
    mean and variance of all clean training pixels (not clipped to ``[0, 1]``).

For the three input modes the same fraction of the training *and* the test images is
corrupted (the paper applies its pixel permutation to the test set too); with
``corrupt_test=False`` only training images are corrupted and the test set stays clean.
Corruption acts on the pixels, before any feature map; the feature map (its seed fixed by
the base seed) is then fitted on the corrupted training set.

Seeds: the corruption of each ``(mode, level, repeat)`` is drawn from a seed derived
deterministically from the base seed (:func:`derive_seed`), so any single record can be
reproduced alone. The data subset is drawn once from the base seed and is the same for
every record. A ``'median'`` bandwidth is resolved once on the clean (featurized) training
set, so every record uses the same kernel.

Level 0 of every mode is the clean problem; it is solved once and the record is shared
(``clean_reused`` is true on the copies) unless ``reuse_clean=False``. Label corruption
leaves ``K`` unchanged, so cond(K) of the clean ``K`` is estimated once and shared by the
``labels`` records (``condition_shared`` is true on those; the estimate is deterministic,
so it equals what a separate estimate would give).

Failures: a solve that fails with a :class:`~kernelfit.errors.NotPositiveDefiniteError`
(e.g. duplicated corrupted images) is kept as a record with ``status='failed'`` and the
error message (``on_error='record'``, the default) or raised (``on_error='raise'``).
Training errors that are not 0 are reported as measured, never hidden.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ._io import json_default as _json_default
from .errors import InputError, NotPositiveDefiniteError

__all__ = [
    "MODES",
    "PIXEL_MODES",
    "DEFAULT_LEVELS",
    "LEVEL_MEANING",
    "parse_modes",
    "parse_levels",
    "derive_seed",
    "corrupt_labels",
    "shuffle_pixels",
    "randomize_pixels",
    "gaussian_inputs",
    "corrupt",
    "run_randomization",
    "summarize",
    "render_markdown",
    "plot_results",
    "write_outputs",
]

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

#: metrics summarized over repeats
METRICS = ("train_error", "test_error", "rkhs_norm", "relative_residual", "solve_seconds",
           "condition_number")

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
        texts = [t.strip() for t in levels.split(",") if t.strip()]
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


def _check_repeats(repeats) -> int:
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


# ---------------------------------------------------------------------------
# the experiment
# ---------------------------------------------------------------------------
def _check_modes_for_data(modes: Sequence[str], image_shape) -> None:
    shape = tuple(image_shape or ())
    bad = [m for m in modes if m in PIXEL_MODES]
    if bad and len(shape) not in (2, 3):
        raise InputError(f"mode(s) {', '.join(bad)} permute pixels and need image data; this "
                         f"dataset has no image shape (image_shape={shape}). Use the modes "
                         "'labels' or 'gaussian'", param="modes")


def _solve_one(cfg, bandwidth, X_train, y_train, X_test, y_test, estimate_condition: bool,
               seed: int) -> dict:
    from .pipeline import _estimator

    # the same estimator as `kernelfit solve` (every solver option of cfg), with the
    # bandwidth fixed on the clean data and the condition estimate switched as asked
    est = _estimator(cfg).set_params(bandwidth=bandwidth, estimate_condition=estimate_condition,
                                     random_state=seed, show_progress=False)
    est.fit(X_train, y_train)
    t = dict(est.timings_)
    t0 = time.perf_counter()
    test_error = None
    if X_test is not None and X_test.shape[0]:
        pred = est.predict(X_test)
        test_error = float(np.mean(pred != np.asarray(y_test)))
    t["predict"] = time.perf_counter() - t0
    solve_seconds = sum(t.get(k, 0.0) for k in ("gram", "factor", "solve"))
    return {"train_error": est.train_error_, "test_error": test_error,
            "rkhs_norm": est.rkhs_norm_, "relative_residual": est.relative_residual_,
            "solve_seconds": float(solve_seconds),
            "condition_number": est.condition_number_,
            "factor_gflops_per_s": est.fit_info_.get("factor_gflops_per_s"),
            "precision": est.fit_info_.get("precision", cfg.dtype),
            "timings": {k: float(v) for k, v in t.items()}}


def _featurize(cfg, X_train, X_test, image_shape):
    if cfg.features == "raw":
        return np.asarray(X_train, dtype=np.float64), np.asarray(X_test, dtype=np.float64), {}
    from .features import apply_features

    Ftr, Fte, info = apply_features(cfg.features, dict(cfg.feature_params), X_train, X_test,
                                    image_shape=image_shape, seed=cfg.seed, device=cfg.device)
    info = {k: v for k, v in info.items()
            if isinstance(v, (str, int, float, bool, type(None)))}
    return (np.asarray(Ftr, dtype=np.float64), np.asarray(Fte, dtype=np.float64), info)


def run_randomization(cfg=None, modes="labels", levels=DEFAULT_LEVELS, repeats: int = 1, *,
                      dataset=None, estimate_condition: bool = True, corrupt_test: bool = True,
                      on_error: str = "record", reuse_clean: bool = True,
                      show_progress: Optional[bool] = None,
                      callback: Optional[Callable[[dict], None]] = None) -> dict:
    """Run the randomization test: for every mode, level and repeat, corrupt, featurize,
    solve exactly and evaluate.

    Parameters
    ----------
    cfg : :class:`kernelfit.pipeline.SolveConfig`
        Data, features, kernel and solver options (as for ``kernelfit solve``); ``cfg.seed``
        is the base seed (data subset, feature map, and the root of every corruption seed).
    modes : str or sequence
        ``'labels'``, ``'shuffled-pixels'``, ``'random-pixels'``, ``'gaussian'`` or ``'all'``
        (comma-separated string or list).
    levels : str or sequence of float in [0, 1]
        Corruption levels; see :data:`LEVEL_MEANING`.
    repeats : int >= 1
        Independent corruptions per (mode, level).
    dataset : :class:`kernelfit.datasets.Dataset`, optional
        Use these arrays instead of loading ``cfg.dataset``.
    estimate_condition : bool or 'endpoints'
        Estimate cond(K) from the factor (30 power + 30 inverse iterations with one
        vector each: memory-bound, often longer than the factorization itself).
        ``'endpoints'`` estimates it only at levels 0 and 1 (and for ``labels``, whose K
        never changes); other records then have ``condition_number`` None.
    corrupt_test : bool
        Input modes also corrupt the same fraction of test images (default, as the paper).
    on_error : {'record', 'raise'}
        What a failed solve (``NotPositiveDefiniteError``) does.
    reuse_clean : bool
        Solve level 0 (the clean problem) once and share the record.
    show_progress : bool or None
        A progress bar over the solves (None: only on a terminal).
    callback : callable, optional
        Called with each record as soon as it exists.

    Returns
    -------
    dict with ``records`` (one per mode, level, repeat), ``summary`` (:func:`summarize`),
    ``config``, ``dataset``, ``level_meaning``, ``kernel_params``, ``feature_info``,
    ``n_failed``, ``all_train_errors_zero``, ``seconds`` and ``versions``.
    All validation (modes, levels, repeats, pixel modes on non-image data, feature
    parameters, memory) happens before the first solve.
    """
    from .pipeline import SolveConfig, _versions, preflight
    from .progress import progress

    cfg = replace(cfg) if cfg is not None else SolveConfig()
    modes = parse_modes(modes)
    levels = parse_levels(levels)
    repeats = _check_repeats(repeats)
    if estimate_condition not in (True, False, "endpoints"):
        raise InputError(f"estimate_condition must be True, False or 'endpoints', got "
                         f"{estimate_condition!r}")
    if on_error not in ("record", "raise"):
        raise InputError(f"on_error must be 'record' or 'raise', got {on_error!r}")
    t_start = time.perf_counter()

    from .backend import get_backend

    be = get_backend(cfg.device)
    cfg.device = be.device

    if dataset is None:
        from .datasets import load_dataset

        ds = load_dataset(cfg.dataset, data_dir=cfg.data_dir, n_train=cfg.n_train,
                          n_test=cfg.n_test, balanced=cfg.balanced, seed=cfg.seed)
    else:
        ds = dataset
    _check_modes_for_data(modes, ds.image_shape)
    X_train = np.asarray(ds.X_train, dtype=np.float64)
    X_test = np.asarray(ds.X_test, dtype=np.float64)
    y_train = np.asarray(ds.y_train)
    y_test = np.asarray(ds.y_test)
    n_classes = int(ds.n_classes)
    if X_train.shape[0] < 2:
        raise InputError(f"need at least 2 training points, got {X_train.shape[0]}")

    if cfg.features != "raw":  # parameter check before any work
        from .features import make_feature_map

        make_feature_map(cfg.features, image_shape=ds.image_shape, seed=cfg.seed,
                         device=cfg.device, **dict(cfg.feature_params))

    # clean features: reused by every labels record and to fix the kernel
    F_train, F_test, feature_info = _featurize(cfg, X_train, X_test, ds.image_shape)
    plan = preflight(cfg, F_train.shape[0], F_train.shape[1], n_classes, F_test.shape[0])
    bandwidth = cfg.bandwidth
    bandwidth_rule = "given"
    if isinstance(bandwidth, str):
        if bandwidth != "median":
            raise InputError(f"bandwidth must be a positive number or 'median', got "
                             f"{bandwidth!r}")
        from .kernels import median_distance

        bandwidth = median_distance(F_train, seed=cfg.seed)
        bandwidth_rule = "median pairwise distance of the clean training set (seeded sample)"
    from .kernels import get_kernel

    kernel = get_kernel(cfg.kernel, bandwidth=float(bandwidth), degree=cfg.degree,
                        gamma=cfg.gamma, coef0=cfg.coef0)
    pixel_mean = float(np.mean(X_train))
    pixel_std = float(np.std(X_train))

    jobs = [(m, lv, r) for m in modes for lv in levels for r in range(repeats)]
    records: List[dict] = []
    clean: Optional[dict] = None
    # labels leave K unchanged: its condition number is estimated once and shared
    clean_cond: Dict[str, Optional[float]] = {}
    bar = progress(total=len(jobs), desc="randomize", enabled=show_progress, unit="solve")
    try:
        for mode, level, rep in jobs:
            seed = derive_seed(cfg.seed, mode, level, rep)
            bar.set_postfix_str(f"{mode} {level:g} #{rep}")
            base = {"mode": mode, "level": float(level), "repeat": int(rep), "seed": seed,
                    "base_seed": int(cfg.seed)}
            if level == 0.0 and reuse_clean and clean is not None:
                rec = dict(clean)
                rec.update(base)
                rec["clean_reused"] = True
            else:
                wants_cond = bool(estimate_condition) and (
                    estimate_condition is True or mode == "labels" or level in (0.0, 1.0))
                shared_cond = (wants_cond and (mode == "labels" or level == 0.0)
                               and "value" in clean_cond)
                rec = _one_record(cfg, base, mode, level, seed, X_train, y_train, X_test,
                                  y_test, F_train, F_test, ds.image_shape, n_classes,
                                  float(bandwidth), wants_cond and not shared_cond,
                                  corrupt_test, pixel_mean, pixel_std, on_error)
                if rec["status"] == "ok" and wants_cond:
                    if shared_cond:
                        rec["condition_number"] = clean_cond["value"]
                        rec["condition_shared"] = True
                    elif mode == "labels" or level == 0.0:
                        clean_cond["value"] = rec["condition_number"]
                if level == 0.0 and rec["status"] == "ok":
                    clean = rec
            records.append(rec)
            if callback is not None:
                callback(rec)
            bar.update(1)
    finally:
        bar.close()

    n_failed = sum(r["status"] != "ok" for r in records)
    ok = [r for r in records if r["status"] == "ok"]
    result = {
        "dataset": ds.name,
        "data_source": ds.source,
        "image_shape": list(ds.image_shape),
        "n_classes": n_classes,
        "n_train": int(X_train.shape[0]),
        "n_test": int(X_test.shape[0]),
        "n_features": int(F_train.shape[1]),
        "modes": list(modes),
        "levels": list(levels),
        "repeats": repeats,
        "base_seed": int(cfg.seed),
        "corrupt_test": bool(corrupt_test),
        "estimate_condition": estimate_condition,
        "level_meaning": {m: _level_meaning(m, corrupt_test) for m in modes},
        "features": cfg.features,
        "feature_params": dict(cfg.feature_params),
        "feature_info": feature_info,
        "kernel": kernel.name,
        "kernel_params": kernel.params(),
        "bandwidth_rule": bandwidth_rule if kernel.name in ("gaussian", "laplacian") else None,
        "pixel_mean": pixel_mean,
        "pixel_std": pixel_std,
        "dtype": cfg.dtype,
        "solver": cfg.solver,
        "ridge": float(cfg.ridge),
        "device": cfg.device,
        "memory_plan": plan,
        "records": records,
        "summary": summarize(records),
        "n_failed": int(n_failed),
        "all_train_errors_zero": bool(ok) and all(r["train_error"] == 0 for r in ok),
        "seconds": time.perf_counter() - t_start,
        "config": _config_dict(cfg),
        "versions": _versions(),
    }
    return result


def _level_meaning(mode: str, corrupt_test: bool) -> str:
    text = LEVEL_MEANING[mode]
    if not corrupt_test and mode != "labels":
        text = text.replace("(train and test)", "(training set only; test set clean)")
    return text


def _config_dict(cfg) -> dict:
    d = asdict(cfg)
    d.pop("save", None)
    return json.loads(json.dumps(d, default=str))


def _one_record(cfg, base, mode, level, seed, X_train, y_train, X_test, y_test, F_train,
                F_test, image_shape, n_classes, bandwidth, estimate_condition, corrupt_test,
                pixel_mean, pixel_std, on_error) -> dict:
    rec = dict(base)
    t0 = time.perf_counter()
    Xtr, ytr, Xte, info = corrupt(mode, level, X_train, y_train, X_test,
                                  image_shape=image_shape, n_classes=n_classes, seed=seed,
                                  corrupt_test=corrupt_test, pixel_mean=pixel_mean,
                                  pixel_std=pixel_std)
    t_corrupt = time.perf_counter() - t0
    rec.update({k: info[k] for k in ("n_corrupted_train", "n_corrupted_test",
                                     "n_labels_resampled", "n_labels_changed") if k in info})
    t0 = time.perf_counter()
    if mode == "labels" or level == 0.0:
        Ftr, Fte = F_train, F_test
    else:
        Ftr, Fte, _ = _featurize(cfg, Xtr, Xte, image_shape)
    t_feat = time.perf_counter() - t0
    rec.update(n_train=int(Ftr.shape[0]), n_test=int(Fte.shape[0]),
               n_features=int(Ftr.shape[1]), clean_reused=False, condition_shared=False)
    try:
        out = _solve_one(cfg, bandwidth, Ftr, ytr, Fte, y_test, estimate_condition, seed)
    except NotPositiveDefiniteError as exc:
        if on_error == "raise":
            raise NotPositiveDefiniteError(f"{mode} level {level:g} repeat {base['repeat']} "
                                           f"(seed {seed}): {exc}", index=exc.index) from None
        out = {k: None for k in METRICS}
        out.update(status="failed", error=f"{type(exc).__name__}: {exc}", timings={})
    else:
        out.update(status="ok", error=None)
    out["timings"] = dict(out.get("timings") or {}, corrupt=t_corrupt, features=t_feat)
    rec.update(out)
    return rec


# ---------------------------------------------------------------------------
# summary, table, plots, files
# ---------------------------------------------------------------------------
def _stats(values: List[float]) -> dict:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    a = np.asarray(vals)
    std = None
    if a.size > 1:  # identical values (shared clean records): exactly 0, not rounding noise
        std = 0.0 if a.min() == a.max() else float(a.std(ddof=1))
    mean = float(a[0]) if a.min() == a.max() else float(a.mean())
    return {"mean": mean, "std": std,
            "min": float(a.min()), "max": float(a.max()), "n": int(a.size)}


def summarize(records: Iterable[dict]) -> List[dict]:
    """Mean, sample standard deviation (ddof=1; None for one repeat), min and max of every
    metric over the successful repeats of each (mode, level), in first-seen order."""
    groups: Dict[Tuple[str, float], List[dict]] = {}
    for r in records:
        groups.setdefault((r["mode"], float(r["level"])), []).append(r)
    out = []
    for (mode, level), recs in groups.items():
        ok = [r for r in recs if r.get("status", "ok") == "ok"]
        entry = {"mode": mode, "level": level, "n_repeats": len(recs), "n_ok": len(ok),
                 "n_failed": len(recs) - len(ok),
                 "errors": [r["error"] for r in recs if r.get("status", "ok") != "ok"]}
        for m in METRICS:
            entry[m] = _stats([r.get(m) for r in ok])
        entry["train_error_zero"] = bool(ok) and all(r.get("train_error") == 0 for r in ok)
        out.append(entry)
    return out


def _pct(s: dict) -> str:
    if s["mean"] is None:
        return "-"
    txt = f"{100 * s['mean']:.2f}%"
    if s["std"] is not None:
        txt += f" ± {100 * s['std']:.2f}"
    return txt


def _num(s: dict, fmt: str = "{:.3g}") -> str:
    if s["mean"] is None:
        return "-"
    txt = fmt.format(s["mean"])
    if s["std"] is not None:
        txt += " ± " + fmt.format(s["std"])
    return txt


def table_rows(result: dict) -> List[List[str]]:
    """Header plus one row of strings per (mode, level) of ``result['summary']``."""
    rows = [["mode", "level", "ok/runs", "train error", "test error", "RKHS norm",
             "rel. residual", "cond(K)", "solve s"]]
    for s in result["summary"]:
        rows.append([s["mode"], f"{s['level']:g}", f"{s['n_ok']}/{s['n_repeats']}",
                     _pct(s["train_error"]), _pct(s["test_error"]), _num(s["rkhs_norm"]),
                     _num(s["relative_residual"], "{:.1e}"),
                     _num(s["condition_number"], "{:.2e}"),
                     _num(s["solve_seconds"], "{:.2f}")])
    return rows


def describe(result: dict) -> str:
    """One line: dataset, sizes, features, kernel, solver."""
    kp = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                   for k, v in result["kernel_params"].items() if k != "name")
    feats = result["features"] + (f" {result['feature_params']}" if result["feature_params"]
                                  else "")
    return (f"{result['dataset']}, n_train={result['n_train']}, n_test={result['n_test']}, "
            f"d={result['n_features']}, features={feats}, kernel={result['kernel']}"
            f"{' (' + kp + ')' if kp else ''}, {result['solver']}/{result['dtype']}/"
            f"{result['device']}, repeats={result['repeats']}, base seed={result['base_seed']}")


def render_markdown(result: dict, note: Optional[str] = None) -> str:
    """A markdown report: setup, level meanings, the summary table and any failures."""
    lines = ["# Randomization test: exact kernel interpolation", ""]
    if note:
        lines += [f"**Note:** {note}", ""]
    lines += [f"- Setup: {describe(result)}", f"- Data source: {result['data_source']}"]
    if result.get("bandwidth_rule") and result["bandwidth_rule"] != "given":
        lines.append(f"- Bandwidth: {result['bandwidth_rule']}")
    lines.append("- Level meaning:")
    for m, text in result["level_meaning"].items():
        lines.append(f"  - `{m}`: {text}")
    lines += ["- Values: mean ± sample std over repeats (std omitted for one repeat); "
              "solve s = Gram + factorization + triangular solves.",
              "- All training errors exactly 0: "
              f"{'yes' if result['all_train_errors_zero'] else 'NO'}"
              f"; failed solves: {result['n_failed']}; total time {result['seconds']:.1f} s.", ""]
    rows = table_rows(result)
    lines.append("| " + " | ".join(rows[0]) + " |")
    lines.append("|" + "|".join("---" for _ in rows[0]) + "|")
    for r in rows[1:]:
        lines.append("| " + " | ".join(r) + " |")
    fails = [r for r in result["records"] if r["status"] != "ok"]
    if fails:
        lines += ["", "## Failed solves", ""]
        for r in fails:
            lines.append(f"- {r['mode']} level {r['level']:g} repeat {r['repeat']} "
                         f"(seed {r['seed']}): {r['error']}")
    return "\n".join(lines) + "\n"


def render_text(result: dict) -> str:
    """The summary as an aligned plain-text table (for the terminal)."""
    rows = table_rows(result)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = [describe(result)]
    for r in rows:
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return "\n".join(out) + "\n"


_PANELS = (("test_error", "test error", "linear"), ("rkhs_norm", "RKHS norm of the interpolant",
                                                    "log"),
           ("solve_seconds", "solve time (s)", "linear"),
           ("condition_number", "cond(K) (estimate)", "log"))
_STYLES = {"labels": ("C0", "o"), "shuffled-pixels": ("C1", "s"),
           "random-pixels": ("C2", "^"), "gaussian": ("C3", "D")}


def _series(result: dict, mode: str, metric: str):
    xs, ys, es = [], [], []
    for s in result["summary"]:
        if s["mode"] != mode or s[metric]["mean"] is None:
            continue
        xs.append(s["level"])
        ys.append(s[metric]["mean"])
        es.append(s[metric]["std"] or 0.0)
    return np.asarray(xs), np.asarray(ys), np.asarray(es)


def _draw(ax, result: dict, metric: str, label: str, scale: str) -> None:
    for mode in result["modes"]:
        color, marker = _STYLES.get(mode, ("k", "o"))
        x, y, e = _series(result, mode, metric)
        if not x.size:
            continue
        if metric == "test_error":
            y, e = 100 * y, 100 * e
        n_levels = sum(1 for s in result["summary"] if s["mode"] == mode)
        # levels without a value (e.g. cond(K) estimated only at the endpoints): markers
        # only, so that no line suggests values that were not measured
        ls = "-" if x.size == n_levels else "none"
        ax.errorbar(x, y, yerr=e if e.any() else None, color=color, marker=marker,
                    capsize=3, label=mode, linestyle=ls)
    if metric == "test_error":
        chance = 100 * (1 - 1 / max(result["n_classes"], 1))
        ax.axhline(chance, color="gray", ls=":", lw=1, label=f"chance ({chance:.0f}%)")
        label += " (%)"
    ax.set_yscale(scale)
    ax.set_xlabel("corruption level")
    ax.set_ylabel(label)
    ax.set_xlim(-0.03, 1.03)
    ax.grid(True, alpha=0.3)


def _title(result: dict, note: Optional[str], width: int = 90) -> str:
    import os
    import textwrap

    kp = result["kernel_params"]
    kdesc = result["kernel"] + (f" h={kp['bandwidth']:.3g}" if "bandwidth" in kp else "")
    name = result["dataset"]
    if name.startswith("imagefolder:"):
        name = "imagefolder:" + os.path.basename(name.split(":", 1)[1].rstrip("/\\"))
    t = (f"Randomization test, {name}: n_train={result['n_train']}, n_test={result['n_test']}, "
         f"{kdesc}, features={result['features']}, repeats={result['repeats']}")
    if note:
        t += ". " + note
    return "\n".join(textwrap.wrap(t, width))


def plot_results(result: dict, note: Optional[str] = None) -> Dict[str, object]:
    """Matplotlib figures (Agg, no pyplot state): ``overview`` (four panels: test error,
    RKHS norm, solve time, condition number vs level, one line per mode: the kernel
    analogue of the paper's Figure 1), and one figure per metric. Returns name -> Figure."""
    from matplotlib.figure import Figure

    figs: Dict[str, object] = {}
    fig = Figure(figsize=(11, 8.5), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    for ax, (metric, label, scale) in zip(axes, _PANELS):
        _draw(ax, result, metric, label, scale)
    axes[0].legend(fontsize=8)
    fig.suptitle(_title(result, note, width=120), fontsize=9)
    figs["overview"] = fig
    for metric, label, scale in _PANELS[:3]:
        f = Figure(figsize=(6, 4.2), layout="constrained")
        ax = f.subplots()
        _draw(ax, result, metric, label, scale)
        ax.legend(fontsize=8)
        f.suptitle(_title(result, note, width=85), fontsize=7)
        figs[metric] = f
    return figs


def check_out_dir(out_dir) -> Path:
    """Raise :class:`InputError` unless ``out_dir`` is, or can be created as, a writable
    folder. Creates nothing."""
    import os

    p = Path(out_dir).expanduser()
    if p.exists() and not p.is_dir():
        raise InputError(f"output folder {out_dir} exists and is not a folder", param="out",
                         path=str(out_dir))
    anc = p
    while not anc.exists():
        if anc.parent == anc:
            break
        anc = anc.parent
    if not anc.is_dir() or not os.access(anc, os.W_OK | os.X_OK):
        raise InputError(f"output folder {out_dir}: {anc} is not a writable folder",
                         param="out", path=str(out_dir))
    return p


def write_outputs(result: dict, out_dir, prefix: str = "randomize_",
                  note: Optional[str] = None, plots: bool = True) -> List[str]:
    """Write ``{prefix}records.json``, ``{prefix}table.md`` and the PNGs
    (``{prefix}overview.png``, ``{prefix}test_error.png``, ``{prefix}rkhs_norm.png``,
    ``{prefix}solve_seconds.png``) into ``out_dir`` (created if missing), each atomically.
    Returns the paths written."""
    from ._io import atomic_write_text, atomic_writer

    d = check_out_dir(out_dir)
    if not isinstance(prefix, str) or "/" in prefix or "\\" in prefix:
        raise InputError(f"prefix must be a plain file-name prefix, got {prefix!r}")
    d.mkdir(parents=True, exist_ok=True)
    payload = dict(result)
    if note:
        payload["note"] = note
    written = []
    path = d / f"{prefix}records.json"
    atomic_write_text(path, json.dumps(payload, indent=2, default=_json_default) + "\n")
    written.append(str(path))
    path = d / f"{prefix}table.md"
    atomic_write_text(path, render_markdown(result, note))
    written.append(str(path))
    if plots:
        for name, fig in plot_results(result, note).items():
            path = d / f"{prefix}{name}.png"
            with atomic_writer(path, "wb") as fh:
                fig.savefig(fh, format="png", dpi=110)
            written.append(str(path))
    return written


def failure_message(result: dict) -> Optional[str]:
    """A one-line warning when a solve failed or a training error was not 0, else None."""
    parts = []
    if result["n_failed"]:
        parts.append(f"{result['n_failed']} solve(s) failed (see records' 'error')")
    nonzero = [r for r in result["records"]
               if r["status"] == "ok" and r["train_error"] not in (0, 0.0)]
    if nonzero:
        parts.append(f"{len(nonzero)} record(s) have a training error above 0 (max "
                     f"{max(r['train_error'] for r in nonzero):.3g})")
    return "; ".join(parts) or None

