"""The tiled building blocks under one name (kept for code that imports them from here).

They live in :mod:`kernelfit.solvers.tiles` (tile stores and the tile work loop),
:mod:`kernelfit.solvers.products` (Gram matrix and kernel products) and
:mod:`kernelfit.solvers.cholesky` (the tiled factorization and triangular solves).
"""

from .cholesky import (cholesky_inplace, cholesky_solve, estimate_condition,  # noqa: F401
                       factor_matvec)
from .machine import n_threads_default  # noqa: F401
from .products import (build_gram, cross_kernel_matmul, gram_tile, kept_copy_bytes,  # noqa: F401
                       kept_pairs, kernel_matvec, stored_kernel_matvec)
from .tiles import TiledSymmetric, default_tile_size, tile_bounds  # noqa: F401


__all__ = ["TiledSymmetric", "default_tile_size", "build_gram", "gram_tile", "cholesky_inplace",
           "cholesky_solve", "kernel_matvec", "cross_kernel_matmul", "n_threads_default",
           "stored_kernel_matvec", "kept_copy_bytes", "kept_pairs", "tile_bounds",
           "factor_matvec", "estimate_condition"]
