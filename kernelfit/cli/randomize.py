"""``kernelfit randomize``: the randomization tests of Zhang et al. (ICLR 2017, Figure 1) on
exact kernel interpolation: random and partially corrupted labels, shuffled pixels, random
pixels and Gaussian inputs, each at several corruption levels."""

from __future__ import annotations

import sys

from ._types import nonneg_float
from ._common import (add_data_arguments, add_kernel_arguments, add_solver_arguments,
                      check_output_paths, config_from_args, print_json)

PREFIX = "randomize_"  # the files' default prefix inside --out

HELP = ("randomization tests: corrupt labels or pixels at several levels, interpolate "
        "exactly, report train/test error, RKHS norm, time and cond(K)")
DESCRIPTION = (
    HELP + ". Level = fraction corrupted, 0 = clean data: labels: fraction of training "
    "labels resampled uniformly (1.0 = random labels; test labels stay clean); "
    "shuffled-pixels: fraction of images (train and test) given one shared random pixel "
    "permutation; random-pixels: fraction of images (train and test) each given its own "
    "random permutation; gaussian: fraction of images (train and test) replaced by Gaussian "
    "noise with the training pixels' mean and variance. Corruption acts on pixels before "
    "any --features. Example: kernelfit randomize --dataset mnist --n-train 10000 "
    "--mode all --levels 0,0.2,0.4,0.6,0.8,1.0 --bandwidth 5 --out results/")


def add_arguments(p) -> None:
    r = p.add_argument_group("randomization")
    r.add_argument("--mode", default="labels",
                   help="comma-separated modes among labels, shuffled-pixels, random-pixels, "
                        "gaussian, or 'all'")
    r.add_argument("--levels", default="0,0.2,0.4,0.6,0.8,1.0",
                   help="comma-separated corruption levels in [0, 1] (fraction of labels or "
                        "of images corrupted; 0 = clean)")
    r.add_argument("--repeats", type=int, default=1,
                   help="independent corruptions per mode and level (seeds derived from "
                        "--seed, mode, level and repeat)")
    r.add_argument("--train-only", action="store_true",
                   help="input modes corrupt training images only (default: the same fraction "
                        "of test images too, as in the paper)")
    r.add_argument("--condition", choices=("all", "endpoints", "none"), default=None,
                   help="estimate cond(K) for every record (all, the default), only at levels "
                        "0 and 1 (labels share the clean K's value), or never; the estimate "
                        "(60 one-vector triangular solves) can take longer than the solve")
    r.add_argument("--no-condition", action="store_true", help="same as --condition none")
    r.add_argument("--stop-on-error", action="store_true",
                   help="stop at the first failed solve (default: record it as a failed "
                        "record with its message, finish, and exit with code 5)")
    add_data_arguments(p)
    from ._features import add_feature_arguments

    add_feature_arguments(p)
    add_kernel_arguments(p)
    add_solver_arguments(p)
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true",
                   help="print one JSON object (records, summary, setup)")
    o.add_argument("--out", default=None, metavar="DIR",
                   help="write randomize_records.json, randomize_table.md and PNG plots "
                        "to DIR (created if missing; each file written atomically)")
    o.add_argument("--prefix", default=PREFIX, help="file-name prefix inside --out")
    o.add_argument("--note", default=None,
                   help="a note printed in the table and plots (e.g. the data's provenance)")
    o.add_argument("--tolerance", type=nonneg_float, default=None, metavar="R",
                   help="accept relative residuals up to R: without it a run with a solve "
                        "whose float64 relative residual is above 1e-8 exits with code 6 "
                        "(not exact)")


def run(args) -> int:
    from ..errors import InputError, NotPositiveDefiniteError
    from ..randomization import (check_out_dir, failure_message, parse_levels, parse_modes,
                                 render_text, run_randomization, write_outputs)

    # every argument check before loading or solving anything
    modes = parse_modes(args.mode)
    levels = parse_levels(args.levels)
    if args.repeats < 1:
        raise InputError(f"--repeats must be at least 1, got {args.repeats}")
    if args.out is not None:
        check_out_dir(args.out)
        if "/" in args.prefix or "\\" in args.prefix:
            raise InputError(f"--prefix must be a file-name prefix, got {args.prefix!r}")
    elif args.prefix != PREFIX:
        raise InputError("--prefix names the files written to --out; add --out DIR, or leave "
                         "--prefix out")
    check_output_paths(args)
    cfg = config_from_args(args)
    if args.no_condition and args.condition not in (None, "none"):
        raise InputError(f"--no-condition contradicts --condition {args.condition}; give one "
                         "of them")
    which = "none" if args.no_condition else (args.condition or "all")
    condition = {"all": True, "endpoints": "endpoints", "none": False}[which]
    result = run_randomization(
        cfg, modes, levels, args.repeats, estimate_condition=condition,
        corrupt_test=not args.train_only,
        on_error="raise" if args.stop_on_error else "record",
        show_progress=cfg.solver.show_progress)
    if args.out is not None:
        result["files"] = write_outputs(result, args.out, prefix=args.prefix, note=args.note)
    if args.note:
        result["note"] = args.note
    if args.json:
        print_json(result)
    else:
        if args.note:
            print(f"note: {args.note}")
        sys.stdout.write(render_text(result))
        for f in result.get("files", []):
            print(f"wrote {f}")
    warn = failure_message(result)
    if warn:
        warn = warn.replace("stopping at the first failure, on_error='raise',",
                            "--stop-on-error stops at the first failure and")
        if args.out is None and not args.json:
            warn = warn.replace("each record's 'error' holds its message", "--out DIR or "
                                "--json writes the records, each with its 'error'")
        else:
            records = next((f for f in result.get("files", []) if f.endswith(".json")), None)
            if records is not None:
                warn = warn.replace("each record's 'error' holds its message",
                                    f"each record in {records} holds its 'error'")
        from ._advice import flags_for_names

        print(f"kernelfit randomize: warning: {flags_for_names(warn)}", file=sys.stderr)
    from . import exit_code_for

    if result["n_failed"]:
        return exit_code_for(NotPositiveDefiniteError())
    return _exactness_exit(result, args)


def _exactness_exit(result: dict, args) -> int:
    """Exit code 6, with the ways out on standard error, when a solve is not exact and
    ``--tolerance`` does not accept its residual (as ``kernelfit solve``)."""
    from ..kernel_defaults import exit_code_for
    from ..randomization import inexact_records
    from ._advice import NO_FINITE_RESIDUAL, inexact_ways_out, short_of_tol_note

    # the facts the advice's memory check needs, which the result holds once for all
    shared = {"n_classes": result["n_classes"], "device": result["device"]}
    ok = [dict(r, **shared) for r in result["records"] if r["status"] == "ok"]
    inexact = [dict(r, **shared) for r in inexact_records(result)]
    if not inexact:
        note = short_of_tol_note(ok, args)
        if note:
            print(f"kernelfit randomize: note: {note}", file=sys.stderr)
        return 0
    code = max(exit_code_for(r, args.tolerance) for r in inexact)
    # the worst point's reason in full, the others by name (their reasons are in the records)
    worst = max(inexact, key=lambda r: r.get("relative_residual") or float("inf"))
    others = [_point(r) for r in inexact if r is not worst]
    also = ""
    if others:
        also = "; also " + ", ".join(others[:5]) + (
            f" and {len(others) - 5} more" if len(others) > 5 else "")
    msg = (f"kernelfit randomize: {'accepted' if code == 0 else 'error'}: "
           f"{len(inexact)} of {len(ok)} solves not exact ({_point(worst)}: "
           f"{worst.get('inexact_reason')}{also})")
    if code:
        ways = inexact_ways_out(inexact, args,
                                bandwidth_given=result.get("bandwidth_rule") == "given")
        msg += "; ways out: " + "; ".join(ways or [NO_FINITE_RESIDUAL]) + "."
    print(msg, file=sys.stderr)
    return code


def _point(rec: dict) -> str:
    return f"{rec['mode']} level {rec['level']:g} repeat {rec['repeat']}"
