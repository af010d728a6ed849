"""Gabor features rounded to the 2^-11 grid against unrounded ones: time and test error.

    python benchmarks/bench_gabor_grid.py --data-dir ../shared/data --tag zen4_avx512
    python benchmarks/bench_gabor_grid.py --dry-run      # scikit-learn's digits: seconds

The Gabor map rounds its unit-norm features to multiples of 2^-11 by default
(``grid_bits='auto'``), which puts them on an integer grid whose inner products a float32
GEMM computes exactly (:mod:`kernelfit.grid`): the solve then builds K, checks its residual
and predicts at the float32 rate. Each n is solved with ``kernelfit solve --dataset mnist
--features gabor`` (every other option at its default: the median bandwidth,
``--precision auto``) in fresh processes, ``--gabor-grid-bits none`` and ``auto``
alternately for ``--rounds`` rounds (the one that goes first changing each round), after
one untimed run of each that fills a feature cache folder (the features of both are then
read from it: their time is left out). Recorded per run: the stage times, the precision and
why, the inner products' note, the residual, the test error, the bandwidth and peak memory;
medians per n and variant. Output: ``benchmarks/results/gabor_grid_<tag>.json`` with the
machine described.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _ab import add_output_args, alternating, file_tag, no_data, sizes_of  # noqa: E402
from bench_code_ab import commit_of  # noqa: E402  (benchmarks/bench_code_ab.py)
from kernelfit.bench.machine import describe_machine  # noqa: E402

VARIANTS = ("none", "auto")
#: the stages compared (features come from the cache and are left out)
STAGES = ("probe", "gram", "factor", "solve", "residual", "predict")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="folder holding mnist/")
    p.add_argument("--n", default="10000,20000", help="training sizes, comma-separated")
    p.add_argument("--n-test", type=int, default=10000)
    p.add_argument("--rounds", type=int, default=2)
    add_output_args(p, str(HERE / "results"), "scikit-learn's digits (8 x 8 images, its "
                    "whole training split), one round")
    return p.parse_args(argv)


def solve(args, n: int, bits: str, cache: Path) -> dict:
    """One ``kernelfit solve --json`` process with ``--gabor-grid-bits bits``."""
    if args.dry_run:
        data = ["--dataset", "digits", "--gabor-pool", "4"]
    else:
        data = ["--dataset", "mnist", "--data-dir", args.data_dir, "--n-train", str(n),
                "--n-test", str(args.n_test)]
    cmd = [sys.executable, "-m", "kernelfit", "solve", *data, "--features", "gabor",
           "--gabor-grid-bits", bits, "--feature-cache-dir", str(cache), "--json",
           "--no-progress"]
    env = dict(os.environ, KERNELFIT_PROGRESS="0", PYTHONPATH=str(HERE.parent))
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    except subprocess.TimeoutExpired:
        return {"grid_bits": bits, "status": "timed out after 3600 s"}
    if proc.returncode != 0:
        return {"grid_bits": bits, "status": "failed", "stderr_tail": proc.stderr[-1500:]}
    rec = json.loads(proc.stdout)
    t = rec.get("timings") or {}
    return {"grid_bits": bits, "status": "ok", "n": rec.get("n_train"),
            "timings": t, "compared_s": sum(t.get(k, 0.0) for k in STAGES),
            "precision": rec.get("precision"), "precision_reason": rec.get("precision_reason"),
            "inner_products": rec.get("inner_products"),
            "relative_residual": rec.get("relative_residual"), "exact": rec.get("exact"),
            "test_error": rec.get("test_error"),
            "bandwidth": (rec.get("kernel_params") or {}).get("bandwidth"),
            "peak_memory_bytes": rec.get("peak_memory_bytes"),
            "feature_cache_hit": (rec.get("feature_info") or {}).get("cache_hit")}


def medians(runs: list) -> list:
    out = []
    for n in sorted({r["n_asked"] for r in runs}):
        row = {"n": n}
        for bits in VARIANTS:
            ok = [r for r in runs if r["n_asked"] == n and r["grid_bits"] == bits
                  and r["status"] == "ok"]
            if not ok:
                row[bits] = None
                continue
            row[bits] = {"runs": len(ok),
                         "compared_s": statistics.median(r["compared_s"] for r in ok),
                         **{f"{k}_s": statistics.median(r["timings"].get(k, 0.0) for r in ok)
                            for k in STAGES},
                         "test_error": ok[0]["test_error"],
                         "relative_residual": max(r["relative_residual"] for r in ok),
                         "precision": ok[0]["precision"],
                         "peak_memory_bytes": max(r["peak_memory_bytes"] or 0 for r in ok)}
        done = [r["n"] for r in runs if r["n_asked"] == n and r["status"] == "ok"]
        if done:  # the training size solved (the dry run asks for the whole split: 0)
            row["n"] = done[0]
        if row["none"] and row["auto"]:
            row["time_ratio"] = row["auto"]["compared_s"] / row["none"]["compared_s"]
            row["test_error_differs_by"] = row["auto"]["test_error"] - row["none"]["test_error"]
        out.append(row)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if no_data(args):
        return 2
    ns = sizes_of(args.n)
    if not ns or min(ns) < 2 or args.rounds < 1:
        print(f"--n takes whole numbers of at least 2, comma-separated (got {args.n!r}), "
              f"--rounds at least 1 (got {args.rounds})", file=sys.stderr)
        return 2
    if args.dry_run:  # the digits set: its whole training split
        ns = [0]
    rounds = 1 if args.dry_run else args.rounds
    machine = describe_machine()
    runs = []
    with tempfile.TemporaryDirectory(prefix="kf-gabor-grid-") as tmp:
        cache = Path(tmp) / "features"
        for n in ns:
            for bits in VARIANTS:  # untimed: fills the feature cache of both variants
                warm = solve(args, n, bits, cache)
                if warm["status"] != "ok":
                    print(f"n={n} grid_bits={bits}: {warm['status']}\n"
                          f"{warm.get('stderr_tail', '')}", file=sys.stderr)
                    return 1
            for r, bits in alternating(rounds, VARIANTS):
                rec = dict(solve(args, n, bits, cache), n_asked=n, round=r)
                runs.append(rec)
                if rec["status"] == "ok":
                    print(f"n={n} round {r} grid_bits={bits}: {rec['compared_s']:.1f} s "
                          f"(gram {rec['timings'].get('gram', 0):.1f}, residual "
                          f"{rec['timings'].get('residual', 0):.1f}, predict "
                          f"{rec['timings'].get('predict', 0):.1f}), test error "
                          f"{rec['test_error']:.4f}, residual {rec['relative_residual']:.1e}",
                          flush=True)
                else:
                    print(f"n={n} round {r} grid_bits={bits}: {rec['status']}", flush=True)
    out = {"benchmark": "gabor_grid", "script": "benchmarks/bench_gabor_grid.py",
           "argv": list(argv if argv is not None else sys.argv[1:]),
           "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "commit": commit_of(str(HERE.parent)), "machine": machine,
           "compared_stages": list(STAGES), "runs": runs, "medians": medians(runs)}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / f"gabor_grid_{file_tag(args, machine)}.json"
    path.write_text(json.dumps(out, indent=1, allow_nan=False))
    print(f"wrote {path}")
    print(json.dumps(out["medians"], indent=1))
    return 0 if all(r["status"] == "ok" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
