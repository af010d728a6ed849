"""Seeded, reproducible subsets of a split (plain or class-balanced)."""

from __future__ import annotations

import numbers
from typing import Optional

import numpy as np

from ..errors import InputError

__all__ = ["check_count", "balanced_quota", "select_indices"]


def check_count(n, available: int, what: str) -> Optional[int]:
    """Validate a requested example count; ``None`` means all of them."""
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise InputError(f"{what} must be a whole number or None, got {n!r}")
    n = int(n)
    if n < 0:
        raise InputError(f"{what} must be non-negative, got {n}")
    if n > available:
        raise InputError(f"{what} {n} is more than the {available} examples available; ask "
                         f"for at most {available}", param=what, available=int(available))
    return n


def balanced_quota(counts: np.ndarray, n: int) -> np.ndarray:
    """How many examples to take of each class so that the counts are as equal as possible.

    Classes with too few examples give all they have; the rest share what remains equally,
    any leftover going one each to the lowest-numbered classes that still have examples.
    """
    counts = np.asarray(counts, dtype=np.int64)
    quota = np.zeros_like(counts)
    remaining = int(n)
    open_classes = [int(c) for c in np.argsort(counts, kind="stable")]
    # Water-filling: satisfy small classes fully, then split the rest evenly.
    while open_classes and remaining > 0:
        share = remaining // len(open_classes)
        small = [c for c in open_classes if counts[c] - quota[c] <= share]
        if not small:
            for c in open_classes:
                quota[c] += share
            remaining -= share * len(open_classes)
            for c in sorted(open_classes)[:remaining]:
                quota[c] += 1
            remaining = 0
            break
        for c in small:
            remaining -= int(counts[c] - quota[c])
            quota[c] = counts[c]
            open_classes.remove(c)
    return quota


def select_indices(y: np.ndarray, n: Optional[int], *, balanced: bool, n_classes: int,
                   rng: np.random.Generator) -> Optional[np.ndarray]:
    """Sorted indices of a seeded subset of size ``n`` (``None``: keep everything).

    Plain subsets are a uniform random choice; balanced ones take (as near as possible) the
    same number of each class, chosen uniformly within each class. Indices come back sorted,
    so the subset keeps the original order.
    """
    if n is None:
        return None
    if not balanced:
        return np.sort(rng.choice(len(y), size=n, replace=False))
    counts = np.bincount(y, minlength=n_classes)
    quota = balanced_quota(counts, n)
    picks = []
    for c in range(n_classes):
        if quota[c] == 0:
            continue
        members = np.flatnonzero(y == c)
        picks.append(rng.choice(members, size=int(quota[c]), replace=False))
    if not picks:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(picks))
