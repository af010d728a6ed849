"""CIFAR-10 in its official Python format.

Accepted layouts under ``<data_dir>/cifar10/``: the extracted ``cifar-10-batches-py/``
folder (``data_batch_1`` .. ``data_batch_5``, ``test_batch``, optional ``batches.meta``) or
the published ``cifar-10-python.tar.gz``, read directly without extracting. The archive is
verified against its published SHA-256; an extracted folder can only be checked for
structure.

The batches are pickles. They are read with an unpickler that only accepts the few NumPy
constructors the official files use, so a hostile file cannot run code.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import pickle
import tarfile
import zlib
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ..errors import DataError
from . import sources
from ._fetch import download, missing_files_error, verify_file
from ._types import RawData

__all__ = ["jpeg_set_beside", "JPEG_SET", "CIFAR10_CLASSES", "BATCH_DIR", "TRAIN_BATCHES",
           "TEST_BATCH", "BATCH_ROWS", "parse_batch", "load_cifar10"]

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]
BATCH_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
#: rows in every official batch (tests lower it to write small batches)
BATCH_ROWS = 10000
_ROW_BYTES = 32 * 32 * 3

_ALLOWED_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


@functools.lru_cache(maxsize=1)
def _numpy_core() -> str:
    """The installed NumPy's name for its core package: ``numpy._core`` from NumPy 2,
    ``numpy.core`` before (the batches name the latter, pickled under NumPy 1)."""
    return "numpy._core" if importlib.util.find_spec("numpy._core") else "numpy.core"


class _SafeUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the NumPy globals found in CIFAR batches."""

    def find_class(self, module, name):
        for core in ("numpy.core", "numpy._core"):  # checked by one name, either layout
            if module == core or module.startswith(core + "."):
                module = "numpy._core" + module[len(core):]
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        if module.startswith("numpy._core"):
            module = _numpy_core() + module[len("numpy._core"):]
        return super().find_class(module, name)


#: where a JPEG re-encoding of CIFAR-10 is looked for, relative to the folder holding the
#: official files' folder (``kernelfit reproduce`` uses it when those are missing)
JPEG_SET = ("cifar10-jpeg/cifar10-jpeg.tar.gz", "cifar10-jpeg.tar.gz")


def jpeg_set_beside(folder) -> Optional[Path]:
    """The JPEG re-encoding of CIFAR-10 beside the official files' ``folder``
    (``DATA/cifar10``: ``DATA/cifar10-jpeg/cifar10-jpeg.tar.gz``), or None; readable as
    ``imagefolder:PATH``."""
    if not folder:
        return None
    base = Path(folder).parent
    return next((base / p for p in JPEG_SET if (base / p).is_file()), None)


def _unpickle(data: bytes, name: str) -> dict:
    try:
        obj = _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise DataError(f"{name}: not a readable CIFAR-10 pickle batch "
                        f"({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{name}: expected a pickled dict, found {type(obj).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def parse_batch(data: bytes, name: str) -> Tuple[np.ndarray, np.ndarray]:
    """Decode one pickled batch into ``(images (n, 32, 32, 3) uint8, labels int64)``."""
    batch = _unpickle(data, name)
    for key in ("data", "labels"):
        if key not in batch:
            raise DataError(f"{name}: CIFAR-10 batch has no {key!r} entry "
                            f"(keys: {sorted(map(str, batch))})")
    raw = batch["data"]
    if not isinstance(raw, np.ndarray) or raw.dtype != np.uint8 or raw.ndim != 2 \
            or raw.shape != (BATCH_ROWS, _ROW_BYTES):
        desc = f"{raw.dtype} {raw.shape}" if isinstance(raw, np.ndarray) else type(raw).__name__
        raise DataError(f"{name}: 'data' should be uint8 of shape ({BATCH_ROWS}, {_ROW_BYTES}), "
                        f"found {desc}")
    try:
        labels = np.asarray(batch["labels"])
    except Exception:  # noqa: BLE001
        labels = np.asarray([], dtype=object)
    if labels.ndim != 1 or labels.shape[0] != raw.shape[0] \
            or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{name}: expected {raw.shape[0]} integer labels, found "
                        f"{labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        bad = labels[(labels < 0) | (labels > 9)][0]
        raise DataError(f"{name}: label {int(bad)} is outside 0..9")
    # Rows hold 1024 red, 1024 green, 1024 blue values, each plane row-major 32 x 32.
    images = np.ascontiguousarray(raw.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels.astype(np.int64)


def _class_names(meta_bytes: Optional[bytes], name: str) -> List[str]:
    if meta_bytes is None:
        return list(CIFAR10_CLASSES)
    meta = _unpickle(meta_bytes, name)
    names = meta.get("label_names")
    if not isinstance(names, list) or len(names) != 10:
        raise DataError(f"{name}: 'label_names' should list 10 class names")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names]


def _assemble(read: Callable[[str], Optional[bytes]], where: str) -> Tuple[Dict, List[str]]:
    parts = {}
    for member in TRAIN_BATCHES + (TEST_BATCH,):
        data = read(member)
        if data is None:
            raise DataError(f"{where}: CIFAR-10 batch {member!r} is missing")
        parts[member] = parse_batch(data, f"{where}:{member}")
    return parts, _class_names(read(META), f"{where}:{META}")


def _read_folder(folder: Path) -> Tuple[Dict, List[str]]:
    def read(member: str) -> Optional[bytes]:
        path = folder / member
        if not path.is_file():
            return None
        try:
            return path.read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None

    return _assemble(read, str(folder))


def _read_archive(archive: Path) -> Tuple[Dict, List[str]]:
    wanted = set(TRAIN_BATCHES) | {TEST_BATCH, META}
    blobs: Dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for info in tar:
                parts = info.name.replace("\\", "/").strip("/").split("/")
                if info.isfile() and len(parts) == 2 and parts[0] == BATCH_DIR \
                        and parts[1] in wanted:
                    fh = tar.extractfile(info)
                    blobs[parts[1]] = fh.read() if fh is not None else b""
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{archive}: not a readable tar archive ({exc})") from None
    if not (set(TRAIN_BATCHES) | {TEST_BATCH}) & set(blobs):
        raise DataError(f"{archive}: no {BATCH_DIR}/ batches inside; this is not the official "
                        f"cifar-10-python.tar.gz")
    return _assemble(blobs.get, str(archive))


def load_cifar10(data_dir: Path, *, download_missing: bool = True) -> RawData:
    """Load CIFAR-10 as stored (uint8 images of shape (n, 32, 32, 3))."""
    directory = Path(data_dir) / "cifar10"
    remote = sources.SOURCES["cifar10"]["archive"]
    folder = directory / BATCH_DIR
    archive = directory / remote.filename
    given = Path(data_dir)
    if folder.is_dir():
        parts, classes = _read_folder(folder)
        source = folder
    else:
        if not archive.is_file() and given.absolute().name == "cifar10" and (
                (given / BATCH_DIR).is_dir() or (given / remote.filename).is_file()):
            # data_dir is cifar10/ itself: not downloaded again into data_dir/cifar10/
            raise missing_files_error("cifar10", directory, [remote.filename, BATCH_DIR + "/"],
                                      f"they are in {given} itself", found_in=given)
        if archive.is_file():
            verify_file(archive, remote)
        elif download_missing:
            archive = download(remote, directory, "cifar10")
        else:
            raise missing_files_error("cifar10", directory, [remote.filename, BATCH_DIR + "/"],
                                      "downloading is disabled")
        parts, classes = _read_archive(archive)
        source = archive
    X_train = np.concatenate([parts[b][0] for b in TRAIN_BATCHES])
    y_train = np.concatenate([parts[b][1] for b in TRAIN_BATCHES])
    X_test, y_test = parts[TEST_BATCH]
    return RawData(name="cifar10", X_train=X_train, y_train=y_train, X_test=X_test,
                   y_test=y_test, image_shape=(32, 32, 3), class_names=classes,
                   source=str(source))
