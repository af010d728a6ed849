"""Refinement passes against the deflation's rank: MNIST pixels and Gabor features (issue 14).

    python benchmarks/bench_deflation_rank.py --data-dir ../shared/data --n 20000 \
        --ranks 1,8,32,64 --features raw,gabor --feature-cache-dir /tmp/fcache
    python benchmarks/bench_deflation_rank.py --dry-run   # digits, n = 1,000: seconds

Each run is one fresh process (this script again, ``--child``) running kernelfit's run
layer with every default (``kernelfit solve --dataset mnist [--features gabor]``: Gaussian
at the default bandwidth, ``--precision auto``, 10,000 test images), with
:data:`kernelfit.solvers.deflate.RANK` set to the run's rank (0: the deflation off) and
``--precision mixed`` so that every run refines (``--precision auto`` could factor a small
problem in float64). Recorded per run: the refinement's passes and residual history, the
float32 and float64 preconditioner passes, the deflation record, the stage times, the test
error and the peak memory; the machine. Gabor features come from the feature cache
(``--feature-cache-dir``; the first run computes them). Output:
``benchmarks/results/deflation_rank_<tag>.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _ab import add_output_args, sizes_of, write_result  # noqa: E402  (benchmarks/_ab.py)
from bench_code_ab import commit_of  # noqa: E402  (benchmarks/bench_code_ab.py)

KEYS = ("precision", "solve_iterations", "matvecs", "refinement_history",
        "preconditioner_application", "deflation", "relative_residual", "test_error",
        "timings", "peak_memory_bytes", "n_features", "kept_tiles", "n_tiles_lower")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="folder holding mnist/")
    p.add_argument("--n", default="20000", help="training sizes, comma-separated")
    p.add_argument("--ranks", default="1,8,32,64",
                   help="deflation ranks, comma-separated (0: no deflation)")
    p.add_argument("--features", default="raw,gabor", help="raw and/or gabor")
    p.add_argument("--feature-cache-dir", default=None)
    p.add_argument("--timeout", type=float, default=3600.0)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    add_output_args(p, str(HERE / "results"),
                    "digits, n = 1,000, ranks 1 and 4, raw pixels: checks the script, "
                    "measures nothing worth keeping (the file name says dry_run)")
    return p.parse_args(argv)


def child(spec: dict) -> dict:
    """One run in this process: the rank set, the run layer's solve, the record's keys."""
    from kernelfit import run
    from kernelfit.options import RunOptions
    from kernelfit.solvers import deflate

    deflate.ENABLED = spec["rank"] > 0
    if spec["rank"] > 0:
        deflate.RANK = spec["rank"]
    flat = dict(dataset=spec["dataset"], n_train=spec["n"], features=spec["features"],
                precision="mixed", show_progress=False)
    if spec.get("data_dir"):
        flat["data_dir"] = spec["data_dir"]
    if spec.get("cache_dir"):
        flat["cache_dir"] = spec["cache_dir"]
    if spec["dataset"] == "digits":
        flat["n_test"] = 200
    rec = run.run_solve(RunOptions.from_flat(**flat))
    return {k: rec.get(k) for k in KEYS}


def one_run(args, spec: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                          capture_output=True, text=True, timeout=args.timeout)
    out = dict(spec)
    if proc.returncode != 0:
        out.update(status="error", stderr_tail=proc.stderr[-1500:])
        return out
    out.update(status="ok", **json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    ns, ranks = ([1000], [1, 4]) if args.dry_run else (sizes_of(args.n), sizes_of(args.ranks))
    feats = ["raw"] if args.dry_run else [f.strip() for f in args.features.split(",") if f.strip()]
    if not ns or not ranks or min(ranks) < 0 or not set(feats) <= {"raw", "gabor"} or not feats:
        print("--n and --ranks take whole numbers (ranks >= 0), --features raw and/or gabor, "
              "comma-separated", file=sys.stderr)
        return 2
    if not args.dry_run and not args.data_dir:
        print("give --data-dir (the folder holding mnist/) or --dry-run", file=sys.stderr)
        return 2
    from kernelfit.bench.machine import describe_machine

    machine = describe_machine()
    runs = []
    for feat in feats:
        for n in ns:
            for rank in ranks:
                spec = {"dataset": "digits" if args.dry_run else "mnist", "n": n,
                        "features": feat, "rank": rank, "data_dir": args.data_dir,
                        "cache_dir": args.feature_cache_dir}
                rec = one_run(args, spec)
                runs.append(rec)
                print(f"{feat} n={n} rank<={rank}: {rec['status']} "
                      f"{rec.get('solve_iterations')} passes, solve "
                      f"{(rec.get('timings') or {}).get('solve')} s, history "
                      f"{rec.get('refinement_history')}", flush=True)
    write_result(args, argv, script="bench_deflation_rank.py", benchmark="deflation_rank",
                 what=("refinement passes of kernelfit's mixed-precision solve (every other "
                       "option default) with the float32 factor deflated by at most `rank` "
                       "landmarks (0: not deflated); one fresh process per run"),
                 machine=machine, body={"commit": commit_of(str(HERE.parent)),
                                        "machine": machine, "runs": runs})
    return 0 if all(r["status"] == "ok" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
