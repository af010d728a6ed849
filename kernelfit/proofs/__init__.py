"""Checks of the claims of Zhang et al. (ICLR 2017), one module per claim.

Each module defines ``NAME``, ``TITLE``, ``STATEMENT`` (with the formula), ``check(...)``
returning a :class:`kernelfit.proofs._common.CheckResult` (numeric check, symbolic check where feasible,
figures) and ``plot(result, out_dir)`` writing PNGs. Check functions take their inputs as
parameters, so a test can feed a wrong construction and watch the check fail.

``kernelfit verify`` runs them (the package ships in the wheel); the reusable code lives in
:mod:`kernelfit.theory`. The checkout's top-level ``proofs/README.md`` lists every claim.
"""

from __future__ import annotations

import importlib

from ..errors import InputError

__all__ = ["REGISTRY", "names", "get", "run"]

#: check name -> module (run in this order)
REGISTRY = {
    "theorem1": "kernelfit.proofs.theorem1",
    "theorem1_deep": "kernelfit.proofs.theorem1_deep",
    "sgd_min_norm": "kernelfit.proofs.sgd_min_norm",
    "kernel_trick": "kernelfit.proofs.kernel_trick",
    "curvature": "kernelfit.proofs.curvature",
    "norm": "kernelfit.proofs.norm",
}


def names():
    return list(REGISTRY)


def get(name):
    """The module of check ``name`` (an InputError naming the known ones otherwise)."""
    if name not in REGISTRY:
        raise InputError(f"unknown check {name!r}; known: {', '.join(REGISTRY)}", param="name")
    return importlib.import_module(REGISTRY[name])


def run(name, *, out_dir=None, **kwargs):
    """Run one check (and its plot when ``out_dir`` is given); return the result."""
    import time

    mod = get(name)
    t0 = time.perf_counter()
    res = mod.check(**kwargs)
    if out_dir is not None and res.status in ("passed", "failed"):
        res.plots = list(mod.plot(res, out_dir) or [])
    res.seconds = time.perf_counter() - t0
    return res
