"""Does ``--precision auto`` pick the faster precision, and does its time model hold?

    python benchmarks/bench_auto_choice.py --data-dir ../shared/data --tag zen4_avx512
    python benchmarks/bench_auto_choice.py --dry-run      # random arrays: about a minute

Each configuration (MNIST, raw pixels or Gabor features, n training images, a memory limit
through ``KERNELFIT_MEMORY_LIMIT`` that sets how much of K mixed precision may keep) is
solved twice, each time in a fresh ``kernelfit solve --json`` process: once with
``--precision auto``, once the other way: ``mixed`` where auto factored in float64,
``float64`` where it chose mixed (kept it, or fell back to float64: its fit then counts
the attempt at mixed precision, ``precision_fallback.mixed_timings``). A forced mixed run
refines to auto's own target (``--tol 1e-12``; until 2026-12-06 to mixed precision's
default 1e-10, in ``auto_choice_zen5_s29_before*.json`` and earlier files) and stops after
``MIXED_PASSES`` passes, converged or not (``--tolerance 1``), and says which. Beyond the
default six configurations (pixels and Gabor features), others solve MNIST pixels with
the Laplacian kernel, a wider Gaussian (h = 10) and random Fourier features
(``--configs``; each row records its extra arguments and the kernel's parameters).
Recorded per run: the precision, auto's reason and expected times (its model:
factorization, refinement passes, kept share), its conditioning probe (samples, predicted
rate and passes, verdict; :mod:`kernelfit.solvers.conditioning`), the stage times, the
refinement's passes (the refinement's seconds over its passes: each a K product and a
preconditioner solve), the residual and test error. Per configuration: the model's pass
time against the measured one, and whether auto's pick was the faster fit (probe + Gram
+ factorization + refinement or residual, as measured). Gabor features are computed once
per configuration and read from a feature cache folder after that. Output:
``benchmarks/results/auto_choice_<tag>.json`` with the machine described.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _ab import add_output_args, file_tag, no_data  # noqa: E402  (benchmarks/_ab.py)
from bench_code_ab import commit_of  # noqa: E402  (benchmarks/bench_code_ab.py)
from kernelfit.bench.machine import describe_machine  # noqa: E402
from kernelfit.solvers.plan import AUTO_TOL  # noqa: E402

#: (name, features, n, memory limit in bytes or None): all of K kept; a part of it kept,
#: on the integer grid (pixels) and off it (Gabor features, 3,969 columns); Gabor features
#: at n = 10,000, where mixed precision has taken 3 to 14 passes
CONFIGS = (("pixels-10k", "raw", 10000, None),
           ("gabor-10k", "gabor", 10000, None),
           ("pixels-20k", "raw", 20000, None),
           ("pixels-20k-4GB", "raw", 20000, 4e9),
           ("gabor-20k", "gabor", 20000, None),
           ("gabor-20k-4GB", "gabor", 20000, 4e9),
           # other kernels, for the probe's rate against the measured one (not in the
           # default set): the Laplacian kernel, a wider Gaussian, random Fourier features
           ("laplacian-10k", "raw", 10000, None, ("--kernel", "laplacian")),
           ("wide-10k", "raw", 10000, None, ("--bandwidth", "10")),
           ("rff-10k", "rff", 10000, None),
           ("laplacian-20k", "raw", 20000, None, ("--kernel", "laplacian")),
           ("wide-20k", "raw", 20000, None, ("--bandwidth", "10")))
#: the configurations run by default
DEFAULT_CONFIGS = CONFIGS[:6]
#: a forced mixed run stops after this many passes (beyond the 14 auto's model allows for)
#: whatever its residual (``--tolerance 1``: recorded, not refused), so that a refinement
#: that cannot converge still gives its pass times
MIXED_PASSES = 18
#: the fit's stages: what a precision changes (predictions, loading and features do not)
FIT_STAGES = ("probe", "gram", "factor", "solve", "residual")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="folder holding mnist/")
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--configs", default=",".join(c[0] for c in DEFAULT_CONFIGS),
                   help="the configurations to run, comma-separated (default: the first "
                        "six; all: " + ", ".join(c[0] for c in CONFIGS) + ")")
    add_output_args(p, str(HERE / "results"),
                    "random arrays (n = 6,500, 40 columns), one configuration")
    return p.parse_args(argv)


def solve(args, cfg, precision: str, workdir: Path) -> dict:
    """One ``kernelfit solve --json`` process; its record, or the failure."""
    name, features, n, limit = cfg[:4]
    extra = list(cfg[4]) if len(cfg) > 4 else []
    if args.dry_run:
        data = ["--dataset", f"npz:{workdir / 'random.npz'}", "--bandwidth", "3"]
    else:
        data = ["--dataset", "mnist", "--data-dir", args.data_dir, "--n-train", str(n),
                "--n-test", str(args.n_test), "--features", features]
        if features != "raw":  # raw pixels have no feature cache (the CLI refuses one)
            data += ["--feature-cache-dir", str(workdir / "features")]
    env = dict(os.environ, KERNELFIT_PROGRESS="0", PYTHONPATH=str(HERE.parent))
    if limit:
        env["KERNELFIT_MEMORY_LIMIT"] = str(int(limit))
    # a forced mixed run refines to auto's own target (1e-12), not mixed precision's
    # default 1e-10: the same answer auto's mixed run gives
    bound = (["--max-iter", str(MIXED_PASSES - 1), "--tolerance", "1", "--tol", repr(AUTO_TOL)]
             if precision == "mixed" else [])
    cmd = [sys.executable, "-m", "kernelfit", "solve", *data, *extra, "--precision", precision,
           *bound, "--json", "--no-progress"]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    except subprocess.TimeoutExpired:
        return {"precision_asked": precision, "status": "timed out after 3600 s"}
    if proc.returncode != 0:
        return {"precision_asked": precision, "status": "failed",
                "stderr_tail": proc.stderr[-1500:]}
    rec = json.loads(proc.stdout)
    t = rec.get("timings") or {}
    fallback = rec.get("precision_fallback") or {}
    # auto's attempt at mixed precision before it fell back: part of its fit
    attempt = sum(float(v) for v in (fallback.get("mixed_timings") or {}).values())
    steps = rec.get("refinement_step_seconds") or []
    return {"precision_asked": precision, "status": "ok", "precision": rec.get("precision"),
            "precision_reason": rec.get("precision_reason"),
            "expected_time": (rec.get("plan_choice") or {}).get("expected_time"),
            "conditioning_probe": rec.get("conditioning_probe"),
            "timings": t, "mixed_attempt_s": attempt,
            "fit_s": sum(t.get(k, 0.0) for k in FIT_STAGES) + attempt,
            "passes": len(steps), "step_s": steps,
            "refinement_history": rec.get("refinement_history"),
            "kernel_params": rec.get("kernel_params"),
            "deflation": rec.get("deflation"),
            # a pass: its K product and its preconditioner solve (the steps' seconds leave
            # the solve out), so the refinement's seconds over its passes
            "seconds_per_pass": t.get("solve", 0.0) / len(steps) if steps else None,
            "relative_residual": rec.get("relative_residual"),
            "converged": rec.get("converged"), "tol": rec.get("solve_tol"),
            "precision_fallback": rec.get("precision_fallback"),
            "test_error": rec.get("test_error"), "kept_tiles": rec.get("kept_tiles"),
            "n_tiles_lower": rec.get("n_tiles_lower"), "kept_storage": rec.get("kept_storage")}


def compare(auto: dict, other: dict) -> dict:
    """Whether auto's pick was the faster fit, and its model against the measurement."""
    if auto.get("status") != "ok" or other.get("status") != "ok":
        return {"verdict": "a run failed"}
    t = auto.get("expected_time") or {}
    mixed = auto if auto["precision"] == "mixed" else other if other["precision"] == "mixed" \
        else {"seconds_per_pass": None, "passes": None}
    # a forced mixed run that did not converge within MIXED_PASSES is no faster way
    other_done = other["precision"] != "mixed" or bool(other.get("converged"))
    out = {"auto_picked": auto["precision"], "auto_fell_back": bool(auto["precision_fallback"]),
           "auto_fit_s": auto["fit_s"], "other_fit_s": other["fit_s"],
           "other_converged": other_done,
           "auto_was_faster": auto["fit_s"] <= other["fit_s"] or not other_done,
           "model_pass_s": t.get("pass_s"), "measured_pass_s": mixed["seconds_per_pass"],
           "mixed_passes": mixed["passes"],
           "probe_passes_predicted": (auto.get("conditioning_probe") or {}).get(
               "passes_predicted")}
    if t:
        out["model"] = {k: t.get(k) for k in ("float64_s", "mixed_s", "mixed_best_s",
                                              "mixed_worst_s", "kept_fraction",
                                              "integer_grid")}
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if no_data(args):
        return 2
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = sorted(set(names) - {c[0] for c in CONFIGS})
    if unknown and not args.dry_run:
        print(f"unknown configuration {unknown[0]!r}: choose from "
              f"{', '.join(c[0] for c in CONFIGS)}", file=sys.stderr)
        return 2
    configs = ((("random-6500", "raw", 6500, None),) if args.dry_run
               else tuple(c for c in CONFIGS if c[0] in names))
    machine = describe_machine()
    results, ok = [], True
    with tempfile.TemporaryDirectory(prefix="kernelfit-auto-") as tmp:
        work = Path(tmp)
        if args.dry_run:
            import numpy as np

            rng = np.random.default_rng(0)
            X = rng.random((6700, 40))
            y = rng.integers(0, 3, 6700)
            np.savez(work / "random.npz", X_train=X[:6500], y_train=y[:6500],
                     X_test=X[6500:], y_test=y[6500:])
        for cfg in configs:
            auto = solve(args, cfg, "auto", work)
            picked = auto.get("precision")
            # the other way: mixed where auto factored in float64 from the start, float64
            # where auto chose mixed, kept it or fell back (its attempt is in its record)
            fell_back = bool(auto.get("precision_fallback"))
            other = solve(args, cfg, "mixed" if picked == "float64" and not fell_back
                          else "float64", work)
            row = {"config": cfg[0], "features": cfg[1], "n": cfg[2],
                   "memory_limit_bytes": cfg[3],
                   "extra_args": list(cfg[4]) if len(cfg) > 4 else [],
                   "auto": auto, "other": other,
                   "comparison": compare(auto, other)}
            ok &= auto.get("status") == "ok" and other.get("status") == "ok"
            results.append(row)
            c = row["comparison"]
            print(f"{cfg[0]}: auto {picked} {auto.get('fit_s', float('nan')):.1f} s, "
                  f"other {other.get('precision')} {other.get('fit_s', float('nan')):.1f} s; "
                  f"pass model {c.get('model_pass_s')} measured "
                  f"{c.get('measured_pass_s')} ({c.get('mixed_passes')} passes)",
                  flush=True)
    out = {"benchmark": "auto_choice", "script": "benchmarks/bench_auto_choice.py",
           "argv": list(argv if argv is not None else sys.argv[1:]),
           "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
           "commit": commit_of(str(HERE.parent)), "machine": machine,
           "fit_stages": list(FIT_STAGES), "results": results}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / f"auto_choice_{file_tag(args, machine)}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
