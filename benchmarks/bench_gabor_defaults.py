"""Which Gabor feature map and kernel should ``--features gabor`` default to (issue 15)?

    python benchmarks/bench_gabor_defaults.py --data-dir /work/shared/data --n-fit 10000

MNIST: the first ``--n-fit`` images of a seeded, balanced subset of the TRAINING set are
fitted, the next ``--n-holdout`` training images are the held-out split (the official test
set is never used to choose). For every Gabor configuration in ``--configs`` (see
:func:`parse_config`) the features of the ``n-fit + n-holdout`` images are computed once
(coefficients not normalized, cached under ``--cache-dir``; the suffixes are applied
afterwards) and every kernel candidate in ``--kernels`` (``gaussian@<factor>`` and
``laplacian@<factor>``: factor x the median pairwise distance of the fitted features;
``normalized[@degree]``: the normalized kernel, quartic unless a degree is given) is solved
exactly (the product's ``precision auto``: a float64 factor when float32 breaks down) and
checked by its float64 relative residual. Held-out error, residual, feature seconds and the
machine go to ``--out`` (default ``benchmarks/results/gabor_defaults.json``); an existing
file is extended (rows with the same configuration, kernel and sizes are replaced).
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


def parse_config(text: str) -> dict:
    """``'2-8-1-8'`` -> scales 2, orientations 8, order 1, pool 8, then optional suffixes,
    applied in this order: ``-w<weight>`` and ``-z<weight>`` (the second-order block and the
    order-0 map multiplied by the weight), ``-s`` (square root of every feature), ``-n``
    (every feature vector scaled to unit Euclidean norm: the product's ``normalize='unit'``)."""
    parts = text.split("-")
    J, L, order, pool = (int(v) for v in parts[:4])
    cfg = {"scales": J, "orientations": L, "order": order, "pool": pool}
    for extra in parts[4:]:
        if extra.startswith("w"):
            cfg["order2_weight"] = float(extra[1:])
        elif extra.startswith("z"):
            cfg["order0_weight"] = float(extra[1:])
        elif extra == "s":
            cfg["sqrt"] = True
        elif extra == "n":
            cfg["row_normalize"] = True
    return cfg


def features_for(cfg: dict, X, image_shape, cache_dir: Path):
    """Gabor features of ``X`` for ``cfg`` (before the suffixes), from the cache if there."""
    from kernelfit.features import apply_features

    # the coefficients as computed; the suffixes (weights, sqrt, unit norm) come after
    base = {**{k: cfg[k] for k in ("scales", "orientations", "order", "pool")},
            "normalize": "none"}
    tag = "gabor-{scales}-{orientations}-{order}-{pool}-n{n}".format(n=len(X), **base)
    path = cache_dir / f"{tag}.npy"
    meta = cache_dir / f"{tag}.json"
    if path.exists() and meta.exists():
        return np.load(path), json.loads(meta.read_text())["seconds"]
    t0 = time.perf_counter()
    F, _, _ = apply_features("gabor", base, X, X[:1], image_shape=image_shape, seed=0)
    seconds = time.perf_counter() - t0
    F = np.ascontiguousarray(F)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, F)
    meta.write_text(json.dumps({"seconds": seconds}))
    return F, seconds


def postprocess(F, cfg: dict, image_shape) -> np.ndarray:
    """The suffixes of the configuration: order-2 weight, square root, unit norm."""
    F = weight_order2(F, cfg, image_shape)
    if cfg.get("sqrt"):
        F = np.sqrt(np.maximum(F, 0.0))
    if cfg.get("row_normalize"):
        norms = np.linalg.norm(F, axis=1, keepdims=True)
        F = F / np.where(norms > 0, norms, 1)  # as the product: an all-zero row stays zero
    return F


def weight_order2(F, cfg: dict, image_shape) -> np.ndarray:
    """Multiply the order-0 map and the second-order block of every channel by their weights."""
    w0, w2 = cfg.get("order0_weight"), cfg.get("order2_weight")
    if w0 is None and (w2 is None or cfg["order"] != 2):
        return F
    J, L, g = cfg["scales"], cfg["orientations"], cfg["pool"]
    C = image_shape[2] if len(image_shape) == 3 else 1
    G = F.reshape(len(F), C, -1, g * g).copy()
    if w0 is not None:
        G[:, :, 0] *= w0
    if w2 is not None and cfg["order"] == 2:
        G[:, :, 1 + J * L:] *= w2
    return G.reshape(len(F), -1)


def write(out_path: Path, runs, feature_seconds, wall: float) -> None:
    """Write (or rewrite) the result file; called after every solve."""
    from kernelfit.bench.machine import describe_machine

    out = {"benchmark": "gabor_defaults", "issue": 15,
           "protocol": ("MNIST, balanced seeded subset (seed 0) of the TRAINING set: first "
                        "n_fit fitted, next n_holdout held out; exact solve (precision auto), "
                        "float64 relative residual; the official test set is not used to "
                        "choose"),
           "configs": ("J-L-order-pool[-w<order-2 block weight>][-z<order-0 weight>][-s: sqrt]"
                       "[-n: unit-norm feature vectors, the product's normalize='unit']"),
           "kernels": ("gaussian@f / laplacian@f: bandwidth f x the median pairwise distance "
                       "of the fitted features; normalized[@d]: normalized kernel (cosine^d, "
                       "d = 4 unless given)"),
           "feature_seconds": feature_seconds, "runs": runs, "machine": describe_machine(),
           "note": ("shared 2-core machine: other helpers' jobs ran at the same time, so the "
                    "seconds are indicative only; errors and residuals are not affected"),
           "wall_seconds_last_invocation": wall}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=2, default=str) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="/work/shared/data")
    p.add_argument("--n-fit", type=int, default=10000)
    p.add_argument("--n-holdout", type=int, default=5000)
    p.add_argument("--configs", default="2-8-1-8,2-8-2-8")
    p.add_argument("--kernels", default="gaussian@0.75")
    p.add_argument("--cache-dir", default="/tmp/kernelfit_gabor_defaults")
    p.add_argument("--out", default=str(HERE / "results" / "gabor_defaults.json"))
    args = p.parse_args(argv)

    from kernelfit.datasets import load_dataset
    from kernelfit.kernels import median_distance
    from kernelfit.options import RunOptions
    from kernelfit.run import solve_arrays

    out_path = Path(args.out)
    old = json.loads(out_path.read_text()) if out_path.exists() else {}
    runs = list(old.get("runs", []))
    feature_seconds = dict(old.get("feature_seconds", {}))
    t_start = time.perf_counter()
    n_fit, n_all = args.n_fit, args.n_fit + args.n_holdout
    ds = load_dataset("mnist", data_dir=args.data_dir, n_train=n_all, n_test=0, balanced=True,
                      seed=0)
    Xa, ya = ds.X_train, ds.y_train
    for text in args.configs.split(","):
        cfg = parse_config(text)
        F, secs = features_for(cfg, Xa, ds.image_shape, Path(args.cache_dir))
        feature_seconds["-".join(text.split("-")[:4]) + f"@n{n_all}"] = secs
        F = postprocess(F, cfg, ds.image_shape)
        Xf, Xh = F[:n_fit], F[n_fit:]
        med = median_distance(Xf, seed=0)
        for kspec in args.kernels.split(","):
            name, _, factor = kspec.partition("@")
            flat = {"kernel": name, "show_progress": False}
            if name in ("gaussian", "laplacian"):
                flat["bandwidth"] = float(factor) * med
            elif factor:
                flat["degree"] = int(factor)
            t0 = time.perf_counter()
            rec = solve_arrays(Xf, ya[:n_fit], Xh, ya[n_fit:], RunOptions.from_flat(**flat))
            row = {"config": text, "gabor": cfg, "n_features": int(F.shape[1]),
                   "kernel": kspec, "kernel_params": rec["kernel_params"],
                   "median_distance": med, "n_fit": n_fit, "n_holdout": args.n_holdout,
                   "holdout_error": rec["test_error"], "train_error": rec["train_error"],
                   "relative_residual": rec["relative_residual"],
                   "rkhs_norm": rec["rkhs_norm"], "seconds": time.perf_counter() - t0}
            runs = [r for r in runs if (r["config"], r["kernel"], r["n_fit"], r["n_holdout"])
                    != (text, kspec, n_fit, args.n_holdout)] + [row]
            print(json.dumps({k: row[k] for k in ("config", "n_features", "kernel",
                                                  "holdout_error", "relative_residual",
                                                  "seconds")}), flush=True)
            write(out_path, runs, feature_seconds, time.perf_counter() - t_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
