"""``kernelfit verify``: run the checks of the paper's claims in ``proofs/``.

The checks live in :mod:`kernelfit.proofs` (readable code, one module per claim, listed with
their statements in the checkout's top-level ``proofs/README.md``); the reusable constructions
are in :mod:`kernelfit.theory`. They ship with the package, so ``verify`` works from an
installed wheel.

Output: each claim's verdict and figures on standard output (or one JSON object with
``--json``), and a report (``report.json``, ``report.md``, PNGs) in ``--out``. Exit code 1
when any check fails; skipped or waiting checks do not fail the run. A run in which nothing
was checked (every check skipped or waiting) exits with 0 too, but its top-level ``passed``
is ``None`` (``nothing_checked``), and the summary line says so and how to get MNIST.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import shutil
import tempfile
import time
from pathlib import Path

from .._io import atomic_batch, atomic_write_text, atomic_writer, dumps_json
from ..errors import InputError
from ._common import check_output_paths
from ._types import nonneg_int

HELP = "check the paper's theoretical claims numerically and symbolically"
DESCRIPTION = ("Run the checks in kernelfit.proofs (Theorem 1 and its depth-k variant, SGD to the "
               "min-norm solution, the kernel-trick identity, curvature, the norm observation).")


def add_arguments(parser):
    parser.add_argument("checks", nargs="*", metavar="CHECK",
                        help="checks to run (default: all); see --list")
    parser.add_argument("--list", action="store_true", help="list the checks and exit")
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds, for tests)")
    parser.add_argument("--out", default="kernelfit-verify", help="report directory")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--data-dir", default=None,
                        help="directory holding mnist/ (else $KERNELFIT_DATA, else the per-user "
                             "data cache); nothing is downloaded: one given without mnist/ "
                             "is refused; else checks without MNIST use synthetic data or "
                             "are skipped")
    parser.add_argument("--seed", type=nonneg_int, default=0, help="random seed of every check")


def load_proofs():
    """The checks: the :mod:`kernelfit.proofs` subpackage (shipped in the wheel)."""
    return importlib.import_module("kernelfit.proofs")


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v[:8]) + (", ..." if len(v) > 8 else "") + "]"
    return str(v)


def _not_run(results) -> str:
    """The checks that did not run, with their status: 'norm skipped'."""
    return ", ".join(f"{d['name']} {d['status']}" for d in results
                     if d["status"] not in ("passed", "failed"))


def _markdown(results, meta):
    lines = ["# kernelfit verify", "", f"- date: {meta['date']}", f"- quick: {meta['quick']}",
             f"- seed: {meta['seed']}", f"- total seconds: {meta['seconds']:.1f}", ""]
    if meta.get("nothing_checked"):
        lines += [f"**Nothing checked**: {_not_run(results)}"
                  + (f" ({meta['get_data']})" if meta.get("get_data") else ""), ""]
    for r in results:
        on = f" (on {r['stand_in']}: MNIST not found)" if r.get("stand_in") else ""
        lines += [f"## {r['name']}: {r['status'].upper()}{on}", "", f"**{r['title']}**", "",
                  f"Statement: `{r['statement']}`", ""]
        for k, ok in r["criteria"].items():
            lines.append(f"- [{'x' if ok else ' '}] {k}")
        lines += ["", "| figure | value |", "|---|---|"]
        for k, v in r["figures"].items():
            cell = _fmt(v).replace("|", "\\|")  # a literal bar inside a table cell
            lines.append(f"| {k} | {cell} |")
        for note in r["notes"]:
            lines += ["", f"> {note}"]
        for p in r["plots"]:
            lines += ["", f"![{Path(p).name}]({Path(p).name})"]
        lines.append("")
    return "\n".join(lines)


def run(args) -> int:
    proofs = load_proofs()
    if args.list:
        for name in proofs.names():
            print(f"{name:15s} {proofs.get(name).TITLE}")
        return 0
    names = list(dict.fromkeys(args.checks)) or proofs.names()  # each once, in order given
    unknown = [n for n in names if n not in proofs.names()]
    if unknown:
        raise InputError(f"unknown check(s) {', '.join(unknown)}; known: "
                         f"{', '.join(proofs.names())}")
    if args.data_dir is not None and not Path(args.data_dir).expanduser().is_dir():
        raise InputError(f"--data-dir {args.data_dir} is not a folder; give the folder holding "
                         "mnist/ (or leave --data-dir out: $KERNELFIT_DATA, else the per-user "
                         "data cache)", param="data_dir")
    if args.data_dir is not None:
        _check_data_dir(args.data_dir, [proofs.get(n) for n in names])
    check_output_paths(args)
    out = Path(args.out)
    earlier = _earlier_report(out)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    # the figures go to a folder of their own inside --out, moved into place with the
    # report once every check has run: an interruption or an error leaves --out as it was
    stage = Path(tempfile.mkdtemp(prefix=".verify-partial-", dir=out))
    try:
        report = _run_checks(args, proofs, names, stage, out)
        plots = [Path(p).name for d in report["checks"] for p in d["plots"]]
        for d in report["checks"]:
            d["plots"] = [str(out / Path(p).name) for p in d["plots"]]
        with atomic_batch():
            for name in plots:
                with atomic_writer(out / name, "wb") as fh:
                    fh.write((stage / name).read_bytes())
            atomic_write_text(out / "report.json", dumps_json(report, indent=1))
            atomic_write_text(out / "report.md", _markdown(report["checks"], report))
        for name in set(earlier) - set(plots):  # the earlier report's figures not made now
            with contextlib.suppress(OSError):
                (out / name).unlink()
    except BaseException:
        if created:
            shutil.rmtree(stage, ignore_errors=True)
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    if args.json:
        print(dumps_json(report))
    else:
        results = report["checks"]
        stand_in = sum(d['status'] == 'passed' and bool(d.get('stand_in')) for d in results)
        counts = (f"{sum(d['status'] == 'passed' for d in results)} passed"
                  + (f" ({stand_in} on synthetic data: MNIST not found)" if stand_in else "")
                  + f", {sum(d['status'] == 'failed' for d in results)} failed, "
                  f"{len(report['skipped'])} skipped/waiting")
        if report["nothing_checked"]:
            counts = f"nothing checked: {_not_run(results)}"
            if report.get("get_data"):
                counts += f" ({report['get_data']})"
        print(f"{counts} in {report['seconds']:.1f} s; report in {out}/report.md")
    # skipped and waiting checks do not fail the run, nor does a run with nothing checked
    return 1 if report["passed"] is False else 0


def _check_data_dir(data_dir: str, modules) -> None:
    """Refuse an explicit ``--data-dir`` without MNIST when a check asked for reads it (it
    ran on synthetic stand-ins instead, over an earlier report made on MNIST): one line
    with the ways out. Checks that take no data (``curvature``) do not look."""
    import inspect

    from ..datasets.mnist import locate_idx_files
    from ..errors import DataError, DownloadError
    from ._advice import missing_data_message
    from .datasets import fetch_way

    if not any("data_dir" in inspect.signature(m.check).parameters for m in modules):
        return
    try:
        locate_idx_files("mnist", Path(data_dir).expanduser(), download_missing=False)
    except DownloadError as exc:
        if exc.facts.get("found_in"):  # --data-dir D/mnist: --data-dir D first
            raise DataError(missing_data_message(exc.facts, exc.message)) from None
        raise DataError(
            f"--data-dir {data_dir} holds no MNIST (missing {', '.join(exc.missing)} in "
            f"{exc.directory}; the checks download nothing). Ways out: "
            f"{fetch_way('mnist', exc.directory)}, or --data-dir the folder holding mnist/, "
            "or leave --data-dir out to run without MNIST (norm skipped, the others on "
            "synthetic stand-ins)", param="data_dir") from None


def _earlier_report(out: Path) -> list:
    """The figures of the verify report already in ``out`` (to remove those this run does
    not make again); refuses a folder whose report.json is another command's."""
    path = out / "report.json"
    if not path.is_file():
        return []
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = None
    if not (isinstance(old, dict) and old.get("command", "verify") == "verify"
            and isinstance(old.get("checks"), list)):
        raise InputError(f"{out} holds another report ({path} is not kernelfit verify's); "
                         "choose another folder", param="out")
    return [Path(p).name for d in old["checks"] if isinstance(d, dict)
            for p in d.get("plots", []) if isinstance(p, str)]


def _run_checks(args, proofs, names, stage: Path, out: Path) -> dict:
    """Run the checks (figures into ``stage``, named by where they will be in ``out``),
    printing each verdict; the report."""
    t0 = time.perf_counter()
    results = []
    for name in names:
        try:
            res = proofs.run(name, out_dir=stage, quick=args.quick, data_dir=args.data_dir,
                             seed=args.seed)
        except OSError as exc:  # a figure being written: named where it was going in --out
            if exc.filename and Path(exc.filename).parent == stage:
                exc.filename = str(out / Path(exc.filename).name)
            raise
        d = res.to_dict()
        results.append(d)
        if not args.json:
            on = f", on {d['stand_in']}" if d.get("stand_in") else ""
            print(f"[{d['status'].upper():7s}] {name}: {d['title']}  ({d['seconds']:.1f} s{on})")
            print(f"    claim: {d['statement']}")
            for k, ok in d["criteria"].items():
                print(f"    {'ok  ' if ok else 'FAIL'} {k}")
            for k, v in d["figures"].items():
                print(f"      {k} = {_fmt(v)}")
            for note in d["notes"]:
                print(f"    note: {note}")
            for p in d["plots"]:
                print(f"    figure: {out / Path(p).name}")
    meta = {"command": "verify", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "quick": bool(args.quick), "seed": args.seed, "seconds": time.perf_counter() - t0}
    # passed: True when every check that ran passed, False when one failed, None when
    # none ran (all skipped or waiting): nothing was checked, said so, not passed
    ran = [d["status"] == "passed" for d in results if d["status"] in ("passed", "failed")]
    skipped = [d["name"] for d in results if d["status"] not in ("passed", "failed")]
    extra = {}
    if not ran and any(d["status"] == "skipped" for d in results):
        from ..theory.data import find_data_dir

        if find_data_dir(args.data_dir) is None:
            extra["get_data"] = ("MNIST not found: `kernelfit datasets fetch mnist` fetches it "
                                 "where verify looks, or give --data-dir D, D/mnist/ holding "
                                 "its four files")
    return dict(meta, passed=all(ran) if ran else None, nothing_checked=not ran,
                skipped=skipped, **extra, checks=results)
