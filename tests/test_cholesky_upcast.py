"""Factor solves on the CPU in cache-sized blocks: a float32 factor applied in float64 (upcast)
or in float32, rows split over threads."""

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


@pytest.mark.parametrize("work", [np.float32, np.float64])
@pytest.mark.parametrize("n,tile", [(7, 3), (130, 64)])
def test_solve_leaves_the_right_hand_side_alone(n, tile, work):
    """A one-column B (or a one-row block) was split into views, not copies, and the
    in-place sweeps overwrote the caller's array."""
    T = TiledSymmetric.from_dense(_spd(n), tile, dtype=np.float32)
    chol.cholesky_inplace(T, show_progress=False)
    for B in (np.random.default_rng(2).standard_normal((n, 1)).astype(work),
              np.asfortranarray(np.random.default_rng(3).standard_normal((n, 3)), work)):
        before = B.copy()
        chol.cholesky_solve(T, B, work)
        np.testing.assert_array_equal(B, before)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n,tile,edge", [(300, 120, 32), (517, 200, 64), (90, 90, 64)])
def test_float32_solve_in_blocks_matches_the_tile_solve(monkeypatch, threads, n, tile, edge):
    """The float32 factor applied in float32 (the refinement's cheap preconditioner) by the
    cache-block sweeps gives the tile-by-tile substitution's answer to float32 rounding."""
    monkeypatch.setattr(chol, "n_threads_default", lambda: threads)
    monkeypatch.setattr(chol, "cache_block_edge", lambda: edge)
    A = _spd(n)
    T = TiledSymmetric.from_dense(A, tile, dtype=np.float32)
    chol.cholesky_inplace(T, show_progress=False)
    B = np.random.default_rng(1).standard_normal((n, 4)).astype(np.float32)
    got = chol.cholesky_solve(T, B, np.float32)
    assert got.dtype == np.float32
    blocks = [np.asfortranarray(B[s:e]) for s, e in T.bounds]
    want = np.concatenate(chol.substitute(chol.MemoryTileOps(T, np.float32), T.n_tiles,
                                          blocks))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    exact = np.linalg.solve(A, B.astype(np.float64))
    assert np.abs(got - exact).max() <= 1e-4 * np.abs(exact).max()
