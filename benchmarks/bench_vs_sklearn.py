"""kernelfit vs scikit-learn's KernelRidge on real MNIST, end to end, one process per run.

Usage (one command; the final measurements should be taken on a quiet machine)::

    python benchmarks/bench_vs_sklearn.py --data-dir ../shared/data --haswell

Options (defaults in brackets):

    --n 5000,10000,20000        training sizes [5000,10000,20000]
    --n-test N                  MNIST test points [10000]
    --data-dir D                folder holding mnist/ [$KERNELFIT_DATA, else the user cache]
    --bandwidth H               Gaussian bandwidth; sklearn gets kernel='rbf',
                                gamma = 1 / (2 H^2) [5]
    --sklearn-alpha A           KernelRidge alpha (near 0: interpolation) [1e-10]
    --haswell                   also run scikit-learn with OPENBLAS_CORETYPE=Haswell in the
                                child's environment (avoids the OpenBLAS dsyrk/dpotrf
                                segfault at n = 20,000 on some CPUs)
    --quartic-n N|auto|0        also fit kernelfit with the normalized quartic kernel
                                <x/|x|, z/|z|>^4 at this n; 'auto' = the largest MNIST n
                                (<= 60,000) whose float64 solve fits in memory now; 0 = skip
                                [auto]
    --repeats R                 rounds per n; each round runs kernelfit, then scikit-learn
                                (then scikit-learn with Haswell kernels), one child each,
                                so that a slow spell falls on all alike; medians [3]
    --timeout S                 seconds before a run is killed [1800]
    --keep-blas-env             keep OPENBLAS_CORETYPE from this shell in the children
                                (default: removed, so plain runs use OpenBLAS's own choice
                                of kernels, as a user's would; --haswell sets it explicitly).
                                The machine block and the GEMM peaks come from a child in
                                the plain runs' environment: its BLAS kernel is theirs
    --out DIR                   where vs_sklearn_<host>.json/.png go [benchmarks/results]

What each child measures (the MNIST load is excluded for both):
  kernelfit: KernelInterpolator(kernel='gaussian', bandwidth=H).fit (Gram + Cholesky +
             solve + residual check K alpha - Y) + predict on the test set;
  sklearn:   KernelRidge(alpha=A, kernel='rbf', gamma=1/(2H^2)).fit(X, one-hot Y) +
             predict; its relative residual is checked afterwards, outside the timing.
Peak memory is the child's ru_maxrss (from wait4, so it is known for crashed runs too).
A segfault is recorded as 'crashed (SIGSEGV)', a timeout or memory blow-up likewise.

The GEMM peaks (DGEMM, SGEMM at 4096^2) are measured first, in a child; each kernelfit
record then carries its stages' achieved rates against them and the "limit": its flop
count (Gram n^2 d, factor n^3/3 at the peak of the precision it ran in, prediction
2 n_test n d) over the peak (:func:`kernelfit.bench.suite.limit_seconds`).

Targets checked in the JSON's "targets" block (issue 14): at n = 10,000, kernelfit end to
end <= 0.35x scikit-learn's time and <= 0.5x its peak memory with the same test error; at
n = 20,000, <= 0.3x the time of scikit-learn with OPENBLAS_CORETYPE=Haswell, same error.
Ratios are given against the peers measured in the same run and against the reference
figures measured when the first targets were set (sklearn 11.0 s / 2.88 GB / 2.66% at
10,000; sklearn-Haswell 60.6 s / 9.6 GB / 1.96% at 20,000).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the checkout's kernelfit, as the other scripts

REFERENCE = {
    10000: {"peer": "sklearn", "time_s": 11.0, "memory_bytes": 2.88e9, "test_error": 0.0266,
            "max_time_ratio": 0.35, "max_memory_ratio": 0.5},
    20000: {"peer": "sklearn-haswell", "time_s": 60.6, "memory_bytes": 9.6e9,
            "test_error": 0.0196, "max_time_ratio": 0.3, "max_memory_ratio": 0.5},
}
MNIST_TRAIN = 60000


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", default="5000,10000,20000")
    p.add_argument("--n-test", type=int, default=10000)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--bandwidth", type=float, default=5.0)
    p.add_argument("--sklearn-alpha", type=float, default=1e-10)
    p.add_argument("--haswell", action="store_true")
    p.add_argument("--quartic-n", default="auto")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--peak-size", type=int, default=4096)
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--keep-blas-env", action="store_true")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args(argv)
    try:
        args.n_list = sorted({int(float(t)) for t in args.n.split(",") if t.strip()})
    except ValueError:
        p.error(f"--n: expected a comma-separated list of integers, got {args.n!r}")
    if not args.n_list or min(args.n_list) < 2 or max(args.n_list) > MNIST_TRAIN:
        p.error(f"--n values must lie in 2..{MNIST_TRAIN}")
    if args.quartic_n not in ("auto",):
        try:
            args.quartic_n = int(float(args.quartic_n))
        except ValueError:
            p.error(f"--quartic-n: expected an integer, 'auto' or 0, got {args.quartic_n!r}")
        if not 0 <= args.quartic_n <= MNIST_TRAIN:
            p.error(f"--quartic-n must lie in 0..{MNIST_TRAIN}")
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    return args


def _median(vals):
    vals = [v for v in vals if v is not None]
    return float(statistics.median(vals)) if vals else None


def run_one(label, impl, n, args, *, kernel="gaussian", env=None):
    """One child run (or a skip when the memory pre-flight says it cannot fit)."""
    from kernelfit.backend import available_host_memory
    from kernelfit.bench.runner import dense_bytes_needed, run_child
    from kernelfit.memory import SAFETY, fmt_bytes

    rec = {"label": label, "impl": impl, "n": n, "n_test": args.n_test, "kernel": kernel,
           "bandwidth": args.bandwidth if kernel == "gaussian" else None,
           "degree": 4 if kernel == "normalized" else None,
           "env": {k: v for k, v in (env or {}).items()}}
    avail = available_host_memory()
    need = dense_bytes_needed(impl, n, 784, args.n_test, device_bytes=avail,
                              auto=True)  # kernelfit's child runs precision auto
    if need > SAFETY * avail:
        rec.update(status="skipped", reason=f"memory: needs about {fmt_bytes(need)}, "
                                            f"{fmt_bytes(avail)} available")
        return rec
    spec = {"task": "solve", "impl": impl, "n": n, "n_test": args.n_test, "dataset": "mnist",
            "data_dir": args.data_dir, "seed": 0, "kernel": kernel,
            "bandwidth": args.bandwidth, "degree": 4,
            "sklearn_alpha": args.sklearn_alpha, "repeats": 1}
    child = run_child(spec, timeout=args.timeout, env=env,
                      memory_limit=int(0.98 * available_host_memory()))
    res = child.get("result") or {}
    reps = res.get("repeats") or []
    rec.update(status=child["status"], reason=child.get("reason"), signal=child.get("signal"),
               returncode=child.get("returncode"), wall_s=child.get("wall_s"),
               peak_rss_bytes=child.get("max_rss_bytes"), repeats=len(reps),
               load_s=res.get("load_s"))
    rec["runs"] = reps
    if rec["status"] != "ok":
        rec["stderr_tail"] = (child.get("stderr_tail") or "")[-1500:]
    return rec


KEYS = ("total", "fit", "predict", "gram", "factor", "solve", "residual", "relative_residual",
        "test_error", "train_error")


def combine(runs, machine):
    """One record from the alternating runs of one (label, n): medians of the runs that
    went well (a failure is reported as the record's status), stage rates and the limit."""
    from kernelfit.bench.suite import limit_seconds, stage_rates

    rec = dict(runs[-1])
    bad = [r for r in runs if r["status"] != "ok"]
    if bad:
        rec.update({k: bad[0].get(k) for k in ("status", "reason", "signal", "returncode",
                                                "stderr_tail")})
    reps = [x for r in runs if r["status"] == "ok" for x in r.pop("runs")]
    for r in runs:
        r.pop("runs", None)
    rec.pop("runs", None)
    rec["repeats"] = len(reps)
    rec["wall_s"] = sum(r.get("wall_s") or 0.0 for r in runs)
    rec["peak_rss_bytes"] = max((r.get("peak_rss_bytes") or 0) for r in runs) or None
    for key in KEYS:
        rec[key] = _median(r.get(key) for r in reps)
    rec["end_to_end_s"] = rec.pop("total")
    rec["times_s"] = [r.get("total") for r in reps]
    if reps and rec["impl"] == "kernelfit":
        rec["precision"] = reps[-1].get("precision")
        # each run's own: auto may choose differently from run to run where it is close
        rec["precisions"] = [r.get("precision") for r in reps]
        rec["precision_reason"] = reps[-1].get("precision_reason")
        rec["plan_choice"] = reps[-1].get("plan_choice")
        rec["inner_products"] = reps[-1].get("inner_products")
        rec["stage_rates"] = stage_rates(rec, "kernelfit", 784, machine)
        rec["limit_s"] = limit_seconds("kernelfit", rec["n"], 784, rec["n_test"], machine,
                                       "cpu", rec["precision"] or "float64",
                                       rec["inner_products"])
    return rec


def quartic_n(args) -> int:
    """The n of the normalized quartic run ('auto': the largest that fits, <= 60,000)."""
    if args.quartic_n != "auto":
        return int(args.quartic_n)
    from kernelfit.backend import available_host_memory
    from kernelfit.bench.suite import largest_fitting_n

    n = largest_fitting_n("kernelfit", available_host_memory(), d=784, n_test=args.n_test)
    return int(min(MNIST_TRAIN, n // 1000 * 1000))


def targets(records):
    """The issue's targets, against the peers of this run and the reference figures."""
    by = {(r["label"], r["n"]): r for r in records}
    out = []
    for n, ref in REFERENCE.items():
        kf = by.get(("kernelfit", n))
        if not kf:
            continue
        row = {"n": n, "kernelfit_status": kf["status"], "peer": ref["peer"],
               "kernelfit_time_s": kf.get("end_to_end_s"),
               "kernelfit_memory_bytes": kf.get("peak_rss_bytes"),
               "kernelfit_test_error": kf.get("test_error"),
               "kernelfit_precision": kf.get("precision"),
               "limit_s": kf.get("limit_s"),
               "max_time_ratio": ref["max_time_ratio"],
               "max_memory_ratio": ref["max_memory_ratio"],
               "reference": {k: ref[k] for k in ("time_s", "memory_bytes", "test_error")}}
        if kf["status"] == "ok":
            row["time_ratio_vs_reference"] = kf["end_to_end_s"] / ref["time_s"]
            row["memory_ratio_vs_reference"] = kf["peak_rss_bytes"] / ref["memory_bytes"]
            peer = by.get((ref["peer"], n))
            if peer:
                row["peer_status"] = peer["status"]
            if peer and peer["status"] == "ok":
                row["peer_time_s"] = peer["end_to_end_s"]
                row["peer_memory_bytes"] = peer["peak_rss_bytes"]
                row["peer_test_error"] = peer["test_error"]
                row["time_ratio"] = kf["end_to_end_s"] / peer["end_to_end_s"]
                if kf.get("limit_s"):
                    row["limit_ratio"] = kf["limit_s"] / peer["end_to_end_s"]
                row["memory_ratio"] = kf["peak_rss_bytes"] / peer["peak_rss_bytes"]
                diff = abs(kf["test_error"] - peer["test_error"]) * kf["n_test"]
                row["test_error_differs_by_points"] = int(round(diff))
                row["met"] = bool(row["time_ratio"] <= ref["max_time_ratio"]
                                  and row["memory_ratio"] <= ref["max_memory_ratio"]
                                  and row["test_error_differs_by_points"] == 0)
        out.append(row)
    return out


def plot(results, path) -> None:
    """Time, peak memory and test error vs n; crashes marked with x."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from kernelfit._io import atomic_writer

    recs = [r for r in results["records"] if r["kernel"] == "gaussian"]
    labels = list(dict.fromkeys(r["label"] for r in recs))
    colors = {"kernelfit": "tab:blue", "sklearn": "tab:orange", "sklearn-haswell": "tab:red"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    for label in labels:
        rs = [r for r in recs if r["label"] == label]
        ok = [r for r in rs if r["status"] == "ok"]
        col = colors.get(label)
        for ax, key, scale in ((axes[0], "end_to_end_s", 1.0),
                               (axes[1], "peak_rss_bytes", 1e-9),
                               (axes[2], "test_error", 100.0)):
            pts = [(r["n"], r[key] * scale) for r in ok if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), "o-", color=col, label=label)
            if key != "test_error":
                for r in rs:
                    if r["status"] in ("crashed", "timeout", "memory"):
                        y = (r.get("wall_s") if key == "end_to_end_s"
                             else r.get("peak_rss_bytes"))
                        if y:
                            ax.plot([r["n"]], [y * scale], "x", color=col, ms=10, mew=2)
                            ax.annotate(r["status"] + (f" ({r['signal']})" if r.get("signal")
                                                       else ""), (r["n"], y * scale),
                                        xytext=(4, 4), textcoords="offset points", fontsize=7,
                                        color=col)
    axes[0].set(xscale="log", yscale="log", ylabel="fit + predict (s)",
                title="end-to-end time")
    axes[1].set(xscale="log", yscale="log", ylabel="peak RSS (GB)", title="peak memory")
    axes[2].set(xscale="log", ylabel="test error (%)", title="MNIST test error")
    for ax in axes:
        ax.set_xlabel("n (training points)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    host = results["machine"].get("host")
    fig.suptitle(f"kernelfit vs scikit-learn KernelRidge, MNIST, Gaussian bandwidth "
                 f"{results['config']['bandwidth']:g} ({host})")
    with atomic_writer(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    from kernelfit.bench.machine import describe_machine
    from kernelfit.bench.report import write_json
    from kernelfit.datasets import load_dataset
    from kernelfit.memory import fmt_bytes

    # fail early (before any child) when MNIST is not at hand
    load_dataset("mnist", data_dir=args.data_dir, n_train=10, n_test=10)
    t0 = time.perf_counter()
    base_env = {} if args.keep_blas_env else {"OPENBLAS_CORETYPE": None}
    from kernelfit.bench.runner import run_child

    # the machine and its peaks as the children see them (their environment, so their
    # BLAS kernel: this process may run with OPENBLAS_CORETYPE set, the children without)
    peaks = run_child({"task": "peaks", "cpu": True, "gpu": False, "size": args.peak_size,
                       "repeats": 3, "describe": True}, timeout=600, env=base_env)
    machine = (peaks.get("result") or {}).get("machine") or describe_machine()
    machine["peaks"] = {"cpu": (peaks.get("result") or {}).get("cpu")
                        or {"error": peaks.get("reason")}}
    runs = []
    for n in args.n_list:
        runs.append(("kernelfit", "kernelfit", n, "gaussian", base_env))
        runs.append(("sklearn", "sklearn", n, "gaussian", base_env))
        if args.haswell:
            runs.append(("sklearn-haswell", "sklearn", n, "gaussian",
                         {"OPENBLAS_CORETYPE": "Haswell"}))
    qn = quartic_n(args)
    if qn:
        runs.append(("kernelfit-quartic", "kernelfit", qn, "normalized", base_env))
    records = []
    for n in sorted({r[2] for r in runs}):
        at_n = [r for r in runs if r[2] == n]
        done = {r[0]: [] for r in at_n}
        for rnd in range(args.repeats):  # alternate: one run of each per round
            for label, impl, _, kernel, env in at_n:
                if done[label] and done[label][-1]["status"] != "ok":
                    continue
                print(f"[{time.perf_counter() - t0:7.1f} s] {label} n={n} round {rnd + 1}/"
                      f"{args.repeats} ...", file=sys.stderr, flush=True)
                done[label].append(run_one(label, impl, n, args, kernel=kernel, env=env))
        for label, *_ in at_n:
            rec = combine(done[label], machine)
            records.append(rec)
            if rec["status"] == "ok":
                print(f"    {label} n={n}: {rec['end_to_end_s']:.1f} s end to end (median of "
                      f"{rec['repeats']}), peak {fmt_bytes(rec['peak_rss_bytes'])}, test "
                      f"error {100 * rec['test_error']:.2f}%, relative residual "
                      f"{rec['relative_residual']:.1e}"
                      + (f", limit {rec['limit_s']:.1f} s" if rec.get("limit_s") else ""),
                      file=sys.stderr, flush=True)
            else:
                print(f"    {label} n={n} {rec['status'].upper()}: {rec['reason']}",
                      file=sys.stderr, flush=True)
    results = {
        "schema": "kernelfit-vs-sklearn/1",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.argv[0])] + list(argv or sys.argv[1:])),
        "config": {k: v for k, v in vars(args).items()},
        "machine": machine,
        "records": records,
        "targets": targets(records),
        "elapsed_s": time.perf_counter() - t0,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"vs_sklearn_{machine['host_tag']}"
    write_json(results, out / f"{stem}.json")
    plot(results, out / f"{stem}.png")
    for t in results["targets"]:
        if "time_ratio" in t:
            print(f"n={t['n']}: time {t['time_ratio']:.2f}x {t['peer']} (limit "
                  f"{t.get('limit_ratio', float('nan')):.2f}x; target <= "
                  f"{t['max_time_ratio']}), memory {t['memory_ratio']:.2f}x (target <= "
                  f"{t['max_memory_ratio']}), test errors differ by "
                  f"{t['test_error_differs_by_points']} points -> "
                  f"{'MET' if t['met'] else 'NOT MET'}")
        elif t["kernelfit_status"] == "ok":
            print(f"n={t['n']}: kernelfit {t['kernelfit_time_s']:.1f} s = "
                  f"{t['time_ratio_vs_reference']:.2f}x the reference {t['peer']} time; "
                  f"{t['peer']} here: {t.get('peer_status', 'not run')}")
        else:
            print(f"n={t['n']}: kernelfit {t['kernelfit_status']}")
    print(f"wrote {out / (stem + '.json')} and {out / (stem + '.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
