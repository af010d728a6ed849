"""The containers datasets are returned in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

__all__ = ["Dataset", "RawData"]


@dataclass
class Dataset:
    """A train/test split ready for kernel methods.

    ``X_*`` are C-contiguous ``(n, d)`` float arrays with pixels scaled to ``[0, 1]`` and each
    image flattened in ``(H, W, C)`` order; ``y_*`` are int64 labels in
    ``0 .. n_classes - 1``. ``source`` says where the data was read from. ``class_labels``:
    the labels of classes ``0 .. n_classes - 1`` with their own type where the data had typed
    labels (an ``npz:`` file's integers, whole-number floats or strings), else None (the
    labels are ``class_names``).
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    image_shape: tuple
    n_classes: int
    class_names: list
    source: str
    class_labels: Optional[np.ndarray] = None

    def class_counts(self, split: str = "train") -> np.ndarray:
        """Number of examples of each class in ``split`` (``'train'`` or ``'test'``)."""
        y = self.y_train if split == "train" else self.y_test
        return np.bincount(y, minlength=self.n_classes)

    def summary(self) -> Dict[str, object]:
        """A JSON-friendly description: shapes, dtype, counts per class, source."""
        return {
            "name": self.name,
            "source": self.source,
            "image_shape": list(self.image_shape),
            "n_classes": self.n_classes,
            "class_names": list(self.class_names),
            "dtype": str(self.X_train.dtype),
            "X_train_shape": list(self.X_train.shape),
            "X_test_shape": list(self.X_test.shape),
            "train_counts": self.class_counts("train").tolist(),
            "test_counts": self.class_counts("test").tolist(),
        }


@dataclass
class RawData:
    """A dataset as stored: integer pixel arrays of shape ``(n, *image_shape)``.

    ``scale`` is the value that maps to 1.0 (255 for 8-bit images, 16 for ``digits``).
    ``class_labels``: as :class:`Dataset`'s.
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    image_shape: Tuple[int, ...]
    class_names: List[str]
    source: str
    scale: float = 255.0
    extra: Dict[str, object] = field(default_factory=dict)
    class_labels: Optional[np.ndarray] = None

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)
