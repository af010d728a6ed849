"""Every check passes on correct input and fails on a deliberately wrong one; CLI output."""

import json

import numpy as np

from kernelfit import proofs
from kernelfit.proofs import curvature, kernel_trick, sgd_min_norm, theorem1, theorem1_deep

SMALL = np.random.default_rng(0).integers(0, 256, size=(400, 30))


def test_theorem1_passes_and_fails():
    assert theorem1.check(quick=True, X_int=SMALL, symbolic_n=3).passed is True

    def corrupt(net):
        net.W[len(net.W) // 2] += 1 << (net.precision_bits - 20)
    assert theorem1.check(quick=True, X_int=SMALL, symbolic_n=3, corrupt=corrupt).passed is False


def test_theorem1_symbolic_needs_ordering():
    assert theorem1.symbolic_check(3) is True
    assert theorem1.symbolic_check(3, assume_interleaved=False) is False


def test_theorem1_deep_passes_and_fails():
    assert theorem1_deep.check(quick=True, X_int=SMALL, k=3).passed is True

    def corrupt(deep):
        deep.groups = deep.groups[:-1]  # drop the last layer
    assert theorem1_deep.check(quick=True, X_int=SMALL, k=3, corrupt=corrupt).passed is False


def test_sgd_passes_and_fails():
    assert sgd_min_norm.check(quick=True, kernel_n=60).passed is True
    bad = sgd_min_norm.check(quick=True, kernel_n=60, w0=np.full(250, 0.1))  # claimed zero
    assert bad.passed is False


def test_kernel_trick_passes_and_fails():
    assert kernel_trick.check(quick=True, n=60).passed is True
    assert kernel_trick.check(quick=True, n=60, null_perturbation=1e-3).passed is False


def test_scatter_plots_of_the_checks(tmp_path):
    from kernelfit.proofs._common import pyplot

    plt = pyplot()
    seen = []
    real_save = plt.Figure.savefig

    def save(fig, path, **kw):
        ax = fig.axes[0]
        seen.append((ax.get_xlabel(), ax.get_title(), len(ax.lines[0].get_xdata())))
        return real_save(fig, path, **kw)

    plt.Figure.savefig = save
    try:
        paths = kernel_trick.plot(kernel_trick.check(quick=True, n=60), tmp_path)
        paths += theorem1_deep.plot(theorem1_deep.check(quick=True, X_int=SMALL, k=3),
                                    tmp_path)
    finally:
        plt.Figure.savefig = real_save
    assert [p.name for p in paths] == ["kernel_trick.png", "theorem1_deep_fit.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    assert seen[0][0].startswith("kernel prediction") and seen[0][1].startswith("rel. diff")
    assert seen[1][0] == "label y_i" and seen[1][1].startswith("depth-k fit")
    assert all(n > 0 for _, _, n in seen)


def test_curvature_passes_and_fails():
    assert curvature.check(quick=True).passed is True

    def quartic(w, X, y):  # loss + sum w^4: curvature depends on w
        return X.T @ (X @ w - y) / X.shape[0] + 4 * w ** 3
    assert curvature.check(quick=True, grad=quartic).passed is False


def test_norm_waiting_without_features(monkeypatch):
    from kernelfit.proofs import norm
    monkeypatch.setattr(norm, "_gabor", lambda: None)
    r = norm.check(quick=True)
    assert r.status == "waiting" and r.passed is None


def test_norm_skipped_without_data(tmp_path, monkeypatch):
    from kernelfit.proofs import norm
    monkeypatch.setattr(norm, "_gabor", lambda: (None, None))
    monkeypatch.delenv("KERNELFIT_DATA", raising=False)
    import kernelfit.theory.data as D
    monkeypatch.setattr(D, "_candidates", lambda d: iter([tmp_path]))
    r = norm.check(quick=True, data_dir=str(tmp_path))
    assert r.status == "skipped" and r.passed is None
    # the note names the folder it looked in, and no parameter or flag of one interface
    (note,) = r.notes
    assert f"MNIST not found in {tmp_path} " in note and "data_dir" not in note


def test_cli_json_one_check(tmp_path, capsys):
    from kernelfit.cli import main
    rc = main(["verify", "curvature", "--quick", "--json", "--out", str(tmp_path)])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert [c["name"] for c in out["checks"]] == ["curvature"]
    c = out["checks"][0]
    assert c["passed"] is True and "max_pairwise_rel_diff" in c["figures"]
    assert (tmp_path / "report.md").is_file() and (tmp_path / "curvature.png").is_file()


def test_cli_report_is_all_or_nothing_and_replaces_its_own_only(tmp_path, capsys,
                                                                 monkeypatch):
    """An interruption leaves no folder (or the earlier report as it was) and no partial
    figures; a narrower run removes the earlier run's figures it does not make again; a
    folder holding another command's report.json is refused, unchanged."""
    from kernelfit.cli import main
    out = tmp_path / "v"
    assert main(["verify", "curvature", "kernel_trick", "--quick", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"report.json", "report.md", "curvature.png",
                                               "kernel_trick.png"}
    report = json.loads((out / "report.json").read_text())
    assert report["command"] == "verify"
    assert report["checks"][0]["plots"] == [str(out / "curvature.png")]
    assert main(["verify", "curvature", "--quick", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"report.json", "report.md", "curvature.png"}
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    mod = proofs.get("kernel_trick")

    def interrupted(**kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(mod, "check", interrupted)
    for where in (out, tmp_path / "new"):
        assert main(["verify", "curvature", "kernel_trick", "--quick",
                     "--out", str(where)]) == 130
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not (tmp_path / "new").exists()
    other = tmp_path / "r"
    other.mkdir()
    (other / "report.json").write_text('{"rows": []}')
    capsys.readouterr()
    assert main(["verify", "curvature", "--quick", "--out", str(other)]) == 2
    assert "holds another report" in capsys.readouterr().err
    assert [p.name for p in other.iterdir()] == ["report.json"]


def test_cli_unknown_check(tmp_path, capsys):
    from kernelfit.cli import main
    assert main(["verify", "nope", "--out", str(tmp_path)]) != 0
    assert "unknown check" in capsys.readouterr().err


def test_registry_names():
    assert proofs.names()[:2] == ["theorem1", "theorem1_deep"]


def test_cli_exit_code_is_nonzero_when_a_check_fails(tmp_path, capsys, monkeypatch):
    """A failing check (a criterion injected to fail) makes the command exit with 1."""
    from kernelfit.cli import main
    mod = proofs.get("curvature")
    real = mod.check

    def wrong(**kw):
        res = real(**kw)
        res.criteria["injected failure"] = False
        return res.decide()

    monkeypatch.setattr(mod, "check", wrong)
    rc = main(["verify", "curvature", "--quick", "--json", "--out", str(tmp_path)])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert out["checks"][0]["passed"] is False


def test_top_level_readme_lists_every_check():
    from pathlib import Path
    readme = Path(__file__).resolve().parents[1] / "proofs" / "README.md"
    text = readme.read_text()
    for name in proofs.names():
        assert f"`{name}`" in text and f"kernelfit/proofs/{name}.py" in text


def test_cli_says_which_checks_ran_on_synthetic_stand_ins(tmp_path, capsys, monkeypatch):
    """Without MNIST the checks that can run on synthetic points say so (line, note,
    summary, JSON); a --data-dir that does not exist is refused before any check runs."""
    from kernelfit.cli import main
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("KERNELFIT_DATA", str(empty))
    assert main(["verify", "kernel_trick", "curvature", "--quick",
                 "--out", str(tmp_path / "v")]) == 0
    text = capsys.readouterr().out
    assert "2 passed (1 on synthetic data: MNIST not found)" in text
    assert f"not on MNIST: MNIST not found in {empty}" in text
    report = json.loads((tmp_path / "v" / "report.json").read_text())
    stand_in = {c["name"]: c["stand_in"] for c in report["checks"]}
    assert stand_in["kernel_trick"].startswith("synthetic") and stand_in["curvature"] is None
    md = (tmp_path / "v" / "report.md").read_text()
    assert "## kernel_trick: PASSED (on synthetic" in md
    assert main(["verify", "--quick", "--data-dir", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "w")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_verify_runs_a_check_named_twice_once(tmp_path, capsys):
    from kernelfit.cli import main
    code = main(["verify", "--quick", "curvature", "curvature", "--json",
                 "--out", str(tmp_path / "v")])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and [c["name"] for c in doc["checks"]] == ["curvature"]
    code = main(["verify", "--quick", "curvature", "kernel_trick", "curvature",
                 "--out", str(tmp_path / "w")])
    out = capsys.readouterr().out
    assert code == 0 and "2 passed" in out
    assert out.index("] curvature:") < out.index("] kernel_trick:")


def test_cli_run_with_nothing_checked_says_so_and_is_not_passed(tmp_path, capsys,
                                                                monkeypatch):
    """Every check asked for skipped (norm without MNIST): exit 0 as skips are (README),
    but the JSON's top-level passed is null with nothing_checked, and the summary says
    nothing was checked and how to get MNIST (it said 'passed': true and '0 passed, 0
    failed, 1 skipped/waiting')."""
    from kernelfit.cli import main
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("KERNELFIT_DATA", str(empty))
    assert main(["verify", "norm", "--quick", "--json", "--out", str(tmp_path / "v")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["passed"] is None and doc["nothing_checked"] is True
    assert doc["skipped"] == ["norm"] and "kernelfit datasets fetch mnist" in doc["get_data"]
    assert json.loads((tmp_path / "v" / "report.json").read_text())["passed"] is None
    assert "**Nothing checked**: norm skipped" in (tmp_path / "v" / "report.md").read_text()
    assert main(["verify", "norm", "--quick", "--out", str(tmp_path / "v")]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("nothing checked: norm skipped (MNIST not found: `kernelfit "
                           "datasets fetch mnist` fetches it where verify looks, or give "
                           "--data-dir D")
    # a run with a check that ran is passed as before, its skips listed
    assert main(["verify", "curvature", "norm", "--quick", "--json",
                 "--out", str(tmp_path / "w")]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["passed"] is True and doc["nothing_checked"] is False
    assert doc["skipped"] == ["norm"] and "get_data" not in doc


def test_cli_explicit_data_dir_without_mnist_is_refused(tmp_path, capsys, monkeypatch):
    """--data-dir D without D/mnist/ ran on synthetic stand-ins and replaced an earlier
    report made on MNIST in the same --out: now one line with ways out that work, exit 3,
    --out untouched; D/mnist itself given: --data-dir D first. Without --data-dir the
    stand-ins stay (README); a check that reads no data does not look."""
    from test_datasets_support import register_sources, write_idx_dataset

    from kernelfit.cli import main
    data = tmp_path / "data"
    register_sources(monkeypatch, "mnist", write_idx_dataset(data))
    out = tmp_path / "v"
    out.mkdir()
    (out / "report.json").write_text('{"command": "verify", "checks": []}')
    for given in (tmp_path / "empty", data / "mnist"):
        given.mkdir(exist_ok=True)
        assert main(["verify", "kernel_trick", "--quick", "--data-dir", str(given),
                     "--out", str(out)]) == 3
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert [p.name for p in out.iterdir()] == ["report.json"]
    assert f"its files are in {data / 'mnist'} itself" in err
    assert f"Ways out: --data-dir {data} " in err
    assert main(["verify", "kernel_trick", "--quick", "--data-dir", str(tmp_path / "empty"),
                 "--out", str(out)]) == 3
    err = capsys.readouterr().err
    assert f"--data-dir {tmp_path / 'empty'} holds no MNIST (missing " in err
    assert f"`kernelfit datasets fetch mnist --data-dir {tmp_path / 'empty'}`" in err
    assert "leave --data-dir out to run without MNIST" in err
    assert main(["verify", "curvature", "--quick", "--data-dir", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "c")]) == 0
