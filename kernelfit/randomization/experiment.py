"""The randomization experiment: for every mode, level and repeat, corrupt
(:mod:`.corruptions`) and run the exact solve through the run layer (:mod:`kernelfit.run`);
summaries and files are :mod:`.report`'s."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .. import run
from ..errors import InputError, NotPositiveDefiniteError
from ..kernel_defaults import EXACT_RESIDUAL, exactness, refinement_of
from ..options import RunOptions
from .corruptions import (DEFAULT_LEVELS, LEVEL_MEANING, PIXEL_MODES, check_repeats, corrupt,
                          derive_seed, parse_levels, parse_modes)
from .report import METRICS, summarize

__all__ = ["run_randomization"]


def _check_modes_for_data(modes: Sequence[str], image_shape) -> None:
    shape = tuple(image_shape or ())
    bad = [m for m in modes if m in PIXEL_MODES]
    if bad and len(shape) not in (2, 3):
        raise InputError(f"mode(s) {', '.join(bad)} permute pixels and need image data; this "
                         f"dataset has no image shape (image_shape={shape}). Use the modes "
                         "'labels' or 'gaussian'", param="modes")


def _solve_one(opts: RunOptions, X_train, y_train, X_test, y_test, estimate_condition: bool,
               seed: int, facts: Optional[dict] = None, *, plan=None) -> dict:
    # the same estimator as `kernelfit solve` (every solver option), with the bandwidth
    # fixed on the clean data and the condition estimate switched as asked; ``plan``: the
    # run's one plan (run.make_plan), which this solve runs
    est = run.fit(replace(opts, seed=seed, solver=replace(opts.solver, show_progress=False)),
                  X_train, y_train, plan=plan, estimate_condition=estimate_condition)
    t = dict(est.timings_)
    test_error, t["predict"] = run.evaluate(est, X_test, y_test)
    solve_seconds = sum(t.get(k, 0.0) for k in ("gram", "factor", "solve"))
    info = est.fit_info_
    out = {"train_error": est.train_error_, "test_error": test_error,
           "rkhs_norm": est.rkhs_norm_, "relative_residual": est.relative_residual_,
           "solve_seconds": float(solve_seconds),
           "condition_number": est.condition_number_,
           "factor_gflops_per_s": info.get("factor_gflops_per_s"),
           "precision": info.get("precision", opts.solver.dtype or "float64"),
           "dtype": run.computed_dtype(est, opts.solver.dtype),
           "timings": {k: float(v) for k, v in t.items()}}
    for key in ("tol", "converged"):  # a refined solve's target: part of the verdict
        if key in info:
            out["solve_tol" if key == "tol" else key] = info[key]
    # the same verdict as a `kernelfit solve` record (kernel_defaults.exactness); facts:
    # the bandwidth's rule, and the shared cond(K) of a labels record that did not estimate it
    facts = facts or {}
    cond = est.condition_number_
    out.update(exactness(est.relative_residual_, kernel_params=est.kernel_.params(),
                         bandwidth_rule=facts.get("bandwidth_rule"),
                         condition_number=facts.get("condition_number") if cond is None
                         else cond,
                         ridge=float(opts.solver.ridge), refinement=refinement_of(info),
                         precision=out.get("precision"),
                         **getattr(est, "_exactness_inputs", {})))  # (the fit's own facts)
    return out


def _featurize(opts: RunOptions, X_train, X_test, image_shape):
    Ftr, Fte, info, _ = run.featurize(opts.features, X_train, X_test, image_shape,
                                      seed=opts.seed, device=opts.solver.device)
    info = {k: v for k, v in info.items() if isinstance(v, (str, int, float, bool, type(None)))}
    return Ftr, Fte, info


def run_randomization(cfg: Optional[RunOptions] = None, modes="labels", levels=DEFAULT_LEVELS,
                      repeats: int = 1, *, dataset=None, estimate_condition: bool = True,
                      corrupt_test: bool = True, on_error: str = "record",
                      reuse_clean: bool = True, show_progress: Optional[bool] = None,
                      callback: Optional[Callable[[dict], None]] = None) -> dict:
    """Run the randomization test: for every mode, level and repeat, corrupt, featurize,
    solve exactly and evaluate.

    Parameters
    ----------
    cfg : :class:`kernelfit.options.RunOptions`
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
        Use these arrays instead of loading ``cfg.data``.
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
    ``n_failed``, ``all_train_errors_zero``, ``n_inexact`` (successful solves whose
    float64 relative residual is above ``exact_threshold``, 1e-8), ``all_exact``,
    ``seconds`` and ``versions``. Every record carries ``exact`` and, when it is false,
    ``inexact_reason`` and ``cause`` (:func:`kernelfit.kernel_defaults.exactness`, as in a
    ``kernelfit solve`` record).
    All validation (modes, levels, repeats, pixel modes on non-image data, feature
    parameters) happens before the first solve, and the memory pre-flight before any
    feature is computed: one plan (:func:`kernelfit.run.make_plan`), run by every solve
    (a request that cannot fit raises :class:`~kernelfit.errors.MemoryPlanError`).
    """
    from ..progress import progress

    opts = cfg if cfg is not None else RunOptions()
    modes = parse_modes(modes)
    levels = parse_levels(levels)
    repeats = check_repeats(repeats)
    if estimate_condition not in (True, False, "endpoints"):
        raise InputError(f"estimate_condition must be True, False or 'endpoints', got "
                         f"{estimate_condition!r}")
    if on_error not in ("record", "raise"):
        raise InputError(f"on_error must be 'record' or 'raise', got {on_error!r}")
    t_start = time.perf_counter()
    opts, _ = run.resolve_device(opts)
    ds = run.load(opts) if dataset is None else dataset
    _check_modes_for_data(modes, ds.image_shape)
    X_train = np.asarray(ds.X_train, dtype=np.float64)
    X_test = np.asarray(ds.X_test, dtype=np.float64)
    y_train = np.asarray(ds.y_train)
    y_test = np.asarray(ds.y_test)
    n_classes = int(ds.n_classes)
    if X_train.shape[0] < 2:
        raise InputError(f"need at least 2 training points, got {X_train.shape[0]}")

    # the one plan of every solve, made and checked before any feature is computed: the
    # corruptions keep n, the features' width and the classes, so every point of the run
    # solves the same shape (the memory of a solve does not depend on which columns are
    # non-zero); each fit runs this plan and makes none of its own
    width, pending = run.feature_plan(opts.features, X_train, X_test, ds.image_shape,
                                      seed=opts.seed, device=opts.solver.device)
    # pixels stay on their grid under every corruption but Gaussian inputs (a feature map
    # that rounds its outputs to a grid does so whatever its inputs)
    grid = (("gaussian" not in modes or opts.features.name != "raw")
            and run.grid_inputs(opts, X_train, ds.image_shape))
    plan = run.make_plan(opts.solver, X_train.shape[0], width, n_classes, X_test.shape[0],
                         reserve=pending, grid=grid)
    # clean features: reused by every labels record and to fix the kernel
    F_train, F_test, feature_info = _featurize(opts, X_train, X_test, ds.image_shape)
    # the bandwidth and its record as `kernelfit solve` chooses them (kernel_defaults),
    # fixed once on the clean features
    kernel_opts, rule = run.choose_kernel(opts, F_train, dataset=ds.name)
    if opts.kernel.bandwidth is None:  # the config records the default's value
        opts = replace(opts, kernel=replace(opts.kernel, bandwidth=kernel_opts.bandwidth))
    solve_opts = replace(opts, kernel=kernel_opts)
    # the facts behind the bandwidth, for the exactness verdict of every record
    bandwidth_facts = None if rule is None else dict(rule)
    if opts.kernel.median and bandwidth_facts is not None:
        bandwidth_facts["median_distance"] = kernel_opts.bandwidth
    kernel = kernel_opts.resolve(F_train)
    pixel_mean = float(np.mean(X_train))
    pixel_std = float(np.std(X_train))

    jobs = [(m, lv, r) for m in modes for lv in levels for r in range(repeats)]
    records: List[dict] = []
    clean: Optional[dict] = None
    # labels leave K unchanged: its condition number is estimated once and shared
    clean_cond: Dict[str, Optional[float]] = {}
    no_cond = 0
    bar = progress(total=len(jobs), desc="randomize", enabled=show_progress, unit="solve")
    try:
        for mode, level, rep in jobs:
            seed = derive_seed(opts.seed, mode, level, rep)
            bar.set_postfix_str(f"{mode} {level:g} #{rep}")
            base = {"mode": mode, "level": float(level), "repeat": int(rep), "seed": seed,
                    "base_seed": int(opts.seed)}
            if level == 0.0 and reuse_clean and clean is not None:
                rec = dict(clean)
                rec.update(base)
                rec["clean_reused"] = True
            else:
                wants_cond = bool(estimate_condition) and (
                    estimate_condition is True or mode == "labels" or level in (0.0, 1.0))
                shared_cond = (wants_cond and (mode == "labels" or level == 0.0)
                               and "value" in clean_cond)
                rec = _one_record(solve_opts, base, mode, level, seed, X_train, y_train,
                                  X_test, y_test, F_train, F_test, ds.image_shape, n_classes,
                                  wants_cond and not shared_cond, corrupt_test, pixel_mean,
                                  pixel_std, on_error,
                                  {"bandwidth_rule": bandwidth_facts,
                                   "condition_number": clean_cond.get("value")
                                   if shared_cond else None}, plan=plan)
                if (rec["status"] == "ok" and wants_cond and not shared_cond
                        and rec["condition_number"] is None):
                    no_cond += 1  # a solve that keeps no Cholesky factor of K itself
                elif rec["status"] == "ok" and wants_cond:
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
    n_inexact = sum(not r["exact"] for r in ok)
    # the dtype the solves computed in (the minimum-norm solvers: float64 whatever was asked)
    dtypes = {r["dtype"] for r in ok}
    dtype = dtypes.pop() if len(dtypes) == 1 else (opts.solver.dtype or "float64")
    precisions = sorted({r["precision"] for r in ok if r.get("precision")})
    return {
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
        "base_seed": int(opts.seed),
        "corrupt_test": bool(corrupt_test),
        "estimate_condition": estimate_condition,
        "level_meaning": {m: _level_meaning(m, corrupt_test) for m in modes},
        "features": opts.features.name,
        "feature_params": dict(opts.features.params),
        "feature_info": feature_info,
        "kernel": kernel.name,
        "kernel_params": kernel.params(),
        "bandwidth_rule": _rule_text(rule),
        "pixel_mean": pixel_mean,
        "pixel_std": pixel_std,
        "dtype": dtype,
        "precisions": precisions,
        "condition_note": None if not no_cond else (
            f"cond(K) was not estimated for {no_cond} solve(s): the estimate reads a Cholesky "
            "factor of K itself kept in memory, which mixed-precision, out-of-core and Dask "
            "solves do not have (their factor is of a float32, deflated or shifted K); "
            "precision float64 in memory estimates it"),
        "solver": opts.solver.solver,
        "ridge": float(opts.solver.ridge),
        "device": opts.solver.device,
        "memory_plan": plan.record(),
        "records": records,
        "summary": summarize(records),
        "n_failed": int(n_failed),
        "all_train_errors_zero": bool(ok) and all(r["train_error"] == 0 for r in ok),
        "n_inexact": int(n_inexact),
        "all_exact": bool(ok) and not n_inexact,
        "exact_threshold": EXACT_RESIDUAL,
        "seconds": time.perf_counter() - t_start,
        "config": _config_dict(opts),
        "versions": run.versions(),
    }


def _rule_text(rule: Optional[dict]) -> Optional[str]:
    """The report's one line on the bandwidth, from the record of the choice: ``'given'``
    (the report then leaves it out), else why; None for kernels without a bandwidth."""
    if rule is None:
        return None
    return "given" if rule["rule"] == "given" else rule["why"]


def _level_meaning(mode: str, corrupt_test: bool) -> str:
    text = LEVEL_MEANING[mode]
    if not corrupt_test and mode != "labels":
        text = text.replace("(train and test)", "(training set only; test set clean)")
    return text


def _config_dict(opts: RunOptions) -> dict:
    d = opts.to_flat()
    d.pop("save", None)
    return json.loads(json.dumps(d, default=str))


def _solve_folder(opts: RunOptions, mode: str, level: float, repeat: int) -> Optional[Path]:
    """An out-of-core run's folder for one solve, inside the folder asked for: each solve
    has its own K (pixel modes) or targets, so its own checkpoint, which ``resume``
    continues after an interruption; removed once the solve is done."""
    if not opts.solver.ooc_dir:
        return None
    top = Path(opts.solver.ooc_dir).expanduser()
    top.mkdir(exist_ok=True)  # its parent exists (checked with the options)
    return top / f"{mode}-{level:g}-r{repeat}"


def _done_with(folder: Optional[Path]) -> None:
    """Remove a finished solve's out-of-core folder (its tiles make room for the next
    solve's), and the folder around it once that is empty."""
    if folder is None:
        return
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()  # only when empty: the caller's other files stay
    except OSError:
        pass


def _one_record(opts, base, mode, level, seed, X_train, y_train, X_test, y_test, F_train,
                F_test, image_shape, n_classes, estimate_condition, corrupt_test,
                pixel_mean, pixel_std, on_error, facts=None, *, plan=None) -> dict:
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
        Ftr, Fte, _ = _featurize(opts, Xtr, Xte, image_shape)
    t_feat = time.perf_counter() - t0
    rec.update(n_train=int(Ftr.shape[0]), n_test=int(Fte.shape[0]),
               n_features=int(Ftr.shape[1]), clean_reused=False, condition_shared=False)
    ooc = _solve_folder(opts, mode, level, base["repeat"])
    if ooc is not None:
        opts = replace(opts, solver=replace(opts.solver, ooc_dir=str(ooc)))
    try:
        out = _solve_one(opts, Ftr, ytr, Fte, y_test, estimate_condition, seed, facts,
                         plan=plan)
    except NotPositiveDefiniteError as exc:
        _done_with(ooc)
        if on_error == "raise":
            where = f"{mode} level {level:g} repeat {base['repeat']} (seed {seed})"
            facts = dict(exc.facts)
            facts["problem"] = f"{where}: {facts.get('problem') or exc.message}"
            raise NotPositiveDefiniteError(f"{where}: {exc.message}", **facts) from None
        out = {k: None for k in METRICS}
        out.update(status="failed", error=f"{type(exc).__name__}: {exc}", timings={},
                   exact=False, exact_threshold=EXACT_RESIDUAL,
                   inexact_reason="the solve failed (see error)", cause="failed")
    else:
        _done_with(ooc)
        out.update(status="ok", error=None)
    out["timings"] = dict(out.get("timings") or {}, corrupt=t_corrupt, features=t_feat)
    rec.update(out)
    return rec
