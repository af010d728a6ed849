"""Where the tiled float32 Cholesky loses time against the GEMM peak (issue 14's factor target).

    python benchmarks/bench_factor_ops.py --n 20000,60000 --tile-sizes 2500,5000 --tag zen5
    python benchmarks/bench_factor_ops.py --dry-run      # n = 1,500: seconds, nothing kept

For each tile size a Gaussian Gram matrix (h = 5) of seeded random 0/1 images (784
pixels) is built in float32 tiles and factored in place column by column
(:func:`kernelfit.solvers.cholesky.factor_columns`, each call on every core through the
BLAS's own threads), with each tile operation timed: ``potrf`` (diagonal tile), ``trsm`` (a tile below it),
``syrk`` (a diagonal tile's update) and ``gemm`` (an off-diagonal tile's update). Each
operation's rate is its flop count (b^3/3, b^3, b^3, 2 b^3 for a b x b tile) over its
time, and the factorization's is n^3/3 over the whole; both against the SGEMM peak
(4096^2, best of 3) measured just before each factorization. Then the same matrix is
built again and factored as every solve factors it (:func:`kernelfit.solvers.cholesky.
cholesky_inplace`: the task graph, one tile operation per thread; ``as_solves_run``). Output:
``benchmarks/results/factor_ops_<tag>.json`` with the machine.
"""

from __future__ import annotations

import argparse
import collections
import datetime as _dt
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _ab import add_output_args, file_tag, sizes_of  # noqa: E402 (benchmarks/_ab.py)
from kernelfit.backend import get_backend  # noqa: E402
from kernelfit.bench.machine import describe_machine, measure_cpu_peaks  # noqa: E402
from kernelfit.kernels import get_kernel  # noqa: E402
from kernelfit.solvers import cholesky  # noqa: E402
from kernelfit.solvers.products import build_gram  # noqa: E402

FLOPS = {"potrf": 1.0 / 3.0, "trsm": 1.0, "syrk": 1.0, "gemm": 2.0}  # times b^3


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", default="20000", help="matrix sizes, comma-separated")
    p.add_argument("--tile-sizes", default="2500", help="comma-separated tile edges")
    p.add_argument("--seed", type=int, default=0)
    add_output_args(p, str(HERE / "results"), "n = 1,500 in tiles of 500: checks the script")
    return p.parse_args(argv)


class TimedOps(cholesky.MemoryTileOps):
    """The in-memory tile operations, each call timed and counted by kind."""

    def __init__(self, T, seconds, counts):
        super().__init__(T)
        self.seconds, self.counts = seconds, counts

    def _timed(self, kind, f, *a):
        t0 = time.perf_counter()
        out = f(*a)
        self.seconds[kind] += time.perf_counter() - t0
        self.counts[kind] += 1
        return out

    def potrf(self, k):
        return self._timed("potrf", super().potrf, k)

    def trsm(self, i, k):
        return self._timed("trsm", super().trsm, i, k)

    def update(self, i, c, k):
        return self._timed("syrk" if i == c else "gemm", super().update, i, c, k)


def one_size(X, tile: int, be, kernel, peak_size: int) -> dict:
    n = X.shape[0]
    T = build_gram(kernel, X, tile_size=tile, dtype=np.float32, backend=be)
    peaks = measure_cpu_peaks(peak_size)
    seconds, counts = collections.defaultdict(float), collections.Counter()
    t0 = time.perf_counter()
    cholesky.factor_columns(TimedOps(T, seconds, counts), T.bounds)
    total = time.perf_counter() - t0
    T.free()
    # every tile has b rows but (possibly) the last: the counts weigh full tiles
    b = T.tile_size
    ops = {k: {"seconds": seconds[k], "count": counts[k],
               "gflops": counts[k] * FLOPS[k] * b ** 3 / seconds[k] / 1e9 if seconds[k] else None}
           for k in FLOPS}
    sgemm = peaks["sgemm_gflops"]
    for v in ops.values():
        v["fraction_of_sgemm_peak"] = v["gflops"] / sgemm if v["gflops"] else None
    rate = n ** 3 / 3.0 / total / 1e9
    # the factorization every solve runs: the task graph where the GIL-free kernels are
    # there (one tile operation per thread), timed whole against a peak measured just before
    T = build_gram(kernel, X, tile_size=tile, dtype=np.float32, backend=be)
    peak_tasks = measure_cpu_peaks(peak_size)["sgemm_gflops"]
    t0 = time.perf_counter()
    cholesky.cholesky_inplace(T)
    solve_s = time.perf_counter() - t0
    T.free()
    solve_rate = n ** 3 / 3.0 / solve_s / 1e9
    return {"n": n, "tile_size": tile, "n_tiles": len(T.bounds), "factor_s": total,
            "gflops": rate, "sgemm_peak_gflops": sgemm, "fraction_of_sgemm_peak": rate / sgemm,
            "ops": ops, "peaks": peaks,
            "as_solves_run": {"how": "task graph" if be.gil_free_tile_kernels() is not None
                              and len(T.bounds) > 1 else "column loop",
                              "factor_s": solve_s, "gflops": solve_rate,
                              "sgemm_peak_gflops": peak_tasks,
                              "fraction_of_sgemm_peak": solve_rate / peak_tasks}}


def main(argv=None) -> int:
    args = parse_args(argv)
    tiles = [500] if args.dry_run else sizes_of(args.tile_sizes)
    ns = [1500] if args.dry_run else sizes_of(args.n)
    if not tiles or min(tiles) < 1 or not ns or min(ns) < 2:
        print("--tile-sizes takes whole numbers of at least 1, --n whole numbers of at "
              "least 2", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    X = np.floor(rng.random((max(ns), 784)) * 2.0).astype(np.float32)
    be, kernel = get_backend("cpu"), get_kernel("gaussian", bandwidth=5.0)
    machine = describe_machine()
    rows = []
    for n, tile in ((n, t) for n in ns for t in tiles):
        r = one_size(X[:n], tile, be, kernel, 512 if args.dry_run else 4096)
        rows.append(r)
        a = r["as_solves_run"]
        print(f"n={n} tile {tile}: column loop, each operation timed: {r['factor_s']:.2f} s, "
              f"{r['gflops']:.0f} GFLOP/s = {r['fraction_of_sgemm_peak']:.0%} of SGEMM "
              f"{r['sgemm_peak_gflops']:.0f}; "
              + ", ".join(f"{k} {v['gflops']:.0f}" for k, v in r["ops"].items()
                          if v["gflops"])
              + f"; as solves run ({a['how']}): {a['factor_s']:.2f} s, {a['gflops']:.0f} "
              f"GFLOP/s = {a['fraction_of_sgemm_peak']:.0%} of {a['sgemm_peak_gflops']:.0f}",
              flush=True)
    out = {"benchmark": "factor_ops", "issues": [14],
           "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "command": "bench_factor_ops.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "what": ("kernelfit's tiled float32 Cholesky of a Gaussian Gram matrix of seeded "
                    "random 0/1 images, each tile operation timed; rates against the SGEMM "
                    "peak measured just before each factorization"),
           "data": {"n": ns, "d": 784, "seed": args.seed, "kernel": "gaussian", "bandwidth": 5.0},
           "machine": machine, "runs": rows}
    path = Path(args.out) / f"factor_ops_{file_tag(args, machine)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
