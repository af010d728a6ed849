"""Every way out the command line offers really gets past the check that refused.

Memory: over random requests that do not fit (hypothesis), each offered change passes the
solve's real pre-flight (``kernelfit.run.preflight``) on the same memory, and nothing
already in use is offered. Not positive definite: for each diagnosis (duplicates, a
low-rank linear or polynomial kernel, an ill-conditioned float64 or float32 K), each
offered way out, applied to the same command, solves.
"""

from __future__ import annotations

import re
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kernelfit.backend import CPUBackend
from kernelfit.cli import main
from kernelfit.cli._advice import memory_ways_out, ridge_that_factors
from kernelfit.errors import InputError, MemoryPlanError
from kernelfit.solvers.plan import would_fit
from kernelfit.options import SolverOptions
from kernelfit.run import preflight

GiB = 1 << 30


def _preflight(req: dict, available: int) -> None:
    """The solve's own pre-flight for ``req`` with ``available`` bytes of memory."""
    placement = req.get("placement")
    dtype, precision = req.get("dtype", "float64"), req.get("precision", "auto")
    if precision == "auto" and dtype == "float64":
        dtype = None  # a request's float64 under auto is auto's (the tree: a dtype not named)
    cfg = SolverOptions(dtype=dtype, precision=precision,
                      solver=req.get("solver", "cholesky"), tile_size=req.get("tile_size"),
                      ooc_dir="/nonexistent/ooc" if placement == "disk" else None,
                      scheduler="tcp://nowhere:1" if placement == "dask" else None)
    with mock.patch.object(CPUBackend, "free_memory", lambda self: available):
        preflight(cfg, req["n"], req["d"], req["n_outputs"], req.get("n_test", 0))


requests = st.fixed_dictionaries({
    "n": st.integers(2, 400_000),
    "d": st.integers(1, 4096),
    "n_outputs": st.integers(1, 20),
    "n_test": st.integers(0, 20_000),
    "solver": st.sampled_from(["cholesky", "eigh", "lstsq"]),
    "dtype": st.sampled_from(["float64", "float32"]),
    "precision": st.sampled_from(["auto", "float64", "mixed"]),
})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(req=requests, available=st.integers(0, 64 * GiB))
def test_memory_ways_out_pass_the_real_preflight(req, available):
    if req["precision"] == "float64":
        req["dtype"] = "float64"  # the CLI refuses the contradiction
    if req["precision"] == "mixed":
        req["dtype"] = "float32"  # ... and float64 with mixed precision
    if req["solver"] != "cholesky":
        req["precision"] = "auto"  # mixed precision is a Cholesky solve
    assume(not would_fit(req, available))
    # the premise: the real pre-flight refuses the request too
    with pytest.raises(MemoryPlanError):
        _preflight(req, available)
    for text, change in memory_ways_out(req, available, dask_installed=True):
        assert text.startswith("--")
        assert any(req.get(k) != v for k, v in change.items()), (text, "already in use")
        _preflight(dict(req, **change), available)  # must not raise
        if "n" in change:
            assert f"--n-train {change['n']}" in text


def test_float32_is_not_offered_when_in_use_and_mixed_not_when_it_would_not_shrink():
    req = {"n": 200_000, "d": 784, "n_outputs": 10, "n_test": 10_000, "dtype": "float32"}
    ways = memory_ways_out(req, 24 * GiB, dask_installed=False)
    texts = " ".join(t for t, _ in ways)
    assert "--dtype float32" not in texts and "--precision mixed" not in texts
    # n = 200,000 in float32 needs about 76 GiB: only a smaller n or disk can help
    assert "--n-train" in texts and "--out-of-core" in texts


def test_a_smaller_n_for_the_minimum_norm_solvers_says_what_it_costs():
    """The largest n whose dense K fits takes hours in one LAPACK call Ctrl-C waits for."""
    req = {"n": 60_000, "d": 784, "n_outputs": 10, "n_test": 0, "solver": "eigh"}
    (text,) = [t for t, change in memory_ways_out(req, 24 * GiB) if "n" in change]
    assert "one call of order n^3 that Ctrl-C waits for" in text
    small = dict(req, n=9_000)
    assert not any("Ctrl-C" in t for t, _ in memory_ways_out(small, 1 * GiB))


def test_no_n_train_offered_when_nothing_fits():
    req = {"n": 1000, "d": 10, "n_outputs": 2}
    ways = memory_ways_out(req, 0, dask_installed=True)
    assert ways == []


# ---------------------------------------------------------------- not positive definite
_FLAG = re.compile(r"(--[a-z0-9-]+)(?: ([^\s();,]+))?")


def _ways(err: str):
    assert "Ways out: " in err, err
    return err.split("Ways out: ", 1)[1].strip().rstrip(".").split("; ")


def _apply(argv, way, tmp_path):
    """The command with the flags of one way out applied; None when it names no flags."""
    flags = _FLAG.findall(way.split(" (")[0])
    if not flags:
        return None
    out = list(argv)
    for flag, value in flags:
        if value in ("or", "DIR", "ADDRESS", "R", ""):
            value = {"DIR": str(tmp_path / "ooc")}.get(value, None)
        if flag in out:
            i = out.index(flag)
            del out[i:i + 2]
        out += [flag] + ([value] if value else [])
    return out


def _npz(tmp_path, X, y):
    path = tmp_path / "d.npz"
    np.savez(path, X_train=X, y_train=y)
    return f"npz:{path}"


def _check_every_way(tmp_path, capsys, argv, dedup=None):
    code = main(argv)
    err = capsys.readouterr().err
    # rounding can let a Cholesky of an exactly singular K through: then there is no
    # refusal to test
    assume(code == 5)
    assert "--dtype float64" not in err or "float32" in argv
    tried = 0
    for way in _ways(err):
        if way.startswith("remove the") and dedup is not None:
            assert main(argv[:2] + [dedup] + argv[3:] + ["--json"]) == 0, way
            capsys.readouterr()
            tried += 1
            continue
        new = _apply(argv, way, tmp_path)
        if new is None:
            continue
        if "--scheduler" in new:
            continue  # needs a cluster
        code = main(new + ["--json"])
        out, err2 = capsys.readouterr()
        assert code == 0, (way, err2)
        tried += 1
    assert tried >= 1


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(n=st.integers(20, 80), n_dup=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_duplicates_ways_out_solve(tmp_path, capsys, n, n_dup, seed):
    rng = np.random.default_rng(seed)
    X = rng.random((n, 6))
    X = np.vstack([X, X[:n_dup]])
    y = rng.integers(0, 3, X.shape[0])
    data = _npz(tmp_path, X, y)
    dedup = tmp_path / "dedup.npz"
    np.savez(dedup, X_train=X[:n], y_train=y[:n])
    _check_every_way(tmp_path, capsys, ["solve", "--dataset", data, "--bandwidth", "0.5"],
                     dedup=f"npz:{dedup}")


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(kernel=st.sampled_from(["linear", "polynomial"]), d=st.integers(1, 3),
       seed=st.integers(0, 2**16))
def test_low_rank_ways_out_solve(tmp_path, capsys, kernel, d, seed):
    rng = np.random.default_rng(seed)
    X = rng.random((60, d))
    y = rng.integers(0, 2, 60)
    # --degree is the polynomial kernel's (the linear kernel has none: refused)
    argv = (["solve", "--dataset", _npz(tmp_path, X, y), "--kernel", kernel]
            + (["--degree", "2"] if kernel == "polynomial" else []))
    _check_every_way(tmp_path, capsys, argv)


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(bandwidth=st.sampled_from(["50", "500", "1e4"]), dtype=st.sampled_from(["float64",
                                                                               "float32"]))
def test_ill_conditioned_ways_out_solve(tmp_path, capsys, bandwidth, dtype):
    argv = ["solve", "--dataset", "digits", "--n-train", "300", "--n-test", "50",
            "--bandwidth", bandwidth, "--dtype", dtype]
    code = main(argv + ["--json"])
    err = capsys.readouterr().err
    assume(code == 5)
    if dtype == "float64":
        assert "--dtype float64" not in err  # already in use: never offered
    _check_every_way(tmp_path, capsys, argv)


def test_ridge_grows_with_n_precision_and_a_ridge_in_use():
    base = {"n": 1000, "dtype": "float64", "max_diagonal": 1.0}
    r64 = ridge_that_factors(base)
    assert ridge_that_factors(dict(base, dtype="float32")) > 1e6 * r64
    assert ridge_that_factors(dict(base, n=100_000)) > r64
    assert ridge_that_factors(dict(base, ridge=1.0)) >= 10.0


# ---------------------------------------------------------------- not exact
def _tols_offered(ways):
    """The --tol values the ways out suggest (as a flag to set, not a fact quoted)."""
    out = []
    for w in ways:
        m = re.match(r"(?:--precision mixed )?--tol (\S+) \(", w)
        if m:
            out.append(float(m.group(1)))
    return out


@settings(max_examples=200, deadline=None)
@given(tol=st.floats(1e-15, 0.5), residual=st.floats(1e-12, 1.0),
       precision=st.sampled_from(["mixed", "float32", "float64"]), converged=st.booleans(),
       cause=st.sampled_from(["tol", "bandwidth", "ill-conditioning", "ridge"]))
def test_inexact_advice_never_offers_a_tol_at_or_above_the_one_given(tol, residual, precision,
                                                                      converged, cause):
    from types import SimpleNamespace

    from kernelfit.cli._advice import inexact_ways_out
    from kernelfit.kernel_defaults import EXACT_RESIDUAL

    if precision != "mixed":
        converged = None
    if cause == "tol":
        assume(precision == "mixed" and converged and tol > EXACT_RESIDUAL)
    rec = {"exact": False, "relative_residual": residual, "cause": cause,
           "precision": precision, "n_train": 100, "n_features": 5, "n_classes": 3,
           "device": "cpu"}
    if precision == "mixed":
        rec.update(refinement_tol=tol, refinement_converged=converged)
    args = SimpleNamespace(tol=tol, bandwidth=None, device="cpu")
    ways = inexact_ways_out([rec], args, bandwidth_given=False)
    for t in _tols_offered(ways):
        assert t < tol or precision == "float32"  # float32: no refinement ran yet
        assert t <= EXACT_RESIDUAL
    if precision == "mixed" and not converged:
        assert not _tols_offered(ways)
        assert any(w.startswith("--precision float64") for w in ways)
    if precision == "mixed" and cause == "tol":
        assert _tols_offered(ways) and not any("--precision float64" in w for w in ways)
    assert ways[-1].startswith("--tolerance ")
    accepted = float(ways[-1].split()[1])
    assert accepted >= residual


def test_dtype_precision_conflict_names_both_flags():
    from kernelfit.cli._advice import explain
    from kernelfit.errors import InputError

    with pytest.raises(InputError) as info:
        SolverOptions(dtype="float32", precision="float64")
    assert explain(info.value) == ("--dtype float32 contradicts --precision float64; give one "
                                   "of them (--precision float64 alone stores K in float64)")


def test_refinement_flags_with_a_dtype_alone_name_that_dtype(capsys):
    """--dtype float64 fixes a float64 factor, so --tol is refused naming --dtype float64
    (not a --precision the user did not type), and the way out it offers works."""
    assert main(["solve", "--dataset", "digits", "--n-train", "200", "--dtype", "float64",
                 "--tol", "1e-9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--tol does not apply with --dtype float64" in err
    assert "--precision mixed in place of --dtype float64" in err
    assert "auto without --dtype" in err
    # both ways out work: mixed precision in its place, or auto without the dtype
    for way in (["--precision", "mixed"], []):
        assert main(["solve", "--dataset", "digits", "--n-train", "200", "--tol", "1e-9",
                     *way, "--json"]) == 0
        capsys.readouterr()


def test_library_option_names_read_as_flags_on_the_command_line():
    from kernelfit.cli._advice import explain, flags_for_names

    assert flags_for_names("Is it up? (distributed='local' starts a cluster here)") == \
        "Is it up? (--distributed local starts a cluster here)"
    assert flags_for_names("give its folder (ooc_dir)") == "give its folder (--out-of-core)"
    assert flags_for_names("continue it with resume=True") == "continue it with --resume"
    assert flags_for_names("K is 5 x 5, tol 1e-10") == "K is 5 x 5, tol 1e-10"
    exc = InputError("resume continues an out-of-core run: give its folder (ooc_dir)",
                     param="resume")
    assert explain(exc) == ("--resume continues an out-of-core run: give its folder "
                            "(--out-of-core)")


def test_a_ridge_solve_is_offered_only_the_tolerance():
    """A ridge solve does not interpolate in any precision: refining a float32 factor
    (--precision mixed) cannot make it exact, so only --tolerance is offered."""
    from types import SimpleNamespace

    from kernelfit.cli._advice import inexact_ways_out

    rec = {"exact": False, "relative_residual": 0.11, "cause": "ridge",
           "precision": "float32", "n_train": 100, "n_features": 5, "n_classes": 3,
           "device": "cpu"}
    ways = inexact_ways_out([rec], SimpleNamespace(tol=None, bandwidth=None, device="cpu"),
                            bandwidth_given=False)
    assert ways == ["--tolerance 1.1e-01 to accept this residual"]


def test_missing_cifar10_names_the_jpeg_set_beside_it(tmp_path):
    """solve's missing-files line offers the JPEG re-encoding beside the official folder
    (as `datasets info cifar10` does), and says nothing of it when there is none."""
    from kernelfit.cli._advice import missing_data_message

    facts = {"missing": ["cifar-10-python.tar.gz"], "directory": str(tmp_path / "cifar10"),
             "dataset": "cifar10"}
    assert "imagefolder" not in missing_data_message(facts, "")
    (tmp_path / "cifar10-jpeg").mkdir()
    (tmp_path / "cifar10-jpeg" / "cifar10-jpeg.tar.gz").write_bytes(b"")
    line = missing_data_message(facts, "")
    assert line.endswith("or the JPEG re-encoding found beside them: --dataset imagefolder:"
                         f"{tmp_path / 'cifar10-jpeg' / 'cifar10-jpeg.tar.gz'}")


def test_no_finite_residual_still_gets_a_way_out(capsys):
    """A NaN residual matches no way out (nothing accepts or refines it): the line names
    the inputs instead of ending in 'ways out: .'."""
    from types import SimpleNamespace

    from kernelfit.cli.solve import _exactness_exit

    rec = {"exact": False, "relative_residual": float("nan"),
           "inexact_reason": "no finite float64 residual was computed", "n_train": 10,
           "n_features": 2, "n_classes": 2, "device": "cpu"}
    args = SimpleNamespace(tolerance=None, tol=None, bandwidth=None, device="cpu", save=None)
    assert _exactness_exit(rec, args) == 6
    err = capsys.readouterr().err.strip()
    assert "ways out: ." not in err and err.endswith("rescale them.")


@pytest.mark.parametrize("extra", [["--solver", "eigh"], ["--precision", "mixed"],
                                   ["--solver", "eigh", "--bandwidth", "0.3"]])
def test_duplicates_with_other_labels_are_the_cause_of_every_inexact_solve(tmp_path, capsys,
                                                                            extra):
    """After the not-positive-definite refusal, each way out ended in a line that blamed
    the bandwidth (or offered a float64 factorization): no solve fits two labels at one
    point, and the ways out now say so and work."""
    rng = np.random.default_rng(0)
    X = rng.random((60, 5))
    y = np.arange(60) % 3
    Xd, yd = np.vstack([X, X[:4]]), np.concatenate([y, (y[:4] + 1) % 3])
    argv = ["solve", "--dataset", _npz(tmp_path, Xd, yd), "--bandwidth", "1"] + extra
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 6 and "4 training point(s) repeat others with another target" in err
    ways = err.split("ways out: ")[1].rstrip().rstrip(".").split("; ")
    assert ways[0].startswith("remove the 4 training point(s) that repeat others")
    assert not any("bandwidth" in w or "float64" in w for w in ways)
    dedup = tmp_path / "dedup.npz"
    np.savez(dedup, X_train=X, y_train=y)
    assert main(argv[:2] + [f"npz:{dedup}"] + argv[3:] + ["--json"]) == 0
    accept = next(w for w in ways if w.startswith("--tolerance"))
    assert main(argv + accept.split()[:2] + ["--json"]) == 0


def test_a_float32_solve_is_offered_mixed_precision_without_a_tol_nobody_typed(capsys):
    """With --tol's default no longer filled in by argparse, the way out of an inexact
    float32 solve read '--precision mixed --tol 1e-10' (mixed takes 1e-10 anyway)."""
    from kernelfit.cli import main

    assert main(["solve", "--dataset", "digits", "--precision", "float32"]) == 6
    err = capsys.readouterr().err
    assert "ways out: --precision mixed (refines the solution to a relative residual of " \
           "1e-10)" in err and "--tol " not in err
