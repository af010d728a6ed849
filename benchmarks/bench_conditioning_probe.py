"""How well does auto's conditioning probe predict the smallest pivot of K?

    python benchmarks/bench_conditioning_probe.py --data-dir ../shared/data --tag zen4_avx512
    python benchmarks/bench_conditioning_probe.py --dry-run     # random arrays, seconds

For each configuration (MNIST raw pixels with h = 5, Gabor features with the default
bandwidth: the kernels ``kernelfit solve`` uses), K on the first N training images (a
random subset of MNIST) is factored in float64 by kernelfit's tiled Cholesky; the smallest
pivot ``L_jj^2 / K_jj`` among the first n rows is then the true smallest pivot of the
solve of those n rows (the leading pivots of a Cholesky are those of the leading block),
for each n in ``--sizes``. Against it, the probe of :mod:`kernelfit.solvers.conditioning`
for a solve of n rows: its sample size (``probe_rows``), and for ``--seeds`` seeded samples
(the product uses seed 0) the extrapolated smallest pivot, from the whole sample and from
its first quarter, their ratio to the truth, and the refinement rate and pass count each
predicts (the truth's too). Output: ``benchmarks/results/conditioning_probe_<tag>.json``
with the machine described. The measured refinement passes of these solves are in
``auto_choice_*.json`` (``bench_auto_choice.py``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _ab import add_output_args, file_tag, no_data, sizes_of  # noqa: E402  (benchmarks/_ab.py)
from bench_code_ab import commit_of  # noqa: E402  (benchmarks/bench_code_ab.py)
from kernelfit.bench.machine import describe_machine  # noqa: E402
from kernelfit.errors import KernelfitError  # noqa: E402

CONFIGS = ("pixels", "gabor")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="folder holding mnist/")
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--sizes", default="10000,20000,40000",
                   help="solve sizes n to predict for (comma-separated; the largest is "
                        "factored in float64 whole)")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--tol", type=float, default=1e-12,
                   help="the refinement target the pass counts are for")
    add_output_args(p, results=str(HERE / "results"),
                    dry_run="random arrays, n up to 3,000, a sample of 64 rows at least")
    return p.parse_args(argv)


def inputs(args, config: str, n: int):
    """(X, kernel, description): the float64 inputs of ``n`` training images and the
    kernel ``kernelfit solve`` would use on them."""
    from kernelfit import run
    from kernelfit.kernels import get_kernel
    from kernelfit.options import RunOptions

    if args.dry_run:
        X = np.random.default_rng(0).random((n, 6))
        return X, get_kernel("gaussian", bandwidth=0.3), "random 6-column rows, h = 0.3"
    from kernelfit.datasets import load_dataset

    ds = load_dataset("mnist", data_dir=args.data_dir, n_train=n, n_test=1, download=False)
    opts = RunOptions.from_flat(features="raw" if config == "pixels" else "gabor",
                                show_progress=False)
    X, _, _, _ = run.featurize(opts.features, ds.X_train, ds.X_test, ds.image_shape)
    kopts, rule = run.choose_kernel(opts, X, "mnist")
    kernel = get_kernel("gaussian", bandwidth=kopts.bandwidth)
    return X, kernel, f"MNIST {config}, Gaussian h = {kopts.bandwidth:.4g} ({rule['rule']})"


def true_pivots(kernel, X) -> np.ndarray:
    """The pivots of a float64 Cholesky of K (kernelfit's tiled factorization)."""
    from kernelfit.backend import get_backend
    from kernelfit.solvers.cholesky import cholesky_inplace
    from kernelfit.solvers.products import build_gram

    T = build_gram(kernel, X, dtype=np.float64, backend=get_backend("cpu"),
                   show_progress=False)
    cholesky_inplace(T, show_progress=False)
    piv = np.concatenate([np.diag(T.tiles[i][i]) ** 2 for i in range(T.n_tiles)])
    T.free()
    return piv  # the Gaussian kernel's diagonal is 1


def predictions(kernel, X, n: int, seeds: int, tol: float) -> dict:
    from kernelfit.backend import get_backend
    from kernelfit.solvers import conditioning as cond

    m = cond.probe_rows(n, X.shape[1])
    out = {"rows": m, "quarter_rows": m // 4, "samples": []}
    for seed in range(seeds if m else 0):
        rows = np.random.default_rng(seed).choice(n, size=m, replace=False)
        t0 = time.perf_counter()
        piv = cond.sample_pivots(kernel, X[:n], rows, get_backend("cpu"))
        s = {"seed": seed, "seconds": time.perf_counter() - t0}
        if piv is not None:
            for key, part in (("whole", piv), ("quarter", piv[:m // 4])):
                ext = cond.extrapolate_min_pivot(part, n)
                # the product's constant for this solve (25 where its factor is deflated
                # by 32 landmarks; the risk gates' own-factor rate beside it)
                rate = cond.predicted_rate(ext["min_pivot_predicted"],
                                           cond.rate_constant(kernel, n))
                s[key] = {**ext, "rate": rate, "passes": cond.predicted_passes(rate, tol),
                          "gate_rate": cond.predicted_rate(ext["min_pivot_predicted"])}
        out["samples"].append(s)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if no_data(args):
        return 2
    from kernelfit.solvers import conditioning as cond

    sizes = sizes_of(args.sizes)
    if not sizes or sizes[0] < 2 or args.seeds < 1:
        print(f"--sizes takes whole numbers of at least 2, comma-separated (got "
              f"{args.sizes!r}), --seeds at least 1 (got {args.seeds})", file=sys.stderr)
        return 2
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if args.dry_run:
        sizes, configs = [1000, 3000], ["random"]
        cond.PROBE_MIN_ROWS = 64
    unknown = sorted(set(configs) - set(CONFIGS) - {"random"})
    if unknown:
        print(f"unknown configuration {unknown[0]!r}: choose from {', '.join(CONFIGS)}",
              file=sys.stderr)
        return 2
    machine = describe_machine()
    results = []
    for config in configs:
        try:
            X, kernel, what = inputs(args, config, sizes[-1])
        except KernelfitError as exc:  # no MNIST there, too few images, ...
            print(f"{config}: {exc}", file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        piv = true_pivots(kernel, X)
        factor_s = time.perf_counter() - t0
        for n in sizes:
            truth = float(piv[:n].min())
            constant = cond.rate_constant(kernel, n)
            rate = cond.predicted_rate(truth, constant)
            row = {"config": config, "inputs": what, "n": n, "d": int(X.shape[1]),
                   "rate_constant": constant,
                   "true_min_pivot": truth, "rate_at_true_pivot": rate,
                   "passes_at_true_pivot": cond.predicted_passes(rate, args.tol),
                   "probe": predictions(kernel, X, n, args.seeds, args.tol)}
            for s in row["probe"]["samples"]:
                for key in ("whole", "quarter"):
                    if key in s:
                        s[key]["ratio_to_truth"] = s[key]["min_pivot_predicted"] / truth
            results.append(row)
            ratios = [s["whole"]["ratio_to_truth"] for s in row["probe"]["samples"]
                      if "whole" in s]
            print(f"{config} n={n}: true min pivot {truth:.3g} (rate {rate:.3g}); probe "
                  f"{row['probe']['rows']} rows, predicted/true "
                  f"{', '.join(f'{r:.2f}' for r in ratios) or '-'}", flush=True)
        results[-1]["factor_seconds_largest"] = factor_s
    out = {"benchmark": "conditioning_probe",
           "script": "benchmarks/bench_conditioning_probe.py",
           "argv": list(argv if argv is not None else sys.argv[1:]),
           "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "commit": commit_of(str(HERE.parent)), "machine": machine,
           "constants": {"rate_constant": cond.RATE_CONSTANT,
                         "deflated_rate_constant": cond.DEFLATED_RATE_CONSTANT,
                         "risky_rate": cond.RISKY_RATE,
                         "probe_share": cond.PROBE_SHARE, "min_rows": cond.PROBE_MIN_ROWS,
                         "max_rows": cond.PROBE_MAX_ROWS, "first_margin": cond.FIRST_MARGIN,
                         "tol": args.tol},
           "results": results}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / f"conditioning_probe_{file_tag(args, machine)}.json"
    path.write_text(json.dumps(out, indent=1, allow_nan=False))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
