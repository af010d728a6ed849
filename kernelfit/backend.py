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

import contextlib
import functools
import math
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

    def empty(self, shape, dtype=np.float64, order: str = "C") -> Any:
        """An uninitialised array on this backend (large one-shot buffers: tiles, blocks)."""
        return self.xp.empty(shape, dtype=dtype, order=order)

    def empty_tile(self, rows: int, cols: int, dtype) -> Any:
        return self.empty((rows, cols), dtype=dtype, order="F")

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

    def trmm_lower(self, l, b, trans: bool = False):
        """``tril(l) @ b`` (or ``tril(l).T @ b``) as a new array (generic: one tile copy)."""
        t = self.xp.tril(l).astype(b.dtype, copy=False)
        return (t.T if trans else t) @ b

    def symm_upper(self, a, b):
        """``S @ b`` for the symmetric S whose upper triangle (diagonal included) ``a`` holds.

        Generic version (one tile copy); the CPU backend calls BLAS symm, which reads only
        the upper triangle in place.
        """
        xp = self.xp
        up = xp.triu(a).astype(b.dtype, copy=False)
        return up @ b + xp.triu(a, 1).T.astype(b.dtype, copy=False) @ b


# Host buffers of at least this size get their own anonymous mapping (see host_empty).
_HOST_MAP_MIN_BYTES = 4 << 20


def _huge_pages_wanted() -> bool:
    val = os.environ.get("KERNELFIT_HUGEPAGES", "0").strip().lower()
    if val in ("", "0", "no", "false", "off"):
        return False
    if val in ("1", "yes", "true", "on"):
        return True
    raise InputError(f"KERNELFIT_HUGEPAGES must be 0 or 1, got {val!r}")


def host_empty(shape, dtype=np.float64, order: str = "C") -> np.ndarray:
    """``np.empty`` for kernelfit's large host buffers, without transparent huge pages.

    NumPy asks the kernel for transparent huge pages on every large array
    (``madvise(MADV_HUGEPAGE)``). With the common ``defrag=madvise`` setting the first
    touch of such memory then waits for the kernel (or a VM's host) to assemble 2 MiB
    pages. Measured on this project's 2-core VM, first writes to 600 MB took 0.04-1.24 s
    with huge pages (0.7 s typical) against a steady 0.27 s with 4 KiB pages, while a
    float64 Cholesky ran about 4% slower without them: the Gram build at n = 10,000 went
    from 1.2-1.4 s to 0.75 s. So buffers of 4 MiB and more (Gram tiles, kernel blocks) get
    a private anonymous mapping marked ``MADV_NOHUGEPAGE``; the memory returns to the
    system when the array is freed. ``KERNELFIT_HUGEPAGES=1`` restores NumPy's behaviour
    (worth trying on a bare-metal machine with plenty of free memory).
    """
    dtype = np.dtype(dtype)
    count = math.prod(shape) if isinstance(shape, tuple) else int(shape)
    nbytes = count * dtype.itemsize
    if nbytes < _HOST_MAP_MIN_BYTES or _huge_pages_wanted():
        return np.empty(shape, dtype=dtype, order=order)
    try:
        import mmap

        mm = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        mm.madvise(mmap.MADV_NOHUGEPAGE)
    except (AttributeError, OSError, ValueError):  # not Linux, or no such advice
        return np.empty(shape, dtype=dtype, order=order)
    return np.frombuffer(mm, dtype=dtype, count=count).reshape(shape, order=order)


class CPUBackend(Backend):
    """NumPy arrays, SciPy's LAPACK/BLAS wrappers applied in place to whole tiles."""

    name = "numpy"
    device = "cpu"
    xp = np

    def empty(self, shape, dtype=np.float64, order: str = "C") -> np.ndarray:
        return host_empty(shape, dtype, order)

    def __init__(self):
        # resolve the LAPACK/BLAS wrappers now, so that importing SciPy's linear algebra
        # is not counted in the first factorization's time
        self._funcs("d")
        self._funcs("f")

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
            "trmm": getattr(blas, p + "trmm"),
            "symm": getattr(blas, p + "symm"),
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

    def trmm_lower(self, l, b, trans: bool = False):
        """``tril(l) @ b`` (or ``tril(l).T @ b``) as a new array; ``l``'s upper part is ignored."""
        lf = l if l.dtype == b.dtype else l.astype(b.dtype)
        return self._f(b, "trmm")(1.0, lf, b, side=0, lower=1, trans_a=1 if trans else 0)

    def symm_upper(self, a, b):
        """``S @ b`` for the symmetric S whose upper triangle ``a`` holds (BLAS symm)."""
        if a.dtype != b.dtype:
            a = a.astype(b.dtype)
        return self._f(b, "symm")(1.0, a, b, side=0, lower=0)

    def gemm_acc(self, a, b, c, trans_a: bool = False, alpha: float = 1.0) -> None:
        """``c <- c + alpha * op(a) @ b`` with ``op`` the transpose when ``trans_a``."""
        out = self._f(c, "gemm")(alpha, a, b, beta=1.0, c=c, trans_a=1 if trans_a else 0,
                                 overwrite_c=1)
        self._check_inplace(out, c, "gemm")


class GPUBackend(Backend):
    """CuPy arrays; cuSOLVER potrf and cuBLAS trsm/syrk/gemm applied in place.

    ``cupy.linalg.cholesky`` and ``cupyx.lapack.posv`` copy their input (twice the memory
    of K) and CuPy ignores linear-algebra errors by default, so the factorization calls go
    straight to the cuSOLVER/cuBLAS bindings that CuPy ships
    (``cupy_backends.cuda.libs.cusolver`` / ``cublas``, semi-private: checked against
    CuPy 13.6 and 14.2, see :data:`SUPPORTED_CUPY`), on Fortran-ordered tiles, and check
    ``devInfo`` themselves.

    Every call takes the cuBLAS/cuSOLVER handle of the calling thread and current device
    (CuPy keeps them per thread), binds it to CuPy's current stream, and runs cuBLAS with
    host scalars (``CUBLAS_POINTER_MODE_HOST``) and ``CUBLAS_DEFAULT_MATH``, restoring the
    handle's previous modes afterwards. Nothing here enables TF32: kernel blocks and
    distances are float64 (TF32 never applies to them), and the float32 tile kernels run
    in the default math mode even when another library switched the shared handle to
    ``CUBLAS_TF32_TENSOR_OP_MATH``.
    """

    name = "cupy"
    device = "gpu"

    #: tiles with this many elements or more are refused (32-bit index limits: 46,341^2).
    MAX_TILE_ELEMENTS = 2 ** 31 - 1

    def __init__(self):
        cp = _import_cupy()
        self.cp = cp
        self.xp = cp
        from cupy.cuda import device as _dev
        from cupy_backends.cuda.libs import cublas, cusolver

        self._dev = _dev
        self._cublas = cublas
        self._cusolver = cusolver
        self._device_id = int(cp.cuda.runtime.getDevice())
        self._peak_pool = 0
        self._peak_device = 0

    # ---- arrays -------------------------------------------------------------
    def to_numpy(self, x) -> np.ndarray:
        if isinstance(x, self.cp.ndarray):
            return self.cp.asnumpy(x)
        return np.asarray(x)

    def is_backend_array(self, x) -> bool:
        return isinstance(x, self.cp.ndarray)

    def synchronize(self) -> None:
        """Wait for all work on the device (any stream); also samples the memory peak."""
        self.cp.cuda.runtime.deviceSynchronize()
        self._sample_memory()

    # ---- memory -------------------------------------------------------------
    def _sample_memory(self) -> None:
        pool = self.cp.get_default_memory_pool()
        self._peak_pool = max(self._peak_pool, int(pool.total_bytes()))
        free, total = self.cp.cuda.runtime.memGetInfo()
        self._peak_device = max(self._peak_device, int(total) - int(free))

    def free_pool(self) -> None:
        """Return the memory pool's cached blocks to the device (after sampling the peak).

        CuPy's pool only grows between ``free_all_blocks`` calls, so its total just before
        the release is the peak footprint of the stage that ended.
        """
        self.synchronize()
        self.cp.get_default_memory_pool().free_all_blocks()
        self.cp.get_default_pinned_memory_pool().free_all_blocks()

    def free_memory(self) -> int:
        """Bytes a new allocation can use: free device memory plus the pool's cached blocks."""
        free, _total = self.cp.cuda.runtime.memGetInfo()
        return int(free) + int(self.cp.get_default_memory_pool().free_bytes())

    def peak_memory(self) -> int:
        """Peak bytes held by CuPy's memory pool, sampled at every synchronize/free_pool.

        The pool grows monotonically between releases, so sampling at the end of each
        stage sees its maximum unless CuPy itself flushed the pool on an allocation
        failure. Library workspaces outside the pool are in :meth:`memory_stats`.
        """
        self._sample_memory()
        return self._peak_pool

    def reset_peak(self) -> None:
        """Start a new peak measurement from the current footprint (benchmarks)."""
        self._peak_pool = 0
        self._peak_device = 0
        self._sample_memory()

    def memory_stats(self) -> dict:
        pool = self.cp.get_default_memory_pool()
        free, total = self.cp.cuda.runtime.memGetInfo()
        self._sample_memory()
        return {"pool_used_bytes": int(pool.used_bytes()),
                "pool_total_bytes": int(pool.total_bytes()),
                "device_free_bytes": int(free), "device_total_bytes": int(total),
                "peak_pool_bytes": self._peak_pool,
                "peak_device_used_bytes": self._peak_device}

    def describe(self) -> dict:
        rt = self.cp.cuda.runtime
        props = rt.getDeviceProperties(self._device_id)
        name = props.get("name", b"")
        if isinstance(name, bytes):
            name = name.decode(errors="replace")
        _free, total = rt.memGetInfo()
        out = {"device": "gpu", "backend": self.name, "gpu_name": name,
               "gpu_index": self._device_id, "gpu_memory_bytes": int(total),
               "compute_capability": f"{props.get('major', '?')}.{props.get('minor', '?')}",
               "cupy_version": self.cp.__version__,
               "cuda_runtime_version": _cuda_version(rt.runtimeGetVersion()),
               "cuda_driver_version": _cuda_version(rt.driverGetVersion()),
               "cublas_math_mode": "CUBLAS_DEFAULT_MATH (no TF32)",
               "env_CUPY_TF32": os.environ.get("CUPY_TF32"),
               "env_NVIDIA_TF32_OVERRIDE": os.environ.get("NVIDIA_TF32_OVERRIDE")}
        return out

    # ---- handles ------------------------------------------------------------
    def _stream_ptr(self) -> int:
        return int(self.cp.cuda.get_current_stream().ptr)

    @contextlib.contextmanager
    def _cublas_handle(self):
        """The calling thread's cuBLAS handle on the current stream, host scalars, no TF32."""
        cb = self._cublas
        h = self._dev.get_cublas_handle()
        cb.setStream(h, self._stream_ptr())
        pmode = cb.getPointerMode(h)
        mmode = cb.getMathMode(h)
        if pmode != cb.CUBLAS_POINTER_MODE_HOST:
            cb.setPointerMode(h, cb.CUBLAS_POINTER_MODE_HOST)
        if mmode != cb.CUBLAS_DEFAULT_MATH:
            cb.setMathMode(h, cb.CUBLAS_DEFAULT_MATH)
        try:
            yield h
        finally:
            if pmode != cb.CUBLAS_POINTER_MODE_HOST:
                cb.setPointerMode(h, pmode)
            if mmode != cb.CUBLAS_DEFAULT_MATH:
                cb.setMathMode(h, mmode)

    def _cusolver_handle(self) -> int:
        h = self._dev.get_cusolver_handle()
        self._cusolver.setStream(h, self._stream_ptr())
        return h

    # ---- argument checks ----------------------------------------------------
    def _target(self, a, name: str):
        """Check an array updated in place: CuPy, float32/64, Fortran order, small enough."""
        if not isinstance(a, self.cp.ndarray):
            raise InputError(f"GPU tile kernels need CuPy arrays; {name} is {type(a).__name__}")
        if a.ndim != 2:
            raise InputError(f"GPU tile kernels need 2-D tiles; {name} has shape {a.shape}")
        if a.dtype.char not in ("d", "f"):
            raise InputError(f"tile kernels need float32 or float64 arrays, got {a.dtype}")
        if not a.flags.f_contiguous:
            raise InputError(f"GPU tile kernels update tiles in place and need Fortran-ordered "
                             f"(column-major) tiles; {name} is not (use empty_tile or "
                             f"cupy.asfortranarray)")
        if a.size >= self.MAX_TILE_ELEMENTS:
            raise InputError(f"tile {name} of shape {a.shape} has 2^31 elements or more; "
                             "use a tile size of at most 46,340")
        if a.device.id != self._device_id:
            raise InputError(f"{name} lives on GPU {a.device.id}, the backend on GPU "
                             f"{self._device_id}")
        return a

    def _operand(self, a, dtype, name: str):
        """A read-only operand as a Fortran-ordered CuPy array of ``dtype`` (copied if not)."""
        if not isinstance(a, self.cp.ndarray):
            raise InputError(f"GPU tile kernels need CuPy arrays; {name} is {type(a).__name__}")
        if a.ndim != 2:
            raise InputError(f"GPU tile kernels need 2-D operands; {name} has shape {a.shape}")
        if a.dtype != dtype:
            raise InputError(f"{name} is {a.dtype} but the updated tile is {dtype}")
        if not a.flags.f_contiguous:
            a = self.cp.asfortranarray(a)
        return self._target(a, name)

    @staticmethod
    def _ld(a) -> int:
        """Leading dimension of a Fortran-ordered 2-D array (at least 1, as BLAS demands)."""
        return max(int(a.shape[0]), 1)

    def _scalars(self, dtype, *values):
        return [np.array(v, dtype=dtype) for v in values]

    # ---- tile kernels (all in place, lower-triangular convention) ----------
    def potrf(self, a) -> int:
        """Cholesky of the square tile ``a`` in place (lower). Returns LAPACK-style info.

        0 on success; ``i > 0`` when the leading minor of order ``i`` (1-based, within the
        tile) is not positive definite, as cuSOLVER's ``devInfo`` and LAPACK report it.
        """
        self._target(a, "a")
        n = a.shape[0]
        if a.shape[1] != n:
            raise InputError(f"potrf needs a square tile, got shape {a.shape}")
        if n == 0:
            return 0
        cs = self._cusolver
        lower = self._cublas.CUBLAS_FILL_MODE_LOWER
        dbl = a.dtype.char == "d"
        h = self._cusolver_handle()
        size_fn = cs.dpotrf_bufferSize if dbl else cs.spotrf_bufferSize
        lwork = int(size_fn(h, lower, n, a.data.ptr, n))
        work = self.cp.empty(max(lwork, 1), dtype=a.dtype)
        info = self.cp.zeros(1, dtype=np.int32)
        fn = cs.dpotrf if dbl else cs.spotrf
        fn(h, lower, n, a.data.ptr, n, work.data.ptr, lwork, info.data.ptr)
        code = int(info.get()[0])  # waits for the factorization on the current stream
        if code < 0:
            raise RuntimeError(f"cuSOLVER potrf rejected argument {-code} (a kernelfit bug)")
        return code

    def trsm_rlt(self, l, b) -> None:
        """``b <- b @ inv(l).T`` with ``l`` lower triangular (the panel update)."""
        self._trsm(l, b, left=False, trans=True)

    def trsm_left(self, l, b, trans: bool) -> None:
        """``b <- inv(l) @ b`` (or ``inv(l).T @ b``) with ``l`` lower triangular."""
        self._trsm(l, b, left=True, trans=trans)

    def _trsm(self, l, b, *, left: bool, trans: bool) -> None:
        self._target(b, "b")
        l = self._operand(l, b.dtype, "l")
        m, n = b.shape
        k = m if left else n
        if l.shape != (k, k):
            raise InputError(f"trsm: l has shape {l.shape}, expected {(k, k)}")
        if m == 0 or n == 0:
            return
        cb = self._cublas
        (one,) = self._scalars(b.dtype, 1.0)
        fn = cb.dtrsm if b.dtype.char == "d" else cb.strsm
        with self._cublas_handle() as h:
            fn(h, cb.CUBLAS_SIDE_LEFT if left else cb.CUBLAS_SIDE_RIGHT,
               cb.CUBLAS_FILL_MODE_LOWER, cb.CUBLAS_OP_T if trans else cb.CUBLAS_OP_N,
               cb.CUBLAS_DIAG_NON_UNIT, m, n, one.ctypes.data, l.data.ptr, self._ld(l),
               b.data.ptr, self._ld(b))

    def syrk_sub(self, a, c) -> None:
        """``c <- c - a @ a.T`` on the lower triangle of ``c``."""
        self._target(c, "c")
        a = self._operand(a, c.dtype, "a")
        n, k = a.shape
        if c.shape != (n, n):
            raise InputError(f"syrk: c has shape {c.shape}, expected {(n, n)}")
        if n == 0 or k == 0:
            return
        cb = self._cublas
        alpha, beta = self._scalars(c.dtype, -1.0, 1.0)
        fn = cb.dsyrk if c.dtype.char == "d" else cb.ssyrk
        with self._cublas_handle() as h:
            fn(h, cb.CUBLAS_FILL_MODE_LOWER, cb.CUBLAS_OP_N, n, k, alpha.ctypes.data,
               a.data.ptr, self._ld(a), beta.ctypes.data, c.data.ptr, self._ld(c))

    def gemm_nt_sub(self, a, b, c) -> None:
        """``c <- c - a @ b.T``."""
        self._target(c, "c")
        a = self._operand(a, c.dtype, "a")
        b = self._operand(b, c.dtype, "b")
        m, k = a.shape
        n = b.shape[0]
        if b.shape[1] != k or c.shape != (m, n):
            raise InputError(f"gemm: shapes {a.shape} x {b.shape}^T do not give {c.shape}")
        if m == 0 or n == 0 or k == 0:
            return
        cb = self._cublas
        alpha, beta = self._scalars(c.dtype, -1.0, 1.0)
        fn = cb.dgemm if c.dtype.char == "d" else cb.sgemm
        with self._cublas_handle() as h:
            fn(h, cb.CUBLAS_OP_N, cb.CUBLAS_OP_T, m, n, k, alpha.ctypes.data,
               a.data.ptr, self._ld(a), b.data.ptr, self._ld(b), beta.ctypes.data,
               c.data.ptr, self._ld(c))

    def gemm_acc(self, a, b, c, trans_a: bool = False, alpha: float = 1.0) -> None:
        """``c <- c + alpha * op(a) @ b`` with ``op`` the transpose when ``trans_a``."""
        self._target(c, "c")
        a = self._operand(a, c.dtype, "a")
        b = self._operand(b, c.dtype, "b")
        m, n = c.shape
        k = b.shape[0]
        opa_shape = a.shape[::-1] if trans_a else a.shape
        if opa_shape != (m, k) or b.shape != (k, n):
            raise InputError(f"gemm: op(a) {opa_shape} x b {b.shape} does not give {c.shape}")
        if m == 0 or n == 0 or k == 0:
            return
        cb = self._cublas
        al, beta = self._scalars(c.dtype, alpha, 1.0)
        fn = cb.dgemm if c.dtype.char == "d" else cb.sgemm
        with self._cublas_handle() as h:
            fn(h, cb.CUBLAS_OP_T if trans_a else cb.CUBLAS_OP_N, cb.CUBLAS_OP_N, m, n, k,
               al.ctypes.data, a.data.ptr, self._ld(a), b.data.ptr, self._ld(b),
               beta.ctypes.data, c.data.ptr, self._ld(c))


def _cuda_version(v: int) -> str:
    """CUDA's integer version (12040) as text ('12.4')."""
    v = int(v)
    return f"{v // 1000}.{(v % 1000) // 10}"


#: CuPy releases whose cuBLAS/cuSOLVER binding signatures GPUBackend was checked against.
SUPPORTED_CUPY = (13, 14)


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
    major = _major_version(getattr(cupy, "__version__", ""))
    if major is not None and major < SUPPORTED_CUPY[0]:
        raise BackendUnavailableError(
            f"the GPU backend needs CuPy {SUPPORTED_CUPY[0]} or newer (its cuBLAS/cuSOLVER "
            f"bindings), found {cupy.__version__}: pip install -U 'kernelfit[cuda12]'")
    if major is not None and major > SUPPORTED_CUPY[-1]:
        import warnings

        warnings.warn(f"kernelfit's GPU backend was checked against CuPy "
                      f"{SUPPORTED_CUPY[0]}-{SUPPORTED_CUPY[-1]}; CuPy {cupy.__version__} may "
                      "have changed the cuBLAS/cuSOLVER bindings it uses", RuntimeWarning,
                      stacklevel=3)
    return cupy


def _major_version(text: str):
    try:
        return int(str(text).split(".")[0])
    except ValueError:
        return None


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
