"""Tests of ``kernelfit datasets`` (list, info, fetch) through kernelfit.cli.main."""

from __future__ import annotations

import json

import pytest

import kernelfit.cli as cli

from test_datasets_support import register_sources, unwritable_folder, write_idx_dataset


@pytest.fixture(autouse=True)
def _only_datasets_command(isolated_data_env, monkeypatch):
    # Only this subcommand: the others belong to other modules and are tested there.
    monkeypatch.setattr(cli, "SUBCOMMANDS", {"datasets": "kernelfit.cli.datasets"})


def test_list(capsys):
    assert cli.main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("mnist", "fashion-mnist", "cifar10", "digits", "imagefolder"):
        assert name in out


def test_list_json(capsys, isolated_data_env):
    assert cli.main(["datasets", "list", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in doc["datasets"]][:2] == ["mnist", "fashion-mnist"]
    assert doc["data_dir"] == str(isolated_data_env)


def test_info_digits(capsys):
    assert cli.main(["datasets", "info", "digits"]) == 0
    out = capsys.readouterr().out
    assert "1438" in out and "(8, 8)" in out


def test_info_json_with_data_dir(tmp_path, monkeypatch, capsys):
    stored = write_idx_dataset(tmp_path)
    register_sources(monkeypatch, "mnist", stored)
    assert cli.main(["datasets", "info", "mnist", "--data-dir", str(tmp_path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["n_train"] == 40 and doc["n_test"] == 20 and doc["image_shape"] == [6, 5]
    assert doc["train_counts"] == [4] * 10 and doc["source"] == str(tmp_path / "mnist")


def test_fetch_downloads_and_verifies(tmp_path, monkeypatch, capsys, isolated_data_env):
    stored = write_idx_dataset(tmp_path / "server")
    names = {"train_images": "train-images-idx3-ubyte.gz",
             "train_labels": "train-labels-idx1-ubyte.gz",
             "test_images": "t10k-images-idx3-ubyte.gz",
             "test_labels": "t10k-labels-idx1-ubyte.gz"}
    urls = {r: ((tmp_path / "server" / "mnist" / n).as_uri(),) for r, n in names.items()}
    register_sources(monkeypatch, "mnist", stored, urls=urls)
    assert cli.main(["datasets", "fetch", "mnist", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["verified"] is True
    fetched = sorted(p.name for p in (isolated_data_env / "mnist").iterdir())
    assert fetched == sorted(names.values())
    assert cli.main(["datasets", "fetch", "mnist"]) == 0
    assert "verified" in capsys.readouterr().out


def test_errors_are_one_line_with_exit_codes(tmp_path, capsys, monkeypatch):
    import urllib.error

    from kernelfit.datasets import _fetch

    def offline(url, timeout):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(_fetch, "_urlopen", offline)
    assert cli.main(["datasets", "info", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset" in err and "Traceback" not in err
    assert cli.main(["datasets", "fetch", "mnist", "--data-dir", str(tmp_path)]) == 3
    err = capsys.readouterr().err
    assert "KERNELFIT_DATA" in err and len(err.strip().splitlines()) == 1


def test_missing_action_lists_the_actions(capsys):
    assert cli.main(["datasets"]) == 2
    err = capsys.readouterr().err
    assert all(a in err for a in ("list", "info", "fetch")) and len(err.splitlines()) == 1


def test_info_describes_without_downloading(capsys, isolated_data_env, monkeypatch):
    from kernelfit.datasets import _fetch

    def no_network(url, timeout):
        raise AssertionError("info must not download")

    monkeypatch.setattr(_fetch, "_urlopen", no_network)
    assert cli.main(["datasets", "info", "mnist", "--json"]) == 3  # missing data
    doc = json.loads(capsys.readouterr().out)
    assert doc["downloaded"] is False and len(doc["missing"]) == 4
    assert doc["files"] == "not downloaded"
    assert not (isolated_data_env / "mnist").exists()


def test_info_cifar10_names_the_jpeg_set_reproduce_would_use(tmp_path, capsys):
    """Without the official files, info says where the JPEG re-encoding is and how solve
    takes it (reproduce uses it from the same --data-dir)."""
    (tmp_path / "cifar10-jpeg").mkdir()
    tarball = tmp_path / "cifar10-jpeg" / "cifar10-jpeg.tar.gz"
    tarball.write_bytes(b"")
    assert cli.main(["datasets", "info", "cifar10", "--data-dir", str(tmp_path)]) == 3
    out = capsys.readouterr().out
    assert "not downloaded" in out and f"--dataset imagefolder:{tarball}" in out
    tarball.unlink()
    assert cli.main(["datasets", "info", "cifar10", "--data-dir", str(tmp_path)]) == 3
    assert "found instead" not in capsys.readouterr().out


def test_info_npz_counts_columns(tmp_path, capsys):
    import numpy as np

    np.savez(tmp_path / "d.npz", X_train=np.random.default_rng(0).random((30, 20)),
             y_train=np.arange(30) % 3)
    assert cli.main(["datasets", "info", f"npz:{tmp_path / 'd.npz'}"]) == 0
    out = capsys.readouterr().out
    assert "(20 features)" in out and "none (not images)" in out


def test_list_says_which_datasets_have_their_files_in_the_folder(tmp_path, capsys):
    from kernelfit.cli import main

    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"x")
    assert main(["datasets", "list", "--data-dir", str(tmp_path), "--json"]) == 0
    rows = {r["name"]: r["files"] for r in json.loads(capsys.readouterr().out)["datasets"]}
    assert rows["mnist"] == "partial" and rows["cifar10"] == "not downloaded"
    assert rows["digits"] == ""
    assert main(["datasets", "list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"files in {tmp_path}" in out and "[partial]" in out


def test_info_on_missing_files_exits_3_and_names_their_state_as_list_does(tmp_path, capsys):
    """list is an overview (exit 0 whatever is there); info asks about one dataset, and
    files that are not there are missing data (exit 3), said as list says it."""
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"x")
    assert cli.main(["datasets", "list", "--data-dir", str(tmp_path), "--json"]) == 0
    rows = {r["name"]: r["files"] for r in json.loads(capsys.readouterr().out)["datasets"]}
    for name in ("mnist", "fashion-mnist"):
        assert cli.main(["datasets", "info", name, "--data-dir", str(tmp_path), "--json"]) == 3
        doc = json.loads(capsys.readouterr().out)
        assert doc["files"] == rows[name] and doc["downloaded"] is False
        assert cli.main(["datasets", "info", name, "--data-dir", str(tmp_path)]) == 3
        assert f"  {rows[name]}: " in capsys.readouterr().out
    assert rows["mnist"] == "partial" and rows["fashion-mnist"] == "not downloaded"


def test_fetch_into_a_folder_that_cannot_be_written_is_bad_input(tmp_path, capsys,
                                                                 monkeypatch):
    """Refused before any download, exit 2, with a way out that works (it said 'put the
    files in /proc/foo/mnist' with exit 3)."""
    from kernelfit.datasets import _fetch
    from kernelfit.errors import InputError

    def no_network(url, timeout):
        raise AssertionError("no download into a folder that cannot be written")

    monkeypatch.setattr(_fetch, "_urlopen", no_network)
    folder = unwritable_folder(tmp_path) / "kernelfit-data"
    for name in ("mnist", "cifar10"):
        assert cli.main(["datasets", "fetch", name, "--data-dir", str(folder)]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "--data-dir" in err, err
        assert f"cannot write in {folder / name}" in err
        assert "choose a folder you can write to" in err and "put the files" not in err
    assert not folder.exists()
    with pytest.raises(InputError) as exc:  # the library says it in its words
        _fetch.download(None, folder / "mnist", "mnist")
    assert exc.value.facts["param"] == "data_dir" and "--" not in exc.value.message


def test_info_on_missing_files_says_one_line_on_stderr_with_a_fetch_that_works(
        tmp_path, capsys, monkeypatch):
    """info's report stays on stdout (JSON strict there); stderr gets one line naming the
    missing files, where, and the exact fetch command (it said nothing on stderr)."""
    import shlex

    folder = tmp_path / "my data"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    for extra in ([], ["--json"]):
        assert cli.main(["datasets", "info", "mnist", "--data-dir", "my data", *extra]) == 3
        out, err = capsys.readouterr()
        if extra:
            assert json.loads(out)["downloaded"] is False
        else:
            assert "fetch it with" in out
        assert len(err.strip().splitlines()) == 1, err
        assert err.startswith("kernelfit datasets: error: mnist: missing ")
        assert f"t10k-labels-idx1-ubyte.gz in {folder}/mnist (not downloaded)" in err
        fetch = f"kernelfit datasets fetch mnist --data-dir {shlex.quote(str(folder))}"
        assert f"`{fetch}`" in err and "--data-dir (or $KERNELFIT_DATA)" in err
    # the command it names fetches them, from any folder (here from a local 'server')
    stored = write_idx_dataset(tmp_path / "server")
    urls = {r: ((tmp_path / "server" / "mnist" / n).as_uri(),) for r, n in (
        ("train_images", "train-images-idx3-ubyte.gz"),
        ("train_labels", "train-labels-idx1-ubyte.gz"),
        ("test_images", "t10k-images-idx3-ubyte.gz"),
        ("test_labels", "t10k-labels-idx1-ubyte.gz"))}
    register_sources(monkeypatch, "mnist", stored, urls=urls)
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert cli.main(shlex.split(fetch)[1:]) == 0 and "verified" in capsys.readouterr().out
    assert cli.main(["datasets", "info", "mnist", "--data-dir", str(folder)]) == 0
    assert capsys.readouterr().err == ""


def test_info_on_missing_files_in_a_folder_that_cannot_be_written(tmp_path, capsys):
    """There fetch would refuse: the way out is fetch into another folder."""
    folder = unwritable_folder(tmp_path) / "kernelfit-data"
    assert cli.main(["datasets", "info", "mnist", "--data-dir", str(folder)]) == 3
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and f"{folder} cannot be written" in err
    assert "kernelfit datasets fetch mnist --data-dir DIR" in err
    # the report on stdout gives the same way out (it offered a fetch into that folder)
    assert f"--data-dir {folder}" not in out and f"{folder} cannot be written" in out


def test_info_with_data_dir_at_the_dataset_folder_itself_offers_its_parent(tmp_path, capsys,
                                                                           monkeypatch):
    """info mnist --data-dir D/mnist (the files directly there): stderr and the report say
    so and give --data-dir D (it offered a fetch into D/mnist/mnist); fetch there downloads
    nothing."""
    from kernelfit.datasets import _fetch

    register_sources(monkeypatch, "mnist", write_idx_dataset(tmp_path))
    monkeypatch.setattr(_fetch, "_urlopen", lambda url, timeout: pytest.fail("downloaded"))
    own = tmp_path / "mnist"
    assert cli.main(["datasets", "info", "mnist", "--data-dir", str(own)]) == 3
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and "fetch" not in err + out
    assert f"its files are in {own} itself, not in {own / 'mnist'}" in err
    assert f"Ways out: --data-dir {tmp_path} " in err
    assert f"found in {own} itself: give --data-dir {tmp_path}, the folder holding mnist/" in out
    assert cli.main(["datasets", "info", "mnist", "--data-dir", str(own), "--json"]) == 3
    doc = json.loads(capsys.readouterr().out)
    assert doc["found_in"] == str(own) and doc["parent_data_dir"] == str(tmp_path)
    assert cli.main(["datasets", "fetch", "mnist", "--data-dir", str(own)]) == 3
    assert f"--data-dir {tmp_path} " in capsys.readouterr().err
    assert not (own / "mnist").exists()
    assert cli.main(["datasets", "info", "mnist", "--data-dir", str(tmp_path)]) == 0
    capsys.readouterr()
    # list said only '[not downloaded]' there
    assert cli.main(["datasets", "list", "--data-dir", str(own)]) == 0
    assert f"its files are in {own} itself: --data-dir {tmp_path}]" in capsys.readouterr().out
    assert cli.main(["datasets", "list", "--data-dir", str(own), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["datasets"][0]
    assert row["name"] == "mnist" and row["parent_data_dir"] == str(tmp_path)
    assert cli.main(["datasets", "list", "--data-dir", str(tmp_path)]) == 0
    assert "itself" not in capsys.readouterr().out


def test_info_cifar10_with_data_dir_at_its_own_folder_offers_its_parent(tmp_path, capsys):
    own = tmp_path / "cifar10"
    (own / "cifar-10-batches-py").mkdir(parents=True)
    assert cli.main(["datasets", "info", "cifar10", "--data-dir", str(own)]) == 3
    err = capsys.readouterr().err
    assert f"its files are in {own} itself" in err and f"--data-dir {tmp_path} " in err
