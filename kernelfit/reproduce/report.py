"""The reproduce report: one table (markdown, JSON) and figures (PNG), written atomically."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, Optional

from .._io import atomic_batch, atomic_write_text, atomic_writer, dumps_json
from ..report import fmt_blas, fmt_bytes
from .rows import SEED

__all__ = ["save_line_plot", "write_report", "render_markdown", "COLUMNS"]

COLUMNS = ("claim", "paper", "kernelfit", "n", "residual", "time", "peak memory", "machine",
           "verdict", "reason")


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_line_plot(path, series: Dict[str, tuple], *, xlabel: str, ylabel: str, title: str,
                   xlog: bool = False) -> None:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 4))
    ticks = {}  # x position on a log axis -> its label
    for label, (xs, ys) in series.items():
        pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
        if xlog:  # 0 has no place on a log axis: draw it one decade below the smallest x
            pos = [x for x, _ in pts if x > 0]
            floor = min(pos) / 10 if pos else 1.0
            ticks.update({(x if x > 0 else floor): _tick_label(x) for x, _ in pts})
            pts = [(x if x > 0 else floor, y) for x, y in pts]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    if xlog:
        from matplotlib.ticker import NullFormatter

        ax.set_xscale("log")
        if ticks:  # label the points themselves, not the decades' minor ticks
            ax.set_xticks(sorted(ticks), [ticks[x] for x in sorted(ticks)])
            ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_writer(Path(path), "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)


def _tick_label(x) -> str:
    """A tick label for a data point: whole numbers with thousands separators, else %g."""
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:g}"


def _fmt_value(r: dict, key: str) -> str:
    v = r.get(key)
    if v is None:
        return "-"
    if r.get("metric") == "norm":
        return f"{v:,.0f}"
    return f"{100 * v:.2f}%"


def _cells(r: dict) -> list:
    res = r.get("relative_residual")
    res_txt = (("-" if res is None else f"{res:.1e}")  # (a residual not finite: null)
               + (" (NOT exact)" if r.get("exact") is False else ""))
    n = "-" if r.get("n_train") is None else f"{r['n_train']:,}/{r.get('n_test') or 0:,}"
    t = r.get("seconds")
    claim = r["claim"] + (" [lossy CIFAR-10 JPEG set, not the official files]"
                          if "JPEG" in str(r.get("data") or "") else "")
    return [claim, r.get("paper_text") or "-", _fmt_value(r, "kernelfit"), n, res_txt,
            "-" if t is None else f"{t:,.0f} s" if t >= 10 else f"{t:.1f} s",
            fmt_bytes(r.get("peak_memory_bytes")),
            r.get("machine", "-"), r["verdict"], r.get("reason") or ""]


def render_markdown(report: dict) -> str:
    lines = [f"# kernelfit reproduce: Zhang et al. (ICLR 2017), kernel experiments"
             f"{' (QUICK run: small n, not comparable)' if report['quick'] else ''}", "",
             f"Written on {report['machine']['short']}, "
             f"{report['machine']['memory'].get('total_bytes', 0) / 2 ** 30:.0f} GiB, "
             f"BLAS {fmt_blas(report['machine'].get('blas'))}, "
             f"{report['generated']}. Each row's machine column names the machine that "
             f"made that row's result. Every subset, feature map and sample is drawn with "
             f"seed {report.get('seed', SEED)}.", "",
             "n is training/test points; residual is the float64 relative residual "
             "|K alpha - Y| / |Y| (exact: at most 1e-8); time is the solve's wall time; "
             "peak memory is the process's peak resident memory.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in report["rows"]:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in _cells(r)) + " |")
    lines += ["", "## Experiments", ""]
    for name, st in report["experiments"].items():
        msg = f": {st['message']}" if st.get("message") else ""
        lines.append(f"- **{name}**: {st['status']}{msg}")
        for f in st.get("figures", []):
            lines.append(f"  - ![{name}]({f})")
    if report.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def _summary_png(path: Path, rows: list) -> None:
    plt = _figure()
    pts = [r for r in rows if r.get("metric") == "test error" and r.get("paper") is not None
           and r.get("kernelfit") is not None]
    fig, ax = plt.subplots(figsize=(7, 0.6 * max(len(pts), 1) + 1.5))
    if pts:
        ys = range(len(pts))
        ax.barh([y + 0.2 for y in ys], [100 * r["paper"] for r in pts], height=0.4,
                label="paper")
        ax.barh([y - 0.2 for y in ys], [100 * r["kernelfit"] for r in pts], height=0.4,
                label="kernelfit")
        ax.set_yticks(list(ys))
        ax.set_yticklabels([r["claim"][:48] for r in pts], fontsize=7)
        ax.set_xlabel("test error (%)")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no finished experiment with a paper figure yet", ha="center")
        ax.axis("off")
    ax.set_title("kernelfit against the paper", fontsize=10)
    fig.tight_layout()
    with atomic_writer(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)


def write_report(ctx, status: Dict[str, dict], machine: dict,
                 notes: Optional[list] = None) -> dict:
    """Collect every stored result of this kind (quick or full) into report.{md,json,png}."""
    from .experiments import EXPERIMENTS

    rows, exps = [], {}
    for name, exp in EXPERIMENTS.items():
        res, state = ctx.stored_result(exp)
        if state == "partial":  # made under other limits: reported, marked as such
            lim = ", ".join(f"{k} = {v}" for k, v in sorted(res.get("scope", {}).items()))
            default = {"status": "partial", "message": f"made with {lim or 'no limits'}; run "
                       "it again under this run's limits to finish it"}
        elif state == "stale":
            res = None
            default = {"status": "stale", "message": "made under other defaults; run it again"}
        else:
            default = {"status": "stored" if res else "not run", "message": ""}
        st = dict(status.get(name) or default)
        if res is not None:
            rows.extend(res["rows"])
            st["figures"] = list(res.get("figures", []))
            st["seconds"] = res.get("seconds")
            st["details"] = res.get("details")
        exps[name] = st
    report = {"command": "reproduce", "quick": ctx.quick, "seed": SEED,
              "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "machine": machine, "sgemm_peak": ctx._peaks, "rows": rows, "experiments": exps,
              "data_dir": ctx.data_dir, "notes": list(notes or [])}
    if ctx.quick:
        report["notes"].append("quick run: tiny n; it checks that every experiment runs and "
                               "that the report is written, not the accuracy figures")
    with atomic_batch():  # the three together, or none
        atomic_write_text(ctx.out / "report.json", dumps_json(report, indent=2) + "\n")
        atomic_write_text(ctx.out / "report.md", render_markdown(report))
        _summary_png(ctx.out / "report.png", rows)
    report["paths"] = {k: str(ctx.out / f"report.{k}") for k in ("md", "json", "png")}
    return report
