"""Shared pieces of the checks: the result record, matplotlib (Agg) and cached MNIST."""

from __future__ import annotations

import functools
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

__all__ = ["CheckResult", "pyplot", "save_figure", "scatter_figure", "mnist_or_none",
           "mnist_missing_note", "note_stand_in", "Timer", "random_grid_points"]


@dataclass
class CheckResult:
    """Outcome of one claim's check.

    ``status`` is ``'passed'``, ``'failed'``, ``'skipped'`` (a prerequisite such as MNIST is
    missing) or ``'waiting'`` (code of another part of kernelfit is not there yet); ``passed``
    is ``True``/``False`` for the first two and ``None`` otherwise. ``figures`` holds the
    measured numbers, ``criteria`` each pass condition by name, ``plots`` written PNG paths.
    """

    name: str
    title: str
    statement: str
    status: str = "failed"
    figures: dict = field(default_factory=dict)
    criteria: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    plots: list = field(default_factory=list)
    seconds: float = 0.0
    data: dict = field(default_factory=dict, repr=False)  # arrays for the plot, not reported
    #: the synthetic data checked instead of MNIST, which was not found (None: MNIST or
    #: the caller's own data); said in the notes, the report and the summary line
    stand_in: Optional[str] = None

    @property
    def passed(self) -> Optional[bool]:
        return {"passed": True, "failed": False}.get(self.status)

    def decide(self):
        """Set ``status`` from ``criteria`` (all must hold)."""
        self.status = "passed" if self.criteria and all(self.criteria.values()) else "failed"
        return self

    def to_dict(self) -> dict:
        return {"name": self.name, "title": self.title, "statement": self.statement,
                "status": self.status, "passed": self.passed, "figures": _plain(self.figures),
                "criteria": {k: bool(v) for k, v in self.criteria.items()},
                "notes": list(self.notes), "plots": [str(p) for p in self.plots],
                "seconds": round(self.seconds, 3), "stand_in": self.stand_in}


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return str(obj)
    return obj


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend."""
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, out_dir, name: str) -> list:
    """Lay out ``fig``, write it to ``out_dir/name`` (folder created), close it; ``[path]``.
    An error of the file system names that path (Matplotlib's full-disk error names none)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    path = out_dir / name
    try:
        fig.savefig(path, dpi=100)
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise
    finally:
        pyplot().close(fig)
    return [path]


def scatter_figure(x, y, *, xlabel: str, ylabel: str, title: str, out_dir, name: str) -> list:
    """``y`` against ``x`` as dots on one 5 x 4 inch plot, written by :func:`save_figure`."""
    fig, ax = pyplot().subplots(figsize=(5, 4))
    ax.plot(x, y, ".", ms=3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return save_figure(fig, out_dir, name)


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0


@functools.lru_cache(maxsize=4)
def _mnist(data_dir, integer):
    from kernelfit.theory.data import load_mnist
    return load_mnist(data_dir, integer=integer)


def mnist_missing_note(data_dir=None) -> str:
    """The note of a check skipped for want of MNIST: the folder it looked in."""
    from kernelfit.theory.data import mnist_missing_message
    return mnist_missing_message(data_dir)


def note_stand_in(res: CheckResult, data_dir, what: str) -> None:
    """Record that ``res`` checks ``what`` (synthetic data) because MNIST was not found."""
    if res.stand_in is None:
        res.stand_in = what
        res.notes.append(f"checked on {what}, not on MNIST: {mnist_missing_note(data_dir)}")


def mnist_or_none(data_dir=None, integer=False):
    """MNIST arrays, or ``None`` when the data cannot be found."""
    from kernelfit.theory.data import find_data_dir
    d = find_data_dir(data_dir)
    if d is None:
        return None
    return _mnist(str(d), integer)


def random_grid_points(n, d, seed=0):
    """``n`` distinct random points with integer coordinates 0..255 (synthetic stand-in)."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(n, d), dtype=np.int64)
    return X
