"""``npz:PATH``: a user's own arrays as a dataset.

The ``.npz`` file (``numpy.savez``) holds ``X_train`` (n, d) and ``y_train`` (n,), and
optionally ``X_test``/``y_test`` and ``image_shape`` (for image feature maps and pixel
randomization). Values are used as given (no scaling); labels may be any integers or
strings (or whole-number floats) and are mapped to ``0 .. k-1`` in sorted order; the data's
``class_labels`` keep them with their own type (``class_names`` are their strings). Labels
that look continuous are refused (:mod:`kernelfit.labels`), unless the caller reads them as
regression targets (``continuous=True``): then they are indices of their distinct values in
the same way, and ``class_labels`` holds those values, exactly as stored.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import DataError, InputError
from ..labels import continuous_summary, label_kind
from ._types import RawData

__all__ = ["load_npz"]


def load_npz(path: str, continuous: bool = False) -> RawData:
    """The arrays of the ``.npz`` at ``path``. ``continuous``: accept real-valued labels
    (regression targets, e.g. to score a regression model), else refuse them (a classifier
    would make one class per value)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"npz:{path}: no such file ({p.resolve()}); give the path of a "
                         ".npz made by numpy.savez (X_train, y_train[, X_test, y_test]), "
                         "absolute or relative to the current folder", param="dataset")
    try:
        with open(p, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise DataError(f"npz:{path}: cannot read the file ({exc.strerror or exc})") from None
    if head != b"PK\x03\x04":
        what = "a .npy array" if head == b"\x93NUM" else "not a .npz (zip) file"
        raise DataError(f"npz:{path} is {what}; save your arrays with numpy.savez(path, "
                        "X_train=..., y_train=...)")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"npz:{path}: not a readable .npz file ({exc}); save your arrays with "
                        "numpy.savez(path, X_train=..., y_train=...)") from None
    for key in ("X_train", "y_train"):
        if key not in arrays:
            raise InputError(f"npz:{path}: missing array {key!r} (found: "
                             f"{', '.join(sorted(arrays)) or 'none'})")
    X_train = arrays["X_train"]
    y_train = arrays["y_train"]
    X_test = arrays.get("X_test")
    y_test = arrays.get("y_test")
    if (X_test is None) != (y_test is None):
        raise InputError(f"npz:{path}: give both X_test and y_test, or neither")
    if X_test is None:
        X_test = X_train[:0]
        y_test = y_train[:0]
    for name, X in (("X_train", X_train), ("X_test", X_test)):
        if X.ndim != 2:
            raise InputError(f"npz:{path}: {name} must be 2-D (n, d), got shape {X.shape}")
        if X.dtype.kind not in "fiub":
            raise InputError(f"npz:{path}: {name} must be numeric, got {X.dtype}")
        if X.dtype.kind == "f" and not np.isfinite(X).all():
            raise InputError(f"npz:{path}: {name} contains "
                             f"{int((~np.isfinite(X)).sum())} NaN or infinite value(s)")
    if X_test.shape[0] and X_test.shape[1] != X_train.shape[1]:
        raise InputError(f"npz:{path}: X_test has {X_test.shape[1]} columns, X_train has "
                         f"{X_train.shape[1]}")
    for name, X, y in (("train", X_train, y_train), ("test", X_test, y_test)):
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise InputError(f"npz:{path}: y_{name} must be 1-D with {X.shape[0]} labels, "
                             f"got shape {y.shape}")
    if X_train.shape[0] == 0:
        raise InputError(f"npz:{path}: X_train is empty")
    for name, y in (("y_train", y_train), ("y_test", y_test)):
        try:
            kind = label_kind(y)
        except InputError as exc:
            raise InputError(f"npz:{path}: {name}: {exc}") from None
        if kind == "continuous" and not continuous:
            summary = continuous_summary(y)
            raise InputError(f"npz:{path}: {name} looks continuous ({summary}), "
                             "but dataset labels are classes (integers or strings). Give class "
                             "labels, or fit continuous targets with "
                             "KernelInterpolator(task='regression') in Python",
                             continuous_labels=True, labels=name, summary=summary)
    classes, codes = np.unique(np.concatenate([y_train, y_test]), return_inverse=True)
    image_shape = ()
    if "image_shape" in arrays:
        image_shape = tuple(int(v) for v in np.atleast_1d(arrays["image_shape"]))
        if int(np.prod(image_shape)) != X_train.shape[1]:
            raise InputError(f"npz:{path}: image_shape {image_shape} does not match "
                             f"{X_train.shape[1]} columns")
    n = X_train.shape[0]
    return RawData(name=f"npz:{p.name}", X_train=np.asarray(X_train, dtype=np.float64),
                   y_train=codes[:n].astype(np.int64), X_test=np.asarray(X_test, np.float64),
                   y_test=codes[n:].astype(np.int64), image_shape=image_shape,
                   class_names=[str(c) for c in classes], source=str(p.resolve()), scale=1.0,
                   class_labels=classes)
