"""Which default Gaussian bandwidth fits each feature map (issue 15, item 1).

    python benchmarks/bench_bandwidth_defaults.py --data-dir /work/shared/data --n-fit 10000

MNIST: the first ``--n-fit`` images of a seeded, balanced subset of the TRAINING set are
fitted, the next ``--n-holdout`` training images are the held-out split (the official test
set is not used to choose). For raw pixels and for Gabor features the Gaussian kernel is
solved exactly at the old fixed default h = 5, at the median heuristic and at multiples of
the median; the held-out error, the float64 relative residual, time and the machine are
written to ``benchmarks/results/bandwidth_defaults.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="/work/shared/data")
    p.add_argument("--n-fit", type=int, default=10000)
    p.add_argument("--n-holdout", type=int, default=5000)
    p.add_argument("--gabor-factors", default="0.5,0.75,1,2")
    p.add_argument("--raw-factors", default="1")
    p.add_argument("--out", default=str(HERE / "results" / "bandwidth_defaults.json"))
    args = p.parse_args(argv)

    from kernelfit.bench.machine import describe_machine
    from kernelfit.datasets import load_dataset
    from kernelfit.features import apply_features
    from kernelfit.kernels import median_distance
    from kernelfit.options import RunOptions
    from kernelfit.run import solve_arrays

    t_start = time.perf_counter()
    n_all = args.n_fit + args.n_holdout
    ds = load_dataset("mnist", data_dir=args.data_dir, n_train=n_all, n_test=0, balanced=True,
                      seed=0)
    Xa, ya = ds.X_train, ds.y_train
    runs = []
    t0 = time.perf_counter()
    # the map these results were recorded with (first order, coefficients not normalized)
    G_fit, G_hold, _ = apply_features("gabor", {"order": 1, "pool": 8, "normalize": "none"},
                                      Xa[: args.n_fit], Xa[args.n_fit:],
                                      image_shape=ds.image_shape, seed=0)
    gabor_seconds = time.perf_counter() - t0
    factors = {k: [float(f) for f in v.split(",")] for k, v in
               (("raw", args.raw_factors), ("gabor", args.gabor_factors))}
    feats = {"raw": (Xa[: args.n_fit], Xa[args.n_fit:], factors["raw"]),
             "gabor": (np.asarray(G_fit), np.asarray(G_hold), factors["gabor"])}
    for name, (Xf, Xh, factors) in feats.items():
        med = median_distance(Xf, seed=0)
        choices = [("fixed 5", 5.0)] + [(f"{f:g} x median", f * med) for f in factors]
        for label, h in choices:
            cfg = RunOptions.from_flat(kernel="gaussian", bandwidth=float(h),
                                       precision="float64", show_progress=False)
            t0 = time.perf_counter()
            rec = solve_arrays(Xf, ya[: args.n_fit], Xh, ya[args.n_fit:], cfg)
            row = {"features": name, "rule": label, "bandwidth": float(h),
                   "median_distance": med, "n_fit": args.n_fit, "n_holdout": args.n_holdout,
                   "holdout_error": rec["test_error"], "train_error": rec["train_error"],
                   "relative_residual": rec["relative_residual"],
                   "rkhs_norm": rec["rkhs_norm"], "seconds": time.perf_counter() - t0}
            runs.append(row)
            print(json.dumps(row), flush=True)
    out = {"benchmark": "bandwidth_defaults", "issue": 15,
           "protocol": ("MNIST, balanced seeded subset (seed 0) of the TRAINING set: first "
                        f"{args.n_fit} fitted, next {args.n_holdout} held out; Gaussian kernel, "
                        "exact float64 Cholesky; the official test set is not used to choose"),
           "gabor_params": ("scales 2, orientations 8, order 1, pool 8, normalize none (the "
                            "defaults until issue 15's gabor_defaults.json)"),
           "gabor_feature_seconds": gabor_seconds, "runs": runs,
           "machine": describe_machine(),
           "note": ("shared 2-core machine: other helpers' jobs ran at the same time, so the "
                    "seconds are indicative only; errors and residuals are not affected"),
           "wall_seconds": time.perf_counter() - t_start}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
