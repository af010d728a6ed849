"""``kernelfit reproduce``: the paper's kernel experiments as named, resumable runs.

See :mod:`.experiments` for the list, :mod:`.runner` for the storage and resume rules,
:mod:`.report` for the report and :mod:`.adapter` for the one seam to the run layer.
Nothing is imported or computed at import time.
"""

from __future__ import annotations

__all__ = ["run_reproduce", "list_experiments"]


def run_reproduce(*args, **kwargs):
    from .runner import run_reproduce as _run

    return _run(*args, **kwargs)


def list_experiments() -> list:
    """``[(name, datasets, summary, full-scale time estimate)]`` in the canonical order."""
    from .experiments import EXPERIMENTS

    return [(e.name, e.needs, e.summary, e.estimate) for e in EXPERIMENTS.values()]
