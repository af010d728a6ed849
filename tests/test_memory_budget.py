"""A memory budget: the most memory a solve plans for, and mixed precision's kept tiles
filling it (memory for time; the same certified answer)."""

from __future__ import annotations

import argparse
import json
import re

import numpy as np
import pytest

from kernelfit.cli import main
from kernelfit.cli._types import size_arg
from kernelfit.errors import InputError, MemoryPlanError
from kernelfit.kernels import get_kernel
from kernelfit.memory import SAFETY
from kernelfit.options import SolverOptions
from kernelfit.solvers import plan
from kernelfit.solvers.exact import solve_exact
from kernelfit.solvers.options import SolveOptions

GiB = 1 << 30


@pytest.mark.parametrize("text,value", [
    ("16GiB", 16 * GiB), ("16G", 16 * GiB), ("16gib", 16 * GiB), ("16GB", 16 * 10 ** 9),
    ("500 MiB", 500 << 20), ("1.5e10", 15 * 10 ** 9), ("2097152", 2 << 20), ("1T", 1 << 40),
    ("1MiB", 1 << 20)])
def test_sizes_parse_in_binary_and_decimal_units(text, value):
    assert size_arg(text) == value


@pytest.mark.parametrize("text", ["lots", "0", "-1GiB", "1000", "16XB", "GiB", "nan", "inf",
                                  "16GiBB", ""])
def test_sizes_that_are_not_sizes_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match="a size such as 16GiB") as info:
        size_arg(text)
    assert f"got {text!r}" in str(info.value)  # what was typed ('16XB' had said '16x')


@pytest.mark.parametrize("bad", [0, -5, 0.5, float("nan"), float("inf"), "lots", True])
def test_the_options_tree_refuses_a_budget_that_is_not_bytes(bad):
    with pytest.raises(InputError, match="memory_budget must be a positive number of bytes"):
        SolverOptions(memory_budget=bad)


def test_the_options_tree_keeps_the_budget_as_whole_bytes():
    assert SolverOptions(memory_budget=1.6e10).memory_budget == 16_000_000_000
    assert SolverOptions().memory_budget is None
    assert SolverOptions(memory_budget=2 * GiB).solve_options().memory_budget == 2 * GiB


def _mixed(budget, available=23 * GiB, check=True):
    opts = SolveOptions(precision="mixed", memory_budget=budget).validate()
    return plan.plan_solve(60000, 784, 10, opts, device="cpu", available=available,
                           n_test=10000, check=check, grid=True)


def test_kept_tiles_fill_the_budget_not_a_share_of_what_is_available():
    default, big, small = _mixed(None), _mixed(16 * GiB), _mixed(12 * GiB)
    kept = "K tiles kept (refinement)"
    # without a budget: the plan stays within KEEP_F64_SHARE of what is available, short of
    # it by less than the budget's step, one float64 tile (this machine's tile size: 2,000
    # rows on a 512 KiB L2, 32 MB; 2,500 on 1 MiB, 50 MB)
    step = 8 * default.tile_size ** 2
    assert default.memory.total <= plan.KEEP_F64_SHARE * 23 * GiB < default.memory.total + step
    assert default.memory.machine_available is None
    assert "memory_budget_bytes" not in default.record()
    # with one: the kept tiles fill it, up to the pre-flight's headroom
    for sp, budget in ((big, 16 * GiB), (small, 12 * GiB)):
        assert sp.memory.total <= SAFETY * budget < sp.memory.total + step
        assert sp.memory.fits() and sp.memory.available == budget
        rec = sp.record()
        assert rec["memory_budget_bytes"] == budget
        assert rec["machine_available_bytes"] == 23 * GiB
    assert default.memory.items[kept] < small.memory.items[kept] < big.memory.items[kept]
    assert default.keep_budget < small.keep_budget < big.keep_budget


def test_a_budget_above_what_is_available_is_refused_with_the_figure():
    with pytest.raises(InputError, match=r"memory_budget of 30\.0 GiB is more than the "
                                         r"23\.0 GiB of memory available") as exc:
        _mixed(30 * GiB)
    assert exc.value.facts["param"] == "memory_budget"
    # unchecked plans (check_memory=False) are not refused
    assert _mixed(30 * GiB, check=False).route == "mixed"


def test_a_plan_over_the_budget_is_refused_naming_the_budget():
    sp = _mixed(6 * GiB)
    with pytest.raises(MemoryPlanError, match="the memory budget is 6.0 GiB") as exc:
        sp.memory.check(request={"n": 60000})
    assert exc.value.available_bytes == 6 * GiB
    assert exc.value.facts["machine_available_bytes"] == 23 * GiB


def test_auto_plans_within_the_budget(monkeypatch):
    """A budget the float64 plan does not fit leaves auto mixed precision, with no float64
    fallback to fall back to; a larger one lets auto keep more of K and expect faster
    passes."""
    from kernelfit.backend import get_backend

    monkeypatch.setattr(plan, "gemm_rates", lambda be: {
        "float64": 67e9, "float32": 134e9, "memory_bytes_per_s": 4e10,
        "thin_seconds_per_entry": {"float64": 1.4e-9, "float32": 6.4e-10},
        "finish_entries_per_s": 4e8})

    def auto(budget):
        opts = SolveOptions(residual=True, memory_budget=budget).validate()
        return plan.plan_solve(60000, 784, 10, opts, device="cpu", available=23 * GiB,
                               n_test=10000, backend=get_backend("cpu"), grid=True)

    tight, default, roomy = auto(10 * GiB), auto(None), auto(20 * GiB)
    assert tight.precision == "mixed" and tight.fallback is None
    assert "does not fit in the memory budget" in tight.reason
    t_default = default.choice["expected_time"]
    t_roomy = roomy.choice["expected_time"]
    assert t_default["kept_fraction"] < t_roomy["kept_fraction"] == 1.0
    assert t_roomy["pass_s"] < t_default["pass_s"]
    assert roomy.precision == default.precision == "mixed"
    assert roomy.fallback.memory.machine_available == 23 * GiB


def _problem(n=1200, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(size=(n, d))
    Y = np.eye(3)[rng.integers(0, 3, n)]
    return X, Y


def test_a_larger_budget_keeps_more_tiles_and_gives_the_same_certified_answer(monkeypatch):
    X, Y = _problem()
    k = get_kernel("gaussian", bandwidth=0.3)
    opts = dict(precision="mixed", tile_size=100, tol=1e-11)
    probe = plan.plan_solve(1200, 6, 3, SolveOptions(**opts).validate(), device="cpu",
                            available=None)
    base = probe.memory.total - probe.memory.items["K tiles kept (refinement)"]
    limit = int((base + (2 << 20)) / plan.KEEP_F64_SHARE)  # 2 MiB of K's 5.3 MiB kept
    monkeypatch.setenv("KERNELFIT_MEMORY_LIMIT", str(limit))
    default = solve_exact(k, X, Y, SolveOptions(**opts))
    budget = solve_exact(k, X, Y, SolveOptions(**opts, memory_budget=limit))
    n_tiles = default.info["n_tiles_lower"]
    assert 0 < default.info["kept_tiles"] < n_tiles
    assert budget.info["kept_tiles"] == n_tiles
    assert budget.memory_plan["memory_budget_bytes"] == limit
    K = k(X)
    for sol in (default, budget):
        assert sol.info["converged"]
        assert np.linalg.norm(K @ sol.alpha - Y) / np.linalg.norm(Y) <= 1e-11
    np.testing.assert_allclose(budget.alpha, default.alpha, rtol=0, atol=1e-6 * np.abs(
        default.alpha).max())


@pytest.mark.parametrize("extra,budget", [([], "8MiB"), (["--n-train", "900"], "2MiB"),
                                          (["--precision", "mixed"], "4MiB")])
def test_the_cli_way_out_of_a_budget_too_small_works(capsys, extra, budget):
    """The budget offered is the least that fits, to the MiB: it runs, a MiB less does not."""
    argv = ["solve", "--dataset", "digits", *extra, "--memory-budget", budget]
    assert main(argv) == 4
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    way = re.search(r"--memory-budget (\d+MiB) or more \(up to the [\d.]+ GiB available\)",
                    err)
    assert way, err
    need = size_arg(way.group(1))
    assert main(argv[:-1] + [way.group(1), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["memory_plan"]["memory_budget_bytes"] == need
    # the least that fits: a MiB less is refused
    assert main(argv[:-1] + [f"{need // 2 ** 20 - 1}MiB"]) == 4
    capsys.readouterr()


def test_the_estimator_takes_the_budget():
    from kernelfit.estimator import KernelInterpolator

    X, Y = _problem(n=200)
    y = Y.argmax(1)
    est = KernelInterpolator(bandwidth=0.7, memory_budget=4 * GiB)
    assert est.get_params()["memory_budget"] == 4 * GiB
    with pytest.raises(MemoryPlanError, match="memory budget"):
        KernelInterpolator(bandwidth=0.7, memory_budget=1 << 16).fit(X, y)
    assert est.fit(X, y).score(X, y) == 1.0


def test_a_model_pickled_before_the_budget_existed_loads_with_its_default():
    import pickle

    from kernelfit.estimator import KernelInterpolator

    X, Y = _problem(n=100)
    est = KernelInterpolator(bandwidth=0.7).fit(X, Y.argmax(1))
    state = est.__getstate__()
    del state["memory_budget"]  # what an older kernelfit pickled
    old = KernelInterpolator.__new__(KernelInterpolator)
    old.__setstate__(state)
    assert old.get_params()["memory_budget"] is None
    assert (pickle.loads(pickle.dumps(old)).predict(X) == est.predict(X)).all()


def test_out_of_core_panels_take_half_the_budget(tmp_path, monkeypatch):
    """Out of core, K's tiles live on disk and a panel of them in memory takes half the
    memory: half the budget where one is set, half of what is available otherwise."""
    from kernelfit.solvers import ooc

    seen = []
    panel_tiles = ooc._panel_tiles
    monkeypatch.setattr(ooc, "_panel_tiles",
                        lambda store, k0, budget: seen.append(budget) or panel_tiles(
                            store, k0, budget))
    X, Y = _problem(n=300)
    k = get_kernel("gaussian", bandwidth=0.3)
    sol = solve_exact(k, X, Y, SolveOptions(ooc_dir=str(tmp_path / "a"), tile_size=64,
                                            memory_budget=64 << 20))
    assert sol.info["out_of_core"] and sol.info["converged"]
    assert seen and set(seen) == {32 << 20}
    seen.clear()
    solve_exact(k, X, Y, SolveOptions(ooc_dir=str(tmp_path / "b"), tile_size=64))
    assert seen and all(b > 32 << 20 for b in seen)  # half of what is available


def test_the_solve_table_shows_the_budget_and_the_tiles_kept(capsys):
    assert main(["solve", "--dataset", "digits", "--precision", "mixed", "--tile-size", "500",
                 "--memory-budget", "1GiB"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"peak memory +[\d.]+ [KMG]iB \(solve planned [\d.]+ [KM]iB, "
                     r"budget 1\.0 GiB\)", out), out
    assert re.search(r"K kept for refinement +6 of 6 tiles", out), out
    assert main(["solve", "--dataset", "digits"]) == 0
    out = capsys.readouterr().out
    assert "budget" not in out and "K kept" not in out
    assert re.search(r"peak memory +[\d.]+ [KMG]iB \(solve planned [\d.]+ [KM]iB\)", out)


def test_the_least_budget_is_found_on_the_plans_mixed_precision_included():
    """Full MNIST under a budget neither plan fits: the refusal's figure is the float64
    plan's (about 15 GB), but mixed precision fits from about 8 GiB, and that is offered."""
    from kernelfit.cli._advice import least_budget
    from kernelfit.solvers.plan import plan_request, would_fit

    req = {"n": 60000, "d": 717, "n_outputs": 10, "n_test": 10000}
    size, text = least_budget(req, 23 * GiB)
    assert text == f"{size / GiB:.1f}GiB" and size_arg(text) == size
    assert would_fit(req, size) and not would_fit(req, size - GiB // 10)
    assert plan_request(req, size).precision == "mixed"
    assert size < plan_request(dict(req, precision="float64"), None).memory.total
    assert least_budget(req, 4 * GiB) is None  # not even all of it would do
    small = {"n": 900, "d": 64, "n_outputs": 10}
    size, text = least_budget(small, 23 * GiB)
    assert text == f"{size >> 20}MiB" and size_arg(text) == size
    assert would_fit(small, size) and not would_fit(small, size - (1 << 20))


def _plan(n, budget, **kw):
    opts = SolveOptions(memory_budget=budget, **kw).validate()
    return plan.plan_solve(n, 64, 10, opts, device="cpu", available=23 * GiB, n_test=500)


def test_an_automatic_tile_size_is_halved_until_the_plan_fits():
    whole = _plan(1438, None, precision="float64")
    assert whole.tile_size == 1438  # one tile where memory allows
    small = _plan(1438, 20 << 20, precision="float64")
    assert small.tile_size < 1438 and small.memory.fits()
    assert small.choice["tiles"]["tile_size"] == small.tile_size
    assert "halved from 1438 rows" in small.choice["tiles"]["rule"]
    # a tile size asked for is kept, and the plan refused
    given = _plan(1438, 20 << 20, precision="float64", tile_size=1438)
    assert given.tile_size == 1438 and not given.memory.fits()


@pytest.mark.parametrize("placement", ["ooc", "local", "scheduler"])
def test_beyond_memory_plans_hold_what_stays_in_this_process(placement):
    """Out of core, the streamed panels count; a local Dask cluster's workers are threads
    of this process, so K's tiles count; a scheduler's workers are elsewhere."""
    kw = {"ooc": dict(ooc_dir="d"), "local": dict(distributed="local"),
          "scheduler": dict(scheduler="tcp://h:1")}[placement]
    budget = 25 << 20
    sp = _plan(5000, budget, **kw)
    assert sp.route == ("ooc" if placement == "ooc" else "dask")
    items = sp.memory.items
    assert "K tiles (float32)" not in items
    assert any("panels" in k for k in items) == (placement == "ooc")
    assert any("local Dask workers" in k for k in items) == (placement == "local")
    if placement == "local":  # 5000 x 5000 float32 tiles do not fit 25 MiB
        with pytest.raises(MemoryPlanError, match="memory budget is 25.0 MiB"):
            plan.check(sp, SolveOptions(**kw).validate(), 5000, 64, 10, 500)
        return
    assert sp.memory.fits() and sp.tile_size < 5000  # tiles halved from one of 5000
    with pytest.raises(MemoryPlanError, match="memory budget is 1.0 MiB"):
        opts = SolveOptions(memory_budget=1 << 20, **kw).validate()
        plan.check(_plan(5000, 1 << 20, **kw), opts, 5000, 64, 10, 500)


def test_beyond_memory_auto_with_float32_asked_for_is_float32_as_in_memory():
    assert _plan(2000, None, ooc_dir="d", dtype="float32").precision == "float32"
    assert _plan(2000, None, ooc_dir="d").precision == "mixed"
    assert _plan(2000, None, distributed="local", precision="float64").precision == "float64"


def test_an_out_of_core_solve_within_a_small_budget_runs_on_its_halved_tiles(tmp_path):
    X, Y = _problem(n=1200)
    k = get_kernel("gaussian", bandwidth=0.3)
    opts = SolveOptions(ooc_dir=str(tmp_path / "ooc"), memory_budget=6 << 20, tol=1e-11)
    sp = plan.plan_solve(1200, 6, 3, opts.validate(), device="cpu", available=23 * GiB)
    assert sp.tile_size < 1200 and sp.memory.fits()
    sol = solve_exact(k, X, Y, opts)
    assert sol.info["out_of_core"] and sol.info["converged"]
    assert sol.info["tile_size"] == sp.tile_size
    K = k(X, X)
    assert np.linalg.norm(K @ sol.alpha - Y) / np.linalg.norm(Y) <= 1e-10


def test_a_resumed_out_of_core_run_plans_with_its_checkpoints_tiles(tmp_path):
    """Tiles halved to fit a budget are the checkpoint's: resuming without that budget (or
    with more memory free) plans with them, not with the one tile it would choose now."""
    X, Y = _problem(n=1200)
    k = get_kernel("gaussian", bandwidth=0.3)
    folder = str(tmp_path / "ooc")
    first = solve_exact(k, X, Y, SolveOptions(ooc_dir=folder, memory_budget=6 << 20,
                                              tol=1e-11))
    assert first.info["tile_size"] < 1200
    again = SolveOptions(ooc_dir=folder, resume=True, tol=1e-11)
    sp = plan.plan_solve(1200, 6, 3, again.validate(), device="cpu", available=23 * GiB)
    assert sp.tile_size == first.info["tile_size"]
    sol = solve_exact(k, X, Y, again)  # refused before: the tile size differed
    assert sol.info["converged"] and sol.info["tile_size"] == first.info["tile_size"]
    np.testing.assert_allclose(sol.alpha, first.alpha, rtol=0, atol=1e-8 * np.abs(
        first.alpha).max())


def _ways(err: str) -> str:
    assert len(err.strip().splitlines()) == 1, err
    return err.split("Ways out: ", 1)[1]


def _state(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("precision", ["mixed", "float64"])
def test_a_resumed_run_refused_by_its_budget_gets_ways_out_that_keep_the_checkpoint(
        tmp_path, capsys, precision):
    """Resuming with a budget too small, the least budget offered is the checkpoint's (its
    n, its tiles of 600 rows, its precision: under auto, a float64 checkpoint's float64
    panels), and --resume with it runs; it was the least for tiles chosen afresh, and a
    smaller --n-train or another precision, each of which the checkpoint refused. A way out
    with other tiles starts over in a new folder, and that runs too. The refusals leave the
    checkpoint as it was."""
    ck = tmp_path / "ck"
    argv = ["solve", "--dataset", "digits", "--n-train", "600", "--n-test", "20",
            "--out-of-core", str(ck)]
    assert main(argv + ["--tile-size", "600", "--precision", precision]) == 0
    capsys.readouterr()
    before = _state(ck)
    resume = argv + ["--resume"]  # (precision auto: the checkpoint's tiles and precision)
    assert main(resume + ["--memory-budget", "1MiB"]) == 4
    ways = _ways(capsys.readouterr().err)
    assert _state(ck) == before
    for other in ("--n-train", "--dtype", "--precision", "--tile-size"):
        assert other not in ways, ways
    dtype = "float64" if precision == "float64" else "float32"
    keep = re.match(r"--memory-budget (\d+MiB) or more \(up to the [\d.]+ GiB available: "
                    rf"the least for the checkpoint's 600 points in {dtype} tiles of 600 "
                    r"rows\); start over without --resume, in a new --out-of-core folder "
                    rf"\(the checkpoint in {re.escape(str(ck))} stays\): --memory-budget "
                    r"(\d+MiB) or more\.$", ways)
    assert keep, ways
    least = size_arg(keep.group(1)) >> 20
    assert main(resume + ["--memory-budget", f"{least - 1}MiB"]) == 4  # the least
    assert _ways(capsys.readouterr().err).startswith(f"--memory-budget {least}MiB or more")
    assert main(resume + ["--memory-budget", keep.group(1), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["checkpoint"]["resumed_from_panel"] == 1 and rec["exact"]
    # starting over: a new folder, tiles of its own, without --resume
    fresh = ["--out-of-core", str(tmp_path / "new"), "--memory-budget", keep.group(2)]
    assert main(argv[:-2] + fresh) == 0
    capsys.readouterr()


def test_a_resumed_run_offered_the_checkpoints_n_runs_with_it(tmp_path, capsys):
    """A --n-train other than the checkpoint's: the budget way out names the checkpoint's,
    and with both it resumes."""
    ck = tmp_path / "ck"
    argv = ["solve", "--dataset", "digits", "--n-test", "20", "--out-of-core", str(ck)]
    assert main(argv + ["--n-train", "600", "--tile-size", "600"]) == 0
    capsys.readouterr()
    assert main(argv + ["--n-train", "300", "--resume", "--memory-budget", "1MiB"]) == 4
    ways = _ways(capsys.readouterr().err)
    way = re.match(r"--memory-budget (\d+MiB) or more with --n-train 600 \(", ways)
    assert way, ways
    assert main(argv + ["--n-train", "600", "--resume", "--memory-budget", way.group(1)]) == 0
    capsys.readouterr()


def test_a_resumed_float64_checkpoint_plans_float64_panels_under_auto(tmp_path):
    X, Y = _problem(n=300)
    k = get_kernel("gaussian", bandwidth=0.3)
    folder = str(tmp_path / "ooc")
    solve_exact(k, X, Y, SolveOptions(ooc_dir=folder, precision="float64", tile_size=100))
    again = SolveOptions(ooc_dir=folder, resume=True).validate()
    sp = plan.plan_solve(300, 6, 3, again, device="cpu", available=23 * GiB)
    assert sp.tile_size == 100
    assert sp.memory.items["panels (a column of K's tiles and one of L's)"] == 2 * 300 * 100 * 8
    # it continues in float64 (no deflation): no landmarks planned
    assert "deflation (landmarks)" not in sp.memory.items
    assert "refinement vectors" in sp.memory.items
    req = plan.request_of(again, 300, 6, 3)
    assert req["checkpoint"] == {"folder": folder, "n": 300, "tile_size": 100,
                                 "dtype": "float64", "precision": "float64"}
    assert plan.plan_request(req, None).memory.total == sp.memory.total


@pytest.mark.parametrize("made, asked", [("mixed", "float64"), ("mixed", "float32"),
                                         ("float32", "auto")])
def test_a_resumed_run_asking_another_precision_is_offered_the_checkpoints(
        tmp_path, capsys, made, asked):
    """Resuming with a precision the checkpoint was not made with and a budget too small,
    the budget way out kept the precision asked for, which the checkpoint then refused
    (mixed resumed as float64 or float32; a plain float32 checkpoint under auto): it now
    names the checkpoint's precision, is planned with it, and runs."""
    ck = tmp_path / "ck"
    argv = ["solve", "--dataset", "digits", "--n-train", "600", "--n-test", "20",
            "--out-of-core", str(ck)]
    main(argv + ["--tile-size", "300", "--precision", made])  # (float32: inexact, exit 6)
    capsys.readouterr()
    before = _state(ck)
    resume = argv + ["--resume"] + ([] if asked == "auto" else ["--precision", asked])
    assert main(resume + ["--memory-budget", "1MiB"]) == 4
    ways = _ways(capsys.readouterr().err)
    assert _state(ck) == before
    way = re.match(rf"--memory-budget (\d+MiB) or more with --precision {made} \(", ways)
    assert way, ways
    follow = argv + ["--resume", "--precision", made, "--memory-budget", way.group(1), "--json"]
    assert main(follow) == (0 if made == "mixed" else 6)
    rec = json.loads(capsys.readouterr().out)
    assert rec["checkpoint"]["resumed_from_panel"] >= 1


def test_a_plain_float32_checkpoint_resumed_under_auto_names_float32(tmp_path, capsys):
    """float32 checkpoints are K's own tiles (no deflation rank): resumed under auto
    (mixed, which deflates) the refusal said only 'differs in: deflation_rank' and to delete
    the folder; it names float32, and with that it resumes."""
    ck = tmp_path / "ck"
    argv = ["solve", "--dataset", "digits", "--n-train", "600", "--n-test", "20",
            "--out-of-core", str(ck)]
    assert main(argv + ["--tile-size", "300", "--precision", "float32"]) == 6  # inexact
    capsys.readouterr()
    assert main(argv + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert "It was made with --precision float32: give that to resume it" in err, err
    assert main(argv + ["--resume", "--precision", "float32", "--json"]) == 6
    assert json.loads(capsys.readouterr().out)["checkpoint"]["resumed_from_panel"] >= 1
