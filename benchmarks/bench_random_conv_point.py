"""One full-scale random-conv point, with the map's defaults or other settings (issue 15).

    python benchmarks/bench_random_conv_point.py --data-dir /work/shared/data --filters 8000
    python benchmarks/bench_random_conv_point.py --filters 8000 --pool 3 --power 1 \
        --threshold 0.5          # random_conv_point_8000_pool3_power1_t0.5.json
    python benchmarks/bench_random_conv_point.py --dry-run     # n = 1,000, 64 filters: seconds
    python benchmarks/bench_random_conv_point.py --filters 32000 --device gpu   # on a GPU

``kernelfit reproduce --only cifar-random-conv`` runs a whole curve of filter counts in one
pass. This script measures one point, with the map's defaults or with ``--pool``,
``--power``, ``--threshold`` (settings first compared on a held-out split of the training
set by ``bench_random_conv_settings.py``): all training images fitted, the official test
split scored once, through the same accumulation and exact solve as a curve point
(:func:`kernelfit.reproduce.conv_run.run_conv_point`). It writes the record (test error,
float64 relative residual against the stored float32 kernel, each stage's time and rate, peak
memory, the feature parameters) and the machine to ``--out`` (default
``results/random_conv_point_<filters>_pool<g>_power<p>_t<t>.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default="/work/shared/data")
    p.add_argument("--filters", type=int, default=8000)
    p.add_argument("--pool", type=int, default=None,
                   help="side of the pooling grid (default: the map's)")
    p.add_argument("--power", type=float, default=None,
                   help="power normalization of the pooled features, 1: off, 0.5: sqrt "
                        "(default: the map's)")
    p.add_argument("--threshold", type=float, default=None,
                   help="threshold of the two-sided ReLU (default: the map's)")
    p.add_argument("--n-train", type=int, default=50000)
    p.add_argument("--n-test", type=int, default=10000)
    p.add_argument("--device", default="cpu", choices=("cpu", "gpu"),
                   help="where the features and their Gram sums run (the solve: the host)")
    p.add_argument("--dry-run", action="store_true",
                   help="n = 1,000 / 200 and 64 filters: checks the path in seconds")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.dry_run:
        args.n_train, args.n_test, args.filters = 1000, 200, 64

    from kernelfit._io import atomic_write_text
    from kernelfit.bench.machine import describe_machine
    from kernelfit.errors import KernelfitError
    from kernelfit.datasets import resolve_data_dir
    from kernelfit.reproduce.conv_run import run_conv_point
    from kernelfit.reproduce.runner import locate_cifar

    given = {k: v for k, v in (("pool", args.pool), ("power", args.power),
                               ("threshold", args.threshold)) if v is not None}
    t0 = time.perf_counter()
    try:
        cifar = locate_cifar(resolve_data_dir(args.data_dir))
        rec = run_conv_point(cifar, args.data_dir, (args.n_train, args.n_test), args.filters,
                             map_params=given, device=args.device)
    except KernelfitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    eff = rec["feature_params"]  # the map's defaults with the given settings
    out = Path(args.out or HERE / "results" /
               f"random_conv_point_{args.filters}_pool{eff['pool']}_power{eff['power']:g}"
               f"_t{eff['threshold']:g}{'_dry' if args.dry_run else ''}.json")
    doc = {"benchmark": "one full-scale random-conv point with other map settings (pooling, "
                        "power normalization; issue 15)",
           "command": " ".join(sys.argv), "wall_seconds": time.perf_counter() - t0,
           "record": rec, "machine": describe_machine()}
    atomic_write_text(out, json.dumps(doc, indent=2, default=str) + "\n")
    print(f"{args.filters} filters, {eff['pool']}x{eff['pool']} pooling, power "
          f"{eff['power']:g}, threshold {eff['threshold']:g}, n = {rec['n_train']}: "
          f"test error {rec['test_error']:.4f}, residual {rec['relative_residual']:.1e}, "
          f"{rec['seconds']:.0f} s; written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
