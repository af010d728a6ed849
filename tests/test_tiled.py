"""The blocked (tiled) Cholesky against LAPACK, in place, and its solves and products."""

import numpy as np
import pytest
from scipy.linalg import cho_factor, cho_solve
from hypothesis import given, settings, strategies as st

from kernelfit.errors import InputError, NotPositiveDefiniteError
from kernelfit.kernels import get_kernel
from kernelfit.solvers.cholesky import cholesky_inplace, cholesky_solve
from kernelfit.solvers.products import (build_gram, cross_kernel_matmul, kept_copy_bytes,
                                        kept_pairs, kernel_matvec, stored_kernel_matvec)
from kernelfit.solvers.tiles import TiledSymmetric, default_tile_size, run_tiles
from kernelfit.backend import get_backend


def _spd(n, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, n // 2 + 3))
    return (A @ A.T + n * np.eye(n)).astype(dtype)


@pytest.mark.parametrize("n,tile", [(1, 1), (7, 3), (64, 64), (100, 32), (257, 50), (300, 299)])
def test_tiled_cholesky_equals_lapack(n, tile):
    A = _spd(n, seed=n)
    T = TiledSymmetric.from_dense(A, tile)
    cholesky_inplace(T)
    L = T.to_dense(lower_only=True)
    L_ref = np.linalg.cholesky(A)
    np.testing.assert_allclose(L, L_ref, rtol=1e-10, atol=1e-10)


def test_factorization_is_in_place():
    A = _spd(90)
    T = TiledSymmetric.from_dense(A, 30)
    ids = [[id(t) for t in row] for row in T.tiles]
    ptrs = [[t.ctypes.data for t in row] for row in T.tiles]
    cholesky_inplace(T)
    assert ids == [[id(t) for t in row] for row in T.tiles]
    assert ptrs == [[t.ctypes.data for t in row] for row in T.tiles]
    assert T.factored


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 60), st.integers(1, 25), st.integers(1, 4), st.integers(0, 10_000))
def test_solve_matches_cho_solve(n, tile, m, seed):
    A = _spd(n, seed)
    B = np.random.default_rng(seed + 1).standard_normal((n, m))
    T = TiledSymmetric.from_dense(A, tile)
    cholesky_inplace(T)
    X = cholesky_solve(T, B)
    np.testing.assert_allclose(X, cho_solve(cho_factor(A, lower=True), B), rtol=1e-8, atol=1e-10)


def test_float32_tiles():
    A = _spd(120, dtype=np.float32)
    T = TiledSymmetric.from_dense(A, 40)
    cholesky_inplace(T)
    assert T.tiles[1][0].dtype == np.float32
    x = cholesky_solve(T, np.ones(120))
    assert np.linalg.norm(A.astype(np.float64) @ x - 1) / np.sqrt(120) < 1e-4


def test_not_positive_definite_reports_global_row():
    A = _spd(50)
    A[37, 37] = -5.0  # breaks the pivot in the second tile
    T = TiledSymmetric.from_dense(A, 20)
    with pytest.raises(NotPositiveDefiniteError) as err:
        cholesky_inplace(T)
    assert 20 <= err.value.index <= 37


def test_task_graph_equals_the_column_loop_and_reports_columns_in_order(monkeypatch):
    """On the CPU the factorization runs as a task graph on several threads, one tile
    operation each (GIL-free kernels): the same factor as the column-by-column loop, the
    columns reported in order, and the first pivot that fails reported alike."""
    from kernelfit.solvers import cholesky as ch

    used = []
    real = ch.factor_tasks
    monkeypatch.setattr(ch, "n_threads_default", lambda: 3)  # more threads than cores: fine
    monkeypatch.setattr(ch, "factor_tasks",
                        lambda *a, **k: (used.append(a[2]), real(*a, **k))[1])
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 1e-5)):
        A = _spd(257, seed=3, dtype=dtype)
        T, ref = TiledSymmetric.from_dense(A, 40), TiledSymmetric.from_dense(A, 40)
        cols = []
        ch.cholesky_inplace(T, on_panel=cols.append)
        ch.factor_columns(ch.MemoryTileOps(ref), ref.bounds)
        assert cols == list(range(T.n_tiles))
        L, L_ref = T.to_dense(lower_only=True), ref.to_dense(lower_only=True)
        assert np.abs(L - L_ref).max() <= tol * np.abs(L_ref).max()
    assert used == [3, 3]
    A = _spd(200)
    A[150, 150] = -5.0
    rows = []
    for factor in (lambda T: ch.cholesky_inplace(T),
                   lambda T: ch.factor_columns(ch.MemoryTileOps(T), T.bounds)):
        with pytest.raises(NotPositiveDefiniteError) as err:
            factor(TiledSymmetric.from_dense(A, 30))
        rows.append(err.value.index)
    assert rows[0] == rows[1] and 150 <= rows[0] < 180 and len(used) == 3


def test_task_graph_stops_and_raises_when_a_tile_operation_fails():
    """An exception inside one thread's tile operation (here the third GEMM update) stops
    the handing out of tasks and is raised in the caller; no thread is left behind."""
    import threading

    from kernelfit.solvers import cholesky as ch

    kernels = get_backend("cpu").gil_free_tile_kernels()
    assert kernels is not None  # SciPy exposes its BLAS: the CPU path uses it

    class Failing:
        calls = 0

        def __getattr__(self, name):
            return getattr(kernels, name)

        def gemm_nt_sub(self, a, b, c):
            Failing.calls += 1
            if Failing.calls == 3:
                raise KeyboardInterrupt
            kernels.gemm_nt_sub(a, b, c)

    before = threading.active_count()
    T = TiledSymmetric.from_dense(_spd(200), 25)
    with pytest.raises(KeyboardInterrupt):
        ch.factor_tasks(ch.MemoryTileOps(T, kernels=Failing()), T.bounds, 2)
    assert threading.active_count() == before


def test_storage_is_lower_triangle_only():
    n, t = 1000, 250
    assert TiledSymmetric.storage_bytes(n, t) == 8 * 250 * 250 * 10
    assert TiledSymmetric.storage_bytes(n, t) < 8 * n * n * 0.65


@pytest.mark.parametrize("kname", ["gaussian", "normalized", "laplacian"])
def test_build_gram_and_products(kname):
    rng = np.random.default_rng(5)
    X = rng.random((103, 9))
    k = get_kernel(kname, bandwidth=1.3, degree=3)
    T = build_gram(k, X, tile_size=25)
    K = k(X)
    np.testing.assert_allclose(T.to_dense(), K, rtol=1e-13, atol=1e-14)
    V = rng.standard_normal((103, 3))
    np.testing.assert_allclose(kernel_matvec(k, X, V, tile_size=25), K @ V, rtol=1e-12)
    Q = rng.random((31, 9))
    np.testing.assert_allclose(cross_kernel_matmul(k, Q, X, V, tile_size=25), k(Q, X) @ V,
                               rtol=1e-12)


def test_build_gram_float32_and_ridge():
    X = np.random.default_rng(0).random((40, 3))
    k = get_kernel("gaussian", bandwidth=1.0)
    T = build_gram(k, X, tile_size=16, dtype=np.float32, ridge=0.5)
    assert all(t.dtype == np.float32 and t.flags.f_contiguous for row in T.tiles for t in row)
    np.testing.assert_allclose(T.to_dense(), k(X) + 0.5 * np.eye(40), rtol=1e-6)


def test_default_tile_size():
    assert default_tile_size(500) == 500
    ts = default_tile_size(20_000)
    assert ts <= 4096 and ts * int(np.ceil(20_000 / ts)) >= 20_000
    assert default_tile_size(20_000, "gpu") >= 8192 or default_tile_size(20_000, "gpu") > 1024


def test_misuse():
    with pytest.raises(InputError):
        TiledSymmetric(0, 4)
    with pytest.raises(InputError):
        TiledSymmetric(4, 0)
    T = TiledSymmetric.from_dense(_spd(10), 4)
    with pytest.raises(InputError, match="factor"):
        cholesky_solve(T, np.ones(10))
    cholesky_inplace(T)
    with pytest.raises(InputError, match="rows"):
        cholesky_solve(T, np.ones(9))
    with pytest.raises(InputError, match="already"):
        cholesky_inplace(T)


def test_from_dense_never_aliases_the_input():
    A = _spd(5)
    before = A.copy()
    T = TiledSymmetric.from_dense(A, 5)
    cholesky_inplace(T)
    np.testing.assert_array_equal(A, before)


def test_condition_estimate_close_to_exact():
    from kernelfit.solvers.cholesky import estimate_condition, factor_matvec

    rng = np.random.default_rng(2)
    X = rng.random((150, 4))
    K = get_kernel("gaussian", bandwidth=0.7)(X)
    T = TiledSymmetric.from_dense(K, 40)
    cholesky_inplace(T)
    V = rng.standard_normal((150, 2))
    np.testing.assert_allclose(factor_matvec(T, V), K @ V, rtol=1e-9, atol=1e-10)
    est = estimate_condition(T, iters=60)
    exact = np.linalg.cond(K)
    assert 0.5 * exact <= est["condition_number"] <= 1.01 * exact


# ------------------------------------------------- K kept through the factorization
@settings(max_examples=30, deadline=None)
@given(st.integers(1, 70), st.integers(1, 30), st.sampled_from([0.0, 0.3]),
       st.sampled_from(["gaussian", "laplacian", "linear", "normalized"]),
       st.integers(0, 10_000))
def test_stored_matvec_equals_k_before_and_after_factoring(n, tile, ridge, kname, seed):
    rng = np.random.default_rng(seed)
    X = rng.random((n, 4)) + 0.1
    k = get_kernel(kname, bandwidth=0.7, degree=2)
    if kname in ("linear", "normalized"):  # rank-deficient in 4 dimensions: needs a ridge
        ridge = 1.0
    T = build_gram(k, X, tile_size=tile, ridge=ridge, keep_copy=True)
    K = k(X)
    V = rng.standard_normal((n, 3))
    np.testing.assert_allclose(stored_kernel_matvec(T, V), K @ V, rtol=1e-12, atol=1e-12)
    # the factored matrix is K + ridge I; the kept copy is K itself
    np.testing.assert_allclose(T.to_dense(), K + ridge * np.eye(n), rtol=1e-13, atol=1e-14)
    cholesky_inplace(T)
    np.testing.assert_allclose(stored_kernel_matvec(T, V), K @ V, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stored_kernel_matvec(T, V[:, 0]), K @ V[:, 0], rtol=1e-12,
                               atol=1e-12)
    # the factor itself is untouched by the kept copy
    np.testing.assert_allclose(T.to_dense() @ T.to_dense().T, K + ridge * np.eye(n),
                               rtol=1e-10, atol=1e-10)


def test_kept_copy_bytes_and_refusals():
    X = np.random.default_rng(1).random((50, 3))
    k = get_kernel("gaussian", bandwidth=1.0)
    T = build_gram(k, X, tile_size=20, keep_copy=True)
    held = sum(c.nbytes for c in T.kept.values()) + sum(d.nbytes for d in T.kept_diag)
    assert held == kept_copy_bytes(50, 20)
    assert kept_copy_bytes(50, 50) == 8 * 50  # one tile: only the diagonal is extra
    T.free()
    assert T.kept is None
    with pytest.raises(InputError, match="keep_copy"):
        stored_kernel_matvec(build_gram(k, X, tile_size=20), np.ones(50))
    with pytest.raises(InputError, match="rows"):
        stored_kernel_matvec(build_gram(k, X, keep_copy=True), np.ones(49))


@pytest.mark.parametrize("budget", [0, 8 * 20 * 20 * 4, 8 * 20 * 20 * 5 + 7, None])
def test_float32_tiles_keep_float64_tiles_for_exact_products(budget):
    # mixed precision: float64 copies of diagonal tiles first, then off-diagonal ones;
    # the products from them equal K V in float64 after the float32 factorization
    rng = np.random.default_rng(3)
    X, V = rng.random((73, 3)), rng.standard_normal((73, 2))
    k = get_kernel("gaussian", bandwidth=0.8)
    T = build_gram(k, X, tile_size=20, dtype=np.float32, keep_copy=True, keep_budget=budget,
                   ridge=0.05)
    pairs = kept_pairs(73, 20, budget, diagonal=True)
    assert sorted(T.kept) == sorted(pairs) and T.kept_diag is None
    assert all(T.kept[p].dtype == np.float64 for p in pairs)
    assert [p for p in pairs[:4]] == [(i, i) for i in range(min(4, len(pairs)))]
    assert kept_copy_bytes(73, 20, budget, diagonal=True) == sum(
        c.nbytes for c in T.kept.values())
    cholesky_inplace(T)
    got = stored_kernel_matvec(T, V, kernel=k, X=X)
    np.testing.assert_allclose(got, k(X) @ V, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("budget", [0, 8 * 20 * 20, 8 * 20 * 20 * 2 + 7, None])
def test_kept_copy_within_a_budget_recomputes_the_rest(budget):
    rng = np.random.default_rng(7)
    X, V = rng.random((73, 3)), rng.standard_normal((73, 2))
    k = get_kernel("laplacian", bandwidth=0.6)
    T = build_gram(k, X, tile_size=20, keep_copy=True, keep_budget=budget, ridge=0.1)
    want = {0: 0, 8 * 20 * 20: 1, 8 * 20 * 20 * 2 + 7: 2, None: 6}[budget]
    assert len(T.kept) == want and sorted(T.kept) == kept_pairs(73, 20, budget)
    assert kept_copy_bytes(73, 20, budget) == (sum(c.nbytes for c in T.kept.values())
                                               + 8 * 73)
    cholesky_inplace(T)
    if want < 6:
        with pytest.raises(InputError, match="not kept"):
            stored_kernel_matvec(T, V)
    np.testing.assert_allclose(stored_kernel_matvec(T, V, kernel=k, X=X, n_threads=2),
                               k(X) @ V, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n_threads", [1, 2, 3, 5])
def test_threads_take_every_task_exactly_once(n_threads):
    import threading

    seen, lock = [], threading.Lock()
    tasks = list(range(37))

    def work(t, part):
        for task in part:
            with lock:
                seen.append((t, task))

    used = run_tiles(tasks, work, get_backend("cpu"), n_threads)
    assert sorted(task for _, task in seen) == tasks
    assert used == min(n_threads, len(tasks))
    assert {t for t, _ in seen} <= set(range(used))


@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("n_query", [1, 7, 250, 601])
def test_cross_products_any_split(n_threads, n_query):
    rng = np.random.default_rng(n_query)
    X, Q, V = rng.random((90, 5)), rng.random((n_query, 5)), rng.standard_normal((90, 2))
    k = get_kernel("gaussian", bandwidth=0.8)
    for ts in (None, 16, 64):
        np.testing.assert_allclose(cross_kernel_matmul(k, Q, X, V, tile_size=ts,
                                                       n_threads=n_threads), k(Q, X) @ V,
                                   rtol=1e-12, atol=1e-13)


def test_cross_products_with_statistics_from_other_columns():
    """Queries' norms from all their columns, inner products over the training support."""
    rng = np.random.default_rng(3)
    X = rng.random((60, 6))
    X[:, [1, 4]] = 0.0
    Q = rng.random((20, 6))  # non-zero where the training points are zero
    V = rng.standard_normal((60, 2))
    keep = [0, 2, 3, 5]
    for kname in ("gaussian", "laplacian", "normalized", "linear", "polynomial"):
        k = get_kernel(kname, bandwidth=0.9, degree=3)
        got = cross_kernel_matmul(k, np.ascontiguousarray(Q[:, keep]),
                                  np.ascontiguousarray(X[:, keep]), V, tile_size=16,
                                  a_stats=k.prepare(Q))
        np.testing.assert_allclose(got, k(Q, X) @ V, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gram_on_threads_equals_the_kernel(n_threads, dtype):
    rng = np.random.default_rng(n_threads)
    X = rng.random((613, 7))
    k = get_kernel("gaussian", bandwidth=0.9)
    K = k(X)
    for ts in (613, 300, 100):
        T = build_gram(k, X, tile_size=ts, dtype=dtype, ridge=0.25, n_threads=n_threads)
        tol = 1e-15 if dtype == np.float64 else 1e-7
        np.testing.assert_allclose(T.to_dense(), K + 0.25 * np.eye(613), rtol=tol, atol=tol)
        V = rng.standard_normal((613, 2))
        np.testing.assert_allclose(kernel_matvec(k, X, V, tile_size=ts, n_threads=n_threads),
                                   K @ V, rtol=1e-12)


@pytest.mark.parametrize("l2,target", [(2 << 20, 4096), (512 << 10, 2048), (256 << 10, 1024),
                                       (32 << 20, 4096), (16 << 10, 512)])
def test_tile_size_follows_the_l2_cache(monkeypatch, l2, target):
    from kernelfit.solvers import machine
    from kernelfit.solvers.tiles import default_tile_size

    monkeypatch.setattr(machine, "cache_sizes", lambda: {"L2": l2})
    machine.choose_tile_size.cache_clear()
    try:
        assert machine.choose_tile_size("cpu") == (target, 8192)
        assert default_tile_size(8192) == 8192  # one tile: one LAPACK call
        n = 20000
        ts = default_tile_size(n)
        assert ts <= target and -(-n // ts) == -(-n // target)
        rec = machine.tile_choice(n, ts, "cpu")
        assert rec["target_tile"] == target and rec["tile_threads"] >= 1
        assert machine.choose_tile_size("gpu") == (8192, 8192)
    finally:
        machine.choose_tile_size.cache_clear()


@pytest.mark.parametrize("cores,n,tiles", [(2, 10_000, 5), (2, 9_000, 5), (2, 20_000, 8),
                                           (1, 10_000, 4), (16, 10_000, 19),
                                           (16, 9_000, 17)])
def test_split_matrices_get_tiles_for_every_core(monkeypatch, cores, n, tiles):
    """A matrix split into tiles gets at least 2 per core plus one (the Cholesky's task
    graph then has work for every core early on), never tiles under MIN_TILE rows; the
    cache rule decides where it asks for more, and the JSON record says which."""
    from kernelfit.solvers import machine
    from kernelfit.solvers.tiles import default_tile_size

    monkeypatch.setattr(machine, "cache_sizes", lambda: {"L2": 1 << 20})  # target 2560
    monkeypatch.setattr(machine, "usable_cores", lambda: cores)
    machine.choose_tile_size.cache_clear()
    try:
        ts = default_tile_size(n)
        assert -(-n // ts) == tiles and ts >= machine.MIN_TILE
        assert default_tile_size(8192) == 8192  # still one LAPACK call up to MAX_TILE
        rec = machine.tile_choice(n, ts, "cpu")
        assert rec["min_tiles"] == min(2 * cores + 1, n // machine.MIN_TILE)
        assert "min_tiles" in rec["rule"]
    finally:
        machine.choose_tile_size.cache_clear()


# ------------------------------------ K kept as the exact integers it is finished from
def _grid(n, d, seed, high=256):
    rng = np.random.default_rng(seed)
    return rng.integers(1, high, size=(n, d)).astype(np.float64) / 255.0


def _ints_budget(n, tile, f32):
    """A keep budget one byte short of K's float64 values for every tile: the copy then
    holds the exact integers (4 bytes an entry, so all of them fit) rather than values
    (:func:`kernelfit.solvers.products.values_fit`)."""
    from kernelfit.solvers.products import kept_copy_bytes

    return kept_copy_bytes(n, tile, None, diagonal=f32) - 1


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 70), st.integers(1, 30), st.sampled_from([np.float32, np.float64]),
       st.sampled_from(["gaussian", "laplacian", "normalized"]), st.integers(0, 10_000))
def test_exact_kept_copy_gives_the_factored_values(n, tile, dtype, kname, seed):
    # integer-grid inputs: K is kept as exact squared distances (inner products for the
    # normalized kernel), half the bytes, and the products finish them to the very
    # values that were factored (K V with V = I is K itself, bit for bit)
    from kernelfit.kernels import to_integer_grid
    from kernelfit.solvers.products import kept_bytes, kept_storage

    k, G = to_integer_grid(get_kernel(kname, bandwidth=0.9, degree=2), _grid(n, 5, seed))
    assert G.dtype == np.float32
    f32 = np.dtype(dtype) == np.float32  # float64 tiles keep only off-diagonal ones
    T = build_gram(k, G, tile_size=tile, dtype=dtype, keep_copy=True, ridge=0.25,
                   keep_budget=_ints_budget(n, tile, f32))
    want = "int32" if kname == "normalized" else "uint32"
    assert kept_storage(T) == (want if (f32 or n > tile) else None)
    assert all(t.dtype == np.dtype(want) for t in T.kept.values())
    # float32 tiles of distances keep their diagonal tiles' integers in the tiles' own free
    # triangles (no bytes); float64 tiles keep K's diagonal (8 bytes an entry) instead
    in_tile = f32 and kname != "normalized"
    assert T.diagonal_in_tiles == in_tile
    sizes = [e - s for s, e in T.bounds]
    off = 4 * sum(a * b for i, a in enumerate(sizes) for b in sizes[:i])
    diag = 4 * sum(a * a for a in sizes) if f32 and not in_tile else 0
    assert kept_bytes(T) == off + diag + (0 if f32 else 8 * n)
    ref = build_gram(k, G, tile_size=tile, dtype=np.float64)  # the float64 tiles, no copy
    Kref = ref.to_dense()
    Kref = np.tril(Kref) + np.tril(Kref, -1).T
    cholesky_inplace(T)
    got = stored_kernel_matvec(T, np.eye(n), kernel=k, X=G)
    if kname == "normalized":  # a diagonal tile's two triangles scale by |a| |b| in turn
        np.testing.assert_allclose(got, Kref, rtol=1e-15, atol=0)
    else:  # exact distances: the same float64 values, bit for bit
        np.testing.assert_array_equal(got, Kref)
    V = np.random.default_rng(seed).standard_normal((n, 3))
    np.testing.assert_allclose(stored_kernel_matvec(T, V, kernel=k, X=G, n_threads=2),
                               Kref @ V, rtol=1e-12, atol=1e-12)


def test_exact_kept_copy_holds_twice_the_tiles_and_needs_the_kernel():
    from kernelfit.kernels import Kernel, to_integer_grid
    from kernelfit.solvers.products import kept_dtype, kept_storage

    k, G = to_integer_grid(get_kernel("gaussian", bandwidth=0.8), _grid(73, 6, 1))
    budget = 8 * 20 * 20 * 3  # three float64 tiles, six of the exact integers
    T = build_gram(k, G, tile_size=20, dtype=np.float32, keep_copy=True, keep_budget=budget)
    # the four diagonal tiles live in the float32 tiles: the budget holds six others
    off = kept_pairs(73, 20, budget, diagonal=False, item_bytes=4)
    assert sorted(T.kept) == sorted([(i, i) for i in range(4)] + off)
    assert len(off) == 6 == 2 * len(kept_pairs(73, 20, budget, diagonal=False))
    cholesky_inplace(T)
    V = np.random.default_rng(2).standard_normal((73, 2))
    np.testing.assert_allclose(stored_kernel_matvec(T, V, kernel=k, X=G), k(G) @ V,
                               rtol=1e-12, atol=1e-12)
    with pytest.raises(InputError, match="finish them"):  # every tile kept, no kernel
        stored_kernel_matvec(build_gram(k, G, tile_size=20, keep_copy=True,
                                        keep_budget=_ints_budget(73, 20, False)), V)
    # a budget that holds every tile's values keeps values: no kernel needed
    T = build_gram(k, G, tile_size=20, dtype=np.float32, keep_copy=True)
    assert kept_storage(T) == "float64" and not T.diagonal_in_tiles
    cholesky_inplace(T)
    np.testing.assert_allclose(stored_kernel_matvec(T, V), k(G) @ V, rtol=1e-12, atol=1e-12)
    # inputs off the grid, or too large for the integer type, keep float64 values
    plain = get_kernel("gaussian", bandwidth=0.8)
    X = np.random.default_rng(3).random((30, 4))
    assert kept_dtype(plain, X, plain.prepare(X)) == np.float64
    assert kept_dtype(k, G.astype(np.float64), k.prepare(G)) == np.float64
    big = np.full((3, 4), 2.0 ** 14, dtype=np.float32)  # |a - b|^2 up to 2^32
    assert kept_dtype(k, big, k.prepare(big)) == np.float64
    assert k.exact_dtype(big[:, :1], k.prepare(big[:, :1])) == np.uint32
    nk = Kernel("normalized", int_scale=255.0)
    assert nk.exact_dtype(big, nk.prepare(big)) == np.int32
    assert kept_storage(build_gram(plain, X, tile_size=10, keep_copy=True)) == "float64"


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 90), st.integers(1, 40), st.sampled_from(["gaussian", "laplacian"]),
       st.booleans(), st.integers(0, 10_000))
def test_diagonal_tiles_keep_their_integers_in_their_free_triangles(n, tile, kname,
                                                                    deflate, seed):
    """A float32 diagonal tile's strict upper triangle holds the tile's exact squared
    distances (uint32 bits): the factor's lower triangles are the same bits as without
    it (also with the deflation's low-rank part), and the products from the kept copy
    give K itself, bit for bit, after the factorization."""
    from unittest import mock

    from kernelfit.kernels import to_integer_grid
    from kernelfit.solvers import products
    from kernelfit.solvers.deflate import nystrom_landmarks

    k, G = to_integer_grid(get_kernel(kname, bandwidth=0.9), _grid(n, 5, seed))
    stats = k.prepare(G)
    U = nystrom_landmarks(k, G, stats, get_backend("cpu"))[0] if deflate else None
    if U is None and deflate:
        return  # the mean is (nearly) a row: no deflation for these points
    budget = _ints_budget(n, tile, True)
    T = build_gram(k, G, tile_size=tile, dtype=np.float32, keep_copy=True, ridge=0.5,
                   low_rank=U, keep_budget=budget)
    with mock.patch.object(products, "diagonal_in_tiles", lambda *a: False):
        ref = build_gram(k, G, tile_size=tile, dtype=np.float32, keep_copy=True,
                         ridge=0.5, low_rank=U, keep_budget=budget)
    assert T.diagonal_in_tiles and not ref.diagonal_in_tiles
    cholesky_inplace(T)
    cholesky_inplace(ref)
    for i in range(T.n_tiles):
        for j in range(i + 1):
            a, b = T.tiles[i][j], ref.tiles[i][j]
            if i == j:
                a, b = np.tril(a), np.tril(b)
            np.testing.assert_array_equal(a, b)
    Kref = k(G)
    np.testing.assert_array_equal(stored_kernel_matvec(T, np.eye(n), kernel=k, X=G), Kref)
    V = np.random.default_rng(seed).standard_normal((n, 2))
    np.testing.assert_allclose(stored_kernel_matvec(T, V, kernel=k, X=G, n_threads=2),
                               Kref @ V, rtol=1e-12, atol=1e-12)


def test_diagonal_tiles_stay_apart_where_their_integers_could_read_as_nan():
    """Integers whose uint32 bits could read as a float32 NaN or infinity (from 0x7F800000)
    are kept apart, like the normalized kernel's signed inner products and float64 tiles."""
    from kernelfit.solvers.products import diagonal_in_tiles

    k = get_kernel("gaussian", bandwidth=1.0)
    X = np.ones((3, 2), dtype=np.float32)
    assert diagonal_in_tiles(k, X, np.array([1.0, 2.0]), np.uint32, np.float32)
    assert not diagonal_in_tiles(k, X, np.array([float(0x7F800000) / 4]), np.uint32,
                                 np.float32)
    assert not diagonal_in_tiles(k, X, np.array([1.0]), np.uint32, np.float64)
    assert not diagonal_in_tiles(k, X, np.array([1.0]), np.float64, np.float32)
    assert not diagonal_in_tiles(get_kernel("normalized"), X, np.array([1.0]), np.int32,
                                 np.float32)


def test_gemm_rates_measure_this_process_once():
    """auto's probe: a float64 GEMM rate, a read bandwidth, thin products per entry and a
    finish rate, all positive and finite, float32 estimated at twice float64 on the CPU,
    cached per device and size."""
    import math

    from kernelfit.solvers import machine

    machine._RATES.pop(("cpu", 128), None)
    r = machine.gemm_rates(get_backend("cpu"), size=128)
    assert all(math.isfinite(r[k]) and r[k] > 0 for k in ("float64", "float32",
                                                           "memory_bytes_per_s"))
    assert r["float32"] == 2.0 * r["float64"] and "twice" in r["float32_source"]
    # thin products per matrix entry (both dtypes) and the finish rate, for the passes
    assert all(math.isfinite(v) and 0 < v < 1e-6 for v in r["thin_seconds_per_entry"].values())
    assert set(r["thin_seconds_per_entry"]) == {"float64", "float32"}
    assert r["thin_columns"] == machine.THIN_COLUMNS and r["finish_entries_per_s"] > 1e6
    assert machine.gemm_rates(get_backend("cpu"), size=128) is r


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 3000), ts=st.integers(1, 700), diagonal=st.booleans(),
       item_bytes=st.sampled_from([4, 8]), budget=st.one_of(st.none(), st.integers(-5, 10 ** 8)))
def test_kept_copy_bytes_counts_the_kept_tiles_without_listing_them(n, ts, diagonal,
                                                                     item_bytes, budget):
    from kernelfit.solvers.tiles import tile_bounds

    b = tile_bounds(n, ts)
    listed = sum(item_bytes * (b[i][1] - b[i][0]) * (b[j][1] - b[j][0])
                 for i, j in kept_pairs(n, ts, budget, diagonal=diagonal,
                                        item_bytes=item_bytes))
    extra = 0 if diagonal else 8 * n
    assert kept_copy_bytes(n, ts, budget, diagonal=diagonal,
                           item_bytes=item_bytes) == listed + extra


def test_plans_of_sizes_far_beyond_memory_are_made_without_listing_tiles():
    """bench --n 100000000: 10^9 tile pairs, which a list would need tens of GB for."""
    from kernelfit.solvers.plan import would_fit

    req = {"n": 10 ** 8, "d": 784, "n_outputs": 10, "n_test": 1000, "precision": "float64"}
    assert not would_fit(req, 24 << 30)
    assert kept_copy_bytes(10 ** 8, 2000, None) > 10 ** 16
