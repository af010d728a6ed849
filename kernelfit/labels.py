"""The one label rule of kernelfit, shared by the datasets (and so the command line) and
:class:`~kernelfit.estimator.KernelInterpolator`.

Labels are **classes** when they are integers, booleans or strings, or floats that are all
whole numbers (``0.0, 1.0, 2.0``); floats with a fractional part are **continuous**
(regression targets). ``kernelfit solve`` classifies, so it refuses continuous labels; the
estimator with ``task='auto'`` fits them as a regression and warns, and says nothing when
``task='regression'`` asks for that.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError

__all__ = ["label_kind", "continuous_summary", "check_label_types"]


def check_label_types(y) -> None:
    """Refuse labels that mix strings with other values, or bytes with str, in a list or
    an object array: NumPy would silently turn them all into strings (``['a', 1]``
    becomes ``['a', '1']``, ``[b'a', 'a']`` one class). Other inputs pass unchanged."""
    if not (isinstance(y, (list, tuple))  # an object array is never a device array
            or getattr(getattr(y, "dtype", None), "kind", None) == "O"):
        return
    flat = np.asarray(y, dtype=object).ravel()
    kinds = {"str" if isinstance(v, (str, np.str_)) else
             "bytes" if isinstance(v, (bytes, np.bytes_)) else "other" for v in flat}
    if len(kinds) > 1 and kinds & {"str", "bytes"}:
        which = ("bytes mixed with str" if kinds == {"str", "bytes"} else
                 "strings mixed with other values")
        raise InputError(f"labels must be all numbers or all strings (class names), got "
                         f"{which}; convert them to one type, e.g. y.astype(str)")


def label_kind(y) -> str:
    """``'classes'`` or ``'continuous'`` (see the module notes); InputError for labels that
    are neither (complex numbers, NaN or infinite floats, objects)."""
    y = np.asarray(y)
    kind = y.dtype.kind
    if kind in "biuUS":
        return "classes"
    if kind == "O":
        if not y.size:
            raise InputError("labels are empty")
        flat = y.ravel()
        text = [isinstance(v, (str, np.str_)) for v in flat]
        ints = [isinstance(v, (bool, int, np.integer)) and not t for v, t in zip(flat, text)]
        bad = [v for v, t, i in zip(flat, text, ints) if not (t or i)][:1]
        if bad or any(text) and not all(text):
            which = (f"objects of type {type(bad[0]).__name__}" if bad else
                     "strings mixed with numbers")
            raise InputError(f"labels must be all integers or all strings (class names), "
                             f"got {which}; convert them to one type, e.g. "
                             "y.astype(str)")
        return "classes"
    if kind != "f":
        raise InputError(f"labels must be integers, strings or real numbers, got dtype {y.dtype}")
    if not np.isfinite(y).all():
        raise InputError(f"labels contain {int((~np.isfinite(y)).sum())} NaN or infinite "
                         "value(s)")
    return "classes" if np.array_equal(y, np.round(y)) else "continuous"


def continuous_summary(y) -> str:
    """A few words about continuous labels, for messages."""
    y = np.asarray(y, dtype=np.float64)
    n_unique = int(np.unique(y).shape[0])
    frac = y[y != np.round(y)]
    example = f", e.g. {frac.ravel()[0]:.6g}" if frac.size else ""
    return f"{n_unique} distinct values, not all whole numbers{example}"
