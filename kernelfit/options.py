"""The options of a run, as one tree of frozen dataclasses.

    RunOptions
      data:     DataOptions      which dataset, where, how many points, balanced subsets
      features: FeatureOptions   the feature map, its parameters and its cache
      kernel:   KernelOptions    the kernel and its parameters (bandwidth or 'median')
      solver:   SolverOptions    solver, dtype, ridge, device, tiles, and the beyond-memory
                                 options: precision, refinement, out-of-core, Dask
      seed                       the one base seed (subsets, feature maps, median sample)
      save                       where ``kernelfit solve`` stores the fitted model
      tolerance                  the largest relative residual accepted beyond exact (None:
                                 exact only); a solve not accepted saves no model

Each class is defined and validated once, here, in its ``__post_init__`` (bad values raise
:class:`~kernelfit.errors.InputError`); an instance is never changed afterwards: derived
values (a resolved device, a fixed bandwidth) are new instances made with
:func:`dataclasses.replace`.

The tree is built in three places, each from its own source of names: the command line
(``kernelfit.cli._common.config_from_args``), the estimator (its scikit-learn parameters,
:meth:`SolverOptions.from_params`) and the benchmark (``BenchConfig.run_options``). The
leaves carry the flat names that the command line's destinations, the estimator's
parameters and the JSON records use (``kernel``, ``bandwidth``, ``dtype``, ``ooc_dir`` ...);
:meth:`RunOptions.from_flat` and :meth:`RunOptions.to_flat` translate by those names, so
none of the three lists the options again.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, ClassVar, Dict, Iterator, Mapping, Optional, Tuple

from .errors import InputError
from .solvers.options import dtype_name, real_or_nan

__all__ = ["DataOptions", "FeatureOptions", "FrozenParams", "KernelOptions", "SolverOptions",
           "RunOptions"]


class _Flat:
    """Mixin: building from / writing to flat ``{name: value}`` mappings."""

    #: field name -> the flat name used by the CLI, the estimator and the records
    _FLAT: ClassVar[Dict[str, str]] = {}

    @classmethod
    def flat_names(cls) -> Tuple[str, ...]:
        return tuple(cls._FLAT.get(f.name, f.name) for f in fields(cls))

    @classmethod
    def from_params(cls, params: Mapping[str, Any]):
        """An instance from a flat mapping (missing names keep their defaults)."""
        kw = {f.name: params[cls._FLAT.get(f.name, f.name)] for f in fields(cls)
              if cls._FLAT.get(f.name, f.name) in params}
        return cls(**kw)

    def to_flat(self) -> Dict[str, Any]:
        return {self._FLAT.get(f.name, f.name): getattr(self, f.name) for f in fields(self)}


def _set(obj, name: str, value) -> None:
    object.__setattr__(obj, name, value)


def _flag(name: str, value, *, none: bool = False):
    """``value`` as a bool (True/False, NumPy's bools, 0/1); None kept where ``none``;
    anything else refused (bool("no") was True)."""
    if value is None and none:
        return None
    if (isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", "") == "b"
            or (isinstance(value, numbers.Integral) and value in (0, 1))):
        return bool(value)
    raise InputError(f"{name} must be True or False, got {value!r}", param=name)


class FrozenParams(Mapping):
    """A read-only mapping (a private copy of the one it is made from): the feature map's
    parameters inside the frozen :class:`FeatureOptions`. It equals a dict of the same
    items, hashes by its items (when they are hashable), prints and pickles as that dict."""

    __slots__ = ("_items",)

    def __init__(self, params: Mapping[str, Any] = MappingProxyType({})):
        object.__setattr__(self, "_items", MappingProxyType(dict(params)))

    def __getitem__(self, key):
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __repr__(self) -> str:
        return repr(dict(self._items))

    def __reduce__(self):
        return type(self), (dict(self._items),)


@dataclass(frozen=True)
class DataOptions(_Flat):
    """Which data: a dataset name (see :func:`kernelfit.datasets.load_dataset`), its folder,
    subset sizes (None: all) and class balance."""

    dataset: str = "digits"
    data_dir: Optional[str] = None
    n_train: Optional[int] = None
    n_test: Optional[int] = None
    balanced: bool = False

    def __post_init__(self):
        if not isinstance(self.dataset, str) or not self.dataset.strip():
            raise InputError(f"dataset must be a name such as 'digits', 'mnist' or 'npz:PATH', "
                             f"got {self.dataset!r}", param="dataset")
        for name, low in (("n_train", 1), ("n_test", 0)):
            v = getattr(self, name)
            if v is None:
                continue
            try:
                ok = not isinstance(v, bool) and int(v) == v and v >= low
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise InputError(f"{name} must be an integer >= {low}, got {v!r}", param=name)
            _set(self, name, int(v))
        _set(self, "balanced", _flag("balanced", self.balanced))


@dataclass(frozen=True)
class FeatureOptions(_Flat):
    """The feature map applied before the kernel (``'raw'``: none), its parameters (checked
    against the data's image shape when the map is built; held as a read-only
    :class:`FrozenParams`, written out as a plain dict by :meth:`to_flat`) and its on-disk
    cache."""

    _FLAT: ClassVar[Dict[str, str]] = {"name": "features", "params": "feature_params",
                                       "cache": "feature_cache"}

    name: str = "raw"
    params: Mapping[str, Any] = field(default_factory=FrozenParams)  # stored as FrozenParams
    cache: bool = True
    cache_dir: Optional[str] = None

    def __post_init__(self):
        from .features import FEATURE_NAMES

        if self.name not in FEATURE_NAMES:
            raise InputError(f"unknown feature map {self.name!r}; choose one of "
                             f"{', '.join(FEATURE_NAMES)}")
        if not isinstance(self.params, Mapping):
            raise InputError(f"feature parameters must be a mapping, got "
                             f"{type(self.params).__name__}")
        from .features import check_param_names

        check_param_names(self.name, self.params)  # another map's parameter: refused
        # a private, read-only copy: the caller's dict may change, these options may not
        _set(self, "params", FrozenParams(self.params))
        _set(self, "cache", _flag("feature_cache", self.cache))
        if self.cache_dir is not None and not isinstance(self.cache_dir, (str, os.PathLike)):
            raise InputError(f"cache_dir must be a folder path, got {self.cache_dir!r}",
                             param="cache_dir")

    def to_flat(self) -> Dict[str, Any]:
        out = super().to_flat()
        out["feature_params"] = dict(self.params)  # a plain dict for JSON (and a copy)
        return out


@dataclass(frozen=True)
class KernelOptions(_Flat):
    """The kernel (:mod:`kernelfit.kernels`); ``bandwidth='median'`` is resolved on the
    training data by :meth:`resolve`."""

    _FLAT: ClassVar[Dict[str, str]] = {"name": "kernel"}

    name: str = "gaussian"
    bandwidth: Any = None  # None: the default for features and data (kernelfit.kernel_defaults)
    degree: int = 4
    gamma: float = 1.0
    coef0: float = 1.0

    def __post_init__(self):
        bw = self.bandwidth
        if isinstance(bw, str) and bw != "median":
            raise InputError(f"bandwidth must be a positive number or 'median', got {bw!r}",
                             param="bandwidth")
        self._kernel(1.0 if bw in ("median", None) else bw)  # InputError on a bad parameter
        from .kernel_defaults import gamma_as_width

        why = gamma_as_width(self.name, self.gamma)
        if why is not None:
            raise InputError(why, param="gamma")

    @property
    def median(self) -> bool:
        return self.bandwidth == "median"

    def _kernel(self, bandwidth):
        from .kernels import get_kernel

        return get_kernel(self.name, bandwidth=bandwidth, degree=self.degree,
                          gamma=self.gamma, coef0=self.coef0)

    def resolve(self, X, seed: int = 0):
        """The :class:`~kernelfit.kernels.Kernel`, with a ``'median'`` bandwidth replaced by
        the median pairwise distance of a seeded sample of ``X`` (the training inputs)."""
        if self.bandwidth is None:  # the default for raw inputs of unknown origin; the run
            from .kernel_defaults import choose_bandwidth  # layer knows features and data

            return self._kernel(choose_bandwidth(self.name, "raw", None, X, seed=seed)[0])
        if not self.median:
            return self._kernel(self.bandwidth)
        from .kernels import median_distance

        return self._kernel(median_distance(X, seed=seed))

    def fixed(self, X, seed: int = 0) -> "KernelOptions":
        """These options with a ``'median'`` bandwidth fixed to its value on ``X``."""
        if not self.median and self.bandwidth is not None:
            return self
        return replace(self, bandwidth=self.resolve(X, seed).bandwidth)



#: precisions that name K's storage type (the others: 'auto', 'mixed')
_FLOAT_PRECISIONS = ("float32", "float64")


@dataclass(frozen=True)
class SolverOptions(_Flat):
    """How K alpha = Y is solved: the in-core solver and its precision, tiles and device,
    and the beyond-memory paths (mixed precision with refinement, out-of-core, Dask).

    The rules are the solvers' own (:class:`kernelfit.solvers.exact.SolveOptions`), checked
    here once when the options are made, with the one rule between options: K's storage
    ``dtype`` and a float ``precision`` asked for must agree, and mixed precision factors K
    in float32 (``dtype`` None, not given: the precision's float type, float32 for mixed;
    under 'auto' it stays None, and a dtype given there fixes that precision);
    :meth:`solve_options` hands them to the solver.
    """

    solver: str = "cholesky"
    # None: the float type precision 'float32'/'float64' names, float32 for mixed; under
    # 'auto' it stays None (K in float64, or float32 where auto picks mixed); 'float64' given
    # with 'auto' fixes precision 'float64'
    dtype: Optional[str] = None
    ridge: float = 0.0
    device: str = "cpu"
    tile_size: Optional[int] = None
    show_progress: Optional[bool] = None
    precision: str = "auto"
    tol: float = 1e-10
    max_iter: Optional[int] = None
    refinement: str = "cg"
    ooc_dir: Optional[str] = None
    resume: bool = False
    scheduler: Optional[str] = None
    distributed: Optional[str] = None
    memory_budget: Optional[int] = None  # bytes; None: what the device has available

    def __post_init__(self):
        _set(self, "dtype", dtype_name(self.dtype))  # np.float32 -> 'float32'
        by_dtype = False  # precision fixed by the dtype given
        if self.dtype is None:  # not given: K is stored in the float precision asked for
            # ('auto' keeps None: it stores K in float64, or in float32 where it chooses
            # mixed precision; a dtype given fixes it, so None must stay told apart)
            if self.precision in _FLOAT_PRECISIONS or self.precision == "mixed":
                _set(self, "dtype", "float32" if self.precision == "mixed"
                     else self.precision)
        elif self.precision == "auto" and str(self.dtype) == "float64":
            # float64 asked for by name: a float64 factorization, as dtype float32 under
            # 'auto' is a plain float32 solve (auto would otherwise pick mixed precision)
            _set(self, "precision", "float64")
            by_dtype = True
        elif self.precision == "mixed" and str(self.dtype) == "float64":
            raise InputError("dtype='float64' contradicts precision='mixed', which factors K "
                             "in float32 (and refines the solution in float64); give one of "
                             "them", param="dtype", dtype="float64", precision="mixed",
                             conflicts_with="precision")
        _set(self, "show_progress", _flag("show_progress", self.show_progress, none=True))
        _set(self, "resume", _flag("resume", self.resume))
        # the device is checked where it is resolved (kernelfit.backend.get_backend)
        checked = self.solve_options()
        if checked.precision in _FLOAT_PRECISIONS and checked.dtype != checked.precision:
            p = checked.precision
            raise InputError(f"dtype={checked.dtype!r} contradicts precision={p!r}; give one "
                             f"of them (precision={p!r} alone stores K in {p})",
                             param="dtype", dtype=checked.dtype, precision=p,
                             conflicts_with="precision")
        _set(self, "_by_dtype", by_dtype)  # (check_refinement_given's wording)
        self.check_refinement_given(self.refinement_given())
        # the solvers' normal forms (a dtype name, a float ridge, an int tile size); the
        # refinement default (max_iter None) stays None so records show what was asked
        for name in ("dtype", "ridge", "tile_size", "tol", "memory_budget"):
            if name != "dtype" or self.dtype is not None:
                _set(self, name, getattr(checked, name))

    def check_refinement_given(self, given) -> None:
        """Refuse refinement options ``given`` (names among ``tol``, ``max_iter``,
        ``refinement``: those set to other than their defaults, or a caller's own list, e.g.
        the command line's flags typed at their default values) where no refinement runs:
        in memory a float precision factors once; out of core and on Dask float32 does not
        refine either (float64 there refines from its factor)."""
        given = list(given)
        if not given:
            return
        plain = self.solve_options().fixed_precision()
        beyond = self.ooc_dir or self.scheduler or self.distributed
        if not plain or (beyond and plain != "float32"):
            return
        by_dtype = getattr(self, "_by_dtype", False)
        asked = (f"precision={plain!r}" if plain == self.precision and not by_dtype
                 else f"dtype={plain!r} (a {plain} solve)")
        instead = " in place of dtype='float64'" if plain == "float64" and by_dtype else ""
        raise InputError(
            f"{given[0]} does not apply with {asked}, which factors K once and does not "
            f"refine; leave it out, or use precision 'mixed'{instead} (or 'auto' without a "
            "dtype, which may choose it)", param=given[0], not_with_precision=plain,
            via_dtype=plain != self.precision or by_dtype)

    def refinement_given(self) -> list:
        """The options that shape a refinement (``tol``, ``max_iter``, ``refinement``) set to
        other than their defaults."""
        default = {f.name: f.default for f in fields(self)}
        return [name for name in ("tol", "max_iter", "refinement")
                if getattr(self, name) != default[name]]

    def solve_options(self, **extra):
        """The validated :class:`~kernelfit.solvers.exact.SolveOptions` of these options;
        ``extra`` sets the per-fit switches (``residual``, the estimator's
        ``compute_residual``, and ``estimate_condition``)."""
        from .solvers.exact import SolveOptions

        names = {"residual": "compute_residual"}
        extra = {k: _flag(names.get(k, k), v) for k, v in extra.items()}
        flat = self.to_flat()
        if flat["dtype"] is None:  # 'auto' with no dtype: the solver's float64 storage
            del flat["dtype"]
        return SolveOptions(**flat, **extra).validate()


@dataclass(frozen=True)
class RunOptions:
    """Everything one run needs (``kernelfit solve``, ``randomize``, the benchmarks)."""

    data: DataOptions = field(default_factory=DataOptions)
    features: FeatureOptions = field(default_factory=FeatureOptions)
    kernel: KernelOptions = field(default_factory=KernelOptions)
    solver: SolverOptions = field(default_factory=SolverOptions)
    seed: int = 0
    save: Optional[str] = None
    tolerance: Optional[float] = None

    _PARTS: ClassVar[Tuple[Tuple[str, type], ...]] = (
        ("data", DataOptions), ("features", FeatureOptions), ("kernel", KernelOptions),
        ("solver", SolverOptions))

    def __post_init__(self):
        for name, cls in self._PARTS:
            if not isinstance(getattr(self, name), cls):
                raise InputError(f"{name} must be {cls.__name__}, got "
                                 f"{type(getattr(self, name)).__name__}")
        try:
            ok = not isinstance(self.seed, bool) and int(self.seed) == self.seed
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InputError(f"seed must be an integer, got {self.seed!r}", param="seed")
        _set(self, "seed", int(self.seed))
        if self.tolerance is not None:
            tol = real_or_nan(self.tolerance)
            if not (math.isfinite(tol) and tol >= 0):
                raise InputError(f"tolerance must be a relative residual >= 0 (or None: "
                                 f"exact only), got {self.tolerance!r}", param="tolerance")
            _set(self, "tolerance", tol)
        if self.save is not None and not isinstance(self.save, (str, os.PathLike)):
            raise InputError(f"save must be a file path, got {self.save!r}", param="save")

    @classmethod
    def flat_names(cls) -> Tuple[str, ...]:
        """Every flat option name (the leaves of the tree)."""
        return sum((part.flat_names() for _, part in cls._PARTS), ()) + ("seed", "save",
                                                                          "tolerance")

    @classmethod
    def from_flat(cls, **flat) -> "RunOptions":
        """The tree from flat names (``dataset=..., kernel=..., dtype=..., ooc_dir=...``);
        unknown names raise :class:`InputError`."""
        unknown = sorted(set(flat) - set(cls.flat_names()))
        if unknown:
            raise InputError(f"unknown option(s): {', '.join(unknown)}")
        parts = {name: part.from_params(flat) for name, part in cls._PARTS}
        return cls(**parts, seed=flat.get("seed", 0), save=flat.get("save"),
                   tolerance=flat.get("tolerance"))

    def to_flat(self) -> Dict[str, Any]:
        """The flat ``{name: value}`` form (as recorded in JSON results)."""
        out: Dict[str, Any] = {}
        for name, _ in self._PARTS:
            out.update(getattr(self, name).to_flat())
        out.update(seed=self.seed, save=self.save, tolerance=self.tolerance)
        return out


