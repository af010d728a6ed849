"""Randomization tests on exact kernel interpolation (Zhang et al., ICLR 2017, Figure 1).

The paper shows that networks which generalize can also fit noise. Kernel machines do the
same (Belkin, Ma and Mandal, 2018): an exact interpolant ``K alpha = y`` reaches zero
training error on any labels and any distinct inputs. This package corrupts a dataset step
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

The package: :mod:`.corruptions` (the pure corruption functions), :mod:`.experiment`
(the loop over modes, levels and repeats, solving through :mod:`kernelfit.run`) and
:mod:`.report` (summaries, tables, figures, files).

Failures: a solve that fails with a :class:`~kernelfit.errors.NotPositiveDefiniteError`
(e.g. duplicated corrupted images) is kept as a record with ``status='failed'`` and the
error message (``on_error='record'``, the default) or raised (``on_error='raise'``).
Training errors that are not 0 are reported as measured, never hidden.

Exactness: every record carries ``exact`` (true only when the float64 relative residual is
at most 1e-8) and, when it is false, ``inexact_reason`` and ``cause``, the same verdict as a
``kernelfit solve`` record (:func:`kernelfit.kernel_defaults.exactness`); the summary counts
``n_inexact`` per (mode, level) and the tables mark those residuals ``NOT exact``.
"""

from __future__ import annotations

from .corruptions import (DEFAULT_LEVELS, LEVEL_MEANING, MODES, PIXEL_MODES, corrupt,
                          corrupt_labels, derive_seed, gaussian_inputs, parse_levels,
                          parse_modes, randomize_pixels, shuffle_pixels)
from .experiment import run_randomization
from .report import (METRICS, check_out_dir, describe, failure_message, inexact_records,
                     plot_results, render_markdown, render_text, summarize, table_rows,
                     write_outputs)

__all__ = [
    "MODES",
    "PIXEL_MODES",
    "DEFAULT_LEVELS",
    "LEVEL_MEANING",
    "METRICS",
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
    "table_rows",
    "describe",
    "render_markdown",
    "render_text",
    "plot_results",
    "check_out_dir",
    "write_outputs",
    "failure_message",
    "inexact_records",
]
