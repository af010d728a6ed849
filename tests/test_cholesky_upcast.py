"""A float32 factor applied in float64: cache-sized upcast blocks, rows split over threads."""

import numpy as np
import pytest

import kernelfit.solvers.cholesky as chol
from kernelfit.solvers.tiles import TiledSymmetric


def _spd(n, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, n // 2 + 3))
    return A @ A.T + n * np.eye(n)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("n,tile,edge", [(300, 120, 64), (517, 200, 64), (90, 90, 64)])
def test_upcast_solve_is_the_float64_solve_of_the_float32_factor(monkeypatch, threads, n,
                                                                  tile, edge):
    monkeypatch.setattr(chol, "n_threads_default", lambda: threads)
    monkeypatch.setattr(chol, "cache_block_edge", lambda: edge)
    T = TiledSymmetric.from_dense(_spd(n), tile, dtype=np.float32)
    chol.cholesky_inplace(T, show_progress=False)
    L = np.tril(T.to_dense(lower_only=True).astype(np.float64))  # the float32 factor, exactly
    B = np.random.default_rng(1).standard_normal((n, 7))
    want = np.linalg.solve(L.T, np.linalg.solve(L, B))
    got = chol.cholesky_solve(T, B, np.float64)
    assert got.dtype == np.float64
    # float64 arithmetic on the float32 factor: agreement to float64 rounding, far below the
    # float32 rounding (~1e-7) that a solve in float32 would show
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-13)
