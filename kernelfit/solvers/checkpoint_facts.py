"""What an out-of-core checkpoint (:mod:`kernelfit.solvers.ooc`) fixes for the run that
resumes it: its number of training points, its tile size and its tiles' dtype, read from
its manifest's fingerprint. The memory plan of a resumed run (:mod:`kernelfit.solvers.plan`)
is made with them, and so is any way out of a refused plan that keeps the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from .checkpoint_lock import MANIFEST

__all__ = ["fingerprint_field", "checkpoint_facts", "fingerprint_facts", "resumed_facts"]


def _fingerprint(directory) -> Optional[dict]:
    """The fingerprint of the checkpoint in ``directory``, read once (None: no checkpoint
    there, or unreadable: :func:`kernelfit.solvers.ooc.ooc_factor` says what is wrong)."""
    try:
        fp = json.loads((Path(directory).expanduser() / MANIFEST).read_text())["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return fp if isinstance(fp, dict) else None


def fingerprint_field(directory, key: str):
    """A field of the fingerprint of the checkpoint in ``directory`` (None: no checkpoint
    there, no such field, or unreadable)."""
    return (_fingerprint(directory) or {}).get(key)


def fingerprint_facts(fp: dict, directory) -> Optional[dict]:
    """What a checkpoint whose fingerprint is ``fp`` fixes for a run that resumes it:
    ``folder`` (``directory``), ``n``, ``tile_size``, ``dtype`` ('float32' or 'float64',
    its tiles') and ``precision`` (float64, mixed: float32 tiles of a deflated K, or
    float32: K's own); None where those fields are not what kernelfit writes."""
    try:
        n, ts, rank = int(fp["n"]), int(fp["tile_size"]), int(fp.get("deflation_rank") or 0)
    except (KeyError, ValueError, TypeError):
        return None
    dtype = fp.get("dtype")
    if ts < 1 or n < 1 or rank < 0 or dtype not in ("float32", "float64"):
        return None
    precision = "float64" if dtype == "float64" else "mixed" if rank else "float32"
    return {"folder": str(directory), "n": n, "tile_size": ts, "dtype": dtype,
            "precision": precision}


def checkpoint_facts(directory) -> Optional[dict]:
    """:func:`fingerprint_facts` of the checkpoint in ``directory``; None where there is
    none, or its fingerprint is unreadable (the solve then says what is wrong)."""
    fp = _fingerprint(directory)
    return None if fp is None else fingerprint_facts(fp, directory)


def resumed_facts(opts) -> Optional[dict]:
    """:func:`checkpoint_facts` of the folder ``opts`` (a validated
    :class:`~kernelfit.solvers.options.SolveOptions`) resume; None where they resume none."""
    if not (getattr(opts, "ooc_dir", None) and getattr(opts, "resume", False)):
        return None
    return checkpoint_facts(opts.ooc_dir)
