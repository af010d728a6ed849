"""kernelfit: exact kernel interpolation at full scale, and numeric checks of the theory of
Zhang, Bengio, Hardt, Recht and Vinyals, "Understanding deep learning requires rethinking
generalization" (ICLR 2017).

Nothing heavy happens at import: submodules load on first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

__all__ = ["KernelInterpolator", "load_dataset", "get_kernel", "__version__"]

_LAZY = {
    "KernelInterpolator": ("kernelfit.estimator", "KernelInterpolator"),
    "load_dataset": ("kernelfit.datasets", "load_dataset"),
    "get_kernel": ("kernelfit.kernels", "get_kernel"),
}


def __getattr__(name):
    if name in _LAZY:
        modname, attr = _LAZY[name]
        return getattr(importlib.import_module(modname), attr)
    raise AttributeError(f"module 'kernelfit' has no attribute {name!r}")
