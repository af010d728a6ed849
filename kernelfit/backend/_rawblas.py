"""The tiled Cholesky's four tile kernels called without the GIL (CPU only).

SciPy's wrappers (``scipy.linalg.blas``/``lapack``) hold the GIL for the whole call, so two
Python threads cannot factor two tiles at once: each call then has to use every core
through the BLAS's own threads, and the small ones (potrf, trsm and syrk of one tile) do
that badly (2,500-row float32 tiles on 2 Zen 5 cores: the factorization at n = 20,000 ran
at 87% of the SGEMM peak that way, 93% with one operation per thread;
``benchmarks/results/factor_ops_zen5_tasks.json``). Here the same BLAS/LAPACK
routines, the very ones SciPy's wrappers call (its ``cython_blas``/``cython_lapack``
function pointers), are called through :mod:`ctypes`, which releases the GIL: a task
scheduler can then run one tile operation per core, each on one BLAS thread.

Every array must be a Fortran-ordered (column-major) float32 or float64 NumPy array of one
dtype; anything else is refused rather than copied (an in-place kernel must not write
into a copy).
"""

from __future__ import annotations

import ctypes
import functools
from typing import Optional

import numpy as np

from ..errors import InputError

__all__ = ["TileKernels", "tile_kernels"]

_P = ctypes.c_void_p


def _pointer(module, name: str) -> int:
    capsule = module.__pyx_capi__[name]
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_ptr = ctypes.pythonapi.PyCapsule_GetPointer
    get_ptr.restype, get_ptr.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return get_ptr(capsule, get_name(capsule))


class TileKernels:
    """potrf, trsm (right, lower, transposed), syrk (lower, minus) and GEMM (A B^T, minus)
    on Fortran tiles, in place, in float32 (``s``) or float64 (``d``), GIL released."""

    def __init__(self, fns: dict):
        self._fns = fns  # {('s' | 'd', name): ctypes function}

    def _fn(self, a, name: str):
        return self._fns[("s" if a.dtype == np.float32 else "d", name)]

    @staticmethod
    def _check(*arrays) -> None:
        dtype = arrays[0].dtype
        for a in arrays:
            if (not isinstance(a, np.ndarray) or a.dtype != dtype
                    or dtype not in (np.float32, np.float64) or a.ndim != 2
                    or not a.flags.f_contiguous or not a.flags.writeable):
                raise InputError("the GIL-free tile kernels take writeable Fortran-ordered "
                                 "float32 or float64 tiles of one dtype")

    @staticmethod
    def _scalar(a, value: float):
        return (ctypes.c_float if a.dtype == np.float32 else ctypes.c_double)(value)

    def potrf(self, a) -> int:
        """Cholesky of the square tile ``a`` in place (lower); LAPACK's info."""
        self._check(a)
        n, info = ctypes.c_int(a.shape[0]), ctypes.c_int(0)
        self._fn(a, "potrf")(ctypes.byref(ctypes.c_char(b"L")), ctypes.byref(n),
                             a.ctypes.data, ctypes.byref(ctypes.c_int(max(1, a.shape[0]))),
                             ctypes.byref(info))
        return int(info.value)

    def trsm_rlt(self, l, b) -> None:
        """``b <- b inv(L)^T`` in place (L: the lower triangle of ``l``)."""
        self._check(l, b)
        c = ctypes.c_char
        m, n = b.shape
        self._fn(b, "trsm")(ctypes.byref(c(b"R")), ctypes.byref(c(b"L")),
                            ctypes.byref(c(b"T")), ctypes.byref(c(b"N")),
                            ctypes.byref(ctypes.c_int(m)), ctypes.byref(ctypes.c_int(n)),
                            ctypes.byref(self._scalar(b, 1.0)), l.ctypes.data,
                            ctypes.byref(ctypes.c_int(max(1, l.shape[0]))), b.ctypes.data,
                            ctypes.byref(ctypes.c_int(max(1, m))))

    def syrk_sub(self, a, c) -> None:
        """``c <- c - a a^T`` on the lower triangle, in place."""
        self._check(a, c)
        ch = ctypes.c_char
        self._fn(c, "syrk")(ctypes.byref(ch(b"L")), ctypes.byref(ch(b"N")),
                            ctypes.byref(ctypes.c_int(c.shape[0])),
                            ctypes.byref(ctypes.c_int(a.shape[1])),
                            ctypes.byref(self._scalar(c, -1.0)), a.ctypes.data,
                            ctypes.byref(ctypes.c_int(max(1, a.shape[0]))),
                            ctypes.byref(self._scalar(c, 1.0)), c.ctypes.data,
                            ctypes.byref(ctypes.c_int(max(1, c.shape[0]))))

    def gemm_nt_sub(self, a, b, c) -> None:
        """``c <- c - a b^T`` in place."""
        self._check(a, b, c)
        ch = ctypes.c_char
        m, n = c.shape
        self._fn(c, "gemm")(ctypes.byref(ch(b"N")), ctypes.byref(ch(b"T")),
                            ctypes.byref(ctypes.c_int(m)), ctypes.byref(ctypes.c_int(n)),
                            ctypes.byref(ctypes.c_int(a.shape[1])),
                            ctypes.byref(self._scalar(c, -1.0)), a.ctypes.data,
                            ctypes.byref(ctypes.c_int(max(1, a.shape[0]))), b.ctypes.data,
                            ctypes.byref(ctypes.c_int(max(1, b.shape[0]))),
                            ctypes.byref(self._scalar(c, 1.0)), c.ctypes.data,
                            ctypes.byref(ctypes.c_int(max(1, m))))


@functools.lru_cache(maxsize=1)
def tile_kernels() -> Optional[TileKernels]:
    """The GIL-free tile kernels, or None where SciPy does not expose its BLAS/LAPACK
    function pointers (then the tiles go through SciPy's wrappers, one call at a time)."""
    try:
        from scipy.linalg import cython_blas, cython_lapack

        fns = {}
        for p in ("s", "d"):
            fns[(p, "potrf")] = ctypes.CFUNCTYPE(None, *[_P] * 5)(
                _pointer(cython_lapack, p + "potrf"))
            fns[(p, "trsm")] = ctypes.CFUNCTYPE(None, *[_P] * 11)(
                _pointer(cython_blas, p + "trsm"))
            fns[(p, "syrk")] = ctypes.CFUNCTYPE(None, *[_P] * 10)(
                _pointer(cython_blas, p + "syrk"))
            fns[(p, "gemm")] = ctypes.CFUNCTYPE(None, *[_P] * 13)(
                _pointer(cython_blas, p + "gemm"))
    except (ImportError, AttributeError, KeyError, ValueError, TypeError):
        return None
    return TileKernels(fns)
