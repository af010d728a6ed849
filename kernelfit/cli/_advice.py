"""From the library's error facts to one line of advice that names the command's flags.

The library raises errors that state a problem and carry its facts as data (the request
that did not fit and the bytes available, the diagnosed causes of a failed Cholesky, the
parameter at fault). This module is the only place that knows the flags. Every way out it
offers is checked before it is offered: a memory way out must pass the same pre-flight
(:func:`kernelfit.solvers.plan.would_fit`), a way out of a failed factorization must be one that
cannot fail the same way (the minimum-norm solvers, a ridge large enough for the precision,
each with the ``--tolerance`` that accepts its residual where the command checks exactness;
mixed precision is not offered there: its refinement of an ill-conditioned K need not
converge), and nothing already in use is offered again.
"""

from __future__ import annotations

import errno
import importlib.util
import math
import re
import shlex
from typing import List, Optional, Tuple

import numpy as np

from ..errors import (DownloadError, KernelfitError, MemoryPlanError,
                      NotPositiveDefiniteError)
from ..memory import fmt_bytes, largest_n
from ..options import SolverOptions
from ..solvers.plan import max_n_that_fits, would_fit

__all__ = ["FLAGS", "explain", "explain_os_error", "memory_ways_out", "not_pd_ways_out",
           "missing_data_message", "ridge_that_factors", "inexact_ways_out", "least_budget",
           "short_of_tol_note", "tolerance_that_accepts", "PSD_KERNELS"]

#: Python parameter -> command-line flag
FLAGS = {
    "ooc_dir": "--out-of-core", "save": "--save", "out": "--out", "levels": "--levels",
    "modes": "--mode", "n_train": "--n-train", "n_test": "--n-test",
    "bandwidth": "--bandwidth", "data_dir": "--data-dir", "cache_dir": "--feature-cache-dir",
    "resume": "--resume", "scheduler": "--scheduler", "distributed": "--distributed",
    "solver": "--solver", "dtype": "--dtype", "precision": "--precision", "tol": "--tol",
    "max_iter": "--max-iter", "ridge": "--ridge", "tile_size": "--tile-size", "seed": "--seed",
    "output": "--output", "input": "--input", "model": "--model", "kernel": "--kernel",
    "degree": "--degree", "gamma": "--gamma", "coef0": "--coef0", "device": "--device",
    "features": "--features", "dataset": "--dataset", "repeats": "--repeats",
    "prefix": "--prefix", "n": "--n", "budget": "--budget", "memory_budget": "--memory-budget",
    "timeout_s": "--timeout", "budget_s": "--budget", "sklearn_alpha": "--sklearn-alpha",
    "refinement": "--refine", "feature_cache": "--no-feature-cache",
}

#: kernels whose Gram matrix is positive semi-definite for every parameter kernelfit accepts
#: (the polynomial kernel only with gamma > 0 and coef0 >= 0)
PSD_KERNELS = ("gaussian", "laplacian", "linear", "normalized")


def _special(args) -> bool:
    """Whether the solve runs beyond memory (only the Cholesky solver is possible there)."""
    return bool(getattr(args, "ooc_dir", None) or getattr(args, "scheduler", None)
                or getattr(args, "distributed", None)
                or getattr(args, "precision", "auto") == "mixed")


def _ways(ways: List[str]) -> str:
    return ". Ways out: " + "; ".join(ways) + "." if ways else ""


def _problem(text: str) -> str:
    return text.rstrip().rstrip(".")


# ---------------------------------------------------------------- memory
def memory_ways_out(request: dict, available: int, *, special: bool = False,
                    given_dtype: Optional[str] = None,
                    dask_installed: Optional[bool] = None) -> List[Tuple[str, dict]]:
    """Ways out of a refused memory plan: ``(advice, request change)`` pairs, each of which
    passes :func:`would_fit` on ``available`` bytes. Nothing already in use is offered."""
    from ..solvers.tiles import TiledSymmetric, default_tile_size

    req = dict(request)
    n = int(req.get("n", 0))
    solver = req.get("solver") or "cholesky"
    precision = req.get("precision") or "auto"
    dtype = str(req.get("dtype") or "float64")
    storage = precision if precision in ("float64", "float32") else dtype
    out: List[Tuple[str, dict]] = []

    def offer(text: str, change: dict) -> None:
        if would_fit(dict(req, **change), available):
            out.append((text, change))

    if solver != "cholesky" and not special:
        offer("--solver cholesky (stores half of K, in tiles)", {"solver": "cholesky"})
    if solver == "cholesky" and storage == "float64" and precision != "mixed":
        # float32 alone: its residual is float32's, rarely exact (exit 6 without --tolerance)
        loose = "halves K, but its residual is float32's: add --tolerance R to accept it"
        if precision == "auto":
            offer(f"--dtype float32 ({loose})", {"dtype": "float32"})
        else:
            flags = "--precision float32" + (" --dtype float32" if given_dtype else "")
            offer(f"{flags} ({loose})", {"precision": "float32", "dtype": "float32"})
    in_memory = req.get("placement", "memory") == "memory"
    if solver == "cholesky" and precision != "mixed" and in_memory:
        drop = " in place of --dtype float64" if given_dtype == "float64" else ""
        offer(f"--precision mixed{drop} (float32 K, solution refined to float64 accuracy)",
              {"precision": "mixed", "dtype": "float32"})
    if n > 1:
        n_max = max_n_that_fits(available, req)
        if 1 <= n_max < n and would_fit(dict(req, n=n_max), available):
            # the minimum-norm solvers are one LAPACK call of order n^3 that an interruption
            # waits for (n = 5,000: 32 s on 2 Zen 3 cores): say so where that is long
            slow = (f" (--solver {solver} is one call of order n^3 that Ctrl-C waits for: "
                    f"about {n_max / 5000:.0f}^3 times its time at n = 5,000)"
                    if solver in ("eigh", "lstsq") and n_max >= 10_000 else "")
            out.append((f"--n-train {n_max} or less{slow}", {"n": n_max}))
    if solver == "cholesky" and in_memory:
        ooc_dtype = np.float64 if precision == "float64" else np.float32
        ts = req.get("tile_size") or default_tile_size(max(n, 1), req.get("device") or "cpu")
        disk = TiledSymmetric.storage_bytes(n, ts, ooc_dtype)
        offer(f"--out-of-core DIR (K's tiles on disk: about {fmt_bytes(disk)} free in DIR)",
              {"placement": "disk"})
        if dask_installed is None:
            dask_installed = importlib.util.find_spec("distributed") is not None
        if dask_installed:
            offer("--scheduler ADDRESS (K's tiles on a Dask cluster's workers)",
                  {"placement": "dask"})
    return out


def least_budget(request: dict, machine: int) -> Optional[Tuple[int, str]]:
    """The least memory budget with which ``request`` passes the pre-flight
    (:func:`would_fit`), as bytes and as the size to type: whole MiB below 1 GiB, else
    rounded up to 0.1 GiB; None where not even ``machine`` bytes (what is available) do.
    Found on the plans themselves, so where float64 would not fit the budget but mixed
    precision would, it is mixed precision's."""
    mib, gib = 1 << 20, 1 << 30
    if not would_fit(request, machine):
        return None
    below = largest_n(lambda k: not would_fit(request, k * mib), limit=machine // mib)
    size = (below + 1) * mib
    if size > machine:  # only all of it, to the byte, fits
        return machine, str(machine)
    tenths = math.ceil(size / gib * 10)
    if size >= gib and tenths * gib // 10 <= machine:
        return tenths * gib // 10, f"{tenths / 10:.1f}GiB"
    return size, f"{size // mib}MiB"


def _memory_message(exc: MemoryPlanError, args) -> str:
    msg = _problem(exc.message)
    req = exc.request
    if not req.get("n"):
        return msg + _ways(["free memory, or ask for less"])
    ways = _resume_ways(exc, req, args) if req.get("checkpoint") else None
    if ways:
        return msg + _ways(ways)
    ways = [text for text, _ in memory_ways_out(req, exc.available_bytes,
                                                special=_special(args),
                                                given_dtype=getattr(args, "dtype", None))]
    machine = exc.facts.get("machine_available_bytes")
    least = least_budget(req, machine) if exc.facts.get("memory_budget") and machine else None
    if least is not None:
        ways.insert(0, f"{FLAGS['memory_budget']} {least[1]} or more (up to the "
                       f"{fmt_bytes(machine)} available)")
    if not ways:
        ways = [f"no setting of this request fits in {fmt_bytes(exc.available_bytes)}: free "
                "memory or use a machine with more"]
        import os

        if os.environ.get("KERNELFIT_MEMORY_LIMIT"):
            ways.append("raise or unset KERNELFIT_MEMORY_LIMIT "
                        f"(now {os.environ['KERNELFIT_MEMORY_LIMIT']})")
    return msg + _ways(ways)


def _resume_ways(exc: MemoryPlanError, req: dict, args) -> List[str]:
    """Ways out of a refused plan of a run that resumes a checkpoint (``req['checkpoint']``,
    :func:`kernelfit.solvers.checkpoint_facts.checkpoint_facts`). It fixes n, the tile size
    and the precision: a memory budget planned with them keeps it; any other way out
    starts over in a new folder (the checkpoint stays), and says so."""
    ck, budget = req["checkpoint"], exc.facts.get("memory_budget")
    machine = exc.facts.get("machine_available_bytes")
    asked = req.get("precision") or "auto"
    if asked == "auto":  # auto resumes a float64 checkpoint; else mixed, or float32 by dtype
        asked = ("float64" if ck["dtype"] == "float64" else
                 "float32" if req.get("dtype") == "float32" else "mixed")
    prec = ({} if asked == ck["precision"] else
            {"precision": ck["precision"], "dtype": ck["dtype"]})
    keep = (least_budget(dict(req, n=ck["n"], tile_size=None, **prec), machine)
            if budget and machine else None)
    ways = []
    if keep is not None:  # (its n, tiles and precision: the fingerprint refuses others)
        n = f" with {FLAGS['n_train']} {ck['n']}" if ck["n"] != req["n"] else ""
        n += f" with {FLAGS['precision']} {ck['precision']}" if prec else ""
        n += (f" without {FLAGS['tile_size']}"
              if req.get("tile_size") not in (None, ck["tile_size"]) else "")
        ways.append(f"{FLAGS['memory_budget']} {keep[1]} or more{n} (up to the "
                    f"{fmt_bytes(machine)} available: the least for the checkpoint's "
                    f"{ck['n']} points in {ck['dtype']} tiles of {ck['tile_size']} rows)")
    fresh = {k: v for k, v in req.items() if k != "checkpoint"}
    least = least_budget(fresh, machine) if budget and machine else None
    over = [f"{FLAGS['memory_budget']} {least[1]} or more" if least[0] > budget else
            "the memory budget given fits it"] if least is not None and (
        keep is None or least[0] < keep[0]) else []
    if keep is None:
        over += [text for text, _ in memory_ways_out(
            fresh, exc.available_bytes, special=True, given_dtype=getattr(args, "dtype", None))]
    if over:
        ways.append(f"start over without {FLAGS['resume']}, in a new {FLAGS['ooc_dir']} "
                    f"folder (the checkpoint in {ck['folder']} stays): " + " or ".join(over))
    return ways


# ---------------------------------------------------------------- not positive definite
def ridge_that_factors(facts: dict) -> float:
    """A ridge with which the Cholesky of K + ridge I cannot break down in ``dtype``.

    For a positive semi-definite K, a Cholesky succeeds when the smallest eigenvalue
    exceeds about n u max_i K_ii (u the unit roundoff); this takes a hundredfold margin,
    and at least ten times a ridge already in use. Rounded up to one significant digit.
    """
    dtype = np.dtype(facts.get("dtype") or "float64")
    if dtype.kind != "f":
        dtype = np.dtype(np.float32)
    u = float(np.finfo(dtype).eps)
    n = max(int(facts.get("n") or 1), 1)
    scale = float(facts.get("max_diagonal") or facts.get("mean_diagonal") or 1.0)
    if not (math.isfinite(scale) and scale > 0):
        scale = 1.0
    r = max(100.0 * n * u * scale, 10.0 * float(facts.get("ridge") or 0.0))
    exp = math.floor(math.log10(r))
    return math.ceil(r / 10 ** exp) * 10 ** exp


def not_pd_ways_out(facts: dict, args, available: Optional[int] = None) -> List[str]:
    """Ways out of a failed Cholesky, each one that cannot fail the same check."""
    ways: List[str] = []
    special = _special(args)
    kernel = facts.get("kernel") or getattr(args, "kernel", None)
    n, d = facts.get("n"), facts.get("d")
    m = facts.get("n_outputs") or 1
    causes = facts.get("causes") or []
    solver = getattr(args, "solver", "cholesky")
    # `kernelfit solve` refuses an inexact solve unless --tolerance accepts its residual; the
    # minimum-norm and ridge solutions have a relative residual of at most 1
    tol = getattr(args, "tolerance", 1.0) if hasattr(args, "tolerance") else 1.0
    accept = "" if tol is not None and tol >= 1 else " --tolerance 1"
    if not special and n:
        req = {"n": n, "d": d or 0, "n_outputs": m, "n_test": 0, "solver": "eigh",
               "device": getattr(args, "device", "cpu")}
        if available is None or would_fit(req, available):
            ways.append(f"--solver eigh{accept} (the explicit minimum-norm solution, or "
                        "lstsq" + (", which need not interpolate: --tolerance 1 accepts its "
                                   "residual)" if accept else ")"))
    gamma, coef0 = (getattr(args, key, None) for key in ("gamma", "coef0"))
    psd = kernel in PSD_KERNELS or (kernel == "polynomial"
                                    and (gamma is None or float(gamma) > 0)
                                    and (coef0 is None or float(coef0) >= 0))
    if psd and solver == "cholesky":
        ways.append(f"--ridge {ridge_that_factors(facts):g}{accept} (a regularized solve: no "
                    "longer exact interpolation)")
    if causes == ["duplicates"] and facts.get("n_duplicates"):
        ways.append(f"remove the {facts['n_duplicates']} duplicate training point(s)" + (
            f" (keep one label per point: {facts['n_conflicting']} carry another label than "
            "their copy)" if facts.get("n_conflicting") else ""))
    return ways


def _not_pd_message(exc: NotPositiveDefiniteError, args) -> str:
    facts = exc.facts
    problem = _problem(facts.get("problem") or exc.message)
    available = None
    try:
        from ..backend import get_backend

        available = get_backend(getattr(args, "device", "cpu")).free_memory()
    except KernelfitError:
        available = None
    ways = not_pd_ways_out(facts, args, available)
    return problem + _ways(ways or ["check the kernel and its parameters"])


# ---------------------------------------------------------------- not exact
def tolerance_that_accepts(residual: Optional[float]) -> Optional[float]:
    """A ``--tolerance`` value that accepts ``residual``: rounded up to two digits."""
    if residual is None or not math.isfinite(residual) or residual <= 0:
        return None
    step = 10.0 ** (math.floor(math.log10(residual)) - 1)
    return float(f"{math.ceil(residual / step) * step:.1e}")


def _float64_fits(rec: dict, args) -> bool:
    """Whether the same solve factored in float64 passes the memory pre-flight (within the
    memory budget, where one was given)."""
    return _fits(rec, args, "float64") == ""


def _fits(rec: dict, args, precision: str) -> Optional[str]:
    """Whether the same solve in ``precision`` passes the memory pre-flight: ``""`` where
    it fits as asked, ``" --memory-budget SIZE"`` where it fits only a larger memory budget
    than the one given, None where it does not fit."""
    n = int(rec.get("n_train") or 0)
    req = {"n": n, "d": int(rec.get("n_features") or 0),
           "n_outputs": int(rec.get("n_classes") or 1),
           "n_test": int(rec.get("n_test") or 0), "precision": precision,
           "dtype": "float32" if precision == "mixed" else precision,
           "solver": "cholesky", "device": rec.get("device") or getattr(args, "device", "cpu"),
           "tile_size": getattr(args, "tile_size", None),
           "placement": ("dask" if getattr(args, "scheduler", None)
                         or getattr(args, "distributed", None)
                         else "disk" if getattr(args, "ooc_dir", None) else "memory")}
    try:
        from ..backend import get_backend

        machine = get_backend(req["device"]).free_memory()
        budget = getattr(args, "memory_budget", None)
        if would_fit(req, min(budget, machine) if budget else machine):
            return ""
        least = least_budget(req, machine) if budget else None
        return None if least is None else f" {FLAGS['memory_budget']} {least[1]}"
    except KernelfitError:
        return None


#: the way out where no residual is finite (nothing accepts or refines a NaN)
NO_FINITE_RESIDUAL = ("check the inputs: values so large or so small that K or the "
                      "coefficients overflow give no finite residual; rescale them")


def inexact_ways_out(recs, args, *, bandwidth_given: bool) -> List[str]:
    """Ways out of solves that are not exact (records with ``exact`` false and the facts of
    :func:`kernelfit.kernel_defaults.exactness`, and ``n_train``, ``n_features``,
    ``n_classes``, ``n_test``, ``device`` for the memory check), in the order offered,
    without repeats.

    A refinement target ``tol`` above the threshold gets a tighter ``--tol``; a mixed
    refinement that did not reach its target gets ``--precision float64`` (when it fits),
    never a ``--tol`` at or above the one in use; a float32 factor gets mixed precision with
    a ``--tol`` below the threshold; the last way out is the ``--tolerance`` that accepts
    the largest residual.
    """
    from ..kernel_defaults import EXACT_RESIDUAL

    recs = [r for r in recs if r.get("exact") is False]
    ways: List[str] = []

    def add(text: str) -> None:
        if text not in ways:
            ways.append(text)

    tol = getattr(args, "tol", None)
    tol = SolverOptions.tol if tol is None else tol  # not typed: the default mixed takes
    target = SolverOptions.tol if tol > EXACT_RESIDUAL else tol
    for rec in recs:
        cause = rec.get("cause")
        if (cause == "bandwidth" and bandwidth_given
                and getattr(args, "bandwidth", None) != "median"):
            # (not --bandwidth median: wider than the default rule's 0.75 x the median for
            # arrays and features, it failed again on iris where leaving it out worked)
            add("leave out --bandwidth (the default, chosen for the features and the data)")
        if cause == "conflicting_labels":
            add(f"remove the {rec['n_conflicting']} training point(s) that repeat others with "
                "another label (one label per point)")
        elif cause == "low_rank":  # no precision or solver helps a K singular by construction
            add("a kernel whose K has full rank (--kernel gaussian), or --ridge R > 0 (a "
                "regularized solve, not an interpolation)")
        elif cause == "max_iter":
            most = int(rec.get("refinement_max_iter") or 1)
            add(f"--max-iter {max(30, 4 * most)} (the refinement ran out of steps at "
                f"--max-iter {most}, its residual still falling)")
        elif cause == "tol":
            given = rec.get("refinement_tol", tol)
            # a tighter target needs the steps to reach it: a small --max-iter goes too
            most = getattr(args, "max_iter", None)
            steps = f" --max-iter {max(30, 4 * most)}" if most is not None and most < 30 else ""
            add(f"--tol {target:g}{steps} (the refinement stops at --tol, and --tol {given:g} "
                f"is above the {EXACT_RESIDUAL:.0e} that exact needs)")
        elif rec.get("refinement_converged") is False:
            if _float64_fits(rec, args):
                given = rec.get("refinement_tol", tol)
                add(f"--precision float64 (a float64 factorization: the refinement from the "
                    f"float32 factor did not reach --tol {given:g} on this K)")
        # no refinement of the float32 factor (with a ridge no precision interpolates:
        # refining cannot help)
        if rec.get("precision") == "float32" and cause != "ridge":
            more = _fits(rec, args, "mixed")
            if more is not None:
                add("--precision mixed" + (f" --tol {target:g}" if target != tol else "")
                    + more + f" (refines the solution to a relative residual of {target:g})")
    worst = max((r.get("relative_residual") for r in recs
                 if r.get("relative_residual") is not None
                 and math.isfinite(r["relative_residual"])), default=None)
    accept = tolerance_that_accepts(worst)
    if accept is not None:
        add(f"--tolerance {accept:.1e} to accept this residual"
            if len(recs) == 1 else f"--tolerance {accept:.1e} to accept these residuals")
    return ways


def short_of_tol_note(recs, args) -> Optional[str]:
    """For exact mixed-precision solves whose refinement stopped above ``--tol``: the way
    on (a float64 factorization, when it fits; never a looser ``--tol``), else None."""
    def above(r):
        return float(r.get("relative_residual") or 0.0) > float(r.get("solve_tol") or math.inf)

    mixed = [r for r in recs if r.get("exact") and r.get("precision") == "mixed"]
    short = [r for r in mixed if r.get("converged") is False]
    # out of core and on Dask a float64 factor is refined too, and may stop short the same
    stuck64 = [r for r in recs if r.get("exact") and r.get("precision") == "float64"
               and r.get("converged") is False]
    if stuck64 and not short:
        short = stuck64
    bounded = [r for r in mixed if r.get("converged") and above(r) and r.get("float64_floor")]
    typed = getattr(args, "tol", None)
    if typed is None and hasattr(args, "tol"):  # --tol left at its default
        typed = SolverOptions.tol
    if bounded and typed is not None:  # met the --tol asked for (auto's own target is
        # 1e-12 below it): nothing to say (the design card's command said "above --tol 1e-12")
        bounded = [r for r in bounded if float(r["relative_residual"]) > float(typed)]
    if bounded and not short:  # auto counts a stop within float64's own bound as converged
        worst = max(float(r["relative_residual"]) for r in bounded)
        return (f"the refinement stopped at a relative residual of {worst:.1e}, above --tol "
                f"{float(bounded[0]['solve_tol']):g} (still exact), within the backward-error "
                f"bound of a float64 solve ({max(r['float64_floor'] for r in bounded):.1e}, "
                "u trace(K) |alpha| / |Y|), which --precision auto counts as converged")
    if not short:
        return None
    tol = short[0].get("solve_tol", getattr(args, "tol", None) or SolverOptions.tol)
    worst = max(float(r.get("relative_residual") or 0.0) for r in short)
    most = short[0].get("solve_max_iter")
    tracked = short[0].get("tracked_residual")
    if (most is not None and short[0].get("solve_iterations", 0) >= most
            and not short[0].get("solve_note_stalled")
            and not (tracked is not None and tol is not None and tracked <= tol)):
        # out of steps, still falling (not where the steps' own residual had reached tol:
        # more steps would stop at the same place)
        return (f"the refinement stopped at a relative residual of {worst:.1e}, above --tol "
                f"{tol:g} (still exact), when it ran out of steps: --max-iter "
                f"{max(30, 4 * int(most))} lets it go on")
    if short[0].get("precision") == "float64":
        return (f"the refinement of the float64 factor stopped at a relative residual of "
                f"{worst:.1e}, above --tol {tol:g} (still exact): it stopped decreasing "
                "there, as far as float64 goes on this K")
    floors = [r.get("float64_floor") for r in short]
    if all(f is not None and float(r.get("relative_residual") or 0.0) <= float(f)
           for r, f in zip(short, floors)):
        # stalled where float64 arithmetic stalls too (MNIST, h = 60, n = 3,000: mixed
        # 8.9e-10, a float64 factorization 1.0e-9): float64 is no way on
        return (f"the refinement stopped at a relative residual of {worst:.1e}, above --tol "
                f"{tol:g} (still exact), within the backward-error bound of a float64 solve "
                f"({max(floors):.1e}, u trace(K) |alpha| / |Y|): --precision float64 is not "
                "expected to get lower on this K")
    beyond = bool(short[0].get("out_of_core") or short[0].get("distributed"))
    if not beyond and not _float64_fits(short[0], args):
        return None
    return (f"the refinement stopped at a relative residual of {worst:.1e}, above --tol "
            f"{tol:g} (still exact); --precision float64 ("
            + ("a float64 factor, refined here too" if beyond
               else "a float64 factorization; it takes no --tol")
            + ") may do better on this K")


# ---------------------------------------------------------------- the rest
def missing_data_message(facts: dict, fallback: str, fetch: str = "") -> str:
    """The command line's one line for data files that are missing (a
    :class:`~kernelfit.errors.DownloadError`'s facts: ``missing``, ``directory``,
    ``dataset``, ``reason``), naming the flag; ``fallback`` where the facts do not say.
    ``fetch``, when given, is the first way out (a command that fetches them); files found in
    the data folder itself (``found_in``): ``--data-dir`` its parent first, and no fetch."""
    missing, directory = facts.get("missing"), facts.get("directory")
    if not missing or not directory:
        return fallback
    dataset = facts.get("dataset") or "the dataset"
    parent = facts.get("parent_data_dir")
    if parent and facts.get("found_in"):  # the data folder given is the dataset's own
        return (f"{dataset}: its files are in {facts['found_in']} itself, not in {directory} "
                f"(the data folder is the one holding {dataset}/). Ways out: --data-dir "
                f"{shlex.quote(parent)} (or $KERNELFIT_DATA={shlex.quote(parent)}), or move "
                f"the files into {directory}")
    reason = f" ({facts['reason']})" if facts.get("reason") else ""
    jpeg = ""
    if dataset == "cifar10":
        from ..datasets.cifar import jpeg_set_beside

        found = jpeg_set_beside(directory)
        if found is not None:
            jpeg = f"; or the JPEG re-encoding found beside them: --dataset imagefolder:{found}"
    first = f"{fetch}, or " if fetch else ""
    return (f"{dataset}: missing {', '.join(missing)} in {directory}{reason}. Ways "
            f"out: {first}put the files in {directory}, or point --data-dir (or "
            f"$KERNELFIT_DATA) at a folder holding {dataset}/ with them{jpeg}")


def explain(exc: KernelfitError, args=None) -> str:
    """The one-line message of ``exc`` for the command line: the problem and a way out."""
    if isinstance(exc, MemoryPlanError):
        return _memory_message(exc, args)
    if isinstance(exc, NotPositiveDefiniteError):
        return _not_pd_message(exc, args)
    if isinstance(exc, DownloadError):
        return missing_data_message(exc.facts, exc.message)
    msg = exc.message
    if msg.startswith("y has only one class"):  # the command line classifies only
        return (msg.split(";")[0].replace("y has", "the training labels have", 1)
                + "; give a dataset (or --n-train) whose training split has two or more "
                  "classes")
    param = exc.facts.get("param")
    flag = FLAGS.get(param) if param else None
    if param == "dataset" and getattr(args, "command", None) == "datasets":
        flag = None  # there the dataset is the positional NAME, not a flag
    other = exc.facts.get("conflicts_with")
    if flag and other == "precision" and param == "dtype":
        p = exc.facts.get("precision")
        alone = ("factors K in float32 and refines the solution in float64" if p == "mixed"
                 else f"stores K in {p}")
        return (f"{flag} {exc.facts.get('dtype')} contradicts {FLAGS[other]} {p}; give one of "
                f"them ({FLAGS[other]} {p} alone {alone})")
    if flag and exc.facts.get("not_with_precision"):
        p = exc.facts["not_with_precision"]
        via = exc.facts.get("via_dtype")
        asked = f"--dtype {p}" if via else f"--precision {p}"
        instead = " in place of --dtype float64" if via and p == "float64" else ""
        return (f"{flag} does not apply with {asked}, which factors K once and does not "
                f"refine; leave {flag} out, or use --precision mixed{instead} (or auto"
                f"{' without --dtype' if via else ''}, which may choose it)")
    if flag and other in FLAGS and exc.facts.get("why"):
        return (f"{flag} and {FLAGS[other]} cannot be combined: {exc.facts['why']}; give one "
                "of them")
    if flag and msg.startswith(f"{param} "):
        msg = flag + msg[len(param):]
    elif flag and not msg.startswith(flag):
        msg = f"{flag}: {msg}"
    features = getattr(args, "features", None)
    if features and features != "raw":  # the map's own parameter names, as its flags
        import re

        from ._features import feature_flags

        for pname, fl in sorted(feature_flags(features).items(), key=lambda kv: -len(kv[0])):
            msg = re.sub(rf"(?<![\w-]){re.escape(pname)}(=| must| is)",
                         lambda m, fl=fl: fl + (" " if m.group(1) == "=" else m.group(1)), msg)
        msg = msg.replace("pass image_shape=(H, W) or (H, W, C)", "store an image_shape "
                          "array (H, W) or (H, W, C) in the .npz")
    return flags_for_names(msg)


def flags_for_names(msg: str) -> str:
    """A library message's option names as the command line's flags: ``name='value'`` and
    ``name=value`` as ``--flag value``, ``name=True`` as ``--flag``, ``(name)`` as
    ``(--flag)``."""
    import re

    names = "|".join(sorted(FLAGS, key=len, reverse=True))

    def one(m):
        flag, value = FLAGS[m.group(1)], m.group(3)
        return flag if value == "True" else f"{flag} {value}"

    msg = re.sub(rf"\b({names})=(['\"]?)([^'\"\s,;)]+)\2", one, msg)
    return re.sub(rf"\(({names})\)", lambda m: f"({FLAGS[m.group(1)]})", msg)


#: the text of a write cut short (NumPy's '20000 requested and 7152 written' carries no
#: errno), or of a full disk said in words
_SHORT_WRITE = r"\d+ requested and \d+ written|short write"
_FULL_WORDS = r"no space left|disk full|disk quota exceeded"


def _os_error_text(exc: OSError) -> str:
    """What ``exc`` says: its ``strerror``, else its own words (``str(exc)`` would show
    ``[Errno None] None: 'file'`` once a file name is attached), else its class's name."""
    if exc.strerror:
        return str(exc.strerror)
    said = "; ".join(str(a) for a in exc.args if str(a).strip())
    return said or exc.__class__.__name__


def explain_os_error(exc: OSError) -> str:
    """One line for an error of the file system (permission, disk full, missing file): the
    file when known, the error's own text, and the way out that fits it."""
    what = _os_error_text(exc)
    where = f" {exc.filename}" if exc.filename else ""
    if exc.filename2:
        where += f" -> {exc.filename2}"
    short = exc.errno is None and re.search(_SHORT_WRITE, what, re.I)
    if short or exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)) or (
            exc.errno is None and re.search(_FULL_WORDS, what, re.I)):
        if short:
            what += " (a short write: the disk is probably full)"
        return (f"cannot write{where}: {what}. Way out: free disk space or choose a folder "
                "on another disk")
    hint = {
        errno.EACCES: "choose a folder you can write to, or fix its permissions",
        errno.EPERM: "choose a folder you can write to, or fix its permissions",
        errno.EROFS: "choose a folder on a writable file system",
        errno.EFBIG: "choose a folder on a file system that takes larger files",
        errno.ENOENT: "check the path",
        errno.EISDIR: "give a file name, not a folder",
        errno.ENOTDIR: "check the path: a part of it is a file, not a folder",
    }.get(exc.errno, "check the path and its permissions")
    return f"cannot access{where}: {what}. Way out: {hint}"
