"""Mixed precision's low-rank deflation: the landmarks' Nystrom part, the deflated float32
tiles, the Woodbury preconditioner, and what a solve records."""

import numpy as np
import pytest

import kernelfit.solvers.deflate as deflate
from kernelfit.backend import get_backend
from kernelfit.errors import InputError
from kernelfit.kernels import get_kernel, to_integer_grid
from kernelfit.solvers.deflate import NEAR, Deflated, nystrom_landmarks
from kernelfit.solvers.exact import SolveOptions, solve_exact
from kernelfit.solvers.products import build_gram, stored_kernel_matvec

CPU = get_backend("cpu")


def _problem(n=300, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, d)), np.eye(3)[rng.integers(0, 3, n)]


def _dense(T):
    """The lower tiles of ``T`` as a dense symmetric matrix (float64)."""
    A = np.zeros((T.n, T.n))
    for i, (si, ei) in enumerate(T.bounds):
        for j, (sj, ej) in enumerate(T.bounds[:i + 1]):
            A[si:ei, sj:ej] = T.tiles[i][j]
    return np.tril(A) + np.tril(A, -1).T


@pytest.mark.parametrize("name,h", [("gaussian", 0.8), ("laplacian", 2.0)])
def test_landmark_column_is_the_nystrom_part_of_the_mean(name, h, monkeypatch):
    monkeypatch.setattr(deflate, "RANK", 1)  # the mean alone
    X, _ = _problem()
    k = get_kernel(name, bandwidth=h)
    u, rec = nystrom_landmarks(k, X, k.prepare(X), CPU)
    z = X.mean(0, keepdims=True)
    # k(z) (not k(z, z)): the exact diagonal value, as the landmark takes it; k(z, z) forms
    # |z|^2 + |z|^2 - 2 <z, z>, whose rounding (which depends on the BLAS kernel and the
    # alignment) the Laplacian's square root lifts to about 1e-8
    np.testing.assert_allclose(u, k(X, z) / np.sqrt(k(z)[0, 0]), rtol=1e-13, atol=0)
    assert rec["rank"] == 1 and rec["landmark"] == "mean of the training rows"
    assert 0 < rec["max_k_row_landmark"] < NEAR
    assert rec["mean_entry_removed"] == pytest.approx(np.mean(u @ u.T), rel=1e-12)
    # K - u u^T is the Schur complement of the landmark: positive definite
    assert np.linalg.eigvalsh(k(X) - u @ u.T).min() > 0


@pytest.mark.parametrize("name,h", [("gaussian", 0.8), ("laplacian", 2.0)])
def test_landmarks_are_the_nystrom_part_of_the_mean_and_kmeans_centres(name, h):
    X, _ = _problem(n=640)
    k = get_kernel(name, bandwidth=h)
    U, rec = nystrom_landmarks(k, X, k.prepare(X), CPU)
    # at most one landmark per SAMPLE_PER_LANDMARK rows: 10 candidates here
    assert rec["candidates"] == 640 // deflate.SAMPLE_PER_LANDMARK == 10
    assert 2 <= rec["rank"] == U.shape[1] <= 10 and U.shape[0] == 640
    assert rec["rank"] + rec["near_a_row"] + rec["dependent"] == rec["candidates"]
    assert rec["seed"] == deflate.LANDMARK_SEED and rec["sample_rows"] == 640
    assert rec["landmark"].startswith("the mean of the training rows and k-means centres")
    K = k(X)
    # U U^T is the Nystrom approximation of its landmarks: K - U U^T stays positive
    # definite (a Schur complement), and it is smaller than the rank-one part leaves
    assert np.linalg.eigvalsh(K - U @ U.T).min() > 0
    u1 = U[:, :1]  # the mean comes first: its column is the rank-one part
    z = X.mean(0, keepdims=True)
    np.testing.assert_allclose(u1, k(X, z) / np.sqrt(k(z)[0, 0]), rtol=1e-12, atol=0)
    assert np.linalg.norm(K - U @ U.T) < 0.9 * np.linalg.norm(K - u1 @ u1.T)
    # seeded: the same landmarks again
    U2, rec2 = nystrom_landmarks(k, X, k.prepare(X), CPU)
    np.testing.assert_array_equal(U, U2)
    assert rec2 == rec


def test_landmarks_near_a_row_or_dependent_are_left_out(monkeypatch):
    k = get_kernel("gaussian", bandwidth=1.0)
    rng = np.random.default_rng(5)
    # 8 clusters of 16 rows, far apart: the k-means centres sit among their rows, the mean
    # of all rows far from every row
    centres = rng.normal(scale=20.0, size=(8, 3))
    X = np.repeat(centres, 16, axis=0) + rng.normal(scale=0.5, size=(128, 3))
    monkeypatch.setattr(deflate, "SAMPLE_PER_LANDMARK", 4)
    monkeypatch.setattr(deflate, "RANK", 9)
    U, rec = nystrom_landmarks(k, X, k.prepare(X), CPU)
    assert rec["candidates"] == 9 and rec["rank"] >= 5
    assert rec["rank"] + rec["near_a_row"] + rec["dependent"] == 9
    assert np.linalg.eigvalsh(k(X) - U @ U.T).min() > 0
    # a landmark as near a row as NEAR says is left out (here: every centre)
    monkeypatch.setattr(deflate, "NEAR", 0.5)
    U, rec = nystrom_landmarks(k, X, k.prepare(X), CPU)
    assert rec["near_a_row"] >= 6 and rec["rank"] == U.shape[1]
    assert rec["rank"] + rec["near_a_row"] + rec["dependent"] == 9
    assert rec["landmark"].startswith("the mean of the training rows")  # far from any row
    # a landmark that adds little to those before it (a pivot below PIVOT_MIN) is left out
    # (one cluster: the centres and the mean close together)
    monkeypatch.setattr(deflate, "NEAR", 0.999)
    monkeypatch.setattr(deflate, "PIVOT_MIN", 0.5)
    X = rng.normal(scale=0.3, size=(128, 3))
    U, rec = nystrom_landmarks(k, X, k.prepare(X), CPU)
    assert rec["dependent"] >= 1 and rec["rank"] + rec["near_a_row"] + rec["dependent"] == 9


def test_pivoted_selection_factors_the_chosen_landmarks():
    rng = np.random.default_rng(7)
    B = rng.standard_normal((6, 3))
    G = B @ B.T + 1e-9 * np.eye(6)  # rank 3, and three tiny pivots after
    chosen, L = deflate._pivoted_selection(G, 0, 1e-3)
    assert chosen[0] == 0 and len(chosen) == 3  # the first given, then the largest pivots
    assert np.allclose(L, np.tril(L))
    np.testing.assert_allclose(L @ L.T, G[np.ix_(chosen, chosen)], rtol=1e-12, atol=1e-12)
    chosen, L = deflate._pivoted_selection(G, None, 1e-3)
    assert chosen[0] == int(np.argmax(np.diag(G)))


def test_landmark_is_refused_where_it_would_not_be_positive_definite():
    X, _ = _problem(n=50)
    for k in (get_kernel("linear"), get_kernel("polynomial", degree=2),
              get_kernel("normalized", degree=2)):
        u, rec = nystrom_landmarks(k, X, k.prepare(X), CPU)
        assert u is None and rec["rank"] == 0 and k.name in rec["why"]
    k = get_kernel("gaussian", bandwidth=1.0)
    Xm = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])  # the mean is the middle row
    u, rec = nystrom_landmarks(k, Xm, k.prepare(Xm), CPU)
    assert u is None and "one of them" in rec["why"]
    u, rec = nystrom_landmarks(k, X, None, CPU, tiles=np.float64)
    assert u is None and rec == {"rank": 0, "why": "float64 tiles"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(deflate, "ENABLED", False)
        u, rec = nystrom_landmarks(k, X, k.prepare(X), CPU)
    assert u is None and rec["why"] == "turned off"


def test_deflated_float32_tiles_hold_k_minus_the_part_and_the_kept_copy_stays_k():
    X, _ = _problem(n=200)
    k = get_kernel("gaussian", bandwidth=0.8)
    stats = k.prepare(X)
    u, rec = nystrom_landmarks(k, X, stats, CPU, rank=3)
    assert rec["rank"] == u.shape[1] == 3
    T = build_gram(k, X, tile_size=64, dtype=np.float32, ridge=1e-3, keep_copy=True,
                   low_rank=u)
    K = k(X)
    want = (K - u @ u.T).astype(np.float32) + np.float32(1e-3) * np.eye(200, dtype=np.float32)
    np.testing.assert_allclose(_dense(T), want, rtol=0, atol=2e-7)
    # without the deflation the tiles differ by u u^T (a test that can fail)
    assert np.abs(_dense(T) - (K + 1e-3 * np.eye(200))).max() > 0.1
    V = np.random.default_rng(1).standard_normal((200, 2))
    np.testing.assert_allclose(stored_kernel_matvec(T, V), K @ V, rtol=1e-12, atol=1e-12)
    with pytest.raises(InputError, match="float32"):
        build_gram(k, X, tile_size=64, dtype=np.float64, low_rank=u)


def test_deflated_tiles_on_the_integer_grid_keep_the_exact_integers(keep_values):
    rng = np.random.default_rng(3)
    X = rng.integers(0, 256, size=(150, 8)) / 255.0
    k, G = to_integer_grid(get_kernel("gaussian", bandwidth=0.6), X)
    stats = k.prepare(G)
    u, rec = nystrom_landmarks(k, G, stats, CPU, rank=2)
    assert rec["rank"] == 2
    z = X.mean(0, keepdims=True)
    k01 = get_kernel("gaussian", bandwidth=0.6)
    np.testing.assert_allclose(u[:, :1], k01(X, z), rtol=1e-12, atol=0)
    keep_values(False)
    T = build_gram(k, G, tile_size=64, dtype=np.float32, keep_copy=True, low_rank=u,
                   stats=stats)
    assert np.dtype(next(iter(T.kept.values())).dtype) == np.uint32
    np.testing.assert_allclose(_dense(T), (k01(X) - u @ u.T).astype(np.float32), rtol=0,
                               atol=2e-7)


@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("joint_c", [1e300, 0.0])  # first solve: joint sweep / its own
def test_deflated_applies_the_inverse_of_the_updated_matrix(monkeypatch, joint_c, rank):
    monkeypatch.setattr(deflate, "JOINT_C", joint_c)
    rng = np.random.default_rng(2)
    B = rng.standard_normal((40, 40))
    A = B @ B.T + 40 * np.eye(40)
    u = rng.standard_normal((40, rank))
    calls = []

    def S(R):
        calls.append(R.shape[1])
        return np.linalg.solve(A, R)

    M = Deflated(u, S)
    assert M.c is None  # W and c come with the first application
    want = np.linalg.solve(A + u @ u.T, np.eye(40)[:, :3])
    for _ in range(2):
        np.testing.assert_allclose(M(np.eye(40)[:, :3]), want, rtol=1e-10, atol=1e-12)
    C = np.eye(rank) + u.T @ np.linalg.solve(A, u)
    assert M.c == pytest.approx(np.linalg.eigvalsh(C)[-1])
    # one sweep with U appended, then (past JOINT_C) one more; then one per application
    assert calls == ([3 + rank, 3] if joint_c == 1e300 else [3 + rank, 3, 3])


def test_deflated_makes_its_own_w_or_takes_the_fallbacks(monkeypatch):
    # the float32 application makes W in its own first sweep (U's columns appended); where
    # the C that W gives is not at least C_MIN I (a W too far off), W and C come from the
    # float64 application (one sweep of it over U)
    rng = np.random.default_rng(4)
    B = rng.standard_normal((30, 30))
    A = B @ B.T + 30 * np.eye(30)
    u = 3.0 * rng.standard_normal((30, 4))
    R = rng.standard_normal((30, 2))
    calls = {"exact": [], "rough": []}

    def S(R):
        calls["exact"].append(R.shape[1])
        return np.linalg.solve(A, R)

    def rough_of(shift):
        def p(R):
            calls["rough"].append(R.shape[1])
            return np.linalg.solve(A + shift * np.eye(30), R)
        return p

    # a near solve: its own W, the joint form (c <= JOINT_C), the float64 one not called
    exact = Deflated(u, S)
    rough = Deflated(u, rough_of(0.01), fallback=exact)
    np.testing.assert_allclose(rough(R), np.linalg.solve(A + 0.01 * np.eye(30) + u @ u.T, R),
                               rtol=1e-10)
    assert rough.w_from == "own" and calls == {"exact": [], "rough": [2 + 4]}
    assert exact.w is None
    # a solve far off (here: of a matrix that is not positive definite): C is not >= I/2,
    # so W and C are the float64 one's, made by one sweep over U
    calls = {"exact": [], "rough": []}
    bad = -np.linalg.eigvalsh(A)[-1] * 2
    exact = Deflated(u, S)
    rough = Deflated(u, rough_of(bad), fallback=exact)
    W = np.linalg.solve(A, u)
    Cinv = np.linalg.inv(np.eye(4) + u.T @ W)
    want = np.linalg.solve(A + bad * np.eye(30), R - u @ (Cinv @ (W.T @ R)))
    np.testing.assert_allclose(rough(R), want, rtol=1e-10, atol=1e-12)
    assert rough.w_from == "fallback" and rough.c == exact.c
    assert calls == {"exact": [4], "rough": [2 + 4, 2]}
    # the float64 one then needs no sweep of its own for W
    np.testing.assert_allclose(exact(R), np.linalg.solve(A + u @ u.T, R), rtol=1e-10)
    assert calls["exact"] == [4, 2]
    # a near solve, but c above JOINT_C (the part would cancel its W's error by about c):
    # the float64 one's W as well
    monkeypatch.setattr(deflate, "JOINT_C", 1.0)
    calls = {"exact": [], "rough": []}
    exact = Deflated(u, S)
    rough = Deflated(u, rough_of(0.01), fallback=exact)
    rough(R)
    assert rough.w_from == "fallback" and calls == {"exact": [4], "rough": [2 + 4, 2]}


def test_deflated_without_a_finite_w_applies_the_solve_alone():
    # a solve that returns non-finite values for U's columns: no low-rank part (S alone),
    # c recorded as NaN, no exception from the eigenvalues of a NaN C
    A = np.diag(np.arange(1.0, 7.0))
    u = np.ones((6, 2))
    R = np.arange(12.0).reshape(6, 2)

    def S(V):
        out = np.linalg.solve(A, V)
        if V.shape[1] > 2:
            out[0, 2:] = np.nan
        return out

    M = Deflated(u, S)
    np.testing.assert_allclose(M(R), np.linalg.solve(A, R))
    assert np.isnan(M.c) and M.w_from == "own"
    np.testing.assert_allclose(M(R), np.linalg.solve(A, R))


def test_mixed_solve_deflates_and_records_it(monkeypatch):
    X, Y = _problem()
    k = get_kernel("gaussian", bandwidth=0.8)  # cond(K) ~ 1e7
    ref = solve_exact(k, X, Y, SolveOptions(precision="float64"))
    opts = dict(precision="mixed", tile_size=64, tol=1e-10)
    sol = solve_exact(k, X, Y, SolveOptions(**opts))
    d = sol.info["deflation"]
    # 300 rows: one landmark per 64 rows at most (4: the mean and three centres)
    assert 2 <= d["rank"] <= 4 and d["woodbury_c"] >= 1
    assert d["landmark_seconds"] >= 0
    assert sol.info["converged"] and sol.info["relative_residual"] <= 1e-10
    K = k(X)
    assert np.linalg.norm(K @ sol.alpha - Y) / np.linalg.norm(Y) <= 1e-9
    np.testing.assert_allclose(sol.alpha, ref.alpha, rtol=0, atol=1e-7 * np.abs(ref.alpha).max())
    monkeypatch.setattr(deflate, "ENABLED", False)
    plain = solve_exact(k, X, Y, SolveOptions(**opts))
    assert plain.info["deflation"] == {"rank": 0, "why": "turned off"}


def _digits_histories(monkeypatch, h, tol):
    from sklearn.datasets import load_digits

    Xd, yd = load_digits(return_X_y=True)
    X, Y = Xd[:500] / 16.0, np.eye(10)[yd[:500]]
    k = get_kernel("gaussian", bandwidth=h)
    out = {}
    for on in (True, False):
        monkeypatch.setattr(deflate, "ENABLED", on)
        out[on] = solve_exact(k, X, Y, SolveOptions(precision="mixed", tile_size=128,
                                                    tol=tol)).info
    return out


def test_deflated_factor_is_the_better_preconditioner(monkeypatch):
    # digits (500 rows: the mean and six k-means centres), h = 3: after the first solve
    # (about the same residual either way) a residual several times smaller each pass
    # (rank one, on a Zen 3: 8.3e-5 and 8.5e-5 first); h = 8 (C's largest eigenvalue
    # ~ 2e4), far fewer passes
    info = _digits_histories(monkeypatch, 3.0, 1e-12)
    h1, h0 = info[True]["refinement_history"], info[False]["refinement_history"]
    assert info[True]["deflation"]["rank"] >= 2 and info[True]["deflation"]["woodbury_c"] > 1
    assert h1[0] < 1.5 * h0[0], (h1, h0)
    assert all(3 * a < b for a, b in zip(h1[1:3], h0[1:3])), (h1, h0)
    assert info[True]["converged"] and info[False]["converged"]
    info = _digits_histories(monkeypatch, 8.0, 1e-10)
    assert info[True]["deflation"]["woodbury_c"] > deflate.JOINT_C
    assert info[True]["converged"] and info[False]["converged"]
    assert info[True]["iterations"] + 2 <= info[False]["iterations"]


def test_wide_gaussian_that_broke_the_float32_factor_now_refines(monkeypatch):
    # digits in [0, 1], Gaussian h = 20: K's entries sit near a common level, the float32
    # Cholesky of K broke down (shift 1e-5, refinement stalled at 0.13); that of
    # K - U U^T needs no shift and the refinement reaches 1e-9
    from sklearn.datasets import load_digits

    Xd, yd = load_digits(return_X_y=True)
    X, Y = Xd[:500] / 16.0, np.eye(10)[yd[:500]]
    k = get_kernel("gaussian", bandwidth=20.0)
    opts = dict(precision="mixed", tol=1e-8)
    sol = solve_exact(k, X, Y, SolveOptions(**opts))
    assert sol.info["deflation"]["rank"] >= 1 and sol.info["shift"] == 0.0
    assert sol.info["converged"] and sol.info["relative_residual"] <= 1e-8
    K = k(X)
    assert np.linalg.norm(K @ sol.alpha - Y) / np.linalg.norm(Y) <= 1e-8
    monkeypatch.setattr(deflate, "ENABLED", False)
    with pytest.warns(RuntimeWarning, match="refinement stopped"):
        plain = solve_exact(k, X, Y, SolveOptions(**opts))
    assert plain.info["shift"] > 0 and plain.info["relative_residual"] > 1e-3


def test_deflation_benchmark_dry_run(tmp_path):
    # benchmarks/bench_deflation.py --dry-run: both variants in fresh processes, the
    # deflation reaching the child (its record says so), the JSON with the machine
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "bench_deflation.py"),
                           "--dry-run", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads((tmp_path / "deflation_ab_dry_run.json").read_text())
    runs = {r["rank"]: r for r in out["runs"]}  # default: at most 32 landmarks against 1
    assert set(runs) == {32, 1} and all(r["status"] == "ok" for r in runs.values())
    assert runs[32]["deflation"]["rank"] >= 2  # the mean and k-means centres
    assert runs[1]["deflation"]["rank"] == 1
    assert runs[1]["deflation"]["landmark"] == "mean of the training rows"
    assert runs[32]["precision"] == "mixed" and runs[32]["iterations"] >= 1
    assert out["machine"]["peaks"]["cpu"]["sgemm_gflops"] > 0
    assert set(out["medians"]) == {"rank32_1500", "rank1_1500"}
    bad = subprocess.run([sys.executable, str(root / "benchmarks" / "bench_deflation.py"),
                          "--dry-run", "--ranks", "32", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "--ranks takes two" in bad.stderr


def test_bench_child_sets_the_deflation_rank_or_turns_it_off():
    from kernelfit.bench.runner import run_child

    spec = {"task": "solve", "impl": "kernelfit", "n": 400, "n_test": 20, "d": 8,
            "dataset": "random", "kernel": "gaussian", "bandwidth": 1.0,
            "precision": "mixed", "repeats": 1}
    got = {}
    for rank in (0, 3):
        child = run_child({**spec, "deflate": rank}, timeout=300)
        assert child["status"] == "ok", child.get("stderr_tail")
        got[rank] = child["result"]["repeats"][0]["deflation"]
    assert got[0] == {"rank": 0, "why": "turned off"}
    assert got[3]["candidates"] == 3 and 1 <= got[3]["rank"] <= 3


def test_deflation_rank_benchmark_dry_run(tmp_path):
    # benchmarks/bench_deflation_rank.py --dry-run: digits, ranks 1 and 4, each in a fresh
    # process with deflate.RANK set there (the records say so), the JSON with the machine
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_deflation_rank.py"
    proc = subprocess.run([sys.executable, str(script), "--dry-run", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads((tmp_path / "deflation_rank_dry_run.json").read_text())
    runs = {r["rank"]: r for r in out["runs"]}
    assert set(runs) == {1, 4} and all(r["status"] == "ok" for r in runs.values())
    assert runs[1]["deflation"]["rank"] == 1
    assert runs[4]["deflation"]["candidates"] == 4 and runs[4]["deflation"]["rank"] >= 2
    assert all(r["precision"] == "mixed" and r["solve_iterations"] >= 1
               for r in runs.values())
    assert out["machine"]["cpu"]
    bad = subprocess.run([sys.executable, str(script), "--ranks", "x", "--data-dir", "."],
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "--ranks take" in bad.stderr
