"""One memory plan and one route per solve: in core, mixed precision, out of core or Dask.

:func:`plan_solve` is the only place that decides where and in which precision a solve
runs, and the only memory plan of it; :func:`kernelfit.solvers.exact.solve_exact` runs
what it decided, and the run layer's pre-flight checks the same plan before any data is
featurized. The plan is data: named byte counts, the route, the precision and the reason,
the expected-time model behind ``precision='auto'``, and the budget of the float64 copy
of K kept for the residual or the refinement products.

``precision='auto'`` (the default) picks by expected time: mixed precision (a float32
factorization, refined in float64 to the float64 residual target) whenever its plan fits
and it is expected to be faster than a float64 factorization; float64 otherwise. The
expected times come from flop and byte counts over rates measured in this process
(:func:`kernelfit.solvers.machine.gemm_rates`). The plan is made before the data are seen;
once they are, :mod:`kernelfit.solvers.conditioning` may still rule mixed precision out
(:func:`kernelfit.solvers.exact.solve_exact`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..backend import get_backend
from ..errors import InputError
from ..memory import SAFETY, MemoryPlan, fmt_bytes, largest_n, plan_exact_solve
from . import deflate
from .checkpoint_facts import resumed_facts
from .machine import gemm_rates, given_tiles_rule, n_threads_default, tile_choice
from .options import SolveOptions
from .products import kept_copy_bytes, values_fit
from .refine import CERTIFY_PASSES
from .tiles import TiledSymmetric, default_tile_size

__all__ = ["SolvePlan", "plan_solve", "plan_mixed", "plan_gram_solve", "preflight",
           "preflight_plan",
           "expected_times", "check",
           "request_of", "plan_request", "would_fit", "max_n_that_fits",
           "KEEP_COPY_MAX_BYTES", "KEEP_F64_SHARE", "AUTO_TOL", "EXPECTED_PASSES",
           "FEWEST_PASSES", "WORST_PASSES", "keep_share"]

# The most bytes of off-diagonal tiles copied through a float64 factorization for the
# residual (the diagonal tiles keep K in their upper triangles at no cost; tiles beyond
# the budget are recomputed). The copy is fresh memory, and first writes to fresh memory
# can cost about as much as recomputing the tiles on a virtual machine short of memory.
KEEP_COPY_MAX_BYTES = 256 << 20
#: mixed precision keeps float64 tiles of K for the refinement products while the whole
#: plan stays within this share of the available memory (the rest is recomputed)
KEEP_F64_SHARE = 0.4
#: relative residual target of precision='auto' when it picks mixed precision: what a
#: float64 factorization reaches on the kernels the README quotes
AUTO_TOL = 1e-12
#: the rate probe (kernelfit.solvers.machine.gemm_rates) costs about this many flops; auto
#: measures only when the float64 factorization is at least MEASURE_MIN_RATIO times that
RATE_PROBE_FLOPS = 4 * 2.0 * 768 ** 3
MEASURE_MIN_RATIO = 20
#: passes over K (products) expected of a refinement to AUTO_TOL, for the time model: six on
#: MNIST pixels (n = 60,000), three to five at n = 10,000-20,000
EXPECTED_PASSES = 6
#: ... and the fewest and most it has taken to converge (MNIST pixels: 3 to 6 up to
#: n = 60,000; Gabor features at n = 10,000: 3 to 14, the longest ending 3 passes past its
#: best under the drift rule): auto picks the precision whose worst case is less far from
#: the other's best (see :func:`_auto`). A refinement that would take longer than falling
#: back gives up early (see :func:`kernelfit.solvers.refine.refine`'s ``give_up_after``)
FEWEST_PASSES = 3
WORST_PASSES = 14
#: the smallest tile an automatic tile size is halved to where a plan does not fit (smaller
#: tiles leave BLAS far from its rate and multiply the out-of-core files and Dask tasks)
MIN_AUTO_TILE = 256


@dataclass
class SolvePlan:
    """Where and how a solve runs, and the memory it needs."""

    route: str                    # 'in_core' | 'mixed' | 'ooc' | 'dask'
    precision: str                # 'float64' | 'float32' | 'mixed'
    reason: str
    tile_size: int
    memory: MemoryPlan
    keep_budget: Optional[int] = None   # bytes of float64 tiles kept (None: no copy)
    tol: Optional[float] = None         # refinement target (mixed, ooc, dask)
    choice: dict = field(default_factory=dict)
    # precision='auto' chose mixed by time: a float64 solve fits, so mixed may fall back
    may_fall_back: bool = False
    #: the float64 in-core plan a fallback from mixed precision runs (made with this plan)
    fallback: Optional["SolvePlan"] = None
    #: precision='auto' chose float64 by time, yet mixed precision is faster at its fewest
    #: passes: the mixed plan (falling back to this one) that the conditioning probe switches
    #: to where the data promise a short refinement
    alternative: Optional["SolvePlan"] = None
    n: Optional[int] = None             # the number of training points planned for

    def record(self) -> dict:
        """The JSON record of the plan (the memory plan, plus the route where special)."""
        out = self.memory.as_dict()
        if self.route in ("ooc", "dask"):
            out["note"] = "K tiles live on disk or on the Dask workers"
        elif self.route == "mixed":
            out["precision"] = "mixed"
        return out


def plan_mixed(n: int, d: int, m: int, tile_size: int, *, device="cpu", available=None,
               n_threads: Optional[int] = None) -> MemoryPlan:
    """Memory plan of a mixed-precision solve (float32 tiles + float64 vectors).

    CPU: one float64 tile buffer and one partial product per thread; GPU: one stream of
    work, so one of each.
    """
    nth = 1 if device == "gpu" else (n_threads or n_threads_default())
    ts = min(tile_size, n)
    plan = MemoryPlan(device=device, available=available)
    plan.add("K tiles (float32)", TiledSymmetric.storage_bytes(n, tile_size, np.float32))
    plan.add("tile buffers", (nth + 2) * 8.0 * ts * ts)
    plan.add("refinement vectors", 8.0 * n * m * (14 + 2 * nth))
    # the deflation's U and W, and k(X, Z) or the first sweep's columns (Gaussian and
    # Laplacian kernels only, counted for every kernel: 7.3 MiB per 10^4 rows at rank 32)
    plan.add("deflation (landmarks)", 3 * 8.0 * n * deflate.planned_rank(n))
    return plan


def plan_gram_solve(n: int, m: int, tile_size: int, *, n_test: int = 0, device="cpu",
                    available=None, n_threads: Optional[int] = None) -> MemoryPlan:
    """Memory plan of :func:`kernelfit.solvers.mixed.solve_gram` on a Gram matrix made
    outside the solvers and held as one dense n x n float32 matrix whose tiles are views
    (the factor in one triangle, K kept in the other), and its float32 n_test x n cross
    kernel for the predictions; the tile buffers and refinement vectors as in
    :func:`plan_mixed` (no deflation: :func:`~kernelfit.solvers.mixed.solve_gram` factors
    the Gram matrix as given). The caller adds its own items before checking it."""
    mixed = plan_mixed(n, 0, m, tile_size, device=device, n_threads=n_threads)
    plan = MemoryPlan(device=device, available=available)
    plan.add("K and its factor (n x n float32)", 4.0 * n * n)
    if n_test:
        plan.add("cross kernel (n_test x n float32)", 4.0 * n_test * n)
    for name in ("tile buffers", "refinement vectors"):
        plan.add(name, mixed.items[name])
    return plan


def _in_core(n, d, m, n_test, dtype, ts, solver, device, available) -> MemoryPlan:
    plan = plan_exact_solve(n, d, m, n_test=n_test, dtype=dtype, tile_size=ts,
                            solver=solver, device=device, available=available)
    plan.items.pop("data", None)  # already resident when the plan is made
    return plan


def _add_predictions(plan: MemoryPlan, n_test: int, m: int) -> MemoryPlan:
    if n_test:
        plan.add("predictions", 2 * 8.0 * n_test * max(m, 1))
    return plan


def _mixed_memory(n, d, m, n_test, ts, device, avail) -> MemoryPlan:
    """A fresh mixed-precision memory plan with its predictions (kept tiles are added to it
    by :func:`_mixed_keep`)."""
    return _add_predictions(plan_mixed(n, d, m, ts, device=device, available=avail), n_test, m)


def expected_times(n: int, d: int, m: int, ts: int, rates: dict, keep_fraction: float,
                   f64_keep_fraction: float, *, grid: bool = False,
                   kept_exact: Optional[bool] = None) -> dict:
    """Expected seconds of the parts that differ between a float64 and a mixed solve.

    float64: the factorization (n^3/3 flop at the float64 GEMM rate) and one K product
    (m columns) for the residual; mixed: the factorization at the float32 rate, writing
    its kept tiles (``once_s``), and per refinement pass (``pass_s``) one K product (the
    search directions and the iterate: 2m columns) and one preconditioner solve; at
    ``EXPECTED_PASSES`` passes
    (``mixed_s``), ``FEWEST_PASSES`` (``mixed_best_s``) and ``WORST_PASSES``
    (``mixed_worst_s``). The Gram matrix is left out: about the same either way.

    A K product reads each of K's n^2/2 lower entries twice in thin products (K_ij V_j
    and K_ij^T V_i), at the measured time per entry of a thin product
    (``thin_seconds_per_entry``: with a few columns OpenBLAS's packing sets it, so it grows
    with the columns only beyond ``thin_columns``); kept exact integers (``grid``: inputs
    on the integer grid, 4 bytes an entry) are first read and finished (scale, exp: the
    measured finish rate, on the grid the Gaussian's of exact integers); recomputed entries
    cost 2 d flop (the float32 GEMM rate on the grid, float64 off it) and a finish;
    ``kept_exact`` (default: ``grid``) says whether mixed precision keeps exact integers or,
    where its budget holds every tile's values, float64 values (no finish, 8 bytes). A
    preconditioner solve is two triangular sweeps over the float32 factor's entries (m
    columns). ``keep_fraction``: the share of K's lower entries mixed precision keeps
    (exact integers on the grid: twice the tiles of the same bytes), ``f64_keep_fraction``:
    the float64 path's, for its residual. Writing the kept tiles: their bytes at the memory
    bandwidth. ``pass64_s``: a pass whose preconditioner solve runs in float64 (what the
    refinement does once a pass gains less than its FAST_GAIN; the conditioning probe costs
    poor rates so).
    (n = 60,000, MNIST pixels, 2 Zen 4 cores: 19 s a pass expected, 15-18 s measured.)
    """
    r64, r32 = rates["float64"], rates["float32"]
    bw = rates.get("memory_bytes_per_s") or r64 / 4.0
    thin = rates.get("thin_seconds_per_entry") or {}
    per64 = thin.get("float64") or 16.0 / bw  # unmeasured: two float64 reads an entry
    per32 = thin.get("float32") or per64 / 2.0
    wide = float(rates.get("thin_columns") or 16)
    finish = (grid and rates.get("finish_exact_entries_per_s")
              or rates.get("finish_entries_per_s") or math.inf)
    entries = n * n / 2.0
    recompute = 2.0 * max(d, 1) / (r32 if grid else r64) + 1.0 / finish  # per entry
    kept_exact = grid if kept_exact is None else bool(kept_exact)
    exact = 4.0 / bw + 1.0 / finish if kept_exact else 0.0  # per kept entry, beside its product

    def thin_s(per_entry, cols, reads):
        return reads * entries * per_entry * max(1.0, cols / wide)

    def product(kept, per_kept, cols):
        return (entries * (kept * per_kept + (1.0 - kept) * recompute)
                + thin_s(per64, cols, 2))

    t64 = n ** 3 / 3.0 / r64 + product(f64_keep_fraction, 0.0, m)  # kept: float64 values
    per_pass = product(keep_fraction, exact, 2 * m) + thin_s(per32, m, 2)
    # a pass whose preconditioner solve runs in float64 (the refinement's rule once a pass
    # gains less than FAST_GAIN): each float32 tile upcast, then read in float64 thin
    # products, about twice their time (Gabor features, n = 60,000, every tile kept, 2 Zen 5
    # cores: 2.2 s a solve beside 1.9 s for the K product)
    per_pass64 = product(keep_fraction, exact, 2 * m) + 2.0 * thin_s(per64, m, 2)
    once = n ** 3 / 3.0 / r32 + keep_fraction * entries * (4.0 if kept_exact else 8.0) / bw
    cert = CERTIFY_PASSES * per_pass  # the product that certifies the answer
    return {"float64_s": t64, "mixed_s": once + EXPECTED_PASSES * per_pass + cert,
            "mixed_best_s": once + FEWEST_PASSES * per_pass + cert,
            "mixed_worst_s": once + WORST_PASSES * per_pass + cert,
            "pass_s": per_pass, "pass64_s": per_pass64, "once_s": once,
            "passes_assumed": EXPECTED_PASSES,
            "passes_range": [FEWEST_PASSES, WORST_PASSES], "integer_grid": bool(grid),
            "kept_exact": kept_exact,
            "gemm_flops_per_s": {"float64": r64, "float32": r32},
            "float32_rate": rates.get("float32_source", "given"),
            "thin_seconds_per_entry": {"float64": per64, "float32": per32},
            "finish_entries_per_s": finish if math.isfinite(finish) else None,
            "memory_bytes_per_s": bw, "kept_fraction": keep_fraction}


def _f64_keep(opts, n, ts, device, plan: MemoryPlan, check: bool):
    """The float64 path's copy of K for the residual: (budget or None, fraction kept)."""
    if not (opts.residual and opts.solver == "cholesky" and device == "cpu"):
        return None, 0.0
    budget = KEEP_COPY_MAX_BYTES
    plan.add("K copy (residual)", kept_copy_bytes(n, ts, budget))
    if check and not plan.fits():
        budget = 0  # the diagonal alone: the diagonal tiles still count, for n floats
        plan.items["K copy (residual)"] = kept_copy_bytes(n, ts, budget)
        if not plan.fits():
            plan.items.pop("K copy (residual)")
            return None, 0.0
    full = kept_copy_bytes(n, ts, None) - 8 * n
    return budget, (min(budget, full) / full if full > 0 else 1.0)


def _mixed_keep(n, ts, plan: MemoryPlan, available, grid: bool = False,
                share: float = KEEP_F64_SHARE):
    """The tiles of K mixed precision keeps for its refinement products: ``(budget, share,
    exact)``, the budget as bytes of float64 tiles, the share of K's lower entries it keeps
    and whether they are kept as exact integers. Where the budget holds K's float64 values
    for every tile, those are kept (:func:`~kernelfit.solvers.products.values_fit`).
    Otherwise inputs on the integer grid (``grid``) keep exact integers, 4 bytes an entry,
    so the same budget holds twice the off-diagonal tiles, and the diagonal tiles keep
    theirs inside the float32 tiles (:func:`kernelfit.solvers.products.kept_dtype`,
    :func:`~kernelfit.solvers.products.diagonal_in_tiles`: Gaussian and Laplacian; the
    normalized kernel's diagonal tiles take budget, which the share leaves out).
    ``share``: of ``available``, the most the whole plan may then take (a memory budget
    the caller set is filled: :func:`keep_share`)."""
    full = kept_copy_bytes(n, ts, None, diagonal=True)
    if available is None:
        budget = full
    else:
        budget = int(max(0.0, min(share * available - plan.total, full)))
    kept = kept_copy_bytes(n, ts, budget, diagonal=True)
    if kept:
        plan.add("K tiles kept (refinement)", kept)
    if not grid or values_fit(n, ts, budget, diagonal=True):
        return budget, (kept / full if full else 1.0), False
    diagonal = full - (kept_copy_bytes(n, ts, None) - 8 * n)  # diagonal tiles, 8 B an entry
    off = kept_copy_bytes(n, ts, budget, item_bytes=4) - 8 * n
    return budget, min(1.0, (diagonal + 2 * off) / full) if full else 1.0, True


def keep_share(opts: SolveOptions) -> float:
    """The share of the memory the plan is made within that mixed precision fills with
    kept tiles of K: :data:`KEEP_F64_SHARE` of what the device has, or all of a memory
    budget the caller set (less the pre-flight's headroom, :data:`kernelfit.memory.SAFETY`)."""
    return KEEP_F64_SHARE if opts.memory_budget is None else SAFETY


def plan_solve(n: int, d: int, m: int, opts: SolveOptions, *, device: str,
               available: Optional[int], check: bool = True, n_test: int = 0,
               backend=None, grid: bool = False) -> SolvePlan:
    """Plan a solve of validated ``opts``: the route, the precision, the memory.

    ``grid``: the inputs are stored as exact integers on the integer grid
    (:func:`kernelfit.grid.to_integer_grid`; CPU only), so K's products run at the float32
    GEMM rate and kept tiles take 4 bytes an entry: ``precision='auto'``'s time model costs
    them so (see :func:`expected_times`).

    ``opts.memory_budget``: the bytes the solve plans for in place of ``available`` (an
    :class:`~kernelfit.errors.InputError` where it is more than that): the plans must fit
    in it, and mixed precision keeps tiles of K for its refinement until they fill it,
    not only :data:`KEEP_F64_SHARE` of it (memory for time)."""
    budget = opts.memory_budget
    if budget is None:
        return _plan_solve(n, d, m, opts, device, available, check, n_test, backend, grid)
    if check and available is not None and budget > available:
        where = "GPU memory" if device == "gpu" else "memory"
        raise InputError(f"memory_budget of {fmt_bytes(budget)} is more than the "
                         f"{fmt_bytes(available)} of {where} available now; give at most "
                         f"that, or free memory", param="memory_budget",
                         memory_budget=int(budget), available_bytes=int(available))
    splan = _plan_solve(n, d, m, opts, device, budget, check, n_test, backend, grid)
    if available is not None:
        for p in (splan, splan.fallback, splan.alternative,
                  splan.alternative and splan.alternative.fallback):
            if p is not None and p.memory.available is not None:
                p.memory.machine_available = int(available)
    return splan


def _plan_solve(n, d, m, opts, device, available, check, n_test, backend, grid) -> SolvePlan:
    """:func:`plan_solve` within ``available`` bytes (the device's, or the budget). With an
    automatic tile size, a plan that does not fit is made again with tiles of half the rows
    (down to :data:`MIN_AUTO_TILE`: the buffers shrink with the tile's square, the rate
    hardly); a resumed out-of-core run plans with its checkpoint's tiles."""
    given = opts.tile_size or (resumed_facts(opts) or {}).get("tile_size")  # (fixed)
    first = given or default_tile_size(n, device)
    splan = _plan_at(first, n, d, m, opts, device, available, check, n_test, backend, grid)
    if given is not None:  # not the machine's rule: asked for, or the checkpoint's
        splan.choice["tiles"]["rule"] = given_tiles_rule(opts)
    if given is not None or not check or available is None:
        return splan
    ts = first
    while not splan.memory.fits() and ts > MIN_AUTO_TILE:
        ts = max(MIN_AUTO_TILE, ts // 2)
        splan = _plan_at(ts, n, d, m, opts, device, available, check, n_test, backend, grid)
    if ts != first:
        splan.choice["tiles"] = dict(splan.choice["tiles"], rule=(
            f"halved from {first} rows until the plan fits in {fmt_bytes(available)}"))
    return splan


def _plan_at(ts, n, d, m, opts, device, available, check, n_test, backend,
             grid) -> SolvePlan:
    """:func:`_plan_solve` with tiles of ``ts`` rows."""
    avail = available if check else None
    choice = {"tiles": tile_choice(n, ts, device)}
    if opts.solver != "cholesky":
        plan = _in_core(n, d, m, n_test, np.float64, ts, opts.solver, device, avail)
        return SolvePlan("in_core", opts.dtype, f"solver {opts.solver}", ts, plan,
                         choice=choice, n=n)
    if opts.scheduler or opts.distributed or opts.ooc_dir:
        return _beyond_plan(n, d, m, n_test, ts, opts, device, avail, choice)
    precision, reason = opts.precision, (
        f"asked for precision {opts.precision}" + (f" (or dtype {opts.precision})"
                                                  if opts.precision in ("float32", "float64")
                                                  else ""))
    if precision == "auto" and opts.fixed_precision():
        precision, reason = opts.fixed_precision(), "auto: dtype float32 asked for"
    elif precision == "auto":
        precision, reason = _auto(n, d, m, n_test, ts, opts, device, avail, backend, choice,
                                  grid and device == "cpu")
    if precision == "mixed":
        return _mixed_plan(n, d, m, n_test, reason, ts, opts, device, available, check, choice)
    splan = _in_core_plan(n, d, m, n_test, precision, reason, ts, opts, device, avail, check,
                          choice)
    times = choice.get("expected_time")
    if (opts.precision == "auto" and precision == "float64" and times
            and times.get("by_time") and times["mixed_best_s"] < times["float64_s"]):
        splan.alternative = _mixed_plan(n, d, m, n_test, "auto: mixed precision", ts, opts,
                                        device, available, check, choice)
    return splan


def _beyond_plan(n, d, m, n_test, ts, opts, device, avail, choice) -> SolvePlan:
    """What an out-of-core or Dask solve holds in this process's memory: tile buffers, the
    solve's vectors (the deflation's in mixed precision); out of core the panels it streams
    (K's tiles on disk); Dask K's tiles where its workers are this process's threads."""
    route = "dask" if (opts.scheduler or opts.distributed) else "ooc"
    precision, ck = opts.route_precision(), resumed_facts(opts)  # ck: a checkpoint resumed
    # what runs: auto continues a float64 checkpoint in float64 (solve_ooc's resumed64)
    runs = ck["precision"] if ck and precision == "mixed" else precision
    storage = np.dtype(ck["dtype"] if ck else "float64" if precision == "float64" else "float32")
    plan = plan_mixed(n, d, m, ts, device=device, available=avail)
    del plan.items["K tiles (float32)"]
    if runs != "mixed":  # float64 refines undeflated; float32 does neither (one pass)
        del plan.items["deflation (landmarks)"]
        plan.items[f"{'refinement' if runs == 'float64' else 'solve'} vectors"] = (
            plan.items.pop("refinement vectors"))
    if route == "ooc":
        plan.add("panels (a column of K's tiles and one of L's)",
                 2.0 * n * min(ts, n) * storage.itemsize)
    elif opts.distributed == "local":
        plan.add(f"K tiles ({storage.name}) on the local Dask workers",
                 TiledSymmetric.storage_bytes(n, ts, storage))
    plan = _add_predictions(plan, n_test, m)
    where = "on disk" if route == "ooc" else "on the Dask workers"
    if opts.precision != "auto":
        reason = f"{route}: asked for precision {opts.precision}"
    elif precision == "float32":
        reason = f"{route}: auto: dtype float32 asked for (float32 tiles, no refinement)"
    else:
        reason = (f"{route}: auto: mixed precision (float32 tiles {where}, half the bytes of "
                  "float64 to write and read, the solution refined to float64 accuracy)")
    return SolvePlan(route, precision, reason, ts, plan, tol=opts.tol, choice=choice, n=n)


def _mixed_plan(n, d, m, n_test, reason, ts, opts, device, available, check,
                choice) -> SolvePlan:
    """The mixed-precision plan; where auto chose it by time (``choice`` has the expected
    times), with the float64 in-core plan it may fall back to."""
    avail = available if check else None
    plan = _mixed_memory(n, d, m, n_test, ts, device, avail)
    budget, _, _ = _mixed_keep(n, ts, plan, available,
                               share=choice.get("keep_share", keep_share(opts)))
    tol = min(opts.tol, AUTO_TOL) if opts.precision == "auto" else opts.tol
    may_fall_back = "expected_time" in choice
    fallback = None
    if may_fall_back:  # auto chose mixed by time: the float64 plan it falls back to
        fallback = _in_core_plan(n, d, m, n_test, "float64", "auto: fallback to float64",
                                 ts, opts, device, avail, check, {})
    return SolvePlan("mixed", "mixed", reason, ts, plan, keep_budget=budget, tol=tol,
                     choice=choice, may_fall_back=may_fall_back, fallback=fallback, n=n)


def _in_core_plan(n, d, m, n_test, precision, reason, ts, opts, device, avail, check,
                  choice) -> SolvePlan:
    """The in-core Cholesky plan in ``precision`` (float64: with the residual's K copy)."""
    plan = _in_core(n, d, m, n_test, np.dtype(precision), ts, "cholesky", device, avail)
    budget = None
    if precision == "float64":
        budget, _ = _f64_keep(opts, n, ts, device, plan, check)
    return SolvePlan("in_core", precision, reason, ts, plan, keep_budget=budget,
                     choice=choice, n=n)


def _auto(n, d, m, n_test, ts, opts, device, avail, backend, choice, grid):
    """precision='auto': mixed when its plan fits and it is expected to be faster: its
    worst case (``WORST_PASSES``) less slow against a float64 factorization than that is
    against mixed precision's best case (``FEWEST_PASSES``)."""
    p64 = _in_core(n, d, m, n_test, np.float64, ts, "cholesky", device, avail)
    pm = _mixed_memory(n, d, m, n_test, ts, device, avail)
    where = "the available memory" if opts.memory_budget is None else "the memory budget"
    if not pm.fits():
        if p64.fits():
            return "float64", f"auto: the float64 plan fits in {where}, the mixed one does not"
        return "float64", "auto: neither float64 nor mixed fits (float64 pre-flight refuses)"
    if not p64.fits():
        return "mixed", (f"auto: the float64 plan ({p64.describe()}) does not fit in "
                         f"{where}, float32 storage + float64 refinement does")
    if backend is None:
        return "float64", "auto: both fit; no backend to measure rates on"
    if n ** 3 / 3.0 < MEASURE_MIN_RATIO * RATE_PROBE_FLOPS:
        return "float64", ("auto: both fit; the float64 factorization is too small for "
                           "mixed precision to pay for measuring the machine's rates")
    _, f64_kept = _f64_keep(opts, n, ts, device, p64, avail is not None)
    _, kept, exact = _mixed_keep(n, ts, pm, avail if avail is not None
                                 else opts.memory_budget or backend.free_memory(), grid,
                                 share=keep_share(opts))
    rates = gemm_rates(backend)
    times = expected_times(n, d, m, ts, rates, kept, f64_kept, grid=grid, kept_exact=exact)
    choice["expected_time"] = times
    if rates["float32"] <= rates["float64"]:
        # the factorization is where mixed precision saves; the model's other terms (a
        # recomputed float64 residual product against kept tiles) must not decide alone
        return "float64", (f"auto: float32 GEMM is not faster than float64 here "
                           f"({rates['float32'] / 1e9:.3g} against "
                           f"{rates['float64'] / 1e9:.3g} GFLOP/s): a float64 "
                           "factorization expected faster")
    times["by_time"] = True  # the two regrets below decide, not a rule
    t64, tm = times["float64_s"], times["mixed_s"]
    tb, tw = times["mixed_best_s"], times["mixed_worst_s"]
    span = (f"{tb:.3g}-{tw:.3g} s at {FEWEST_PASSES}-{WORST_PASSES} refinement passes of "
            f"{times['pass_s']:.3g} s")
    # the refinement's pass count is known only after the factorization: pick the precision
    # whose worst case is less slow against the other's best, tw / t64 < t64 / tb (the two
    # regrets), i.e. the geometric mean of mixed precision's extremes below float64's time
    if tb * tw < t64 * t64:
        return "mixed", (f"auto: mixed precision expected faster ({tm:.3g} s, {span}, "
                         f"against {t64:.3g} s for a float64 factorization)")
    wider = _wider_keep(n, d, m, n_test, ts, opts, device, avail, grid, p64, rates,
                        f64_kept, times)
    if wider is not None:
        share, wide = wider
        choice.update(expected_time=wide, keep_share=share)
        tm, tb, tw = wide["mixed_s"], wide["mixed_best_s"], wide["mixed_worst_s"]
        return "mixed", (
            f"auto: mixed precision expected faster ({tm:.3g} s, {tb:.3g}-{tw:.3g} s at "
            f"{FEWEST_PASSES}-{WORST_PASSES} refinement passes of {wide['pass_s']:.3g} s, "
            f"against {t64:.3g} s for a float64 factorization) when it keeps K's tiles within "
            f"the float64 plan's memory ({fmt_bytes(p64.total)}; within "
            f"{keep_share(opts):.0%} of the memory: {times['mixed_s']:.3g} s, passes of "
            f"{times['pass_s']:.3g} s)")
    return "float64", (f"auto: a float64 factorization expected faster ({t64:.3g} s against "
                       f"{tm:.3g} s mixed; {span})")


def _wider_keep(n, d, m, n_test, ts, opts, device, avail, grid, p64, rates, f64_kept,
                times):
    """Where mixed precision within :data:`KEEP_F64_SHARE` of the memory is not expected
    faster than float64 (its passes recompute most of K: Gabor features at n = 60,000,
    d = 3,969), the same mixed plan keeping K's tiles up to the memory the float64 plan
    needs (no more than the solve it replaces would take): ``(share, times)`` where that
    one is expected faster by the same rule, else None. Only where the float64 plan takes
    more than the share the kept tiles have already (a memory budget given is filled
    anyway: its share, SAFETY, is the most this one can be), and on the CPU, where its
    float64 preconditioner passes were measured (a GPU's few-column triangular solves may
    be slower than the model; unmeasured)."""
    if device != "cpu" or avail is None or avail <= 0:
        return None
    share = min(SAFETY, p64.total / avail)
    if share <= keep_share(opts):
        return None
    wide_plan = _mixed_memory(n, d, m, n_test, ts, device, avail)
    _, kept, exact = _mixed_keep(n, ts, wide_plan, avail, grid, share=share)
    if kept <= times["kept_fraction"]:
        return None
    wide = expected_times(n, d, m, ts, rates, kept, f64_kept, grid=grid, kept_exact=exact)
    wide["by_time"] = True
    if wide["mixed_best_s"] * wide["mixed_worst_s"] < wide["float64_s"] ** 2:
        return share, wide
    return None


def request_of(opts: SolveOptions, n: int, d: int, m: int, n_test: int = 0) -> dict:
    """The facts of a planned solve that a refusal carries (see :func:`plan_request`)."""
    placement = ("dask" if (opts.scheduler or opts.distributed)
                 else "disk" if opts.ooc_dir else "memory")
    req = {"n": int(n), "d": int(d), "n_outputs": int(m), "n_test": int(n_test),
           "dtype": opts.dtype, "precision": opts.precision, "solver": opts.solver,
           "tile_size": opts.tile_size, "device": opts.device, "placement": placement}
    ck = resumed_facts(opts)  # what a checkpoint resumed fixes: its n, tiles and dtype
    return dict(req, checkpoint=ck) if ck else req


def check(splan: SolvePlan, opts, n: int, d: int, m: int, n_test: int = 0) -> None:
    """Raise :class:`~kernelfit.errors.MemoryPlanError` (with the request) where it fails."""
    splan.memory.check(request=request_of(opts, n, d, m, n_test))


def plan_request(request: dict, available: Optional[int]) -> SolvePlan:
    """The plan the solve pre-flight makes for ``request``; a pure function (no rates are
    measured: whether a plan fits does not depend on the route auto would pick by time).

    ``request`` keys: ``n``, ``d``, ``n_outputs``, ``n_test`` (0), ``dtype`` ('float64'),
    ``precision`` ('auto'), ``solver`` ('cholesky'), ``device`` ('cpu'), ``tile_size``
    (None: automatic) and ``placement``: 'memory' (default), 'disk' (out of core: K's
    tiles on disk) or 'dask' (K's tiles on the workers). ``precision`` 'float64' or
    'float32' overrides ``dtype``. ``checkpoint``: a resumed one's (planned with its tiles).
    """
    precision = request.get("precision") or "auto"
    dtype = str(request.get("dtype") or "float64")
    if precision in ("float64", "float32"):
        dtype = precision
    placement = request.get("placement") or "memory"
    device, ck = request.get("device") or "cpu", request.get("checkpoint")
    opts = SolveOptions(solver=request.get("solver") or "cholesky", dtype=dtype,
                        precision=precision, tile_size=request.get("tile_size"),
                        device=device, residual=True,
                        ooc_dir=(ck or {}).get("folder", "planned") if placement == "disk"
                        else None, resume=bool(ck and placement == "disk"),
                        distributed="local" if placement == "dask" else None).validate()
    n = int(request["n"])
    return plan_solve(n, int(request.get("d", 0)), max(int(request.get("n_outputs", 1)), 1),
                      opts, device=device, available=available,
                      n_test=int(request.get("n_test", 0) or 0))


def would_fit(request: dict, available: Optional[int]) -> bool:
    """Whether ``request`` (see :func:`plan_request`) passes the memory pre-flight."""
    if int(request.get("n", 0)) < 1:
        return False
    return plan_request(request, available).memory.fits()


def max_n_that_fits(available: int, request: dict) -> int:
    """The largest n for which ``request`` fits in ``available`` bytes (0 when none does)."""
    return largest_n(lambda n: would_fit(dict(request, n=n), available))


def preflight_plan(cfg, n: int, d: int, n_classes: int, n_test: int, *,
                   reserve: int = 0, grid: bool = False) -> SolvePlan:
    """The run layer's memory pre-flight: the one plan of the solve, checked (raises
    :class:`~kernelfit.errors.MemoryPlanError` when it does not fit). ``cfg`` is a
    :class:`kernelfit.options.SolverOptions`; the solve runs this plan
    (``solve_exact(..., plan=)``). ``reserve``: host bytes the data will take before the
    solve runs (features not computed yet), not available to it. ``grid``: the solve's
    inputs will be stored on the integer grid (see :func:`plan_solve`)."""
    be = get_backend(cfg.device)
    opts = cfg.solve_options(residual=True)  # the tree's own translation ('auto': dtype None)
    opts.device = be.device  # the device resolved ('auto' -> 'cpu' or 'gpu')
    available = be.free_memory(reserve=reserve) if reserve else be.free_memory()
    splan = plan_solve(n, d, n_classes, opts, device=be.device, available=available,
                       n_test=n_test, backend=be, grid=grid)
    check(splan, opts, n, d, n_classes, n_test)
    return splan


def preflight(cfg, n: int, d: int, n_classes: int, n_test: int) -> dict:
    """The record of :func:`preflight_plan` (the memory plan as JSON)."""
    return preflight_plan(cfg, n, d, n_classes, n_test).record()
