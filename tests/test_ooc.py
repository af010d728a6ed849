"""Out-of-core Cholesky: equals in-core, resumes after a hard kill, refuses bad checkpoints."""

import json
import os
import re
import subprocess
import sys
import textwrap
from collections import namedtuple

import numpy as np
import pytest

from kernelfit.errors import InputError
from kernelfit.kernels import get_kernel
from kernelfit.solvers.exact import SolveOptions, solve_exact


def _problem(n=300, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, d)), np.eye(3)[rng.integers(0, 3, n)]


K = get_kernel("gaussian", bandwidth=0.5)


@pytest.mark.parametrize("precision,panel", [("float64", "1"), ("mixed", "2"), ("mixed", "")])
def test_ooc_equals_in_core(tmp_path, monkeypatch, precision, panel):
    X, Y = _problem()
    if panel:
        monkeypatch.setenv("KERNELFIT_OOC_PANEL_TILES", panel)
    ref = solve_exact(K, X, Y, SolveOptions(precision="float64"))
    sol = solve_exact(K, X, Y, SolveOptions(precision=precision, tile_size=40,
                                            ooc_dir=str(tmp_path / "ck")))
    ck = sol.info["checkpoint"]
    assert sol.info["out_of_core"] and ck["panels_done"] == ck["n_panels"] == 8
    assert sol.info["relative_residual"] <= 1e-10
    np.testing.assert_allclose(sol.alpha, ref.alpha, atol=1e-7 * np.abs(ref.alpha).max())
    man = json.loads((tmp_path / "ck" / "manifest.json").read_text())
    assert man["state"]["factored"] and man["fingerprint"]["n"] == 300
    # float32 tiles hold K minus the landmarks' low-rank part (kernelfit.solvers.deflate),
    # kept with the checkpoint
    rank = sol.info["deflation"]["rank"]
    assert man["fingerprint"]["deflation_rank"] == rank
    assert rank >= 2 if precision == "mixed" else rank == 0
    assert (tmp_path / "ck" / "U.npy").is_file() == (precision == "mixed")
    assert not list((tmp_path / "ck").glob("A_*.npy"))  # A tiles go once factored
    json.dumps(sol.as_dict())


SCRIPT = textwrap.dedent("""
    import os, signal, sys, numpy as np
    from kernelfit.kernels import get_kernel
    from kernelfit.solvers import ooc
    from kernelfit.solvers.exact import SolveOptions, solve_exact

    def kill(panels_done):  # a hard interruption once 3 tile columns are on disk
        if panels_done >= 3:
            os.kill(os.getpid(), signal.SIGKILL)

    factor = ooc.ooc_factor
    ooc.ooc_factor = lambda *a, **kw: factor(*a, on_panel=kill, **kw)
    rng = np.random.default_rng(0)
    X = rng.random((300, 6)); Y = np.eye(3)[rng.integers(0, 3, 300)]
    solve_exact(get_kernel("gaussian", bandwidth=0.5), X, Y,
                SolveOptions(precision="mixed", tile_size=40, ooc_dir=sys.argv[1]))
""")


def test_killed_run_resumes_without_redoing_panels(tmp_path):
    d = tmp_path / "ck"
    env = dict(os.environ, KERNELFIT_OOC_PANEL_TILES="1", KERNELFIT_PROGRESS="0")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(d)], env=env, timeout=120)
    assert proc.returncode == -9  # SIGKILL: a hard interruption after 3 panels
    man = json.loads((d / "manifest.json").read_text())
    assert man["state"]["panels_done"] == 3 and not man["state"]["factored"]
    done = {p.name: p.stat().st_mtime_ns for p in d.glob("L_*_[012].npy")}
    assert len(done) == 8 + 7 + 6
    X, Y = _problem()
    opts = SolveOptions(precision="mixed", tile_size=40, ooc_dir=str(d))
    with pytest.raises(InputError, match="resume=True"):
        solve_exact(K, X, Y, opts)  # an existing checkpoint is not overwritten silently
    opts.resume = True
    sol = solve_exact(K, X, Y, opts)
    ck = sol.info["checkpoint"]
    assert ck["resumed_from_panel"] == 3 and ck["panels_computed_this_run"] == 5
    # part of the factorization came from the checkpoint: its time gives no rate
    assert "factor_gflops_per_s" not in sol.info
    assert {p: (d / p).stat().st_mtime_ns for p in done} == done  # finished panels untouched
    ref = solve_exact(K, X, Y, SolveOptions(precision="mixed", tile_size=40,
                                            ooc_dir=str(tmp_path / "fresh")))
    np.testing.assert_allclose(sol.alpha, ref.alpha, rtol=1e-9, atol=1e-9 * abs(ref.alpha).max())
    # resuming a finished run does no factor work at all
    again = solve_exact(K, X, Y, opts)
    assert again.info["checkpoint"]["panels_computed_this_run"] == 0
    assert "factor_gflops_per_s" not in again.info  # (was 10^13 GFLOP/s from 0 s)
    assert "factor_gflops_per_s" in ref.info


def test_damaged_checkpoint_is_refused_with_the_way_out(tmp_path):
    """A tile file truncated or deleted, or a manifest state edited by hand, is refused as
    a damaged checkpoint naming the file and the way out (they gave tracebacks, or exit 7
    with 'check the path'); the folder is left as it was."""
    import shutil

    X, Y = _problem(n=120)
    good = tmp_path / "ck"
    solve_exact(K, X, Y, SolveOptions(tile_size=40, ooc_dir=str(good)))
    opts = lambda d: SolveOptions(tile_size=40, ooc_dir=str(d), resume=True)  # noqa: E731

    def damaged(name, edit, found):
        d = tmp_path / name
        shutil.copytree(good, d)
        edit(d)
        before = sorted(p.name for p in d.iterdir())
        with pytest.raises(InputError, match=found) as info:
            solve_exact(K, X, Y, opts(d))
        assert "delete the folder to start over" in str(info.value)
        assert info.value.facts["cause"] == "damaged_checkpoint"
        assert sorted(p.name for p in d.iterdir()) == before

    def truncate(d):
        with open(d / "L_2_1.npy", "r+b") as fh:
            fh.truncate(1000)

    def manifest(change):
        def edit(d):
            m = json.loads((d / "manifest.json").read_text())
            change(m)
            (d / "manifest.json").write_text(json.dumps(m))
        return edit

    damaged("trunc", truncate, "L_2_1.npy is truncated")
    damaged("gone", lambda d: (d / "L_1_0.npy").unlink(), "L_1_0.npy is missing")
    damaged("nostate", manifest(lambda m: m.pop("state")), "has no state")
    damaged("badshift", manifest(lambda m: m["state"].update(shift="abc")), "state is not")
    damaged("badpanels", manifest(lambda m: m["state"].update(panels_done=99)), "state is not")
    damaged("factored", manifest(lambda m: m["state"].update(panels_done=1)), "state is not")
    # a fingerprint whose n, tile size or dtype is not kernelfit's: it was refused as made
    # 'with tile_size=abc: leave tile_size out ... to resume it', a way out that repeated
    for field, bad in (("tile_size", "abc"), ("n", -3), ("dtype", "float16")):
        damaged(f"bad_{field}", manifest(lambda m, f=field, b=bad: m["fingerprint"].update(
            {f: b})), "fingerprint is not what kernelfit writes")
    solve_exact(K, X, Y, opts(good))  # the intact one resumes


def test_a_checkpoint_of_another_precision_names_the_one_that_resumes_it(tmp_path):
    """Out of core 'auto' is mixed: a float64 checkpoint (an earlier fallback's, or one
    asked for) is continued in float64 under it; a mixed checkpoint resumed with
    precision='float64' names precision='mixed' (the way that keeps the work)."""
    X, Y = _problem(n=120)
    d = tmp_path / "ck"
    solve_exact(K, X, Y, SolveOptions(tile_size=40, ooc_dir=str(d), precision="float64"))
    sol = solve_exact(K, X, Y, SolveOptions(tile_size=40, ooc_dir=str(d), resume=True))
    assert sol.info["precision"] == "float64" and "continued the folder's float64" in \
        sol.info["precision_note"]
    assert sol.info["precision_reason"].endswith("; instead: " + sol.info["precision_note"])
    assert sol.info["checkpoint"]["panels_computed_this_run"] == 0
    d2 = tmp_path / "ck2"
    solve_exact(K, X, Y, SolveOptions(tile_size=40, ooc_dir=str(d2)))
    with pytest.raises(InputError, match="made with precision='mixed': give that"):
        solve_exact(K, X, Y, SolveOptions(tile_size=40, ooc_dir=str(d2), resume=True,
                                          precision="float64"))


def test_an_out_of_core_folder_that_cannot_be_made_is_an_input_error():
    """/proc's parent exists but no folder can be made in it: one InputError naming the
    parameter, not pathlib's FileNotFoundError."""
    X, Y = _problem(n=60)
    with pytest.raises(InputError, match="cannot be made") as info:
        solve_exact(K, X, Y, SolveOptions(tile_size=40, ooc_dir="/proc/kernelfit-nope"))
    assert info.value.param == "ooc_dir"


def test_mismatched_checkpoint_is_refused(tmp_path):
    X, Y = _problem(n=120)
    d = tmp_path / "ck"
    solve_exact(K, X, Y, SolveOptions(tile_size=40, ooc_dir=str(d)))
    before = (d / "manifest.json").read_text()
    X2 = X.copy()
    X2[0, 0] += 1e-3
    for Xb, kern, ts, what in [(X2, K, 40, "X_sha256"), (X, get_kernel("gaussian", bandwidth=0.7),
                                                           40, "kernel"), (X, K, 30, "tile_size")]:
        with pytest.raises(InputError, match=what):
            solve_exact(kern, Xb, Y, SolveOptions(tile_size=ts, ooc_dir=str(d), resume=True))
    assert (d / "manifest.json").read_text() == before
    # another tile size alone: the way out names the checkpoint's, and leaving it out works
    with pytest.raises(InputError, match="made with tile_size=40: leave tile_size out"):
        solve_exact(K, X, Y, SolveOptions(tile_size=30, ooc_dir=str(d), resume=True))
    sol = solve_exact(K, X, Y, SolveOptions(ooc_dir=str(d), resume=True))
    assert sol.info["tile_size"] == 40


def test_checkpoint_with_other_deflation_is_refused(tmp_path, monkeypatch):
    # a mixed-precision checkpoint written without the deflation (an older kernelfit, or
    # turned off) holds other tiles: resuming it with the deflation on is refused
    import kernelfit.solvers.deflate as deflate

    X, Y = _problem(n=120)
    d = tmp_path / "ck"
    with monkeypatch.context() as mp:
        mp.setattr(deflate, "ENABLED", False)
        solve_exact(K, X, Y, SolveOptions(precision="mixed", tile_size=40, ooc_dir=str(d)))
    with pytest.raises(InputError, match="deflation_rank"):
        solve_exact(K, X, Y, SolveOptions(precision="mixed", tile_size=40, ooc_dir=str(d),
                                          resume=True))
    # a float64 checkpoint written before the fingerprint had the field still resumes
    d64 = tmp_path / "ck64"
    solve_exact(K, X, Y, SolveOptions(precision="float64", tile_size=40, ooc_dir=str(d64)))
    man = json.loads((d64 / "manifest.json").read_text())
    del man["fingerprint"]["deflation_rank"]
    (d64 / "manifest.json").write_text(json.dumps(man))
    sol = solve_exact(K, X, Y, SolveOptions(precision="float64", tile_size=40,
                                            ooc_dir=str(d64), resume=True))
    assert sol.info["checkpoint"]["panels_computed_this_run"] == 0


def test_resume_reads_the_deflation_back_from_the_checkpoint(tmp_path, monkeypatch):
    # the factor is of K - U U^T: a resumed run takes U from the folder (U.npy), not made
    # again; a checkpoint from before that file (rank one: the rows' mean) resumes with
    # the mean alone, as it was made
    import kernelfit.solvers.deflate as deflate

    X, Y = _problem(n=320)
    opts = dict(precision="mixed", tile_size=40)
    d = tmp_path / "ck"
    first = solve_exact(K, X, Y, SolveOptions(**opts, ooc_dir=str(d)))
    U = np.load(d / "U.npy")
    assert U.shape == (320, first.info["deflation"]["rank"]) and U.shape[1] >= 2
    sol = solve_exact(K, X, Y, SolveOptions(**opts, ooc_dir=str(d), resume=True))
    rec = sol.info["deflation"]
    assert rec["rank"] == U.shape[1] and rec["landmark"] == "the checkpoint's (U.npy)"
    assert rec["woodbury_c"] >= 1  # C = I + U^T S U
    assert sol.info["checkpoint"]["panels_computed_this_run"] == 0
    assert sol.info["relative_residual"] <= 1e-10
    # other rows: the fingerprint's refusal (not "damaged": the checkpoint is fine)
    with pytest.raises(InputError, match="different data") as err:
        solve_exact(K, X[:300], Y[:300], SolveOptions(**opts, ooc_dir=str(d), resume=True))
    assert "damaged" not in str(err.value)
    np.save(d / "U.npy", U[:, :1])  # not the part the fingerprint names
    with pytest.raises(InputError, match="damaged"):
        solve_exact(K, X, Y, SolveOptions(**opts, ooc_dir=str(d), resume=True))
    (d / "U.npy").unlink()  # made again it would not be the U the tiles hold
    with pytest.raises(InputError, match="U.npy, the deflation of its tiles, is missing"):
        solve_exact(K, X, Y, SolveOptions(**opts, ooc_dir=str(d), resume=True))
    np.save(d / "U.npy", U)
    man = json.loads((d / "manifest.json").read_text())
    for bad in ({**man, "fingerprint": [1]},
                {**man, "fingerprint": {**man["fingerprint"], "deflation_rank": "x"}}):
        (d / "manifest.json").write_text(json.dumps(bad))
        with pytest.raises(InputError, match="damaged"):
            solve_exact(K, X, Y, SolveOptions(**opts, ooc_dir=str(d), resume=True))
    d1 = tmp_path / "ck1"
    with monkeypatch.context() as mp:
        mp.setattr(deflate, "RANK", 1)
        solve_exact(K, X, Y, SolveOptions(**opts, ooc_dir=str(d1)))
    (d1 / "U.npy").unlink()
    sol = solve_exact(K, X, Y, SolveOptions(**opts, ooc_dir=str(d1), resume=True))
    assert sol.info["deflation"]["rank"] == 1
    assert sol.info["deflation"]["landmark"] == "mean of the training rows"
    assert sol.info["relative_residual"] <= 1e-10


def test_no_disk_room_is_refused_before_writing(tmp_path, monkeypatch):
    import shutil

    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(10 ** 9, 10 ** 9 - 1000, 1000))
    X, Y = _problem(n=120)
    d = tmp_path / "ck"
    with pytest.raises(InputError, match="disk space"):
        solve_exact(K, X, Y, SolveOptions(tile_size=40, ooc_dir=str(d)))
    assert not list(d.glob("*.npy")) and not (d / "manifest.json").exists()


def test_bad_folders(tmp_path):
    X, Y = _problem(n=60)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        solve_exact(K, X, Y, SolveOptions(ooc_dir=str(f)))
    with pytest.raises(InputError, match="does not exist"):
        solve_exact(K, X, Y, SolveOptions(ooc_dir=str(tmp_path / "no" / "such")))


@pytest.mark.parametrize("precision", ["float64", "mixed"])
def test_too_little_disk_is_refused_leaving_no_folder(tmp_path, monkeypatch, precision):
    from kernelfit.solvers import ooc

    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(ooc.shutil, "disk_usage", lambda p: Usage(1 << 30, 1 << 30, 1 << 10))
    X, Y = _problem(n=200)
    folder = tmp_path / "kf"
    with pytest.raises(InputError, match="not enough disk space") as exc:
        solve_exact(get_kernel("gaussian", bandwidth=0.5), X, Y,
                    SolveOptions(ooc_dir=str(folder), precision=precision, tile_size=64))
    assert not folder.exists()  # made for the run, removed with the refusal
    # the float32 tiles are offered only where the tiles are float64
    assert ("half the disk" in str(exc.value)) == (precision == "float64")
    # a folder that was there stays
    folder.mkdir()
    with pytest.raises(InputError, match="not enough disk space"):
        solve_exact(get_kernel("gaussian", bandwidth=0.5), X, Y,
                    SolveOptions(ooc_dir=str(folder), precision=precision, tile_size=64))
    assert folder.is_dir() and not any(folder.iterdir())


@pytest.mark.skipif(os.name != "posix", reason="advisory locks (fcntl) are POSIX's")
def test_a_folder_in_use_by_another_process_is_refused(tmp_path):
    """Two solves into one checkpoint folder at once would overwrite each other's tiles and
    manifest: while one process holds the folder, another is refused with one line naming
    the holder, and nothing there changes; a finished or refused solve leaves no lock."""
    from kernelfit.solvers import checkpoint_lock

    X, Y = _problem(n=120)
    d = tmp_path / "ck"
    solve_exact(K, X, Y, SolveOptions(tile_size=40, ooc_dir=str(d)))
    assert not (d / checkpoint_lock.LOCK_FILE).exists()  # released after the refinement
    files = sorted(p.name for p in d.iterdir())
    manifest = (d / "manifest.json").read_text()
    held = checkpoint_lock.hold_folder(d)  # another holder (flock: another open file)
    try:
        with pytest.raises(InputError, match=f"in use by another kernelfit process "
                                             f"\\(pid {os.getpid()}\\)") as err:
            solve_exact(K, X, Y, SolveOptions(tile_size=40, ooc_dir=str(d), resume=True))
        assert err.value.param == "ooc_dir" and "choose another folder" in str(err.value)
        assert sorted(p.name for p in d.iterdir()) == sorted(files + [checkpoint_lock.LOCK_FILE])
        assert (d / "manifest.json").read_text() == manifest
    finally:
        checkpoint_lock.release_folder(held)
    assert sorted(p.name for p in d.iterdir()) == files
    # free again: the resume runs (and a refused run, here without resume, leaves no lock)
    sol = solve_exact(K, X, Y, SolveOptions(tile_size=40, ooc_dir=str(d), resume=True))
    assert sol.info["converged"] and "lock" not in sol.info["checkpoint"]
    json.dumps(sol.as_dict())
    with pytest.raises(InputError, match="already holds"):
        solve_exact(K, X, Y, SolveOptions(tile_size=40, ooc_dir=str(d)))
    assert sorted(p.name for p in d.iterdir()) == files


@pytest.mark.skipif(os.name != "posix", reason="advisory locks (fcntl) are POSIX's")
def test_the_folder_lock_never_refuses_for_its_own_failures(tmp_path, monkeypatch):
    """Only another holder refuses: a file system without advisory locks (flock fails
    with ENOSYS) solves unheld, leaving no lock file; a link where the lock file goes is
    refused, its target untouched; a direct ooc_factor call keeps nothing held and a
    JSON report."""
    import errno
    import fcntl

    from kernelfit.solvers import checkpoint_lock, ooc

    X, Y = _problem(n=120)
    real = fcntl.flock

    def no_locks(fd, op):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    d = tmp_path / "nolocks"
    sol = solve_exact(K, X, Y, SolveOptions(tile_size=40, ooc_dir=str(d)))
    assert sol.info["converged"] and not (d / checkpoint_lock.LOCK_FILE).exists()
    monkeypatch.setattr(fcntl, "flock", real)
    link = tmp_path / "linked"
    link.mkdir()
    target = tmp_path / "precious.txt"
    target.write_text("precious")
    (link / checkpoint_lock.LOCK_FILE).symlink_to(target)
    with pytest.raises(InputError, match="lock file"):
        solve_exact(K, X, Y, SolveOptions(tile_size=40, ooc_dir=str(link)))
    assert target.read_text() == "precious"
    T, info = ooc.ooc_factor(K, X, tmp_path / "direct", tile_size=40)
    json.dumps(info)
    assert "lock" not in info
    assert not (tmp_path / "direct" / checkpoint_lock.LOCK_FILE).exists()
    T.free()


def test_auto_falls_back_to_float64_out_of_core_when_float32_breaks_down(tmp_path, caplog):
    """auto's mixed precision out of core: a float32 factor that breaks down is no longer
    shifted and refined (which diverged: residual 0.5) but solved again with float64
    tiles in the same folder, its float32 checkpoint removed, with one warning line."""
    import logging

    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(50, 3)), np.eye(3)[rng.integers(0, 3, 50)]
    k = get_kernel("gaussian", bandwidth=5.0)  # cond(K) far beyond float32's reach
    folder = tmp_path / "ck"
    with caplog.at_level(logging.WARNING, logger="kernelfit.solvers.exact"):
        sol = solve_exact(k, X, Y, SolveOptions(ooc_dir=str(folder), tile_size=16))
    assert sol.info["precision"] == "float64" and sol.info["shift"] == 0.0
    assert "the float32 factorization broke down" in sol.info["precision_fallback"]["reason"]
    assert "falling back to a float64 factorization out of core" in caplog.text
    ref = solve_exact(k, X, Y, SolveOptions(precision="float64"))

    def residual(alpha):
        return np.linalg.norm(k(X) @ alpha - Y) / np.linalg.norm(Y)

    assert residual(sol.alpha) <= 10 * residual(ref.alpha) < 1e-4
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["fingerprint"]["dtype"] == "float64" and not (folder / "U.npy").exists()


def test_auto_falls_back_out_of_core_when_the_refinement_ends_above_its_target(tmp_path,
                                                                               monkeypatch):
    import kernelfit.solvers.ooc as ooc

    real = ooc._refine_ooc

    def stalled(*args):
        sol = real(*args)
        if sol.info.get("precision") == "mixed":
            sol.info.update(converged=False, relative_residual=3e-4)
        return sol

    monkeypatch.setattr(ooc, "_refine_ooc", stalled)
    X, Y = _problem(120, 4)
    sol = solve_exact(K, X, Y, SolveOptions(ooc_dir=str(tmp_path / "ck"), tile_size=32))
    assert sol.info["precision"] == "float64" and sol.info["converged"]
    assert "ended at a relative residual of 3.0e-04" in sol.info["precision_reason"]
    # asked for by name, mixed precision keeps its answer (and says it did not converge)
    sol = solve_exact(K, X, Y, SolveOptions(ooc_dir=str(tmp_path / "ck2"), tile_size=32,
                                            precision="mixed"))
    assert sol.info["precision"] == "mixed" and not sol.info["converged"]


def test_out_of_core_auto_keeps_mixed_where_float64_tiles_would_not_fit(tmp_path,
                                                                        monkeypatch):
    """No fallback without room for float64 tiles: mixed precision keeps its shifted
    factor and answer (and its checkpoint) where float64's twice the bytes would not fit."""
    import kernelfit.solvers.ooc as ooc

    monkeypatch.setattr(ooc, "float64_fits", lambda *a: False)
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(50, 3)), np.eye(3)[rng.integers(0, 3, 50)]
    folder = tmp_path / "ck"
    sol = solve_exact(get_kernel("gaussian", bandwidth=5.0), X, Y,
                      SolveOptions(ooc_dir=str(folder), tile_size=16))
    assert sol.info["precision"] == "mixed" and sol.info["shift"] > 0
    assert "precision_fallback" not in sol.info and (folder / "manifest.json").is_file()


def test_the_fallback_is_judged_on_float64s_whole_disk_need(tmp_path, monkeypatch):
    """Room for float64's tiles but not for its panel of L too: no fallback (it would
    remove the float32 checkpoint, then be refused for disk); with room, it falls back."""
    import collections
    import shutil

    from kernelfit.solvers.tiles import TiledSymmetric

    monkeypatch.setenv("KERNELFIT_OOC_PANEL_TILES", "1")
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(50, 3)), np.eye(3)[rng.integers(0, 3, 50)]
    k = get_kernel("gaussian", bandwidth=5.0)
    tiles64 = TiledSymmetric.storage_bytes(50, 16, np.float64)
    usage = collections.namedtuple("usage", "total used free")
    for free, fell_back in ((tiles64 + (1 << 20) + 100, False),
                            (tiles64 + 16 * 50 * 8 + (1 << 20) + 100, True)):
        monkeypatch.setattr(shutil, "disk_usage", lambda p, f=free: usage(1 << 40, 0, f))
        folder = tmp_path / f"ck{int(fell_back)}"
        sol = solve_exact(k, X, Y, SolveOptions(ooc_dir=str(folder), tile_size=16))
        assert ("precision_fallback" in sol.info) is fell_back
        assert sol.info["precision"] == ("float64" if fell_back else "mixed")
        assert (folder / "manifest.json").is_file()


def test_a_folder_of_another_runs_checkpoint_does_not_offer_resume(tmp_path):
    """Resuming is offered only where it would work (the same fingerprint): another run's
    checkpoint is refused as such (its --resume was refused in turn)."""
    X, Y = _problem(n=120)
    d = tmp_path / "ck"
    solve_exact(K, X, Y, SolveOptions(tile_size=40, ooc_dir=str(d)))
    with pytest.raises(InputError, match="continue it with resume=True"):
        solve_exact(K, X, Y, SolveOptions(tile_size=40, ooc_dir=str(d)))
    X2, Y2 = _problem(n=150, seed=1)
    with pytest.raises(InputError, match=r"differs in: .*X_sha256.*refusing to use it\. "
                                         r"Use a new folder") as info:
        solve_exact(K, X2, Y2, SolveOptions(tile_size=40, ooc_dir=str(d)))
    assert "resume=True" not in str(info.value)


#: what a refined solve records (and a deflated one); none of it applies to plain float32
REFINEMENT_KEYS = {"refinement", "tol", "max_iter", "iterations", "matvecs",
                   "refinement_history", "refinement_step_seconds", "tracked_residual",
                   "converged", "preconditioner_only", "preconditioner_application",
                   "deflation", "shift"}


def test_float32_out_of_core_is_the_in_memory_float32_solve(tmp_path):
    """precision='float32' out of core: K's own float32 factor, unrefined and undeflated,
    as in memory (it recorded a one-entry refinement history, cg, converged False, 30
    max_iter and a rank-5 deflation, and returned another solve's residual); the residual
    is still that of a float64 product with K."""
    from kernelfit.solvers.products import kernel_matvec

    X, Y = _problem()
    mem = solve_exact(K, X, Y, SolveOptions(precision="float32", tile_size=40))
    sol = solve_exact(K, X, Y, SolveOptions(precision="float32", tile_size=40,
                                            ooc_dir=str(tmp_path / "ck")))
    assert not REFINEMENT_KEYS & set(mem.info) and not REFINEMENT_KEYS & set(sol.info)
    assert sol.info["precision"] == "float32" and "no refinement" in sol.info["note_precision"]
    man = json.loads((tmp_path / "ck" / "manifest.json").read_text())
    assert man["fingerprint"]["deflation_rank"] == 0 and not (tmp_path / "ck" / "U.npy").exists()
    res = [np.linalg.norm(Y - kernel_matvec(K, X, np.asarray(s.alpha), tile_size=40))
           / np.linalg.norm(Y) for s in (mem, sol)]
    assert sol.info["relative_residual"] == pytest.approx(res[1], rel=1e-6)
    assert res[1] < 10 * res[0] + 1e-12  # the same float32 solve's residual
    # its checkpoint is not a mixed one: resuming it in mixed precision is refused, and a
    # mixed checkpoint resumed as float32 names the precision that resumes it
    with pytest.raises(InputError, match="deflation_rank"):
        solve_exact(K, X, Y, SolveOptions(precision="mixed", tile_size=40,
                                          ooc_dir=str(tmp_path / "ck"), resume=True))
    solve_exact(K, X, Y, SolveOptions(precision="mixed", tile_size=40,
                                      ooc_dir=str(tmp_path / "mixed")))
    with pytest.raises(InputError, match="made with precision='mixed': give that"):
        solve_exact(K, X, Y, SolveOptions(precision="float32", tile_size=40,
                                          ooc_dir=str(tmp_path / "mixed"), resume=True))


def test_float32_out_of_core_records_what_in_memory_does(tmp_path, capsys):
    """The solve command's --json record of a float32 out-of-core solve has the in-memory
    float32 record's fields, plus the checkpoint's, and no refinement or deflation."""
    from kernelfit.cli import main

    base = ["solve", "--dataset", "digits", "--n-train", "300", "--n-test", "50",
            "--precision", "float32", "--tile-size", "100", "--json"]
    recs = []
    for extra in ([], ["--out-of-core", str(tmp_path / "ck")]):
        assert main(base + extra) in (0, 6)  # 6: float32's residual is not exact
        recs.append(json.loads(capsys.readouterr().out))
    mem, ooc = recs
    assert set(ooc) - set(mem) == {"checkpoint", "out_of_core"} and set(mem) <= set(ooc)
    assert not {"refinement vectors", "deflation (landmarks)"} & set(ooc["memory_plan"]["items"])
    assert ooc["exact"] is mem["exact"] and ooc["precision"] == "float32"


def test_float32_out_of_core_that_breaks_down_stops_as_in_memory(tmp_path, capsys):
    """A float32 factor that broke down out of core was shifted and its unrefined answer
    returned (residual 0.56), with '--precision mixed' offered (0.41): it now stops as in
    memory, with the precision that failed in its facts (the ridge offered had been sized
    for float64: 3e-14), and its checkpoint is removed (its fingerprint refused that ridge
    in the same folder); other files in the folder stay. The way out then works there."""
    from kernelfit.cli import main
    from kernelfit.errors import NotPositiveDefiniteError

    rng = np.random.default_rng(0)
    X = rng.random((200, 3))  # at this width float32 potrf breaks down
    Y = np.eye(2)[rng.integers(0, 2, 200)]
    folder = tmp_path / "ck"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(NotPositiveDefiniteError) as info:
        solve_exact(get_kernel("gaussian", bandwidth=0.5), X, Y,
                    SolveOptions(precision="float32", tile_size=40, ooc_dir=str(folder)))
    assert info.value.facts["dtype"] == "float32" and info.value.facts["n"] == 200
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    data = tmp_path / "pts.npz"
    np.savez(data, X_train=X, y_train=Y.argmax(1), X_test=X[:10], y_test=Y[:10].argmax(1))
    argv = ["solve", "--dataset", f"npz:{data}", "--kernel", "gaussian", "--bandwidth", "0.5",
            "--precision", "float32", "--tile-size", "40", "--out-of-core", str(folder)]
    assert main(argv) == 5
    err = capsys.readouterr().err
    way = re.search(r"Ways out: (--ridge (\S+) --tolerance 1) \(", err)
    assert way and float(way.group(2)) >= 1e-4, err  # sized for float32
    assert main(argv + way.group(1).split()) == 0  # (accepted: a regularized solve)
    capsys.readouterr()


def test_a_resumed_checkpoints_tiles_are_recorded_as_its_not_the_rules(tmp_path):
    """plan_choice.tiles.rule of a resumed out-of-core solve says the tile size is the
    checkpoint's (it gave the machine's rule, which had not chosen it); a tile_size given
    says so too; without either the rule stays."""
    X, Y = _problem(n=120)
    d = tmp_path / "ck"
    first = solve_exact(K, X, Y, SolveOptions(tile_size=40, ooc_dir=str(d)))
    assert first.info["plan_choice"]["tiles"]["rule"].startswith("given (tile_size)")
    sol = solve_exact(K, X, Y, SolveOptions(ooc_dir=str(d), resume=True))
    tiles = sol.info["plan_choice"]["tiles"]
    assert sol.info["tile_size"] == tiles["tile_size"] == 40
    assert tiles["rule"].startswith("the checkpoint's") and str(d) in tiles["rule"]
    fresh = solve_exact(K, X, Y, SolveOptions(ooc_dir=str(tmp_path / "new")))
    assert "target_tile" in fresh.info["plan_choice"]["tiles"]["rule"]
