"""Constructions and iterations that the checks in ``proofs/`` verify.

* :mod:`kernelfit.theory.construction` — Theorem 1's 2n+d ReLU network (float64 and exact
  fixed-point integer versions) and its depth-k variant, all in O(n) time and memory.
* :mod:`kernelfit.theory.sgd` — SGD for least squares and kernel SGD in alpha-space, with the
  row-space and minimum-norm measurements.
* :mod:`kernelfit.theory.data` — MNIST for the checks, through :mod:`kernelfit.datasets`.

Nothing is imported eagerly.
"""

from __future__ import annotations

import importlib

__all__ = ["construction", "sgd", "data"]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
