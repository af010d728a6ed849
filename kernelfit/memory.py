"""Memory pre-flight: estimate the peak bytes of a request before allocating anything.

Every solver states its plan as named byte counts (:class:`MemoryPlan`); the plan is
checked against the memory available on the device that will hold it, and a request
that cannot fit is refused with the figure and the ways out, before any large
allocation happens.
"""

from __future__ import annotations

import math
import resource
import sys
from dataclasses import dataclass, field
from typing import Dict, Optional

import numpy as np

from .errors import MemoryPlanError
from .report import fmt_bytes  # the one byte formatter, kept importable from here

__all__ = ["MemoryPlan", "fmt_bytes", "peak_rss_bytes", "reset_peak_rss", "plan_exact_solve",
           "largest_n"]

#: fraction of the available memory a plan may use (the rest is headroom for the
#: interpreter, BLAS buffers and allocator fragmentation)
SAFETY = 0.9


def reset_peak_rss() -> bool:
    """Start a new peak: the process's peak resident memory becomes its current one, so
    that :func:`peak_rss_bytes` measures from now (Linux ``/proc/self/clear_refs``; each
    solve of ``kernelfit reproduce`` runs in one process, after larger ones). False where
    the system has no such reset (the peak then stays the process's)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak resident memory of this process since it started, or since the last
    :func:`reset_peak_rss` (bytes)."""
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(ru if sys.platform == "darwin" else ru * 1024)


@dataclass
class MemoryPlan:
    """Named byte counts of a request, and the memory it will be checked against."""

    items: Dict[str, int] = field(default_factory=dict)
    device: str = "cpu"
    available: Optional[int] = None
    #: what the device has available where ``available`` is a memory budget the caller set
    #: (:attr:`kernelfit.solvers.options.SolveOptions.memory_budget`), else None
    machine_available: Optional[int] = None

    @property
    def total(self) -> int:
        return int(sum(self.items.values()))

    def add(self, name: str, nbytes: float) -> "MemoryPlan":
        self.items[name] = self.items.get(name, 0) + int(math.ceil(nbytes))
        return self

    def fits(self) -> bool:
        return self.available is None or self.total <= SAFETY * self.available

    def describe(self) -> str:
        parts = ", ".join(f"{k} {fmt_bytes(v)}" for k, v in self.items.items() if v)
        return f"{fmt_bytes(self.total)} ({parts})"

    def as_dict(self) -> dict:
        out = {"device": self.device, "estimated_peak_bytes": self.total,
               "available_bytes": self.available, "items": dict(self.items)}
        if self.machine_available is not None:  # available_bytes is the budget asked for
            out["memory_budget_bytes"] = self.available
            out["machine_available_bytes"] = self.machine_available
        return out

    def check(self, request: Optional[dict] = None) -> None:
        """Raise :class:`MemoryPlanError` when the plan does not fit.

        ``request`` describes what was planned (see
        :func:`kernelfit.solvers.plan.plan_request`); the error carries it so that a caller
        (the command line) can look for a configuration that fits.
        """
        if self.fits():
            return
        where = "GPU memory" if self.device == "gpu" else "memory"
        headroom = round((1 - SAFETY) * 100)
        facts = {}
        if self.machine_available is None:
            limit = (f"only {fmt_bytes(self.available)} of {where} is available (kernelfit "
                     f"keeps {headroom}% headroom)")
        else:
            limit = (f"the memory budget is {fmt_bytes(self.available)} (kernelfit keeps "
                     f"{headroom}% of it as headroom; {fmt_bytes(self.machine_available)} of "
                     f"{where} is available)")
            facts = {"memory_budget": int(self.available),
                     "machine_available_bytes": int(self.machine_available)}
        msg = f"this request needs about {self.describe()}, but {limit}; nothing was allocated"
        raise MemoryPlanError(msg, required_bytes=self.total, available_bytes=self.available or 0,
                              request=dict(request or {}, device=self.device),
                              items=dict(self.items), **facts)


def plan_exact_solve(n: int, d: int, n_outputs: int, *, n_test: int = 0, dtype=np.float64,
                     tile_size: Optional[int] = None, solver: str = "cholesky",
                     device: str = "cpu",
                     available: Optional[int] = None) -> MemoryPlan:
    """Peak memory of an exact solve (data already loaded is counted as resident).

    cholesky: the lower tiles of K in ``dtype`` + a few float64 tile buffers +
    right-hand sides; eigh/lstsq: a dense n x n K plus eigenvectors / LAPACK workspace.
    """
    from .solvers.machine import n_threads_default
    from .solvers.tiles import TiledSymmetric, default_tile_size

    tile_size = tile_size or default_tile_size(max(int(n), 1), device)
    item = np.dtype(dtype).itemsize
    plan = MemoryPlan(device=device, available=available)
    plan.add("data", 8.0 * (n + n_test) * d)
    ts = min(tile_size, n)
    if solver == "cholesky":
        plan.add("K tiles", TiledSymmetric.storage_bytes(n, tile_size, dtype))
        in_flight = 1 if device == "gpu" else n_threads_default()  # one block per thread
        plan.add("tile buffers", (in_flight + 1) * 8.0 * ts * ts)
    elif solver in ("eigh", "lstsq"):
        plan.add("dense K", 8.0 * n * n)
        # eigh ('evr', K overwritten in place): the eigenvectors and O(n) workspace;
        # lstsq: SciPy's copy of K for gelsd and its workspace (about 150 n doubles at
        # n = 20,000: 12 + 2 * 25 + 8 * log2(n / 26) + columns, per row)
        plan.add("eigenvectors/workspace", 8.0 * n * n + 8.0 * 256 * n)
    else:
        plan.add("K tiles", item * n * n / 2)
    plan.add("targets and coefficients", 4 * 8.0 * n * max(n_outputs, 1))
    plan.add("predictions", 2 * 8.0 * max(n_test, 0) * max(n_outputs, 1))
    return plan


def largest_n(fits, limit: int = 1 << 26) -> int:
    """The largest n >= 1 with ``fits(n)`` for a ``fits`` that is monotone in n (doubling,
    then bisection); 0 when ``fits(1)`` is false. Stops growing at ``limit``."""
    lo, hi = 0, 1
    while fits(hi) and hi < limit:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo
