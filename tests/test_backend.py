"""Backends: lazy CuPy, device selection and errors, the CPU kernels' in-place guarantee,
and GPUBackend's cuBLAS/cuSOLVER calls checked against a host emulation of those APIs.

The emulation (``_FakeCuda``) stands in for ``cupy`` and ``cupy_backends``: its arrays
are NumPy arrays whose ``data.ptr`` is the host address, and its cuBLAS/cuSOLVER
functions take the same arguments as CuPy's bindings (signatures read from CuPy 13.6
and 14.2: ``dtrsm(handle, side, uplo, trans, diag, m, n, alpha, A, lda, B, ldb)``, ...),
read and write column-major memory through those pointers with the reference BLAS/LAPACK
semantics, and insist on host scalars and the default math mode. So argument order,
fill modes, transposes, leading dimensions, in-place updates, stream binding and the
handle's modes are all checked here without a GPU. Real-GPU runs are in test_gpu.py.

The emulation is never more permissive than the real bindings: every name it offers must
exist in ``tests/data/cupy_bindings.json``, the Python-visible names of
``cupy_backends.cuda.libs.{cublas,cusolver}`` and ``cupy.cuda.device`` in the CuPy 13.6 and
14.2 wheels (read with ``strings`` from the compiled modules of
``pip download --no-deps cupy-cuda12x==13.6.0 cupy-cuda12x==14.2.0 cupy-cuda13x==14.2.0``:
``__pyx_e_<module>_<NAME>`` enums and ``__pyx_pw_<module>_<N><name>`` functions), and in
the real modules too when CuPy imports here.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
import textwrap
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.linalg import solve_triangular

import kernelfit.backend as backend
from kernelfit.backend import CPUBackend, GPUBackend, get_backend
from kernelfit.errors import (BackendUnavailableError, InputError, MemoryPlanError,
                              NotPositiveDefiniteError)
from kernelfit.solvers.cholesky import cholesky_inplace, cholesky_solve
from kernelfit.solvers.tiles import TiledSymmetric


def _spd(n, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, n // 2 + 3))
    return (A @ A.T + n * np.eye(n)).astype(dtype)


@pytest.fixture
def fresh_backends(monkeypatch):
    """Forget cached backends and the cached GPU probe (restored afterwards)."""
    from kernelfit.backend import _gpu

    monkeypatch.setattr(backend, "_cache", backend._Cache())
    backend.gpu_available.cache_clear()
    _gpu._fused_kernel.cache_clear()  # a kernel made by the real CuPy must not meet fakes
    yield
    backend.gpu_available.cache_clear()
    _gpu._fused_kernel.cache_clear()


# ---------------------------------------------------------------- lazy CuPy
def test_cpu_solve_never_imports_cupy():
    code = textwrap.dedent("""
        import sys
        import numpy as np
        import kernelfit, kernelfit.cli
        from kernelfit.estimator import KernelInterpolator
        X = np.random.default_rng(0).standard_normal((40, 3))
        est = KernelInterpolator(kernel="gaussian", bandwidth=1.0, device="cpu").fit(X, X[:, 0] > 0)
        est.predict(X)
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("cupy", "cupyx", "cupy_backends"))
        assert not bad, bad
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


class _Poisoned(types.ModuleType):
    def __getattr__(self, name):
        raise AssertionError(f"the CPU path touched cupy.{name}")


def test_cpu_path_never_touches_cupy(monkeypatch, fresh_backends):
    monkeypatch.setitem(sys.modules, "cupy", _Poisoned("cupy"))
    from kernelfit.estimator import KernelInterpolator

    X = np.random.default_rng(1).standard_normal((50, 4))
    est = KernelInterpolator(kernel="gaussian", bandwidth=2.0, device="cpu").fit(X, X[:, 1] > 0)
    assert est.device_ == "cpu"
    est.predict(X)
    # 'auto' probes CuPy; a broken CuPy means the CPU, not a crash
    assert get_backend("auto").device == "cpu"


def test_gpu_without_cupy_is_a_clear_error(monkeypatch, fresh_backends):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` fail
    with pytest.raises(BackendUnavailableError, match=r"needs CuPy.*cupy-cuda12x\[ctk\]"):
        get_backend("gpu")
    assert backend.gpu_available() is False
    assert get_backend("auto").device == "cpu"


def test_cli_device_gpu_without_cupy_exits_with_one_line(monkeypatch, fresh_backends, capsys):
    monkeypatch.setitem(sys.modules, "cupy", None)
    from kernelfit.cli import main

    code = main(["solve", "--dataset", "mnist", "--n-train", "10", "--device", "gpu",
                 "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1, err
    assert "CuPy" in err and "Traceback" not in err


def test_unknown_device_is_refused():
    with pytest.raises(InputError, match="unknown device"):
        get_backend("tpu")


# ---------------------------------------------------------------- CPU in place
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cpu_tile_kernels_work_in_place(dtype):
    be = CPUBackend()
    rng = np.random.default_rng(2)
    A = np.asfortranarray(_spd(12, dtype=dtype))
    ref_L = np.linalg.cholesky(A.astype(np.float64))
    a = A.copy(order="F")
    ptr = a.ctypes.data
    assert be.potrf(a) == 0
    assert a.ctypes.data == ptr
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(np.tril(a), ref_L, rtol=rtol, atol=rtol)
    L = np.tril(a)

    b = np.asfortranarray(rng.standard_normal((5, 12)).astype(dtype))
    b0 = b.astype(np.float64)
    be.trsm_rlt(a, b)
    np.testing.assert_allclose(b, b0 @ np.linalg.inv(ref_L).T, rtol=1e3 * rtol, atol=rtol)

    for trans in (False, True):
        y = np.asfortranarray(rng.standard_normal((12, 3)).astype(dtype))
        y0 = y.astype(np.float64)
        be.trsm_left(a, y, trans=trans)
        op = L.T if trans else L
        np.testing.assert_allclose(y, np.linalg.solve(op.astype(np.float64), y0),
                                   rtol=1e3 * rtol, atol=rtol)

    c = np.asfortranarray(_spd(5, seed=3, dtype=dtype))
    c0 = c.astype(np.float64)
    x = np.asfortranarray(rng.standard_normal((5, 4)).astype(dtype))
    be.syrk_sub(x, c)
    np.testing.assert_allclose(np.tril(c), np.tril(c0 - x.astype(np.float64) @ x.T),
                               rtol=1e3 * rtol, atol=10 * rtol)
    np.testing.assert_array_equal(np.triu(c, 1), np.triu(c0, 1).astype(dtype))  # untouched

    g = np.asfortranarray(rng.standard_normal((5, 6)).astype(dtype))
    g0 = g.astype(np.float64)
    p = np.asfortranarray(rng.standard_normal((6, 4)).astype(dtype))
    be.gemm_nt_sub(x, p, g)
    np.testing.assert_allclose(g, g0 - x.astype(np.float64) @ p.T, rtol=1e3 * rtol,
                               atol=10 * rtol)
    h = np.asfortranarray(rng.standard_normal((4, 6)).astype(dtype))
    h0 = h.astype(np.float64)
    be.gemm_acc(x, g, h, trans_a=True, alpha=-0.5)
    np.testing.assert_allclose(h, h0 - 0.5 * x.astype(np.float64).T @ g, rtol=1e3 * rtol,
                               atol=10 * rtol)


@pytest.mark.parametrize("order", ["F", "C"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpu_gemm_acc_any_layout_and_operand_dtype(order, dtype):
    """gemm_acc (NumPy's matmul, GIL released) accumulates in c's dtype whatever the
    operands' layout or dtype, and refuses shapes that do not multiply."""
    be = CPUBackend()
    rng = np.random.default_rng(0)
    a = np.array(rng.standard_normal((5, 4)), order=order)
    for trans, b_rows, c_rows in ((False, 4, 5), (True, 5, 4)):
        b = np.array(rng.standard_normal((b_rows, 3)), order=order).astype(np.float32)
        c = np.array(rng.standard_normal((c_rows, 3)), dtype=dtype, order=order)
        c0 = c.astype(np.float64)
        be.gemm_acc(a, b, c, trans_a=trans, alpha=2.0)
        assert c.dtype == dtype
        want = c0 + 2.0 * (a.T if trans else a) @ b.astype(np.float64)
        np.testing.assert_allclose(c, want, rtol=1e-5 if dtype == np.float32 else 1e-12,
                                   atol=1e-5)
    with pytest.raises(InputError, match="gemm"):
        be.gemm_acc(a, np.ones((5, 3)), np.zeros((5, 3)))


def test_cpu_c_ordered_tiles_are_handled_correctly():
    """SciPy copies a C-ordered tile; the CPU backend writes the result back."""
    be = CPUBackend()
    A = _spd(9)
    a = A.copy(order="C")
    assert be.potrf(a) == 0
    np.testing.assert_allclose(np.tril(a), np.linalg.cholesky(A), rtol=1e-12)
    c = np.ascontiguousarray(_spd(6, seed=1))
    c0 = c.copy()
    x = np.ascontiguousarray(np.random.default_rng(0).standard_normal((6, 2)))
    be.syrk_sub(x, c)
    np.testing.assert_allclose(np.tril(c), np.tril(c0 - x @ x.T), rtol=1e-12)


def test_cpu_potrf_reports_lapack_info():
    be = CPUBackend()
    a = np.asfortranarray(np.diag([1.0, 2.0, -3.0]))
    assert be.potrf(a) == 3


# ---------------------------------------------------------------- GPUBackend, emulated
_LOWER, _UPPER = 0, 1          # cublasFillMode_t
_LEFT, _RIGHT = 0, 1           # cublasSideMode_t
_OP_N, _OP_T = 0, 1            # cublasOperation_t
_HOST, _DEVICE = 0, 1          # cublasPointerMode_t
_DEFAULT_MATH = 0
_TF32_MATH = 3  # cuBLAS's CUBLAS_TF32_TENSOR_OP_MATH value: CuPy has no name for it


class _FakeArray(np.ndarray):
    """A NumPy array that answers CuPy's ``data.ptr`` / ``device.id`` / ``get()``."""

    @property
    def data(self):  # noqa: D401 - mimics cupy.ndarray.data (a MemoryPointer)
        return types.SimpleNamespace(ptr=self.ctypes.data)

    @property
    def device(self):
        return types.SimpleNamespace(id=0)

    def get(self):
        return np.array(self)


def _to_fake_device(x, dtype=None, order="K"):
    """cupy.asarray: host memory is copied to the "device" (a view would let the emulated
    GPU write into read-only memory maps); a device array of the right dtype is returned."""
    if isinstance(x, _FakeArray) and (dtype is None or np.dtype(dtype) == x.dtype):
        return x
    return np.array(x, dtype=dtype, order=order, copy=True).view(_FakeArray)


def _numpy_as_cupy(obj):
    """A NumPy function whose array results come back as _FakeArray (or a constant/type)."""
    if not callable(obj) or isinstance(obj, type):
        return obj

    def call(*a, **k):
        out = obj(*a, **k)
        return out.view(_FakeArray) if isinstance(out, np.ndarray) else out
    return call


def _mat(ptr, rows, cols, ld, dtype):
    """Column-major ``rows x cols`` view of the memory at ``ptr`` with leading dimension ld."""
    assert ld >= max(rows, 1)
    dtype = np.dtype(dtype)
    n_items = ld * (cols - 1) + rows if cols else 0
    buf = (ctypes.c_char * (n_items * dtype.itemsize)).from_address(ptr)
    flat = np.frombuffer(buf, dtype=dtype)
    return np.lib.stride_tricks.as_strided(flat, shape=(rows, cols),
                                           strides=(dtype.itemsize, ld * dtype.itemsize))


def _scalar(ptr, dtype):
    return float(np.frombuffer((ctypes.c_char * np.dtype(dtype).itemsize).from_address(ptr),
                               dtype=dtype)[0])


class _FakeOutOfMemoryError(MemoryError):
    """CuPy's ``cupy.cuda.memory.OutOfMemoryError``: built from the sizes, as CuPy builds it
    (``OutOfMemoryError(size, total, limit=0)``), never from a message."""

    def __init__(self, size, total, limit=0):
        extra = f", limit set to: {limit:,} bytes" if limit else ""
        super().__init__(f"Out of memory allocating {size:,} bytes "
                         f"(allocated so far: {total:,} bytes{extra}).")


class _FakeCuda:
    """cupy + cupy_backends.cuda.libs.{cublas,cusolver} emulated on the host."""

    def __init__(self):
        self.calls = []
        self.stream = 0
        self.handle = {"stream": None, "pointer": _DEVICE, "math": _TF32_MATH}
        self.solver_stream = None

        cp = types.ModuleType("cupy")
        cp.__version__ = "14.2.0"
        cp.ndarray = _FakeArray
        cp.float64, cp.float32 = np.float64, np.float32
        wrap = lambda f: (lambda *a, **k: np.asarray(f(*a, **k)).view(_FakeArray))  # noqa
        cp.asarray = _to_fake_device
        cp.empty = wrap(np.empty)
        cp.zeros = wrap(np.zeros)
        cp.asfortranarray = wrap(np.asfortranarray)
        cp.ascontiguousarray = wrap(np.ascontiguousarray)
        cp.concatenate = wrap(np.concatenate)
        cp.asnumpy = np.array
        cp.__getattr__ = lambda name: _numpy_as_cupy(getattr(np, name))  # einsum, exp, ...
        self.free_bytes, self.total_bytes = 80 << 30, 96 << 30
        runtime = types.SimpleNamespace(getDeviceCount=lambda: 1, getDevice=lambda: 0,
                                        deviceSynchronize=lambda: None,
                                        memGetInfo=lambda: (self.free_bytes, self.total_bytes),
                                        getDeviceProperties=lambda i: {
                                            "name": b"Emulated GPU", "major": 9, "minor": 0},
                                        runtimeGetVersion=lambda: 13000,
                                        driverGetVersion=lambda: 13000)
        pool = types.SimpleNamespace(free_bytes=lambda: 0, total_bytes=lambda: 0,
                                     used_bytes=lambda: 0, free_all_blocks=lambda: None,
                                     malloc=lambda nbytes: None)
        cp.get_default_memory_pool = lambda: pool
        cp.get_default_pinned_memory_pool = lambda: pool
        self.finishes = []
        cp.ElementwiseKernel = self._elementwise_kernel
        cp.cuda = types.SimpleNamespace(
            runtime=runtime,
            get_current_stream=lambda: types.SimpleNamespace(ptr=self.stream))
        device_mod = types.ModuleType("cupy.cuda.device")
        device_mod.get_cublas_handle = lambda: 11
        device_mod.get_cusolver_handle = lambda: 22
        cuda_mod = types.ModuleType("cupy.cuda")
        cuda_mod.device = device_mod
        cuda_mod.runtime = runtime
        cuda_mod.get_current_stream = cp.cuda.get_current_stream
        memory_mod = types.ModuleType("cupy.cuda.memory")
        memory_mod.OutOfMemoryError = _FakeOutOfMemoryError
        cuda_mod.memory = memory_mod
        self.allocator = None
        cuda_mod.set_allocator = lambda f: setattr(self, "allocator", f)
        cp.cuda = cuda_mod

        cb = types.ModuleType("cupy_backends.cuda.libs.cublas")
        cb.CUBLAS_FILL_MODE_LOWER, cb.CUBLAS_FILL_MODE_UPPER = _LOWER, _UPPER
        cb.CUBLAS_SIDE_LEFT, cb.CUBLAS_SIDE_RIGHT = _LEFT, _RIGHT
        cb.CUBLAS_OP_N, cb.CUBLAS_OP_T = _OP_N, _OP_T
        cb.CUBLAS_DIAG_NON_UNIT, cb.CUBLAS_DIAG_UNIT = 0, 1
        cb.CUBLAS_POINTER_MODE_HOST, cb.CUBLAS_POINTER_MODE_DEVICE = _HOST, _DEVICE
        cb.CUBLAS_DEFAULT_MATH = _DEFAULT_MATH
        cb.setStream = self._cublas_set_stream
        cb.getPointerMode = lambda h: self.handle["pointer"]
        cb.setPointerMode = lambda h, m: self.handle.__setitem__("pointer", m)
        cb.getMathMode = lambda h: self.handle["math"]
        cb.setMathMode = lambda h, m: self.handle.__setitem__("math", m)
        for ch, dt in (("d", np.float64), ("s", np.float32)):
            setattr(cb, ch + "trsm", self._trsm(dt))
            setattr(cb, ch + "syrk", self._syrk(dt))
            setattr(cb, ch + "gemm", self._gemm(dt))

        cs = types.ModuleType("cupy_backends.cuda.libs.cusolver")
        cs.setStream = lambda h, s: setattr(self, "solver_stream", (h, s))
        for ch, dt in (("d", np.float64), ("s", np.float32)):
            setattr(cs, ch + "potrf_bufferSize", lambda h, uplo, n, a, lda: 3)
            setattr(cs, ch + "potrf", self._potrf(dt))

        libs = types.ModuleType("cupy_backends.cuda.libs")
        libs.cublas, libs.cusolver = cb, cs
        self.modules = {
            "cupy": cp, "cupy.cuda": cuda_mod, "cupy.cuda.device": device_mod,
            "cupy.cuda.memory": memory_mod,
            "cupy_backends": types.ModuleType("cupy_backends"),
            "cupy_backends.cuda": types.ModuleType("cupy_backends.cuda"),
            "cupy_backends.cuda.libs": libs,
            "cupy_backends.cuda.libs.cublas": cb, "cupy_backends.cuda.libs.cusolver": cs}

    # -- CuPy's ElementwiseKernel, for the two fused finishes kernelfit defines --
    def _elementwise_kernel(self, in_params, out_params, body, name):
        assert (in_params, out_params) == ("float64 a, float64 b, float64 scale", "float64 s")
        assert body == backend.FUSED_FINISH[name.split("_")[1]]
        sqrt = "sqrt(d)" in body

        def run(a, b, scale, s):  # the C body, line by line, in NumPy
            d = np.maximum(a + b - 2.0 * s, 0.0)
            s[...] = np.exp((np.sqrt(d) if sqrt else d) * scale)
            self.finishes.append(name)
        return run

    # -- cuBLAS semantics (column-major, host scalars) --
    def _blas_entry(self, h, name):
        assert h == 11
        assert self.handle["pointer"] == _HOST, f"{name} called with device pointer mode"
        assert self.handle["math"] == _DEFAULT_MATH, f"{name} called with TF32 math mode"
        assert self.handle["stream"] == self.stream, f"{name} not on the current stream"
        self.calls.append(name)

    def _cublas_set_stream(self, h, s):
        self.handle["stream"] = s

    def _trsm(self, dt):
        def trsm(h, side, uplo, trans, diag, m, n, alpha, A, lda, B, ldb):
            self._blas_entry(h, "trsm")
            k = m if side == _LEFT else n
            T = _mat(A, k, k, lda, dt).astype(np.float64)
            T = np.tril(T) if uplo == _LOWER else np.triu(T)
            op = T.T if trans == _OP_T else T
            Bm = _mat(B, m, n, ldb, dt)
            a = _scalar(alpha, dt)
            if side == _LEFT:
                X = solve_triangular(op, a * Bm, lower=np.allclose(op, np.tril(op)))
            else:  # X op = a B  <=>  op^T X^T = a B^T
                X = solve_triangular(op.T, a * Bm.T, lower=np.allclose(op.T, np.tril(op.T))).T
            Bm[...] = X
        return trsm

    def _syrk(self, dt):
        def syrk(h, uplo, trans, n, k, alpha, A, lda, beta, C, ldc):
            self._blas_entry(h, "syrk")
            Am = _mat(A, n, k, lda, dt) if trans == _OP_N else _mat(A, k, n, lda, dt).T
            Cm = _mat(C, n, n, ldc, dt)
            full = _scalar(alpha, dt) * (Am @ Am.T) + _scalar(beta, dt) * Cm
            mask = np.tril(np.ones((n, n), bool)) if uplo == _LOWER else np.triu(np.ones((n, n), bool))
            Cm[mask] = full[mask]  # the other triangle is not referenced
        return syrk

    def _gemm(self, dt):
        def gemm(h, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc):
            self._blas_entry(h, "gemm")
            opA = _mat(A, m, k, lda, dt) if ta == _OP_N else _mat(A, k, m, lda, dt).T
            opB = _mat(B, k, n, ldb, dt) if tb == _OP_N else _mat(B, n, k, ldb, dt).T
            Cm = _mat(C, m, n, ldc, dt)
            Cm[...] = _scalar(alpha, dt) * (opA @ opB) + _scalar(beta, dt) * Cm
        return gemm

    def _potrf(self, dt):
        def potrf(h, uplo, n, A, lda, work, lwork, info):
            assert h == 22 and uplo == _LOWER and lwork == 3
            assert self.solver_stream == (22, self.stream)
            self.calls.append("potrf")
            Am = _mat(A, n, n, lda, dt)
            from scipy.linalg import lapack

            c, code = (lapack.dpotrf if dt == np.float64 else lapack.spotrf)(
                np.array(Am, order="F"), lower=1, clean=0)
            Am[...] = c
            _mat(info, 1, 1, 1, np.int32)[0, 0] = code
        return potrf


@pytest.fixture
def fake_gpu(monkeypatch, fresh_backends):
    fake = _FakeCuda()
    for name, mod in fake.modules.items():
        monkeypatch.setitem(sys.modules, name, mod)
    fake.stream = 4242  # a non-default current stream: calls must follow it
    return fake, GPUBackend()


@pytest.mark.parametrize("n,tile", [(5, 5), (37, 8), (64, 20)])
def test_gpu_backend_calls_match_blas_semantics(fake_gpu, n, tile):
    fake, be = fake_gpu
    A = _spd(n, seed=n)
    B = np.random.default_rng(n).standard_normal((n, 2))
    T = TiledSymmetric.from_dense(A, tile, backend=be)
    ptrs = [[t.data.ptr for t in row] for row in T.tiles]
    cholesky_inplace(T)
    assert ptrs == [[t.data.ptr for t in row] for row in T.tiles]
    np.testing.assert_allclose(T.to_dense(lower_only=True), np.linalg.cholesky(A),
                               rtol=1e-10, atol=1e-12)
    X = cholesky_solve(T, be.asarray(B))
    np.testing.assert_allclose(np.asarray(X), np.linalg.solve(A, B), rtol=1e-10, atol=1e-12)
    assert "potrf" in fake.calls and "trsm" in fake.calls
    if T.n_tiles > 1:
        assert "syrk" in fake.calls and "gemm" in fake.calls
    # the handle's own modes come back as they were
    assert fake.handle["pointer"] == _DEVICE and fake.handle["math"] == _TF32_MATH


def test_gpu_backend_float32_and_rectangular_tiles(fake_gpu):
    fake, be = fake_gpu
    rng = np.random.default_rng(5)
    L = np.linalg.cholesky(_spd(6)).astype(np.float32)
    b = be.asarray(np.asfortranarray(rng.standard_normal((4, 6)).astype(np.float32)))
    b0 = np.array(b, dtype=np.float64)
    be.trsm_rlt(be.asarray(np.asfortranarray(L)), b)
    np.testing.assert_allclose(np.asarray(b), b0 @ np.linalg.inv(L.astype(np.float64)).T,
                               rtol=1e-4, atol=1e-5)
    a = be.asarray(np.asfortranarray(rng.standard_normal((4, 3))))
    p = be.asarray(np.asfortranarray(rng.standard_normal((5, 3))))
    c = be.asarray(np.asfortranarray(rng.standard_normal((4, 5))))
    c0 = np.array(c)
    be.gemm_nt_sub(a, p, c)
    np.testing.assert_allclose(np.asarray(c), c0 - np.asarray(a) @ np.asarray(p).T, rtol=1e-12)
    y = be.asarray(np.asfortranarray(rng.standard_normal((3, 5))))
    y0 = np.array(y)
    be.gemm_acc(a, c, y, trans_a=True, alpha=-2.0)
    np.testing.assert_allclose(np.asarray(y), y0 - 2.0 * np.asarray(a).T @ np.asarray(c),
                               rtol=1e-12)


def test_gpu_backend_potrf_info_and_not_pd(fake_gpu):
    _fake, be = fake_gpu
    a = be.asarray(np.asfortranarray(np.diag([4.0, 1.0, -1.0])))
    assert be.potrf(a) == 3
    A = _spd(30)
    A[17, 17] = -5.0
    A[17, :17] = A[:17, 17] = 0.0
    T = TiledSymmetric.from_dense(A, 8, backend=be)
    with pytest.raises(NotPositiveDefiniteError) as info:
        cholesky_inplace(T)
    assert info.value.index == 17


def test_gpu_backend_refuses_bad_tiles(fake_gpu):
    _fake, be = fake_gpu
    c_order = be.asarray(np.ascontiguousarray(_spd(6)))
    with pytest.raises(InputError, match="Fortran"):
        be.potrf(c_order)
    with pytest.raises(InputError, match="CuPy arrays"):
        be.potrf(np.asfortranarray(_spd(6)))
    f64 = be.asarray(np.asfortranarray(_spd(6)))
    f32 = be.asarray(np.asfortranarray(np.ones((2, 6), np.float32)))
    with pytest.raises(InputError, match="float"):
        be.trsm_rlt(f64, f32)
    with pytest.raises(InputError, match="shape"):
        be.syrk_sub(be.asarray(np.asfortranarray(np.ones((5, 2)))), f64)


# ----------------------------------------------------------------- host buffers
@pytest.mark.parametrize("shape,order", [((3, 5), "C"), ((1200, 1100), "F"),
                                         ((1100, 1200), "C"), (700_000, "C")])
def test_host_empty_gives_writable_arrays_of_the_asked_layout(shape, order, monkeypatch):
    monkeypatch.delenv("KERNELFIT_HUGEPAGES", raising=False)
    a = backend.host_empty(shape, np.float64, order)
    assert a.shape == (shape if isinstance(shape, tuple) else (shape,))
    assert a.dtype == np.float64 and a.flags.writeable
    assert a.flags.f_contiguous if order == "F" else a.flags.c_contiguous
    a[...] = 2.0
    assert float(a.sum()) == 2.0 * a.size
    big = a.nbytes >= backend._HOST_MAP_MIN_BYTES
    # large buffers are their own mapping (no transparent huge pages), small ones NumPy's
    root = a
    while isinstance(root, np.ndarray) and root.base is not None:
        root = root.base
    if isinstance(root, memoryview):
        root = root.obj
    assert (type(root).__name__ == "mmap") == (big and sys.platform.startswith("linux"))


def test_host_empty_hugepages_setting(monkeypatch):
    monkeypatch.setenv("KERNELFIT_HUGEPAGES", "1")
    a = backend.host_empty((1200, 1100))
    assert a.base is None  # plain NumPy allocation
    monkeypatch.setenv("KERNELFIT_HUGEPAGES", "maybe")
    with pytest.raises(InputError, match="KERNELFIT_HUGEPAGES"):
        backend.host_empty((1200, 1100))
    assert CPUBackend().empty((2, 2), np.float32).dtype == np.float32


def test_symm_upper_reads_only_the_upper_triangle():
    rng = np.random.default_rng(0)
    S = rng.standard_normal((40, 40))
    S = S + S.T
    A = np.asfortranarray(np.triu(S) + np.tril(rng.standard_normal((40, 40)), -1))
    B = rng.standard_normal((40, 3))
    for be in (CPUBackend(), _GenericBackend()):
        np.testing.assert_allclose(be.symm_upper(A, np.asfortranarray(B)), S @ B, rtol=1e-12,
                                   atol=1e-12)


class _GenericBackend(CPUBackend):
    """The CPU backend with the base class's generic (copying) products."""

    symm_upper = backend.Backend.symm_upper
    trmm_lower = backend.Backend.trmm_lower


def test_backend_is_an_abstract_contract():
    with pytest.raises(TypeError):
        backend.Backend()
    declared = {"potrf", "trsm_rlt", "trsm_left", "syrk_sub", "gemm_nt_sub", "gemm_acc",
                "to_numpy", "is_backend_array", "free_memory"}
    assert declared <= backend.Backend.__abstractmethods__
    for cls in (CPUBackend, GPUBackend):
        assert not cls.__abstractmethods__


# ------------------------------------------------------------ the namespace query
class _Strict:
    """A device array as strict as CuPy's: no implicit conversion to NumPy."""

    def __init__(self, a):
        self.a = np.asarray(a)
        self.shape, self.ndim, self.dtype = self.a.shape, self.a.ndim, self.a.dtype

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed")

    def __getitem__(self, key):
        return _Strict(self.a[key.a if isinstance(key, _Strict) else key])

    def __len__(self):
        return len(self.a)

    def get(self):
        return self.a.copy()


@pytest.fixture
def strict_cupy(monkeypatch):
    cp = types.ModuleType("cupy")
    cp.ndarray = _Strict
    cp.asarray = lambda x, dtype=None: x if isinstance(x, _Strict) else _Strict(
        np.asarray(x, dtype=dtype))
    cp.asnumpy = lambda x: x.get()
    monkeypatch.setitem(sys.modules, "cupy", cp)
    return cp


def test_array_namespace_and_transfers(strict_cupy):
    x = np.arange(6.0).reshape(2, 3)
    d = _Strict(x)
    assert backend.array_namespace(x) is np and backend.array_namespace([1, 2]) is np
    assert backend.array_namespace(d) is strict_cupy
    assert backend.array_namespace(None, d) is strict_cupy
    with pytest.raises(InputError, match="mixed"):
        backend.array_namespace(x, d)
    h = backend.to_host(d, dtype=np.float32)
    assert type(h) is np.ndarray and h.dtype == np.float32
    np.testing.assert_array_equal(h, x)
    assert backend.to_device(d, "cpu").__class__ is np.ndarray


def test_median_bandwidth_accepts_device_arrays(strict_cupy):
    """Issue 16 item 2: np.asarray on a CuPy X raised TypeError in the median heuristic."""
    from kernelfit.kernels import median_distance

    X = np.random.default_rng(0).standard_normal((300, 4))
    assert median_distance(_Strict(X), sample=100) == median_distance(X, sample=100)


def test_estimator_accepts_device_targets(strict_cupy):
    """Issue 16 item 2: np.asarray on CuPy targets y raised TypeError in fit."""
    from kernelfit.estimator import KernelInterpolator

    X = np.random.default_rng(1).standard_normal((40, 3))
    y = (X[:, 0] > 0).astype(int)
    got = KernelInterpolator(kernel="gaussian", bandwidth=1.0, device="cpu").fit(X, _Strict(y))
    ref = KernelInterpolator(kernel="gaussian", bandwidth=1.0, device="cpu").fit(X, y)
    np.testing.assert_array_equal(got.predict(X), ref.predict(X))


def test_feature_input_accepts_device_arrays(strict_cupy):
    from kernelfit.features._common import check_array_2d

    X = np.random.default_rng(2).standard_normal((5, 4))
    np.testing.assert_array_equal(check_array_2d(_Strict(X), who="t"), X)


# ------------------------------------------------------------ the fake's honesty
def _real_binding_names():
    data = json.loads((Path(__file__).parent / "data" / "cupy_bindings.json").read_text())
    mods = {}
    for per in data["wheels"].values():
        for mod, names in per.items():
            mods[mod] = set(names) if mod not in mods else mods[mod] & set(names)
    return mods


def _offered(module):
    return {k for k in vars(module) if not k.startswith("_")}


def test_emulation_is_not_more_permissive_than_real_cupy():
    """Issue 16 item 4: every name the fake offers exists in CuPy 13.6 and 14.2's bindings."""
    fake = _FakeCuda()
    real = _real_binding_names()
    for mod in ("cupy_backends.cuda.libs.cublas", "cupy_backends.cuda.libs.cusolver",
                "cupy.cuda.device"):
        extra = _offered(fake.modules[mod]) - real[mod]
        assert not extra, f"the emulated {mod} offers names real CuPy lacks: {sorted(extra)}"
    assert "CUBLAS_TF32_TENSOR_OP_MATH" not in real["cupy_backends.cuda.libs.cublas"]


def test_emulation_matches_installed_cupy_when_present():
    try:
        import importlib

        mods = {m: importlib.import_module(m) for m in (
            "cupy_backends.cuda.libs.cublas", "cupy_backends.cuda.libs.cusolver",
            "cupy.cuda.device")}
    except Exception as exc:  # no CuPy, or no CUDA libraries behind it
        pytest.skip(f"CuPy's bindings do not import here ({type(exc).__name__})")
    fake = _FakeCuda()
    for name, mod in mods.items():
        extra = _offered(fake.modules[name]) - set(dir(mod))
        assert not extra, f"{name} lacks {sorted(extra)}"


# ------------------------------------------------------------ availability probe
def _install(monkeypatch, fake):
    for name, mod in fake.modules.items():
        monkeypatch.setitem(sys.modules, name, mod)


def _broken_cublas(fake):
    fake.modules["cupy_backends.cuda.libs.cublas"] = None  # import fails, as without libs
    del fake.modules["cupy_backends.cuda.libs"].cublas


def _broken_handle(fake):
    def fail():
        raise RuntimeError("Failure finding libcublasLt.so.13: not found\nmore detail")
    fake.modules["cupy.cuda.device"].get_cublas_handle = fail


@pytest.mark.parametrize("breakage", [_broken_cublas, _broken_handle])
def test_probe_runs_the_libraries_kernelfit_calls(monkeypatch, fresh_backends, breakage):
    """Issue 16 item 1: `import cupy` working is not enough; cuBLAS must load."""
    fake = _FakeCuda()
    breakage(fake)
    _install(monkeypatch, fake)
    assert backend.gpu_available() is False
    reason = backend.gpu_unavailable_reason()
    assert "cuBLAS" in reason and "cupy-cuda12x[ctk]" in reason and "cupy-cuda13x[ctk]" in reason
    assert "\n" not in reason
    with pytest.raises(BackendUnavailableError, match="cuBLAS"):
        get_backend("gpu")
    with pytest.warns(backend.DeviceFallbackWarning, match="running on the CPU.*cuBLAS"):
        assert get_backend("auto").device == "cpu"
    with warnings.catch_warnings():  # said once, not on every call
        warnings.simplefilter("error")
        assert get_backend("auto").device == "cpu"


def test_probe_accepts_a_working_gpu(monkeypatch, fresh_backends):
    fake = _FakeCuda()
    _install(monkeypatch, fake)
    assert backend.gpu_available() is True and backend.gpu_unavailable_reason() is None
    assert get_backend("auto").device == "gpu"
    assert {"potrf", "trsm", "gemm"} <= set(fake.calls)


def test_probe_refuses_wrong_numbers(monkeypatch, fresh_backends):
    fake = _FakeCuda()
    good = fake.modules["cupy_backends.cuda.libs.cublas"].dgemm

    def bad_gemm(h, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc):
        good(h, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc)
        _mat(C, m, n, ldc, np.float64)[0, 0] += 1.0
    fake.modules["cupy_backends.cuda.libs.cublas"].dgemm = bad_gemm
    _install(monkeypatch, fake)
    assert backend.gpu_available() is False
    assert "self-test" in backend.gpu_unavailable_reason()


def test_cli_device_gpu_with_missing_cuda_libraries_is_one_line(monkeypatch, fresh_backends,
                                                                 capsys):
    fake = _FakeCuda()
    _broken_handle(fake)
    _install(monkeypatch, fake)
    from kernelfit.cli import main

    code = main(["solve", "--dataset", "mnist", "--n-train", "10", "--device", "gpu",
                 "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1, err
    assert "cuBLAS" in err and "cupy-cuda12x[ctk]" in err and "Traceback" not in err


def test_cli_auto_falls_back_and_says_so_in_one_line(monkeypatch, fresh_backends, capsys):
    fake = _FakeCuda()
    _broken_cublas(fake)
    _install(monkeypatch, fake)
    from kernelfit.cli import main

    main(["solve", "--dataset", "digits", "--n-train", "60", "--n-test", "20",
          "--device", "auto", "--no-progress"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if "GPU" in ln]
    assert len(err) == 1 and "warning" in err[0] and "running on the CPU" in err[0], err


# ------------------------------------------------------------ GPU out of memory
def test_gpu_out_of_memory_is_a_memory_error_with_figures(fake_gpu):
    fake, be = fake_gpu
    oom = sys.modules["cupy"].cuda.memory

    def refuse(*a, **k):
        raise oom.OutOfMemoryError(8 << 30, 0)
    sys.modules["cupy"].empty = refuse
    fake.free_bytes = 3 << 30
    with pytest.raises(MemoryPlanError) as info:
        be.empty_tile(32768, 32768, np.float64)
    msg = str(info.value)
    assert "8.00 GiB" in msg and "3.00 GiB free" in msg and "out-of-core" in msg
    assert info.value.required_bytes == 8 << 30 and info.value.available_bytes == 3 << 30
    assert "--" not in msg  # the library speaks in data; the CLI names flags


def test_every_gpu_allocation_reports_out_of_memory_with_figures(fake_gpu, monkeypatch):
    """Any CuPy allocation of a solve (temporaries too) goes through kernelfit's allocator."""
    fake, be = fake_gpu
    assert fake.allocator is not None
    oom = sys.modules["cupy"].cuda.memory.OutOfMemoryError

    def refuse(nbytes):
        raise oom(nbytes, 0)
    pool = sys.modules["cupy"].get_default_memory_pool()
    monkeypatch.setattr(pool, "malloc", refuse, raising=False)
    fake.free_bytes = 1 << 30
    with pytest.raises(MemoryPlanError, match=r"2\.00 GiB.*1\.00 GiB free") as info:
        fake.allocator(2 << 30)
    assert isinstance(info.value, oom)  # code catching CuPy's error still catches it
    assert info.value.required_bytes == 2 << 30


# ------------------------------------------------------------ dense / tiles rule
def test_dense_single_call_rule():
    free = 140 << 30
    assert backend.dense_single_call(40_000, 8, free)[0]
    assert backend.gpu_tile_size.__module__ == "kernelfit.backend"
    assert not backend.dense_single_call(46_341, 8, free)[0]  # n^2 > 2^31 - 1
    assert backend.dense_single_call(46_340, 8, free)[0]
    assert not backend.dense_single_call(60_000, 8, free)[0]
    assert not backend.dense_single_call(40_000, 8, 40 << 30)[0]  # no room to spare
    assert not backend.dense_single_call(1000, 8, None)[0]  # memory unknown: tiles
    from kernelfit.backend._rules import gpu_tile_size as rule
    assert rule(40_000, 8, free) == 40_000
    ts = rule(60_000, 8, free)
    assert ts <= backend.GPU_TILE and ts * ts <= backend.LEGACY_MAX_ELEMENTS


def test_gpu_default_tile_size_follows_the_rule(fake_gpu, monkeypatch):
    from kernelfit.solvers.tiles import default_tile_size

    fake, be = fake_gpu
    monkeypatch.setattr(backend._cache, "gpu", be)
    fake.free_bytes = 140 << 30
    assert default_tile_size(30_000, "gpu") == 30_000
    assert default_tile_size(60_000, "gpu") <= backend.GPU_TILE
    fake.free_bytes = 1 << 30
    assert default_tile_size(30_000, "gpu") <= backend.GPU_TILE


def test_dense_single_call_factor_and_solve(fake_gpu):
    """One tile = the whole matrix: one potrf, one trsm per triangular solve."""
    fake, be = fake_gpu
    A = _spd(50, seed=4)
    B = np.random.default_rng(4).standard_normal((50, 2))
    T = TiledSymmetric.from_dense(A, 50, backend=be)
    cholesky_inplace(T)
    assert fake.calls == ["potrf"]
    X = cholesky_solve(T, be.asarray(B))
    assert fake.calls == ["potrf", "trsm", "trsm"]
    np.testing.assert_allclose(np.asarray(X), np.linalg.solve(A, B), rtol=1e-10)


# ------------------------------------------------------------ fused finish, devInfo
@pytest.mark.parametrize("name,params", [("gaussian", {"bandwidth": 1.5}),
                                         ("laplacian", {"bandwidth": 2.0})])
def test_fused_finish_matches_the_generic_chain(fake_gpu, monkeypatch, name, params):
    from kernelfit.kernels import get_kernel

    fake, be = fake_gpu
    monkeypatch.setattr(backend._cache, "gpu", be)
    rng = np.random.default_rng(3)
    X, Z = rng.standard_normal((30, 5)), rng.standard_normal((20, 5))
    k = get_kernel(name, **params)
    ref = k.block(X, Z)
    got = k.block(be.asarray(X), be.asarray(Z))
    assert fake.finishes == [f"kernelfit_{name}_finish"]
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-13, atol=1e-15)
    monkeypatch.setenv("KERNELFIT_FUSED_FINISH", "0")
    np.testing.assert_allclose(np.asarray(k.block(be.asarray(X), be.asarray(Z))), ref,
                               rtol=1e-13, atol=1e-15)
    assert len(fake.finishes) == 1  # switched off: the generic chain ran


def test_potrf_devinfo_can_be_read_once_per_factorization(fake_gpu):
    _fake, be = fake_gpu
    good = be.asarray(np.asfortranarray(np.diag([4.0, 9.0])))
    bad = be.asarray(np.asfortranarray(np.diag([1.0, -1.0, 2.0])))
    assert be.potrf(good, defer=0) == 0 and be.potrf(bad, defer=1) == 0
    assert be.pending_info() == [(0, 0), (1, 2)]
    assert be.pending_info() == []


# ------------------------------------------------------------ mixed precision plan
def test_plan_mixed_reserves_one_tile_buffer_set_on_the_gpu(monkeypatch):
    """Issue 16 item 3: (CPU threads + 2) GPU tile buffers were reserved, never used."""
    from kernelfit.solvers import plan

    monkeypatch.setattr(plan, "n_threads_default", lambda: 16)
    gpu = plan.plan_mixed(60_000, 784, 10, 8192, device="gpu")
    cpu = plan.plan_mixed(60_000, 784, 10, 8192, device="cpu")
    assert gpu.items["tile buffers"] == 3 * 8.0 * 8192 ** 2
    assert cpu.items["tile buffers"] == 18 * 8.0 * 8192 ** 2


def test_gpu_suite_runs_on_the_emulation():
    """test_gpu.py's GPU cases, run against the host emulation of CuPy (so CI exercises the
    GPU code paths: tiles, dense call, mixed precision, out-of-core, feature maps)."""
    import os

    env = dict(os.environ, KERNELFIT_TEST_EMULATED_GPU="1")
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-k", "gpu", str(Path(__file__).parent / "test_gpu.py")],
                         capture_output=True, text=True, timeout=600, env=env,
                         cwd=str(Path(__file__).parent.parent))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and "failed" not in out.stdout


def test_cuda_extras_pull_the_cuda_libraries():
    """Issue 16 item 1: CuPy 14 wheels bring cuBLAS/cuSOLVER only with their [ctk] extra."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    meta = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    extras = meta["project"]["optional-dependencies"]
    assert any(r.startswith("cupy-cuda12x[ctk]") for r in extras["cuda12"])
    assert any(r.startswith("cupy-cuda13x[ctk]") for r in extras["cuda13"])


def test_bench_gpu_warms_every_tile_operation_and_keeps_the_pool(fake_gpu, monkeypatch,
                                                                  tmp_path):
    """Issue 16 item 5: the warm-up ran one tile (trsm/syrk/gemm first ran inside the timed
    factorization) and the pool was freed right before the timed run."""
    import importlib.util

    from kernelfit.estimator import KernelInterpolator

    fake, be = fake_gpu
    monkeypatch.setattr(backend._cache, "gpu", be)
    spec = importlib.util.spec_from_file_location(
        "bench_gpu", Path(__file__).parent.parent / "benchmarks" / "bench_gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    events = []
    real_fit = KernelInterpolator.fit

    def fit(self, X, y):
        events.append(("fit", X.shape[0], set(fake.calls)))
        return real_fit(self, X, y)
    monkeypatch.setattr(KernelInterpolator, "fit", fit)
    pool = types.SimpleNamespace(free_bytes=lambda: 0, total_bytes=lambda: 0,
                                 used_bytes=lambda: 0,
                                 free_all_blocks=lambda: events.append(("free",)))
    monkeypatch.setattr(sys.modules["cupy"], "get_default_memory_pool", lambda: pool)
    code = bench.main(["--dataset", "digits", "--n", "240", "--n-test", "40", "--warmup-n",
                       "90", "--kernels", "gaussian", "--skip-cpu", "--repeats", "2",
                       "--out", str(tmp_path / "r.json")])
    assert code == 0
    timed = [i for i, e in enumerate(events) if e[0] == "fit" and e[1] == 240]
    assert len(timed) == 2
    first = timed[0]
    assert {"potrf", "trsm", "syrk", "gemm"} <= events[first][2]  # all warmed before timing
    assert events[first - 1][0] != "free" and ("free",) not in events[timed[0]:]
    rec = json.loads((tmp_path / "r.json").read_text())
    assert len(rec["runs"]["gaussian"]["gpu_repeats"]) == 2


def test_blas_one_thread_limits_and_restores_with_one_scan(monkeypatch):
    """BlasOneThread limits every loaded BLAS to one thread and restores it; the library
    scan is reused while no module is imported, made again after an import."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from kernelfit.backend import _host

    def blas_threads():
        return [p["num_threads"] for p in threadpoolctl.threadpool_info()
                if p["user_api"] == "blas"]

    before = blas_threads()
    if not before:
        pytest.skip("no BLAS that threadpoolctl sees")
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        with _host.BlasOneThread(True):
            assert set(blas_threads()) == {1}
            first = _host._CONTROLLER[1]
        assert set(blas_threads()) == {2}
        with _host.BlasOneThread(True):
            assert _host._CONTROLLER[1] is first
        monkeypatch.setitem(sys.modules, "kernelfit_test_fake_module", types.ModuleType("x"))
        with _host.BlasOneThread(True):
            assert _host._CONTROLLER[1] is not first and set(blas_threads()) == {1}
        with _host.BlasOneThread(False):
            assert set(blas_threads()) == {2}
    assert blas_threads() == before


def test_bench_gpu_runs_pay_the_first_solve_untimed_on_a_slice(fake_gpu, monkeypatch):
    """A fresh process's first GPU solve pays one-off costs (on an H200 the first of two
    runs at n = 5,000 took 8.9 s, the second 0.21 s): `kernelfit bench` pays them on a
    slice before the timed repeats, and records that time."""
    from kernelfit.bench import runner

    _fake, be = fake_gpu
    monkeypatch.setattr(backend._cache, "gpu", be)
    monkeypatch.setattr(runner, "GPU_WARMUP_ROWS", 64)
    sizes = []
    real = runner._REPEATERS["kernelfit"]

    def counting(opts, kernel, X, *a, **k):
        sizes.append(X.shape[0])
        return real(opts, kernel, X, *a, **k)
    monkeypatch.setitem(runner._REPEATERS, "kernelfit", counting)
    res = runner.run_solve_task({"task": "solve", "impl": "kernelfit", "device": "gpu",
                                 "n": 150, "n_test": 40, "d": 20, "repeats": 2})
    assert sizes == [64, 150, 150] and len(res["repeats"]) == 2
    assert res["warmup_s"] > 0
    cpu = runner.run_solve_task({"task": "solve", "impl": "kernelfit", "device": "cpu",
                                 "n": 150, "n_test": 40, "d": 20, "repeats": 1})
    assert cpu["warmup_s"] is None and sizes[3:] == [150]


def test_blas_info_names_numpys_blas_whatever_the_load_order(monkeypatch):
    import threadpoolctl

    from kernelfit.backend._host import blas_info

    pools = [{"user_api": "blas", "internal_api": "openblas", "version": "0.3.30",
              "filepath": "/x/scipy.libs/libscipy_openblas.so"},
             {"user_api": "blas", "internal_api": "openblas", "version": "0.3.31",
              "filepath": "/x/numpy.libs/libscipy_openblas64_.so"}]
    for order in (pools, pools[::-1]):
        monkeypatch.setattr(threadpoolctl, "threadpool_info", lambda o=order: list(o))
        assert blas_info()["version"] == "0.3.31"
