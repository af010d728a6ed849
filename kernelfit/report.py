"""Number and table formatters shared by every report: the CLI's tables, the randomization
report, the benchmark report and the reproduce report. Pure functions of their arguments
(strings out, nothing printed); ``'-'`` stands for a missing value everywhere.
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Sequence

__all__ = ["fmt_value", "fmt_num", "fmt_pct", "fmt_seconds", "fmt_bytes", "fmt_spread",
           "fmt_blas", "markdown_table", "text_table", "two_column"]

MISSING = "-"


def fmt_value(v) -> str:
    """A table cell: floats in 4 significant digits (scientific when tiny or huge)."""
    if v is None:
        return MISSING
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) < 1e-3 or abs(v) >= 1e6:
            return f"{v:.3e}"
        return f"{v:.4g}"
    return str(v)


def fmt_num(v, fmt: str = "{:.3g}") -> str:
    return MISSING if v is None else fmt.format(v)


def fmt_pct(v, digits: int = 2) -> str:
    """A fraction as a percentage: 0.0123 -> '1.23%'."""
    return MISSING if v is None else f"{100 * v:.{digits}f}%"


def fmt_seconds(v: Optional[float]) -> str:
    if v is None:
        return MISSING
    if v < 1e-2:
        return f"{v * 1e3:.2f} ms"
    if v < 100:
        return f"{v:.3g} s"
    return f"{v:.0f} s"


def fmt_bytes(n: Optional[float]) -> str:
    """Human-readable bytes (binary units): 1536 -> '1.5 KiB'. The one byte formatter
    (also :func:`kernelfit.memory.fmt_bytes`)."""
    if n is None:
        return MISSING
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            if unit == "B":
                return f"{int(n)} B"
            return f"{n:.1f} {unit}" if abs(n) < 1e4 else f"{n:.2g} {unit}"
        n /= 1024
    return f"{n:.2g} PiB"  # pragma: no cover


def fmt_blas(blas) -> str:
    """A machine record's BLAS in words: ``openblas 0.3.31 (Haswell kernel, 2 threads)``;
    the parts it lacks are left out (``'-'`` without a library)."""
    if not isinstance(blas, dict) or not blas.get("library"):
        return MISSING
    extra = []
    if blas.get("architecture"):
        extra.append(f"{blas['architecture']} kernel")
    if blas.get("num_threads"):
        extra.append(f"{blas['num_threads']} threads")
    name = f"{blas['library']} {blas.get('version') or ''}".strip()
    return f"{name} ({', '.join(extra)})" if extra else name


def fmt_spread(stats: dict, fmt: str = "{:.3g}", scale: float = 1.0, suffix: str = "") -> str:
    """``mean ± std`` of a ``{'mean', 'std'}`` summary (the std left out when None)."""
    if stats["mean"] is None:
        return MISSING
    txt = fmt.format(scale * stats["mean"]) + suffix
    if stats["std"] is not None:
        txt += " ± " + fmt.format(scale * stats["std"])
    return txt


def markdown_table(rows: Sequence[Sequence[str]]) -> List[str]:
    """A markdown table (header row first) as lines."""
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return lines


def text_table(rows: Sequence[Sequence[str]]) -> List[str]:
    """Columns aligned with two spaces between them, as lines."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def two_column(rows: Iterable) -> List[str]:
    """``(label, value)`` rows as indented, aligned lines (values by :func:`fmt_value`)."""
    rows = [(str(k), fmt_value(v)) for k, v in rows]
    w = max((len(k) for k, _ in rows), default=0)
    return [f"  {k.ljust(w)}  {v}" for k, v in rows]
