"""``kernelfit predict``: apply a saved model to a dataset's test split or to an array."""

from __future__ import annotations

import os
import time

import numpy as np

from ..errors import InputError
from ._common import check_output_paths, dataset_file, print_json, print_table
from ._types import nonneg_int


HELP = "predict with a model saved by `kernelfit solve --save`"


def add_arguments(p) -> None:
    p.add_argument("--model", required=True, help="model file from `kernelfit solve --save`")
    p.add_argument("--dataset", default=None,
                   help="evaluate on this dataset's test split (default: the model's dataset)")
    p.add_argument("--data-dir", default=None,
                   help="dataset folder (see `kernelfit solve`; default for the model's own "
                        "dataset: the --data-dir it was fitted with)")
    p.add_argument("--n-test", type=nonneg_int, default=None, help="number of test points")
    p.add_argument("--input", default=None,
                   help="raw inputs to predict instead of a dataset: a .npy array (n, d), or "
                        "a .npz with X_test (or X, or X_train), as `kernelfit solve` reads")
    p.add_argument("--output", default=None, help="write predicted labels to this .npy file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


#: array names tried in an .npz given to --input, in order (those `solve` reads first)
NPZ_INPUT_KEYS = ("X_test", "X", "X_train")


def read_inputs(path: str):
    """The array of inputs in ``path`` (.npy, or .npz with one of :data:`NPZ_INPUT_KEYS`),
    and the labels stored with it (``y_test``/``y``/``y_train``, else None)."""
    import zipfile
    from pathlib import Path

    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"{path}: no such file", param="input")
    try:
        with open(p, "rb") as fh:
            head = fh.read(6)
        if head[:4] == b"PK\x03\x04":
            with np.load(p, allow_pickle=False) as z:
                key = next((k for k in NPZ_INPUT_KEYS if k in z.files), None)
                if key is None:
                    raise InputError(f"{path} holds no array named {', '.join(NPZ_INPUT_KEYS)} "
                                     f"(found: {', '.join(z.files) or 'none'})", param="input")
                X = z[key]
                ykey = "y" + key[1:]
                y = z[ykey] if ykey in z.files else None
            return X, y
        if head != b"\x93NUMPY":
            raise InputError(f"{path} is neither a .npy nor a .npz file (save arrays with "
                             "numpy.save or numpy.savez)", param="input")
        return np.load(p, allow_pickle=False), None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"could not read {path} as a NumPy array "
                         f"({exc.__class__.__name__}: {exc})", param="input") from None


def model_dataset(meta: dict, model: str):
    """The dataset to evaluate a model on when ``--dataset`` is not given: the one it was
    fitted on, a file or folder found at the absolute path stored at save time (from any
    folder). A path that is gone is one error naming it and how to pass the data."""
    from pathlib import Path

    from ..datasets.registry import parse_name

    name = meta.get("dataset")
    if not name:
        return None
    kind, arg = parse_name(name)
    if kind not in ("npz", "imagefolder"):
        return name
    path = meta.get("dataset_path")  # absent in models saved before it was stored
    where = Path(path) if path else Path(arg).expanduser()
    if not where.exists():
        how = ("--dataset npz:PATH (the test split of your .npz) or --input FILE (a .npy or "
               ".npz of inputs)" if kind == "npz" else "--dataset imagefolder:PATH (its test "
               "split) or --input FILE (a .npy or .npz of inputs)")
        problem = (f"was read from {path}, which no longer exists" if path else
                   f"names {arg}, a path relative to the folder {model} was saved from (this "
                   f"model file predates stored absolute paths), and {where.resolve()} does "
                   "not exist")
        raise InputError(f"the model's dataset {name} {problem}. Ways out: pass the data "
                         f"explicitly: {how}", path=str(where))
    return f"{kind}:{where}"


def _same_dataset(asked, fitted) -> bool:
    """Whether ``--dataset`` (None: not given) names the model's own dataset, as the
    loaders read names (``MNIST`` is ``mnist``)."""
    if asked is None:
        return True
    from ..datasets.registry import parse_name

    try:
        return fitted is not None and parse_name(asked) == parse_name(fitted)
    except InputError:
        return False


def typed_labels(names, labels=None, dtype=None):
    """The labels of class indices ``0 .. k-1`` as one array (None without names): the
    ``labels`` kept with their own type (an ``npz:`` file's integers, whole-number floats or
    strings, in ``dtype``), else the class ``names``, whose digit-only names (digits',
    MNIST's, image folders named 3, 7, 9) are integers."""
    if labels is not None:
        try:
            return np.asarray(labels, dtype=dtype)
        except (TypeError, ValueError):
            return np.asarray(labels)
    if not names:
        return None
    names = [str(c) for c in names]
    if all(c.lstrip("-").isdigit() for c in names):  # integer labels (3, 7, 9) stay integers
        return np.asarray(names).astype(np.int64)
    return np.asarray(names)


def model_labels(meta: dict):
    """The labels of the class indices a model was fitted on (:func:`typed_labels` of what
    its file keeps; models saved before ``class_labels`` was kept: of their names)."""
    return typed_labels(meta.get("class_names"), meta.get("class_labels"),
                        meta.get("class_label_dtype"))


def class_labels(pred, labels):
    """The predictions as the dataset's own labels: a dataset loaded by kernelfit (npz
    labels, imagefolder folders, CIFAR-10) is fitted on class indices, whose labels
    (:func:`model_labels`) the model file keeps, with their own type: floats stay floats,
    integers integers, strings strings (digits' and MNIST's indices are their labels)."""
    pred = np.asarray(pred)
    if labels is None or not len(labels) or pred.dtype.kind not in "iu" or pred.size and (
            pred.min() < 0 or pred.max() >= len(labels)):
        return pred
    return np.asarray(labels)[pred]


def _comparable(*arrays) -> list:
    """The ``arrays`` as keys ``==`` compares by label, decided for all of them at once:
    numbers when every value is a finite number or a name of one (3 is 3.0 and '3'), else
    text (a class 'cat' anywhere, or one named 'nan', which as a number equals nothing)."""
    arrays = [np.asarray(a) for a in arrays]
    try:
        keys = [a.astype(np.float64) for a in arrays]
    except (TypeError, ValueError):
        keys = None
    if keys is not None and all(np.isfinite(k).all() for k in keys):
        return keys
    return [a.astype(str) for a in arrays]


def _shown(values, most: int = 5) -> str:
    values = [str(v) for v in values]
    return ", ".join(values[:most]) + (f" and {len(values) - most} more"
                                        if len(values) > most else "")


def score(est, pred, y, truth_labels, labels, what: str):
    """The test error of predictions ``pred`` (the estimator's outputs) against the test
    labels ``y`` (class indices of a dataset whose labels are ``truth_labels``), compared
    by label, not by index: each dataset numbers its own classes. Test points of classes
    the model was not fitted on count as errors, with one warning naming them. For a
    regression model, the root mean squared error against the labels' values (None, with
    a warning, where they are not numbers)."""
    import warnings

    truth = np.asarray(y) if truth_labels is None else np.asarray(truth_labels)[y]
    pred = np.asarray(pred)
    if getattr(est, "task_", "classification") == "regression":
        if truth.dtype.kind not in "biuf" or pred.ndim != 1:
            why = ("are class names, not numbers" if truth.dtype.kind not in "biuf" else
                   f"are one number each, the model predicts {pred.shape[1]}")
            warnings.warn(f"{what}: its labels ({_shown(np.unique(truth))}) {why}: a "
                          "regression model has no test error on them", UserWarning,
                          stacklevel=2)
            return None
        err = pred.astype(np.float64) - truth.astype(np.float64)
        return float(np.sqrt(np.mean(err ** 2)))
    seen = class_labels(np.asarray(est.classes_), labels)
    predicted, truth_keys, seen_keys = _comparable(class_labels(pred, labels), truth, seen)
    unseen = ~np.isin(truth_keys, seen_keys)
    if unseen.any():  # no prediction can be right there: say so, as solve does
        warnings.warn(f"{int(unseen.sum())} test point(s) of {what} carry labels the model "
                      f"was not fitted on ({_shown(np.unique(truth[unseen]))}): each counts "
                      f"as an error (the model's classes: {_shown(seen, 10)})", UserWarning,
                      stacklevel=2)
    return float(np.mean(predicted != truth_keys))


#: ways out of a model file that cannot be used, by the error's cause
_MODEL_WAYS = {
    "missing": "check the path; `kernelfit solve ... --save FILE` makes a model file",
    "folder": "give the model file inside it (`kernelfit solve ... --save FILE` makes one)",
    "damaged": "save the model again with `kernelfit solve ... --save FILE` (or restore an "
               "intact copy)",
    "unreadable": "save the model again with `kernelfit solve ... --save FILE`, or give a "
                  "file it wrote",
    "version": "save the model again with this kernelfit (`kernelfit solve ... --save FILE`)",
}
_MODEL_WAY = "give a file written by `kernelfit solve ... --save FILE`"
#: inputs whose largest magnitude is more than this many times the training inputs' are
#: on another scale (0-255 or 0-16 pixels against [0, 1]) and refused
SCALE_FACTOR = 4.0
#: ... more than this many times, or less than 1 / SCALE_FACTOR of it (but not all zero:
#: blank images are inputs too), they may be: a warning
SCALE_WARN = 1.5


def load_checked_model(path: str) -> dict:
    """:func:`kernelfit.modelfile.load_model`, its refusals with the way out."""
    from ..modelfile import load_model

    try:
        return load_model(path)
    except InputError as exc:
        way = _MODEL_WAYS.get(exc.facts.get("cause"), _MODEL_WAY)
        raise InputError(f"{exc.message}. Way out: {way}", param="model") from None


def check_scale(X, meta: dict, what: str, param) -> None:
    """Refuse inputs far above the scale of the model's training inputs (``meta``'s
    ``input_range``, stored since model files have it), warn about inputs somewhat above
    it or far below it: unscaled 8-bit pixels given to a model fitted on [0, 1] (or [0, 1]
    pixels to one fitted on 0-16) would otherwise get wrong labels, silently."""
    import warnings

    rng = meta.get("input_range")
    if not rng or X.size == 0:
        return
    lo, hi = float(rng[0]), float(rng[1])
    span = max(abs(lo), abs(hi))
    top = float(np.max(np.abs(X)))
    if span <= 0:
        return
    said = (f"{what}: values up to {top:g}, but the model was fitted on inputs from {lo:g} "
            f"to {hi:g}")
    how = ("give inputs on the training data's scale (kernelfit's loaders scale 8-bit pixels "
           "to [0, 1]: scikit-learn's digits / 16, MNIST and CIFAR-10 / 255)")
    if top > SCALE_FACTOR * span:
        raise InputError(f"{said}: {how}", param=param)
    if top > SCALE_WARN * span or 0 < top < span / SCALE_FACTOR:
        warnings.warn(f"{said}: if they are on another scale the predictions are wrong; "
                      f"{how}", UserWarning, stacklevel=2)


def continuous_refusal(exc: InputError, name: str, model: str) -> str:
    """The one line for a classification model given a dataset whose labels (``exc``, the
    loader's refusal) look continuous: what is wrong and the ways out that work."""
    which = exc.facts.get("labels", "labels")
    summary = exc.facts.get("summary")
    return (f"{name}: {which} looks continuous{f' ({summary})' if summary else ''}, but "
            f"{model} is a classification model: it predicts classes, and has no test error "
            "on real values. Ways out: give class labels (integers or strings); score a "
            "regression model on these targets (fitted in Python by kernelfit.run."
            "solve_arrays(..., task='regression') with a save path in its RunOptions); or "
            "predict the inputs alone with --input FILE")


def run(args) -> int:
    if args.dataset is not None and not args.dataset.strip():
        raise InputError("--dataset is empty; give a dataset name (see kernelfit datasets "
                         "list), or leave it out for the model's own dataset")
    if args.input and (args.dataset or args.n_test is not None):
        flag = "--dataset" if args.dataset else "--n-test"
        raise InputError(f"--input and {flag} cannot be combined: --input predicts every row "
                         f"of its file, {flag} picks a dataset's test split; give one of them")
    check_output_paths(args)
    if args.output and not args.output.lower().endswith(".npy"):
        raise InputError(f"--output {args.output!r}: predictions are written as a NumPy .npy "
                         "array; give a file name ending in .npy")
    payload = load_checked_model(args.model)
    est = payload["estimator"]
    fmap = payload.get("feature_map")
    meta = payload.get("meta", {})
    t0 = time.perf_counter()
    rec = {"model": args.model, "features": meta.get("features", "raw")}
    ds_labels = None  # the labels of the dataset's class indices
    regression = getattr(est, "task_", "classification") == "regression"
    if args.input:
        X, y = read_inputs(args.input)
    else:
        from ..datasets import load_dataset

        name = args.dataset or model_dataset(meta, args.model)
        if not name:
            raise InputError("give --dataset or --input")
        if args.output and not args.dataset:  # (--dataset's file: check_output_paths)
            from .._io import check_not_overwriting

            check_not_overwriting(args.output, [(f"the file of the model's dataset {name}",
                                                 dataset_file(name))], param="output")
        data_dir = args.data_dir
        kept = meta.get("data_dir")
        if data_dir is None and kept and _same_dataset(args.dataset, meta.get("dataset")):
            # the model's own dataset: from the --data-dir it was fitted with, while that
            # folder is there (else the usual places: $KERNELFIT_DATA, the cache)
            if os.path.isdir(kept):
                data_dir = kept
            else:
                import warnings

                warnings.warn(f"the model was fitted with --data-dir {kept}, which no longer "
                              "exists: looking in the usual places ($KERNELFIT_DATA, the "
                              "cache); --data-dir DIR names the folder", UserWarning,
                              stacklevel=2)
        try:  # a regression model is scored against the labels' values: real ones too
            ds = load_dataset(name, data_dir=data_dir, n_train=1, n_test=args.n_test,
                              continuous=regression)
        except InputError as exc:
            if not exc.facts.get("continuous_labels"):
                raise
            raise InputError(continuous_refusal(exc, name, args.model)) from None
        X, y = ds.X_test, ds.y_test
        ds_labels = typed_labels(ds.class_names, getattr(ds, "class_labels", None))
        rec["dataset"] = ds.name
        if not args.dataset and meta.get("dataset_path"):
            rec["dataset_path"] = meta["dataset_path"]
    # the flag the inputs came from: --input, or the dataset's test split (--dataset, or
    # the model's own dataset: no flag the user typed)
    param = "input" if args.input else ("dataset" if args.dataset else None)
    what = args.input if args.input else f"the test split of {rec['dataset']}"
    if X.dtype.kind not in "fiub":
        raise InputError(f"{what}: values must be numeric, got dtype {X.dtype}", param=param)
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        how = (f"; save it as X.reshape({X.shape[0]}, -1) (one row per image, "
               f"{int(np.prod(X.shape[1:]))} values)" if X.ndim > 2 and X.shape[0] else
               "; one point is X.reshape(1, -1)" if X.ndim == 1 else "")
        raise InputError(f"{what}: must be 2-D (n, d), got shape {X.shape}{how}", param=param)
    n_in = getattr(fmap, "n_features_in_", None) if fmap is not None else est.n_features_in_
    if n_in is not None and X.shape[1] != n_in:
        raise InputError(f"{what}: {X.shape[1]} features, the model was fitted with "
                         f"{n_in}", param=param)
    if X.shape[0] == 0:
        zero = not args.input and args.n_test == 0
        raise InputError(f"no inputs to predict: 0 rows in {what}",
                         param="n_test" if zero else param)
    if not np.isfinite(X).all():
        raise InputError(f"{what}: {int((~np.isfinite(X)).sum())} NaN or infinite "
                         "value(s)", param=param)
    check_scale(X, meta, what, param)
    if args.no_progress:
        est.show_progress = False
        if fmap is not None and hasattr(fmap, "progress"):
            fmap.progress = False
    if fmap is not None:
        X = np.asarray(fmap.transform(X), dtype=np.float64)
    pred = est.predict(X)
    rec["n"] = int(X.shape[0])
    rec["seconds"] = time.perf_counter() - t0
    labels = model_labels(meta)
    rec["task"] = "regression" if regression else "classification"
    if y is not None and not args.input:
        error = score(est, pred, y, ds_labels, labels, what)
        if error is not None:  # None: a regression on class names (a warning said so)
            rec["test_error"] = error
            # a regression's test error is its RMSE, as in solve's record
            rec["test_error_metric"] = "rmse" if regression else "misclassification rate"
    pred = class_labels(pred, labels)
    if args.output:
        from .._io import atomic_save_npy

        atomic_save_npy(args.output, np.asarray(pred))
        rec["output"] = args.output
    else:  # a look at them; all of them go to a file
        rec["first_predictions"] = np.asarray(pred)[:10].tolist()
        rec["note"] = f"give --output FILE.npy to save all {rec['n']:,} predictions"
    if args.json:
        print_json(rec)
    else:
        rows = [("test_error (RMSE)" if k == "test_error" and rec["task"] == "regression"
                 else k, v) for k, v in rec.items() if k != "test_error_metric"]
        print_table(rows, title="kernelfit predict")
    return 0
