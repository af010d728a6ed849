"""Mixed precision with its float32 factor deflated at two ranks (issue 14).

    python benchmarks/bench_deflation.py --data-dir ../shared/data --n 10000,20000 --rounds 3
    python benchmarks/bench_deflation.py --ranks 32,0 ...  # against no deflation at all
    python benchmarks/bench_deflation.py --dry-run     # random data, n = 1,500: seconds

Each run is one fresh process (:func:`kernelfit.bench.runner.run_child`) running the
bench's kernelfit repetition, the run layer's fit and predict with every default
(MNIST, Gaussian h = 5, 10,000 test images; ``--precision auto`` chooses mixed there),
with at most ``rank`` landmarks in the deflation (:data:`kernelfit.solvers.deflate.RANK`;
0: the deflation off, :data:`~kernelfit.solvers.deflate.ENABLED`; the spec's
``deflate``). ``--ranks`` names the two (default ``32,1``: today's default against the
rows' mean alone). The two variants alternate, ``--rounds`` rounds per n, so a slow spell
of the machine falls on both. Recorded per run: the stage times, the refinement passes
and residual history, the deflation record, the test error and the peak memory; the
medians per n and variant; the machine with its GEMM peaks measured first in a child.
Output: ``benchmarks/results/deflation_ab_<tag>.json`` (``--tag``, default: the CPU's
name).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _ab import (STAGES, add_output_args, child_record, run_ab,  # noqa: E402
                 sizes_of, solve_spec)  # (benchmarks/_ab.py)
from kernelfit.bench.runner import run_child  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="folder holding mnist/")
    p.add_argument("--n", default="10000,20000", help="training sizes, comma-separated")
    p.add_argument("--n-test", type=int, default=10000)
    p.add_argument("--bandwidth", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--ranks", default="32,1",
                   help="the two ranks compared, comma-separated (0: no deflation)")
    p.add_argument("--timeout", type=float, default=1800.0)
    add_output_args(p, str(HERE / "results"),
                    "random data, n = 1,500, one round: checks the script, measures "
                    "nothing worth keeping (the file name says dry_run)")
    return p.parse_args(argv)


def one_run(args, n: int, rank: int) -> dict:
    child = run_child(solve_spec(args, n, deflate=rank), timeout=args.timeout)
    return child_record(child, {"n": n, "rank": rank},
                        ("iterations", "refinement_history", "deflation", "precision",
                         "relative_residual", "test_error"))


def medians(runs: list) -> dict:
    out = {}
    for n in sorted({r["n"] for r in runs}):
        for rank in sorted({r["rank"] for r in runs}):
            rs = [r for r in runs if r["n"] == n and r["rank"] == rank and r["status"] == "ok"]
            if not rs:
                continue
            key = f"rank{rank}_{n}"
            out[key] = {f"{k}_s": statistics.median(r[f"{k}_s"] for r in rs) for k in STAGES}
            out[key]["iterations"] = sorted({r["iterations"] for r in rs})
            out[key]["runs"] = len(rs)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    ranks = sizes_of(args.ranks)
    if len(ranks) != 2 or min(ranks) < 0:
        print(f"--ranks takes two different whole numbers >= 0, comma-separated (0: no "
              f"deflation; got {args.ranks!r})", file=sys.stderr)
        return 2
    return run_ab(
        args, argv, script="bench_deflation.py", benchmark="deflation_ab",
        what=(f"kernelfit's solve with every default (auto: mixed precision), the float32 "
              f"factor deflated with at most {ranks[1]} and {ranks[0]} landmarks (0: not "
              "deflated), one fresh process per run, alternating; seconds"),
        variants=tuple(reversed(ranks)), one_run=one_run, medians=medians,
        line=lambda rec: (f"rank<={rec['rank']}: {rec['status']} total {rec['total_s']} "
                          f"s, {rec['iterations']} passes, history "
                          f"{rec['refinement_history']}"))


if __name__ == "__main__":
    sys.exit(main())
