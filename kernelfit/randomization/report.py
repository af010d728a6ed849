"""The randomization report: summaries over repeats, the markdown and text tables, the
figures (the kernel analogue of Zhang et al.'s Figure 1) and the output files."""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from .._io import dumps_json
from ..errors import InputError
from ..report import fmt_spread, markdown_table, text_table

__all__ = ["METRICS", "summarize", "table_rows", "describe", "render_markdown", "render_text",
           "plot_results", "check_out_dir", "write_outputs", "failure_message",
           "inexact_records"]

#: metrics summarized over repeats
METRICS = ("train_error", "test_error", "rkhs_norm", "relative_residual", "solve_seconds",
           "condition_number")


def _stats(values: List[float]) -> dict:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    a = np.asarray(vals)
    std = None
    if a.size > 1:  # identical values (shared clean records): exactly 0, not rounding noise
        std = 0.0 if a.min() == a.max() else float(a.std(ddof=1))
    mean = float(a[0]) if a.min() == a.max() else float(a.mean())
    return {"mean": mean, "std": std,
            "min": float(a.min()), "max": float(a.max()), "n": int(a.size)}


def summarize(records: Iterable[dict]) -> List[dict]:
    """Mean, sample standard deviation (ddof=1; None for one repeat), min and max of every
    metric over the successful repeats of each (mode, level), in first-seen order, and
    ``n_inexact``: the successful repeats that are not exact."""
    groups: Dict[Tuple[str, float], List[dict]] = {}
    for r in records:
        groups.setdefault((r["mode"], float(r["level"])), []).append(r)
    out = []
    for (mode, level), recs in groups.items():
        ok = [r for r in recs if r.get("status", "ok") == "ok"]
        entry = {"mode": mode, "level": level, "n_repeats": len(recs), "n_ok": len(ok),
                 "n_failed": len(recs) - len(ok),
                 "errors": [r["error"] for r in recs if r.get("status", "ok") != "ok"]}
        for m in METRICS:
            entry[m] = _stats([r.get(m) for r in ok])
        entry["train_error_zero"] = bool(ok) and all(r.get("train_error") == 0 for r in ok)
        entry["n_inexact"] = sum(r.get("exact") is False for r in ok)
        out.append(entry)
    return out


def _pct(s: dict) -> str:
    return fmt_spread(s, "{:.2f}", scale=100, suffix="%")


def _inexact_mark(s: dict) -> str:
    k = s.get("n_inexact") or 0
    if not k:
        return ""
    return " (NOT exact)" if k == s["n_ok"] else f" ({k}/{s['n_ok']} NOT exact)"


def inexact_records(result: dict) -> List[dict]:
    """The successful records whose solve is not exact (relative residual above 1e-8)."""
    return [r for r in result["records"] if r["status"] == "ok" and r.get("exact") is False]


def table_rows(result: dict) -> List[List[str]]:
    """Header plus one row of strings per (mode, level) of ``result['summary']``; a
    residual whose solves are not all exact is marked ``NOT exact``."""
    rows = [["mode", "level", "ok/runs", "train error", "test error", "RKHS norm",
             "rel. residual", "cond(K)", "solve s"]]
    for s in result["summary"]:
        rows.append([s["mode"], f"{s['level']:g}", f"{s['n_ok']}/{s['n_repeats']}",
                     _pct(s["train_error"]), _pct(s["test_error"]),
                     fmt_spread(s["rkhs_norm"]),
                     fmt_spread(s["relative_residual"], "{:.1e}") + _inexact_mark(s),
                     fmt_spread(s["condition_number"], "{:.2e}"),
                     fmt_spread(s["solve_seconds"], "{:.2f}")])
    return rows


def describe(result: dict) -> str:
    """One line: dataset, sizes, features, kernel, solver."""
    kp = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                   for k, v in result["kernel_params"].items() if k != "name")
    feats = result["features"] + (f" {result['feature_params']}" if result["feature_params"]
                                  else "")
    mixed = ("mixed" in (result.get("precisions") or ())
             and " (mixed precision: float32 factor, refined in float64)" or "")
    return (f"{result['dataset']}, n_train={result['n_train']}, n_test={result['n_test']}, "
            f"d={result['n_features']}, features={feats}, kernel={result['kernel']}"
            f"{' (' + kp + ')' if kp else ''}, {result['solver']}/{result['dtype']}/"
            f"{result['device']}{mixed}, repeats={result['repeats']}, "
            f"base seed={result['base_seed']}")


def render_markdown(result: dict, note: Optional[str] = None) -> str:
    """A markdown report: setup, level meanings, the summary table and any failures."""
    lines = ["# Randomization test: exact kernel interpolation", ""]
    inexact = inexact_records(result)
    if note:
        lines += [f"**Note:** {note}", ""]
    lines += [f"- Setup: {describe(result)}", f"- Data source: {result['data_source']}"]
    if result.get("bandwidth_rule") and result["bandwidth_rule"] != "given":
        lines.append(f"- Bandwidth: {result['bandwidth_rule']}")
    lines.append("- Level meaning:")
    for m, text in result["level_meaning"].items():
        lines.append(f"  - `{m}`: {text}")
    lines += ["- Values: mean ± sample std over repeats (std omitted for one repeat); "
              "solve s = Gram + factorization + triangular solves.",
              "- All training errors exactly 0: "
              f"{'yes' if result['all_train_errors_zero'] else 'NO'}"
              f"; failed solves: {result['n_failed']}; total time {result['seconds']:.1f} s.",
              "- All solves exact (float64 relative residual at most "
              f"{result.get('exact_threshold', 1e-8):.0e}): "
              + (f"NO, {len(inexact)} not exact (below)" if inexact
                 else "yes" if result.get("all_exact", True) else "NO, no solve succeeded"),
              ""]
    lines += markdown_table(table_rows(result))
    if result.get("condition_note"):
        lines += ["", f"Note: {result['condition_note']}."]
    fails = [r for r in result["records"] if r["status"] != "ok"]
    if fails:
        lines += ["", "## Failed solves", ""]
        for r in fails:
            lines.append(f"- {_where(r)}: {r['error']}")
    if inexact:
        lines += ["", "## Solves that are not exact", ""]
        for r in inexact:
            lines.append(f"- {_where(r)}: {r.get('inexact_reason')}")
    return "\n".join(lines) + "\n"


def _where(r: dict) -> str:
    return f"{r['mode']} level {r['level']:g} repeat {r['repeat']} (seed {r['seed']})"


def render_text(result: dict) -> str:
    """The summary as an aligned plain-text table (for the terminal)."""
    note = [f"note: {result['condition_note']}"] if result.get("condition_note") else []
    return "\n".join([describe(result)] + text_table(table_rows(result)) + note) + "\n"


_PANELS = (("test_error", "test error", "linear"), ("rkhs_norm", "RKHS norm of the interpolant",
                                                    "log"),
           ("solve_seconds", "solve time (s)", "linear"),
           ("condition_number", "cond(K) (estimate)", "log"))
_STYLES = {"labels": ("C0", "o"), "shuffled-pixels": ("C1", "s"),
           "random-pixels": ("C2", "^"), "gaussian": ("C3", "D")}


def _series(result: dict, mode: str, metric: str):
    xs, ys, es = [], [], []
    for s in result["summary"]:
        if s["mode"] != mode or s[metric]["mean"] is None:
            continue
        xs.append(s["level"])
        ys.append(s[metric]["mean"])
        es.append(s[metric]["std"] or 0.0)
    return np.asarray(xs), np.asarray(ys), np.asarray(es)


def _draw(ax, result: dict, metric: str, label: str, scale: str) -> None:
    for mode in result["modes"]:
        color, marker = _STYLES.get(mode, ("k", "o"))
        x, y, e = _series(result, mode, metric)
        if not x.size:
            continue
        if metric == "test_error":
            y, e = 100 * y, 100 * e
        n_levels = sum(1 for s in result["summary"] if s["mode"] == mode)
        # levels without a value (e.g. cond(K) estimated only at the endpoints): markers
        # only, so that no line suggests values that were not measured
        ls = "-" if x.size == n_levels else "none"
        ax.errorbar(x, y, yerr=e if e.any() else None, color=color, marker=marker,
                    capsize=3, label=mode, linestyle=ls)
    if metric == "test_error":
        chance = 100 * (1 - 1 / max(result["n_classes"], 1))
        ax.axhline(chance, color="gray", ls=":", lw=1, label=f"chance ({chance:.0f}%)")
        label += " (%)"
    ax.set_yscale(scale)
    ax.set_xlabel("corruption level")
    ax.set_ylabel(label)
    ax.set_xlim(-0.03, 1.03)
    ax.grid(True, alpha=0.3)


def _legend(ax) -> None:
    """The legend of the lines drawn; a panel with none says that no solve gave a value
    (matplotlib warns on a legend of nothing)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    if not ax.lines and not ax.collections:
        ax.text(0.5, 0.5, "no successful solve", transform=ax.transAxes, ha="center")


def _title(result: dict, note: Optional[str], width: int = 90) -> str:
    import textwrap

    kp = result["kernel_params"]
    kdesc = result["kernel"] + (f" h={kp['bandwidth']:.3g}" if "bandwidth" in kp else "")
    name = result["dataset"]
    if name.startswith("imagefolder:"):
        name = "imagefolder:" + os.path.basename(name.split(":", 1)[1].rstrip("/\\"))
    t = (f"Randomization test, {name}: n_train={result['n_train']}, n_test={result['n_test']}, "
         f"{kdesc}, features={result['features']}, repeats={result['repeats']}")
    if note:
        t += ". " + note
    return "\n".join(textwrap.wrap(t, width))


def plot_results(result: dict, note: Optional[str] = None) -> Dict[str, object]:
    """Matplotlib figures (Agg, no pyplot state): ``overview`` (four panels: test error,
    RKHS norm, solve time, condition number vs level, one line per mode: the kernel
    analogue of the paper's Figure 1), and one figure per metric. Returns name -> Figure."""
    from matplotlib.figure import Figure

    figs: Dict[str, object] = {}
    fig = Figure(figsize=(11, 8.5), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    for ax, (metric, label, scale) in zip(axes, _PANELS):
        _draw(ax, result, metric, label, scale)
    _legend(axes[0])
    fig.suptitle(_title(result, note, width=120), fontsize=9)
    figs["overview"] = fig
    for metric, label, scale in _PANELS[:3]:
        f = Figure(figsize=(6, 4.2), layout="constrained")
        ax = f.subplots()
        _draw(ax, result, metric, label, scale)
        _legend(ax)
        f.suptitle(_title(result, note, width=85), fontsize=7)
        figs[metric] = f
    return figs


def check_out_dir(out_dir) -> Path:
    """Raise :class:`InputError` unless ``out_dir`` is, or can be created as, a writable
    folder. Creates nothing."""
    p = Path(out_dir).expanduser()
    if p.exists() and not p.is_dir():
        raise InputError(f"output folder {out_dir} exists and is not a folder", param="out",
                         path=str(out_dir))
    anc = p
    while not anc.exists():
        if anc.parent == anc:
            break
        anc = anc.parent
    if not anc.is_dir() or not os.access(anc, os.W_OK | os.X_OK):
        raise InputError(f"output folder {out_dir}: {anc} is not a writable folder",
                         param="out", path=str(out_dir))
    return p


def write_outputs(result: dict, out_dir, prefix: str = "randomize_",
                  note: Optional[str] = None, plots: bool = True) -> List[str]:
    """Write ``{prefix}records.json``, ``{prefix}table.md`` and the PNGs
    (``{prefix}overview.png``, ``{prefix}test_error.png``, ``{prefix}rkhs_norm.png``,
    ``{prefix}solve_seconds.png``) into ``out_dir`` (created if missing), each atomically.
    Returns the paths written."""
    from .._io import atomic_batch, atomic_write_text, atomic_writer

    d = check_out_dir(out_dir)
    if not isinstance(prefix, str) or "/" in prefix or "\\" in prefix:
        raise InputError(f"prefix must be a plain file-name prefix, got {prefix!r}")
    figures = plot_results(result, note) if plots else {}
    payload = dict(result)
    if note:
        payload["note"] = note
    made = not d.exists()
    d.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        with atomic_batch():  # all the files, or none (a full disk at the fourth)
            path = d / f"{prefix}records.json"
            atomic_write_text(path, dumps_json(payload, indent=2) + "\n")
            written.append(str(path))
            path = d / f"{prefix}table.md"
            atomic_write_text(path, render_markdown(result, note))
            written.append(str(path))
            for name, fig in figures.items():
                path = d / f"{prefix}{name}.png"
                with atomic_writer(path, "wb") as fh:
                    fig.savefig(fh, format="png", dpi=110)
                written.append(str(path))
    except BaseException:
        if made:
            with contextlib.suppress(OSError):
                d.rmdir()  # made for these files: not left behind empty
        raise
    return written


def failure_message(result: dict) -> Optional[str]:
    """A one-line warning when a solve failed or a training error was not 0, else None."""
    parts = []
    if result["n_failed"]:
        first = next(r for r in result["records"] if r["status"] != "ok")
        where = f"{first['mode']} level {first['level']:g} repeat {first['repeat']}"
        # its cause (the ways out it names are what stopping at it gives)
        error = (first.get("error") or "").split(": ", 1)[-1].split(" Ways out:")[0]
        cut = error if len(error) <= 240 else error[:237] + "..."
        parts.append(f"{result['n_failed']} solve(s) failed; the first, {where}: {cut} "
                     "(each record's 'error' holds its message; stopping at the first "
                     "failure, on_error='raise', gives the ways out)")
    nonzero = [r for r in result["records"]
               if r["status"] == "ok" and r["train_error"] not in (0, 0.0)]
    if nonzero:
        parts.append(f"{len(nonzero)} record(s) have a training error above 0 (max "
                     f"{max(r['train_error'] for r in nonzero):.3g})")
    return "; ".join(parts) or None
