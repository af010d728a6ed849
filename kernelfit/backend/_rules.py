"""The GPU path's dense/tiles rule (no CuPy needed: plain arithmetic on sizes).

Decision and references (issue 16, "a dense single-call GPU path"):

* The legacy cuSOLVER/cuBLAS entry points that CuPy binds (``cusolverDnDpotrf``,
  ``cublasDtrsm``, ...) take ``int`` sizes and leading dimensions. Past n * lda = 2^31
  elements 32-bit index arithmetic is not safe: cupy#9393 reports the legacy ``getrf``
  failing on a 50,000 x 50,000 float64 matrix on an H200 and asks CuPy to move to the
  64-bit "X" API; CuPy's own LU kernels overflow at 46,341; SciPy fixed a similar overflow
  in ``cholesky`` near n = 47,000.
* The 64-bit ``cusolverDnXpotrf`` has no CuPy binding: of the generic 64-bit API the
  compiled ``cupy_backends.cuda.libs.cusolver`` binds ``Xsyevd`` (13.6, 14.2) and
  ``Xgeev`` (14.2) only (see tests/data/cupy_bindings.json). nvmath-python
  binds it (``nvmath.bindings.cusolverDn.xpotrf``), and the 64-bit cuBLAS ``*_64`` calls
  (cupy#8539 points there), but it is not on the lent machine's image.

So: one in-place potrf on the whole matrix only below 2^31 elements (n <= 46,340) and when
it fits with room to spare; tiles of at most :data:`GPU_TILE` rows otherwise (MNIST
n = 60,000 runs on tiles). Whether the dense call is faster than the tiles at the same n
is measured by ``benchmarks/device_check.sh`` (step ``dense_vs_tiles``).
"""

from __future__ import annotations

import math

__all__ = ["LEGACY_MAX_ELEMENTS", "DENSE_MAX_FRACTION", "GPU_TILE", "dense_single_call",
           "gpu_tile_size"]

#: The legacy cuSOLVER/cuBLAS entry points (cusolverDnDpotrf, cublasDtrsm, ...) take ``int``
#: sizes and leading dimensions. Matrices with n * lda >= 2^31 elements are where 32-bit
#: index arithmetic overflows (cupy#9393: the legacy getrf fails on a 50,000 x 50,000
#: float64 matrix on an H200; CuPy's own LU kernels overflow at 46,341). CuPy has no binding
#: of the 64-bit cusolverDnXpotrf (checked in the 13.6 and 14.2 wheels), so every tile
#: and every dense matrix handed to these calls stays below this size.
LEGACY_MAX_ELEMENTS = 2 ** 31 - 1

#: A dense single-call factorization is used only when the whole matrix and one product
#: block of the same size take at most this fraction of the free device memory.
DENSE_MAX_FRACTION = 0.5

#: Tile edge of the tiled GPU path (n larger than the dense rule allows).
GPU_TILE = 8192


def dense_single_call(n: int, itemsize: int = 8, free_bytes=None) -> tuple:
    """The dense/tiles rule of the GPU path: ``(dense, reason)``.

    Dense (the whole n x n matrix is one tile: one in-place potrf, one trsm per solve)
    when both hold:

    1. ``n * n <= LEGACY_MAX_ELEMENTS``: the legacy 32-bit cuSOLVER/cuBLAS calls are safe
       (n <= 46,340; see :data:`LEGACY_MAX_ELEMENTS`);
    2. ``2 * n * n * itemsize <= DENSE_MAX_FRACTION * free_bytes``: the matrix and one
       product block of its size fit in half the free device memory.

    Otherwise tiles of about :data:`GPU_TILE` rows (lower tiles only: half the memory).
    ``free_bytes=None`` (device memory unknown) means tiles.
    """
    n = int(n)
    if n * n > LEGACY_MAX_ELEMENTS:
        return False, (f"n^2 = {n * n:,} elements reaches 2^31: the legacy 32-bit cuSOLVER "
                       "potrf is not safe there and CuPy has no 64-bit Xpotrf binding")
    if free_bytes is None:
        return False, "free device memory unknown"
    need = 2 * n * n * int(itemsize)
    if need > DENSE_MAX_FRACTION * free_bytes:
        return False, (f"the dense matrix and one product block ({need / 2**30:.1f} GiB) "
                       f"exceed {DENSE_MAX_FRACTION:.0%} of the free device memory "
                       f"({free_bytes / 2**30:.1f} GiB)")
    return True, "the whole matrix fits with room to spare and below 2^31 elements"


def gpu_tile_size(n: int, itemsize: int = 8, free_bytes=None) -> int:
    """Tile size of a GPU solve of n points: ``n`` (dense single call) by
    :func:`dense_single_call`, else tiles of at most :data:`GPU_TILE` rows of equal size."""
    n = max(int(n), 1)
    if dense_single_call(n, itemsize, free_bytes)[0] or n <= GPU_TILE:
        return n
    return int(math.ceil(n / math.ceil(n / GPU_TILE)))
