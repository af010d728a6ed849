"""The loop two A/B benchmark scripts share (``bench_deflation.py``, ``bench_code_ab.py``):
the machine with its GEMM peaks measured first in a child, two variants run alternately
(the one that goes first changing round by round, so a slow spell of the machine falls on
both), and the JSON result with its file name tag."""

from __future__ import annotations

import datetime as _dt
import json
import sys
from pathlib import Path

from kernelfit.bench.machine import describe_machine
from kernelfit.bench.runner import run_child

#: the stage times of a solve child every A/B run records (as ``<stage>_s``)
STAGES = ("gram", "factor", "solve", "predict", "total")


def solve_spec(args, n: int, **extra) -> dict:
    """The default kernelfit solve of an A/B run (MNIST, Gaussian; a dry run: random data,
    64 features, 200 test points, mixed precision), with ``extra`` spec keys."""
    spec = {"task": "solve", "impl": "kernelfit", "n": n, "n_test": args.n_test,
            "kernel": "gaussian", "bandwidth": args.bandwidth, **extra, "repeats": 1}
    if args.dry_run:
        spec.update(dataset="random", d=64, n_test=200, precision="mixed")
    else:
        spec.update(dataset="mnist", data_dir=args.data_dir)
    return spec


def child_record(child: dict, rec: dict, keys: tuple) -> dict:
    """``rec`` completed from a solve child: its status, reason and peak memory, the stage
    times, the first repeat's ``keys``, and the end of stderr when it failed."""
    rep = ((child.get("result") or {}).get("repeats") or [{}])[0]
    rec.update(status=child["status"], reason=child.get("reason"),
               peak_rss_bytes=child.get("max_rss_bytes"))
    rec.update({f"{k}_s": rep.get(k) for k in STAGES})
    rec.update({k: rep.get(k) for k in keys})
    if child["status"] != "ok":
        rec["stderr_tail"] = (child.get("stderr_tail") or "")[-1500:]
    return rec


def alternating(rounds: int, variants: tuple):
    """``(round, variant)`` pairs, rounds counted from 1: both variants each round, the one
    that goes first changing round by round (a slow spell of the machine falls on both)."""
    for r in range(max(1, rounds)):
        for variant in (variants if r % 2 == 0 else variants[::-1]):
            yield r + 1, variant


def add_output_args(p, results: str, dry_run: str) -> None:
    """The options every benchmark script here takes on its output: ``--tag`` (file name
    tag), ``--out`` (folder, default ``results``) and ``--dry-run`` (``dry_run``: what it
    does instead), on the ``argparse`` parser ``p``."""
    p.add_argument("--tag", default=None, help="file name tag (default: from the CPU)")
    p.add_argument("--out", default=results)
    p.add_argument("--dry-run", action="store_true", help=dry_run)


def no_data(args) -> bool:
    """Whether neither ``--data-dir`` nor ``--dry-run`` was given (then said in one line on
    stderr): the MNIST benchmarks' refusal, exit code 2."""
    if args.dry_run or args.data_dir:
        return False
    print("give --data-dir (the folder holding mnist/) or --dry-run", file=sys.stderr)
    return True


def sizes_of(text: str) -> list:
    """The whole numbers of a comma-separated option (``--sizes``, ``--n``), sorted and
    unique; ``[]`` when one is not a whole number (the caller refuses in one line)."""
    try:
        return sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        return []


def file_tag(args, machine: dict) -> str:
    """The result file's name tag: ``dry_run`` for a dry run, else ``args.tag``, else the
    CPU's name made safe for a file name."""
    if args.dry_run:
        return "dry_run"
    cpu = (machine.get("cpu") or {}).get("model") or "cpu"
    return args.tag or "".join(c if c.isalnum() else "_" for c in cpu.lower()).strip("_")


def write_result(args, argv, *, script: str, benchmark: str, what: str, machine: dict,
                 body: dict) -> Path:
    """Write ``<args.out>/<benchmark>_<tag>.json`` (:func:`file_tag`): the benchmark's name,
    issue, time, command line (``script`` and ``argv``, else ``sys.argv``) and ``what``,
    then ``body``; say so on stdout. Returns the path."""
    out = {"benchmark": benchmark, "issues": [14],
           "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "command": f"{script} " + " ".join(argv if argv is not None else sys.argv[1:]),
           "what": what, **body}
    path = Path(args.out) / f"{benchmark}_{file_tag(args, machine)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(f"wrote {path}")
    return path


def run_ab(args, argv, *, script: str, benchmark: str, what: str, variants: tuple,
           one_run, line, medians, extra: dict = None) -> int:
    """Run ``one_run(args, n, variant)`` for each n of ``args.n`` (1,500 for a dry run),
    ``args.rounds`` rounds of both ``variants``; print ``line(rec)`` after each run; write
    ``<args.out>/<benchmark>_<tag>.json`` (``args.tag``, else the CPU's name; ``dry_run``)
    with ``medians(runs)`` and ``extra``. Returns 0 when every run was ok, else 1."""
    if no_data(args):
        return 2
    ns = [1500] if args.dry_run else sizes_of(args.n)
    if not ns or min(ns) < 2:
        print(f"--n takes whole numbers of at least 2, comma-separated (got {args.n!r})",
              file=sys.stderr)
        return 2
    if not args.dry_run:  # MNIST must be there: say so once, before any measurement
        from kernelfit.datasets.registry import load_raw
        from kernelfit.errors import KernelfitError

        try:
            load_raw("mnist", data_dir=args.data_dir, download=False)
        except KernelfitError as exc:
            print(f"--data-dir {args.data_dir}: {exc}", file=sys.stderr)
            return 2
    rounds = 1 if args.dry_run else max(1, args.rounds)
    peaks = run_child({"task": "peaks", "cpu": True, "gpu": False,
                       "size": 1024 if args.dry_run else 4096, "repeats": 3}, timeout=600)
    machine = describe_machine()
    machine["peaks"] = {k: v for k, v in (peaks.get("result") or {}).items() if k != "status"}
    runs = []
    for n in ns:
        for r, variant in alternating(rounds, variants):
            rec = one_run(args, n, variant)
            rec["round"] = r
            runs.append(rec)
            print(f"n={n} round {r} {line(rec)}", flush=True)
    meds = medians(runs)
    write_result(args, argv, script=script, benchmark=benchmark, what=what, machine=machine,
                 body={**(extra or {}), "machine": machine, "runs": runs, "medians": meds})
    print(json.dumps(meds, indent=1))
    return 0 if all(r["status"] == "ok" for r in runs) else 1
