"""The bad-input catalogue: one row per mistake a user can make on the command line.

Every row runs ``kernelfit.cli.main`` in-process and checks what issue 12 asks of every
refusal: no traceback, an exit code other than 0 and 1 (1 is kept for bugs and failed
checks), exactly one line on standard error, a message that names the problem (``must``)
and a way out (``way``), and nothing half-written (the output folder and the input folder
are as they were). A few rows at the end go through a real ``python -m kernelfit`` process.
"""

from __future__ import annotations

import gzip
import os
import pickle
import subprocess
import sys
import urllib.error
from pathlib import Path
from typing import NamedTuple, Optional, Tuple

import numpy as np
import pytest

import kernelfit.cli as cli
from kernelfit.datasets import _fetch
from kernelfit.datasets.idx import encode_idx

from test_datasets_support import (IDX_NAMES, make_idx_arrays, register_sources,
                                   unwritable_folder)

REPO_ROOT = Path(__file__).resolve().parent.parent


class Case(NamedTuple):
    id: str
    argv: Tuple[str, ...]
    code: int
    must: Tuple[str, ...]          # words naming the problem (all required)
    way: Tuple[str, ...]           # at least one must appear: the way out
    env: Optional[dict] = None


def C(id, argv, code, must, way, env=None):
    return Case(id, tuple(argv.split()) if isinstance(argv, str) else tuple(argv), code,
                tuple([must] if isinstance(must, str) else must),
                tuple([way] if isinstance(way, str) else way), env)


HELP = "--help"                     # argparse rows: "(see kernelfit X --help)"
S = "solve --dataset digits --n-train 60 --n-test 20"
M = "solve --dataset digits"  # the whole of digits: 64 MiB planned
NPZ = "solve --dataset npz:{d}/{f}"

CASES = [
    # ---------------------------------------------------------------- solve: option values
    C("solve-kernel-unknown", "solve --kernel bogus", 2, "--kernel", HELP),
    C("solve-bandwidth-negative", "solve --bandwidth -1", 2, "--bandwidth", HELP),
    C("solve-bandwidth-text", "solve --bandwidth x", 2, "--bandwidth", HELP),
    C("solve-bandwidth-nan", "solve --bandwidth nan", 2, "--bandwidth", HELP),
    C("solve-bandwidth-inf", "solve --bandwidth inf", 2, "--bandwidth", HELP),
    C("solve-bandwidth-zero", "solve --bandwidth 0", 2, "--bandwidth", HELP),
    C("solve-n-train-zero", "solve --n-train 0", 2, "--n-train", HELP),
    C("solve-n-train-negative", "solve --n-train -5", 2, "--n-train", HELP),
    C("solve-n-train-fraction", "solve --n-train 1.5", 2, "--n-train", HELP),
    C("solve-n-test-negative", "solve --n-test -1", 2, "--n-test", HELP),
    C("solve-dtype-float16", "solve --dtype float16", 2, "--dtype", HELP),
    C("solve-ridge-nan", "solve --ridge nan", 2, "--ridge", HELP),
    C("solve-ridge-negative", "solve --ridge -1", 2, "--ridge", HELP),
    C("solve-solver-unknown", "solve --solver qr", 2, "--solver", HELP),
    C("solve-device-unknown", "solve --device tpu", 2, "--device", HELP),
    C("solve-degree-zero", "solve --degree 0", 2, "--degree", HELP),
    C("solve-gamma-nan", "solve --gamma nan", 2, "--gamma", HELP),
    C("solve-coef0-inf", "solve --coef0 inf", 2, "--coef0", HELP),
    C("solve-tol-nan", "solve --tol nan", 2, "--tol", HELP),
    C("solve-max-iter-zero", "solve --max-iter 0", 2, "--max-iter", HELP),
    C("solve-refine-unknown", "solve --refine sor", 2, "--refine", HELP),
    C("solve-precision-unknown", "solve --precision half", 2, "--precision", HELP),
    C("solve-tile-size-zero", "solve --tile-size 0", 2, "--tile-size", HELP),
    C("solve-features-unknown", "solve --features sift", 2, "--features", HELP),
    C("solve-rff-dim-zero", "solve --rff-dim 0", 2, "--rff-dim", HELP),
    C("solve-conv-filters-negative", "solve --conv-filters -1", 2, "--conv-filters", HELP),
    C("solve-gabor-order-3", "solve --gabor-order 3", 2, "--gabor-order", HELP),
    C("solve-rff-bandwidth-negative", "solve --rff-bandwidth -2", 2, "--rff-bandwidth", HELP),
    C("solve-seed-text", "solve --seed x", 2, "--seed", HELP),
    C("solve-unknown-flag", "solve --foo", 2, "--foo", HELP),
    C("solve-distributed-remote", "solve --distributed remote", 2, "--distributed", HELP),
    C("solve-conv-threshold-nan", "solve --conv-threshold nan", 2, "--conv-threshold", HELP),
    C("solve-feature-batch-zero", "solve --feature-batch 0", 2, "--feature-batch", HELP),
    C("solve-gabor-scales-zero", "solve --gabor-scales 0", 2, "--gabor-scales", HELP),
    C("solve-conv-init-unknown", "solve --conv-filter-init foo", 2, "--conv-filter-init", HELP),
    C("solve-missing-value", "solve --n-train", 2, "--n-train", HELP),
    C("solve-tolerance-nan", "solve --tolerance nan", 2, "--tolerance", HELP),
    C("solve-tolerance-negative", "solve --tolerance -1", 2, "--tolerance", HELP),
    # ---------------------------------------------------------------- solve: requests
    C("solve-dataset-unknown", "solve --dataset nope", 2, "unknown dataset", "known:"),
    C("solve-dataset-npz-no-path", "solve --dataset npz:", 2, "npz", "npz:PATH"),
    C("solve-dataset-npz-missing", "solve --dataset npz:/nonexistent/x.npz", 2,
      "no such file", "npz:"),
    C("solve-dataset-imagefolder-missing", "solve --dataset imagefolder:/nonexistent", 2,
      "does not exist", "train/<class>/"),
    C("solve-dataset-empty", ["solve", "--dataset", ""], 2, "dataset", ("non-empty", "such as")),
    C("solve-dataset-mnist-colon", "solve --dataset mnist:x", 2, "unknown dataset", "known:"),
    C("solve-n-train-too-many", "solve --dataset digits --n-train 5000", 2,
      ("--n-train 5000", "1438 examples"), "ask for at most 1438"),
    C("solve-n-test-too-many", "solve --dataset digits --n-test 5000", 2,
      ("--n-test 5000", "359 examples"), "ask for at most 359"),
    C("solve-option-of-another-map", "solve --dataset digits --rff-dim 1024", 2,
      ("--rff-dim", "--features rff or relu", "not of --features raw"), "add --features rff"),
    C("solve-option-of-another-map-gabor", "solve --dataset digits --features relu "
      "--gabor-order 1", 2, ("--gabor-order", "not of --features relu"),
      "leave --gabor-order out"),
    C("solve-dataset-npz-without-prefix", "solve --dataset {d}/good.npz", 2, "unknown dataset",
      "for your arrays, npz:"),
    C("solve-bandwidth-tiny", "solve --bandwidth 1e-300", 2, ("--bandwidth", "too small"),
      "at least 1e-150"),
    C("solve-bandwidth-subnormal", "solve --bandwidth 1e-320", 2, "--bandwidth",
      "at least 1e-150"),
    C("solve-dtype-precision-conflict", "solve --dtype float32 --precision float64", 2,
      "contradicts", "give one of them"),
    C("solve-dtype-precision-conflict-2", "solve --dtype float64 --precision float32", 2,
      "contradicts", "give one of them"),
    C("solve-resume-alone", S + " --resume", 2, ("--resume", "out-of-core"), "give its folder"),
    C("solve-scheduler-and-local", S + " --scheduler tcp://x:1 --distributed local", 2,
      ("--scheduler and --distributed cannot be combined", "local cluster"),
      "give one of them"),
    C("solve-ooc-and-local", S + " --out-of-core {out}/ooc --distributed local", 2,
      ("--out-of-core and --distributed cannot be combined", "on disk"), "give one of them"),
    C("solve-mixed-dtype-float64", S + " --precision mixed --dtype float64", 2,
      ("--dtype float64 contradicts --precision mixed", "factors K in float32"),
      "give one of them"),
    C("solve-mixed-eigh", S + " --precision mixed --solver eigh", 2, "eigh", "Cholesky"),
    C("solve-tol-too-small", S + " --precision mixed --tol 1e-20", 2, "tol", "[1e-15, 1)"),
    C("solve-tol-too-large", S + " --precision mixed --tol 2", 2, "tol", "[1e-15, 1)"),
    C("solve-ooc-unwritable", S + " --out-of-core {ro}/ooc", 2, "--out-of-core",
      "choose a folder"),
    C("solve-ooc-is-file", S + " --out-of-core {d}/text.txt", 2,
      ("--out-of-core", "not a folder"), "not a folder"),
    C("solve-save-is-dir", S + " --save {out}", 2, ("--save", "folder"), "file name"),
    C("solve-save-no-folder", S + " --save /nonexistent-dir/m.pkl", 2,
      ("--save", "does not exist"), "does not exist"),
    C("solve-save-unwritable", S + " --save {ro}/m.pkl", 2, "--save", "choose a folder"),
    C("solve-cache-dir-unwritable", S + " --features rff --rff-dim 64 --feature-cache-dir "
      "{ro}/cache", 2, ("--feature-cache-dir", "choose a folder"),
      "leave --feature-cache-dir out and give --no-feature-cache"),
    C("solve-gabor-on-flat-npz", NPZ.format(d="{d}", f="good.npz") + " --features gabor", 2,
      "gabor", ("image", "image_shape")),
    C("solve-gabor-scales-too-big", S + " --features gabor --gabor-scales 5", 2, "scales",
      ("2^", "image", "at most")),
    C("solve-gabor-grid-too-coarse", S + " --features gabor --gabor-grid-bits 0 "
      "--no-feature-cache", 2, ("--gabor-grid-bits 0", "of their norm"),
      "--gabor-grid-bits auto"),
    C("solve-seed-negative", "solve --seed -1", 2, "--seed", "integer >= 0"),
    C("solve-polynomial-gamma-negative", S + " --kernel polynomial --gamma -1", 2, "gamma",
      "positive"),
    C("solve-polynomial-coef0-negative", S + " --kernel polynomial --coef0 -1", 2, "coef0",
      "non-negative"),
    # a kernel flag the chosen kernel has no parameter for was silently ignored
    C("solve-gaussian-gamma", S + " --gamma 0.02", 2,
      ("--gamma", "polynomial", "--kernel gaussian"), "--bandwidth 5"),
    C("solve-laplacian-degree", S + " --kernel laplacian --degree 3", 2,
      ("--degree", "polynomial and normalized"), ("leave it out", "--kernel polynomial")),
    C("solve-linear-bandwidth", S + " --kernel linear --bandwidth 3", 2,
      ("--bandwidth", "gaussian and laplacian"), ("leave it out", "--kernel gaussian")),
    C("solve-normalized-coef0", S + " --kernel normalized --coef0 2", 2,
      ("--coef0", "polynomial kernel"), ("leave it out", "--kernel polynomial")),
    C("solve-tile-size-small", S + " --tile-size 5", 2, "tile", "at least 16"),
    C("solve-max-iter-huge", S + " --precision mixed --max-iter 200000", 2, "--max-iter",
      "[1, 100000]"),
    C("solve-device-gpu-missing", S + " --device gpu", 2, "GPU", ("CuPy", "cpu", "CPU")),
    C("solve-scheduler-empty", ["solve", "--dataset", "digits", "--scheduler", " "], 2,
      "scheduler", "tcp://"),
    # ---------------------------------------------------------------- solve: npz files
    C("npz-text-file", NPZ.format(d="{d}", f="text.txt"), 3, "not a .npz", "numpy.savez"),
    C("npz-is-npy", NPZ.format(d="{d}", f="x.npy"), 3, ".npy", "numpy.savez"),
    C("npz-empty-file", NPZ.format(d="{d}", f="empty.npz"), 3, "not a .npz", "numpy.savez"),
    C("npz-truncated", NPZ.format(d="{d}", f="truncated.npz"), 3, "not a readable",
      "numpy.savez"),
    C("npz-no-x-train", NPZ.format(d="{d}", f="no_x.npz"), 2, "X_train", "found:"),
    C("npz-no-y-train", NPZ.format(d="{d}", f="no_y.npz"), 2, "y_train", "found:"),
    C("npz-x-test-without-y", NPZ.format(d="{d}", f="x_test_only.npz"), 2, "X_test",
      "give both"),
    C("npz-x-1d", NPZ.format(d="{d}", f="x_1d.npz"), 2, "2-D", "(n, d)"),
    C("npz-x-3d", NPZ.format(d="{d}", f="x_3d.npz"), 2, "2-D", "(n, d)"),
    C("npz-x-strings", NPZ.format(d="{d}", f="x_str.npz"), 2, "numeric", "must be"),
    C("npz-x-complex", NPZ.format(d="{d}", f="x_complex.npz"), 2, "numeric", "must be"),
    C("npz-x-nan", NPZ.format(d="{d}", f="x_nan.npz"), 2, "NaN", "NaN"),
    C("npz-x-test-inf", NPZ.format(d="{d}", f="x_test_inf.npz"), 2, "infinite", "X_test"),
    C("npz-y-wrong-length", NPZ.format(d="{d}", f="y_len.npz"), 2, "y_train", "labels"),
    C("npz-y-2d", NPZ.format(d="{d}", f="y_2d.npz"), 2, "y_train", "1-D"),
    C("npz-x-test-columns", NPZ.format(d="{d}", f="test_cols.npz"), 2, "columns", "X_train"),
    C("npz-y-test-wrong-length", NPZ.format(d="{d}", f="y_test_len.npz"), 2, "y_test",
      "labels"),
    C("npz-x-empty", NPZ.format(d="{d}", f="x_empty.npz"), 2, "empty", "X_train"),
    C("npz-continuous-labels", NPZ.format(d="{d}", f="continuous.npz"), 2,
      ("continuous", "y_train"), "task='regression'"),
    C("npz-image-shape-mismatch", NPZ.format(d="{d}", f="bad_shape.npz"), 2, "image_shape",
      "columns"),
    C("npz-complex-labels", NPZ.format(d="{d}", f="y_complex.npz"), 2, "labels",
      ("must be", "integers")),
    C("npz-nan-labels", NPZ.format(d="{d}", f="y_nan.npz"), 2, ("labels", "NaN"), "NaN"),
    C("npz-zero-columns", NPZ.format(d="{d}", f="zero_cols.npz"), 2, "empty", "X_train"),
    C("npz-object-array", NPZ.format(d="{d}", f="objects.npz"), 3, "not a readable",
      "numpy.savez"),
    C("npz-normalized-zero-row", NPZ.format(d="{d}", f="zero_row.npz") + " --kernel normalized",
      2, "all zeros", ("remove", "row", "kernel")),
    # ---------------------------------------------------------------- not positive definite
    C("notpd-duplicates", NPZ.format(d="{d}", f="dups.npz") + " --bandwidth 0.5", 5,
      "duplicates", ("--solver eigh", "--ridge", "remove the")),
    C("notpd-linear-low-rank", S + " --kernel linear", 5, "rank at most",
      ("--solver eigh", "--ridge")),
    C("notpd-huge-bandwidth", S + " --n-train 200 --bandwidth 1e4", 5, "positive definite",
      ("--solver eigh", "--ridge")),
    C("notpd-polynomial-low-rank", NPZ.format(d="{d}", f="good.npz") + " --kernel polynomial "
      "--degree 1", 5, "polynomial", ("--solver eigh", "--ridge")),
    C("notpd-float32", S + " --n-train 300 --bandwidth 50 --dtype float32", 5, "float32",
      ("--precision mixed", "--ridge")),
    # ---------------------------------------------------------------- memory
    C("memory-tiny-limit", M, 4, ("needs about", "available"), "--n-train",
      env={"KERNELFIT_MEMORY_LIMIT": "1000000"}),
    C("memory-zero-limit", M, 4, "needs about", "free memory",
      env={"KERNELFIT_MEMORY_LIMIT": "0"}),
    C("memory-eigh", M + " --solver eigh", 4, "needs about", "--n-train",
      env={"KERNELFIT_MEMORY_LIMIT": "2000000"}),
    C("memory-float32", M + " --dtype float32", 4, "needs about", ("--n-train", "free"),
      env={"KERNELFIT_MEMORY_LIMIT": "1000000"}),
    C("memory-precision-float64", M + " --precision float64", 4, "needs about",
      ("--n-train", "free"), env={"KERNELFIT_MEMORY_LIMIT": "1000000"}),
    C("memory-mixed", M + " --precision mixed", 4, "needs about", ("--n-train", "free"),
      env={"KERNELFIT_MEMORY_LIMIT": "1000000"}),
    C("memory-limit-not-a-number", S, 2, "KERNELFIT_MEMORY_LIMIT", "number of bytes",
      env={"KERNELFIT_MEMORY_LIMIT": "lots"}),
    C("memory-budget-not-a-size", S + " --memory-budget lots", 2, "--memory-budget", HELP),
    C("memory-budget-below-1mib", S + " --memory-budget 1000", 2, ("--memory-budget", "1MiB"),
      HELP),
    C("memory-budget-over-available", S + " --memory-budget 1000TiB", 2,
      ("--memory-budget", "more than"), "give at most"),
    C("memory-budget-too-small", M + " --memory-budget 8MiB", 4, ("needs about",
      "memory budget is 8.0 MiB"), "MiB or more (up to the"),
    # beyond memory the budget holds what stays in this process (the tiles are halved first)
    C("memory-budget-too-small-ooc", M + " --out-of-core {out}/ooc --memory-budget 1MiB", 4,
      ("needs about", "panels (a column of K's tiles"), "MiB or more (up to the"),
    C("memory-budget-too-small-local-dask", M + " --distributed local --memory-budget 1MiB", 4,
      ("needs about", "on the local Dask workers"), "MiB or more (up to the"),
    # ---------------------------------------------------------------- predict
    C("predict-model-missing", "predict --model /nonexistent/m.pkl", 2, "does not exist",
      "model file"),
    C("predict-model-garbage", "predict --model {d}/text.txt", 2,
      ("cannot be read as a kernelfit model file", "truncated"), "save the model again"),
    C("predict-model-truncated", "predict --model {d}/truncated.pkl", 2,
      ("cannot be read as a kernelfit model file", "truncated"), "save the model again"),
    C("predict-model-dev-null", "predict --model /dev/null", 2, "not a regular file",
      "--save FILE"),
    C("predict-model-is-dir", "predict --model {d}", 2, "is a folder", "model file inside"),
    C("predict-model-damaged", "predict --model {d}/damaged.pkl", 2, ("--model", "damaged"),
      "save the model again"),
    C("predict-model-without-estimator", "predict --model {d}/noest.pkl", 2,
      "no fitted estimator", "--save FILE"),
    C("predict-input-unscaled-pixels", "predict --model {model} --input {d}/x64_raw.npy", 2,
      ("--input", "values up to 16", "from 0 to 1"), "digits / 16"),
    C("predict-no-model", "predict", 2, "--model", HELP),
    C("predict-model-other-pickle", "predict --model {d}/other.pkl", 2, "not a kernelfit model",
      "model file"),
    C("predict-model-old-version", "predict --model {d}/old.pkl", 2, "version 0",
      "reads versions 1, 2"),
    C("predict-input-missing", "predict --model {model} --input /nonexistent/x.npy", 2,
      ("--input", "no such file"), "no such file"),
    C("predict-input-text", "predict --model {model} --input {d}/text.txt", 2,
      ("--input", "neither"), "numpy.save"),
    C("predict-input-npz-no-x", "predict --model {model} --input {d}/no_x.npz", 2,
      ("--input", "no array"), "X_test"),
    C("predict-input-1d", "predict --model {model} --input {d}/x_1d.npy", 2, "2-D", "(n, d)"),
    C("predict-input-wrong-features", "predict --model {model} --input {d}/x.npy", 2,
      "features", "fitted with"),
    C("predict-input-nan", "predict --model {model} --input {d}/x64_nan.npy", 2, "NaN", "NaN"),
    C("predict-input-strings", "predict --model {model} --input {d}/x_str.npy", 2, "numeric",
      "must be"),
    C("predict-input-empty", "predict --model {model} --input {d}/x64_empty.npy", 2, "0 rows",
      "no inputs"),
    C("predict-output-unwritable", "predict --model {model} --output {ro}/p.npy", 2,
      "--output", "choose a folder"),
    C("predict-output-is-dir", "predict --model {model} --output {out}", 2,
      ("--output", "folder"), "file name"),
    C("predict-output-no-folder", "predict --model {model} --output /nonexistent/p.npy", 2,
      "--output", "does not exist"),
    C("predict-n-test-negative", "predict --model {model} --n-test -1", 2, "--n-test", HELP),
    C("predict-input-and-dataset", "predict --model {model} --input {d}/x64_raw.npy "
      "--dataset digits", 2, "--input and --dataset cannot be combined", "give one of them"),
    C("predict-input-and-n-test", "predict --model {model} --input {d}/x64_raw.npy "
      "--n-test 3", 2, "--input and --n-test cannot be combined", "give one of them"),
    C("predict-output-not-npy", "predict --model {model} --output {out}/p.txt", 2,
      ("--output", ".npy array"), "ending in .npy"),
    # an output path that is one of the command's own input files (its data destroyed)
    C("solve-save-is-npz-dataset", NPZ.format(d="{d}", f="good.npz") + " --save {d}/good.npz",
      2, ("--save", "is the file of --dataset npz:"), "give another file name"),
    C("solve-save-is-imagefolder-archive", "solve --dataset imagefolder:{d}/text.txt --save "
      "{d}/text.txt", 2, ("--save", "is the file of --dataset imagefolder:"),
      "give another file name"),
    C("predict-output-is-input", "predict --model {model} --input {d}/x64.npy --output "
      "{d}/x64.npy", 2, ("--output", "is the --input file"), "give another file name"),
    C("predict-output-is-npz-dataset", "predict --model {model} --dataset npz:{d}/x.npy "
      "--output {d}/x.npy", 2, ("--output", "is the file of --dataset npz:"),
      "give another file name"),
    C("randomize-levels-empty-item", "randomize --levels 0,,1", 2, ("--levels", "empty item"),
      "0,0.5,1"),
    C("randomize-no-condition-and-condition", "randomize --no-condition --condition all", 2,
      "--no-condition contradicts --condition all", "give one of them"),
    C("reproduce-only-empty", ["reproduce", "--only", ""], 2, "empty name", "--list"),
    C("verify-out-empty", ["verify", "--quick", "--out", ""], 2, "--out is empty",
      "give a value"),
    C("solve-save-empty", ["solve", "--dataset", "digits", "--save", ""], 2,
      "--save is empty", "give a value"),
    C("predict-input-empty-path", ["predict", "--model", "{model}", "--input", ""], 2,
      "--input is empty", "give a value"),
    C("solve-npz-huge-values", NPZ.format(d="{d}", f="huge.npz"), 2,
      ("X_train has values up to 9.97e+159", "overflow"), "rescale the inputs"),
    C("bench-n-beyond-the-dataset", "bench --dataset digits --n 2000 --peers none "
      "--no-peaks --out {out}/b", 2, ("--n 2000 is more than the 1438 training points",),
      "give --n values up to 1438"),
    C("solve-one-class", NPZ.format(d="{d}", f="one_class.npz"), 2,
      "the training labels have only one class (0)", "two or more classes"),
    C("predict-dataset-empty", ["predict", "--model", "{model}", "--dataset", ""], 2,
      "--dataset is empty", "give a dataset name"),
    C("solve-data-dir-empty", ["solve", "--data-dir", ""], 2, "--data-dir is empty",
      "give a value"),
    C("verify-out-is-a-file", "verify --quick --out {d}/text.txt", 2,
      ("--out", "exists and is not a folder"), "give another name"),
    C("solve-save-folder-missing", S + " --save {out}/nodir/m.pkl", 2,
      ("--save", "does not exist"), "create it first"),
    C("datasets-fetch-npz-missing", "datasets fetch npz:{out}/x.npz", 2,
      ("kernelfit datasets: error: npz:", "no such file"), "numpy.savez"),
    C("reproduce-max-filters-without-conv", "reproduce --only mnist-raw --max-filters 8000", 2,
      ("--max-filters", "leaves out"), "leave --max-filters out"),
    # the test split the model's own dataset gives: the flag named is the one typed
    C("predict-n-test-zero", "predict --model {model} --n-test 0", 2,
      ("--n-test", "0 rows in the test split of digits"), "no inputs"),
    C("predict-dataset-wrong-features", "predict --model {model} --dataset npz:{d}/good.npz",
      2, ("--dataset", "good.npz: 5 features"), "fitted with 64"),
    C("predict-dataset-unknown", "predict --model {model} --dataset nope", 2,
      "unknown dataset", "known:"),
    C("predict-input-pickled", "predict --model {model} --input {d}/objects.npy", 2,
      ("--input", "could not read"), ("numpy", "NumPy")),
    # ---------------------------------------------------------------- datasets
    C("datasets-no-action", "datasets", 2, "choose an action", ("list", "info", "fetch")),
    C("datasets-info-unknown", "datasets info nosuch", 2, "unknown dataset", "known:"),
    C("datasets-fetch-unknown", "datasets fetch nosuch", 2, "unknown dataset", "known:"),
    C("datasets-info-npz-missing", "datasets info npz:/nonexistent.npz", 2, "no such file",
      "npz:"),
    C("datasets-info-npz-text", "datasets info npz:{d}/text.txt", 3, "not a .npz",
      "numpy.savez"),
    C("datasets-fetch-offline", "datasets fetch mnist --data-dir {out}", 3,
      ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
       "t10k-labels-idx1-ubyte.gz"), ("--data-dir", "put the files")),
    C("datasets-fetch-offline-cifar", "datasets fetch cifar10 --data-dir {out}", 3,
      "cifar-10-python.tar.gz", ("--data-dir", "put the files")),
    C("datasets-fetch-data-dir-unwritable", "datasets fetch mnist --data-dir {ro}/data", 2,
      ("--data-dir", "cannot write in"), "choose a folder you can write to"),
    C("datasets-fashion-with-mnist-files", "datasets info fashion-mnist --data-dir {d}", 3,
      "mnist's", "fashion-mnist's own files"),
    C("datasets-info-imagefolder-missing", "datasets info imagefolder:/nonexistent", 2,
      "does not exist", "imagefolder"),
    C("datasets-info-imagefolder-bad-tree", "datasets info imagefolder:{d}/flat", 3, "expected",
      "train/<class>/"),
    C("datasets-list-bad-flag", "datasets list --bogus", 2, "--bogus", HELP),
    C("datasets-info-no-name", "datasets info", 2, "name", HELP),
    C("datasets-action-unknown", "datasets download mnist", 2, "download", HELP),
    C("datasets-corrupt-idx", "datasets info mnist --data-dir {d}/corrupt", 3,
      ("corrupt", "checksum"), ("delete", "replace", "official")),
    # ---------------------------------------------------------------- randomize
    C("randomize-level-above-one", "randomize --levels 2", 2, "levels", "[0, 1]"),
    C("randomize-level-text", "randomize --levels abc", 2, "level", ("numbers", "[0, 1]")),
    C("randomize-levels-empty", ["randomize", "--levels", ""], 2, "level", ("e.g.", "levels")),
    C("randomize-mode-unknown", "randomize --mode bogus", 2, "bogus", ("labels", "choose")),
    C("randomize-repeats-zero", "randomize --repeats 0", 2, "--repeats", "at least 1"),
    C("randomize-out-is-file", "randomize --out {d}/text.txt", 2, ("--out", "not a folder"),
      "not a folder"),
    C("randomize-out-unwritable", "randomize --out {ro}/r", 2, "--out", "choose a folder"),
    C("randomize-prefix-slash", "randomize --out {out}/r --prefix a/b", 2, "--prefix",
      "file-name prefix"),
    C("randomize-pixels-without-images", "randomize --dataset npz:{d}/good.npz --mode "
      "shuffled-pixels --levels 0", 2, "image", ("'labels'", "gaussian")),
    C("randomize-condition-unknown", "randomize --condition bogus", 2, "--condition", HELP),
    # ---------------------------------------------------------------- bench
    C("bench-n-too-large", "bench --n 200000 --no-peaks --out {out}/b", 2,
      ("fits in memory", "200000"), "--n "),
    C("bench-linear-bandwidth", "bench --kernel linear --bandwidth 3 --n 200 --no-peaks "
      "--out {out}/b", 2, ("--bandwidth", "gaussian and laplacian"),
      ("leave it out", "--kernel gaussian")),
    C("bench-gaussian-degree", "bench --degree 3 --n 200 --no-peaks --out {out}/b", 2,
      ("--degree", "polynomial and normalized"), ("leave it out", "--kernel polynomial")),
    C("bench-n-one", "bench --n 1", 2, "--n", HELP),
    C("bench-n-text", "bench --n abc", 2, "--n", HELP),
    C("bench-n-infinite", "bench --n inf", 2, "whole numbers", HELP),
    C("bench-seed-negative", "bench --seed -1 --out {out}/b", 2, "--seed", HELP),
    C("bench-n-fraction", "bench --n 150.9,200", 2, "whole numbers", HELP),
    C("bench-peers-unknown", "bench --peers bogus --out {out}/b", 2, "bogus",
      ("sklearn", "scipy")),
    C("bench-bandwidth-median", "bench --bandwidth median --out {out}/b", 2, "--bandwidth",
      "the same bandwidth"),
    C("bench-data-dir-random", "bench --data-dir {out} --out {out}/b", 2, "--data-dir",
      "name a dataset with --dataset"),
    C("bench-peak-size-tiny", "bench --peak-size 8 --out {out}/b", 2, "--peak-size",
      "at least 256"),
    C("bench-n-test-negative", "bench --n-test -1 --out {out}/b", 2, "--n-test", ">= 0"),
    C("bench-d-with-dataset", "bench --dataset digits --d 30 --out {out}/b", 2, "--d",
      "leave --d out"),
    C("bench-budget-negative", "bench --budget -1 --out {out}/b", 2, "--budget must be",
      "0: no budget"),
    C("bench-timeout-zero", "bench --timeout 0 --out {out}/b", 2, "--timeout must be",
      "positive"),
    C("bench-sklearn-alpha-negative", "bench --sklearn-alpha -1 --out {out}/b", 2,
      "--sklearn-alpha must be", ">= 0"),
    C("bench-n-test-above-dataset", "bench --dataset digits --n-test 2000 --out {out}/b", 2,
      "--n-test 2000 is more than the 359", "--n-test 359 or less"),
    C("randomize-prefix-without-out", "randomize --prefix x_", 2, "--prefix", "add --out DIR"),
    C("datasets-info-unknown-option", "datasets info digits --bogus", 2,
      "kernelfit datasets info: error: unrecognized arguments: --bogus",
      "see kernelfit datasets info --help"),
    C("solve-gabor-pool-too-large", "solve --n-train 60 --n-test 20 --features gabor "
      "--gabor-pool 100", 2, "--gabor-pool must be at most", "got 100"),
    C("solve-conv-power-zero", "solve --n-train 60 --n-test 20 --features random-conv "
      "--conv-power 0", 2, "--conv-power must be greater than", "got 0"),
    C("solve-cache-dir-with-raw", S + " --feature-cache-dir {out}/fc", 2,
      "--feature-cache-dir", "--features raw has none"),
    C("solve-cache-dir-and-no-cache", S + " --features rff --feature-cache-dir {out}/fc "
      "--no-feature-cache", 2, "cannot be combined", "give one of them"),
    C("solve-tol-with-float64", S + " --precision float64 --tol 1e-6", 2,
      "--tol does not apply with --precision float64", ("leave --tol out",)),
    C("solve-refine-with-float32", S + " --dtype float32 --refine ir", 2,
      "--refine does not apply with --dtype float32", "--precision mixed"),
    C("datasets-data-dir-is-file", "datasets info mnist --data-dir {d}/text.txt", 2,
      "--data-dir", "is not a directory"),
    C("memory-budget-negative", S + " --memory-budget -5G", 2, "--memory-budget",
      "reads as an option"),
    C("bench-out-unwritable", "bench --n 100 --no-peaks --out {ro}/b", 2, "--out",
      "choose a folder"),
    C("bench-peer-env-no-equals", "bench --peer-env NOEQ", 2, "--peer-env", HELP),
    C("bench-dataset-unknown", "bench --dataset nope --out {out}/b", 2, "unknown dataset",
      "known: random (the default), mnist"),
    C("bench-repeats-zero", "bench --repeats 0", 2, "--repeats", HELP),
    # ---------------------------------------------------------------- top level
    C("no-command", [], 2, "choose a command", ("solve", "--help")),
    C("unknown-command", "fly", 2, "fly", HELP),
    C("verify-bad-flag", "verify --bogus", 2, "--bogus", HELP),
    C("verify-unknown-check", "verify nosuch", 2, "unknown check", "known:"),
    C("verify-seed-text", "verify --seed x", 2, "--seed", HELP),
    C("verify-seed-negative", "verify --quick curvature --seed -1 --out {out}/v", 2,
      ("--seed", ">= 0"), HELP),
    C("verify-out-is-file", "verify --quick curvature --out {d}/text.txt", 2,
      ("--out", "not a folder"), "not a folder"),
    C("verify-out-unwritable", "verify --quick curvature --out {ro}/v", 2, "--out",
      "choose a folder"),
    C("dask-timeout-not-a-number", "solve --dataset digits --n-train 60 --n-test 20 "
      "--scheduler tcp://127.0.0.1:1", 2, ("KERNELFIT_DASK_TIMEOUT", "'abc'"), "unset it",
      env={"KERNELFIT_DASK_TIMEOUT": "abc"}),
    C("reproduce-out-is-file", "reproduce --quick --data-dir {d} --out {d}/text.txt", 2,
      ("--out", "not a folder"), "not a folder"),
]


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad-input")
    rng = np.random.default_rng(0)
    X = rng.random((40, 5))
    y = rng.integers(0, 3, 40)

    def npz(name, **arrays):
        np.savez(d / name, **arrays)

    npz("good.npz", X_train=X, y_train=y)
    npz("no_x.npz", y_train=y)
    npz("no_y.npz", X_train=X)
    npz("x_test_only.npz", X_train=X, y_train=y, X_test=X)
    npz("x_1d.npz", X_train=X[:, 0], y_train=y)
    npz("x_3d.npz", X_train=X.reshape(40, 5, 1), y_train=y)
    npz("x_str.npz", X_train=X.astype(str), y_train=y)
    npz("x_complex.npz", X_train=X + 1j, y_train=y)
    Xn = X.copy()
    Xn[3, 2] = np.nan
    npz("x_nan.npz", X_train=Xn, y_train=y)
    Xi = X[:10].copy()
    Xi[0, 0] = np.inf
    npz("x_test_inf.npz", X_train=X, y_train=y, X_test=Xi, y_test=y[:10])
    npz("y_len.npz", X_train=X, y_train=y[:-1])
    npz("y_2d.npz", X_train=X, y_train=np.stack([y, y], 1))
    npz("test_cols.npz", X_train=X, y_train=y, X_test=X[:5, :3], y_test=y[:5])
    npz("y_test_len.npz", X_train=X, y_train=y, X_test=X[:5], y_test=y[:4])
    npz("x_empty.npz", X_train=X[:0], y_train=y[:0])
    npz("continuous.npz", X_train=X, y_train=rng.random(40))
    npz("bad_shape.npz", X_train=X, y_train=y, image_shape=np.array([2, 2]))
    npz("y_complex.npz", X_train=X, y_train=y + 1j)
    yn = y.astype(float)
    yn[0] = np.nan
    npz("y_nan.npz", X_train=X, y_train=yn)
    npz("zero_cols.npz", X_train=np.zeros((40, 0)), y_train=y)
    np.savez(d / "objects.npz", X_train=np.array([{"a": 1}] * 4, dtype=object), y_train=y[:4])
    Xz = X.copy()
    Xz[5] = 0
    npz("zero_row.npz", X_train=Xz, y_train=y)
    npz("dups.npz", X_train=np.vstack([X, X[:3]]), y_train=np.concatenate([y, y[:3]]))
    (d / "text.txt").write_text("1,2,3\n4,5,6\n")
    (d / "empty.npz").write_bytes(b"")
    (d / "truncated.npz").write_bytes((d / "good.npz").read_bytes()[:200])
    np.save(d / "x.npy", X)
    np.save(d / "x_1d.npy", np.arange(5.0))
    np.save(d / "x_str.npy", np.array([["a"] * 64]))
    x64 = np.zeros((3, 64))
    x64[1, 1] = np.nan
    np.save(d / "x64_nan.npy", x64)
    np.save(d / "x64_empty.npy", np.zeros((0, 64)))
    np.save(d / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (d / "other.pkl").write_bytes(pickle.dumps({"hello": 1}))
    (d / "old.pkl").write_bytes(pickle.dumps({"format": "kernelfit-model", "version": 0}))
    np.savez(d / "one_class.npz", X_train=np.random.default_rng(1).random((30, 4)),
             y_train=np.zeros(30, dtype=int))
    np.savez(d / "huge.npz", X_train=np.random.default_rng(0).random((40, 4)) * 1e160,
             y_train=np.arange(40) % 2)
    (d / "noest.pkl").write_bytes(pickle.dumps({"format": "kernelfit-model", "version": 1,
                                                "estimator": None, "feature_map": None,
                                                "meta": {}}))
    np.save(d / "x64_raw.npy", np.full((2, 64), 16.0))  # digits as scikit-learn gives them
    np.save(d / "x64.npy", np.full((2, 64), 0.5))  # inputs the digits model takes
    (d / "flat").mkdir()
    (d / "flat" / "a.png").write_bytes(b"")
    # MNIST-format files under fashion-mnist/, recognized by MNIST's (test) checksums
    arrays = make_idx_arrays()
    contents = dict(zip(("train_images", "train_labels", "test_images", "test_labels"),
                        (encode_idx(a) for a in arrays)))
    (d / "fashion-mnist").mkdir()
    for role, body in contents.items():
        (d / "fashion-mnist" / IDX_NAMES[role][:-3]).write_bytes(body)
    # a corrupt MNIST copy: valid gzip whose bytes are not the published ones
    (d / "corrupt" / "mnist").mkdir(parents=True)
    for role, body in contents.items():
        (d / "corrupt" / "mnist" / IDX_NAMES[role]).write_bytes(gzip.compress(body, mtime=0))
    model = d / "model.pkl"
    assert cli.main(["solve", "--dataset", "digits", "--n-train", "60", "--n-test", "10",
                     "--save", str(model), "--json"]) == 0
    # a copy changed after it was saved: its checksum no longer matches
    body = bytearray(model.read_bytes())
    body[len(body) // 2] ^= 0xFF
    (d / "damaged.pkl").write_bytes(bytes(body))
    (d / "truncated.pkl").write_bytes(model.read_bytes()[:-100])
    return {"d": d, "contents": contents, "model": model,
            "ro": unwritable_folder(tmp_path_factory.mktemp("ro"))}


def _listing(folder: Path):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture(autouse=True)
def _offline(monkeypatch, isolated_data_env):
    def offline(url, timeout):
        raise urllib.error.URLError("no network (test)")

    monkeypatch.setattr(_fetch, "_urlopen", offline)


# ---------------------------------------------------------------- the catalogue
def test_catalogue_is_large_and_ids_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 128


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, inputs, tmp_path, capsys, monkeypatch):
    if case.id.startswith("dask-"):  # the [dask] extra: without it the line names its install
        pytest.importorskip("distributed")
    if case.id == "datasets-fashion-with-mnist-files":
        register_sources(monkeypatch, "mnist", {r: gzip.compress(b, mtime=0) for r, b in
                                                inputs["contents"].items()},
                         content=inputs["contents"])
    out = tmp_path / "out"
    out.mkdir()
    for k, v in (case.env or {}).items():
        monkeypatch.setenv(k, v)
    argv = [a.format(d=inputs["d"], out=out, ro=inputs["ro"], model=inputs["model"])
            for a in case.argv]
    before = _listing(inputs["d"])
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code
    captured = capsys.readouterr()
    err = captured.err
    assert "Traceback" not in err and "Error:" not in err.split(": error:")[0], err
    assert code not in (0, 1, None), (code, err)
    assert code == case.code, (code, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert ": error: " in lines[0], err
    for word in case.must:
        assert word in err, (word, err)
    assert any(w in err for w in case.way), (case.way, err)
    # nothing half-written: the output folder is empty, the inputs are untouched
    assert _listing(out) == [], _listing(out)
    assert _listing(inputs["d"]) == before


def test_library_messages_name_no_flags():
    """The library speaks in data: no command-line flag in a message outside kernelfit/cli/."""
    import re

    pattern = re.compile(r"""(raise\s+\w+\(|warn\()[^)]*?['"][^'"]*--[a-z]""", re.S)
    offenders = []
    for path in (REPO_ROOT / "kernelfit").rglob("*.py"):
        if "cli" in path.relative_to(REPO_ROOT / "kernelfit").parts[:1]:
            continue
        text = path.read_text()
        for m in pattern.finditer(text):
            offenders.append(f"{path.name}: {m.group(0)[:80]!r}")
    assert offenders == []


def test_error_classes_carry_no_exit_codes():
    from kernelfit import errors

    for name in errors.__all__:
        assert not hasattr(getattr(errors, name), "exit_code"), name


# ---------------------------------------------------------------- the real console path
def _run(args, cwd):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), KERNELFIT_PROGRESS="0")
    return subprocess.run([sys.executable, "-m", "kernelfit", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=120)


@pytest.mark.parametrize("args,code,word", [
    (["solve", "--dataset", "nope"], 2, "unknown dataset"),
    (["solve", "--n-train", "0"], 2, "--n-train"),
    (["datasets"], 2, "choose an action"),
    (["solve", "--dataset", "digits", "--n-train", "60", "--kernel", "linear"], 5, "Ways out"),
])
def test_console_path(tmp_path, args, code, word):
    r = _run(args, tmp_path)
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr and word in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_interrupted_download_leaves_no_empty_dataset_folder(tmp_path, monkeypatch):
    def interrupted(url, timeout):
        raise KeyboardInterrupt

    monkeypatch.setattr(_fetch, "_urlopen", interrupted)
    code = cli.main(["datasets", "fetch", "mnist", "--data-dir", str(tmp_path)])
    assert code == 130
    assert not (tmp_path / "mnist").exists()


def test_any_os_error_is_one_clear_line(capsys, monkeypatch):
    """The catch-all: an OSError no specific check foresaw is one line with exit code 7."""
    import errno

    from kernelfit.cli import solve

    def refused(args):
        raise PermissionError(errno.EACCES, "Permission denied", "/some/where")

    monkeypatch.setattr(solve, "run", refused)
    code = cli.main(["solve"])
    err = capsys.readouterr().err
    assert code == 7 and len(err.strip().splitlines()) == 1
    assert "/some/where" in err and "Permission denied" in err and "Way out" in err


@pytest.mark.parametrize("params, param", [
    ({"tile_size": "x"}, "tile_size"),
    ({"tile_size": 31.5}, "tile_size"),
    ({"kernel": "polynomial", "degree": "four"}, "degree"),
    ({"kernel": "polynomial", "degree": float("nan")}, "degree"),
    ({"ooc_dir": 5}, "ooc_dir"),
    ({"ooc_dir": " "}, "ooc_dir"),
    ({"bandwidth": "x"}, "bandwidth"),
    ({"kernel": "cosine"}, "kernel"),
    ({"kernel": "polynomial", "gamma": "x"}, "gamma"),
    # checked whatever the kernel, as degree is (both passed unseen for other kernels)
    ({"kernel": "gaussian", "gamma": float("nan")}, "gamma"),
    ({"kernel": "linear", "coef0": -1.0}, "coef0"),
    ({"device": "tpu"}, "device"),
    ({"compute_residual": "no"}, "compute_residual"),
    ({"estimate_condition": "no"}, "estimate_condition"),
    # the estimator's dtype default was 'float64', which could not be told from one given
    ({"precision": "float32", "dtype": "float64"}, "dtype"),
    ({"precision": "mixed", "dtype": "float64"}, "dtype"),
])
def test_estimator_parameters_of_the_wrong_type_are_one_input_error(params, param):
    """Each was a builtin ValueError/TypeError traceback, or silently taken: the two
    switches as True (bool('no') is True), the dtypes as the precision's."""
    from kernelfit import KernelInterpolator
    from kernelfit.errors import InputError

    X = np.random.default_rng(0).random((30, 4))
    y = np.arange(30) % 3
    with pytest.raises(InputError) as err:
        KernelInterpolator(**params).fit(X, y)
    assert err.value.param == param and type(err.value).__name__ == "InputError"


def test_library_refusals_of_unknown_names_and_types_are_input_errors():
    from kernelfit import proofs
    from kernelfit.errors import InputError

    from kernelfit.solvers.exact import SolveOptions

    with pytest.raises(InputError, match="rcond must be a number") as err:
        SolveOptions(solver="eigh", rcond="x").validate()
    assert err.value.param == "rcond"
    with pytest.raises(InputError, match="unknown check 'nope'; known: "):
        proofs.get("nope")
    with pytest.raises(InputError, match="no IDX type code"):
        encode_idx(np.zeros(3, np.complex64))
    with pytest.raises(InputError, match="1 to 255 dimensions, got 0"):
        encode_idx(np.float32(1.0))


def test_a_float32_factorization_that_breaks_down_offers_float64_first():
    """The cheapest exact way out of an ill-conditioned K in float32 is a float64 solve."""
    from kernelfit import KernelInterpolator
    from kernelfit.errors import NotPositiveDefiniteError

    X = np.random.default_rng(0).random((200, 3))
    y = np.arange(200) % 2
    with pytest.raises(NotPositiveDefiniteError) as err:
        KernelInterpolator(bandwidth=100.0, precision="float32", dtype="float32").fit(X, y)
    ways = str(err.value).split("Ways out: ")[1]
    assert ways.startswith("precision='float64'")
    assert "--" not in str(err.value)


def test_low_level_kernel_calls_refuse_shapes_that_do_not_match():
    """Each gave a NumPy broadcasting or matmul error from deep inside."""
    from kernelfit.errors import InputError
    from kernelfit.kernels import get_kernel
    from kernelfit.solvers.products import kernel_matvec

    k = get_kernel("gaussian", bandwidth=1.0)
    X = np.random.default_rng(0).random((5, 3))
    with pytest.raises(InputError, match="same number of features, got 3 and 2"):
        k(X, X[:, :2])
    with pytest.raises(InputError, match="must be 2-D"):
        k(X[0])
    with pytest.raises(InputError, match=r"one row per row of X \(5\).*\(4,\)"):
        kernel_matvec(k, X, np.ones(4))
    assert kernel_matvec(k, X, np.ones(5)).shape == (5,)
    np.testing.assert_allclose(k(X) @ np.ones(5), kernel_matvec(k, X, np.ones(5)))
