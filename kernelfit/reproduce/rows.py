"""One line of the reproduce report, and the verdict against the paper's figure."""

from __future__ import annotations

import math
from typing import Optional, Tuple

__all__ = ["row", "verdict", "SEED"]

#: the seed of every subset, feature map and sample the experiments draw (each solve's
#: record in runs/ has it in its spec; the report names it)
SEED = 0


def verdict(paper: Optional[float], value: Optional[float], *, n_test: int, quick: bool,
            exact: bool = True, why: str = "") -> Tuple[str, str]:
    """``(verdict, reason)`` for an error rate against the paper's: within two binomial
    standard errors of the test set (at least 0.05 points) is 'reproduced'."""
    if value is None:
        return "failed", why or "no result"
    if quick:
        return "not compared", f"quick run (n_test = {n_test}): checks that it runs only"
    if paper is None:
        return "reported", why
    se = math.sqrt(max(paper * (1 - paper), 1e-12) / max(n_test, 1))
    margin = max(2 * se, 0.0005)
    note = "" if exact else " (solve not exact: see residual)"
    if value < paper - margin:
        return "better", (f"{100 * (paper - value):.2f} points below the paper "
                          f"(> 2 standard errors){'; ' + why if why else ''}{note}")
    if value > paper + margin:
        return "worse", (f"{100 * (value - paper):.2f} points above the paper "
                         f"(> 2 standard errors){'; ' + why if why else ''}{note}")
    return "reproduced", note.strip()


#: ``row(value=)`` not given: the record's test error is the row's number
_TEST_ERROR = object()


def row(ctx, claim: str, paper: Optional[float], rec: Optional[dict], *, data_note=None,
        why: str = "", value=_TEST_ERROR, paper_text: Optional[str] = None,
        metric="test error", verdict_pair=None) -> dict:
    """One line of the report: paper's number, kernelfit's, n, residual, time, memory
    (``value``: the row's number where it is not the record's test error; None: none,
    e.g. an RKHS norm lost to rounding)."""
    rec = rec or {}
    value = rec.get("test_error") if value is _TEST_ERROR else value
    n_test = int(rec.get("n_test") or 0)
    v = verdict_pair or verdict(paper, value, n_test=n_test, quick=ctx.quick,
                                exact=rec.get("exact", True), why=why)
    return {"claim": claim, "metric": metric, "paper": paper,
            "paper_text": paper_text or (None if paper is None else f"{100 * paper:.1f}%"),
            "kernelfit": value, "n_train": rec.get("n_train"), "n_test": rec.get("n_test"),
            "relative_residual": rec.get("relative_residual"),
            "exact": rec.get("exact", _exact_of(rec.get("relative_residual"))),
            "seconds": (rec.get("timings") or {}).get("total", rec.get("seconds")),
            "peak_memory_bytes": rec.get("peak_memory_bytes"),
            "data": data_note or rec.get("dataset"), "verdict": v[0], "reason": v[1],
            "machine": rec.get("machine_short")}


def _exact_of(residual) -> Optional[bool]:
    from ..kernel_defaults import EXACT_RESIDUAL

    return None if residual is None else bool(residual <= EXACT_RESIDUAL)
