"""``kernelfit predict``: apply a saved model to a dataset's test split or to an array."""

from __future__ import annotations

import time

import numpy as np

from ..errors import InputError
from ._common import print_json, print_table


HELP = "predict with a model saved by `kernelfit solve --save`"


def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help="model file from `kernelfit solve --save`")
    p.add_argument("--dataset", default=None,
                   help="evaluate on this dataset's test split (default: the model's dataset)")
    p.add_argument("--data-dir", default=None, help="dataset folder (see `kernelfit solve`)")
    p.add_argument("--n-test", type=int, default=None, help="number of test points")
    p.add_argument("--input", default=None,
                   help="a .npy file of raw inputs (n, d) to predict instead of a dataset")
    p.add_argument("--output", default=None, help="write predicted labels to this .npy file")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    from ..modelfile import load_model

    payload = load_model(args.model)
    est = payload["estimator"]
    fmap = payload.get("feature_map")
    meta = payload.get("meta", {})
    t0 = time.perf_counter()
    rec = {"model": args.model, "features": meta.get("features", "raw")}
    if args.input:
        try:
            X = np.load(args.input, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"could not read {args.input} as a .npy array: {exc}") from None
        y = None
    else:
        from ..datasets import load_dataset

        name = args.dataset or meta.get("dataset")
        if not name:
            raise InputError("give --dataset or --input")
        ds = load_dataset(name, data_dir=args.data_dir, n_train=1, n_test=args.n_test)
        X, y = ds.X_test, ds.y_test
        rec["dataset"] = ds.name
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise InputError(f"inputs must be 2-D (n, d), got shape {X.shape}")
    if fmap is not None:
        X = np.asarray(fmap.transform(X), dtype=np.float64)
    pred = est.predict(X)
    rec["n"] = int(X.shape[0])
    rec["seconds"] = time.perf_counter() - t0
    if y is not None:
        rec["test_error"] = float(np.mean(pred != y))
    if args.output:
        from .._io import atomic_save_npy

        atomic_save_npy(args.output, np.asarray(pred))
        rec["output"] = args.output
    if args.json:
        print_json(rec)
    else:
        print_table(list(rec.items()), title="kernelfit predict")
    return 0
