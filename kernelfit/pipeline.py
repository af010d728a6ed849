"""The end-to-end flow: dataset -> features -> exact solve -> errors, norms, timings.

:func:`run_solve` is what ``kernelfit solve`` runs, and what the randomization tests and
the benchmarks reuse. It returns one flat, JSON-ready record.
"""

from __future__ import annotations

import os
import platform
import pickle
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from . import __version__
from .errors import InputError
from .kernels import check_array
from .memory import fmt_bytes, peak_rss_bytes, plan_exact_solve

__all__ = ["SolveConfig", "run_solve", "solve_arrays", "save_model", "load_model",
           "MODEL_FORMAT"]

MODEL_FORMAT = "kernelfit-model"
MODEL_VERSION = 1


@dataclass
class SolveConfig:
    """Everything ``kernelfit solve`` needs; defaults reproduce the documented figures."""

    dataset: str = "digits"
    data_dir: Optional[str] = None
    n_train: Optional[int] = None
    n_test: Optional[int] = None
    balanced: bool = False
    seed: int = 0
    features: str = "raw"
    feature_params: dict = field(default_factory=dict)
    feature_cache: bool = True
    cache_dir: Optional[str] = None
    kernel: str = "gaussian"
    bandwidth: object = 5.0
    degree: int = 4
    gamma: float = 1.0
    coef0: float = 1.0
    dtype: str = "float64"
    solver: str = "cholesky"
    ridge: float = 0.0
    device: str = "cpu"
    tile_size: Optional[int] = None
    show_progress: Optional[bool] = None
    save: Optional[str] = None
    precision: str = "auto"
    tol: float = 1e-10
    max_iter: Optional[int] = None
    refinement: str = "cg"
    ooc_dir: Optional[str] = None
    resume: bool = False
    scheduler: Optional[str] = None
    distributed: Optional[str] = None


def _versions() -> dict:
    import scipy
    import sklearn

    from .backend import blas_info

    return {"kernelfit": __version__, "python": platform.python_version(),
            "numpy": np.__version__, "scipy": scipy.__version__, "sklearn": sklearn.__version__,
            "blas": blas_info()}


def _estimator(cfg: SolveConfig):
    from .estimator import KernelInterpolator

    return KernelInterpolator(kernel=cfg.kernel, bandwidth=cfg.bandwidth, degree=cfg.degree,
                              gamma=cfg.gamma, coef0=cfg.coef0, ridge=cfg.ridge,
                              solver=cfg.solver, dtype=cfg.dtype, device=cfg.device,
                              tile_size=cfg.tile_size, random_state=cfg.seed,
                              show_progress=cfg.show_progress, precision=cfg.precision,
                              tol=cfg.tol, max_iter=cfg.max_iter, refinement=cfg.refinement,
                              ooc_dir=cfg.ooc_dir, resume=cfg.resume, scheduler=cfg.scheduler,
                              distributed=cfg.distributed)


def preflight(cfg: SolveConfig, n: int, d: int, n_classes: int, n_test: int) -> dict:
    """Check the memory plan of the solve before building anything large."""
    from .backend import get_backend
    from .solvers.tiled import default_tile_size

    be = get_backend(cfg.device)
    ts = cfg.tile_size or default_tile_size(n, be.device)
    from .solvers.mixed import preflight_beyond_memory

    beyond = preflight_beyond_memory(cfg, n, d, n_classes, n_test, be, ts)
    if beyond is not None:  # mixed precision, out-of-core or Dask: their own plan
        return beyond
    plan = plan_exact_solve(n, d, n_classes, n_test=n_test, dtype=np.dtype(cfg.dtype),
                            tile_size=ts, solver=cfg.solver, device=be.device,
                            available=be.free_memory())
    plan.items.pop("data", None)
    plan.check(request={"n": n, "d": d, "n_outputs": n_classes, "n_test": n_test,
                        "dtype": cfg.dtype, "precision": cfg.precision, "solver": cfg.solver,
                        "tile_size": cfg.tile_size})
    return plan.as_dict()


def solve_arrays(X_train, y_train, X_test=None, y_test=None, cfg: Optional[SolveConfig] = None,
                 timings: Optional[dict] = None, on_fitted: Optional[Callable] = None) -> dict:
    """Exact solve on given arrays; returns the record (errors, residual, norm, timings)."""
    cfg = cfg or SolveConfig()
    timings = dict(timings or {})
    X_train = check_array(np.asarray(X_train), "X_train")
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
            raise InputError("y_test must have one label per row of X_test")
    n_classes = int(np.unique(y_train).shape[0])
    plan = preflight(cfg, X_train.shape[0], X_train.shape[1], n_classes,
                     0 if X_test is None else X_test.shape[0])
    est = _estimator(cfg)
    est.fit(X_train, y_train)
    for k in ("gram", "factor", "solve", "residual"):
        if k in est.timings_:
            timings[k] = est.timings_[k]
    test_error = None
    if X_test is not None and X_test.shape[0]:
        t0 = time.perf_counter()
        pred = est.predict(X_test)
        timings["predict"] = time.perf_counter() - t0
        test_error = float(np.mean(pred != np.asarray(y_test)))
    rec = {
        "n_train": int(X_train.shape[0]),
        "n_test": 0 if X_test is None else int(X_test.shape[0]),
        "n_features": int(X_train.shape[1]),
        "n_classes": n_classes,
        "kernel": est.kernel_.name,
        "kernel_params": est.kernel_.params(),
        "dtype": cfg.dtype,
        "device": est.device_,
        "solver": est.solver_,
        "ridge": float(cfg.ridge),
        "seed": int(cfg.seed),
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
    for key in ("precision", "precision_reason", "refinement", "tol", "iterations", "matvecs",
                "refinement_history", "converged", "shift", "preconditioner_only", "note",
                "checkpoint", "out_of_core", "distributed"):
        if key in est.fit_info_:
            rec["solve_" + key if key in ("tol", "iterations", "note") else key] = \
                est.fit_info_[key]
    rec["timings"] = timings
    if on_fitted is not None:
        on_fitted(est)
    return rec


def run_solve(cfg: SolveConfig) -> dict:
    """Load, featurize, solve exactly, evaluate; one JSON-ready record."""
    from .backend import get_backend
    from .datasets import load_dataset

    t_total = time.perf_counter()
    be = get_backend(cfg.device)  # resolve 'auto' (and fail early on 'gpu' without one)
    cfg.device = be.device
    if cfg.save:
        _check_save_path(cfg.save)
    timings = {}
    t0 = time.perf_counter()
    ds = load_dataset(cfg.dataset, data_dir=cfg.data_dir, n_train=cfg.n_train,
                      n_test=cfg.n_test, balanced=cfg.balanced, seed=cfg.seed)
    timings["load"] = time.perf_counter() - t0
    X_train, X_test = ds.X_train, ds.X_test
    feature_info = {}
    fmap = None
    t0 = time.perf_counter()
    if cfg.features != "raw":
        from .features import apply_features

        cache_dir = None
        key = None
        if cfg.feature_cache:
            cache_dir = str(feature_cache_dir(cfg.cache_dir))
            key = (f"{ds.name}-n{X_train.shape[0]}-t{X_test.shape[0]}-seed{cfg.seed}"
                   f"-bal{int(cfg.balanced)}")
        X_train, X_test, feature_info = apply_features(
            cfg.features, dict(cfg.feature_params), X_train, X_test,
            image_shape=ds.image_shape, seed=cfg.seed, device=cfg.device,
            cache_dir=cache_dir, cache_key=key)
        fmap = feature_info.pop("transformer", None)
    timings["features"] = time.perf_counter() - t0
    X_train = np.asarray(X_train, dtype=np.float64)
    X_test = np.asarray(X_test, dtype=np.float64)

    fitted = {}
    rec = solve_arrays(X_train, ds.y_train, X_test, ds.y_test, cfg, timings,
                       on_fitted=lambda est: fitted.setdefault("est", est))
    rec["timings"]["total"] = time.perf_counter() - t_total
    out = {
        "dataset": ds.name,
        "data_source": ds.source,
        "features": cfg.features,
        "feature_params": dict(cfg.feature_params),
        "feature_info": {k: v for k, v in feature_info.items() if _jsonable(v)},
    }
    out.update(rec)
    out["balanced"] = bool(cfg.balanced)
    be_peak = be.peak_memory()
    out["peak_memory_bytes"] = peak_rss_bytes()
    out["peak_memory"] = fmt_bytes(out["peak_memory_bytes"])
    if be_peak is not None:
        out["peak_gpu_memory_bytes"] = int(be_peak)
    out["versions"] = _versions()
    if cfg.save:
        save_model(cfg.save, fitted["est"], feature_map=fmap, meta={
            "dataset": ds.name, "features": cfg.features,
            "feature_params": dict(cfg.feature_params), "seed": cfg.seed,
            "image_shape": list(ds.image_shape), "class_names": list(ds.class_names)})
        out["saved_model"] = str(cfg.save)
    return out


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


def _jsonable(v) -> bool:
    return isinstance(v, (str, int, float, bool, type(None), list, dict, tuple))


# ---------------------------------------------------------------- model files
def _check_save_path(path) -> None:
    from ._io import check_writable_file

    check_writable_file(path, param="save")


def save_model(path, estimator, *, feature_map=None, meta: Optional[dict] = None) -> None:
    """Store a fitted model (estimator + fitted feature map) atomically.

    The file is a pickle: load only model files you made or trust.
    """
    _check_save_path(path)
    est = estimator
    from .backend import get_backend

    be = get_backend(est.device_)
    if be.device != "cpu":  # store host arrays so the file loads anywhere
        est.X_fit_ = be.to_numpy(est.X_fit_)
        est.alpha_ = be.to_numpy(est.alpha_)
        est.device_ = "cpu"
    payload = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "kernelfit": __version__,
               "estimator": est, "feature_map": feature_map, "meta": meta or {}}
    from ._io import atomic_writer

    with atomic_writer(path, "wb") as fh:
        pickle.dump(payload, fh, protocol=pickle.HIGHEST_PROTOCOL)


def load_model(path) -> dict:
    """Load a model file written by :func:`save_model`; raises InputError if it is not one."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"model file {path} does not exist")
    try:
        with open(p, "rb") as fh:
            payload = pickle.load(fh)
    except Exception as exc:  # unpickling garbage raises many exception types
        raise InputError(f"{path} is not a readable kernelfit model file ({exc.__class__.__name__})"
                         ) from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise InputError(f"{path} is not a kernelfit model file")
    if payload.get("version") != MODEL_VERSION:
        raise InputError(f"{path} has model format version {payload.get('version')}, this "
                         f"kernelfit reads version {MODEL_VERSION}")
    return payload


def config_dict(cfg: SolveConfig) -> dict:
    return asdict(cfg)
