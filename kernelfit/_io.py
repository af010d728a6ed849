"""Atomic file writes: a temporary file in the target folder, then ``os.replace``.

A reader never sees a half-written file, and an interrupted write leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["atomic_writer", "atomic_save_npy", "atomic_write_text", "json_default"]


@contextlib.contextmanager
def atomic_writer(path, mode: str = "wb"):
    """Context manager yielding a file object; the file appears at ``path`` on success."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix="." + p.name + ".", suffix=".tmp", dir=parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, mode) as fh:
            yield fh
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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
