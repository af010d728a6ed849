"""Benchmark of Theorem 1's construction on MNIST with random labels 0..9.

Measures, over n in (1k, 3k, 10k, 30k, 60k): float64 construction time (plain: one Gaussian
direction + midpoint biases; improved: best of 16 directions + contractive biases), the exact
fixed-point construction + verification time, and float64 figures (largest weight, relative
smallest gap, max residual of the direct float64 sum on 2,000 points). Writes
``benchmarks/results/theorem1_bench.json`` (with the machine described) and ``.png``.

Usage: ``python benchmarks/bench_theorem1.py [--data-dir DIR] [--sizes 1000,60000] [--seed 0]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's kernelfit, as the other scripts


def machine() -> dict:
    """The machine, described by kernelfit's benchmark module (CPU, memory, BLAS, versions)."""
    from kernelfit.bench.machine import describe_machine

    return describe_machine()


def main(argv=None):
    from kernelfit.theory import construction as C
    from kernelfit.theory.data import load_mnist

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--sizes", default="1000,3000,10000,30000,60000")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    Xi = load_mnist(args.data_dir, integer=True)[0].astype(np.int64)
    rng = np.random.default_rng(args.seed)
    y_all = rng.integers(0, 10, size=Xi.shape[0]).astype(np.float64)
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        idx = np.sort(rng.choice(Xi.shape[0], size=n, replace=False)) if n < Xi.shape[0] \
            else np.arange(n)
        X, y = Xi[idx] / 255.0, y_all[idx]
        row = {"n": n}
        for key, kw in (("plain", dict(direction="gaussian", biases="midpoint")),
                        ("improved", dict(direction="best", biases="contractive"))):
            t = time.perf_counter()
            net = C.fit_theorem1(X, y, seed=args.seed, **kw)
            row[f"{key}_seconds"] = time.perf_counter() - t
            row[key] = C.float64_figures(net, X, y, subset=2000, seed=args.seed)
        t = time.perf_counter()
        ex = C.fit_theorem1_exact(Xi[idx], 255, y, seed=args.seed)
        tf = time.perf_counter() - t
        Z = 4 * (Xi[idx][ex.order] @ ex.a_int)
        rr = C.exact_relative_residual(ex.outputs_scaled(Z), ex.info["Y_sorted"])
        sub = rng.choice(n, size=min(n, 200), replace=False)
        rd = C.exact_relative_residual(ex.outputs_scaled_direct(Z[sub]),
                                       [ex.info["Y_sorted"][i] for i in sub])
        row.update(exact_fit_seconds=tf, exact_total_seconds=time.perf_counter() - t,
                   exact_rel_residual_all=rr, exact_rel_residual_direct_200=rd)
        rows.append(row)
        print(json.dumps({k: (v if not isinstance(v, dict) else
                              {kk: v[kk] for kk in ("max_abs_weight", "residual_direct_max")})
                          for k, v in row.items()}))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = {"benchmark": "theorem1", "seed": args.seed, "machine": machine(),
           "targets": {"exact_seconds_at_60k": 60, "float64_seconds_at_60k": 1,
                       "exact_rel_residual": 1e-30}, "rows": rows}
    (out / "theorem1_bench.json").write_text(json.dumps(res, indent=1))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ns = [r["n"] for r in rows]
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    for key, st in (("plain", "o-"), ("improved", "s-")):
        ax[0].loglog(ns, [r[key]["max_abs_weight"] for r in rows], st, label=key)
        ax[1].loglog(ns, [max(r[key]["residual_direct_max"], 1e-17) for r in rows], st, label=key)
        ax[2].loglog(ns, [r[f"{key}_seconds"] for r in rows], st, label=f"float64 {key}")
    ax[2].loglog(ns, [r["exact_total_seconds"] for r in rows], "^-", label="exact fit + verify")
    ax[0].set_title("largest |w| (float64)")
    ax[1].set_title("max |c(x_i)-y_i|, direct float64 sum (2,000 pts)")
    ax[2].set_title("seconds")
    for a in ax:
        a.set_xlabel("n")
        a.legend()
    fig.tight_layout()
    fig.savefig(out / "theorem1_bench.png", dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
