"""The one run layer: load -> features -> kernel -> memory plan -> fit -> evaluate -> record.

Every way of running kernelfit on data goes through these steps: ``kernelfit solve``
(:func:`run_solve`), ``kernelfit randomize`` (:mod:`kernelfit.randomization`, which adds only
its corruptions and its report), the benchmark children (:mod:`kernelfit.bench.runner`) and
the scripts in ``benchmarks/``. The options come as one :class:`~kernelfit.options.RunOptions`
tree.

The steps, each usable alone:

- :func:`resolve_device`  the device ('auto' resolved once, 'gpu' refused early without one)
- :func:`load`            the dataset subset of the options (seeded)
- :func:`feature_plan`    the features' width and memory, known before they are computed
- :func:`featurize`       the feature map fitted on the training split (cached on disk)
- :func:`choose_kernel`   the kernel: its bandwidth chosen (the one rule,
                          :func:`kernelfit.kernel_defaults.choose_bandwidth`) and fixed
                          once on the training inputs, with the record of the choice
- :func:`make_plan`       the one plan of the solve (route, precision, memory), refused
                          before any feature is computed (:func:`preflight`: its record;
                          :func:`grid_inputs`: whether its inputs will be exact integers)
- :func:`fit`             the exact solve (a fitted :class:`~kernelfit.KernelInterpolator`),
                          running that plan
- :func:`evaluate`        test error and prediction time
- :func:`solve_record`    the flat, JSON-ready record of one solve

:func:`solve_arrays` chains plan -> fit -> evaluate -> record on given arrays and
:func:`run_solve` the whole flow on a dataset.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional, Tuple

import numpy as np

from . import __version__
from .errors import InexactFitWarning, InputError
from .grid import INT_GRID_KERNELS, grid_expected
from .kernel_defaults import exit_code_for
from .kernels import active_columns, check_array
from .memory import fmt_bytes, peak_rss_bytes, reset_peak_rss
from .modelfile import input_range
from .options import FeatureOptions, KernelOptions, RunOptions, SolverOptions

__all__ = ["run_solve", "solve_arrays", "resolve_device", "load", "featurize",
           "feature_cache_dir", "feature_cache_key", "feature_plan", "choose_kernel",
           "make_plan", "grid_inputs", "preflight",
           "solve_width", "make_estimator", "fit", "evaluate", "computed_dtype",
           "solve_record", "relative_residual", "versions", "save_if_accepted"]


# ---------------------------------------------------------------- steps
def resolve_device(opts: RunOptions):
    """``(opts, backend)`` with ``opts.solver.device`` the device actually used."""
    from .backend import get_backend

    be = get_backend(opts.solver.device)  # resolve 'auto' (and fail early on 'gpu')
    if be.device != opts.solver.device:
        opts = replace(opts, solver=replace(opts.solver, device=be.device))
    return opts, be


def load(opts: RunOptions):
    """The :class:`~kernelfit.datasets.Dataset` the options name (subsets drawn from
    ``opts.seed``)."""
    from .datasets import load_dataset

    d = opts.data
    return load_dataset(d.dataset, data_dir=d.data_dir, n_train=d.n_train, n_test=d.n_test,
                        balanced=d.balanced, seed=opts.seed)


def feature_cache_dir(cache_dir: Optional[str] = None) -> Path:
    """Where computed features are cached: ``cache_dir``, else ``KERNELFIT_CACHE``, else
    ``$XDG_CACHE_HOME/kernelfit/features`` (``~/.cache/kernelfit/features``)."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("KERNELFIT_CACHE")
    if env:
        return Path(env).expanduser() / "features"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kernelfit" / "features"


def feature_cache_key(dataset: str, n_train: int, n_test: int, seed: int,
                      balanced: bool) -> str:
    """The feature cache's folder name for a dataset's split: the dataset's name as it is
    where it is a plain name (``mnist``), else (``npz:data.npz``, ``imagefolder:/a/b``) its
    safe characters and a digest of the whole name, so that different files never share
    a folder (the cache checks its inputs anyway) and no path separator reaches it."""
    name = re.sub(r"[^A-Za-z0-9._+=,@-]+", "_", dataset).strip("._")[:48]
    if name != dataset:
        digest = hashlib.sha256(dataset.encode()).hexdigest()[:12]
        name = f"{name or 'data'}-{digest}"
    return f"{name}-n{n_train}-t{n_test}-seed{seed}-bal{int(bool(balanced))}"


def featurize(features: FeatureOptions, X_train, X_test, image_shape, *, seed: int = 0,
              device: str = "cpu", cache_key: Optional[str] = None):
    """Fit the feature map on ``X_train`` and transform both splits.

    Returns ``(F_train, F_test, info, transformer)``: float64 arrays, the map's ``info``
    (without the transformer; empty for ``'raw'``) and the fitted map (None for ``'raw'``).
    The on-disk cache is used when ``features.cache`` is on and a ``cache_key`` is given.
    """
    if features.name == "raw":
        return (np.asarray(X_train, dtype=np.float64), np.asarray(X_test, dtype=np.float64),
                {}, None)
    from .features import apply_features

    cache_dir = None
    if features.cache and cache_key is not None:
        cache_dir = str(feature_cache_dir(features.cache_dir))
        if not features.cache_dir:  # the default folder, from the environment: said so
            from ._io import check_writable_folder

            try:
                check_writable_folder(cache_dir, param="cache_dir")
            except InputError as exc:
                raise InputError(f"the feature cache's default folder (from "
                                 "$KERNELFIT_CACHE, else $XDG_CACHE_HOME, else ~/.cache): "
                                 f"{exc.message}, give another (cache_dir), or turn the "
                                 "cache off (feature_cache)", **exc.facts) from None
    Ftr, Fte, info = apply_features(features.name, dict(features.params), X_train, X_test,
                                    image_shape=image_shape, seed=seed, device=device,
                                    cache_dir=cache_dir,
                                    cache_key=cache_key if cache_dir else None)
    fmap = info.pop("transformer", None)
    return np.asarray(Ftr, dtype=np.float64), np.asarray(Fte, dtype=np.float64), info, fmap


def feature_plan(features: FeatureOptions, X_train, X_test, image_shape, *, seed: int = 0,
                 device: str = "cpu", cached: bool = False) -> Tuple[int, int]:
    """``(width, pending_bytes)`` of the features of these inputs, before any is computed.

    ``width``: the columns the solve will use (raw inputs: their non-zero columns, see
    :func:`solve_width`; a feature map: its output dimension, from its options and the
    input shape). ``pending_bytes``: the memory the float64 features of :func:`featurize`
    will take once made: 0 where the inputs are used as they are (raw float64) or the
    features are memory-mapped from the cache (``cached``, a float64 map).
    """
    rows = X_train.shape[0] + X_test.shape[0]
    if features.name == "raw":
        copied = X_train.dtype != np.float64 or X_test.dtype != np.float64
        return solve_width(X_train), (8 * rows * X_train.shape[1] if copied else 0)
    from .features import make_feature_map

    fmap = make_feature_map(features.name, image_shape=image_shape, seed=seed,
                            device=device, **dict(features.params))
    width = fmap.output_dim(X_train.shape)
    mapped = cached and np.dtype(fmap.dtype) == np.float64
    return width, (0 if mapped else 8 * rows * width)


def choose_kernel(opts: RunOptions, X_train, dataset: Optional[str] = None
                  ) -> Tuple[KernelOptions, Optional[dict]]:
    """The kernel options with the bandwidth fixed, once, on ``X_train`` (the training
    inputs, after the feature map), and the record of the choice (``bandwidth_rule``; None for
    kernels without a bandwidth).

    The bandwidth and its record come from
    :func:`kernelfit.kernel_defaults.choose_bandwidth` (the default for ``opts.features`` and
    the data, or the value asked for); a ``'median'`` is then measured on ``X_train``.
    ``dataset`` names the data (a dataset name such as ``'mnist'`` or ``'npz:PATH'``; None:
    arrays of unknown origin, never taken for [0, 1] pixels). ``opts.data`` is not read:
    the arrays need not come from it.
    """
    from .kernel_defaults import choose_bandwidth

    bw, rule = choose_bandwidth(opts.kernel.name, opts.features.name, opts.kernel.bandwidth,
                                X_train, seed=opts.seed, dataset=dataset)
    return replace(opts.kernel, bandwidth=bw).fixed(X_train, seed=opts.seed), rule


def make_plan(cfg: SolverOptions, n: int, d: int, n_classes: int, n_test: int, *,
              reserve: int = 0, grid: bool = False):
    """The one plan of the solve (:class:`~kernelfit.solvers.plan.SolvePlan`: route,
    precision, memory), checked before anything large is built; :func:`fit` runs it.
    ``d``: the columns the solve uses (see :func:`solve_width`); ``reserve``: bytes the
    data will take before the solve runs (features not computed yet, see
    :func:`feature_plan`), not available to it; ``grid``: the inputs will be stored as
    exact integers (:func:`kernelfit.grid.grid_expected`), which ``precision='auto'``'s
    time model costs at the float32 GEMM rate."""
    from .solvers.plan import preflight_plan

    return preflight_plan(cfg, n, d, n_classes, n_test, reserve=reserve, grid=grid)


def grid_inputs(opts: RunOptions, X_train, image_shape=None) -> bool:
    """Whether the solve of ``X_train`` (inputs before ``opts.features``; ``image_shape``:
    theirs, for a map that needs images) is expected to store its inputs as exact integers:
    raw inputs by a sample (:func:`kernelfit.grid.grid_expected`), a feature map's outputs
    where the map promises the grid (:meth:`~kernelfit.features.FeatureMap.output_grid`:
    the unit-norm Gabor features). For :func:`make_plan`'s ``grid``."""
    if opts.features.name == "raw":
        return grid_expected(opts.kernel.name, X_train)
    if opts.kernel.name not in INT_GRID_KERNELS:
        return False
    from .features import make_feature_map

    fmap = make_feature_map(opts.features.name, image_shape=image_shape, seed=opts.seed,
                            device=opts.solver.device, **dict(opts.features.params))
    return fmap.output_grid() is not None


def preflight(cfg: SolverOptions, n: int, d: int, n_classes: int, n_test: int) -> dict:
    """The JSON record of :func:`make_plan` (raises
    :class:`~kernelfit.errors.MemoryPlanError` when the solve cannot fit)."""
    return make_plan(cfg, n, d, n_classes, n_test).record()


def solve_width(X) -> int:
    """The columns of ``X`` the solve works on: the estimator drops columns that are zero
    in every training row (:func:`kernelfit.kernels.active_columns`)."""
    support = active_columns(X)
    return int(X.shape[1]) if support is None else int(support.shape[0])


def make_estimator(opts: RunOptions, **params):
    """The :class:`~kernelfit.KernelInterpolator` of the options' kernel and solver (seeded
    by ``opts.seed``); ``params`` are further estimator parameters."""
    from .estimator import KernelInterpolator

    return KernelInterpolator(**opts.kernel.to_flat(), **opts.solver.to_flat(),
                              random_state=opts.seed, **params)


def fit(opts: RunOptions, X_train, y_train, *, plan=None, **params):
    """The exact solve: a fitted estimator (see :func:`make_estimator` for ``params``);
    ``plan``: the solve's plan from :func:`make_plan` (None: the solve plans itself). The
    estimator's :class:`~kernelfit.errors.InexactFitWarning` is left out: this layer's
    records say how exact a solve was (:func:`kernelfit.kernel_defaults.exactness`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InexactFitWarning)
        return make_estimator(opts, **params).fit(X_train, y_train, plan=plan)


def evaluate(est, X_test, y_test) -> Tuple[Optional[float], float]:
    """``(test_error, predict_seconds)``: the share of misclassified test points, or for a
    regression (``est.task_``) the root mean squared error; None without test points."""
    t0 = time.perf_counter()
    if X_test is None or not X_test.shape[0]:
        return None, time.perf_counter() - t0
    pred = est.predict(X_test)
    if getattr(est, "task_", "classification") == "regression":  # root mean squared error
        err = np.asarray(pred, dtype=np.float64) - np.asarray(y_test, dtype=np.float64)
        return float(np.sqrt(np.mean(err ** 2))), time.perf_counter() - t0
    y_test = np.asarray(y_test)
    unseen = ~np.isin(y_test, est.classes_)
    if unseen.any():  # no prediction can be right there: say so, as scikit-learn's scores do not
        labels = ", ".join(map(str, np.unique(y_test[unseen])[:5]))
        warnings.warn(f"{int(unseen.sum())} test point(s) carry labels the training split has "
                      f"none of ({labels}): each counts as an error; train on more points (or "
                      "balanced subsets) so that every class appears", UserWarning, stacklevel=2)
    return float(np.mean(pred != y_test)), time.perf_counter() - t0


def relative_residual(kernel, X, alpha, Y) -> float:
    """||K alpha - Y|| / ||Y|| in float64 against the real K (recomputed tile by tile):
    the certificate of a solve that did not form K alpha itself (e.g. a peer's)."""
    from .solvers.products import kernel_matvec

    Y = np.asarray(Y, dtype=np.float64)
    if np.shape(alpha)[0] != np.shape(X)[0]:
        raise InputError(f"alpha has {np.shape(alpha)[0]} rows, X {np.shape(X)[0]}: one "
                         "coefficient per training point", param="alpha")
    if not np.linalg.norm(Y) > 0:
        raise InputError("Y is all zeros: a relative residual ||K alpha - Y|| / ||Y|| has no "
                         "meaning; take ||K alpha|| itself", param="Y")
    KA = np.asarray(kernel_matvec(kernel, X, alpha, show_progress=False), dtype=np.float64)
    if KA.size != Y.size or KA.shape[0] != Y.shape[0]:
        raise InputError(f"alpha {np.shape(alpha)} and Y {Y.shape} do not match: one "
                         "coefficient column per target column, one row per training point",
                         param="alpha")
    # a 1-D target against (n, 1) coefficients (the estimator's alpha_ for a regression):
    # compared as columns (broadcasting them gave an n x n difference)
    return float(np.linalg.norm(KA.reshape(Y.shape) - Y) / np.linalg.norm(Y))


def versions() -> dict:
    """The versions a record is made with (kernelfit, Python, NumPy, SciPy, scikit-learn,
    BLAS)."""
    import scipy
    import sklearn

    from .backend import blas_info

    return {"kernelfit": __version__, "python": platform.python_version(),
            "numpy": np.__version__, "scipy": scipy.__version__, "sklearn": sklearn.__version__,
            "blas": blas_info()}


#: fit_info keys copied into the record; those in _PREFIXED get a ``solve_`` prefix
_INFO_KEYS = ("precision", "precision_reason", "refinement", "tol", "iterations", "matvecs",
              "refinement_history", "refinement_step_seconds", "preconditioner_application",
              "converged", "shift", "preconditioner_only", "note",
              "checkpoint", "out_of_core", "distributed", "precision_fallback", "plan_choice",
              "inner_products", "kept_tiles", "n_tiles_lower", "kept_off_diagonal_tiles",
              "kept_storage", "kept_bytes", "kept_diagonal_in_tiles", "deflation",
              "conditioning_probe", "max_iter", "note_stalled", "tracked_residual",
              "float64_floor", "note_target", "precision_note")
_PREFIXED = ("tol", "iterations", "note", "max_iter", "note_stalled", "note_target")


def computed_dtype(est, requested: str) -> str:
    """The dtype K was stored and factored in by a fitted solve: its precision when that is
    one dtype (the minimum-norm solvers always compute in float64, a plain Cholesky in its
    storage dtype), float32 for mixed precision (its ``precision`` says the solution was
    refined in float64), else ``requested``."""
    precision = getattr(est, "precision_", None)
    if precision == "mixed":
        return "float32"
    return precision if precision in ("float32", "float64") else str(requested or "float64")


def solve_record(est, opts: RunOptions, *, n_test: int, n_classes: int,
                 test_error: Optional[float], plan: dict, timings: dict) -> dict:
    """The flat record of one fitted solve (errors, residual, norm, solver facts)."""
    X_fit = est.X_fit_
    rec = {
        "n_train": int(X_fit.shape[0]),
        "n_test": int(n_test),
        "n_features": int(est.n_features_in_),
        "n_classes": n_classes if est.task_ == "classification" else None,
        "task": est.task_,
        "kernel": est.kernel_.name,
        "kernel_params": est.kernel_.params(),
        "dtype": computed_dtype(est, opts.solver.dtype),
        "device": est.device_,
        "solver": est.solver_,
        "ridge": float(opts.solver.ridge),
        "seed": int(opts.seed),
        "train_error": est.train_error_,
        "test_error": test_error,
        "relative_residual": est.relative_residual_,
        "rkhs_norm": est.rkhs_norm_,
        "tile_size": est.fit_info_.get("tile_size"),
        "factor_gflops_per_s": est.fit_info_.get("factor_gflops_per_s"),
        "memory_plan": plan,
    }
    if "rank" in est.fit_info_:
        rec["rank"] = est.fit_info_["rank"]
    for key in _INFO_KEYS:
        if key in est.fit_info_:
            rec["solve_" + key if key in _PREFIXED else key] = est.fit_info_[key]
    rec["timings"] = timings
    return rec


# ---------------------------------------------------------------- whole runs
def _check_arrays(X_train, y_train, X_test, y_test):
    from .estimator import check_magnitude

    X_train = check_array(np.asarray(X_train), "X_train")
    check_magnitude(X_train, "X_train")
    y_train = np.asarray(y_train)
    if y_train.ndim != 1 or y_train.shape[0] != X_train.shape[0]:
        raise InputError(f"y_train must be 1-D with {X_train.shape[0]} labels, got shape "
                         f"{y_train.shape}")
    if X_test is not None:
        X_test = check_array(np.asarray(X_test), "X_test", allow_empty=True)
        if X_test.shape[0] and X_test.shape[1] != X_train.shape[1]:
            raise InputError(f"X_test has {X_test.shape[1]} features, X_train has "
                             f"{X_train.shape[1]}")
        if y_test is None or np.asarray(y_test).shape[0] != X_test.shape[0]:
            raise InputError("y_test must have one label per row of X_test (the record's "
                             "test error); to predict unlabelled rows, keep the estimator "
                             "with on_fitted= and call its predict")
    return X_train, y_train, X_test


def _plan_that_ran(plan, est) -> dict:
    """The memory plan of the solve as it ran: ``plan``'s record, or, where auto planned
    one precision and then ran the other (mixed ruled out by the conditioning probe, or
    fallen back; float64 swapped for mixed by the probe), the plan it ran, with the one
    made first as ``planned_first``."""
    planned = plan.record()
    switched = (plan.route == "mixed" and est.precision_ != "mixed") or (
        plan.alternative is not None and est.precision_ == "mixed")
    if switched and est.memory_plan_:
        return dict(est.memory_plan_, planned_first=planned)
    return planned


def solve_arrays(X_train, y_train, X_test=None, y_test=None, opts: Optional[RunOptions] = None,
                 timings: Optional[dict] = None, on_fitted: Optional[Callable] = None,
                 plan=None, dataset: Optional[str] = None, task: str = "auto") -> dict:
    """Plan, fit, evaluate and record an exact solve on given arrays, as they are:
    ``opts.features`` names the map that made them (for the default bandwidth), it does not
    apply one (:func:`featurize` does).

    Returns the record (errors, residual, norm, timings); ``on_fitted(estimator)`` is called
    with the fitted estimator (e.g. to save it). Without a bandwidth, the default is chosen
    for ``opts.features`` and the data ``dataset`` names (:func:`choose_kernel`): the name of
    the dataset the arrays are (e.g. ``'mnist'``: raw [0, 1] pixels get h = 5); None, the
    default: arrays of unknown origin, whatever ``opts.data.dataset`` says (the median
    rule). ``plan``: the solve's plan made already by :func:`make_plan` for these sizes
    (None: made here, the one plan of the solve). ``task``: the estimator's
    (``'auto'``, ``'classification'`` or ``'regression'``).
    """
    opts = opts or RunOptions()
    if opts.save:  # refused before the solve, not after it
        opts = _checked_save(opts)
    timings = dict(timings or {})
    X_train, y_train, X_test = _check_arrays(X_train, y_train, X_test, y_test)
    from .labels import label_kind

    # the solve's target columns: one per class, one for a (1-D) regression target (each
    # distinct real value was planned as a class: 3,000 of them refused a solve that fits)
    classes = (task == "classification" if task != "auto"
               else label_kind(y_train) == "classes")
    n_classes = int(np.unique(y_train).shape[0]) if classes else 1
    n_test = 0 if X_test is None else int(X_test.shape[0])
    if plan is None:
        plan = make_plan(opts.solver, X_train.shape[0], solve_width(X_train), n_classes,
                         n_test, grid=grid_expected(opts.kernel.name, X_train))
    from .kernel_defaults import exactness, refinement_of

    kernel, bw_rule = choose_kernel(opts, X_train, dataset)
    opts = replace(opts, kernel=kernel)
    est = fit(opts, X_train, y_train, plan=plan, task=task)
    # (a Dask solve makes the Gram and its factor in one graph: "gram_and_factor", after
    # "connect"ing to the cluster)
    for k in ("probe", "connect", "gram", "factor", "gram_and_factor", "solve", "residual"):
        if k in est.timings_:
            timings[k] = est.timings_[k]
    test_error, predict_s = evaluate(est, X_test, y_test)
    if test_error is not None:
        timings["predict"] = predict_s
    rec = solve_record(est, opts, n_test=n_test, n_classes=n_classes, test_error=test_error,
                       plan=_plan_that_ran(plan, est), timings=timings)
    if bw_rule is not None:
        rec["bandwidth_rule"] = bw_rule
    residual = rec["relative_residual"]
    rec.update(exactness(residual, kernel_params=rec["kernel_params"],
                         bandwidth_rule=bw_rule, condition_number=est.condition_number_,
                         ridge=float(rec.get("ridge") or 0.0),
                         refinement=refinement_of(est.fit_info_),
                         precision=rec.get("precision"),
                         **getattr(est, "_exactness_inputs", {})))  # (the fit's own facts)
    if opts.save:  # the arrays as given are the model's inputs (no feature map)
        save_if_accepted(rec, opts, est, meta={"dataset": None, "features": "raw",
                                               "seed": opts.seed,
                                               "input_range": input_range(X_train)})
    if on_fitted is not None:
        on_fitted(est)
    return rec


def _checked_save(opts: RunOptions) -> RunOptions:
    """``opts`` with ``save`` expanded (``~``), refused unless it can be written."""
    from .modelfile import check_save_path

    opts = replace(opts, save=os.path.expanduser(opts.save))
    check_save_path(opts.save)
    return opts


def save_if_accepted(rec: dict, opts: RunOptions, est, *, feature_map=None,
                     meta: Optional[dict] = None) -> None:
    """Store the fitted ``est`` at ``opts.save`` when the solve of record ``rec`` is
    accepted: exact, or within ``opts.tolerance`` (``rec['saved_model']``); otherwise write
    nothing, leave a file already there as it was, and say why (``rec['model_not_saved']``)."""
    if exit_code_for(rec, opts.tolerance) != 0:
        res = rec.get("relative_residual")
        res = "none computed" if res is None else f"{res:.1e}"
        rec["model_not_saved"] = (f"the solve is not exact (relative residual {res})"
                                  if opts.tolerance is None else f"the relative residual "
                                  f"{res} is above the tolerance {opts.tolerance:g}")
        return
    from .modelfile import save_model

    save_model(opts.save, est, feature_map=feature_map, meta=meta)
    rec["saved_model"] = str(opts.save)


def _jsonable(v) -> bool:
    return isinstance(v, (str, int, float, bool, type(None), list, dict, tuple))


def run_solve(opts: RunOptions) -> dict:
    """Load, featurize, solve exactly, evaluate; one JSON-ready record. ``opts.save``: also
    store the fitted model, when the solve is accepted: exact, or within ``opts.tolerance``
    (the record's ``saved_model``); a solve that is not accepted writes no model and leaves
    a file already at that path as it was (the record's ``model_not_saved`` says why)."""
    t_total = time.perf_counter()
    # the record's peak is this solve's, also after larger ones in the same process
    per_solve = reset_peak_rss()
    opts, be = resolve_device(opts)
    if opts.save:
        opts = _checked_save(opts)
        from ._io import check_not_overwriting
        from .datasets import dataset_location

        # the model written over the data it is fitted on (npz:PATH saved at PATH)
        check_not_overwriting(opts.save, [(f"the file of the dataset {opts.data.dataset}",
                                           dataset_location(opts.data.dataset))], "save")
    timings = {}
    t0 = time.perf_counter()
    ds = load(opts)
    timings["load"] = time.perf_counter() - t0
    key = None
    if opts.features.name != "raw":
        key = feature_cache_key(ds.name, ds.X_train.shape[0], ds.X_test.shape[0], opts.seed,
                                opts.data.balanced)
    # the one plan of the solve, refused before any feature is computed
    width, pending = feature_plan(opts.features, ds.X_train, ds.X_test, ds.image_shape,
                                  seed=opts.seed, device=opts.solver.device,
                                  cached=opts.features.cache)
    plan = make_plan(opts.solver, ds.X_train.shape[0], width,
                     int(np.unique(np.asarray(ds.y_train)).shape[0]), ds.X_test.shape[0],
                     reserve=pending,
                     grid=grid_inputs(opts, ds.X_train, ds.image_shape))
    t0 = time.perf_counter()
    X_train, X_test, feature_info, fmap = featurize(
        opts.features, ds.X_train, ds.X_test, ds.image_shape, seed=opts.seed,
        device=opts.solver.device, cache_key=key)
    timings["features"] = time.perf_counter() - t0

    fitted = {}
    rec = solve_arrays(X_train, ds.y_train, X_test, ds.y_test, replace(opts, save=None),
                       timings, on_fitted=lambda est: fitted.setdefault("est", est),
                       plan=plan, dataset=opts.data.dataset)
    rec["timings"]["total"] = time.perf_counter() - t_total
    out = {
        "dataset": ds.name,
        "data_source": ds.source,
        "features": opts.features.name,
        "feature_params": dict(opts.features.params),
        "feature_info": {k: v for k, v in feature_info.items() if _jsonable(v)},
    }
    out.update(rec)
    out["balanced"] = bool(opts.data.balanced)
    be_peak = be.peak_memory()
    out["peak_memory_bytes"] = peak_rss_bytes()
    out["peak_memory"] = fmt_bytes(out["peak_memory_bytes"])
    out["peak_memory_scope"] = "this solve" if per_solve else "the process so far"
    if be_peak is not None:
        out["peak_gpu_memory_bytes"] = int(be_peak)
    out["versions"] = versions()
    if opts.save:
        from .datasets import dataset_location

        meta = {"dataset": ds.name, "features": opts.features.name,
                "feature_params": dict(opts.features.params), "seed": opts.seed,
                "image_shape": list(ds.image_shape), "class_names": list(ds.class_names),
                "input_range": input_range(ds.X_train)}
        if ds.class_labels is not None:  # typed labels (npz): predictions come back as them
            meta["class_labels"] = np.asarray(ds.class_labels).tolist()
            meta["class_label_dtype"] = np.asarray(ds.class_labels).dtype.str
        location = dataset_location(opts.data.dataset)
        if location is not None:  # found from any folder; the name stays for display
            meta["dataset_path"] = location
        if opts.data.data_dir:  # predict reads the model's dataset from the same folder
            meta["data_dir"] = os.path.abspath(os.path.expanduser(opts.data.data_dir))
        save_if_accepted(out, opts, fitted["est"], feature_map=fmap, meta=meta)
    return out
