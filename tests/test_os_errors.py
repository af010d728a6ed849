"""Errors of the file system whose exception carries no errno or no file name (NumPy's
short write on a full disk, Matplotlib's full-disk error) still give one line naming the
file, with the error's own words and the way out that fits (free disk space)."""

from __future__ import annotations

import errno

import numpy as np
import pytest

from kernelfit.cli import main
from kernelfit.cli._advice import explain_os_error


def _short_write(name="tiny/p.npy"):
    exc = OSError("20000 requested and 7152 written")  # NumPy's, no errno, no strerror
    exc.filename = name  # as kernelfit's atomic writer attaches it
    return exc


def test_a_short_write_keeps_its_text_names_the_file_and_says_the_disk_is_full():
    line = explain_os_error(_short_write())
    assert "tiny/p.npy" in line and "20000 requested and 7152 written" in line
    assert "free disk space" in line and "permissions" not in line
    assert "OSError" not in line and "[Errno None]" not in line


@pytest.mark.parametrize("exc, words, way", [
    (OSError(errno.ENOSPC, "No space left on device", "f.npy"),
     ["cannot write f.npy: No space left on device"], "free disk space"),
    (OSError(errno.EDQUOT, "Disk quota exceeded", "q.npy"), ["q.npy", "Disk quota"],
     "free disk space"),
    (OSError("the device said no"), ["the device said no"], "check the path"),
])
def test_each_os_error_keeps_its_words_and_gets_its_way_out(exc, words, way):
    line = explain_os_error(exc)
    assert all(w in line for w in words), line
    assert way in line and "\n" not in line


@pytest.fixture
def model(tmp_path, capsys):
    path = tmp_path / "m.pkl"
    assert main(["solve", "--dataset", "digits", "--n-train", "60", "--n-test", "10",
                 "--save", str(path), "--json"]) == 0
    capsys.readouterr()
    return path


def test_predict_on_a_full_disk_names_the_output_and_the_way_out(tmp_path, model, capsys,
                                                                 monkeypatch):
    out = tmp_path / "preds"
    out.mkdir()

    def full_disk(*args, **kwargs):
        raise OSError("20000 requested and 7152 written")

    monkeypatch.setattr(np, "save", full_disk)
    code = main(["predict", "--model", str(model), "--dataset", "digits",
                 "--output", str(out / "p.npy")])
    err = capsys.readouterr().err
    assert code == 7 and len(err.strip().splitlines()) == 1, err
    assert f"{out / 'p.npy'}" in err and "20000 requested and 7152 written" in err
    assert "free disk space" in err
    assert list(out.iterdir()) == []  # nothing half-written


def test_verify_on_a_full_disk_names_the_figure(tmp_path, capsys, monkeypatch):
    """Matplotlib's error names no file: the line names the figure in --out."""
    from matplotlib.figure import Figure

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full_disk)
    out = tmp_path / "v"
    code = main(["verify", "--quick", "curvature", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 7 and len(err.strip().splitlines()) == 1, err
    assert f"cannot write {out / 'curvature.png'}: No space left on device" in err
    assert "free disk space" in err
    assert not out.exists()  # nothing half-written

