"""Value types of the command-line options: parse a flag's text, or give argparse's error."""

from __future__ import annotations

import argparse
import math

__all__ = ["positive_int", "nonneg_int", "nonneg_float", "finite_float", "bandwidth_arg",
           "fixed_bandwidth_arg", "peak_size_arg", "positive_float_or_none", "grid_bits_arg",
           "size_arg"]

MIN_PEAK_SIZE = 256  # smaller GEMMs measure the call's overhead, not the BLAS's rate


def _parse(text: str, conv, ok, what: str):
    """Parse an option value with ``conv`` and check it with ``ok``; argparse-style errors."""
    try:
        v = conv(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not ok(v):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return v


def positive_int(text: str) -> int:
    return _parse(text, int, lambda v: v >= 1, "a positive integer")


def nonneg_int(text: str) -> int:
    return _parse(text, int, lambda v: v >= 0, "an integer >= 0")


def nonneg_float(text: str) -> float:
    return _parse(text, float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")


def bandwidth_arg(text: str):
    if text == "median":
        return "median"
    return _parse(text, float, lambda v: math.isfinite(v) and v > 0,
                  "a positive finite number or 'median'")


def fixed_bandwidth_arg(text: str) -> float:
    """bench's bandwidth: one number for every implementation and size (no median rule:
    the peers get the same h, and every n would have its own median)."""
    return _parse(text, float, lambda v: math.isfinite(v) and v > 0,
                  "a positive finite number (bench gives every implementation the same "
                  "bandwidth)")


def peak_size_arg(text: str) -> int:
    return _parse(text, int, lambda v: v >= MIN_PEAK_SIZE,
                  f"an integer of at least {MIN_PEAK_SIZE} (smaller products measure the "
                  "call, not the BLAS's rate)")


def finite_float(text: str) -> float:
    return _parse(text, float, math.isfinite, "a finite number")


def positive_float_or_none(text: str):
    """A positive finite number, or ``'none'`` (kept as the string: "switch it off")."""
    if text.strip().lower() == "none":
        return "none"
    return _parse(text, float, lambda v: math.isfinite(v) and v > 0,
                  "a positive finite number or 'none'")


def grid_bits_arg(text: str):
    """``'auto'``, ``'none'`` (kept as the string: "switch it off") or an integer 0 to 30."""
    word = text.strip().lower()
    if word in ("auto", "none"):
        return word
    return _parse(text, int, lambda v: 0 <= v <= 30, "'auto', 'none' or an integer 0 to 30")


#: byte units of :func:`size_arg`: binary with or without "i" (K, KiB), decimal with "B" (KB)
_UNITS = {"": 1, "b": 1}
for _i, _u in enumerate("kmgt", start=1):
    _UNITS.update({_u: 1024 ** _i, _u + "ib": 1024 ** _i, _u + "b": 1000 ** _i})


def size_arg(text: str) -> int:
    """A number of bytes: ``16GiB``, ``16G`` (binary, as kernelfit prints sizes), ``16GB``
    (decimal), ``500MiB`` or plain bytes (``1.6e10``); at least 1 MiB."""
    word = text.strip().lower().replace(" ", "")
    num = word.rstrip("kmgtib")
    unit = word[len(num):]
    what = "a size such as 16GiB, 500MiB or a number of bytes"
    if unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    try:
        value = _parse(num, float, lambda v: math.isfinite(v) and v > 0, what) * _UNITS[unit]
    except argparse.ArgumentTypeError:  # (say what was typed: '16XB', not its number '16x')
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < 1 << 20:
        raise argparse.ArgumentTypeError(f"expected {what} of at least 1MiB, got {text!r}")
    return int(value)
