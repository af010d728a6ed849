"""Array backends: the one module that knows NumPy from CuPy.

Everything else in kernelfit is written once against ``backend.xp`` (NumPy or CuPy)
and the handful of in-place dense kernels defined here: the tile operations of a
blocked Cholesky factorization (potrf, trsm, syrk, gemm), triangular solves and
memory queries. CuPy is imported lazily, only when a GPU backend is requested, so a
CPU-only install never needs it.

All tile kernels work **in place** on Fortran-ordered (column-major) 2-D arrays; that
is what LAPACK and cuSOLVER expect and what lets them avoid copies. On the CPU, SciPy's
wrappers silently copy an array whose layout or dtype does not match; the helpers
here check for that and fail loudly instead of silently losing the in-place update.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import BackendUnavailableError, InputError

__all__ = [
    "Backend",
    "CPUBackend",
    "GPUBackend",
    "get_backend",
    "gpu_available",
    "available_host_memory",
    "blas_info",
]

_DEVICES = ("auto", "cpu", "gpu")


def available_host_memory() -> int:
    """Bytes of host memory available to a new allocation (MemAvailable, honouring cgroups)."""
    avail = None
    try:
        import psutil

        avail = int(psutil.virtual_memory().available)
    except Exception:  # pragma: no cover - psutil is a dependency, /proc is the fallback
        try:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        avail = int(line.split()[1]) * 1024
        except OSError:
            avail = None
    limit = _cgroup_limit()
    if limit is not None:
        used = _cgroup_usage() or 0
        cg_avail = max(limit - used, 0)
        avail = cg_avail if avail is None else min(avail, cg_avail)
    override = os.environ.get("KERNELFIT_MEMORY_LIMIT")
    if override:
        try:
            lim = int(float(override))
        except ValueError:
            raise InputError(f"KERNELFIT_MEMORY_LIMIT must be a number of bytes, got {override!r}")
        avail = lim if avail is None else min(avail, lim)
    return int(avail if avail is not None else 8 << 30)


def _read_int(path: str):
    try:
        with open(path) as fh:
            txt = fh.read().strip()
    except OSError:
        return None
    if not txt or txt == "max":
        return None
    try:
        val = int(txt)
    except ValueError:
        return None
    return val if val < (1 << 60) else None


def _cgroup_limit():
    return _read_int("/sys/fs/cgroup/memory.max") or _read_int(
        "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def _cgroup_usage():
    return _read_int("/sys/fs/cgroup/memory.current") or _read_int(
        "/sys/fs/cgroup/memory/memory.usage_in_bytes")


def blas_info() -> dict:
    """The BLAS/LAPACK library NumPy and SciPy use, with version and thread count."""
    try:
        from threadpoolctl import threadpool_info

        pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    except Exception:  # pragma: no cover
        pools = []
    if not pools:
        return {"library": "unknown"}
    p = pools[0]
    return {
        "library": p.get("internal_api"),
        "version": p.get("version"),
        "threading_layer": p.get("threading_layer"),
        "architecture": p.get("architecture"),
        "num_threads": p.get("num_threads"),
        "filepath": p.get("filepath"),
    }


class Backend:
    """Common interface of the CPU and GPU backends."""

    name: str = "abstract"
    device: str = "cpu"
    xp: Any = np

    # ---- arrays -------------------------------------------------------------
    def asarray(self, x, dtype=None):
        return self.xp.asarray(x, dtype=dtype)

    def to_numpy(self, x) -> np.ndarray:
        return np.asarray(x)

    def empty_tile(self, rows: int, cols: int, dtype) -> Any:
        return self.xp.empty((rows, cols), dtype=dtype, order="F")

    def is_backend_array(self, x) -> bool:
        return isinstance(x, np.ndarray)

    def synchronize(self) -> None:
        return None

    def free_pool(self) -> None:
        return None

    def free_memory(self) -> int:
        return available_host_memory()

    def peak_memory(self) -> int | None:
        return None

    def describe(self) -> dict:
        return {"device": self.device, "backend": self.name}


class CPUBackend(Backend):
    """NumPy arrays, SciPy's LAPACK/BLAS wrappers applied in place to whole tiles."""

    name = "numpy"
    device = "cpu"
    xp = np

    @staticmethod
    @functools.lru_cache(maxsize=None)
    def _funcs(dtype_char: str):
        from scipy.linalg import blas, lapack

        p = {"d": "d", "f": "s"}[dtype_char]
        return {
            "potrf": getattr(lapack, p + "potrf"),
            "trsm": getattr(blas, p + "trsm"),
            "syrk": getattr(blas, p + "syrk"),
            "gemm": getattr(blas, p + "gemm"),
            "gemv": getattr(blas, p + "gemv"),
        }

    def _f(self, a, name):
        ch = a.dtype.char
        if ch not in ("d", "f"):
            raise InputError(f"tile kernels need float32 or float64 arrays, got {a.dtype}")
        return self._funcs(ch)[name]

    @staticmethod
    def _check_inplace(out, target, op):
        if out is target:
            return
        if out.ctypes.data != target.ctypes.data:
            # SciPy made a copy (layout or dtype mismatch): keep the result correct.
            target[...] = out

    # ---- tile kernels (all in place, lower-triangular convention) ----------
    def potrf(self, a) -> int:
        """Cholesky of the square tile ``a`` in place (lower). Returns LAPACK's info."""
        c, info = self._f(a, "potrf")(a, lower=1, clean=0, overwrite_a=1)
        self._check_inplace(c, a, "potrf")
        return int(info)

    def trsm_rlt(self, l, b) -> None:
        """``b <- b @ inv(l).T`` with ``l`` lower triangular (the panel update)."""
        out = self._f(b, "trsm")(1.0, l, b, side=1, lower=1, trans_a=1, overwrite_b=1)
        self._check_inplace(out, b, "trsm")

    def trsm_left(self, l, b, trans: bool) -> None:
        """``b <- inv(l) @ b`` (or ``inv(l).T @ b``) with ``l`` lower triangular."""
        out = self._f(b, "trsm")(1.0, l, b, side=0, lower=1, trans_a=1 if trans else 0,
                                 overwrite_b=1)
        self._check_inplace(out, b, "trsm")

    def syrk_sub(self, a, c) -> None:
        """``c <- c - a @ a.T`` on the lower triangle of ``c``."""
        out = self._f(c, "syrk")(-1.0, a, beta=1.0, c=c, trans=0, lower=1, overwrite_c=1)
        self._check_inplace(out, c, "syrk")

    def gemm_nt_sub(self, a, b, c) -> None:
        """``c <- c - a @ b.T``."""
        out = self._f(c, "gemm")(-1.0, a, b, beta=1.0, c=c, trans_b=1, overwrite_c=1)
        self._check_inplace(out, c, "gemm")

    def gemm_acc(self, a, b, c, trans_a: bool = False, alpha: float = 1.0) -> None:
        """``c <- c + alpha * op(a) @ b`` with ``op`` the transpose when ``trans_a``."""
        out = self._f(c, "gemm")(alpha, a, b, beta=1.0, c=c, trans_a=1 if trans_a else 0,
                                 overwrite_c=1)
        self._check_inplace(out, c, "gemm")


class GPUBackend(Backend):
    """CuPy arrays; cuSOLVER potrf and cuBLAS trsm/syrk/gemm applied in place.

    ``cupy.linalg.cholesky`` and ``cupyx.lapack.posv`` copy their input (twice the memory
    of K) and CuPy ignores linear-algebra errors by default, so the factorization calls go
    straight to the cuSOLVER/cuBLAS bindings that CuPy ships, on Fortran-ordered tiles,
    and check ``devInfo`` themselves.
    """

    name = "cupy"
    device = "gpu"

    def __init__(self):
        cp = _import_cupy()
        self.cp = cp
        self.xp = cp
        from cupy.cuda import device as _dev

        self._device = _dev.Device()
        self._cusolver_handle = _dev.get_cusolver_handle()
        self._cublas_handle = _dev.get_cublas_handle()
        from cupy_backends.cuda.libs import cublas, cusolver

        self._cublas = cublas
        self._cusolver = cusolver
        self._peak = 0

    # ---- arrays -------------------------------------------------------------
    def to_numpy(self, x) -> np.ndarray:
        if isinstance(x, np.ndarray):
            return x
        return self.cp.asnumpy(x)

    def is_backend_array(self, x) -> bool:
        return isinstance(x, self.cp.ndarray)

    def synchronize(self) -> None:
        self.cp.cuda.Stream.null.synchronize()

    def free_pool(self) -> None:
        self.synchronize()
        self._peak = max(self._peak, int(self.cp.get_default_memory_pool().total_bytes()))
        self.cp.get_default_memory_pool().free_all_blocks()
        self.cp.get_default_pinned_memory_pool().free_all_blocks()

    def free_memory(self) -> int:
        free, _total = self.cp.cuda.runtime.memGetInfo()
        pool = self.cp.get_default_memory_pool()
        return int(free + pool.free_bytes())

    def peak_memory(self) -> int:
        pool = self.cp.get_default_memory_pool()
        self._peak = max(self._peak, int(pool.total_bytes()))
        return self._peak

    def describe(self) -> dict:
        props = self.cp.cuda.runtime.getDeviceProperties(self._device.id)
        name = props.get("name", b"")
        if isinstance(name, bytes):
            name = name.decode(errors="replace")
        _free, total = self.cp.cuda.runtime.memGetInfo()
        return {"device": "gpu", "backend": self.name, "gpu_name": name,
                "gpu_memory_bytes": int(total), "cupy_version": self.cp.__version__}

    # ---- tile kernels -------------------------------------------------------
    def _check(self, a):
        if a.dtype.char not in ("d", "f"):
            raise InputError(f"tile kernels need float32 or float64 arrays, got {a.dtype}")
        if not a.flags.f_contiguous:
            raise InputError("GPU tile kernels need Fortran-ordered tiles")
        return a.dtype.char == "d"

    def potrf(self, a) -> int:
        dbl = self._check(a)
        n = a.shape[0]
        cs = self._cusolver
        lower = self._cublas.CUBLAS_FILL_MODE_LOWER
        if dbl:
            lwork = cs.dpotrf_bufferSize(self._cusolver_handle, lower, n, a.data.ptr, n)
        else:
            lwork = cs.spotrf_bufferSize(self._cusolver_handle, lower, n, a.data.ptr, n)
        work = self.cp.empty(max(int(lwork), 1), dtype=a.dtype)
        info = self.cp.zeros(1, dtype=np.int32)
        fn = cs.dpotrf if dbl else cs.spotrf
        fn(self._cusolver_handle, lower, n, a.data.ptr, n, work.data.ptr, int(lwork),
           info.data.ptr)
        return int(info.get()[0])

    def _scalar(self, value, dtype):
        return np.array(value, dtype=dtype)

    def trsm_rlt(self, l, b) -> None:
        dbl = self._check(b)
        cb = self._cublas
        m, n = b.shape
        one = self._scalar(1.0, b.dtype)
        fn = cb.dtrsm if dbl else cb.strsm
        fn(self._cublas_handle, cb.CUBLAS_SIDE_RIGHT, cb.CUBLAS_FILL_MODE_LOWER, cb.CUBLAS_OP_T,
           cb.CUBLAS_DIAG_NON_UNIT, m, n, one.ctypes.data, l.data.ptr, l.shape[0], b.data.ptr, m)

    def trsm_left(self, l, b, trans: bool) -> None:
        dbl = self._check(b)
        cb = self._cublas
        m, n = b.shape
        one = self._scalar(1.0, b.dtype)
        fn = cb.dtrsm if dbl else cb.strsm
        fn(self._cublas_handle, cb.CUBLAS_SIDE_LEFT, cb.CUBLAS_FILL_MODE_LOWER,
           cb.CUBLAS_OP_T if trans else cb.CUBLAS_OP_N, cb.CUBLAS_DIAG_NON_UNIT, m, n,
           one.ctypes.data, l.data.ptr, l.shape[0], b.data.ptr, m)

    def syrk_sub(self, a, c) -> None:
        dbl = self._check(c)
        cb = self._cublas
        n, k = a.shape
        alpha = self._scalar(-1.0, c.dtype)
        beta = self._scalar(1.0, c.dtype)
        fn = cb.dsyrk if dbl else cb.ssyrk
        fn(self._cublas_handle, cb.CUBLAS_FILL_MODE_LOWER, cb.CUBLAS_OP_N, n, k,
           alpha.ctypes.data, a.data.ptr, n, beta.ctypes.data, c.data.ptr, n)

    def gemm_nt_sub(self, a, b, c) -> None:
        dbl = self._check(c)
        cb = self._cublas
        m, k = a.shape
        n = b.shape[0]
        alpha = self._scalar(-1.0, c.dtype)
        beta = self._scalar(1.0, c.dtype)
        fn = cb.dgemm if dbl else cb.sgemm
        fn(self._cublas_handle, cb.CUBLAS_OP_N, cb.CUBLAS_OP_T, m, n, k, alpha.ctypes.data,
           a.data.ptr, m, b.data.ptr, n, beta.ctypes.data, c.data.ptr, m)

    def gemm_acc(self, a, b, c, trans_a: bool = False, alpha: float = 1.0) -> None:
        self._check(c)
        opa = a.T if trans_a else a
        c += alpha * (opa @ b)


def _import_cupy():
    try:
        import cupy  # noqa: F401  (the only CuPy import in kernelfit)
    except Exception as exc:
        raise BackendUnavailableError(
            "the GPU backend needs CuPy: install kernelfit[cuda12] or kernelfit[cuda13] "
            f"(import failed: {exc})") from None
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise BackendUnavailableError("CuPy is installed but no CUDA device is visible")
    except BackendUnavailableError:
        raise
    except Exception as exc:
        raise BackendUnavailableError(f"CuPy is installed but CUDA is not usable: {exc}") from None
    return cupy


@functools.lru_cache(maxsize=1)
def gpu_available() -> bool:
    """True when CuPy imports and at least one CUDA device is usable."""
    try:
        _import_cupy()
    except BackendUnavailableError:
        return False
    return True


@dataclass
class _Cache:
    cpu: CPUBackend | None = None
    gpu: GPUBackend | None = None


_cache = _Cache()


def get_backend(device: str = "cpu") -> Backend:
    """The backend for ``device`` in ``{'auto', 'cpu', 'gpu'}``.

    ``auto`` picks the GPU when CuPy and a CUDA device are usable, else the CPU.
    ``gpu`` raises :class:`BackendUnavailableError` with the reason when no GPU is usable.
    """
    if isinstance(device, Backend):
        return device
    if device not in _DEVICES:
        raise InputError(f"unknown device {device!r}; choose one of {', '.join(_DEVICES)}")
    if device == "auto":
        device = "gpu" if gpu_available() else "cpu"
    if device == "cpu":
        if _cache.cpu is None:
            _cache.cpu = CPUBackend()
        return _cache.cpu
    if _cache.gpu is None:
        _cache.gpu = GPUBackend()
    return _cache.gpu
