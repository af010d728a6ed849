"""The same solve with two checkouts of kernelfit, alternating (issue 14's A/B of a change).

    python benchmarks/bench_code_ab.py --before ../wt-old --after . --data-dir ../shared/data \
        --n 10000,20000 --rounds 4 --tag zen4_avx512 --name stream_blocks
    python benchmarks/bench_code_ab.py --dry-run     # random data, n = 1,500: seconds

Each run is one fresh process (:func:`kernelfit.bench.runner.run_child`) importing the
kernelfit of one checkout (``PYTHONPATH``) and running the bench's kernelfit repetition:
the run layer's fit and predict with every default (MNIST, Gaussian h = 5, 10,000 test
images; ``--precision auto`` chooses mixed there). The two checkouts alternate, the one
that goes first changing round by round, so a slow spell of the machine falls on both.
Recorded per run: the stage times, the refinement passes, the test error, the peak memory,
and the child's CPU time (user, system) and minor page faults (``RUSAGE_CHILDREN``: on a
virtual machine first touches of fresh memory are a large part of the Gram's time); the
medians per n and checkout; the commits; the machine with its GEMM peaks measured first.
Output: ``benchmarks/results/<name>_ab_<tag>.json``.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _ab import (STAGES, add_output_args, child_record, run_ab,  # noqa: E402
                 solve_spec)  # (benchmarks/_ab.py)
from kernelfit.bench.runner import run_child  # noqa: E402

USAGE = ("user_s", "sys_s", "minor_faults")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", default=str(HERE.parent), help="checkout of the code before")
    p.add_argument("--after", default=str(HERE.parent), help="checkout of the code after")
    p.add_argument("--data-dir", default=None, help="folder holding mnist/")
    p.add_argument("--n", default="10000,20000", help="training sizes, comma-separated")
    p.add_argument("--n-test", type=int, default=10000)
    p.add_argument("--bandwidth", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--name", default="code", help="what the change is called (file name)")
    add_output_args(p, str(HERE / "results"),
                    "random data, n = 1,500, one round: checks the script, measures "
                    "nothing worth keeping (the file name says dry_run)")
    return p.parse_args(argv)


def commit_of(path: str) -> str:
    """The checkout's commit (short hash, '+dirty' with uncommitted changes), or 'unknown'."""
    def git(*a):
        return subprocess.run(["git", "-C", path, *a], capture_output=True, text=True,
                              timeout=30)
    head = git("rev-parse", "--short", "HEAD")
    if head.returncode != 0:
        return "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    return head.stdout.strip() + ("+dirty" if dirty else "")


def imported_from(checkout: str) -> str:
    """The kernelfit package a child started like the bench's imports (the checkout as its
    folder and import path)."""
    proc = subprocess.run([sys.executable, "-c", "import kernelfit; print(kernelfit.__file__)"],
                          cwd=checkout, env=dict(os.environ, PYTHONPATH=checkout),
                          capture_output=True, text=True, timeout=120)
    return str(Path(proc.stdout.strip()).parent) if proc.returncode == 0 else ""


def one_run(args, n: int, which: str) -> dict:
    spec = solve_spec(args, n)
    checkout = str(Path(getattr(args, which)).resolve())
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    # the checkout as the child's folder and import path: `python -m` puts the folder first
    child = run_child(spec, timeout=args.timeout, env={"PYTHONPATH": checkout}, cwd=checkout)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    # the package the child imported (children of code before feae04b do not say)
    ran = (child.get("result") or {}).get("kernelfit_path")
    if child["status"] == "ok" and ran is not None and ran != str(Path(checkout) / "kernelfit"):
        child = dict(child, status="wrong_code",
                     reason=f"the child ran the kernelfit in {ran}, not {checkout}'s")
    rec = {"n": n, "code": which, "kernelfit_path": ran,
           "user_s": r1.ru_utime - r0.ru_utime, "sys_s": r1.ru_stime - r0.ru_stime,
           "minor_faults": r1.ru_minflt - r0.ru_minflt}
    return child_record(child, rec, ("iterations", "precision", "relative_residual",
                                     "test_error"))


def medians(runs: list) -> dict:
    out = {}
    for n in sorted({r["n"] for r in runs}):
        for which in ("before", "after"):
            rs = [r for r in runs if r["n"] == n and r["code"] == which and r["status"] == "ok"]
            if rs:
                out[f"{which}_{n}"] = {k: statistics.median(r[k] for r in rs)
                                       for k in [f"{s}_s" for s in STAGES] + list(USAGE)}
                out[f"{which}_{n}"]["runs"] = len(rs)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    for which in ("before", "after"):
        checkout = Path(getattr(args, which)).resolve()
        if not (checkout / "kernelfit" / "__init__.py").is_file():
            print(f"--{which} {getattr(args, which)} is not a kernelfit checkout (no "
                  "kernelfit/__init__.py); make one with: git worktree add --detach DIR "
                  "COMMIT", file=sys.stderr)
            return 2
        if imported_from(str(checkout)) != str(checkout / "kernelfit"):
            print(f"a child started in --{which} {checkout} does not import its kernelfit "
                  "(an installed copy shadows it?); run from a plain checkout",
                  file=sys.stderr)
            return 2
    return run_ab(
        args, argv, script="bench_code_ab.py", benchmark=f"{args.name}_ab",
        what=("kernelfit's solve with every default (auto: mixed precision) with the code "
              "before and after a change, one fresh process per run, alternating; seconds, "
              "the child's CPU seconds and minor page faults"),
        variants=("before", "after"), one_run=one_run, medians=medians,
        extra={"code": {"before": commit_of(args.before), "after": commit_of(args.after)}},
        line=lambda rec: (f"{rec['code']}: {rec['status']} total {rec['total_s']} s (gram "
                          f"{rec['gram_s']}), sys {rec['sys_s']:.2f} s, "
                          f"{rec['minor_faults']} faults"))


if __name__ == "__main__":
    sys.exit(main())
