"""The backend contract: every array and tile operation the solvers call.

A backend owns one array module (``xp``: NumPy or CuPy) and the in-place dense kernels of a
blocked Cholesky factorization on Fortran-ordered (column-major) tiles, lower-triangular
convention: ``potrf``, ``trsm_rlt``, ``trsm_left``, ``syrk_sub``, ``gemm_nt_sub``,
``gemm_acc``, plus the products ``trmm_lower`` / ``symm_upper``, transfers and memory
queries. The solvers are written once against this interface.
"""

from __future__ import annotations

import abc
import contextlib
from typing import Any

import numpy as np

__all__ = ["Backend"]


class Backend(abc.ABC):
    """Common interface of the CPU and GPU backends (abstract: use :func:`get_backend`)."""

    name: str = "abstract"
    device: str = "cpu"
    xp: Any = np

    # ---- arrays and transfers ----------------------------------------------
    def asarray(self, x, dtype=None):
        """``x`` on this backend's device (a copy only when it lives elsewhere)."""
        return self.xp.asarray(x, dtype=dtype)

    @abc.abstractmethod
    def to_numpy(self, x) -> np.ndarray:
        """``x`` as a NumPy array on the host (copied back from a device)."""

    def empty(self, shape, dtype=np.float64, order: str = "C") -> Any:
        """An uninitialised array on this backend (large one-shot buffers: tiles, blocks)."""
        return self.xp.empty(shape, dtype=dtype, order=order)

    def empty_tile(self, rows: int, cols: int, dtype) -> Any:
        """An uninitialised Fortran-ordered tile (what the tile kernels update in place)."""
        return self.empty((rows, cols), dtype=dtype, order="F")

    @abc.abstractmethod
    def is_backend_array(self, x) -> bool:
        """True when ``x`` is this backend's own array type."""

    # ---- synchronization and memory ------------------------------------------
    def synchronize(self) -> None:
        """Wait for queued device work (no-op on the CPU)."""
        return None

    def free_pool(self) -> None:
        """Return cached device memory (no-op on the CPU)."""
        return None

    def gil_free_tile_kernels(self):
        """Tile kernels several threads may run at once (the CPU's; None elsewhere: a GPU
        is parallel within one call)."""
        return None

    @abc.abstractmethod
    def free_memory(self, reserve: int = 0) -> int:
        """Bytes a new allocation on this backend can use; ``reserve``: host bytes that
        arrays not made yet will take first (counted on the host's memory only)."""

    @contextlib.contextmanager
    def pool_kept(self):
        """Keep cached device memory across solves inside this block (no-op on the CPU)."""
        yield self

    def peak_memory(self) -> int | None:
        """Peak bytes held since :meth:`reset_peak` (None where not measured)."""
        return None

    def reset_peak(self) -> None:
        """Start a new peak measurement (benchmarks)."""
        return None

    def memory_stats(self) -> dict:
        return {}

    def describe(self) -> dict:
        return {"device": self.device, "backend": self.name}

    # ---- tile kernels (in place, Fortran-ordered tiles, lower triangle) ------
    @abc.abstractmethod
    def potrf(self, a) -> int:
        """Cholesky of the square tile ``a`` in place (lower); LAPACK's info (0: success,
        ``i > 0``: the leading minor of order ``i`` is not positive definite)."""

    @abc.abstractmethod
    def trsm_rlt(self, l, b) -> None:
        """``b <- b @ inv(l).T`` with ``l`` lower triangular (the panel update)."""

    @abc.abstractmethod
    def trsm_left(self, l, b, trans: bool) -> None:
        """``b <- inv(l) @ b`` (or ``inv(l).T @ b``) with ``l`` lower triangular."""

    @abc.abstractmethod
    def syrk_sub(self, a, c) -> None:
        """``c <- c - a @ a.T`` on the lower triangle of ``c``."""

    @abc.abstractmethod
    def gemm_nt_sub(self, a, b, c) -> None:
        """``c <- c - a @ b.T``."""

    @abc.abstractmethod
    def gemm_acc(self, a, b, c, trans_a: bool = False, alpha: float = 1.0) -> None:
        """``c <- c + alpha * op(a) @ b`` with ``op`` the transpose when ``trans_a``."""

    # ---- products with a triangle (generic versions; one tile copy) ----------
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

    # ---- kernel tile finish (fused on the GPU) --------------------------------
    def fused_finish(self, kernel_name: str):
        """A fused element-wise finish for ``kernel_name`` tiles, or None (the generic
        chain of in-place NumPy/CuPy operations in :mod:`kernelfit.kernels` is used)."""
        return None
