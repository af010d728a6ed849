"""Mixed precision: float32 factor + float64 refinement reaches tol and equals float64."""

import json

import numpy as np
import pytest

from kernelfit import KernelInterpolator
from kernelfit.errors import InputError
from kernelfit.kernels import get_kernel
from kernelfit.solvers.exact import SolveOptions, solve_exact
from kernelfit.solvers.tiled import kernel_matvec


def _problem(n=300, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, d))
    Y = np.eye(3)[rng.integers(0, 3, n)]
    return X, Y


@pytest.mark.parametrize("refinement", ["cg", "ir"])
def test_mixed_reaches_tol_and_equals_float64(refinement):
    X, Y = _problem()
    k = get_kernel("gaussian", bandwidth=0.8)   # cond(K) ~ 1e7: ill-conditioned for float32
    K = k(X)
    assert np.linalg.cond(K) > 1e6
    ref = solve_exact(k, X, Y, SolveOptions(precision="float64"))
    sol = solve_exact(k, X, Y, SolveOptions(precision="mixed", tile_size=64,
                                            refinement=refinement))
    assert sol.dtype == "mixed" and sol.info["precision"] == "mixed"
    assert sol.info["converged"] and sol.info["shift"] == 0.0
    assert sol.info["relative_residual"] <= 1e-10
    hist = sol.info["refinement_history"]
    assert len(hist) == sol.info["iterations"] + 1 and hist[-1] <= 1e-10 < hist[0]
    true_res = np.linalg.norm(K @ sol.alpha - Y) / np.linalg.norm(Y)
    assert true_res <= 1e-9
    np.testing.assert_allclose(sol.alpha, ref.alpha, rtol=0, atol=1e-7 * np.abs(ref.alpha).max())
    json.dumps(sol.as_dict())  # the record is JSON-ready


def test_breakdown_shifts_and_uses_preconditioner_only():
    rng = np.random.default_rng(0)
    X = rng.random((300, 3))
    Y = np.stack([np.sin(3 * X.sum(1)), np.cos(2 * X[:, 0])], 1)
    k = get_kernel("gaussian", bandwidth=0.3)  # cond ~ 5e10: float32 potrf breaks down
    sol = solve_exact(k, X, Y, SolveOptions(precision="mixed", tile_size=64, max_iter=400))
    info = sol.info
    assert info["shift"] > 0 and info["preconditioner_only"]
    assert "preconditioner" in info["note"] and not info["factor_attempts"][0]["ok"]
    assert info["converged"] and info["relative_residual"] <= 1e-10
    K = k(X)
    assert np.linalg.norm(K @ sol.alpha - Y) / np.linalg.norm(Y) < 1e-9


def test_auto_picks_float64_when_it_fits_and_mixed_otherwise(monkeypatch):
    X, Y = _problem(n=400)
    k = get_kernel("gaussian", bandwidth=0.5)
    assert solve_exact(k, X, Y, SolveOptions()).info["precision"] == "float64"
    # the float64 plan (818 KB) no longer fits in 90% of 800 KB, the mixed one (613 KB) does
    monkeypatch.setenv("KERNELFIT_MEMORY_LIMIT", str(800_000))
    sol = solve_exact(k, X, Y, SolveOptions(tile_size=50))
    assert sol.info["precision"] == "mixed" and "does not fit" in sol.info["precision_reason"]
    assert sol.info["relative_residual"] <= 1e-10


def test_estimator_and_fast_matvec():
    X, Y = _problem(n=250)
    y = Y.argmax(1)
    m = KernelInterpolator(bandwidth=0.5, precision="mixed", tile_size=64).fit(X, y)
    assert m.precision_ == "mixed" and m.relative_residual_ <= 1e-10
    assert m.refinement_history_[-1] == pytest.approx(m.relative_residual_, rel=1e-3, abs=1e-14)
    assert m.train_error_ == 0.0
    k = get_kernel("normalized", degree=4)
    V = np.random.default_rng(1).standard_normal((250, 4))
    np.testing.assert_allclose(kernel_matvec(k, X, V, tile_size=40, n_threads=2),
                               kernel_matvec(k, X, V, tile_size=64, n_threads=1),
                               rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("bad", [dict(tol=0), dict(tol=-1e-3), dict(tol=2.0), dict(tol="x"),
                                 dict(tol=float("nan")), dict(max_iter=0), dict(max_iter=1.5),
                                 dict(refinement="gmres"), dict(precision="float16"),
                                 dict(tile_size=8), dict(resume=True),
                                 dict(precision="mixed", solver="eigh"),
                                 dict(distributed="yarn"),
                                 dict(scheduler="tcp://a:1", distributed="local")])
def test_bad_options_are_input_errors(bad):
    X, Y = _problem(n=50)
    with pytest.raises(InputError):
        solve_exact(get_kernel("gaussian"), X, Y, SolveOptions(**bad))


def test_cli_flags_reach_the_record(capsys):
    from kernelfit.cli import main

    rc = main(["solve", "--dataset", "digits", "--n-train", "300", "--n-test", "100",
               "--bandwidth", "5", "--precision", "mixed", "--tol", "1e-11", "--refine", "ir",
               "--json", "--no-progress"])
    assert rc in (0, None)
    rec = json.loads(capsys.readouterr().out)
    assert rec["precision"] == "mixed" and rec["refinement"] == "ir"
    assert rec["relative_residual"] <= 1e-11 and rec["refinement_history"]
