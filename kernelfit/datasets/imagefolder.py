"""Image-folder datasets: ``train/<class>/*`` and ``test/<class>/*`` trees of image files.

``imagefolder:PATH`` accepts PATH as a directory holding ``train/`` and ``test/`` (directly or
inside its single subdirectory), or a tar archive (``.tar``, ``.tar.gz``, ...) of such a tree,
for example ``cifar10-jpeg.tar.gz`` whose members are
``cifar10-jpeg/{train,test}/<class>/NNNN.jpg``. Classes are the training folders sorted by
name. Images are decoded with Pillow in a thread pool; grayscale images give
``(H, W)`` arrays and colour ones ``(H, W, 3)`` (alpha dropped; a tree mixing both is loaded
as colour).

Decoding tens of thousands of files is slow, so the decoded arrays are cached as ``.npy``
files, keyed by the source path and its size and modification time (for a directory, those
of every file in it). A cache entry is written to a temporary folder and renamed into place,
checked on load (shapes, dtypes, label ranges and the SHA-256 of every array, so that
same-size corruption is caught too), and rebuilt when it does not check out.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import DataError, InputError
from ..progress import progress
from ._types import RawData

__all__ = ["IMAGE_EXTENSIONS", "load_imagefolder", "cache_key"]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".pbm",
                              ".tif", ".tiff", ".webp"})
SPLITS = ("train", "test")
_CACHE_VERSION = 2  # 2: every array carries its SHA-256
_CACHE_ARRAYS = ("X_train", "y_train", "X_test", "y_test")
_CHUNK = 256

# (split, class name, sort key, path or bytes)
_Entry = Tuple[str, str, str, Union[Path, bytes]]


def _is_image_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and os.path.splitext(base)[1].lower() in IMAGE_EXTENSIONS


def _tree_root(path: Path) -> Path:
    if all((path / s).is_dir() for s in SPLITS):
        return path
    subdirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(subdirs) == 1 and all((subdirs[0] / s).is_dir() for s in SPLITS):
        return subdirs[0]
    raise DataError(f"{path}: expected train/<class>/ and test/<class>/ folders of images")


def _entries_from_dir(path: Path) -> Tuple[List[_Entry], Path]:
    root = _tree_root(path)
    entries: List[_Entry] = []
    for split in SPLITS:
        for class_dir in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            for f in sorted(class_dir.iterdir()):
                if f.is_file() and _is_image_name(f.name):
                    entries.append((split, class_dir.name, f.name, f))
    return entries, root


def _entries_from_tar(path: Path) -> List[_Entry]:
    entries: List[_Entry] = []
    prefixes = set()
    try:
        with tarfile.open(path, "r:*") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                parts = info.name.replace("\\", "/").strip("/").split("/")
                if len(parts) < 3 or parts[-3] not in SPLITS or not _is_image_name(parts[-1]):
                    continue
                prefixes.add(tuple(parts[:-3]))
                fh = tar.extractfile(info)
                entries.append((parts[-3], parts[-2], parts[-1], fh.read() if fh else b""))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable tar archive ({exc})") from None
    if len(prefixes) > 1:
        raise DataError(f"{path}: holds more than one train/test tree "
                        f"({sorted('/'.join(p) or '.' for p in prefixes)[:3]})")
    return entries


def _decode(item: Union[Path, bytes], name: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        src = io.BytesIO(item) if isinstance(item, bytes) else item
        with Image.open(src) as im:
            im.load()
            if im.mode in ("1", "L", "LA"):
                im = im.convert("L")
            elif im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                raise DataError(f"{name}: {im.mode} images (more than 8 bits) are not supported")
            elif im.mode != "RGB":
                im = im.convert("RGB")
            return np.asarray(im, dtype=np.uint8)
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError,
            Image.DecompressionBombError) as exc:
        raise DataError(f"{name}: cannot decode image ({exc})") from None


def _decode_all(items: Sequence[Tuple[Union[Path, bytes], str]]) -> List[np.ndarray]:
    out: List[Optional[np.ndarray]] = [None] * len(items)
    chunks = [range(i, min(i + _CHUNK, len(items))) for i in range(0, len(items), _CHUNK)]

    def work(idx: range) -> range:
        for i in idx:
            out[i] = _decode(*items[i])
        return idx

    workers = max(1, min(8, os.cpu_count() or 1))
    with progress(total=len(items), desc="decoding images", unit="img") as bar:
        if workers == 1 or len(chunks) <= 1:
            for c in chunks:
                bar.update(len(work(c)))
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for done in pool.map(work, chunks):
                    bar.update(len(done))
    return out  # type: ignore[return-value]


def _stack(images: List[np.ndarray], names: List[str], color: bool, where: str) -> np.ndarray:
    shape = None
    for img, name in zip(images, names):
        hw = img.shape[:2]
        if shape is None:
            shape = hw
        elif hw != shape:
            raise DataError(f"{name}: image is {hw[1]}x{hw[0]} but earlier images are "
                            f"{shape[1]}x{shape[0]}; all images must have one size")
    if shape is None:
        raise DataError(f"{where}: no images found")
    tail = shape + ((3,) if color else ())
    out = np.empty((len(images),) + tail, dtype=np.uint8)
    for i, img in enumerate(images):
        out[i] = img[..., None] if (color and img.ndim == 2) else img
    return out


def _build(entries: List[_Entry], where: str) -> Dict[str, object]:
    if not entries:
        raise DataError(f"{where}: no images found under train/<class>/ and test/<class>/")
    entries = sorted(entries, key=lambda e: (SPLITS.index(e[0]), e[1], e[2]))
    classes = sorted({e[1] for e in entries if e[0] == "train"})
    if not classes:
        raise DataError(f"{where}: no training images (train/<class>/ is empty)")
    unknown = sorted({e[1] for e in entries if e[0] == "test"} - set(classes))
    if unknown:
        raise DataError(f"{where}: test classes {unknown} have no training folder; add "
                        f"train/{unknown[0]}/ with its images, or move test/{unknown[0]}/ "
                        "out of the tree (every test class must be one it is trained on)")
    index = {c: i for i, c in enumerate(classes)}
    names = [f"{where}:{e[0]}/{e[1]}/{e[2]}" for e in entries]
    images = _decode_all([(e[3], n) for e, n in zip(entries, names)])
    color = any(img.ndim == 3 for img in images)
    result: Dict[str, object] = {"class_names": classes}
    for split in SPLITS:
        sel = [i for i, e in enumerate(entries) if e[0] == split]
        if not sel and split == "test":
            raise DataError(f"{where}: no test images (test/<class>/ is empty)")
        result[f"X_{split}"] = _stack([images[i] for i in sel], [names[i] for i in sel],
                                      color, where)
        result[f"y_{split}"] = np.array([index[entries[i][1]] for i in sel], dtype=np.int64)
    if result["X_train"].shape[1:] != result["X_test"].shape[1:]:
        raise DataError(f"{where}: training images are {result['X_train'].shape[1:]} but test "
                        f"images are {result['X_test'].shape[1:]}")
    return result


# ----------------------------------------------------------------------------- cache

def _fingerprint(path: Path) -> str:
    st = path.stat()
    parts = [f"v{_CACHE_VERSION}", str(path.resolve())]
    if path.is_dir():
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            for f in sorted(filenames):
                fs = os.stat(os.path.join(dirpath, f))
                parts.append(f"{os.path.relpath(os.path.join(dirpath, f), path)}|"
                             f"{fs.st_size}|{fs.st_mtime_ns}")
    else:
        parts.append(f"{st.st_size}|{st.st_mtime_ns}")
    return "\n".join(parts)


def cache_key(path: Path) -> str:
    """The cache key of an image folder or archive: its path, sizes and mtimes, hashed."""
    return hashlib.sha256(_fingerprint(Path(path)).encode()).hexdigest()[:32]


def _array_sha256(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).view(np.uint8).reshape(-1)).hexdigest()


def _load_cached(entry: Path) -> Optional[Dict[str, object]]:
    meta_path = entry / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("version") != _CACHE_VERSION:
            return None
        out: Dict[str, object] = {"class_names": list(meta["class_names"])}
        n_classes = len(out["class_names"])
        for name in _CACHE_ARRAYS:
            arr = np.load(entry / f"{name}.npy", allow_pickle=False)
            spec = meta["arrays"][name]
            if list(arr.shape) != spec["shape"] or str(arr.dtype) != spec["dtype"]:
                return None
            if _array_sha256(arr) != spec.get("sha256"):  # same-size corruption
                return None
            out[name] = arr
        for split in SPLITS:
            y = out[f"y_{split}"]
            if len(y) != len(out[f"X_{split}"]) or (y.size and (y.min() < 0
                                                              or y.max() >= n_classes)):
                return None
        return out
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return None


def _save_cached(entry: Path, data: Dict[str, object], source: Path) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", suffix=".tmp", dir=entry.parent))
    try:
        meta = {"version": _CACHE_VERSION, "source": str(source),
                "class_names": data["class_names"], "arrays": {}}
        for name in _CACHE_ARRAYS:
            arr = data[name]
            np.save(tmp / f"{name}.npy", arr, allow_pickle=False)
            meta["arrays"][name] = {"shape": list(arr.shape), "dtype": str(arr.dtype),
                                    "sha256": _array_sha256(arr)}
        (tmp / "meta.json").write_text(json.dumps(meta))
        if entry.exists():
            shutil.rmtree(entry, ignore_errors=True)
        os.replace(tmp, entry)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _cache_entries(cache_dirs: Iterable[Path], key: str) -> List[Path]:
    seen, out = set(), []
    for d in cache_dirs:
        entry = (Path(d) / "imagefolder" / key)
        if str(entry) not in seen:
            seen.add(str(entry))
            out.append(entry)
    return out


def load_imagefolder(path: Union[str, Path], *, cache_dirs: Sequence[Path] = ()) -> RawData:
    """Load an image-folder tree or a tar archive of one (see the module notes).

    ``cache_dirs`` lists where decoded arrays may be cached, in order of preference: the
    first entry found valid is used, and a fresh decode is written to the first writable one.
    An empty list disables caching.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"imagefolder: {path} does not exist; give the path of a folder "
                         "holding train/<class>/ and test/<class>/ image folders, or of a tar "
                         "archive of one")
    key = cache_key(path)
    entries_dirs = _cache_entries(cache_dirs, key)
    data = None
    for entry in entries_dirs:
        data = _load_cached(entry)
        if data is not None:
            break
    if data is None:
        if path.is_dir():
            entries, _root = _entries_from_dir(path)
        else:
            entries = _entries_from_tar(path)
        data = _build(entries, str(path))
        for entry in entries_dirs:
            try:
                _save_cached(entry, data, path)
                break
            except OSError:
                continue
    X_train = data["X_train"]
    return RawData(name=f"imagefolder:{path}", X_train=X_train, y_train=data["y_train"],
                   X_test=data["X_test"], y_test=data["y_test"],
                   image_shape=tuple(int(s) for s in X_train.shape[1:]),
                   class_names=list(data["class_names"]), source=str(path))
