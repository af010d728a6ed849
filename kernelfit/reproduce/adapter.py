"""The one seam between ``kernelfit reproduce`` and the run layer.

Everything reproduce asks of the pipeline goes through :func:`solve` (one solve described by
a plain dict, answered by the pipeline's JSON-ready record) and :func:`config` (the same
dict as the run layer's options object, for the randomization runner). When the run layer
moves (``kernelfit/run.py``, ``options.py``), only this module changes.
"""

from __future__ import annotations

from typing import Optional

__all__ = ["SPEC_KEYS", "config", "solve", "plan"]

#: keys a solve spec may hold (anything else is an error, so typos do not pass silently)
SPEC_KEYS = ("dataset", "data_dir", "n_train", "n_test", "balanced", "seed", "features",
             "feature_params", "kernel", "bandwidth", "degree", "ridge", "precision", "dtype",
             "tol", "show_progress", "cache_dir")


def config(spec: dict):
    """The run layer's options for ``spec`` (today :class:`kernelfit.pipeline.SolveConfig`)."""
    from ..errors import InputError
    from ..pipeline import SolveConfig

    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise InputError(f"unknown solve spec keys {unknown}")
    kw = {k: v for k, v in spec.items() if v is not None or k == "bandwidth"}
    return SolveConfig(**kw)


def solve(spec: dict) -> dict:
    """Load, featurize, solve exactly and evaluate ``spec``; the run layer's record."""
    from ..pipeline import run_solve

    return run_solve(config(spec))


def plan(spec: dict, n: int, d: int, n_classes: int, n_test: int) -> dict:
    """The run layer's memory pre-flight for ``spec`` at these sizes (raises
    :class:`~kernelfit.errors.MemoryPlanError` when it cannot fit), before any work."""
    from ..pipeline import preflight

    return preflight(config(spec), int(n), int(d), int(n_classes), int(n_test))


def available_memory(device: Optional[str] = "cpu") -> int:
    """Bytes the backend says are free now."""
    from ..backend import get_backend

    return int(get_backend(device or "cpu").free_memory())
