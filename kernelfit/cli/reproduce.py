"""``kernelfit reproduce``: the paper's kernel experiments, resumable, with one report."""

from __future__ import annotations

import sys

from ..errors import InputError
from ._types import positive_int

HELP = "run the paper's kernel experiments (resumable) and write the report (md, JSON, PNG)"
DESCRIPTION = (HELP + ". Finished experiments and solves are stored in --out as soon as they "
               "are done; run the same command again to resume. Exit codes: 0 all done and "
               "exact, 1 an experiment failed, 3 a dataset is missing, 4 an experiment was "
               "refused for memory, 6 a solve was not exact (residual above 1e-8). Example: "
               "kernelfit reproduce --data-dir D --out benchmarks/results/reproduce")


def add_arguments(p) -> None:
    p.add_argument("--only", action="append", default=None, metavar="NAME",
                   help="run only these experiments (repeat, or comma-separated); see --list")
    p.add_argument("--quick", action="store_true",
                   help="small n (under a minute, for CI and a first look); stored apart "
                        "from full runs")
    p.add_argument("--list", action="store_true", help="list the experiments and exit")
    p.add_argument("--data-dir", default=None,
                   help="folder holding mnist/ and cifar10/ (official cifar-10-python.tar.gz) or "
                        "cifar10-jpeg/cifar10-jpeg.tar.gz (else $KERNELFIT_DATA, else the cache)")
    p.add_argument("--out", default="kernelfit-reproduce", metavar="DIR",
                   help="where results, the resume state and the report go")
    p.add_argument("--max-filters", type=positive_int, default=None, metavar="N",
                   help="cut cifar-random-conv's curve at N filters (e.g. 8000; --list gives the "
                        "measured times); run again without it to continue the curve from "
                        "where it stopped")
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "gpu"),
                   help="where the solves and cifar-random-conv's features and Gram sums run "
                        "(auto: a usable GPU, else the CPU); stored results are kept whatever "
                        "device made them")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args) -> int:
    from ..reproduce import list_experiments, run_reproduce
    from ..reproduce.runner import STATUS_EXIT
    from ._advice import missing_data_message
    from ._common import check_output_paths, print_json

    if args.list:
        found = list_experiments()
        if args.json:
            print_json({"experiments": [{"name": name, "needs": list(needs), "summary": summary,
                                         "full_scale": estimate}
                                        for name, needs, summary, estimate in found]})
            return 0
        for name, needs, summary, estimate in found:
            print(f"{name:18s} [{', '.join(needs)}] {summary}\n{'':18s} full scale: {estimate}")
        return 0
    check_output_paths(args)
    names = None
    if args.only:
        names = [n.strip() for item in args.only for n in item.split(",")]
        if not all(names):
            raise InputError(f"--only {','.join(args.only)!r} has an empty name; give "
                             "experiment names (see --list)")
        if args.max_filters is not None and "cifar-random-conv" not in names:
            raise InputError("--max-filters cuts cifar-random-conv's curve, which --only "
                             "leaves out; leave --max-filters out, or add cifar-random-conv "
                             "to --only")
    log = None if args.json else (lambda msg: print(msg, file=sys.stderr, flush=True))
    report = run_reproduce(names, quick=args.quick, data_dir=args.data_dir, out_dir=args.out,
                           progress=False if args.no_progress else None, log=log,
                           max_filters=args.max_filters, device=args.device)
    if args.json:
        print_json(report)
    else:
        seen = {}
        for name, st in report["experiments"].items():
            if names and name not in names and st["status"] == "not run":
                continue
            msg = st.get("message") or ""
            if st.get("facts"):  # missing data: the way out with the flag
                msg = missing_data_message(st["facts"], msg)
            if msg in seen and len(msg) > 40:  # a long message once, later lines refer to it
                msg = f"the same message as {seen[msg]}"
            elif msg:
                seen[msg] = name
            print(f"{name:18s} {st['status']}" + (f": {msg}" if msg else ""))
        print(f"report: {report['paths']['md']} (also .json, .png)")
    codes = [STATUS_EXIT.get(st["status"], 0) for st in report["experiments"].values()]
    for code in (1, 3, 4):
        if code in codes:
            return code
    if any(r.get("exact") is False for r in report["rows"]):
        from ..kernel_defaults import INEXACT_EXIT_CODE

        print("kernelfit reproduce: a solve was not exact (residual above 1e-8); see the "
              "report's residual column", file=sys.stderr)
        return INEXACT_EXIT_CODE
    return 0
