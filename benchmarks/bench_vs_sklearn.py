"""kernelfit vs scikit-learn's KernelRidge on real MNIST, end to end, one process per run.

Usage (one command; the final measurements should be taken on a quiet machine)::

    python benchmarks/bench_vs_sklearn.py --data-dir ../shared/data --haswell

Options (defaults in brackets):

    --n 2000,5000,10000,20000   training sizes [2000,5000,10000,20000]
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
    --repeats R                 runs per (implementation, n); medians reported [1]
    --timeout S                 seconds before a run is killed [1800]
    --keep-blas-env             keep OPENBLAS_CORETYPE from this shell in the children
                                (default: removed, so plain runs use OpenBLAS's own choice
                                of kernels, as a user's would; --haswell sets it explicitly)
    --out DIR                   where vs_sklearn_<host>.json/.png go [benchmarks/results]

What each child measures (the MNIST load is excluded for both):
  kernelfit: KernelInterpolator(kernel='gaussian', bandwidth=H).fit (Gram + Cholesky +
             solve + residual check K alpha - Y) + predict on the test set;
  sklearn:   KernelRidge(alpha=A, kernel='rbf', gamma=1/(2H^2)).fit(X, one-hot Y) +
             predict; its relative residual is checked afterwards, outside the timing.
Peak memory is the child's ru_maxrss (from wait4, so it is known for crashed runs too).
A segfault is recorded as 'crashed (SIGSEGV)', a timeout or memory blow-up likewise.

Targets checked in the JSON's "targets" block: at n = 10,000, kernelfit end to end
<= 0.5x scikit-learn's time and <= 0.6x its peak memory with the same test error; at
n = 20,000, kernelfit completes in <= 0.4x the time and <= 0.5x the memory of
scikit-learn with OPENBLAS_CORETYPE=Haswell, same error. Ratios are given against the
peers measured in the same run and against the reference figures measured when the
targets were set (sklearn 11.0 s / 2.88 GB / 2.66% at 10,000; sklearn-Haswell 60.6 s /
9.6 GB / 1.96% at 20,000).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import statistics
import sys
import time
from pathlib import Path

REFERENCE = {
    10000: {"peer": "sklearn", "time_s": 11.0, "memory_bytes": 2.88e9, "test_error": 0.0266,
            "max_time_ratio": 0.5, "max_memory_ratio": 0.6},
    20000: {"peer": "sklearn-haswell", "time_s": 60.6, "memory_bytes": 9.6e9,
            "test_error": 0.0196, "max_time_ratio": 0.4, "max_memory_ratio": 0.5},
}
MNIST_TRAIN = 60000


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", default="2000,5000,10000,20000")
    p.add_argument("--n-test", type=int, default=10000)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--bandwidth", type=float, default=5.0)
    p.add_argument("--sklearn-alpha", type=float, default=1e-10)
    p.add_argument("--haswell", action="store_true")
    p.add_argument("--quartic-n", default="auto")
    p.add_argument("--repeats", type=int, default=1)
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
    need = dense_bytes_needed(impl, n, 784, args.n_test)
    if need > SAFETY * avail:
        rec.update(status="skipped", reason=f"memory: needs about {fmt_bytes(need)}, "
                                            f"{fmt_bytes(avail)} available")
        return rec
    spec = {"task": "solve", "impl": impl, "n": n, "n_test": args.n_test, "dataset": "mnist",
            "data_dir": args.data_dir, "seed": 0, "kernel": kernel,
            "bandwidth": args.bandwidth, "degree": 4, "dtype": "float64",
            "sklearn_alpha": args.sklearn_alpha, "repeats": args.repeats}
    child = run_child(spec, timeout=args.timeout, env=env,
                      memory_limit=int(0.98 * available_host_memory()))
    res = child.get("result") or {}
    reps = res.get("repeats") or []
    rec.update(status=child["status"], reason=child.get("reason"), signal=child.get("signal"),
               returncode=child.get("returncode"), wall_s=child.get("wall_s"),
               peak_rss_bytes=child.get("max_rss_bytes"), repeats=len(reps),
               load_s=res.get("load_s"))
    for key in ("total", "fit", "predict", "gram", "factor", "solve", "residual",
                "relative_residual", "test_error", "train_error"):
        rec[key] = _median(r.get(key) for r in reps)
    rec["end_to_end_s"] = rec.pop("total")
    if reps:
        rec["times_s"] = [r.get("total") for r in reps]
    if rec["status"] != "ok":
        rec["stderr_tail"] = (child.get("stderr_tail") or "")[-1500:]
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
    machine = describe_machine()
    base_env = {} if args.keep_blas_env else {"OPENBLAS_CORETYPE": None}
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
    for label, impl, n, kernel, env in runs:
        print(f"[{time.perf_counter() - t0:7.1f} s] {label} n={n} ...", file=sys.stderr,
              flush=True)
        rec = run_one(label, impl, n, args, kernel=kernel, env=env)
        records.append(rec)
        if rec["status"] == "ok":
            print(f"    {rec['end_to_end_s']:.1f} s end to end, peak "
                  f"{fmt_bytes(rec['peak_rss_bytes'])}, test error "
                  f"{100 * rec['test_error']:.2f}%, relative residual "
                  f"{rec['relative_residual']:.1e}", file=sys.stderr, flush=True)
        else:
            print(f"    {rec['status'].upper()}: {rec['reason']}", file=sys.stderr, flush=True)
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
            print(f"n={t['n']}: time {t['time_ratio']:.2f}x {t['peer']} (target <= "
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
