"""The one seam between ``kernelfit reproduce`` and the run layer.

Everything reproduce asks of the run layer (:mod:`kernelfit.run`) goes through
:func:`solve` (one solve described by a plain dict of flat option names, answered by the
run layer's JSON-ready record), :func:`config` (the same dict as a
:class:`~kernelfit.options.RunOptions` tree, for the randomization runner) and :func:`plan`
(the memory pre-flight). When the run layer changes, only this module changes.
"""

from __future__ import annotations

from typing import Optional

__all__ = ["SPEC_KEYS", "config", "solve", "plan"]

#: keys a solve spec may hold (anything else is an error, so typos do not pass silently)
SPEC_KEYS = ("dataset", "data_dir", "n_train", "n_test", "balanced", "seed", "features",
             "feature_params", "kernel", "bandwidth", "degree", "ridge", "precision", "dtype",
             "tol", "show_progress", "cache_dir")


def config(spec: dict):
    """The run layer's options for ``spec`` (a :class:`kernelfit.options.RunOptions`)."""
    from ..errors import InputError
    from ..options import RunOptions

    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise InputError(f"unknown solve spec keys {unknown}")
    kw = {k: v for k, v in spec.items() if v is not None or k == "bandwidth"}
    return RunOptions.from_flat(**kw)


def solve(spec: dict) -> dict:
    """Load, featurize, solve exactly and evaluate ``spec``; the run layer's record."""
    from ..run import run_solve

    return run_solve(config(spec))


def plan(spec: dict, n: int, d: int, n_classes: int, n_test: int) -> dict:
    """The run layer's memory pre-flight for ``spec`` at these sizes (raises
    :class:`~kernelfit.errors.MemoryPlanError` when it cannot fit), before any work."""
    from ..run import preflight

    return preflight(config(spec).solver, int(n), int(d), int(n_classes), int(n_test))


def available_memory(device: Optional[str] = "cpu") -> int:
    """Bytes the backend says are free now."""
    from ..backend import get_backend

    return int(get_backend(device or "cpu").free_memory())
