"""Run the named experiments, store each result atomically, resume what is stored.

Layout of the output folder (``--out``)::

    results/<experiment>.json   one finished experiment (written whole, then renamed)
    runs/<key>.json             one finished solve (reused by every experiment asking it)
    parts/<experiment>/*.json   finished pieces of a long experiment (curve points)
    work/<experiment>/          large scratch (resume points of the random-conv pass)
    figures/*.png, report.md, report.json, report.png

A result is either complete on disk or absent: an interrupted run leaves only finished
results (and temporary files that the next run removes) and restarts where it stopped.
A folder holds one size of run: quick runs and full-scale ones share file names (and the
random-conv curve's resume points), so a run into a folder holding the other size's
results, or another command's report, is refused before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import re
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional, Tuple

from .._io import atomic_write_text, dumps_json
from ..errors import DataError, InputError, KernelfitError, MemoryPlanError

__all__ = ["Context", "run_reproduce", "select", "STATUS_EXIT"]

#: status of an experiment in a run -> its weight for the exit code (see the CLI)
STATUS_EXIT = {"done": 0, "stored": 0, "failed": 1, "missing-data": 3, "refused": 4}
_SPEC_IGNORED = ("show_progress", "data_dir", "cache_dir", "device")


def select(names: Optional[Iterable[str]]) -> list:
    """Experiment names in the canonical order; unknown names are an InputError."""
    from .experiments import EXPERIMENTS

    if not names:
        return list(EXPERIMENTS)
    names = [n.strip() for n in names if n.strip()]
    bad = [n for n in names if n not in EXPERIMENTS]
    if bad:
        raise InputError(f"unknown experiment(s) {', '.join(bad)}; known: "
                         f"{', '.join(EXPERIMENTS)}")
    return [n for n in EXPERIMENTS if n in names]


def _dump(obj) -> str:
    return dumps_json(obj, indent=2) + "\n"


class Context:
    """What an experiment may use: data, stored solves, the planner, plots, scratch."""

    def __init__(self, out_dir, *, quick: bool = False, data_dir=None,
                 progress: Optional[bool] = None, log: Optional[Callable[[str], None]] = None,
                 max_filters: Optional[int] = None, device: str = "cpu"):
        from ..backend import get_backend
        from ..datasets import resolve_data_dir

        self.out = Path(out_dir)
        self.quick = bool(quick)
        if max_filters is not None and (isinstance(max_filters, bool)
                                        or not isinstance(max_filters, numbers.Integral)
                                        or max_filters < 1):
            raise InputError(f"max_filters must be a positive whole number, got {max_filters!r}")
        self.max_filters = None if max_filters is None else int(max_filters)
        # where the solves, the features and the random-conv Gram sums run ('auto': a usable
        # GPU, else the CPU); an unusable GPU is refused here, before any work
        self.backend = get_backend(device)
        self.device = self.backend.device
        self.data_path = resolve_data_dir(data_dir)
        self.data_dir = str(self.data_path)
        self.progress = progress
        self._log = log
        self._peaks = None
        self._machine = None
        claim_folder(self.out, self.quick)
        for sub in ("results", "runs", "parts", "figures"):
            (self.out / sub).mkdir(parents=True, exist_ok=True)
        for stale in _stale_temporaries(self.out):  # left by a killed atomic write
            stale.unlink(missing_ok=True)

    # -- messages, scratch --------------------------------------------------------
    def log(self, msg: str) -> None:
        if self._log is not None:
            self._log(msg)

    def work_dir(self, name: str) -> Path:
        d = self.out / "work" / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    # -- data ---------------------------------------------------------------------
    def check_data(self, kind: str) -> None:
        """Raise DataError (naming the file and where to put it) when ``kind`` is missing."""
        if kind == "mnist":
            from ..datasets.mnist import locate_idx_files

            locate_idx_files("mnist", self.data_path, download_missing=False)
        elif kind == "cifar":
            self.cifar()

    def cifar(self):
        """``(dataset name, data note)``: the official files when present, else the JPEG set."""
        return locate_cifar(self.data_path)

    @property
    def machine(self) -> dict:
        """This machine's line for the report (read once per run)."""
        if self._machine is None:
            self._machine = _machine_line(self.backend)
        return self._machine

    # -- solves, pieces -----------------------------------------------------------
    @staticmethod
    def spec_key(spec: dict) -> str:
        clean = {k: v for k, v in spec.items() if k not in _SPEC_IGNORED}
        return hashlib.sha256(json.dumps(clean, sort_keys=True, default=str).encode()
                              ).hexdigest()[:20]

    def solve(self, spec: dict) -> dict:
        """The record of ``spec``: stored when done before, else solved and stored now."""
        from .adapter import solve

        path = self.out / "runs" / f"{self.spec_key(spec)}.json"
        if path.is_file():
            return json.loads(path.read_text())
        self.log(f"  solve {spec.get('dataset')} n={spec.get('n_train')} "
                 f"features={spec.get('features', 'raw')} kernel={spec.get('kernel')} "
                 f"ridge={spec.get('ridge', 0)}")
        rec = solve(dict(spec, device=self.device) if self.device != "cpu" else spec)
        rec["spec"] = {k: v for k, v in spec.items() if k not in _SPEC_IGNORED}
        rec["machine_short"] = self.machine["short"]
        atomic_write_text(path, _dump(rec))
        return json.loads(path.read_text())

    def part(self, exp: str, key: str) -> Optional[dict]:
        p = self.out / "parts" / exp / f"{key}.json"
        return json.loads(p.read_text()) if p.is_file() else None

    def store_part(self, exp: str, key: str, rec: dict) -> None:
        d = self.out / "parts" / exp
        d.mkdir(parents=True, exist_ok=True)
        rec.setdefault("machine_short", self.machine["short"])  # its row names where it ran
        atomic_write_text(d / f"{key}.json", _dump(rec))

    def plan(self, spec: dict, n: int, d: int, n_classes: int, n_test: int) -> dict:
        """The memory pre-flight (raises MemoryPlanError before any work)."""
        from .adapter import plan

        return plan(spec, n, d, n_classes, n_test)

    def randomize(self, cfg, levels) -> dict:
        from ..randomization import run_randomization, write_outputs

        result = run_randomization(cfg, modes="labels,random-pixels", levels=levels,
                                   estimate_condition=False, show_progress=self.progress)
        written = write_outputs(result, self.out / "figures", prefix="randomization_")
        result["_figures"] = [str(Path(p).relative_to(self.out)) for p in written
                              if p.endswith(".png")]
        return result

    def sgemm_peak(self) -> dict:
        """The SGEMM/DGEMM rates of the run's device (measured once per run; on a GPU its
        FP32/FP64 products, named ``device`` in the dict)."""
        if self._peaks is None:
            if self.device != "cpu":
                size = 2048 if self.quick else 8192
                p = self.backend.measure_gemm_peaks(size=size, repeats=3)
                self._peaks = {"sgemm_gflops": p["fp32_gflops"],
                               "dgemm_gflops": p["fp64_gflops"], "size": size,
                               "device": self.device}
                return self._peaks
            from ..bench.machine import measure_cpu_peaks

            size = 1024 if self.quick else 4096
            p = measure_cpu_peaks(size=size, repeats=2)
            self._peaks = {"sgemm_gflops": p["sgemm_gflops"], "dgemm_gflops": p["dgemm_gflops"],
                           "size": size}
        return self._peaks

    # -- figures ------------------------------------------------------------------
    def plot_lines(self, name: str, series: Dict[str, tuple], *, xlabel: str, ylabel: str,
                   title: str, xlog: bool = False) -> str:
        """One line plot, written atomically to ``figures/<name>.png``; its relative path."""
        from .report import save_line_plot

        path = self.out / "figures" / f"{name}.png"
        save_line_plot(path, series, xlabel=xlabel, ylabel=ylabel, title=title, xlog=xlog)
        return str(path.relative_to(self.out))

    # -- results ------------------------------------------------------------------
    def scope(self, exp) -> dict:
        """The limits of this run that experiment ``exp`` honours (``exp.limited_by``, e.g.
        ``max_filters``), those set only: ``{}`` is the experiment's full extent."""
        return {k: getattr(self, k) for k in exp.limited_by if getattr(self, k) is not None}

    def stored_result(self, exp) -> Tuple[Optional[dict], str]:
        """The stored result of experiment ``exp`` (read once) and how it stands:

        ``"current"``  made at this size (quick/full), under today's defaults
                       (:func:`~.experiments.defaults_fingerprint`) and limits that cover
                       this run's (:meth:`scope`, :func:`_covers`);
        ``"partial"``  as current but under other limits (e.g. a curve cut short);
        ``"stale"``    made under other defaults: kernelfit's defaults changed since;
        ``"none"``     no result of this size (or one with a failed row: made again).
        """
        from .experiments import defaults_fingerprint

        p = self.out / "results" / f"{exp.name}.json"
        res = json.loads(p.read_text()) if p.is_file() else None
        if res is None or res.get("quick") != self.quick:
            return None, "none"
        if any(r.get("verdict") == "failed" for r in res.get("rows", [])):
            return None, "none"  # stored before failed rows were kept out: made again
        if res.get("defaults") != defaults_fingerprint(exp):
            return res, "stale"
        return res, "current" if _covers(res.get("scope", {}), self.scope(exp)) else "partial"


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def claim_folder(out: Path, quick: bool) -> None:
    """Refuse ``out`` (an InputError, before anything is written) when it holds another
    command's report.json or results of the other size (quick or full scale): their files
    share names, and the random-conv curve's resume points would be taken for this run's."""
    report = out / "report.json"
    rep = _read_json(report) if report.is_file() else None
    if report.is_file() and not (isinstance(rep, dict) and "experiments" in rep
                                 and rep.get("command", "reproduce") == "reproduce"):
        raise InputError(f"{out} holds another report ({report} is not kernelfit "
                         "reproduce's); choose another folder", param="out")
    found = [rep] + [_read_json(p) for p in sorted((out / "results").glob("*.json"))]
    if any(isinstance(r, dict) and r.get("quick") is (not quick) for r in found):
        what = ("full-scale results, which a quick run would overwrite" if quick else
                "quick-run results (tiny n), whose stored work a full-scale run would reuse")
        raise InputError(f"{out} holds {what}; give this run a folder of its own",
                         param="out")


#: a temporary file of :func:`kernelfit._io.atomic_writer` for a file this run writes
_TEMPORARY = re.compile(r"\..+\.(json|md|png)\.[a-z0-9_]{8}\.tmp")


def _stale_temporaries(out: Path) -> list:
    """The temporaries of killed atomic writes in the folders a run writes to (report.*
    in ``out``; results/, runs/, figures/, parts/<experiment>/), nothing else under
    ``out``: a user's own files stay."""
    folders = [out / "results", out / "runs", out / "figures"]
    folders += [p for p in sorted((out / "parts").glob("*")) if p.is_dir()]
    found = [p for p in out.glob(".report.*.tmp") if _TEMPORARY.fullmatch(p.name)]
    for d in folders:
        found += [p for p in d.glob(".*.tmp") if _TEMPORARY.fullmatch(p.name)]
    return [p for p in found if p.is_file()]


def _covers(made: dict, wanted: dict) -> bool:
    """Whether a result made under the limits ``made`` holds what a run under ``wanted``
    asks for: every limit of ``made`` is also set in ``wanted``, no lower (a curve made to
    32,000 filters covers a run cut at 8,000, not the other way round)."""
    return all(k in wanted and wanted[k] <= v for k, v in made.items())


def locate_cifar(data_path: Path):
    """``(dataset name, data note)`` for CIFAR-10 under ``data_path``: the official files
    when present, else the JPEG set; a DataError naming the file and where to put it."""
    off = data_path / "cifar10"
    if (off / "cifar-10-python.tar.gz").is_file() or (off / "cifar-10-batches-py").is_dir():
        return "cifar10", "official CIFAR-10 (cifar-10-python.tar.gz)"
    for jpg in (data_path / "cifar10-jpeg" / "cifar10-jpeg.tar.gz",
                data_path / "cifar10-jpeg.tar.gz"):
        if jpg.is_file():
            return (f"imagefolder:{jpg}", "LOSSY JPEG re-encoding of CIFAR-10 "
                    "(cifar10-jpeg.tar.gz), not the official files: errors approximate "
                    "the official ones")
    raise DataError(f"cifar10: missing cifar-10-python.tar.gz in {off}; put the official "
                    f"file there (https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz), "
                    f"or the JPEG set at {data_path / 'cifar10-jpeg'}/cifar10-jpeg.tar.gz")


def _machine_line(backend=None) -> dict:
    """The host's CPU, cores, memory and BLAS, and the GPU when ``backend`` is one."""
    from ..bench.machine import cpu_counts, cpu_model, memory_info
    from ..backend import blas_info

    info = {"cpu": cpu_model(), **cpu_counts(), "memory": memory_info(), "blas": blas_info()}
    cores = info.get("logical") or info.get("physical") or info.get("cores")
    info["short"] = f"{info['cpu']}, {cores} cores"
    if backend is not None and backend.device != "cpu":
        info["gpu"] = backend.describe()
        info["short"] += f" + {info['gpu'].get('gpu_name') or backend.device}"
    return info


def run_reproduce(names=None, *, quick: bool = False, data_dir=None, out_dir="reproduce-out",
                  progress: Optional[bool] = None, log: Optional[Callable[[str], None]] = None,
                  max_filters: Optional[int] = None, device: str = "cpu") -> dict:
    """Run the selected experiments (all by default), skipping stored ones; write the
    report; return it (``report["status"]``: experiment -> status and message).

    ``max_filters`` cuts ``cifar-random-conv``'s curve at that many filters (its result
    then records the limit, and a later run without it continues the curve). ``device``
    (``cpu``, ``gpu`` or ``auto``) runs the solves and the random-conv features and Gram
    sums there; stored results are kept whatever device made them (the report's machine
    column names it)."""
    from ..memory import peak_rss_bytes
    from .experiments import EXPERIMENTS, defaults_fingerprint
    from .report import write_report

    chosen = select(names)
    ctx = Context(out_dir, quick=quick, data_dir=data_dir, progress=progress, log=log,
                  max_filters=max_filters, device=device)
    machine = ctx.machine
    status = {}
    for name in chosen:
        exp = EXPERIMENTS[name]
        defaults = defaults_fingerprint(exp)
        scope = ctx.scope(exp)
        _, state = ctx.stored_result(exp)
        if state == "current":
            status[name] = {"status": "stored", "message": "finished earlier; kept"}
            ctx.log(f"{name}: stored result kept")
            continue
        if state != "none":
            ctx.log(f"{name}: stored result made under other "
                    f"{'limits' if state == 'partial' else 'defaults'}; running it again")
        ctx.log(f"{name}: {exp.summary}")
        t0 = time.perf_counter()
        try:
            for kind in exp.needs:
                ctx.check_data(kind)
            res = exp.run(ctx)
        except DataError as exc:
            status[name] = {"status": "missing-data", "message": str(exc)}
            found = {k: exc.facts[k] for k in ("missing", "directory", "dataset", "reason",
                                               "found_in", "parent_data_dir")
                     if exc.facts.get(k)}
            if found:  # what the command line words its way out from
                status[name]["facts"] = found
        except MemoryPlanError as exc:
            status[name] = {"status": "refused", "message": f"not enough memory: {exc}"}
        except KernelfitError as exc:
            status[name] = {"status": "failed", "message": str(exc)}
        except Exception as exc:  # a bug must not cost the other experiments
            status[name] = {"status": "failed",
                            "message": f"{exc.__class__.__name__}: {exc}",
                            "traceback": traceback.format_exc(limit=8)}
        else:
            failed = [r for r in res.get("rows", []) if r.get("verdict") == "failed"]
            if failed:  # not stored: the next run makes it again
                status[name] = {"status": "failed", "message": "; ".join(
                    f"{r.get('claim')}: {r.get('reason') or 'no result'}" for r in failed)}
                ctx.log(f"{name}: failed")
                continue
            used = res.pop("scope", scope)  # the limits the experiment really applied
            res.update({"name": name, "quick": ctx.quick, "summary": exp.summary,
                        "defaults": defaults, "scope": used,
                        "seconds": time.perf_counter() - t0, "machine": machine["short"],
                        "peak_memory_bytes_process": peak_rss_bytes(),
                        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            for r in res["rows"]:  # the machine of the row's solve where it was stored apart
                r["machine"] = r.get("machine") or machine["short"]
            atomic_write_text(ctx.out / "results" / f"{name}.json", _dump(res))
            status[name] = {"status": "done", "message": ""}
        if status[name]["status"] != "done":
            ctx.log(f"{name}: {status[name]['status']}")
    return write_report(ctx, status, machine)
