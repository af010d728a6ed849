"""Every JSON kernelfit writes for its users is strictly valid: a non-finite number (a
singular K's condition number, inf) is written as null, never as ``Infinity``/``NaN``, which
strict parsers (JavaScript's, jq's, Go's) refuse."""

from __future__ import annotations

import json

import numpy as np

from kernelfit._io import dumps_json, json_ready


def _strict(text: str):
    """``json.loads`` refusing ``Infinity``, ``-Infinity`` and ``NaN``, as JSON does."""
    def refuse(word):
        raise ValueError(f"not JSON: {word}")

    return json.loads(text, parse_constant=refuse)


def test_json_ready_turns_every_non_finite_float_into_none():
    inf, nan = float("inf"), float("nan")
    doc = {"py": [inf, -inf, nan, 1.5], "np": (np.float64(inf), np.float32(nan), np.float16(2)),
           "arr": np.array([[1.0, np.inf], [np.nan, -np.inf]]), "scalar_arr": np.array(np.nan),
           "ints": np.arange(3, dtype=np.int32), "flag": np.bool_(True), "set": {np.int64(4)},
           np.int64(7): {"deep": [np.array([np.inf])]}, inf: "a key", "path": __file__}
    out = json_ready(doc)
    assert out["py"] == [None, None, None, 1.5]
    assert out["np"] == [None, None, 2.0]
    assert out["arr"] == [[1.0, None], [None, None]] and out["scalar_arr"] is None
    assert out["ints"] == [0, 1, 2] and out["flag"] is True and out["set"] == [4]
    assert out[7] == {"deep": [[None]]} and out["inf"] == "a key"
    assert type(out["np"][2]) is float and type(out["ints"][0]) is int
    text = dumps_json(doc, indent=2)
    assert "Infinity" not in text and "NaN" not in text
    assert _strict(text)["arr"] == [[1.0, None], [None, None]]


def test_dumps_json_keeps_plain_values_and_keywords():
    class Sub(float):  # a float subclass is a float: its infinity is null too
        pass

    assert dumps_json({"x": Sub("inf"), "y": Sub(2)}) == '{"x": null, "y": 2.0}'
    assert dumps_json([1, "a", None, True], separators=(",", ":")) == '[1,"a",null,true]'


def test_print_json_is_strict(capsys):
    from kernelfit.cli._common import print_json

    print_json({"condition_number": float("inf"), "v": np.array([np.nan, 1.0])})
    doc = _strict(capsys.readouterr().out)
    assert doc == {"condition_number": None, "v": [None, 1.0]}


def test_randomize_json_and_records_file_are_strict(tmp_path, capsys):
    """A linear kernel on 200 digits (64 pixels) is singular: condition number inf."""
    from kernelfit.cli import main

    out = tmp_path / "r"
    code = main(["randomize", "--dataset", "digits", "--levels", "0,1", "--n-train", "200",
                 "--n-test", "50", "--kernel", "linear", "--solver", "eigh", "--tolerance",
                 "1", "--json", "--out", str(out)])
    assert code == 0
    doc = _strict(capsys.readouterr().out)
    assert [r["condition_number"] for r in doc["records"]] == [None, None]
    saved = _strict((out / "randomize_records.json").read_text())
    assert [r["condition_number"] for r in saved["records"]] == [None, None]


def test_bench_json_is_strict(tmp_path):
    from kernelfit.bench.report import write_json

    path = write_json({"records": [{"gflops": float("nan"), "fit": np.float64(np.inf)}]},
                      tmp_path / "bench_h.json")
    assert _strict(path.read_text()) == {"records": [{"gflops": None, "fit": None}]}


def test_reproduce_records_and_report_are_strict(tmp_path):
    from kernelfit.reproduce.report import write_report
    from kernelfit.reproduce.runner import Context, _dump

    assert _strict(_dump({"condition_number": np.float64(np.inf)})) == {
        "condition_number": None}
    ctx = Context(tmp_path / "out", quick=True, data_dir=tmp_path, progress=False)
    ctx._peaks = {"sgemm_gflops": float("inf"), "dgemm_gflops": float("nan"), "size": 8}
    machine = {"short": "test machine", "memory": {"total_bytes": 2 ** 30}, "blas": {},
               "load": np.float64(np.nan)}
    write_report(ctx, {}, machine)
    doc = _strict((tmp_path / "out" / "report.json").read_text())
    assert doc["sgemm_peak"]["sgemm_gflops"] is None and doc["machine"]["load"] is None
