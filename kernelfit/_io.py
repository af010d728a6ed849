"""Atomic file writes: a temporary file in the target folder, then ``os.replace``.

A reader never sees a half-written file, and an interrupted write leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import InputError

__all__ = ["check_format", "atomic_writer", "atomic_batch", "atomic_save_npy",
           "atomic_write_text", "json_default", "json_ready", "dumps_json", "check_writable_file",
           "check_writable_folder", "same_file", "check_not_overwriting"]


#: the writes of the innermost :func:`atomic_batch`: (temporary, final path) pairs
_BATCH: contextvars.ContextVar = contextvars.ContextVar("kernelfit_atomic_batch", default=None)


@contextlib.contextmanager
def atomic_writer(path, mode: str = "wb"):
    """Context manager yielding a file object; the file appears at ``path`` on success
    (inside :func:`atomic_batch`: when the whole batch succeeds). An error of the file
    system names ``path`` (a full disk's error names no file by itself)."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix="." + p.name + ".", suffix=".tmp", dir=parent)
    batch = _BATCH.get()
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, mode) as fh:
            yield fh
        if batch is None:
            os.replace(tmp, p)
        else:
            batch.append((tmp, p))
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(p)
        raise


@contextlib.contextmanager
def atomic_batch():
    """All the :func:`atomic_writer` writes inside appear together, or none does: each goes
    to a temporary file beside its path, and they are renamed into place when the block
    ends without an error; after an error (a full disk at the fourth of six report files)
    the temporaries are removed and the files already there are left as they were."""
    batch: list = []
    token = _BATCH.set(batch)
    try:
        yield
    except BaseException:
        for tmp, _ in batch:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    finally:
        _BATCH.reset(token)
    for tmp, p in batch:
        os.replace(tmp, p)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_save_npy(path, array) -> None:
    with atomic_writer(path, "wb") as fh:
        np.save(fh, np.asarray(array), allow_pickle=False)


def atomic_write_text(path, text: str) -> None:
    with atomic_writer(path, "w") as fh:
        fh.write(text)


def json_default(o):
    """``json.dumps(default=...)`` for NumPy scalars and arrays, sets and tuples."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def json_ready(o):
    """``o`` as plain JSON values: every non-finite float (Python's, NumPy's, inside NumPy
    arrays too) as ``None``, NumPy scalars and arrays as Python numbers and lists, tuples
    and sets as lists, anything else as :func:`json_default` makes it."""
    if o is None or isinstance(o, (str, bool, int)):
        return o
    if isinstance(o, (float, np.floating)):  # np.float64 is a float too
        return float(o) if math.isfinite(o) else None
    if isinstance(o, dict):
        return {_json_key(k): json_ready(v) for k, v in o.items()}
    if isinstance(o, (list, tuple, set, frozenset)):
        return [json_ready(v) for v in o]
    if isinstance(o, np.ndarray):
        return json_ready(o.tolist())
    if isinstance(o, np.generic):  # NumPy integers and booleans
        return json_ready(o.item())
    return json_default(o)


def _json_key(k):
    """A dict key JSON takes: NumPy scalars as Python's, a non-finite float as its text."""
    k = k.item() if isinstance(k, np.generic) else k
    return str(k) if isinstance(k, float) and not math.isfinite(k) else k


def dumps_json(obj, **kwargs) -> str:
    """``obj`` as strictly valid JSON text (``json.dumps`` keywords apply): the non-finite
    numbers, which JSON has no words for (``Infinity`` and ``NaN`` break strict parsers),
    as ``null`` (:func:`json_ready`)."""
    return json.dumps(json_ready(obj), allow_nan=False, **kwargs)


def _probe(folder: Path) -> Optional[str]:
    """None when a file can be created in ``folder`` (tried for real, then removed: the
    permission bits do not tell for root or a read-only mount), else the reason."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".kernelfit-probe-", dir=folder)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)
    return None


def _why_not(folder: Path):
    """Why files cannot be written in the existing ``folder`` (None: they can)."""
    if not folder.is_dir():
        return "not a folder"
    why = _probe(folder)
    if why and "No such file" in why:  # /proc, /sys: the folder is there, files cannot be
        return "files cannot be created there"
    return why


def check_writable_file(path, param: str = "path") -> None:
    """Raise :class:`~kernelfit.errors.InputError` (facts ``param``, ``path``) unless a
    file can be written at ``path``. Nothing is left behind."""
    from .errors import InputError

    facts = {"param": param, "path": str(path)}
    if not str(path).strip():
        raise InputError(f"{param} is empty; give a file name", **facts)
    p = Path(path).expanduser()
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise InputError(f"{path} is a folder; give a file name", **facts)
    if not parent.exists():
        raise InputError(f"cannot write {path}: folder {parent} does not exist; create it "
                         "first (mkdir -p), or give a path in a folder that exists", **facts)
    why = _why_not(parent)
    if why:
        raise InputError(f"cannot write {path}: folder {parent}: {why}; choose a folder you "
                         "can write to", **facts)


def same_file(a, b) -> bool:
    """Whether the paths ``a`` and ``b`` name one existing file (:func:`os.path.samefile`:
    links, hard links and ``..`` seen through); a path that does not exist yet (an output
    to be made) is no existing file, and a missing input has nothing to lose."""
    if not str(a).strip() or not str(b).strip():
        return False
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    try:
        return pa.exists() and pb.exists() and os.path.samefile(pa, pb)
    except OSError:  # unreadable: not known to be one
        return False


def check_not_overwriting(path, inputs, param: str = "path") -> None:
    """Raise :class:`~kernelfit.errors.InputError` (facts ``param``, ``path``,
    ``overwrites``) when writing ``path`` would replace one of ``inputs``: ``(what, file)``
    pairs, ``what`` saying in words which input ``file`` is (None files are skipped)."""
    for what, src in inputs:
        if src is not None and same_file(path, src):
            raise InputError(f"{param} {path} is {what}: writing there would overwrite it; "
                             "give another file name", param=param, path=str(path),
                             overwrites=str(src))


def check_writable_folder(folder, param: str = "path") -> None:
    """Raise InputError unless ``folder`` is, or can be created as, a folder one can write
    in (probed in its nearest existing ancestor). Creates nothing."""
    from .errors import InputError

    if not str(folder).strip():
        raise InputError(f"{param} is empty; give a folder", param=param, path=str(folder))
    p = Path(folder).expanduser()
    if p.exists() and not p.is_dir():
        raise InputError(f"{folder} exists and is not a folder; give another name (a folder "
                         "is made there)", param=param, path=str(folder))
    anc = p
    while not anc.exists() and anc.parent != anc:
        anc = anc.parent
    why = _why_not(anc)
    if why:
        raise InputError(f"cannot write in {folder}: {anc}: {why}; choose a folder you can "
                         "write to", param=param, path=str(folder))


def check_format(obj, path, fmt: str, version: int, what: str):
    """``obj`` (a loaded model file, manifest, ...) when it is a dict of kernelfit's format
    ``fmt`` at ``version``; else :class:`~kernelfit.errors.InputError` naming ``what``."""
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        raise InputError(f"{path} is not a kernelfit {what}")
    if obj.get("version") != version:
        raise InputError(f"{path} has {what} version {obj.get('version')}, this kernelfit "
                         f"reads version {version}")
    return obj
