"""The CPU backend: NumPy arrays, SciPy's LAPACK/BLAS wrappers applied in place to tiles.

SciPy's wrappers silently copy an array whose layout or dtype does not match; the
helpers here detect that and write the result back, so the in-place update is never
silently lost.
"""

from __future__ import annotations

import functools

import numpy as np

from ..errors import InputError
from ._base import Backend
from ._host import available_host_memory, host_empty

__all__ = ["CPUBackend"]


class CPUBackend(Backend):
    """NumPy arrays, SciPy's LAPACK/BLAS wrappers applied in place to whole tiles."""

    name = "numpy"
    device = "cpu"
    xp = np

    def __init__(self):
        # resolve the LAPACK/BLAS wrappers now, so that importing SciPy's linear algebra
        # is not counted in the first factorization's time
        self._funcs("d")
        self._funcs("f")

    def empty(self, shape, dtype=np.float64, order: str = "C") -> np.ndarray:
        return host_empty(shape, dtype, order)

    def to_numpy(self, x) -> np.ndarray:
        return np.asarray(x)

    def is_backend_array(self, x) -> bool:
        return isinstance(x, np.ndarray)

    def free_memory(self, reserve: int = 0) -> int:
        return available_host_memory(reserve)

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

    def gil_free_tile_kernels(self):
        """The Cholesky's tile kernels callable from several threads at once (GIL released:
        :mod:`kernelfit.backend._rawblas`), or None where SciPy does not expose them."""
        from ._rawblas import tile_kernels

        return tile_kernels()

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
        out = self._f(b, "trsm")(1.0, l, b, side=1, lower=1, trans_a=1, overwrite_b=1)
        self._check_inplace(out, b, "trsm")

    def trsm_left(self, l, b, trans: bool) -> None:
        out = self._f(b, "trsm")(1.0, l, b, side=0, lower=1, trans_a=1 if trans else 0,
                                 overwrite_b=1)
        self._check_inplace(out, b, "trsm")

    def syrk_sub(self, a, c) -> None:
        out = self._f(c, "syrk")(-1.0, a, beta=1.0, c=c, trans=0, lower=1, overwrite_c=1)
        self._check_inplace(out, c, "syrk")

    def gemm_nt_sub(self, a, b, c) -> None:
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
        """``c += alpha * op(a) @ b`` in ``c``'s dtype, for a thin ``b`` (substitutions, K
        products with a few columns).

        Computed as the transpose of ``b^T op(a)^T`` by NumPy's matmul, for two reasons
        measured on OpenBLAS 0.3.30 (2 cores, AVX-512 Xeon), n = 3,334 tiles, 10-20 columns:
        NumPy releases the GIL where SciPy's BLAS wrappers hold it (so the tile threads of
        :func:`~kernelfit.solvers.tiles.run_tiles` really run at once; with SciPy they ran
        one after the other), and the transposed form takes OpenBLAS's fast path for a
        Fortran-ordered tile: 8-10 ms against 15-21 ms per float64 product on one core.
        """
        dt = c.dtype
        if dt.char not in ("d", "f"):
            raise InputError(f"tile kernels need float32 or float64 arrays, got {dt}")
        a = a if a.dtype == dt else a.astype(dt)
        b = b if b.dtype == dt else b.astype(dt)
        opa = a if trans_a else a.T  # op(a)^T
        if opa.shape[0] != b.shape[0] or c.shape != (opa.shape[1], b.shape[1]):
            raise InputError(f"gemm: op(a) {opa.shape[::-1]} x b {b.shape} does not give "
                             f"{c.shape}")
        prod = np.matmul(b.T, opa).T
        if alpha == 1.0:
            c += prod
        elif alpha == -1.0:
            c -= prod
        else:
            prod *= dt.type(alpha)
            c += prod
