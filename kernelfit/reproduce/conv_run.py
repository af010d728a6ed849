"""``cifar-random-conv``: test error against the number of random filters at full n.

One pass over the filters (:func:`kernelfit.features.random_conv_gram.accumulate_gram`) serves
the whole curve: filters are drawn in independent blocks, so the Gram after the first ``k``
filters is the Gram of a ``k``-filter map. At each curve point the accumulated matrices are
saved (a folder written under a temporary name, then renamed: the resume point of the pass,
the older one is then removed), solved exactly in place (:mod:`.conv_kernel`; its record is
stored at once), and read back from the saved copy before the pass goes on. So memory holds
one set of matrices and the disk at most two.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import DataError, MemoryPlanError
from ..memory import SAFETY, fmt_bytes
from .rows import SEED

__all__ = ["run_conv_curve", "run_conv_point", "conv_memory_plan"]

# bytes of one chunk of features (all images): at least the planned minimum, at most the
# maximum where memory allows (larger chunks rebuild the images' patch matrices fewer times
# and pass over the Gram matrices fewer times)
_CHUNK_MIN, _CHUNK_MAX = 1 << 30, 4 << 30
_N_CLASSES = 10  # CIFAR-10


def conv_memory_plan(n: int, m: int, available=None, chunk: int = _CHUNK_MIN):
    """The experiment's memory plan (:class:`~kernelfit.memory.MemoryPlan`): the solvers'
    plan of the Gram solve (:func:`kernelfit.solvers.plan.plan_gram_solve`: Gram and cross
    products in float32, tile buffers, refinement vectors) plus one chunk of features
    (``chunk`` bytes) and the images, checked with the planner's headroom."""
    from ..solvers.plan import plan_gram_solve
    from .conv_kernel import BLOCK

    plan = plan_gram_solve(n, _N_CLASSES, min(BLOCK, max(n, 1)), n_test=m,
                           available=available)
    plan.add("feature chunk", chunk)
    plan.add("images float32", 4 * 3072 * (n + m))
    return plan


# parameters a curve point does not depend on: the first k filters of any map are the same,
# and the rest only set how the work is cut or shown (accumulate_gram standardizes)
_NOT_RESULT = ("n_filters", "progress", "device", "batch_size", "chunk_size", "standardize")


def feature_params(fmap) -> dict:
    """The parameters of ``fmap`` that a curve point's features depend on (JSON types)."""
    return json.loads(json.dumps({k: v for k, v in sorted(fmap.get_params().items())
                                  if k not in _NOT_RESULT}))


# the feature parameters of points and resume points stored before they were recorded: the
# map's defaults of then (no per-patch normalization)
_UNRECORDED = {"dtype": "float32", "filter_init": "zca", "image_shape": [32, 32, 3],
               "n_patches": 20000, "patch_norm": None, "patch_size": 6, "pool": 2, "seed": 0,
               "threshold": 0.5, "zca_eps": 0.1}
#: parameters added to the map after points were stored, with the value that reproduces
#: those points (a record without the key was made with it)
_ADDED_LATER = {"power": 1.0}


def _made_with(rec: Optional[dict], params: dict) -> bool:
    """Whether a stored point or resume point ``rec`` was made with the feature ``params``."""
    if rec is None:
        return False
    made = rec.get("feature_params")
    made = dict(_UNRECORDED if made is None else made)
    for key, value in _ADDED_LATER.items():
        made.setdefault(key, value)
    return made == params


def _ckpt_dir(work: Path, k: int) -> Path:
    return work / f"gram-{k:06d}"


def _save_ckpt(work: Path, k: int, st: dict, params: Optional[dict] = None) -> None:
    final = _ckpt_dir(work, k)
    if not final.is_dir():
        tmp = work / f".tmp-gram-{k:06d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for key in ("G", "sq", "C", "sq_test"):
            np.save(tmp / f"{key}.npy", st[key])
        (tmp / "meta.json").write_text(json.dumps({"n_done": st["n_done"],
                                                   "stages": st["stages"],
                                                   "feature_params": params}))
        os.replace(tmp, final)
    for old in work.glob("gram-*"):  # resume points of fewer filters are no longer needed
        if old != final and int(old.name.split("-")[1]) < k:
            shutil.rmtree(old, ignore_errors=True)


def _load_ckpt(work: Path, k: int, into: Optional[dict] = None) -> dict:
    """The saved state of curve point ``k``; with ``into``, read into its arrays in row
    blocks (no second copy in memory)."""
    d = _ckpt_dir(work, k)
    meta = json.loads((d / "meta.json").read_text())
    if into is None:
        st = {key: np.load(d / f"{key}.npy") for key in ("G", "sq", "C", "sq_test")}
        st.update(meta)
        return st
    for key in ("G", "sq", "C", "sq_test"):
        _read_npy_into(d / f"{key}.npy", into[key])
    into.update(meta)
    return into


def _ckpt_meta(work: Path, k: int) -> Optional[dict]:
    try:
        return json.loads((_ckpt_dir(work, k) / "meta.json").read_text())
    except (OSError, ValueError):
        return None


def _read_npy_into(path: Path, dst: np.ndarray, rows: int = 2048) -> None:
    """Read the ``.npy`` file ``path`` into the C-ordered ``dst`` in row blocks, with plain
    reads: no memory map, whose file pages would count in the process's peak memory."""
    from numpy.lib import format as npy

    with open(path, "rb") as fh:
        version = npy.read_magic(fh)
        read_header = {(1, 0): npy.read_array_header_1_0,
                       (2, 0): npy.read_array_header_2_0}.get(version)
        if read_header is None:
            raise DataError(f"{path}: .npy format version {version} is not supported")
        shape, fortran, dtype = read_header(fh)
        if tuple(shape) != dst.shape or dtype != dst.dtype or fortran \
                or not dst.flags.c_contiguous:
            raise DataError(f"{path} holds a {shape} {dtype} array, expected {dst.shape} "
                            f"{dst.dtype}: the resume point does not match this run")
        for r0 in range(0, dst.shape[0] if dst.size else 0, rows):
            view = memoryview(dst[r0:r0 + rows]).cast("B")
            if fh.readinto(view) != view.nbytes:
                raise DataError(f"{path} is truncated: the resume point is incomplete")


def _latest_ckpt(work: Path) -> Optional[int]:
    ks = sorted(int(p.name.split("-")[1]) for p in work.glob("gram-*") if p.is_dir())
    return ks[-1] if ks else None


def _stage_rates(stages: dict, sgemm_gflops) -> dict:
    out = {}
    for name, s in stages.items():
        rate = s["flop"] / s["seconds"] / 1e9 if s["seconds"] > 0 else None
        out[name] = {"seconds": s["seconds"], "flop": s["flop"], "gflops_per_s": rate,
                     "fraction_of_sgemm_peak": (None if rate is None or not sgemm_gflops
                                                else rate / sgemm_gflops)}
    return out


def _solve_point(ctx, st: dict, ds, note, name, t_load, peaks, fmap, chunk: int) -> dict:
    """Solve the curve point held in ``st`` (its G and C are overwritten); its record,
    with the feature parameters of ``fmap``, the device that made the Gram sums and the
    bytes of one chunk of features."""
    from ..kernel_defaults import choose_bandwidth, exactness
    from ..memory import peak_rss_bytes
    from ..features.random_conv_gram import symmetrize_lower
    from .conv_kernel import gaussian_in_place, median_from_gram, predict_stored, solve_stored

    t0 = time.perf_counter()
    k = int(st["n_done"])
    G, sq = st["G"], st["sq"]
    n, m = G.shape[0], st["C"].shape[0]
    symmetrize_lower(G)
    h, rule = choose_bandwidth("gaussian", "random-conv", None, None,
                               median=median_from_gram(G, sq, seed=SEED))
    gaussian_in_place(G, sq, sq, h, same=True)
    classes = np.unique(ds.y_train)
    Y = (ds.y_train[:, None] == classes[None, :]).astype(np.float64)
    sol = solve_stored(G, Y)
    Kc = st["C"]
    gaussian_in_place(Kc, st["sq_test"], sq, h)
    pred = classes[np.argmax(predict_stored(Kc, sol["alpha"]), axis=1)]
    rec = {"n_train": n, "n_test": m, "n_filters": k,
           "features_dim": fmap.features_per_filter * k,
           "dataset": name, "data_note": note, "bandwidth": h,
           "bandwidth_rule": f"{rule['rule']} (kernelfit.kernel_defaults)",
           "test_error": float(np.mean(pred != ds.y_test)),
           "train_error": float(np.mean(classes[np.argmax(sol["K_alpha"], axis=1)]
                                        != ds.y_train)),
           "relative_residual": sol["relative_residual"],
           "residual_against": "the stored float32 kernel matrix (float64 products)",
           "rkhs_norm": sol["rkhs_norm"], "refinement_history": sol["refinement_history"],
           "stages": _stage_rates(st["stages"], peaks.get("sgemm_gflops")),
           "solve_seconds": time.perf_counter() - t0,
           "factor_seconds": sol["factor_seconds"], "refine_seconds": sol["refine_seconds"],
           "factor_gflops_per_s": sol["factor_gflops_per_s"], "load_seconds": t_load,
           "peak_memory_bytes": peak_rss_bytes(), "sgemm_peak": peaks,
           "feature_params": feature_params(fmap), "gram_device": fmap._backend.describe(),
           "feature_chunk_bytes": int(chunk)}
    rec["seconds"] = (sum(s["seconds"] for s in st["stages"].values()) + rec["solve_seconds"]
                      + t_load)
    rec.update(exactness(rec["relative_residual"]))
    return rec


def _refuse_unless_fits(n: int, m: int, what: str, way_out: str) -> int:
    """Raise :class:`MemoryPlanError` before any work when :func:`conv_memory_plan` at
    ``(n, m)`` does not fit in the memory free now; else return the bytes of one chunk of
    features: what the free memory leaves beyond the plan (headroom kept), between
    ``_CHUNK_MIN`` and ``_CHUNK_MAX``."""
    from .adapter import available_memory

    avail = available_memory("cpu")
    need = conv_memory_plan(n, m, avail)
    if not need.fits():
        raise MemoryPlanError(
            f"{what} at n = {n} needs about {need.describe()}, "
            f"{fmt_bytes(avail)} is free (kernelfit keeps {round((1 - SAFETY) * 100)}% "
            f"headroom); {way_out}",
            required_bytes=need.total, available_bytes=avail, items=dict(need.items))
    spare = int(SAFETY * avail) - int(need.total)
    return int(min(_CHUNK_MAX, _CHUNK_MIN + max(spare, 0)))


def _load_and_fit(fmap, name: str, data_dir, n: int, m: int):
    """Load CIFAR-10 (``n`` training, ``m`` test images, float32) and fit ``fmap`` on the
    training images, standardizing per filter chunk from then on; ``(dataset, seconds
    of the load)``."""
    from ..datasets import load_dataset

    t_load = time.perf_counter()
    ds = load_dataset(name, data_dir=data_dir, n_train=n, n_test=m, seed=SEED, download=False,
                      dtype=np.float32)
    t_load = time.perf_counter() - t_load
    fmap.fit(ds.X_train)
    fmap.standardize = True  # applied per filter chunk by accumulate_gram
    return ds, t_load


def run_conv_point(cifar: tuple, data_dir, sizes, n_filters: int, *,
                   map_params: Optional[dict] = None, progress=None,
                   device: str = "cpu") -> dict:
    """One random-conv point outside the curve: ``n_filters`` filters of a map with
    ``map_params`` (e.g. another pooling; the map's defaults otherwise) at ``sizes =
    (n, m)``, accumulated and solved exactly as a curve point is. ``cifar``: the
    ``(dataset name, data note)`` of :func:`kernelfit.reproduce.runner.locate_cifar`.
    Returns its record (with ``feature_params``); nothing is stored: the curve's points
    keep the map's defaults. Refuses before any work when the plan does not fit, like the
    curve. ``device``: where the features and their Gram sums are computed (the solve
    runs on the host)."""
    from ..bench.machine import measure_cpu_peaks
    from ..features.random_conv import RandomConvFeatures
    from ..features.random_conv_gram import accumulate_gram

    name, note = cifar
    n, m = sizes
    chunk = _refuse_unless_fits(n, m, "a random-conv point",
                                "use a smaller n or a machine with more memory")
    fmap = RandomConvFeatures((32, 32, 3), **dict(map_params or {}), n_filters=int(n_filters),
                              standardize=False, dtype="float32", seed=SEED, progress=progress,
                              device=device)
    ds, t_load = _load_and_fit(fmap, name, data_dir, n, m)
    p = measure_cpu_peaks(size=4096 if n >= 4096 else 1024, repeats=2)
    peaks = {"sgemm_gflops": p["sgemm_gflops"], "dgemm_gflops": p["dgemm_gflops"]}
    st = accumulate_gram(fmap, ds.X_train, ds.X_test, memory_budget=chunk, progress=progress)
    return _solve_point(None, st, ds, note, name, t_load, peaks, fmap, chunk)


def run_conv_curve(ctx, sizes, filters, full_curve: bool = True) -> dict:
    """The curve's points (``filters``, ascending) at ``sizes = (n, m)``: stored parts are
    reused, the rest computed in one pass. ``full_curve=False`` (a curve cut short) keeps
    the last resume point on disk, so a later run continues the pass from it."""
    from ..features.random_conv import RandomConvFeatures
    from ..features.random_conv_gram import accumulate_gram
    from .rows import row

    name, note = ctx.cifar()
    n, m = sizes
    filters = sorted(int(k) for k in filters)
    chunk = _refuse_unless_fits(n, m, "cifar-random-conv",
                                "run it on a machine with more memory or alone")
    work = ctx.work_dir("cifar-random-conv")
    for stale in work.glob(".tmp-gram-*"):  # a resume point killed while being written
        shutil.rmtree(stale, ignore_errors=True)
    disk = shutil.disk_usage(work).free
    ckpt_bytes = 4 * n * n + 4 * m * n  # G and C as .npy files
    if disk < 2 * ckpt_bytes:
        raise MemoryPlanError(f"cifar-random-conv needs about {fmt_bytes(2 * ckpt_bytes)} of "
                              f"disk under {work} for its resume points, {fmt_bytes(disk)} free",
                              required_bytes=2 * ckpt_bytes, available_bytes=disk)
    fmap = RandomConvFeatures((32, 32, 3), n_filters=max(filters), standardize=False,
                              dtype="float32", seed=SEED, progress=ctx.progress,
                              device=ctx.device)
    params = feature_params(fmap)
    parts = {}
    for k in filters:  # points made with other feature parameters are made again
        rec = ctx.part("cifar-random-conv", f"filters-{k}")
        parts[k] = rec if _made_with(rec, params) else None
    todo = [k for k in filters if parts[k] is None]
    if todo:
        ds, t_load = _load_and_fit(fmap, name, ctx.data_dir, n, m)
        peaks = ctx.sgemm_peak()

        def point(k, st):
            _save_ckpt(work, k, st, params)  # the resume point, before the solve overwrites G, C
            if parts.get(k) is None:
                rec = _solve_point(ctx, st, ds, note, name, t_load, peaks, fmap, chunk)
                ctx.store_part("cifar-random-conv", f"filters-{k}", rec)
                parts[k] = rec
            if k != filters[-1] and not st.get("host_copy"):  # the sums stay on a device
                _load_ckpt(work, k, into=st)

        start = None
        last = _latest_ckpt(work)
        if last is not None and not _made_with(_ckpt_meta(work, last), params):
            ctx.log(f"  cifar-random-conv: the resume point of {last:,} filters was made with "
                    "other feature parameters; starting the pass over")
            shutil.rmtree(_ckpt_dir(work, last), ignore_errors=True)
            last = None
        if last is not None and last <= filters[-1]:  # a prefix of this curve's pass
            start = _load_ckpt(work, last)
            if last in parts and parts[last] is None:  # killed before storing: solve now
                point(last, start)
        if start is None or start["n_done"] < filters[-1]:
            accumulate_gram(fmap, ds.X_train, ds.X_test, memory_budget=chunk,
                            stop_at=[k for k in filters if parts[k] is None],
                            start_from=start, progress=ctx.progress, on_checkpoint=point)
        del start
    if full_curve:
        shutil.rmtree(work, ignore_errors=True)  # every point is stored
    else:
        ctx.log(f"  cifar-random-conv: curve cut at {filters[-1]:,} filters; its resume point "
                f"stays in {work} so that the full curve continues from it")
    recs = [parts[k] for k in filters]
    top = recs[-1]
    s, g = params["patch_size"], params["pool"]
    why = (f"{s}x{s} {params['filter_init'].upper()} filters, {g}x{g} pooling, threshold "
           f"{params['threshold']:g}"
           + (", per-patch normalization" if params.get("patch_norm") is not None else "")
           + (f", pooled features to the power {params['power']:g}"
              if params.get("power", 1.0) != 1.0 else "")
           + "; the paper's exact preprocessing is not given")
    cut = "" if full_curve else f", curve cut at {top['n_filters']:,} (paper: 32,000)"
    rows = []
    if top["n_filters"] != 8000:
        rows.append(row(ctx, f"CIFAR-10 random-conv features, {top['n_filters']:,} filters, "
                             f"Gaussian{cut}", 0.17 if top["n_filters"] >= 32000 else None,
                        top, data_note=note, why=why))
    mid = [r for r in recs if r["n_filters"] == 8000]
    if mid:
        rows.append(row(ctx, "CIFAR-10 random-conv, 8,000 filters (issue target <= 25%)"
                             + ("" if rows else cut), None, mid[0], data_note=note,
                        why="no paper figure at 8,000 filters" + ("" if rows else "; " + why)))
    fig = ctx.plot_lines("cifar_random_conv_filters",
                         {"test error": ([r["n_filters"] for r in recs],
                                         [r["test_error"] for r in recs])},
                         xlabel="random filters", ylabel="test error", xlog=True,
                         title=f"CIFAR-10 ({'JPEG set' if 'JPEG' in (note or '') else 'official'}"
                               f"), n = {n}: test error against filters")
    return {"rows": rows, "figures": [fig],
            "scope": {} if full_curve else {"max_filters": int(filters[-1])},
            "details": {"curve": [{k: r[k] for k in ("n_filters", "test_error",
                                                     "relative_residual", "seconds",
                                                     "bandwidth", "stages")} for r in recs]}}
