"""Array backends: the one package that knows NumPy from CuPy (the device seam).

Everything else in kernelfit asks this package which array module an array belongs to
(:func:`array_namespace`, the pattern of SciPy's ``_lib._array_api`` and array-api-compat),
moves arrays with :func:`to_host` / :func:`to_device`, and runs the tile operations of a
blocked Cholesky factorization through a :class:`Backend` (``potrf``, ``trsm``, ``syrk``,
``gemm`` in place on Fortran-ordered tiles; memory queries). Only ``_gpu.py`` imports
CuPy, lazily, so a CPU-only install never needs it.

``get_backend('auto')`` takes the GPU only when :func:`gpu_available` says the probe ran
kernelfit's own cuBLAS/cuSOLVER calls; otherwise it falls back to the CPU and says so
once with a :class:`DeviceFallbackWarning` (the CLI prints it as one line).
"""

from __future__ import annotations

import functools
import sys
import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import BackendUnavailableError, InputError
from ._base import Backend
from ._cpu import CPUBackend
from ._gpu import FUSED_FINISH, SUPPORTED_CUPY, GPUBackend, _import_cupy, probe_gpu
from ._rules import DENSE_MAX_FRACTION, GPU_TILE, LEGACY_MAX_ELEMENTS, dense_single_call
from ._rules import gpu_tile_size as _gpu_tile_size
from ._host import (_HOST_MAP_MIN_BYTES, BlasOneThread, available_host_memory, blas_info,
                    host_empty, usable_cores)

__all__ = [
    "Backend",
    "CPUBackend",
    "GPUBackend",
    "DeviceFallbackWarning",
    "array_namespace",
    "is_device_array",
    "to_host",
    "to_device",
    "get_backend",
    "gpu_available",
    "gpu_unavailable_reason",
    "gpu_tile_size",
    "dense_single_call",
    "fused_finish",
    "available_host_memory",
    "blas_info",
    "host_empty",
    "usable_cores",
    "BlasOneThread",
    "DENSE_MAX_FRACTION",
    "FUSED_FINISH",
    "GPU_TILE",
    "LEGACY_MAX_ELEMENTS",
    "SUPPORTED_CUPY",
    "_HOST_MAP_MIN_BYTES",
    "_import_cupy",
]

_DEVICES = ("auto", "cpu", "gpu")


class DeviceFallbackWarning(RuntimeWarning):
    """``device='auto'`` found no usable GPU and runs on the CPU (the message says why)."""


# ------------------------------------------------------------------ the namespace query
def _cupy_module():
    """CuPy if it is already imported (an array can only be CuPy's then), else None."""
    return sys.modules.get("cupy")


def is_device_array(x) -> bool:
    """True for a CuPy array (never imports CuPy)."""
    if type(x) is np.ndarray or isinstance(x, (np.generic, int, float, list, tuple)):
        return False
    cp = _cupy_module()
    return cp is not None and isinstance(x, cp.ndarray)


def array_namespace(*arrays):
    """The array module (NumPy or CuPy) of ``arrays``; NumPy for anything not CuPy.

    Mixing NumPy and CuPy arrays is refused with :class:`InputError` (one of them must be
    moved with :func:`to_host` or :func:`to_device` first). ``None`` entries are ignored.
    """
    found = None
    for x in arrays:
        if x is None:
            continue
        mod = _cupy_module() if is_device_array(x) else np
        if found is not None and mod is not found:
            raise InputError("NumPy and CuPy arrays were mixed in one call; move them to one "
                             "device first (kernelfit.backend.to_host / to_device)")
        found = mod
    return np if found is None else found


def to_host(x, dtype=None) -> np.ndarray:
    """``x`` as a NumPy array (copied back from the GPU when it lives there)."""
    if is_device_array(x):
        x = _cupy_module().asnumpy(x)
    return np.asarray(x, dtype=dtype)


def to_device(x, device="gpu", dtype=None):
    """``x`` on ``device`` (``'cpu'``, ``'gpu'``, ``'auto'`` or a :class:`Backend`)."""
    be = get_backend(device)
    if be.device == "cpu":
        return to_host(x, dtype=dtype)
    return be.asarray(x, dtype=dtype)


def fused_finish(xp, kernel_name: str):
    """The fused element-wise finish of ``kernel_name`` tiles for array module ``xp``
    (a CuPy ElementwiseKernel on the GPU backend), or None: the caller runs its chain of
    in-place operations instead."""
    if xp is np or _cache.gpu is None or xp is not _cache.gpu.xp:
        return None
    return _cache.gpu.fused_finish(kernel_name)


# ------------------------------------------------------------------ availability
@functools.lru_cache(maxsize=1)
def _probe():
    try:
        return probe_gpu(), None
    except BackendUnavailableError as exc:
        return None, str(exc)


def gpu_available() -> bool:
    """True when CuPy imports, a CUDA device is visible and kernelfit's own cuBLAS and
    cuSOLVER calls ran on it (the probe: handles, a 2 x 2 potrf, trsm and gemm)."""
    return _probe()[0] is not None


def gpu_unavailable_reason():
    """Why the GPU backend is not usable here (one line), or None when it is."""
    return _probe()[1]


gpu_available.cache_clear = _probe.cache_clear  # tests forget the probe through this


def gpu_tile_size(n: int, itemsize: int = 8, free_bytes: int | None = None) -> int:
    """Tile size of a GPU solve of n points by the dense/tiles rule
    (:func:`dense_single_call`) with ``free_bytes`` of GPU memory (default: the GPU
    backend's free memory; tiles when unknown)."""
    if free_bytes is None:
        free_bytes = _cache.gpu.free_memory() if _cache.gpu is not None else None
    return _gpu_tile_size(n, itemsize, free_bytes)


@dataclass
class _Cache:
    cpu: CPUBackend | None = None
    gpu: GPUBackend | None = None
    warned: bool = False


_cache = _Cache()


def get_backend(device: str = "cpu") -> Backend:
    """The backend for ``device`` in ``{'auto', 'cpu', 'gpu'}`` (or a Backend, returned).

    ``auto`` picks the GPU when :func:`gpu_available`, else the CPU, with one
    :class:`DeviceFallbackWarning` saying why. ``gpu`` raises
    :class:`BackendUnavailableError` with the reason when no GPU is usable.
    """
    if isinstance(device, Backend):
        return device
    if device not in _DEVICES:
        raise InputError(f"unknown device {device!r}; choose one of {', '.join(_DEVICES)}",
                         param="device")
    if device == "auto":
        if gpu_available():
            device = "gpu"
        else:
            device = "cpu"
            if not _cache.warned:
                _cache.warned = True
                warnings.warn(f"no usable GPU, running on the CPU: {gpu_unavailable_reason()}",
                              DeviceFallbackWarning, stacklevel=2)
    if device == "cpu":
        if _cache.cpu is None:
            _cache.cpu = CPUBackend()
        return _cache.cpu
    if _cache.gpu is None:
        be, reason = _probe()
        if be is None:
            raise BackendUnavailableError(reason)
        _cache.gpu = be
    return _cache.gpu
