"""``kernelfit solve``: the exact interpolating solution of K alpha = y on a dataset."""

from __future__ import annotations

from ..memory import fmt_bytes
from ..report import fmt_pct as _pct
from ._types import nonneg_float
from ._common import (add_data_arguments, add_kernel_arguments, add_solver_arguments,
                      check_output_paths, config_from_args, print_json, print_table)

HELP = "solve K alpha = y exactly on a dataset and report errors, residual, norm and times"
DESCRIPTION = (HELP + ". Example: kernelfit solve --dataset mnist --n-train 10000 "
               "--kernel gaussian --bandwidth 5")


def add_arguments(p) -> None:
    add_data_arguments(p)
    from ._features import add_feature_arguments

    add_feature_arguments(p)
    add_kernel_arguments(p)
    add_solver_arguments(p)
    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="print one JSON object")
    o.add_argument("--save", default=None, metavar="PATH",
                   help="store the fitted model (a pickle) for `kernelfit predict`")
    o.add_argument("--tolerance", type=nonneg_float, default=None, metavar="R",
                   help="accept a relative residual up to R: without it a solve whose float64 "
                        "relative residual is above 1e-8 exits with code 6 (not exact)")


def render(rec: dict) -> None:
    t = rec["timings"]
    kp = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                   for k, v in rec["kernel_params"].items() if k != "name")
    rows = [
        ("dataset", f"{rec['dataset']} ({rec['data_source']})"),
        ("features", rec["features"] + (f" {rec['feature_params']}" if rec["feature_params"]
                                         else "")),
        ("kernel", f"{rec['kernel']}" + (f" ({kp})" if kp else "")),
        ("n_train x d", f"{rec['n_train']} x {rec['n_features']}"),
        ("n_test", rec["n_test"]),
        ("solver / dtype / device", f"{rec['solver']} / {rec['dtype']} / {rec['device']}"),
        ("precision", _precision(rec)),
        ("ridge", rec["ridge"]),
        ("seed", rec["seed"]),
        ("train error", _pct(rec["train_error"])),
        ("test error", _pct(rec["test_error"])),
        ("relative residual", rec["relative_residual"]),
        ("exact", "yes" if rec.get("exact") else f"NO ({rec.get('inexact_reason')})"),
        ("RKHS norm", rec["rkhs_norm"]),
        ("factorization rate", None if rec.get("factor_gflops_per_s") is None
         else f"{rec['factor_gflops_per_s']:.1f} GFLOP/s"),
        ("peak memory", _memory(rec)),
    ]
    if rec.get("n_tiles_lower"):  # mixed precision: K's tiles kept for the refinement
        rows.append(("K kept for refinement", f"{rec.get('kept_tiles', 0)} of "
                                               f"{rec['n_tiles_lower']} tiles"))
    if "rank" in rec:
        rows.append(("numerical rank", rec["rank"]))
    dist = rec.get("distributed")
    if isinstance(dist, dict):  # the Gram and its factor were one graph on the cluster
        rows.append(("Dask cluster", f"{dist.get('scheduler')} ({dist.get('n_workers')} "
                                     "workers); gram and factor timed together"))
    print_table(rows, title="kernelfit solve")
    print_table([(k, f"{v:.3f} s") for k, v in t.items()], title="time per stage")
    if rec.get("saved_model"):
        print(f"model saved to {rec['saved_model']}")


def _memory(rec: dict) -> str:
    """The process's peak memory beside what the solve planned (its arrays: the plan and a
    budget cover those, not the interpreter and libraries around them), and the memory
    budget it planned within where one was set."""
    plan = rec.get("memory_plan") or {}
    budget, planned = plan.get("memory_budget_bytes"), plan.get("estimated_peak_bytes")
    peak = fmt_bytes(rec["peak_memory_bytes"])
    parts = ([f"solve planned {fmt_bytes(planned)}"] if planned else []) + (
        [f"budget {fmt_bytes(budget)}"] if budget else [])
    return f"{peak} ({', '.join(parts)})" if parts else peak


def _precision(rec: dict) -> str:
    """How the solve computed: its precision ('float64', 'float32'), 'mixed (float32
    factor, N refinement steps, N + 1 float64 products with K)', or the float64 a mixed
    attempt fell back to."""
    precision = rec.get("precision") or rec["dtype"]
    if rec.get("precision_fallback"):
        return f"{precision} (fell back from mixed precision; see precision_reason in --json)"
    probe = rec.get("conditioning_probe") or {}
    if precision == "mixed":
        # one residual after the first solve, then one per refinement step: each a float64
        # product with K (the probe predicts steps)
        steps = max(len(rec.get("refinement_history") or []) - 1, 0)
        # the products: the first residual's, one per step, and the certifying one
        products = rec.get("matvecs") or steps + 1
        expected = (f"; {probe['passes_predicted']} expected"
                    if probe.get("passes_predicted") is not None else "")
        return (f"mixed (float32 factor, {steps} refinement step{'s' * (steps != 1)}"
                f"{expected}, {products} float64 products with K)")
    if probe.get("verdict") == "float64":
        return (f"{precision} (a sample of K ruled mixed precision out; see "
                "precision_reason in --json)")
    return precision


def run(args) -> int:
    from ..run import run_solve

    check_output_paths(args)
    # --save and --tolerance are part of the options: the run layer saves an accepted
    # solve only (one that is not exact leaves no model file, nor replaces one)
    opts = config_from_args(args)
    rec = run_solve(opts)
    if args.json:  # the times mean little without the machine (CPU, BLAS and its kernel)
        from ..bench.machine import describe_machine

        print_json(dict(rec, machine=describe_machine()))
    else:
        render(rec)
    _unused_refinement_note(rec, opts.solver, args)
    return _exactness_exit(rec, args)


def _unused_refinement_note(rec: dict, solver, args) -> None:
    """--tol, --max-iter and --refine shape a refinement: where --precision auto chose a
    float64 factorization (no refinement), say that they had no effect (typed at their
    default values too)."""
    import sys

    from ._advice import FLAGS
    from ._common import typed_refinement_flags

    given = [FLAGS[name] for name in typed_refinement_flags(args)]
    if (given and solver.precision == "auto" and rec.get("refinement") is None
            and rec.get("precision") == "float64"):
        print(f"kernelfit solve: note: {', '.join(given)} had no effect: --precision auto chose "
              "a float64 factorization, which does not refine (precision_reason in --json); "
              "--precision mixed refines", file=sys.stderr)


def _exactness_exit(rec: dict, args) -> int:
    """Exit code 6 (with the way out on standard error) for a solve that is not exact."""
    import sys

    from ..kernel_defaults import exit_code_for
    from ._advice import NO_FINITE_RESIDUAL, inexact_ways_out, short_of_tol_note

    code = exit_code_for(rec, args.tolerance)
    if rec.get("exact", True):
        note = short_of_tol_note([rec], args)
        if note:
            print(f"kernelfit solve: note: {note}", file=sys.stderr)
        return code
    ways = inexact_ways_out(
        [rec], args, bandwidth_given=rec.get("bandwidth_rule", {}).get("rule") == "given")
    msg = (f"kernelfit solve: {'accepted' if code == 0 else 'error'}: the solve is not exact "
           f"({rec.get('inexact_reason')})")
    if code != 0 and rec.get("model_not_saved"):
        msg += f"; the model was not saved to {args.save}"
    if not ways:  # no finite residual: nothing above accepts or refines it
        ways = [NO_FINITE_RESIDUAL]
    print(msg + ("" if code == 0 else "; ways out: " + "; ".join(ways) + "."), file=sys.stderr)
    return code
