"""A whole benchmark run: kernelfit (CPU, GPU) and its peers at growing n, side by side.

:func:`run_bench` describes the machine, measures its GEMM peaks (in a child process),
then for each n (ascending) runs the implementations alternately, one child
(:func:`kernelfit.bench.runner.run_child`) per run, ``repeats`` rounds (kernelfit,
scikit-learn, scipy, kernelfit, ...), so that a slow spell of a shared machine falls on
all of them alike; medians are reported. Two checks skip an implementation at n with the
reason instead of starting it:

- memory pre-flight: kernelfit's own plan, a peer's dense n x n needs, against the memory
  available now; an implementation that does not fit at n is not tried at larger n either;
- time budget: the run's wall time so far plus the projected time of this run (the
  previous n's timed work scaled by (n / n_prev)^3, plus its fixed costs: process start,
  imports, data, a GPU's warm-up) must stay within ``budget_s``.

An implementation that timed out or ran out of memory is not tried at larger n; one that
crashed is (crashes are quick and size dependent). Finally the factorization times are
fitted by a power law and by c n^3 (:func:`fit_power_law`) to predict the time at the
largest n that fits in memory.
"""

from __future__ import annotations

import datetime as _dt
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ..errors import InputError
from ..kernel_defaults import exactness
from .runner import PEERS, auto_plan, dense_bytes_needed, peer_unavailable_reason, \
    run_child

__all__ = ["BenchConfig", "parse_peers", "parse_devices", "fit_power_law", "run_bench",
           "SCHEMA", "largest_fitting_n", "STAGES", "stage_flops", "limit_seconds",
           "stage_dtypes", "stage_rates"]

SCHEMA = "kernelfit-bench/1"
#: stages whose median times a record reports
STAGES = ("gram", "factor", "solve", "residual", "predict", "fit", "total")
DEFAULT_N = (5000, 10000, 20000)
#: stages whose flop counts give an achieved rate against the measured GEMM peak
RATED_STAGES = ("gram", "factor", "predict")


def parse_peers(text) -> tuple:
    """``'sklearn,scipy'`` -> ('sklearn', 'scipy'); ``'none'`` or '' -> (). Unknown names
    raise :class:`InputError` (before anything runs)."""
    if text is None:
        return PEERS
    items = text if isinstance(text, (list, tuple)) else str(text).split(",")
    names = [str(t).strip().lower() for t in items if str(t).strip()]
    if names in (["none"], []):
        return ()
    aliases = {"scikit-learn": "sklearn", "kernelridge": "sklearn"}
    names = [aliases.get(n, n) for n in names]
    bad = [n for n in names if n not in PEERS]
    if bad:
        raise InputError(f"unknown peer(s) {', '.join(map(repr, bad))}; known peers: "
                         f"{', '.join(PEERS)} (or 'none')")
    return tuple(dict.fromkeys(names))


def parse_devices(text: str) -> tuple:
    """``cpu`` / ``gpu`` / ``all`` -> the kernelfit devices to measure."""
    if text == "all":
        return ("cpu", "gpu")
    if text in ("cpu", "gpu"):
        return (text,)
    raise InputError(f"device must be cpu, gpu or all, got {text!r}")


@dataclass
class BenchConfig:
    """What a benchmark run measures (the defaults: n up to 20,000, CPU and GPU, both peers,
    three repeats; ``timeout_s`` per run, and sizes projected past ``budget_s`` skipped)."""

    n_list: Sequence[int] = DEFAULT_N
    kernel: str = "gaussian"
    bandwidth: float = 5.0
    degree: int = 4
    gamma: float = 1.0
    coef0: float = 1.0
    dtype: str = "float64"
    devices: Sequence[str] = ("cpu", "gpu")
    peers: Sequence[str] = PEERS
    repeats: int = 3
    peer_repeats: int = 3
    timeout_s: float = 600.0
    budget_s: float = 600.0
    dataset: str = "random"
    data_dir: Optional[str] = None
    d: int = 784
    n_test: int = 1000
    seed: int = 0
    tile_size: Optional[int] = None
    sklearn_alpha: float = 1e-10
    measure_peaks: bool = True
    peak_size: int = 4096
    peak_repeats: int = 3
    peer_env: Dict[str, str] = field(default_factory=dict)
    memory_guard: bool = True

    def run_options(self, n: int, device: str = "cpu"):
        """The :class:`~kernelfit.options.RunOptions` of kernelfit's run at ``n``."""
        from ..options import RunOptions

        flat = {k: v for k, v in asdict(self).items() if k in RunOptions.flat_names()}
        if flat["dtype"] == "float64":  # bench's float64: kernelfit's default, --precision
            flat["dtype"] = None        # auto (a dtype named fixes the factor's precision)
        return RunOptions.from_flat(**flat, n_train=int(n), device=device)

    def validate(self) -> "BenchConfig":
        ns = [int(n) for n in self.n_list]
        if not ns or any(n < 2 for n in ns):
            raise InputError(f"every n must be an integer of at least 2, got {list(self.n_list)}")
        self.n_list = sorted(set(ns))
        if self.n_test < 0 or self.d < 1:
            raise InputError("n_test must be >= 0 and d >= 1")
        self.run_options(ns[0])  # kernel, dtype, tile size: the options tree's checks
        self.devices = tuple(self.devices)
        for dev in self.devices:
            if dev not in ("cpu", "gpu"):
                raise InputError(f"unknown device {dev!r}")
        self.peers = parse_peers(list(self.peers))
        if self.repeats < 1 or self.peer_repeats < 1:
            raise InputError("repeats must be at least 1")
        if not self.timeout_s > 0:
            raise InputError(f"timeout_s must be a positive number of seconds, got "
                             f"{self.timeout_s!r}", param="timeout_s")
        if not self.budget_s >= 0:
            raise InputError(f"budget_s must be seconds >= 0 (0: no budget), got "
                             f"{self.budget_s!r}", param="budget_s")
        if not self.sklearn_alpha >= 0:
            raise InputError(f"sklearn_alpha must be >= 0 (scikit-learn's KernelRidge alpha), "
                             f"got {self.sklearn_alpha!r}", param="sklearn_alpha")
        return self

    def implementations(self) -> List[dict]:
        """The (label, impl, device) rows of the run, kernelfit first."""
        rows = [{"label": f"kernelfit-{dev}", "impl": "kernelfit", "device": dev}
                for dev in self.devices]
        rows += [{"label": p, "impl": p, "device": "cpu"} for p in self.peers]
        return rows


# ---------------------------------------------------------------- n^3 fit
def fit_power_law(ns: Sequence[float], ts: Sequence[float]) -> dict:
    """Fit t = c n^p (least squares on log t vs log n) and t = c3 n^3 (least squares on t).

    Returns ``exponent``, ``coef`` (of the power law; None with fewer than two distinct n),
    ``cubic_coef`` and ``points``. Non-positive or missing times are ignored.
    """
    pts = [(float(n), float(t)) for n, t in zip(ns, ts)
           if t is not None and n and t > 0 and math.isfinite(t)]
    out = {"points": len(pts), "exponent": None, "coef": None, "cubic_coef": None}
    if not pts:
        return out
    n = np.array([p[0] for p in pts])
    t = np.array([p[1] for p in pts])
    out["cubic_coef"] = float(np.sum(t * n ** 3) / np.sum(n ** 6))
    if len(set(n.tolist())) >= 2:
        slope, intercept = np.polyfit(np.log(n), np.log(t), 1)
        out["exponent"] = float(slope)
        out["coef"] = float(math.exp(intercept))
    return out


def predict_time(fit: dict, n: float, cubic: bool = False) -> Optional[float]:
    """The time a :func:`fit_power_law` fit predicts at n (the c n^3 fit when ``cubic``)."""
    if cubic or fit.get("exponent") is None:
        c = fit.get("cubic_coef")
        return None if c is None else float(c * float(n) ** 3)
    return float(fit["coef"] * float(n) ** fit["exponent"])


def largest_fitting_n(impl: str, available: int, *, d: int, n_test: int,
                      dtype="float64", device: str = "cpu",
                      auto: Optional[bool] = None, tile_size: Optional[int] = None) -> int:
    """The largest n whose run of ``impl`` on ``device`` fits in ``available`` bytes (with
    kernelfit's 10% headroom), by bisection over :func:`dense_bytes_needed`; ``auto``
    (default: ``dtype`` float64, bench's precision auto) sizes kernelfit by auto's plan."""
    if auto is None:
        auto = str(dtype) == "float64"
    from ..memory import SAFETY, largest_n

    def fits(n):
        return dense_bytes_needed(impl, n, d, n_test, dtype=np.dtype(dtype), device=device,
                                  device_bytes=available, auto=auto,
                                  tile_size=tile_size) <= SAFETY * available

    return largest_n(fits, limit=1 << 24)


# ---------------------------------------------------------------- records
def _median(vals) -> Optional[float]:
    vals = [v for v in vals if v is not None]
    return float(statistics.median(vals)) if vals else None


def _peak_rate(machine: dict, device: str, dtype: str) -> Optional[float]:
    peaks = machine.get("peaks") or {}
    if device == "gpu":
        g = peaks.get("gpu") or {}
        return g.get("fp64_gflops" if dtype == "float64" else "fp32_gflops")
    c = peaks.get("cpu") or {}
    return c.get("dgemm_gflops" if dtype == "float64" else "sgemm_gflops")


def stage_flops(impl: str, n: int, d: int, n_test: int) -> Dict[str, float]:
    """Flop counts of the GEMM-bound stages of one solve.

    Gram: the inner products of the lower half of K, n^2 d: kernelfit's tiles use the
    symmetry, and the peers' dense K = k(X, X) comes from NumPy's ``X @ X.T``, which BLAS
    computes as a syrk (the lower half, then mirrored; measured 2.2x faster than the same
    product of two distinct arrays); factor: n^3 / 3; predict: 2 n_test n d (the
    cross-kernel inner products). ``impl`` names the implementation (all count alike).
    """
    gram = float(n) * n * d
    return {"gram": gram, "factor": float(n) ** 3 / 3.0,
            "predict": 2.0 * float(n_test) * n * d}


def stage_dtypes(precision: str, inner_products: Optional[str] = None) -> Dict[str, str]:
    """The arithmetic each GEMM-bound stage ran in: the factor in float32 for float32 or
    mixed precision; the Gram and predictions in float32 when the inputs' inner products
    were (exact integer-grid products, ``inner_products`` starting with 'float32')."""
    data = "float32" if str(inner_products or "").startswith("float32") else "float64"
    return {"gram": data, "predict": data,
            "factor": "float64" if precision == "float64" else "float32"}


def limit_seconds(impl: str, n: int, d: int, n_test: int, machine: dict, device: str = "cpu",
                  precision: str = "float64", inner_products: Optional[str] = None
                  ) -> Optional[float]:
    """The 'limit': the stages' flop counts over the measured GEMM peak of the arithmetic
    each ran in (:func:`stage_dtypes`)."""
    flops = stage_flops(impl, n, d, n_test)
    dtypes = stage_dtypes(precision, inner_products)
    total = 0.0
    for s in RATED_STAGES:
        peak = _peak_rate(machine, device, dtypes[s])
        if not peak:
            return None
        total += flops[s] / (peak * 1e9)
    return total


def stage_rates(rec: dict, impl: str, d: int, machine: dict, device: str = "cpu",
                dtype: str = "float64") -> Dict[str, dict]:
    """Each GEMM-bound stage's achieved rate (its flop count over its time in ``rec``) and
    its fraction of the measured peak of the arithmetic it ran in (``rec``'s precision,
    else ``dtype``: the bench's, which a peer factors in)."""
    flops = stage_flops(impl, rec["n"], d, rec["n_test"])
    dtypes = stage_dtypes(rec.get("precision") or dtype, rec.get("inner_products"))
    out = {}
    for s in RATED_STAGES:
        t = rec.get(s)
        if not t:
            continue
        peak = _peak_rate(machine, device, dtypes[s])
        gf = flops[s] / t / 1e9
        out[s] = {"flops": flops[s], "gflops": gf, "dtype": dtypes[s], "peak_gflops": peak,
                  "fraction_of_peak": gf / peak if peak else None}
    return out


def _record(row: dict, n: int, cfg: BenchConfig, machine: dict, child: Optional[dict] = None,
            status: Optional[str] = None, reason: Optional[str] = None) -> dict:
    res = (child or {}).get("result") or {}
    d = int(res.get("d") or cfg.d)  # the width the child solved with (a dataset's own)
    rec = {"label": row["label"], "impl": row["impl"], "device": row["device"], "n": int(n),
           "n_test": cfg.n_test, "d": d, "dataset": cfg.dataset, "kernel": cfg.kernel,
           "dtype": cfg.dtype, "status": status, "reason": reason}
    if row["impl"] != "kernelfit" and cfg.peer_env:
        # what the peer's child ran with (e.g. another BLAS kernel than the machine block's
        # and the peaks' own)
        rec["env"] = dict(cfg.peer_env)
    for s in STAGES:
        rec[s] = None
    rec.update({"repeats": 0, "factor_gflops": None, "fraction_of_peak": None,
                "peak_rss_bytes": None, "relative_residual": None, "test_error": None,
                "wall_s": None})
    if child is None:
        return rec
    rec["status"] = child["status"]
    rec["reason"] = child.get("reason")
    rec["wall_s"] = child.get("wall_s")
    rec["returncode"] = child.get("returncode")
    rec["signal"] = child.get("signal")
    rec["peak_rss_bytes"] = child.get("max_rss_bytes") or None
    reps = res.get("repeats") or []
    if reps:
        rec["repeats"] = len(reps)
        for s in STAGES:
            rec[s] = _median(r.get(s) for r in reps)
        rec["times"] = {s: [r.get(s) for r in reps] for s in STAGES}
        rec["relative_residual"] = _median(r.get("relative_residual") for r in reps)
        rec["test_error"] = _median(r.get("test_error") for r in reps)
        gpu = [r["peak_gpu_bytes"] for r in reps if r.get("peak_gpu_bytes")]
        if gpu:
            rec["peak_gpu_bytes"] = max(gpu)
        rec["baseline_rss_bytes"] = res.get("baseline_rss_bytes")
        rec["load_s"] = res.get("load_s")
        if res.get("warmup_s") is not None:
            rec["warmup_s"] = res["warmup_s"]  # the GPU's untimed first solve on a slice
            rec["warmup_rows"] = res.get("warmup_rows")
        for key in ("precision", "precision_reason", "plan_choice", "inner_products"):
            if reps[-1].get(key) is not None:
                rec[key] = reps[-1][key]
    precision = rec.get("precision") or cfg.dtype
    if row["impl"] == "kernelfit" and rec.get("precision"):
        # what K was stored and factored in, as `kernelfit solve`'s record says: bench's
        # float64 is --precision auto, which may run mixed precision (a float32 factor)
        rec["dtype"] = "float64" if rec["precision"] == "float64" else "float32"
    if reps:  # the verdict of `kernelfit solve` on the median residual (the peers' too)
        # (scipy's peer factors in the bench's dtype too: float32 rounding is its cause)
        verdict = exactness(rec["relative_residual"], precision=precision if
                            (row["impl"] == "kernelfit" and precision != "mixed")
                            or (row["impl"] == "scipy" and cfg.dtype == "float32") else None)
        rec["exact"] = verdict["exact"]
        if not verdict["exact"]:
            rec["inexact_reason"] = verdict.get("inexact_reason")
    if rec["factor"]:
        flops = float(n) ** 3 / 3.0
        rec["factor_gflops"] = flops / rec["factor"] / 1e9
        peak = _peak_rate(machine, row["device"],
                          "float64" if precision == "float64" else "float32")
        if peak:
            rec["fraction_of_peak"] = rec["factor_gflops"] / peak
    if reps:
        rec["stage_rates"] = stage_rates(rec, row["impl"], d, machine, row["device"],
                                         precision)
        rec["limit_s"] = limit_seconds(row["impl"], n, d, cfg.n_test, machine,
                                       row["device"], precision, rec.get("inner_products"))
    if rec["status"] != "ok":
        rec["stderr_tail"] = (child.get("stderr_tail") or "")[-1500:]
        if res.get("traceback"):
            rec["traceback"] = res["traceback"]
    return rec


# ---------------------------------------------------------------- the run
def _gpu_info(cfg: BenchConfig, peaks_child: Optional[dict]) -> dict:
    if "gpu" not in cfg.devices:
        return {"available": False, "reason": "not requested (devices: cpu only)"}
    res = (peaks_child or {}).get("result") or {}
    if "gpu" in res:
        if cfg.measure_peaks or not res["gpu"].get("available"):
            return res["gpu"]
        # --no-peaks: the probe's small GEMM says the GPU works, its rate is no peak
        info = {k: v for k, v in res["gpu"].items() if not k.startswith("fp")}
        info["peaks"] = "not measured (--no-peaks)"
        return info
    if peaks_child is not None and peaks_child.get("status") != "ok":
        return {"available": False, "reason": f"GPU probe failed: {peaks_child.get('reason')}"}
    return {"available": False, "reason": "GPU status unknown"}


def run_bench(cfg: BenchConfig, on_event: Optional[Callable[[str, dict], None]] = None,
              show_progress: Optional[bool] = None) -> dict:
    """Run the benchmark described by ``cfg``; returns the JSON-ready results.

    ``on_event(kind, payload)`` is called with ``('machine', machine)`` once and
    ``('record', record)`` after every run or skip (for live output).
    """
    from ..backend import available_host_memory
    from ..memory import SAFETY, fmt_bytes
    from ..progress import progress
    from .machine import describe_machine

    cfg.validate()
    emit = on_event or (lambda kind, payload: None)
    t_start = time.perf_counter()
    machine = describe_machine()
    # peaks (and the GPU probe) in a child: the parent never initializes CUDA
    want_gpu = "gpu" in cfg.devices
    peaks_child = None
    if cfg.measure_peaks or want_gpu:
        spec = {"task": "peaks", "cpu": bool(cfg.measure_peaks), "gpu": want_gpu,
                "size": cfg.peak_size, "repeats": cfg.peak_repeats,
                "gpu_size": 8192 if cfg.measure_peaks else 256}
        peaks_child = run_child(spec, timeout=max(cfg.timeout_s, 120.0))
    peaks = {"cpu": None, "gpu": _gpu_info(cfg, peaks_child)}
    if cfg.measure_peaks:
        res = (peaks_child or {}).get("result") or {}
        peaks["cpu"] = res.get("cpu") or {"error": (peaks_child or {}).get("reason")}
    machine["peaks"] = peaks
    emit("machine", machine)

    rows = cfg.implementations()
    records: List[dict] = []
    blocked: Dict[str, str] = {}          # label -> why larger n are not tried
    last_ok: Dict[str, dict] = {}         # label -> last completed record
    gpu_mem = peaks["gpu"].get("gpu_memory_bytes") if peaks["gpu"].get("available") else None
    bar = progress(total=len(cfg.n_list) * len(rows), desc="bench", enabled=show_progress,
                   unit="run")
    order = {row["label"]: k for k, row in enumerate(rows)}
    this_n: List[dict] = []

    def finish(rec):
        this_n.append(rec)
        emit("record", rec)
        bar.update(1)

    try:
        for n in cfg.n_list:
            this_n.clear()
            active = []
            planned = 0.0  # projected seconds of the runs taken at this n so far
            for row in rows:
                label, impl, dev = row["label"], row["impl"], row["device"]
                bar.set_description(f"{label} n={n}")
                rec = None
                if impl == "kernelfit" and dev == "gpu" and not peaks["gpu"].get("available"):
                    rec = _record(row, n, cfg, machine, status="unavailable",
                                  reason=peaks["gpu"].get("reason"))
                elif impl != "kernelfit" and peer_unavailable_reason(impl, cfg.kernel):
                    rec = _record(row, n, cfg, machine, status="unavailable",
                                  reason=peer_unavailable_reason(impl, cfg.kernel))
                elif label in blocked:
                    rec = _record(row, n, cfg, machine, status="skipped", reason=blocked[label])
                if rec is None:
                    avail = gpu_mem if dev == "gpu" else available_host_memory()
                    need = dense_bytes_needed(impl, n, cfg.d, cfg.n_test,
                                              dtype=np.dtype(cfg.dtype),
                                              tile_size=cfg.tile_size, device=dev,
                                              device_bytes=avail,
                                              auto=cfg.dtype == "float64")
                    if avail is not None and need > SAFETY * avail:
                        why = (f"memory: needs about {fmt_bytes(need)}, "
                               f"{fmt_bytes(avail)} available (90% usable)")
                        rec = _record(row, n, cfg, machine, status="skipped", reason=why)
                        blocked[label] = f"memory: n = {n} already did not fit"
                projected = 0.0
                if rec is None and cfg.budget_s and label in last_ok:
                    # the rows already taken at this n run too: their projections count
                    projected = projected_seconds(last_ok[label], n)
                    elapsed = time.perf_counter() - t_start
                    if elapsed + planned + projected > cfg.budget_s:
                        taken = (f" and {planned:.0f} s projected for the runs already "
                                 f"taken at n = {n}" if planned else "")
                        rec = _record(row, n, cfg, machine, status="skipped",
                                      reason=f"time budget: projected {projected:.0f} s after "
                                             f"{elapsed:.0f} s{taken} of a "
                                             f"{cfg.budget_s:.0f} s budget")
                if rec is not None:
                    finish(rec)
                    continue
                planned += projected
                spec = {"task": "solve", "impl": impl, "n": n, "d": cfg.d,
                        "sklearn_alpha": cfg.sklearn_alpha, "repeats": 1,
                        **cfg.run_options(n, dev).to_flat()}
                active.append((row, spec, cfg.repeats if impl == "kernelfit"
                               else cfg.peer_repeats))
            # alternate: one run of each implementation per round, medians afterwards
            children: Dict[str, list] = {row["label"]: [] for row, _, _ in active}
            for rnd in range(max((w for _, _, w in active), default=0)):
                for row, spec, wanted in active:
                    got = children[row["label"]]
                    if rnd >= wanted or (got and got[-1]["status"] != "ok"):
                        continue
                    bar.set_description(f"{row['label']} n={n} ({rnd + 1}/{wanted})")
                    guard = None
                    if cfg.memory_guard and row["device"] == "cpu":
                        guard = int(0.98 * available_host_memory())
                    got.append(run_child(spec, timeout=cfg.timeout_s,
                                         env=cfg.peer_env if row["impl"] != "kernelfit"
                                         else None, memory_limit=guard))
            for row, _, _ in active:
                label = row["label"]
                rec = _record(row, n, cfg, machine, child=_merge_children(children[label]))
                if rec["status"] == "ok":
                    last_ok[label] = rec
                elif rec["status"] in ("timeout", "memory"):
                    blocked[label] = f"{rec['status']} at n = {n}"
                finish(rec)
            records.extend(sorted(this_n, key=lambda r: order[r["label"]]))
    finally:
        bar.close()

    results = {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": asdict(cfg),
        "machine": machine,
        "records": records,
    }
    results["comparisons"] = comparisons(records)
    results["extrapolation"] = extrapolate(records, cfg, machine)
    results["skipped"] = [{"label": r["label"], "n": r["n"], "status": r["status"],
                           "reason": r["reason"]} for r in records if r["status"] != "ok"]
    results["elapsed_s"] = time.perf_counter() - t_start
    return results


def projected_seconds(prev: dict, n: int) -> float:
    """Wall seconds of the runs at ``n`` projected from the record ``prev`` at a smaller n:
    its timed work (the repeats' totals) scaled by (n / n_prev)^3, its fixed costs (the rest
    of its wall time) as they were. Scaling the whole wall time instead projected 113 s for
    a GPU at n = 10,000 whose runs at 5,000 took 0.07 s inside 14 s of process starts."""
    wall = float(prev.get("wall_s") or 0.0)
    work = sum(t for t in (prev.get("times") or {}).get("total", []) if t)
    return max(wall - work, 0.0) + work * (n / prev["n"]) ** 3


def _merge_children(children: List[dict]) -> dict:
    """One child record from alternating runs: the repeats of the runs that went well, the
    failure when the last one failed, their wall times summed and the largest peak memory."""
    last = children[-1]
    merged = dict(last)
    ok = [c for c in children if c["status"] == "ok"]
    result = dict((ok[-1] if ok else last).get("result") or {})
    result["repeats"] = [r for c in ok for r in ((c.get("result") or {}).get("repeats") or [])]
    merged["result"] = result
    merged["wall_s"] = sum(c.get("wall_s") or 0.0 for c in children)
    merged["max_rss_bytes"] = max((c.get("max_rss_bytes") or 0) for c in children) or None
    merged["runs"] = len(children)
    return merged


def comparisons(records: List[dict]) -> List[dict]:
    """kernelfit vs the peers at equal n: factor-rate ratio to scipy's dpotrf, end-to-end
    time and peak-memory ratios to every completed peer (runs alternated, medians), and
    the 'limit': kernelfit's flop count over the measured GEMM peak, alone and as a ratio
    to each peer's time."""
    by = {(r["label"], r["n"]): r for r in records}
    out = []
    for n in sorted({r["n"] for r in records}):
        kf = by.get(("kernelfit-cpu", n))
        if not kf or kf["status"] != "ok":
            continue
        row = {"n": n, "kernelfit_s": kf.get("total"), "limit_s": kf.get("limit_s"),
               "precision": kf.get("precision")}
        sp = by.get(("scipy", n))
        if sp and sp["status"] == "ok" and sp.get("factor_gflops") and kf.get("factor_gflops"):
            row["factor_rate_vs_scipy"] = kf["factor_gflops"] / sp["factor_gflops"]
        for peer in PEERS:
            p = by.get((peer, n))
            if not p:
                continue
            if p["status"] != "ok":
                row[f"{peer}_status"] = p["status"]
                continue
            if p.get("total") and kf.get("total"):
                row[f"time_vs_{peer}"] = kf["total"] / p["total"]
                row[f"{peer}_s"] = p["total"]
                if kf.get("limit_s"):
                    row[f"limit_vs_{peer}"] = kf["limit_s"] / p["total"]
            if p.get("peak_rss_bytes") and kf.get("peak_rss_bytes"):
                row[f"memory_vs_{peer}"] = kf["peak_rss_bytes"] / p["peak_rss_bytes"]
        out.append(row)
    return out


def extrapolate(records: List[dict], cfg: BenchConfig, machine: dict) -> Dict[str, dict]:
    """Per implementation: the n^3 fits of the factor (or fit, for scikit-learn) and total
    times, and the predicted times at the largest n that fits in memory now (c n^3 fit;
    the free power-law exponent is reported alongside)."""
    from ..backend import available_host_memory

    out = {}
    avail = available_host_memory()
    gpu = (machine.get("peaks") or {}).get("gpu") or {}
    for row in cfg.implementations():
        ok = [r for r in records if r["label"] == row["label"] and r["status"] == "ok"]
        if not ok:
            continue
        key = "factor" if any(r.get("factor") for r in ok) else "fit"
        ns = [r["n"] for r in ok]
        fit_f = fit_power_law(ns, [r.get(key) for r in ok])
        fit_t = fit_power_law(ns, [r.get("total") for r in ok])
        mem = gpu.get("gpu_memory_bytes") if row["device"] == "gpu" else avail
        n_max = largest_fitting_n(row["impl"], mem or 0, d=cfg.d, n_test=cfg.n_test,
                                  dtype=cfg.dtype, device=row["device"],
                                  tile_size=cfg.tile_size) if mem else None
        entry = {"stage": key, "stage_fit": fit_f, "total_fit": fit_t, "n_max_fits": n_max,
                 "available_bytes": mem}
        if n_max:
            # c n^3 is the primary prediction (the factorization's flop count; the fit is
            # dominated by the largest measured n); the free power law is a diagnostic
            # that small, overhead-dominated n distort.
            entry["predicted_stage_s"] = predict_time(fit_f, n_max, cubic=True)
            entry["predicted_total_s"] = predict_time(fit_t, n_max, cubic=True)
            if fit_f.get("exponent") is not None:
                entry["predicted_stage_s_power_law"] = predict_time(fit_f, n_max)
            if row["impl"] == "kernelfit":
                # the precision auto would run there, beside those of the runs fitted: a
                # fit on float64 runs predicts a float64 time, which mixed precision beats
                entry["precision_at_n_max"] = cfg.dtype if cfg.dtype != "float64" else \
                    auto_plan(n_max, cfg.d, cfg.n_test, device=row["device"],
                              tile_size=cfg.tile_size, device_bytes=mem).precision
                entry["precisions_fitted"] = sorted({r.get("precision") or cfg.dtype
                                                     for r in ok})
        out[row["label"]] = entry
    return out
