"""The options of an exact solve, validated in one place."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..errors import InputError

__all__ = ["SolveOptions", "SOLVERS", "DTYPES", "PRECISIONS", "REFINEMENTS",
           "DEFAULT_MAX_ITER", "real_or_nan"]

SOLVERS = ("cholesky", "eigh", "lstsq")
DTYPES = ("float64", "float32")
PRECISIONS = ("auto", "float64", "float32", "mixed")
REFINEMENTS = ("cg", "ir")
DEFAULT_MAX_ITER = 30


@dataclass
class SolveOptions:
    """Options of an exact solve (all have safe defaults)."""

    solver: str = "cholesky"
    ridge: float = 0.0
    dtype: str = "float64"
    tile_size: Optional[int] = None
    device: str = "cpu"
    rcond: Optional[float] = None
    show_progress: Optional[bool] = None
    check_memory: bool = True
    estimate_condition: bool = False
    # also form K alpha (for the residual): on the CPU from a copy of K kept through the
    # factorization when memory allows (kernelfit.solvers.products.stored_kernel_matvec)
    residual: bool = False
    # precision and placement (kernelfit.solvers.plan picks the route)
    precision: str = "auto"            # 'auto' | 'float64' | 'float32' | 'mixed'
    tol: float = 1e-10                 # relative residual target of mixed-precision refinement
    max_iter: Optional[int] = None     # refinement steps (None: 30)
    refinement: str = "cg"             # 'cg' (preconditioned CG) | 'ir' (iterative refinement)
    ooc_dir: Optional[str] = None      # out-of-core: tiles and checkpoints in this folder
    resume: bool = False               # continue an interrupted out-of-core run
    scheduler: Optional[str] = None    # Dask scheduler address
    distributed: Optional[str] = None  # 'local': a local Dask cluster
    # the most bytes the solve plans for on its device (None: what the device has available,
    # mixed precision keeping tiles of K within KEEP_F64_SHARE of it, or up to the float64
    # plan's memory where auto takes mixed only so: plan._wider_keep); at most what is
    # available, mixed precision's kept tiles fill it (kernelfit.solvers.plan.plan_solve)
    memory_budget: Optional[int] = None

    def fixed_precision(self) -> Optional[str]:
        """The one float precision these options fix: ``precision`` 'float32'/'float64',
        or float32 for ``'auto'`` with ``dtype`` float32 (a plain float32 solve); None
        where ``'auto'`` or mixed precision decide."""
        if self.precision in DTYPES:
            return self.precision
        return "float32" if self.precision == "auto" and self.dtype == "float32" else None

    def route_precision(self) -> str:
        """The precision of an out-of-core or Dask solve: the one fixed
        (:meth:`fixed_precision`), else mixed."""
        return self.fixed_precision() or "mixed"

    def validate(self) -> "SolveOptions":
        if self.solver not in SOLVERS:
            raise InputError(f"solver {self.solver!r} is unknown; choose one of "
                             f"{', '.join(SOLVERS)}", param="solver")
        if dtype_name(self.dtype) not in DTYPES:
            raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}",
                             param="dtype")
        self.dtype = dtype_name(self.dtype)
        try:
            self.ridge = float(self.ridge)
        except (TypeError, ValueError):
            raise InputError(f"ridge must be a number, got {self.ridge!r}",
                             param="ridge") from None
        if not np.isfinite(self.ridge) or self.ridge < 0:
            raise InputError(f"ridge must be a non-negative finite number, got {self.ridge!r}",
                             param="ridge")
        if self.tile_size is not None:
            ts = real_or_nan(self.tile_size)
            if not (math.isfinite(ts) and ts == int(ts) and ts >= 16):
                raise InputError(f"tile_size must be an integer of at least 16, got "
                                 f"{self.tile_size!r}", param="tile_size")
            self.tile_size = int(ts)
        if self.rcond is not None:
            if not 0 <= real_or_nan(self.rcond) < 1:
                raise InputError(f"rcond must be a number in [0, 1), got {self.rcond!r}",
                                 param="rcond")
            self.rcond = float(self.rcond)
        _validate_beyond_memory(self)
        return self



def dtype_name(value):
    """A dtype given as NumPy's type or dtype (``np.float32``, ``np.dtype('f4')``) by its
    name, as the options spell it; a string or None as it is."""
    if value is None or isinstance(value, str):
        return value
    try:
        return np.dtype(value).name
    except TypeError:
        return value


def real_or_nan(value) -> float:
    """``value`` as a float, or NaN where it is not a number (a bool, a word, None), so
    that one finiteness and range test refuses every bad value alike."""
    if isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _conflict(param: str, other: str, why: str) -> None:
    """Refuse two options that cannot be combined (the facts name both, and why)."""
    raise InputError(f"{param} and {other} cannot be combined: {why}; give one of them",
                     param=param, conflicts_with=other, why=why)


def _validate_beyond_memory(opts) -> None:
    """Check the beyond-memory fields of :class:`SolveOptions` (raises InputError)."""
    if opts.precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got "
                         f"{opts.precision!r}", param="precision")
    try:
        tol = float(opts.tol)
    except (TypeError, ValueError):
        raise InputError(f"tol must be a number, got {opts.tol!r}", param="tol") from None
    if not (math.isfinite(tol) and 1e-15 <= tol < 1):
        raise InputError(f"tol must be a relative residual in [1e-15, 1), got {opts.tol!r} "
                         "(float64 cannot resolve residuals much below 1e-15)", param="tol")
    opts.tol = tol
    if opts.max_iter is None:
        opts.max_iter = DEFAULT_MAX_ITER
    if isinstance(opts.max_iter, bool) or int(opts.max_iter) != opts.max_iter or \
            not (1 <= int(opts.max_iter) <= 100_000):
        raise InputError(f"max_iter must be an integer in [1, 100000], got {opts.max_iter!r}",
                         param="max_iter")
    opts.max_iter = int(opts.max_iter)
    if opts.refinement not in REFINEMENTS:
        raise InputError(f"refinement must be one of {', '.join(REFINEMENTS)}, got "
                         f"{opts.refinement!r}", param="refinement")
    if opts.memory_budget is not None:
        budget = real_or_nan(opts.memory_budget)
        if not (math.isfinite(budget) and budget >= 1):
            raise InputError(f"memory_budget must be a positive number of bytes, got "
                             f"{opts.memory_budget!r}", param="memory_budget")
        opts.memory_budget = int(budget)
    if opts.resume and not opts.ooc_dir:
        raise InputError("resume continues an out-of-core run: give its folder (ooc_dir)",
                         param="resume")
    if opts.ooc_dir is not None and not isinstance(opts.ooc_dir, (str, os.PathLike)):
        raise InputError(f"ooc_dir must be a folder path, got {opts.ooc_dir!r}",
                         param="ooc_dir")
    if opts.ooc_dir is not None and not str(opts.ooc_dir).strip():
        raise InputError("ooc_dir is an empty path: give the folder for the out-of-core "
                         "tiles (or None for a solve in memory)", param="ooc_dir")
    if opts.distributed not in (None, "local"):
        raise InputError(f"distributed must be 'local' (or give a scheduler address), got "
                         f"{opts.distributed!r}", param="distributed")
    if opts.scheduler is not None and (not isinstance(opts.scheduler, str) or
                                       not opts.scheduler.strip()):
        raise InputError(f"scheduler must be an address such as tcp://host:8786, got "
                         f"{opts.scheduler!r}")
    if opts.ooc_dir and (opts.scheduler or opts.distributed):
        _conflict("ooc_dir", "scheduler" if opts.scheduler else "distributed",
                  "K's tiles live either on disk (out of core) or on the Dask workers")
    if opts.scheduler and opts.distributed:
        _conflict("scheduler", "distributed", "the Dask workers are either a scheduler's "
                  "(at its address) or a local cluster's")
    special = opts.precision == "mixed" or opts.ooc_dir or opts.scheduler or opts.distributed
    if special and opts.solver != "cholesky":
        raise InputError(f"mixed precision, out-of-core and Dask solves use the Cholesky "
                         f"solver, not {opts.solver!r}")
