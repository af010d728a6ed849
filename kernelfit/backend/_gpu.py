"""The GPU backend: CuPy arrays, cuSOLVER potrf and cuBLAS trsm/syrk/gemm applied in place.

The only module of kernelfit that imports CuPy, and only lazily (inside functions), so a
CPU-only install never needs it. It also holds the availability probe and the fused
element-wise kernel finishes; the dense/tiles rule is in ``_rules.py``.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import warnings

import numpy as np

from ..errors import BackendUnavailableError, InputError, MemoryPlanError
from ._base import Backend
from ._rules import LEGACY_MAX_ELEMENTS

__all__ = ["GPUBackend", "probe_gpu", "SUPPORTED_CUPY", "FUSED_FINISH"]

#: CuPy releases whose cuBLAS/cuSOLVER binding signatures GPUBackend was checked against.
SUPPORTED_CUPY = (13, 14)

# CuPy itself (kernelfit is installed from its checkout, where '.[cuda12]' says the same)
_INSTALL = ("pip install 'cupy-cuda12x[ctk]>=14,<15' (CUDA 12 driver) or "
            "'cupy-cuda13x[ctk]>=14,<15' (CUDA 13 driver)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


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

    #: tiles with more elements are refused (32-bit index limits: 46,341^2 > 2^31 - 1).
    MAX_TILE_ELEMENTS = LEGACY_MAX_ELEMENTS

    def __init__(self):
        cp = _import_cupy()
        self.cp = cp
        self.xp = cp
        import importlib

        self._dev = importlib.import_module("cupy.cuda.device")
        self._cublas = importlib.import_module("cupy_backends.cuda.libs.cublas")
        self._cusolver = importlib.import_module("cupy_backends.cuda.libs.cusolver")
        self._device_id = int(cp.cuda.runtime.getDevice())
        self._peak_pool = 0
        self._peak_device = 0
        self._pending = []  # (tag, devInfo array) of potrf calls not yet checked
        self._keep_pool = False
        self._install_allocator()

    # ---- arrays -------------------------------------------------------------
    def to_numpy(self, x) -> np.ndarray:
        if isinstance(x, self.cp.ndarray):
            return self.cp.asnumpy(x)
        return np.asarray(x)

    def asarray(self, x, dtype=None):
        nbytes = getattr(x, "nbytes", None)
        if nbytes is None or isinstance(x, self.cp.ndarray):
            return self.cp.asarray(x, dtype=dtype)
        with self.out_of_memory_guard(nbytes, "an array moved to the GPU"):
            return self.cp.asarray(x, dtype=dtype)

    def empty(self, shape, dtype=np.float64, order: str = "C"):
        count = math.prod(shape) if isinstance(shape, tuple) else int(shape)
        with self.out_of_memory_guard(count * np.dtype(dtype).itemsize, "a GPU buffer"):
            return self.cp.empty(shape, dtype=dtype, order=order)

    @contextlib.contextmanager
    def out_of_memory_guard(self, nbytes=None, what: str = "GPU work"):
        """Turn CuPy's OutOfMemoryError into :class:`MemoryPlanError` with the figures
        (bytes asked, bytes free on the device) and the ways out, never a CuPy traceback."""
        try:
            yield
        except oom_types() as exc:
            if isinstance(exc, MemoryPlanError):  # already translated by the allocator
                raise
            raise self._oom_error(nbytes, what, exc) from None

    def _oom_error(self, nbytes, what: str, exc) -> MemoryPlanError:
        try:
            free = self.free_memory()
            _f, total = self.cp.cuda.runtime.memGetInfo()
        except Exception:  # pragma: no cover - the device is in a bad state
            free, total = 0, 0
        asked = f"{nbytes / 2**30:.2f} GiB" if nbytes else "memory"
        return _gpu_oom_class()(
            f"the GPU ran out of memory allocating {asked} for {what} "
            f"({free / 2**30:.2f} GiB free of {total / 2**30:.1f} GiB on the device; "
            f"CuPy: {_first_line(exc)}); solve fewer points, store the matrix in float32 "
            "with float64 refinement (mixed precision), keep the tiles on the host "
            "(out-of-core), or run on the CPU",
            required_bytes=int(nbytes or 0), available_bytes=int(free))

    def _install_allocator(self) -> None:
        """Route every CuPy allocation through the default pool and a translator, so an
        out-of-memory error anywhere in a solve (kernel blocks, temporaries, workspaces)
        becomes a :class:`MemoryPlanError` with the figures; the error class also derives
        from CuPy's OutOfMemoryError, so code that catches that still does."""
        cp = self.cp
        pool = cp.get_default_memory_pool()
        set_allocator = getattr(cp.cuda, "set_allocator", None)
        if set_allocator is None or not hasattr(pool, "malloc"):
            return
        oom, be = oom_types(), self

        def malloc(nbytes):
            try:
                return pool.malloc(nbytes)
            except oom as exc:
                raise be._oom_error(nbytes, "a GPU allocation", exc) from None
        set_allocator(malloc)

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
        if self._keep_pool:
            return
        self.cp.get_default_memory_pool().free_all_blocks()
        self.cp.get_default_pinned_memory_pool().free_all_blocks()

    @contextlib.contextmanager
    def pool_kept(self):
        """Within this block :meth:`free_pool` only synchronizes and samples the peak: the
        cached blocks stay for the next solve (benchmarks timing warm runs, where releasing
        them would time cudaMalloc calls)."""
        before, self._keep_pool = self._keep_pool, True
        try:
            yield self
        finally:
            self._keep_pool = before

    def free_memory(self, reserve: int = 0) -> int:
        """Bytes a new allocation can use: free device memory plus the pool's cached blocks
        (``reserve``, host bytes, does not touch device memory)."""
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

    def measure_gemm_peaks(self, size: int = 8192, repeats: int = 5) -> dict:
        """Best-of-``repeats`` FP64/FP32 ``size`` x ``size`` matrix-product rates (CUDA
        events; one warm-up product first; random operands, never zeros)."""
        cp = self.cp
        out = {}
        for key, dt in (("fp64", cp.float64), ("fp32", cp.float32)):
            a = cp.random.default_rng(0).standard_normal((size, size), dtype=dt)
            b = cp.random.default_rng(1).standard_normal((size, size), dtype=dt)
            c = cp.empty((size, size), dtype=dt)
            cp.matmul(a, b, out=c)
            cp.cuda.Stream.null.synchronize()
            times = []
            for _ in range(max(int(repeats), 1)):
                start, stop = cp.cuda.Event(), cp.cuda.Event()
                start.record()
                cp.matmul(a, b, out=c)
                stop.record()
                stop.synchronize()
                times.append(cp.cuda.get_elapsed_time(start, stop) / 1e3)
            best = min(times)
            out[f"{key}_gflops"] = 2.0 * size ** 3 / best / 1e9
            out[key] = {"size": size, "best_s": best, "times_s": times}
            del a, b, c
            cp.get_default_memory_pool().free_all_blocks()
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
        if a.size > self.MAX_TILE_ELEMENTS:
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
    def potrf(self, a, defer=None) -> int:
        """Cholesky of the square tile ``a`` in place (lower). Returns LAPACK-style info.

        0 on success; ``i > 0`` when the leading minor of order ``i`` (1-based, within the
        tile) is not positive definite, as cuSOLVER's ``devInfo`` and LAPACK report it.

        ``defer=tag`` leaves ``devInfo`` on the device (no host synchronization) and
        returns 0; :meth:`pending_info` then reads every deferred ``devInfo`` in one
        transfer, once per factorization.
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
        work = self.empty(max(lwork, 1), dtype=a.dtype)
        info = self.cp.zeros(1, dtype=np.int32)
        fn = cs.dpotrf if dbl else cs.spotrf
        fn(h, lower, n, a.data.ptr, n, work.data.ptr, lwork, info.data.ptr)
        if defer is not None:
            self._pending.append((defer, info))
            return 0
        code = int(info.get()[0])  # waits for the factorization on the current stream
        if code < 0:
            raise RuntimeError(f"cuSOLVER potrf rejected argument {-code} (a kernelfit bug)")
        return code

    def pending_info(self) -> list:
        """``[(tag, info), ...]`` of the deferred potrf calls, read in one transfer (and
        forgotten); raises RuntimeError on a negative info (a rejected argument)."""
        pending, self._pending = self._pending, []
        if not pending:
            return []
        codes = self.cp.asnumpy(self.cp.concatenate([p[1] for p in pending]))
        if (codes < 0).any():
            raise RuntimeError(f"cuSOLVER potrf rejected argument {-int(codes.min())} "
                               "(a kernelfit bug)")
        return [(tag, int(c)) for (tag, _), c in zip(pending, codes)]

    def fused_finish(self, kernel_name: str):
        """One CuPy ElementwiseKernel for the Gaussian/Laplacian tile finish (or None).

        ``finish(a_sq[:, None], b_sq[None, :], scale, S)`` turns inner products S in place
        into exp(scale * d) (Gaussian, d the squared distance clamped at zero) or
        exp(scale * sqrt(d)) (Laplacian): one pass over the tile instead of six.
        ``KERNELFIT_FUSED_FINISH=0`` switches it off (for measuring both).
        """
        if os.environ.get("KERNELFIT_FUSED_FINISH", "1").strip() in ("0", "no", "off"):
            return None
        return _fused_kernel(kernel_name)

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


def _major_version(text: str):
    try:
        return int(str(text).split(".")[0])
    except ValueError:
        return None


def _import_cupy():
    """CuPy with a visible CUDA device, else :class:`BackendUnavailableError` (one line)."""
    try:
        import cupy  # noqa: F401  (kernelfit's CuPy import: this module only)
    except Exception as exc:
        raise BackendUnavailableError(
            f"the GPU backend needs CuPy, which does not import here ({_first_line(exc)}); "
            f"{_INSTALL}") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        raise BackendUnavailableError(
            f"CuPy is installed but finds no usable CUDA driver or device "
            f"({_first_line(exc)})") from None
    if count < 1:
        raise BackendUnavailableError("CuPy is installed but no CUDA device is visible")
    major = _major_version(getattr(cupy, "__version__", ""))
    if major is not None and major < SUPPORTED_CUPY[0]:
        raise BackendUnavailableError(
            f"the GPU backend needs CuPy {SUPPORTED_CUPY[0]} or newer (its cuBLAS/cuSOLVER "
            f"bindings), found {cupy.__version__}: {_INSTALL}")
    if major is not None and major > SUPPORTED_CUPY[-1]:
        warnings.warn(f"kernelfit's GPU backend was checked against CuPy "
                      f"{SUPPORTED_CUPY[0]}-{SUPPORTED_CUPY[-1]}; CuPy {cupy.__version__} may "
                      "have changed the cuBLAS/cuSOLVER bindings it uses", RuntimeWarning,
                      stacklevel=3)
    return cupy


def probe_gpu() -> "GPUBackend":
    """A GPU backend that has really run kernelfit's calls, else BackendUnavailableError.

    ``import cupy`` succeeds on a machine with a driver but without the CUDA libraries
    (CuPy 14's wheels bring them only with the ``[ctk]`` extra); the failure then comes
    at the first cuBLAS or cuSOLVER use ("libcublas.so.12: cannot open shared object
    file", "Failure finding libcublasLt.so.13"). So the probe loads both bindings, takes
    both handles and runs a 2 x 2 potrf, trsm and gemm through this backend, and checks
    the answer. The error names the library that failed and how to install it.
    """
    cp = _import_cupy()
    version = getattr(cp, "__version__", "?")
    step = "loading the cuBLAS/cuSOLVER bindings"
    try:
        be = GPUBackend()
        step = "cuBLAS (a handle)"
        be._dev.get_cublas_handle()
        step = "cuSOLVER (a handle)"
        be._dev.get_cusolver_handle()
        step = "cuSOLVER potrf"
        a = cp.asfortranarray(cp.asarray([[4.0, 2.0], [2.0, 5.0]]))
        info = be.potrf(a)
        step = "cuBLAS trsm/gemm"
        b = cp.asfortranarray(cp.asarray([[2.0], [1.0]]))
        be.trsm_left(a, b, trans=False)
        c = cp.zeros((2, 1), dtype=cp.float64, order="F")
        be.gemm_acc(a, b, c)
        got = cp.asnumpy(cp.concatenate([a.ravel(order="F"), b.ravel(), c.ravel()]))
    except BackendUnavailableError:
        raise
    except Exception as exc:
        raise BackendUnavailableError(
            f"CuPy {version} sees a CUDA device but {step} failed ({_first_line(exc)}); the "
            f"CUDA libraries are probably missing: {_INSTALL}") from None
    # L = [[2, 0], [1, 2]]; L y = [2, 1] -> y = [1, 0]; tril-blind gemm: a @ y = [2, 1]
    want = np.array([2.0, 1.0, 2.0, 2.0, 1.0, 0.0, 2.0, 1.0])
    if info != 0 or not np.allclose(got, want, rtol=1e-12, atol=1e-12):
        raise BackendUnavailableError(
            f"the GPU backend's self-test gave wrong numbers (potrf info {info}, got "
            f"{np.round(got, 6).tolist()}): the CUDA libraries do not match CuPy {version}; "
            f"{_INSTALL}")
    return be


#: The fused element-wise finishes: squared distance from norms and inner product, clamped
#: at zero, then the kernel value. Same arithmetic as Kernel._finish, one pass.
FUSED_FINISH = {
    "gaussian": "double d = a + b - 2.0 * s; d = d > 0.0 ? d : 0.0; s = exp(d * scale);",
    "laplacian": "double d = a + b - 2.0 * s; d = d > 0.0 ? d : 0.0; s = exp(sqrt(d) * scale);",
}


@functools.lru_cache(maxsize=None)
def _fused_kernel(kernel_name: str):
    body = FUSED_FINISH.get(kernel_name)
    if body is None:
        return None
    import cupy

    return cupy.ElementwiseKernel("float64 a, float64 b, float64 scale", "float64 s", body,
                                  f"kernelfit_{kernel_name}_finish")


def _gpu_oom_class():
    """MemoryPlanError that is also CuPy's OutOfMemoryError (when CuPy is imported)."""
    return _oom_class_for(oom_types())


@functools.lru_cache(maxsize=None)
def _oom_class_for(cupy_oom: tuple):

    def __init__(self, message, required_bytes=0, available_bytes=0):
        Exception.__init__(self, message)
        self.required_bytes = int(required_bytes)
        self.available_bytes = int(available_bytes)
        self._size, self._total, self._limit = self.required_bytes, 0, 0  # CuPy's fields

    return type("GPUOutOfMemoryError", (MemoryPlanError,) + cupy_oom,
                {"__init__": __init__, "__reduce__": Exception.__reduce__,
                 "__module__": __name__})


def oom_types():
    """CuPy's out-of-memory exception types (empty when CuPy was never imported)."""
    import sys

    cp = sys.modules.get("cupy")
    mem = getattr(getattr(cp, "cuda", None), "memory", None)
    err = getattr(mem, "OutOfMemoryError", None)
    return (err,) if isinstance(err, type) else ()
