"""Defaults that depend on the representation, and the exactness verdict of a solve.

Two small, self-contained helpers, called from the run layer (:func:`kernelfit.run.choose_kernel`,
used by :func:`kernelfit.run.solve_arrays` and the randomization test), the options
(:meth:`kernelfit.options.KernelOptions.resolve`) and ``kernelfit reproduce``, and kept in their
own module:

* :func:`choose_bandwidth`: the Gaussian/Laplacian bandwidth when the user gave none, chosen
  for the feature map and the data in use, with the rule and the reason recorded
  (``bandwidth_rule``). It is the one place that rule lives.
* :func:`exactness`: ``exact`` is true only when the float64 relative residual is at most
  :data:`EXACT_RESIDUAL` (1e-8); otherwise the record says why it is not.
* :data:`KERNEL_PARAMS` and :func:`gamma_as_width`: which kernel takes which parameter, and
  the refusal of scikit-learn's RBF ``gamma`` given as a width.

The rules were measured, not assumed (``benchmarks/results/bandwidth_defaults.json``):
MNIST, 10,000 training images fitted, 5,000 other TRAINING images held out, Gaussian kernel,
exact float64 solve.

=========  ============  =================  ============================================
features   candidate     held-out error     float64 relative residual
=========  ============  =================  ============================================
raw        h = 5         2.80%              3.4e-14
raw        median (10.4) 3.36%              2.7e-12
gabor      h = 5         1.56%              7.2e-07 (not exact: K is nearly all ones)
gabor      0.5 x median  1.14%              1.5e-12
gabor      0.75 x median 0.96%              2.5e-11
gabor      median        0.98%              1.7e-10
gabor      2 x median    1.08%              8.1e-09
=========  ============  =================  ============================================

(Gabor here: first order, coefficients not normalized, the map's defaults then.) So raw
pixels keep h = 5 (pixels in [0, 1]); every feature map gets 0.75 x the median
pairwise distance of a seeded sample of its training features: the best held-out error
(tied with the median within one image of 5,000) and a 7x smaller residual than the median,
which matters more as n grows. On random-conv features (CIFAR-10 JPEG set, 2,000 fitted, 500
held-out training images) 0.5 to 1 x the median were within noise and 1.5 to 2 x worse.

h = 5 is a distance between pixel vectors in [0, 1], so it holds only for the image datasets
whose loaders scale pixels so (:data:`kernelfit.datasets.registry.PIXEL_DATASETS`: MNIST,
Fashion-MNIST, CIFAR-10, digits, image folders). Raw inputs of any other scale (``npz:``
arrays, which are used as given, or arrays of unknown origin) get the feature maps' rule,
0.75 x the median, which follows the scale of the data.

Gabor's own default map changed afterwards (issue 15; ``benchmarks/results/gabor_defaults.json``,
same protocol): second order, pool 7 (3,969 features), each image's feature vector scaled to
unit norm. Gaussian kernel, held-out error against the multiple of the median:

======================================  =======  =========  =======  ========
Gabor map                               0.75 x   1 x        1.25 x   1.5 x
======================================  =======  =========  =======  ========
order 1, pool 8, raw (the old default)  0.96%    0.98%
order 2, pool 8, raw                    0.82%    0.80%
order 2, pool 8, unit norm              0.62%    0.54%      0.56%    0.60%
order 2, pool 7, unit norm (default)    0.62%    **0.54%**           0.58%
======================================  =======  =========  =======  ========

so ``gabor`` gets 1 x the median (:data:`MEDIAN_FACTORS`); float64 relative residual 1.4e-11
at n = 10,000 and 3.8e-11 at n = 20,000 (0.62% held out there, against 0.62% at pool 8).
Checked once on full MNIST after choosing (n = 60,000, the official 10,000 test images):
0.49% test error (0.65% with the old map), residual 2.3e-10
(``benchmarks/results/reproduce_gabor_full.json``).
"""

from __future__ import annotations

import math
import numbers
from typing import Optional, Tuple

__all__ = ["EXACT_RESIDUAL", "INEXACT_EXIT_CODE", "RAW_BANDWIDTH", "FEATURE_MEDIAN_FACTOR",
           "MEDIAN_FACTORS", "median_factor", "choose_bandwidth", "exactness", "refinement_of",
           "exit_code_for", "KERNEL_PARAMS", "gamma_as_width", "rbf_gamma_width"]

EXACT_RESIDUAL = 1e-8
INEXACT_EXIT_CODE = 6  # 2 input, 3 data, 4 memory, 5 not positive definite, 6 not exact
RAW_BANDWIDTH = 5.0
FEATURE_MEDIAN_FACTOR = 0.75
MEDIAN_FACTORS = {"gabor": 1.0}  # feature maps measured apart; the rest: FEATURE_MEDIAN_FACTOR
_MEASURED = "benchmarks/results/bandwidth_defaults.json"
_WHY = {
    "gabor": ("the median pairwise distance of a seeded sample of the training features was "
              "best on a held-out split of the MNIST training set (Gabor order 2, pool 7, unit "
              "norm, n = 10,000: 0.54% against 0.62% at 0.75 x and 0.58% at 1.5 x the median; "
              "benchmarks/results/gabor_defaults.json)"),
}


def median_factor(features: str) -> float:
    """The multiple of the median pairwise distance that ``features`` gets by default."""
    return MEDIAN_FACTORS.get(features, FEATURE_MEDIAN_FACTOR)


def choose_bandwidth(kernel: str, features: str, requested, X, *, dataset: Optional[str] = None,
                     seed: int = 0, median: Optional[float] = None
                     ) -> Tuple[object, Optional[dict]]:
    """The bandwidth to use and a record of why: ``(value, bandwidth_rule)``.

    ``requested`` is what the user asked for: a number or ``'median'`` is kept (the rule
    says so; a ``'median'`` is fixed on the data by
    :meth:`kernelfit.options.KernelOptions.fixed`); ``None`` picks the default for
    ``features`` and ``dataset`` (see the module docstring). ``dataset`` is the name of the
    data (``'mnist'``, ``'npz:PATH'`` ...; None: unknown): raw features get h = 5 only when
    it names an image dataset scaled to [0, 1]. ``median`` is the median pairwise distance
    when the caller already has it (``X`` is then not read); otherwise it is measured on a
    seeded sample of ``X``. Kernels without a bandwidth return ``(requested or 5.0, None)``
    (the value is unused).
    """
    if kernel not in ("gaussian", "laplacian", "rbf"):
        return (RAW_BANDWIDTH if requested is None else requested), None
    if requested is not None:
        rule = "median" if requested == "median" else "given"
        why = ("median pairwise distance of a seeded sample of the training rows, as asked"
               if rule == "median" else "given by the user")
        return requested, {"rule": rule, "why": why}
    from .datasets import scaled_pixels

    if features == "raw" and scaled_pixels(dataset):
        return RAW_BANDWIDTH, {
            "rule": "raw-pixels-default", "value": RAW_BANDWIDTH,
            "why": ("raw pixels in [0, 1]: h = 5 was best on a held-out split of the MNIST "
                    "training set (2.80% against 3.36% at the median, n = 10,000; "
                    f"{_MEASURED})")}
    if median is None:
        from .kernels import median_distance

        median = median_distance(X, seed=seed)
    med = float(median)
    factor = median_factor(features)  # raw inputs of unknown scale: the feature maps' rule
    value = factor * med
    if features == "raw":
        what = (f"raw inputs of {dataset}" if dataset else "raw inputs of unknown origin")
        why = (f"{what}, not an image dataset scaled to [0, 1] (h = 5 is for such pixels): "
               f"{FEATURE_MEDIAN_FACTOR:g} x the median pairwise distance of a seeded sample "
               "of the training rows, the feature maps' rule, which follows the scale of the "
               f"data ({_MEASURED})")
    else:
        why = f"{features} features: {factor:g} x " + _WHY.get(features, (
            "the median pairwise distance of a seeded sample of the training features was "
            "best on a held-out split of the MNIST training set (first-order Gabor, n = "
            "10,000: 0.96% against 0.98% at the median and 1.56% at h = 5, with a 7x smaller "
            f"residual than the median; {_MEASURED})"))
    return value, {"rule": f"{factor:g} x median", "value": value,
                   "median_distance": med, "why": why}


def refinement_of(fit_info: dict) -> Optional[dict]:
    """The refinement facts :func:`exactness` weighs, from a solve's ``fit_info``: the
    target ``tol`` and whether it was ``converged``, for a solve refined from a float32
    factor (mixed precision, in memory, out of core or on Dask); None for any other."""
    if (fit_info.get("precision") == "mixed" and "tol" in fit_info
            and "converged" in fit_info):
        out = {"tol": float(fit_info["tol"]), "converged": bool(fit_info["converged"])}
        steps, most = fit_info.get("iterations"), fit_info.get("max_iter")
        if (not out["converged"] and steps is not None and most is not None
                and int(steps) >= int(most) and "note_stalled" not in fit_info):
            out["max_iter"] = int(most)  # it ran out of steps, still falling
        return out
    return None


def exactness(residual: Optional[float], *, kernel_params: Optional[dict] = None,
              bandwidth_rule: Optional[dict] = None, condition_number: Optional[float] = None,
              ridge: float = 0.0, refinement: Optional[dict] = None,
              precision: Optional[str] = None, conflicting: int = 0,
              low_rank: Optional[str] = None) -> dict:
    """``{"exact": bool, "exact_threshold": 1e-8[, "inexact_reason": ...]}`` for a solve.

    A missing or non-finite residual is not exact. The reason names the likely cause
    (a ridge, a refinement target ``tol`` above the threshold, a plain float32 solve
    (``precision`` 'float32': its rounding, not the kernel), training points that repeat
    others with another target (``conflicting`` of them: no function interpolates both),
    a kernel whose K has rank below n by construction (``low_rank``: the words of
    :func:`kernelfit.solvers.exact.rank_deficiency`),
    ill-conditioning, a bandwidth large against the data's distances) as facts (``cause``,
    and ``refinement_tol`` / ``refinement_converged`` for a refined solve, see
    :func:`refinement_of`); the CLI turns them into advice.
    """
    out = {"exact": False, "exact_threshold": EXACT_RESIDUAL}
    if residual is None or not math.isfinite(residual):
        out["inexact_reason"] = "no finite float64 residual was computed"
        return out
    if residual <= EXACT_RESIDUAL:
        out["exact"] = True
        return out
    head = f"float64 relative residual {residual:.1e} > {EXACT_RESIDUAL:.0e}: "
    if ridge:
        out["inexact_reason"] = (head + f"ridge {ridge:g} > 0, a regularized solve does not "
                                 "interpolate")
        out["cause"] = "ridge"
        return out
    if refinement is not None:
        tol, converged = float(refinement["tol"]), bool(refinement["converged"])
        out.update(refinement_tol=tol, refinement_converged=converged)
        if converged and tol > EXACT_RESIDUAL:
            out["inexact_reason"] = (head + f"the refinement stopped, as asked, at its target "
                                     f"tol {tol:g}, which is above {EXACT_RESIDUAL:.0e}")
            out["cause"] = "tol"
            return out
    if conflicting:
        out.update(inexact_reason=head + f"{conflicting} training point(s) repeat others with "
                   "another target, which no function interpolates both: no solve, bandwidth or "
                   "precision reaches a residual below what those pairs leave",
                   cause="conflicting_labels", n_conflicting=int(conflicting))
        return out
    if precision == "float32" and refinement is None:
        # float32 rounding (2^-24 relative) times cond(K): the kernel need not be at fault
        parts = [head + "K was stored and factored in float32, whose rounding (6e-8 "
                 "relative) limits the residual to about cond(K) x 6e-8"]
        if condition_number:
            parts.append(f"estimated condition number {condition_number:.1e}")
        out.update(inexact_reason="; ".join(parts), cause="float32")
        return out
    if refinement is not None and refinement.get("max_iter") is not None:
        most = refinement["max_iter"]
        out["inexact_reason"] = (head + f"the refinement used all {most} "
                                 f"step{'' if most == 1 else 's'} it was allowed (max_iter) "
                                 "before reaching its target "
                                 f"tol {float(refinement['tol']):g}")
        out.update(cause="max_iter", refinement_max_iter=refinement["max_iter"])
        return out
    if low_rank:  # K singular by construction: no width or precision helps
        out.update(inexact_reason=head + f"{low_rank}: no coefficients interpolate every "
                   "label; the solve's are the best it found (eigh, lstsq: the minimum-norm "
                   "least-squares ones)", cause="low_rank")
        return out
    if condition_number is not None and not math.isfinite(condition_number):
        # eigh/lstsq on a singular K (duplicates, a low-rank kernel): no coefficients fit
        # every label, and the minimum-norm least-squares ones are what the solve returned
        out.update(inexact_reason=head + "K is singular (estimated condition number inf): "
                   "no coefficients interpolate every label, the solve returned the "
                   "minimum-norm least-squares ones", cause="singular")
        return out
    parts = [head + "K is too ill-conditioned for this solve"]
    if refinement is not None and not refinement["converged"]:
        parts[0] += (f" (the refinement from its float32 factor did not reach its target "
                     f"tol {float(refinement['tol']):g})")
    if condition_number:
        parts.append(f"estimated condition number {condition_number:.1e}")
    bw = (kernel_params or {}).get("bandwidth")
    med = (bandwidth_rule or {}).get("median_distance")
    if bw is not None and med:
        parts.append(f"bandwidth {bw:.3g} is {bw / med:.2g} x the median distance {med:.3g}")
    elif bw is not None:
        parts.append(f"bandwidth {bw:.3g}: a large bandwidth makes K nearly all ones")
    out["inexact_reason"] = "; ".join(parts)
    out["cause"] = "bandwidth" if bw is not None else "ill-conditioning"
    return out


def exit_code_for(rec: dict, tolerance: Optional[float] = None) -> int:
    """0 for an exact solve, or an inexact one whose residual is within ``tolerance``;
    :data:`INEXACT_EXIT_CODE` otherwise."""
    if rec.get("exact", True):
        return 0
    res = rec.get("relative_residual")
    if tolerance is not None and res is not None and math.isfinite(res) and res <= tolerance:
        return 0
    return INEXACT_EXIT_CODE


#: the kernels each parameter applies to (the others have no such parameter)
KERNEL_PARAMS = {"bandwidth": ("gaussian", "laplacian"), "degree": ("polynomial", "normalized"),
                 "gamma": ("polynomial",), "coef0": ("polynomial",)}


def rbf_gamma_width(gamma) -> Optional[float]:
    """The Gaussian bandwidth h that scikit-learn's RBF ``gamma`` means (gamma = 1/(2 h^2)),
    or None where gamma is no positive number giving a finite h."""
    if not isinstance(gamma, numbers.Real) or not gamma > 0:
        return None
    h = (0.5 / float(gamma)) ** 0.5
    return h if math.isfinite(h) else None


def gamma_as_width(name, gamma) -> Optional[str]:
    """The refusal of a ``gamma`` (away from its default 1) given to a kernel whose width is
    its bandwidth (gaussian or scikit-learn's 'rbf', laplacian): scikit-learn's habit
    ``kernel='rbf', gamma=...``, which kernelfit would ignore (gamma scales the polynomial
    kernel only), leaving the width at its default. None where gamma is the default or the
    kernel has it. (degree and coef0 are ignored by the kernels without them, as in
    scikit-learn: they set no width, and a grid over kernels may share them.)"""
    kernel = "gaussian" if name == "rbf" else name
    if kernel not in KERNEL_PARAMS["bandwidth"] or gamma is None or gamma == 1.0:
        return None  # (None: scikit-learn's 'not given')
    h = rbf_gamma_width(gamma) if kernel == "gaussian" else None
    what = (f" (scikit-learn's RBF gamma is 1/(2 h^2): gamma {gamma:g} is bandwidth {h:.4g})"
            if h is not None else "")
    return (f"gamma applies to the polynomial kernel, not {name!r}, which would ignore it: "
            f"give the width as bandwidth h instead{what}")
