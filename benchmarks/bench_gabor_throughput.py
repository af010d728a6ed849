"""Gabor feature throughput (images/s) of two checkouts of kernelfit, alternating.

    python benchmarks/bench_gabor_throughput.py --before ../wt-old --after . \
        --data-dir ../shared/data --n 8192 --rounds 3 --tag zen4_avx512
    python benchmarks/bench_gabor_throughput.py --dry-run    # random images: seconds

The map is the one ``kernelfit solve --dataset mnist --features gabor`` uses (MNIST's
defaults: 2 scales, 8 orientations, order 2, pool 7, unit norm: 3,969 features), on the
first ``--n`` MNIST training images (``--data-dir``; a dry run uses random images). Each run
is one fresh process importing the kernelfit of one checkout (``PYTHONPATH``), timing
``fit_transform`` after a warm-up on 64 images; the checkouts alternate, the one that goes
first changing round by round. Recorded: images/s per run and the medians, the largest
difference between the two checkouts' features, the commits, the machine.
Output: ``benchmarks/results/gabor_throughput_ab_<tag>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _ab import add_output_args, alternating, write_result  # noqa: E402  (benchmarks/_ab.py)
from bench_code_ab import commit_of  # noqa: E402  (benchmarks/bench_code_ab.py)
from kernelfit.bench.machine import describe_machine  # noqa: E402

#: the child: load the images, warm up, time fit_transform, save the features' checksum
CHILD = r"""
import json, sys, time
import numpy as np
import kernelfit
from kernelfit.features.gabor import GaborFeatures
spec = json.loads(sys.argv[1])
if spec["data_dir"] is None:
    X = np.random.default_rng(0).random((spec["n"], 784))
else:
    from kernelfit.datasets import load_dataset
    X = load_dataset("mnist", data_dir=spec["data_dir"], n_train=spec["n"], n_test=0,
                     download=False).X_train
g = GaborFeatures((28, 28), progress=False)
g.fit_transform(X[:64])
t0 = time.perf_counter()
F = g.fit_transform(X)
seconds = time.perf_counter() - t0
np.save(spec["features_out"], F[:256])
print(json.dumps({"seconds": seconds, "images_per_second": X.shape[0] / seconds,
                  "n_features": int(F.shape[1]), "kernelfit_path": kernelfit.__file__}))
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", default=str(HERE.parent), help="checkout of the code before")
    p.add_argument("--after", default=str(HERE.parent), help="checkout of the code after")
    p.add_argument("--data-dir", default=None, help="folder holding mnist/")
    p.add_argument("--n", type=int, default=8192, help="images per run")
    p.add_argument("--rounds", type=int, default=3)
    add_output_args(p, str(HERE / "results"),
                    "random images, 256 of them, one round (the file name says dry_run)")
    return p.parse_args(argv)


def one_run(args, which: str, features_out: Path) -> dict:
    checkout = str(Path(getattr(args, which)).resolve())
    spec = {"n": args.n, "data_dir": None if args.dry_run else args.data_dir,
            "features_out": str(features_out)}
    env = dict(os.environ, PYTHONPATH=checkout, KERNELFIT_PROGRESS="0")
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], cwd=checkout,
                          env=env, capture_output=True, text=True, timeout=3600)
    rec = {"code": which, "status": "ok" if proc.returncode == 0 else "failed"}
    if proc.returncode == 0:
        rec.update(json.loads(proc.stdout.strip().splitlines()[-1]))
        if rec["kernelfit_path"] != str(Path(checkout) / "kernelfit" / "__init__.py"):
            rec["status"] = "wrong_code"
    else:
        rec["stderr_tail"] = proc.stderr[-1500:]
    return rec


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        args.n, args.rounds = 256, 1
    elif args.data_dir is None:
        print("--data-dir is needed (the folder holding mnist/), or --dry-run",
              file=sys.stderr)
        return 2
    for which in ("before", "after"):
        if not (Path(getattr(args, which)) / "kernelfit" / "__init__.py").is_file():
            print(f"--{which} {getattr(args, which)} is not a kernelfit checkout; make one "
                  "with: git worktree add --detach DIR COMMIT", file=sys.stderr)
            return 2
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    feats = {w: out_dir / f".gabor_features_{w}.npy" for w in ("before", "after")}
    runs = []
    try:
        for r, which in alternating(args.rounds, ("before", "after")):
            rec = one_run(args, which, feats[which])
            rec["round"] = r
            runs.append(rec)
            print(f"round {r} {which}: {rec['status']} "
                  f"{rec.get('images_per_second', float('nan')):.0f} images/s", flush=True)
        import numpy as np

        diff = (float(np.max(np.abs(np.load(feats["before"]) - np.load(feats["after"]))))
                if all(f.is_file() for f in feats.values()) else None)
    finally:
        for f in feats.values():
            f.unlink(missing_ok=True)
    medians = {w: statistics.median(r["images_per_second"] for r in runs
                                    if r["code"] == w and r["status"] == "ok")
               for w in ("before", "after")
               if any(r["code"] == w and r["status"] == "ok" for r in runs)}
    machine = describe_machine()
    write_result(args, argv, script="bench_gabor_throughput.py",
                 benchmark="gabor_throughput_ab",
                 what=("Gabor features (MNIST defaults, 3,969 features) of the first n MNIST "
                       "training images, fit_transform in a fresh process per run, "
                       "alternating checkouts; images per second"),
                 machine=machine,
                 body={"n": args.n, "code": {"before": commit_of(args.before),
                                             "after": commit_of(args.after)},
                       "max_abs_feature_difference_first_256": diff,
                       "machine": machine, "runs": runs, "medians_images_per_second": medians})
    print(json.dumps({"medians_images_per_second": medians,
                      "max_abs_feature_difference_first_256": diff}, indent=1))
    return 0 if all(r["status"] == "ok" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
