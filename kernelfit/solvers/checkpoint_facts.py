"""What an out-of-core checkpoint (:mod:`kernelfit.solvers.ooc`) fixes for the run that
resumes it: its number of training points, its tile size and its tiles' dtype, read from
its manifest's fingerprint. The memory plan of a resumed run (:mod:`kernelfit.solvers.plan`)
is made with them, and so is any way out of a refused plan that keeps the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from .checkpoint_lock import MANIFEST

__all__ = ["fingerprint_field", "checkpoint_tile_size", "checkpoint_facts", "resumed_facts"]


def fingerprint_field(directory, key: str):
    """A field of the fingerprint of the checkpoint in ``directory`` (None: no checkpoint
    there, or unreadable: :func:`kernelfit.solvers.ooc.ooc_factor` says what is wrong
    with it)."""
    try:
        doc = json.loads((Path(directory).expanduser() / MANIFEST).read_text())
        return doc["fingerprint"][key]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def checkpoint_tile_size(directory) -> Optional[int]:
    """The tile size of the checkpoint in ``directory`` (None: none there, or unreadable):
    the one a resumed run must plan with."""
    try:
        return int(fingerprint_field(directory, "tile_size"))
    except (ValueError, TypeError):
        return None


def checkpoint_facts(directory) -> Optional[dict]:
    """What the checkpoint in ``directory`` fixes for a run that resumes it: ``folder``,
    ``n``, ``tile_size``, ``dtype`` ('float32' or 'float64', its tiles') and ``precision``
    (float64, mixed: float32 tiles of a deflated K, or float32: K's own); None where
    there is none, or its fingerprint is unreadable (the solve then says what is wrong)."""
    ts, dtype = checkpoint_tile_size(directory), fingerprint_field(directory, "dtype")
    try:
        n = int(fingerprint_field(directory, "n"))
    except (ValueError, TypeError):
        return None
    if ts is None or ts < 1 or n < 1 or dtype not in ("float32", "float64"):
        return None
    rank = fingerprint_field(directory, "deflation_rank") or 0  # (mixed deflates, float32 not)
    precision = "float64" if dtype == "float64" else "mixed" if rank else "float32"
    return {"folder": str(directory), "n": n, "tile_size": ts, "dtype": dtype,
            "precision": precision}


def resumed_facts(opts) -> Optional[dict]:
    """:func:`checkpoint_facts` of the folder ``opts`` (a validated
    :class:`~kernelfit.solvers.options.SolveOptions`) resume; None where they resume none."""
    if not (getattr(opts, "ooc_dir", None) and getattr(opts, "resume", False)):
        return None
    return checkpoint_facts(opts.ooc_dir)
