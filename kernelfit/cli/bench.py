"""``kernelfit bench``: time kernelfit's exact solve on this machine, with its peers.

Examples (the default run skips sizes whose projected time would pass --budget, 600 s)::

    kernelfit bench --out bench-results
    kernelfit bench --n 2000,5000,10000 --peers sklearn --device cpu --repeats 3
    kernelfit bench --dataset mnist --data-dir ~/data --n 5000,10000,20000

Describes the machine and measures its GEMM peaks, then runs kernelfit (CPU, and GPU when
usable) and the peers (scikit-learn KernelRidge, SciPy cho_factor on a dense K) at each n,
each run in its own process with a timeout. Crashes, timeouts and memory blow-ups are
recorded, not fatal. Writes ``bench_<host>.json``, ``.md`` and three PNG plots to ``--out``.
"""

from __future__ import annotations

import dataclasses
import math
import sys

from ..errors import InputError
from ._common import check_kernel_flags, check_output_paths, positive_int
from ._types import MIN_PEAK_SIZE, fixed_bandwidth_arg, nonneg_int, peak_size_arg

DEFAULT_N_TEST = 1000
D_RANDOM = 784  # the width of random data (MNIST's)

HELP = "benchmark exact solves on this machine: kernelfit (CPU/GPU) vs scikit-learn and SciPy"
DESCRIPTION = (
    HELP + ". Each run goes in its own process with a timeout; crashes (e.g. OpenBLAS "
    "segfaults) and memory blow-ups are recorded. Writes bench_<host>.json/.md and plots "
    "(time vs n with the n^3 slope, fraction of GEMM peak, kernelfit vs peers) to --out.")


def _n_list(text: str):
    import argparse

    try:  # whole numbers, written as 20000 or 2e4 (not 150.9, inf or nan)
        floats = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        floats = None
    if not floats or not all(math.isfinite(v) and v == int(v) for v in floats):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of whole numbers "
                                         f"n, got {text!r}")
    vals = [int(v) for v in floats]
    if any(v < 2 for v in vals):
        raise argparse.ArgumentTypeError(f"every n must be an integer >= 2, got {text!r}")
    return vals


def _env_pair(text: str):
    import argparse

    key, sep, val = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), val


def add_arguments(p) -> None:
    from ..bench.suite import DEFAULT_N
    from ..kernels import KERNEL_NAMES

    g = p.add_argument_group("what to run")
    g.add_argument("--n", type=_n_list, default=list(DEFAULT_N), metavar="N1,N2,...",
                   help="training-set sizes, run in increasing order; sizes that do not fit "
                        "in memory (or in the time budget) are skipped with the reason")
    g.add_argument("--device", default="all", choices=("cpu", "gpu", "all"),
                   help="kernelfit devices; an unusable GPU is reported as unavailable")
    g.add_argument("--peers", default="sklearn,scipy",
                   help="comma-separated peers: sklearn (KernelRidge, alpha near 0), scipy "
                        "(cho_factor/cho_solve on a dense K), or none")
    g.add_argument("--repeats", type=positive_int, default=3,
                   help="repetitions of each kernelfit run (medians are reported)")
    g.add_argument("--peer-repeats", type=positive_int, default=3,
                   help="repetitions of each peer run (medians; equal to --repeats keeps the "
                        "ratios fair at small n, where single runs are noisy)")
    g.add_argument("--timeout", type=float, default=600.0, metavar="S",
                   help="seconds before one run is killed (each repetition is its own run)")
    g.add_argument("--budget", type=float, default=600.0, metavar="S",
                   help="skip runs whose projected time (n^3 scaling of the previous n) "
                        "would end the whole benchmark after S seconds (0: no budget)")
    g.add_argument("--peer-env", type=_env_pair, action="append", default=[],
                   metavar="KEY=VALUE",
                   help="environment for the peers' processes, e.g. "
                        "OPENBLAS_CORETYPE=Haswell (repeatable)")
    d = p.add_argument_group("data and kernel")
    d.add_argument("--dataset", default="random",
                   help="random (seeded, uniform in [0,1], --d features, 10 classes) or a "
                        "kernelfit dataset name such as mnist")
    d.add_argument("--data-dir", default=None, help="folder of the dataset files")
    d.add_argument("--d", type=positive_int, default=D_RANDOM,
                   help="features of random data (a dataset has its own)")
    d.add_argument("--n-test", type=int, default=None,
                   help="test points (predict time); default 1000, or all a dataset has "
                        "where that is fewer")
    d.add_argument("--seed", type=nonneg_int, default=0, help="seed of the data")
    d.add_argument("--kernel", default="gaussian", choices=KERNEL_NAMES)
    d.add_argument("--bandwidth", type=fixed_bandwidth_arg, default=None,
                   help="Gaussian/Laplacian bandwidth h, the same for every implementation "
                        "and n (default: the data's, printed and recorded: 5 for pixels in "
                        "[0, 1], 0.75 x the median distance for npz arrays, "
                        "5 x sqrt(d / 784) for random data)")
    d.add_argument("--degree", type=positive_int, default=None,
                   help="degree of the polynomial and normalized kernels (default: 4)")
    d.add_argument("--dtype", default="float64", choices=("float64", "float32"),
                   help="float32: plain float32 solves; float64 (default): kernelfit's "
                        "--precision auto, which may factor in float32 and refine in "
                        "float64 (mixed; the records say which ran)")
    d.add_argument("--tile-size", type=positive_int, default=None)
    d.add_argument("--sklearn-alpha", type=float, default=1e-10,
                   help="KernelRidge alpha (near 0: interpolation)")
    m = p.add_argument_group("peaks and output")
    m.add_argument("--peak-size", type=peak_size_arg, default=4096,
                   help=f"matrix size of the GEMM peak measurement (at least {MIN_PEAK_SIZE})")
    m.add_argument("--no-peaks", action="store_true",
                   help="skip the GEMM peak measurement (no fraction-of-peak figures)")
    m.add_argument("--out", default="kernelfit-bench", metavar="DIR",
                   help="folder for bench_<host>.json, .md and the PNG plots")
    m.add_argument("--json", action="store_true", help="also print the results as JSON")
    m.add_argument("--no-progress", action="store_true", help="no progress bar")


def _config(args):
    """The :class:`BenchConfig` of the arguments (destinations named as its fields, except
    the few renamed below)."""
    from dataclasses import fields

    from ..bench.suite import BenchConfig, parse_devices, parse_peers

    if args.data_dir is not None and args.dataset == "random":
        raise InputError("--data-dir names the folder of a dataset, and random data (the "
                         "default --dataset) has none: name a dataset with --dataset (e.g. "
                         "--dataset mnist), or leave --data-dir out")
    if args.n_test is not None and args.n_test < 0:
        raise InputError("--n-test must be >= 0")
    check_kernel_flags(args)  # a flag the kernel has no parameter for: refused, not ignored
    flat = {f.name: getattr(args, f.name) for f in fields(BenchConfig) if hasattr(args, f.name)}
    if flat.get("degree") is None:
        flat.pop("degree", None)  # BenchConfig's own default
    flat.update(n_test=DEFAULT_N_TEST if args.n_test is None else args.n_test,
                n_list=args.n, bandwidth=5.0 if args.bandwidth is None else float(args.bandwidth),
                devices=parse_devices(args.device), peers=parse_peers(args.peers),
                timeout_s=args.timeout, budget_s=args.budget,
                measure_peaks=not args.no_peaks, peer_env=dict(args.peer_env))
    return BenchConfig(**flat).validate()


def _default_bandwidth(cfg, raw) -> tuple:
    """``(h, rule)``: the one bandwidth every implementation and n gets where none was
    given. A dataset's: :func:`kernelfit.kernel_defaults.choose_bandwidth` on its training
    rows (h = 5 for pixels in [0, 1], else 0.75 x the median distance of a seeded sample of
    the largest n's rows, as ``kernelfit solve`` takes); random data (uniform in [0, 1]):
    h = 5 scaled by sqrt(d / 784), which keeps h over the median distance (about
    sqrt(d / 6)) what it is at MNIST's width, where h = 5 (h = 5 at d = 20 made K all but
    a matrix of ones, too ill-conditioned to solve)."""
    import numpy as np

    from ..datasets import scaled_pixels
    from ..kernel_defaults import RAW_BANDWIDTH, choose_bandwidth

    if raw is None:
        h = RAW_BANDWIDTH * math.sqrt(cfg.d / 784.0)
        return h, {"rule": "random-data default", "value": h,
                   "why": f"random data in [0, 1]: h = 5 x sqrt(d / 784), d = {cfg.d}"}
    X = None  # (pixels in [0, 1] are not read: h = 5)
    if not scaled_pixels(cfg.dataset):
        rows = raw.X_train[:max(cfg.n_list)]
        X = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
    h, rule = choose_bandwidth(cfg.kernel, "raw", None, X, dataset=cfg.dataset, seed=cfg.seed)
    return float(h), rule


def _bench_words(reason):
    """A run's error as bench says it: a K that is not positive definite without the
    solver's ways out (solver='eigh', a ridge), which are not bench's flags."""
    text = str(reason)
    return text.split(". Ways out: ")[0] if "NotPositiveDefiniteError" in text else reason


def _line(rec: dict) -> str:
    from ..report import fmt_bytes, fmt_seconds

    head = f"{rec['label']:>14}  n={rec['n']:<7}"
    if rec["status"] != "ok":
        return f"{head} {rec['status'].upper()}: {_bench_words(rec.get('reason'))}"
    rate = ""
    if rec.get("factor_gflops"):
        rate = f"  factor {fmt_seconds(rec['factor'])} = {rec['factor_gflops']:.1f} GFLOP/s"
        if rec.get("fraction_of_peak"):
            rate += f" ({100 * rec['fraction_of_peak']:.0f}% of peak" + (
                ": above it, see the note" if rec["fraction_of_peak"] > 1 else "") + ")"
    mem = fmt_bytes(rec.get("peak_rss_bytes"))
    res = rec.get("relative_residual")
    return (f"{head} total {fmt_seconds(rec['total'])}{rate}  peak {mem}"
            + (f"  residual {res:.1e}" if res is not None else "")
            + ("  NOT exact" if rec.get("exact") is False else ""))


def _check_some_n_fits(cfg, d: int) -> None:
    """Refuse before running anything when no requested n fits in memory: by the sizing
    that decides which runs are skipped (:func:`kernelfit.bench.runner.dense_bytes_needed`,
    the child's data counted), so the size it offers is one bench runs."""
    import numpy as np

    from ..backend import available_host_memory
    from ..bench.runner import dense_bytes_needed
    from ..bench.suite import largest_fitting_n
    from ..memory import SAFETY, fmt_bytes

    avail = available_host_memory()

    def need(n):
        return dense_bytes_needed("kernelfit", n, d, cfg.n_test, dtype=np.dtype(cfg.dtype),
                                  tile_size=cfg.tile_size, device_bytes=avail,
                                  auto=cfg.dtype == "float64")

    if any(need(n) <= SAFETY * avail for n in cfg.n_list):
        return
    n0 = min(cfg.n_list)
    n_max = largest_fitting_n("kernelfit", avail, d=d, n_test=cfg.n_test, dtype=cfg.dtype,
                              tile_size=cfg.tile_size)
    way = (f"--n {n_max} or less" if n_max >= 2 else
           "free memory or run on a machine with more")
    raise InputError(f"no size in --n fits in memory: n = {n0} needs about "
                     f"{fmt_bytes(need(n0))}, "
                     f"{fmt_bytes(avail)} is available; nothing was run. Way out: {way}")


def run(args) -> int:
    from tqdm.auto import tqdm

    from ..bench.report import machine_lines, peak_caveat, write_report
    from ..bench.suite import run_bench
    from ._common import print_json

    cfg = _config(args)  # bad input (unknown peer, bad n) fails here, before anything runs
    check_output_paths(args)
    if args.device == "gpu":  # asked for by name: kernelfit would not be measured at all
        from ..backend import gpu_unavailable_reason

        reason = gpu_unavailable_reason()
        if reason:
            raise InputError(f"--device gpu: no usable GPU here ({reason}); --device cpu "
                             "measures this machine's CPU")
    d = cfg.d
    if cfg.dataset != "random":
        from ..datasets.registry import load_raw, parse_name

        try:
            parse_name(cfg.dataset)
        except InputError as exc:  # bench also knows its own random data
            raise InputError(exc.message.replace("; known: ", "; known: random (the "
                                                 "default), ", 1), **exc.facts) from None
        if args.d != D_RANDOM:
            raise InputError(f"--d sets the width of random data; --dataset {cfg.dataset} has "
                             "its own: leave --d out")
        # a missing or corrupt dataset fails once, here, not in every child; so does an
        # --n-test beyond its test set (the default takes what there is, up to 1000)
        # the largest --n must be there too (it failed in every child otherwise); said
        # after --n-test's check, which the user typed where --n may be the default. The
        # stored arrays give both counts and the width (no subset turned into floats)
        raw = load_raw(cfg.dataset, data_dir=cfg.data_dir)
        d = math.prod(raw.X_train.shape[1:])
        has = int(raw.y_test.shape[0])
        if cfg.n_test > has:
            if args.n_test is not None:
                raise InputError(f"--n-test {cfg.n_test} is more than the {has} test points "
                                 f"{cfg.dataset} has; give --n-test {has} or less")
            cfg = dataclasses.replace(cfg, n_test=has)
        n_train = int(raw.y_train.shape[0])
        if max(cfg.n_list) > n_train:
            raise InputError(f"--n {max(cfg.n_list)} is more than the {n_train} training "
                             f"points {cfg.dataset} has; give --n values up to {n_train}")
        # the records, flop counts, pre-flight and extrapolation use the dataset's width
        cfg = dataclasses.replace(cfg, d=int(d))
    rule = None
    if args.bandwidth is None and cfg.kernel in ("gaussian", "laplacian"):
        h, rule = _default_bandwidth(cfg, raw if cfg.dataset != "random" else None)
        cfg = dataclasses.replace(cfg, bandwidth=h)
    _check_some_n_fits(cfg, d)
    if rule is not None:  # (after the refusals: bad input gets one line)
        print(f"kernelfit bench: bandwidth h = {cfg.bandwidth:.4g} ({rule['why']}); "
              "--bandwidth sets another", file=sys.stderr)

    def on_event(kind, payload):
        if kind == "machine":
            for line in machine_lines(payload):
                tqdm.write(line, file=sys.stderr)
        elif kind == "record":
            tqdm.write(_line(payload), file=sys.stderr)

    results = run_bench(cfg, on_event=on_event,
                        show_progress=False if args.no_progress else None)
    if rule is not None:  # (the JSON's and the markdown's configuration say why)
        results.setdefault("config", {})["bandwidth_rule"] = rule
    if not any(r.get("status") == "ok" for r in results.get("records", [])):
        recs = results.get("records", [])
        reasons = sorted({f"{r.get('status')}: {r.get('reason')}" for r in recs})
        statuses = {r.get("status") for r in recs}
        if statuses == {"unavailable"}:  # what was asked for cannot run here at all
            way = "--device cpu (or all) to measure what this machine has"
        elif statuses <= {"unavailable", "error"} and any(
                "NotPositiveDefiniteError" in str(r.get("reason")) for r in recs):
            # (the solver's own ways out, --solver eigh or a ridge, are not bench's flags)
            reasons = sorted({_bench_words(r) for r in reasons})
            way = ("bench times Cholesky solves, which need K positive definite: a kernel "
                   "whose K is (--kernel gaussian), or --n values below the rank the error "
                   "names")
        elif statuses <= {"unavailable", "error"}:
            way = "mend what the error says, then run again"
        else:
            way = "ask for smaller sizes with --n or a longer --timeout / --budget"
        raise InputError("nothing was measured, so no report was written ("
                         + ("; ".join(reasons[:3]) or "no run") + f"); {way}")
    paths = write_report(results, args.out)
    # with --json, standard output holds the JSON object only; the summary goes to stderr
    say = (lambda text: print(text, file=sys.stderr)) if args.json else print
    for c in results.get("comparisons", []):
        bits = [f"n={c['n']}"]
        if "factor_rate_vs_scipy" in c:
            potrf = "spotrf" if getattr(args, "dtype", None) == "float32" else "dpotrf"
            bits.append(f"factor rate / scipy {potrf} {c['factor_rate_vs_scipy']:.2f}"
                        + (f" (kernelfit {c['precision']}: a float32 factor)"
                           if c.get("precision") not in (None, "float64") else ""))
        for peer in ("sklearn", "scipy"):
            if f"time_vs_{peer}" in c:
                bits.append(f"time / {peer} {c[f'time_vs_{peer}']:.2f}")
        say("  ".join(bits))
    caveat = peak_caveat(results.get("records") or [])
    if caveat:
        say(f"note: {caveat}")
    skipped = results.get("skipped") or []
    if skipped:
        say(f"{len(skipped)} run(s) not measured (see the report): " +
            "; ".join(f"{s['label']} n={s['n']} {s['status']}" for s in skipped))
    for kind, path in paths.items():
        say(f"{kind}: {path}")
    if args.json:
        print_json(results)
    return 0
