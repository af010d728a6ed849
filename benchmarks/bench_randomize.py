"""Benchmark: randomization tests on exact kernel interpolation (Zhang et al. 2017, Fig. 1).

Parts (each written to ``--out`` as ``randomize_<part>_records.json``, ``..._table.md`` and
PNGs, plus ``randomize_benchmark.json`` / ``randomize_benchmark.md`` with the machine, the
target checks and every part's table):

* ``mnist``:  MNIST, n_train = 10,000 (first 10,000 of the seeded subset), full test set,
  Gaussian kernel bandwidth 5, all four modes x levels 0, .2, .4, .6, .8, 1, one repeat.
* ``mnist-repeats``: the same at n_train = 2,000 with 3 repeats (spread over repeats).
* ``cifar``:  CIFAR-10 from a LOSSY JPEG re-encoding (``imagefolder:`` tar of JPEGs; not the
  official files, figures approximate the official ones), n_train = 5,000, n_test = 2,000,
  Gaussian kernel with the median-heuristic bandwidth of the clean training pixels.

Targets checked (MNIST, n = 10,000): training error exactly 0 at every level of every mode;
clean test error about 2.7 %; test error about 90 % (chance) at label level 1.0; RKHS norm
increasing with the label-corruption level.

Usage::

    python benchmarks/bench_randomize.py --data-dir /work/shared/data [--parts mnist,cifar]
        [--out benchmarks/results] [--quick]

``--quick`` shrinks every part (n / 5, levels 0, .5, 1) to check the script itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from kernelfit import randomization as rz  # noqa: E402
from kernelfit.options import RunOptions  # noqa: E402

CIFAR_NOTE = ("CIFAR-10 here is a third party's LOSSY JPEG re-encoding "
              "(cifar10-jpeg.tar.gz), not the official files: figures approximate, and do "
              "not equal, results on the official CIFAR-10.")
LEVELS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
#: the issue's clean test error at n = 10,000 (MNIST, Gaussian kernel, bandwidth 5)
CLEAN_TARGETS = {"mnist": 0.027}


def machine() -> dict:
    """The machine, described by kernelfit's benchmark module (with the load average)."""
    from kernelfit.bench.machine import describe_machine

    return describe_machine()


def _load():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def parts(data_dir: str, quick: bool) -> dict:
    """name -> (RunOptions, modes, levels, repeats, note, condition policy).

    cond(K) is estimated at every level (labels share the clean K's value). Under heavy load
    the estimate (60 one-vector tiled triangular solves) took ~4x the solve at n = 10,000;
    ``--condition endpoints`` then keeps only levels 0 and 1."""
    f = 5 if quick else 1
    lv = (0.0, 0.5, 1.0) if quick else LEVELS
    mnist = dict(dataset="mnist", data_dir=data_dir, kernel="gaussian", bandwidth=5.0)
    tar = os.path.join(data_dir, "cifar10-jpeg", "cifar10-jpeg.tar.gz")
    cifar = dict(dataset=f"imagefolder:{tar}",
                 data_dir=data_dir, kernel="gaussian", bandwidth="median", balanced=True)
    return {
        "mnist": (RunOptions.from_flat(n_train=10000 // f, **mnist), "all", lv, 1, None, True),
        "mnist-repeats": (RunOptions.from_flat(n_train=2000 // f, n_test=10000 // f, **mnist), "all",
                          lv, 3, None, True),
        "cifar": (RunOptions.from_flat(n_train=5000 // f, n_test=2000 // f, **cifar), "all", lv, 1,
                  CIFAR_NOTE, True),
    }


def _by(result, mode, level):
    for s in result["summary"]:
        if s["mode"] == mode and s["level"] == level:
            return s
    return None


def check_targets(result: dict, clean_target: float = None) -> dict:
    """The issue's targets, as measured booleans and the numbers behind them."""
    out = {"train_error_zero_everywhere": result["all_train_errors_zero"],
           "failed_solves": result["n_failed"]}
    if "labels" in result["modes"]:
        levels = [s["level"] for s in result["summary"] if s["mode"] == "labels"]
        norms = [_by(result, "labels", lv)["rkhs_norm"]["mean"] for lv in levels]
        errs = [_by(result, "labels", lv)["test_error"]["mean"] for lv in levels]
        out["labels_test_error_by_level"] = dict(zip(map(str, levels), errs))
        out["labels_rkhs_norm_by_level"] = dict(zip(map(str, levels), norms))
        out["labels_norm_increasing"] = all(b > a for a, b in zip(norms, norms[1:]))
        if 0.0 in levels:
            out["clean_test_error"] = errs[levels.index(0.0)]
            if clean_target is not None:
                out["clean_target"] = clean_target
        if 1.0 in levels:
            chance = 1 - 1 / result["n_classes"]
            out["random_labels_test_error"] = errs[levels.index(1.0)]
            out["chance"] = chance
            out["random_labels_within_3pts_of_chance"] = abs(errs[-1] - chance) < 0.03
    for mode in result["modes"]:
        if mode == "labels":
            continue
        s1 = _by(result, mode, 1.0)
        if s1 is not None:
            out[f"{mode}_level1_test_error"] = s1["test_error"]["mean"]
            out[f"{mode}_level1_rkhs_norm"] = s1["rkhs_norm"]["mean"]
    return out


def report_markdown(report: dict, results: dict) -> str:
    """The benchmark's markdown: machine, then per part its setup, table and targets."""
    m = report["machine"]
    md = ["# Randomization tests on exact kernel interpolation: benchmark", "",
          f"Machine: {m['cpu']}, {m['cores']} cores, load average at start "
          f"{m['load_average_at_start']} (shared machine: timings indicative). "
          f"Total wall time {report.get('seconds', 0):.0f} s.", ""]
    for name, part in report["parts"].items():
        res = results[name]
        note = part.get("note")
        md += [f"## {name}", ""] + ([f"**{note}**", ""] if note else [])
        md += [rz.describe(res), "", f"Wall time {part['seconds']:.0f} s; load average "
               f"after {part.get('load_average_after')}. Level meaning: see "
               f"`{part.get('prefix', '')}table.md`.", ""]
        rows = rz.table_rows(res)
        md.append("| " + " | ".join(rows[0]) + " |")
        md.append("|" + "|".join("---" for _ in rows[0]) + "|")
        md += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        md += ["", "Targets: `" + json.dumps(part["targets"], default=str) + "`", ""]
    return "\n".join(md) + "\n"


def replot(out: str) -> int:
    """Recompute the summaries and rewrite the tables and PNGs of every
    ``randomize_*_records.json`` in ``out`` (no solve)."""
    import glob

    paths = sorted(glob.glob(os.path.join(out, "randomize_*_records.json")))
    for path in paths:
        with open(path) as fh:
            res = json.load(fh)
        prefix = os.path.basename(path)[:-len("records.json")]
        res["summary"] = rz.summarize(res["records"])
        rz.write_outputs(res, out, prefix=prefix, note=res.get("note"))
        print(f"[bench_randomize] redrew {prefix}*", file=sys.stderr)
    from kernelfit._io import atomic_write_text

    for tag in ("", "_quick"):
        bpath = os.path.join(out, f"randomize_benchmark{tag}.json")
        if not os.path.exists(bpath):
            continue
        with open(bpath) as fh:
            report = json.load(fh)
        results = {}
        for name, part in report["parts"].items():
            prefix = part.get("prefix") or f"randomize_{name.replace('-', '_')}{tag}_"
            part["prefix"] = prefix
            with open(os.path.join(out, f"{prefix}records.json")) as fh:
                results[name] = json.load(fh)
            results[name]["summary"] = rz.summarize(results[name]["records"])
            part["targets"] = check_targets(results[name], CLEAN_TARGETS.get(name))
        atomic_write_text(bpath, json.dumps(report, indent=2, default=str) + "\n")
        atomic_write_text(os.path.join(out, f"randomize_benchmark{tag}.md"),
                          report_markdown(report, results))
    return 0 if paths else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get(
        "KERNELFIT_DATA", os.path.join(ROOT, "..", "shared", "data")))
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    ap.add_argument("--parts", default="mnist,mnist-repeats,cifar")
    ap.add_argument("--quick", action="store_true", help="small sizes to check the script")
    ap.add_argument("--condition", choices=("all", "endpoints", "none"), default=None,
                    help="cond(K) estimates (default: per part, see parts())")
    ap.add_argument("--replot", action="store_true",
                    help="only redraw tables and plots from the records JSON files in --out")
    args = ap.parse_args(argv)
    if args.replot:
        return replot(args.out)
    os.environ.setdefault("KERNELFIT_PROGRESS", "1")
    data_dir = os.path.abspath(args.data_dir)
    table = parts(data_dir, args.quick)
    wanted = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in wanted if p not in table]
    if unknown:
        ap.error(f"unknown part(s) {unknown}; choose from {sorted(table)}")
    os.makedirs(args.out, exist_ok=True)
    report = {"benchmark": "randomize", "machine": machine(), "quick": args.quick,
              "parts": {}}
    results = {}
    t_all = time.perf_counter()
    for name in wanted:
        cfg, modes, levels, repeats, note, cond_default = table[name]
        print(f"[bench_randomize] {name}: {cfg.data.dataset} n_train={cfg.data.n_train} "
              f"modes={modes} "
              f"levels={levels} repeats={repeats}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        cond = {"all": True, "endpoints": "endpoints", "none": False}.get(args.condition,
                                                                          cond_default)
        res = rz.run_randomization(cfg, modes, levels, repeats, estimate_condition=cond)
        prefix = f"randomize_{name.replace('-', '_')}{'_quick' if args.quick else ''}_"
        files = rz.write_outputs(res, args.out, prefix=prefix, note=note)
        targets = check_targets(res, CLEAN_TARGETS.get(name))
        report["parts"][name] = {"seconds": time.perf_counter() - t0, "files":
                                 [os.path.relpath(f, ROOT) for f in files],
                                 "targets": targets, "note": note,
                                 "load_average_after": _load(),
                                 "setup": rz.describe(res)}
        report["parts"][name]["prefix"] = prefix
        results[name] = res
        print(rz.render_text(res), file=sys.stderr, flush=True)
    report["seconds"] = time.perf_counter() - t_all
    tag = "_quick" if args.quick else ""
    from kernelfit._io import atomic_write_text

    atomic_write_text(os.path.join(args.out, f"randomize_benchmark{tag}.json"),
                      json.dumps(report, indent=2, default=str) + "\n")
    atomic_write_text(os.path.join(args.out, f"randomize_benchmark{tag}.md"),
                      report_markdown(report, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
