"""The shared formatters of kernelfit.report: one byte formatter for every report."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from kernelfit import memory, report


@pytest.mark.parametrize("n, text", [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"),
                                     (3 * 2 ** 30, "3.0 GiB"), (2 ** 50, "1.0 PiB"),
                                     (1e30, "8.9e+14 PiB"), (None, "-")])
def test_fmt_bytes(n, text):
    assert report.fmt_bytes(n) == text


@given(st.integers(0, 2 ** 60))
def test_fmt_bytes_is_the_one_formatter(n):
    assert memory.fmt_bytes is report.fmt_bytes
    value, unit = report.fmt_bytes(n).split()
    scale = 1024 ** ["B", "KiB", "MiB", "GiB", "TiB", "PiB"].index(unit)
    assert abs(float(value) * scale - n) <= 0.05 * scale + 1e-9 * n


def test_bench_and_reproduce_reports_show_bytes_alike():
    from kernelfit.bench.report import machine_lines
    from kernelfit.reproduce.report import _cells

    lines = machine_lines({"memory": {"total_bytes": 2 ** 31, "available_bytes": None},
                           "gpus": [{"name": "X", "memory_bytes": 2 ** 30, "driver": "1"}]})
    assert "memory: 2.0 GiB total, - available at start" in lines
    assert "GPU: X, 1.0 GiB (driver 1)" in lines
    row = {"claim": "c", "verdict": "v"}
    assert _cells(dict(row, peak_memory_bytes=2 ** 31))[6] == "2.0 GiB"
    assert _cells(row)[6] == "-"


def test_blas_in_words_leaves_out_what_the_record_lacks():
    blas = {"library": "openblas", "version": "0.3.31", "architecture": "Haswell",
            "num_threads": 2, "filepath": "/x/libscipy_openblas.so"}
    assert report.fmt_blas(blas) == "openblas 0.3.31 (Haswell kernel, 2 threads)"
    assert report.fmt_blas({"library": "mkl", "version": None}) == "mkl"
    assert report.fmt_blas({}) == report.fmt_blas(None) == "-"
