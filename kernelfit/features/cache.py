"""On-disk cache of computed features: memory-mapped ``.npy`` files plus a JSON manifest.

Layout: ``<cache_dir>/<cache_key>/<name>-<digest>/`` holds ``train.npy``, ``test.npy`` and
``manifest.json``, where ``digest`` is the first 16 hex digits of the SHA-256 of the
canonical JSON of ``{name, params, seed, image_shape, format}``. The manifest records
that JSON, fingerprints of the input arrays (shape, dtype and SHA-256 of their bytes) and
of each output file (shape, dtype, size in bytes, SHA-256 of the file, or of 16 sampled
1 MiB blocks for files over 256 MiB). The fitted transformer is stored next to the
features as ``transformer.pkl`` (checksummed the same way) so a cache hit can still
transform new data (``kernelfit predict``); like any pickle, only load caches you wrote.

An entry is used only when its manifest parses and every recorded item matches: same
parameters, same inputs, files present with the recorded size, header, shape, dtype and
checksum. Anything else (stale parameters, a changed dataset under the same key,
truncated or corrupted files, a missing manifest after an interrupted write) counts as a
miss, and the entry is rebuilt. Writes go to temporary names in the same directory,
are flushed, then moved into place with :func:`os.replace`; the manifest is written
last, so a reader never sees a manifest describing half-written files.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
from typing import Optional

import numpy as np

from ..errors import InputError

__all__ = ["FeatureCache", "params_digest", "array_fingerprint"]

FORMAT_VERSION = 1
_BIG = 256 << 20
_BLOCK = 1 << 20


def _canonical(obj) -> str:
    def default(o):
        if isinstance(o, (np.integer,)):
            return int(o)
        if isinstance(o, (np.floating,)):
            return float(o)
        if isinstance(o, (tuple, set)):
            return list(o)
        if isinstance(o, np.ndarray):
            return o.tolist()
        return repr(o)

    return json.dumps(obj, sort_keys=True, default=default, separators=(",", ":"))


def params_digest(name: str, params: dict, seed: int, image_shape) -> str:
    """Hex SHA-256 of the canonical JSON of the map's identity."""
    ident = {"name": name, "params": params, "seed": int(seed),
             "image_shape": list(image_shape or ()), "format": FORMAT_VERSION}
    return hashlib.sha256(_canonical(ident).encode()).hexdigest()


def array_fingerprint(X) -> dict:
    """Shape, dtype and SHA-256 of the C-ordered bytes of ``X`` (hashed in row blocks)."""
    X = np.asarray(X)
    h = hashlib.sha256()
    step = max(1, (1 << 24) // max(1, X.itemsize * int(np.prod(X.shape[1:], dtype=np.int64))))
    for start in range(0, X.shape[0] if X.ndim else 1, step):
        block = X[start:start + step] if X.ndim else X
        h.update(np.ascontiguousarray(block).data)
    return {"shape": list(X.shape), "dtype": X.dtype.str, "sha256": h.hexdigest()}


def _file_checksum(path: str) -> str:
    size = os.path.getsize(path)
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        if size <= _BIG:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
            return h.hexdigest()
        for k in range(16):
            fh.seek((size - _BLOCK) * k // 15)
            h.update(fh.read(_BLOCK))
    return "sampled:" + h.hexdigest()


_SAFE = re.compile(r"^[A-Za-z0-9._+=,@-]+$")


class FeatureCache:
    """Cache entries under ``cache_dir/cache_key`` (see the module docstring)."""

    def __init__(self, cache_dir: str, cache_key: str):
        if not cache_key or not _SAFE.match(str(cache_key)) or cache_key in (".", ".."):
            raise InputError(f"cache_key must be a non-empty name of letters, digits and "
                             f"._+=,@- (got {cache_key!r})")
        self.cache_dir = os.fspath(cache_dir)
        self.cache_key = str(cache_key)

    def entry_dir(self, name: str, digest: str) -> str:
        return os.path.join(self.cache_dir, self.cache_key, f"{name}-{digest[:16]}")

    # -- reading ------------------------------------------------------------------
    def load(self, name: str, digest: str, inputs: dict) -> Optional[dict]:
        """The cached arrays (memory-mapped, read-only) or ``None`` on any mismatch."""
        d = self.entry_dir(name, digest)
        try:
            with open(os.path.join(d, "manifest.json")) as fh:
                man = json.load(fh)
            if man.get("format") != FORMAT_VERSION or man.get("digest") != digest:
                return None
            if man.get("inputs") != inputs:
                return None
            arrays = {}
            for part, meta in man["outputs"].items():
                path = os.path.join(d, f"{part}.npy")
                if os.path.getsize(path) != meta["bytes"]:
                    return None
                if _file_checksum(path) != meta["checksum"]:
                    return None
                arr = np.load(path, mmap_mode="r")
                if list(arr.shape) != meta["shape"] or arr.dtype.str != meta["dtype"]:
                    return None
                arrays[part] = arr
            for fname, meta in man.get("files", {}).items():
                path = os.path.join(d, fname)
                if os.path.getsize(path) != meta["bytes"] or _file_checksum(path) != meta["checksum"]:
                    return None
                with open(path, "rb") as fh:
                    arrays[fname] = fh.read()
            arrays["_manifest"] = man
            return arrays
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError):
            return None

    # -- writing ------------------------------------------------------------------
    def begin(self, name: str, digest: str) -> "_Writer":
        """Start (re)building an entry: removes any stale one, returns a writer."""
        d = self.entry_dir(name, digest)
        if os.path.isdir(d):
            shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d, exist_ok=True)
        return _Writer(d, digest)


def _reserve(path: str, size: int) -> None:
    """Reserve ``size`` bytes of disk for the file ``path`` (posix_fallocate; where the file
    system cannot, a free-space check): an OSError (ENOSPC) when they do not fit."""
    try:
        with open(path, "r+b") as fh:
            os.posix_fallocate(fh.fileno(), 0, size)
        return
    except AttributeError:  # pragma: no cover - not POSIX
        pass
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
    if shutil.disk_usage(os.path.dirname(path)).free < size:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


class _Writer:
    def __init__(self, d: str, digest: str):
        self.dir = d
        self.digest = digest
        self.tmp = {}

    def allocate(self, part: str, shape, dtype) -> np.memmap:
        """A writable memory-mapped ``.npy`` under a temporary name, its blocks reserved on
        the disk first: a map over a sparse file on a full disk died with SIGBUS at its
        first write (exit 135, the temporary file left); now an OSError (ENOSPC) naming
        the cache folder, and the file removed."""
        tmp = os.path.join(self.dir, f".{part}.npy.tmp-{os.getpid()}")
        self.tmp[part] = tmp
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=tuple(shape))
        size = os.path.getsize(tmp)
        try:
            _reserve(tmp, size)
        except OSError as exc:  # (the map goes with arr; the file may go before it)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            for d in (self.dir, os.path.dirname(self.dir)):  # the entry's folders, if empty
                with contextlib.suppress(OSError):
                    os.rmdir(d)
            self.tmp.pop(part, None)
            raise OSError(exc.errno, f"{exc.strerror or exc} (the feature cache needs "
                          f"{size / 2 ** 20:.1f} MiB more there)", self.dir) from None
        return arr

    def commit(self, arrays: dict, manifest: dict, files: Optional[dict] = None) -> dict:
        """Flush, move the arrays (and the byte strings in ``files``, by name) into place,
        then write the manifest; returns it."""
        extra = {}
        for fname, data in (files or {}).items():
            final = os.path.join(self.dir, fname)
            tmp = os.path.join(self.dir, f".{fname}.tmp-{os.getpid()}")
            self.tmp[fname] = tmp
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, final)
            extra[fname] = {"bytes": os.path.getsize(final), "checksum": _file_checksum(final)}
        outputs = {}
        for part, arr in arrays.items():
            if isinstance(arr, np.memmap):
                arr.flush()
            final = os.path.join(self.dir, f"{part}.npy")
            os.replace(self.tmp[part], final)
            outputs[part] = {"shape": list(arr.shape), "dtype": arr.dtype.str,
                             "bytes": os.path.getsize(final),
                             "checksum": _file_checksum(final)}
        man = dict(manifest, format=FORMAT_VERSION, digest=self.digest, outputs=outputs,
                   files=extra)
        tmp = os.path.join(self.dir, f".manifest.json.tmp-{os.getpid()}")
        with open(tmp, "w") as fh:
            json.dump(man, fh, indent=1, sort_keys=True, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, os.path.join(self.dir, "manifest.json"))
        return man

    def abort(self) -> None:
        for tmp in self.tmp.values():
            try:
                os.remove(tmp)
            except OSError:
                pass
