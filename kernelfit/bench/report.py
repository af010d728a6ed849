"""Reports of a benchmark run: JSON (comparable across machines), markdown and plots.

Every file is written atomically (a temporary file, then a rename), so an interrupted
run never leaves a half-written report. Plots use Matplotlib's Agg backend (no display).

Files for a run on host ``H`` (stem ``bench_H``)::

    bench_H.json        machine block + one record per (implementation, n) + fits
    bench_H.md          the same as tables
    bench_H_time.png    time vs n (log-log) with the n^3 slope and the extrapolation
    bench_H_peak.png    factorization rate as a fraction of the measured GEMM peak vs n
    bench_H_peers.png   kernelfit vs peers: end-to-end time and peak memory per n
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Dict, List, Optional

from .._io import dumps_json
from ..report import fmt_num as _num
from ..report import fmt_blas, fmt_bytes, fmt_pct, fmt_seconds, markdown_table

__all__ = ["write_json", "render_markdown", "plot_time", "plot_peak", "plot_peers",
           "write_report", "fmt_seconds", "machine_lines", "busy_note", "peak_caveat"]

#: free exponents of the factorization's time outside this range get a caveat under the
#: extrapolation (benchmarks/results/bench_vm.json, n = 2,000-20,000 on 2 cores: kernelfit
#: 2.5, scikit-learn 2.3, SciPy 1.8, whose small n are overhead)
EXPONENT_OK = (2.0, 4.0)
_COLORS = {"kernelfit-cpu": "tab:blue", "kernelfit-gpu": "tab:purple", "sklearn": "tab:orange",
           "scipy": "tab:green"}


def write_json(results: dict, path) -> Path:
    """Write ``results`` as indented JSON, atomically."""
    from .._io import atomic_write_text

    path = Path(path)
    atomic_write_text(path, dumps_json(results, indent=2) + "\n")
    return path


def _pct(v, digits=1) -> str:
    return fmt_pct(v, digits)


def machine_lines(machine: dict) -> List[str]:
    """A few human lines describing the machine and its measured peaks."""
    cpu = machine.get("cpu", {})
    mem = machine.get("memory", {})
    blas = machine.get("blas", {})
    ident = " ".join(f"{label} {cpu[k]}" for k, label in (("family", "family"),
                                                          ("model_number", "model")) if k in cpu)
    lines = [f"CPU: {cpu.get('model')} ({cpu.get('arch')}{', ' + ident if ident else ''}), "
             f"{cpu.get('usable')} usable cores "
             f"({cpu.get('logical')} logical, {cpu.get('physical')} physical)",
             f"memory: {fmt_bytes(mem.get('total_bytes'))} total, "
             f"{fmt_bytes(mem.get('available_bytes'))} available at start",
             f"BLAS/LAPACK: {fmt_blas(blas)}"]
    loaded = [b for b in machine.get("blas_loaded") or [] if b.get("owner")]
    if len({(b.get("owner"), b.get("version")) for b in loaded}) > 1:
        # NumPy and SciPy each bring their own: the Gram and products run in NumPy's, the
        # tiled Cholesky in SciPy's (the GEMM peaks are measured with NumPy's)
        lines.append("BLAS libraries: " + "; ".join(
            f"{b['owner']}'s {b.get('internal_api') or 'blas'} {b.get('version') or ''}"
            f" ({b.get('architecture')} kernel)"
            + (" (tiled Cholesky)" if b["owner"] == "scipy" else
               " (Gram, products, GEMM peaks)" if b["owner"] == "numpy" else "")
            for b in loaded))
    if machine.get("blas_env"):
        lines.append("BLAS environment: " + ", ".join(f"{k}={v}" for k, v in
                                                    machine["blas_env"].items()))
    gpus = machine.get("gpus") or []
    for g in gpus:
        lines.append(f"GPU: {g.get('name')}, {fmt_bytes(g.get('memory_bytes'))} "
                     f"(driver {g.get('driver')})")
    peaks = machine.get("peaks") or {}
    c = peaks.get("cpu") or {}
    if c.get("dgemm_gflops"):
        lines.append(f"CPU peaks (GEMM {c['dgemm']['size']}^2, best of {c['dgemm']['repeats']}): "
                     f"DGEMM {c['dgemm_gflops']:.1f} GFLOP/s, SGEMM {c['sgemm_gflops']:.1f} "
                     f"GFLOP/s")
    g = peaks.get("gpu") or {}
    if g.get("available") and g.get("fp64_gflops") is None:
        lines.append(f"GPU: {g.get('gpu_name')} (peaks not measured)")
    elif g.get("available"):
        lines.append(f"GPU peaks ({g.get('gpu_name')}): FP64 "
                     f"{_num(g.get('fp64_gflops'), '{:.0f}')} GFLOP/s, FP32 "
                     f"{_num(g.get('fp32_gflops'), '{:.0f}')} GFLOP/s")
    else:
        lines.append(f"GPU: unavailable ({g.get('reason')})")
    v = machine.get("versions", {})
    lines.append("versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val))
    load = machine.get("load_average")
    if load:
        lines.append(f"load average at start: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} "
                     "(1, 5, 15 min)" + (f"; {busy_note(machine)}" if busy_note(machine)
                                         else ""))
    return lines


#: a 1-minute load average at the start of at least this share of the usable cores: busy
BUSY_SHARE = 0.5


def busy_note(machine: dict) -> Optional[str]:
    """What a busy machine means for the figures, or None: other work was running, or had
    just run, when the bench started (its 1-minute load average is at least
    :data:`BUSY_SHARE` of the usable cores)."""
    load = machine.get("load_average") or []
    cores = (machine.get("cpu") or {}).get("usable") or 0
    if not load or not cores or load[0] < BUSY_SHARE * cores:
        return None
    return (f"BUSY: a load of {load[0]:.2f} on {cores} usable cores when the bench started "
            "(other work running, or just ended): the times may be slower, and the peaks "
            "lower, than this machine gives on its own; run again on a quiet machine")


def peak_caveat(records: list) -> Optional[str]:
    """A caveat where a figure beats the measured GEMM peak (a factorization above 100% of
    it, or a run faster than its 'limit'): the peak was under-measured, by a busy machine
    or a small --peak-size; else None."""
    over = [r for r in records if r.get("status") == "ok" and (
        (r.get("fraction_of_peak") or 0) > 1.0
        or (r.get("limit_s") and r.get("total") and r["total"] < r["limit_s"]))]
    if not over:
        return None
    who = ", ".join(f"{r['label']} n={r['n']}" for r in over[:4])
    return (f"above the measured GEMM peak ({who}): the peak was under-measured (a busy "
            "machine, or a small --peak-size); the fractions of peak and the limits are "
            "then too high and too low: run again with --peak-size 4096 on a quiet machine")


def _summary_cell(r: Optional[dict]) -> str:
    if r is None:
        return "-"
    if r["status"] != "ok":
        extra = f" ({r['signal']})" if r.get("signal") and r["status"] == "crashed" else ""
        return r["status"] + extra
    cell = fmt_seconds(r.get("total"))
    if r.get("factor_gflops"):
        cell += f" ({r['factor_gflops']:.3g} GFLOP/s"
        cell += f", {_pct(r.get('fraction_of_peak'), 0)})" if r.get("fraction_of_peak") else ")"
    return cell


def render_markdown(results: dict, figures: Optional[Dict[str, str]] = None) -> str:
    """The run as markdown: machine, configuration, one table row per record, ratios,
    extrapolation, skipped runs, figures."""
    cfg = results.get("config", {})
    out = io.StringIO()
    w = out.write
    host = results["machine"].get("host")
    w(f"# kernelfit bench on {host}\n\n")
    w(f"{results.get('created')}, {results.get('elapsed_s', 0):.0f} s in all.\n\n")
    w("## Machine\n\n")
    for line in machine_lines(results["machine"]):
        w(f"- {line}\n")
    w("\n## Configuration\n\n")
    kp = cfg.get("kernel")
    if kp in ("gaussian", "laplacian"):
        rule = cfg.get("bandwidth_rule") or {}
        kp += f" (bandwidth {_num(cfg.get('bandwidth'), '{:.4g}')}" + (
            f": {rule['why']}" if rule.get("why") else "") + ")"
    elif kp in ("polynomial", "normalized"):
        kp += f" (degree {cfg.get('degree')})"
    w(f"- data: {cfg.get('dataset')}, d = {cfg.get('d')}, {cfg.get('n_test')} test points, "
      f"seed {cfg.get('seed')}\n- kernel: {kp}, {cfg.get('dtype')}\n"
      f"- repeats: kernelfit {cfg.get('repeats')}, peers {cfg.get('peer_repeats')} "
      f"(medians); timeout {cfg.get('timeout_s')} s per run; budget {cfg.get('budget_s')} s\n"
      f"- peers: {', '.join(cfg.get('peers') or []) or 'none'}"
      f" (scikit-learn KernelRidge alpha = {cfg.get('sklearn_alpha')}; scipy cho_factor/"
      f"cho_solve on a dense K)\n")
    if cfg.get("peer_env"):
        w(f"- peer environment: {cfg['peer_env']} (the peers ran with it; the machine "
          "block and the GEMM peaks, the peers' fractions of peak included, are this "
          "process's own)\n")
    w("\n## Summary\n\n")
    w("End-to-end time (fit + predict; kernelfit includes its residual check), median; "
      "in brackets the factorization rate and its fraction of the measured GEMM peak.\n\n")
    labels = _labels(results)
    by = {(r["label"], r["n"]): r for r in results["records"]}
    rows = [["n"] + labels]
    for n in sorted({r["n"] for r in results["records"]}):
        rows.append([str(n)] + [_summary_cell(by.get((lab, n))) for lab in labels])
    w("\n".join(markdown_table(rows)) + "\n")
    caveat = peak_caveat(results["records"])
    if caveat:
        w(f"\nNote: {caveat}.\n")
    w("\n## Details\n\n")
    w("Times are medians. Factor rate: n^3/3 flops over the factorization time; % peak: of "
      "the measured GEMM peak. Peak memory: the child process's maximum resident set.\n\n")
    warm = [r for r in results["records"] if r.get("warmup_s") is not None]
    if warm:
        each = ", ".join(f"n = {r['n']}: {r['warmup_s']:.1f} s on "
                         f"{r.get('warmup_rows') or 0:,} points" for r in warm)
        w("GPU runs first solve a slice of the points, untimed (one-off costs of a fresh "
          f"process: CuPy's kernels, the CUDA libraries' first calls): {each}.\n\n")
    head = ["n", "implementation", "status", "Gram", "factor", "solve", "residual",
            "predict", "total", "factor GFLOP/s", "% peak", "peak memory", "rel. residual",
            "test error"]
    rows = [head]
    for r in results["records"]:
        if r["status"] in ("unavailable", "skipped"):
            continue
        status = r["status"]
        if status != "ok":
            status = f"{status}: {r.get('reason') or ''}".replace("|", "\\|")
        cells = [str(r["n"]), r["label"], status] + [fmt_seconds(r.get(s)) for s in
                                                     ("gram", "factor", "solve", "residual",
                                                      "predict", "total")]
        cells += [_num(r.get("factor_gflops"), "{:.3g}"), _pct(r.get("fraction_of_peak")),
                  fmt_bytes(r.get("peak_rss_bytes")), _num(r.get("relative_residual"),
                                                            "{:.1e}")
                  + (" (NOT exact)" if r.get("exact") is False else ""),
                  _pct(r.get("test_error"), 2)]
        rows.append(cells)
    w("\n".join(markdown_table(rows)) + "\n")
    w("\nscikit-learn's fit (Gram + solve) is in the total; its stages are not separable. "
      "The peers' residual is checked outside their timed total.\n")
    rated = [r for r in results["records"] if r.get("stage_rates")]
    if rated:
        w("\n## Stage rates\n\n")
        w("Each stage's achieved rate (its GEMM flop count over its median time) and its "
          "fraction of the GEMM peak measured in this run (the factor against the float32 "
          "peak when it ran in float32 or mixed precision). Limit: all stages' flops at "
          "peak.\n\n")
        w("| n | implementation | precision | Gram | factor | predict | limit | total |\n"
          "|---|---|---|---|---|---|---|---|\n")
        for r in rated:
            cells = [str(r["n"]), r["label"], r.get("precision") or "-"]
            for st in ("gram", "factor", "predict"):
                sr = r["stage_rates"].get(st)
                cells.append("-" if not sr else f"{sr['gflops']:.3g} GFLOP/s "
                                                 f"({_pct(sr.get('fraction_of_peak'), 0)})")
            cells += [fmt_seconds(r.get("limit_s")), fmt_seconds(r.get("total"))]
            w("| " + " | ".join(cells) + " |\n")
    comps = results.get("comparisons") or []
    if comps:
        w("\n## kernelfit (CPU) vs peers at equal n\n\n")
        w("Runs alternated between the implementations, medians. Limit: kernelfit's flop "
          "count over the measured GEMM peak (and as a fraction of scikit-learn's time).\n\n")
        w("| n | kernelfit | limit | time / scikit-learn | limit / scikit-learn | memory / "
          "scikit-learn | factor rate / scipy dpotrf | time / scipy | memory / scipy |\n"
          "|---|---|---|---|---|---|---|---|---|\n")
        for c in comps:
            def cell(key, peer):
                if key in c:
                    # a float32 (mixed-precision) factor against SciPy's float64 dpotrf
                    mixed = key == "factor_rate_vs_scipy" and \
                        c.get("precision") not in (None, "float64")
                    return f"{c[key]:.2f}" + (f" ({c['precision']}: float32 factor)"
                                              if mixed else "")
                return c.get(f"{peer}_status", "-")

            w(f"| {c['n']} | {fmt_seconds(c.get('kernelfit_s'))} | "
              f"{fmt_seconds(c.get('limit_s'))} | {cell('time_vs_sklearn', 'sklearn')} | "
              f"{cell('limit_vs_sklearn', 'sklearn')} | {cell('memory_vs_sklearn', 'sklearn')} | "
              f"{cell('factor_rate_vs_scipy', 'scipy')} | "
              f"{cell('time_vs_scipy', 'scipy')} | {cell('memory_vs_scipy', 'scipy')} |\n")
    ext = results.get("extrapolation") or {}
    if ext:
        w("\n## n^3 extrapolation\n\n")
        w("Fitted on the completed runs: t = c n^3 (least squares, dominated by the largest "
          "n) predicts the time at the largest n that fits in the memory available now; the "
          "free exponent of log t vs log n is shown as a check (3 when the n^3 work "
          "dominates).\n\n")
        w("| implementation | stage | fitted exponent | c n^3 at n = 10,000 (s) | largest n "
          "that fits | predicted stage time there | predicted total there |\n"
          "|---|---|---|---|---|---|---|\n")
        for label, e in ext.items():
            f = e["stage_fit"]
            c3 = f.get("cubic_coef")
            w(f"| {label} | {e['stage']} | {_num(f.get('exponent'), '{:.2f}')} | "
              f"{_num(None if c3 is None else c3 * 1e12, '{:.3g}')} | "
              f"{e.get('n_max_fits') or '-'} | {fmt_seconds(e.get('predicted_stage_s'))} | "
              f"{fmt_seconds(e.get('predicted_total_s'))} |\n")
        apart = sorted(f"{label} (n = {e['n_max_fits']:,}: {e['precision_at_n_max']}; "
                       f"fitted on {', '.join(e['precisions_fitted'])})"
                       for label, e in ext.items()
                       if e.get("precision_at_n_max") and e.get("precisions_fitted")
                       and [e["precision_at_n_max"]] != e["precisions_fitted"])
        if apart:
            w(f"\nAnother precision there: {'; '.join(apart)}. The prediction is that of the "
              "runs fitted (a float64 time where mixed precision would factor in float32, "
              "about half as long).\n")
        off = sorted({f"{label} {e['stage']} ({e['stage_fit']['exponent']:.2f})"
                      for label, e in ext.items()
                      if e["stage_fit"].get("exponent") is not None
                      and not EXPONENT_OK[0] <= e["stage_fit"]["exponent"] <= EXPONENT_OK[1]})
        small = []  # the stage a small part of the total at the largest n measured
        for label, e in ext.items():
            done = [r for r in results["records"] if r.get("label") == label
                    and r.get("status") == "ok" and r.get(e["stage"]) and r.get("total")]
            top = max(done, key=lambda r: r["n"]) if done else None
            if top is not None and top[e["stage"]] < 0.5 * top["total"]:
                small.append(f"{label} ({e['stage']} {100 * top[e['stage']] / top['total']:.0f}%"
                             f" of the total at n = {top['n']:,})")
        if small:
            w(f"\nRough totals: {', '.join(small)}: the rest of the total (process start, "
              "data, Gram, predictions: fixed or n^2) is scaled by n^3 too, so the predicted "
              "total overstates; the predicted stage time is the firmer figure.\n")
        if off:
            w(f"\nRough: the free exponent of {', '.join(off)} is outside "
              f"{EXPONENT_OK[0]:g}-{EXPONENT_OK[1]:g}, so the measured times are not yet "
              "dominated by the n^3 work (small n, where overheads lead) or the machine was "
              "busy; the c n^3 prediction rests on the largest n alone. A larger --n makes "
              "it firmer.\n")
    skipped = results.get("skipped") or []
    if skipped:
        w("\n## Not measured\n\n")
        groups: Dict[tuple, list] = {}
        for sk in skipped:
            groups.setdefault((sk["label"], sk["status"], sk["reason"]), []).append(sk["n"])
        for (label, status, reason), ns in groups.items():
            w(f"- {label} at n = {', '.join(map(str, ns))}: {status} ({reason})\n")
    if figures:
        w("\n## Figures\n\n")
        for title, name in figures.items():
            w(f"![{title}]({name})\n\n")
    return out.getvalue()


# ---------------------------------------------------------------- plots
def _save(fig, path: Path) -> None:
    from .._io import atomic_writer

    with atomic_writer(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=120, bbox_inches="tight")


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _labels(results) -> List[str]:
    seen = []
    for r in results["records"]:
        if r["label"] not in seen:
            seen.append(r["label"])
    return seen


def plot_time(results: dict, path) -> Path:
    """Factor (solid) and total (dashed) time vs n, log-log, with an n^3 reference slope,
    crashes/timeouts marked with x, and the extrapolated time at the largest n that fits."""
    plt = _plt()
    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 5))
    ext = results.get("extrapolation") or {}
    anchor = None
    for label in _labels(results):
        recs = [r for r in results["records"] if r["label"] == label]
        ok = [r for r in recs if r["status"] == "ok"]
        col = _COLORS.get(label)
        key = "factor" if any(r.get("factor") for r in ok) else "fit"
        pts = [(r["n"], r[key]) for r in ok if r.get(key)]
        if pts:
            ax.plot(*zip(*pts), "o-", color=col, label=f"{label} {key}")
            loose = [(r["n"], r[key]) for r in ok if r.get(key) and r.get("exact") is False]
            if loose:  # hollow rings around the points whose solve is not exact
                ax.plot(*zip(*loose), "o", color=col, mfc="none", markersize=13,
                        label=f"{label}: not exact (residual above 1e-8)")
            if label == "kernelfit-cpu" or anchor is None:
                anchor = pts[-1]
        tot = [(r["n"], r["total"]) for r in ok if r.get("total")]
        if tot:
            ax.plot(*zip(*tot), "s--", color=col, alpha=0.6, label=f"{label} total")
        bad = [r for r in recs if r["status"] in ("crashed", "timeout", "memory")]
        for r in bad:
            y = r.get("wall_s") or 1.0
            ax.plot([r["n"]], [y], "x", color=col, markersize=10, mew=2)
            ax.annotate(r["status"] + (f" ({r['signal']})" if r.get("signal") else ""),
                        (r["n"], y), textcoords="offset points", xytext=(4, 4), fontsize=7,
                        color=col)
        e = ext.get(label) or {}
        if e.get("predicted_stage_s") and e.get("n_max_fits") and pts:
            ax.plot([pts[-1][0], e["n_max_fits"]], [pts[-1][1], e["predicted_stage_s"]], ":",
                    color=col, alpha=0.7)
            ax.plot([e["n_max_fits"]], [e["predicted_stage_s"]], "*", color=col, markersize=12,
                    label=f"{label}: c n^3 prediction at n = {e['n_max_fits']} (fits in memory)")
    if anchor is not None:
        ns = [r["n"] for r in results["records"]]
        n_lo = min(ns)
        n_hi = max([max(ns)] + [e.get("n_max_fits") or 0 for e in ext.values()])
        import numpy as np

        xs = np.geomspace(n_lo, n_hi, 20)
        ax.plot(xs, anchor[1] * (xs / anchor[0]) ** 3, ":", color="gray", label="n^3 slope")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("n (training points)")
    ax.set_ylabel("time (s)")
    ax.set_title(f"Solve time vs n ({results['machine'].get('host')})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)
    plt.close(fig)
    return path


def plot_peak(results: dict, path) -> Path:
    """Achieved factorization rate as a fraction of the measured GEMM peak, vs n."""
    plt = _plt()
    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    any_pts = False
    for label in _labels(results):
        pts = [(r["n"], r["fraction_of_peak"]) for r in results["records"]
               if r["label"] == label and r.get("fraction_of_peak")]
        if pts:
            any_pts = True
            ax.plot(*zip(*pts), "o-", color=_COLORS.get(label), label=label)
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("n (training points)")
    ax.set_ylabel("factor GFLOP/s / GEMM peak")
    # each point is against the peak of the precision its factorization ran in
    peaks = (results["machine"].get("peaks") or {}).get("cpu") or {}
    sub = (f"CPU peaks: DGEMM {peaks['dgemm_gflops']:.0f}, SGEMM "
           f"{peaks.get('sgemm_gflops') or 0:.0f} GFLOP/s, each point against its "
           "precision's" if peaks.get("dgemm_gflops") else "peak not measured")
    ax.set_title(f"Cholesky rate as a fraction of peak\n({sub})")
    ax.grid(True, which="both", alpha=0.3)
    if any_pts:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no factorization rates (peaks not measured?)",
                transform=ax.transAxes, ha="center")
    _save(fig, path)
    plt.close(fig)
    return path


def plot_peers(results: dict, path) -> Path:
    """kernelfit vs peers per n: end-to-end time and peak memory (grouped bars; runs that
    did not complete are labelled with their status)."""
    plt = _plt()
    import numpy as np

    path = Path(path)
    labels = _labels(results)
    ns = sorted({r["n"] for r in results["records"]})
    by = {(r["label"], r["n"]): r for r in results["records"]}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    width = 0.8 / max(len(labels), 1)
    x = np.arange(len(ns))
    for ax, key, ylabel, scale in ((axes[0], "total", "end-to-end time (s)", 1.0),
                                   (axes[1], "peak_rss_bytes", "peak memory (GiB)", 2.0 ** -30)):
        for i, label in enumerate(labels):
            vals, notes = [], []
            for n in ns:
                r = by.get((label, n))
                v = r.get(key) if r else None
                vals.append((v or 0) * scale if (r and r["status"] == "ok") else 0)
                notes.append(None if (r and r["status"] == "ok") else (r["status"] if r
                                                                        else "-"))
            xs = x + (i - (len(labels) - 1) / 2) * width
            ax.bar(xs, vals, width, color=_COLORS.get(label), label=label)
            for xi, note in zip(xs, notes):
                if note:
                    ax.text(xi, 0, note, rotation=90, ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x)
        ax.set_xticklabels([str(n) for n in ns])
        ax.set_xlabel("n")
        ax.set_ylabel(ylabel)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("kernelfit vs peers")
    _save(fig, path)
    plt.close(fig)
    return path


def write_report(results: dict, out_dir, stem: Optional[str] = None) -> Dict[str, Path]:
    """Write JSON, markdown and the plots into ``out_dir`` (the fraction-of-peak plot only
    where peaks were measured); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or f"bench_{results['machine'].get('host_tag', 'host')}"
    paths = {"json": out / f"{stem}.json", "markdown": out / f"{stem}.md",
             "time_plot": out / f"{stem}_time.png", "peak_plot": out / f"{stem}_peak.png",
             "peers_plot": out / f"{stem}_peers.png"}
    if not any(r.get("fraction_of_peak") for r in results["records"]):
        del paths["peak_plot"]  # peaks not measured (--no-peaks): nothing to draw
    figs = {"time vs n": paths["time_plot"].name, "kernelfit vs peers":
            paths["peers_plot"].name}
    if "peak_plot" in paths:
        figs["fraction of peak"] = paths["peak_plot"].name
    from .._io import atomic_batch, atomic_write_text

    with atomic_batch():  # all the files, or none (a full disk at the fourth)
        plot_time(results, paths["time_plot"])
        if "peak_plot" in paths:
            plot_peak(results, paths["peak_plot"])
        plot_peers(results, paths["peers_plot"])
        results = dict(results)
        results["files"] = {k: p.name for k, p in paths.items()}
        write_json(results, paths["json"])
        atomic_write_text(paths["markdown"], render_markdown(results, figs))
    if "peak_plot" not in paths:
        # an earlier run's fraction-of-peak plot would sit beside this report as if of it
        (out / f"{stem}_peak.png").unlink(missing_ok=True)
    return paths
