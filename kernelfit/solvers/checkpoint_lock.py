"""An out-of-core checkpoint folder (:mod:`kernelfit.solvers.ooc`): one process at a time
in it (an advisory lock, ``fcntl.flock``, on a file in the folder, which names its holder),
its files' names, their removal, and whether float64 tiles would fit in it."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from pathlib import Path

from ..errors import InputError

__all__ = ["LOCK_FILE", "MANIFEST", "LOW_RANK_FILE", "hold_folder", "release_folder",
           "discard_checkpoint", "float64_fits"]

MANIFEST = "manifest.json"
#: the deflation's U, kept with the checkpoint
LOW_RANK_FILE = "U.npy"

#: the file whose advisory lock holds a checkpoint folder for one process at a time
LOCK_FILE = ".kernelfit-lock"


def hold_folder(directory: Path):
    """Hold ``directory`` for this process: an advisory lock on :data:`LOCK_FILE` in it (its
    text: this process's id), as ``(path, file)``, released by :func:`release_folder`. A
    second process solving into the same folder meanwhile is refused (the two would
    overwrite each other's tiles and manifest). None where the system or the folder's file
    system has no advisory locks."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        return None
    path = directory / LOCK_FILE
    while True:
        try:  # never through a link: a link there would have its target overwritten
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                         | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
                return None  # no room for it: the disk check that follows says so
            raise InputError(f"cannot open the lock file {path} of out-of-core folder "
                             f"{directory} ({exc.strerror or exc}); remove it if no kernelfit "
                             "solve is using the folder, or choose another folder",
                             param="ooc_dir", path=str(directory)) from None
        fh = os.fdopen(fd, "r+")
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            fh.close()
            raise InputError(f"{path} in out-of-core folder {directory} is not a file; remove "
                             "it, or choose another folder", param="ooc_dir",
                             path=str(directory))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                release_folder((path, fh))  # a file system without advisory locks: solve unheld
                return None
            fh.seek(0)
            holder = fh.read().strip()
            fh.close()
            raise InputError(f"out-of-core folder {directory} is in use by another kernelfit "
                             "process" + (f" (pid {holder})" if holder.isdigit() else "")
                             + ": wait for it to finish, or choose another folder",
                             param="ooc_dir", path=str(directory)) from None
        try:  # the file locked is still the one named (its holder may have removed it)
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except OSError:
            same = False
        if same:
            break
        fh.close()
    try:  # the holder's id, for the refusal's message only (unbuffered: nothing to flush)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass
    return path, fh


def release_folder(held) -> None:
    """Release a folder :func:`hold_folder` held (its ``(path, file)``; None: nothing held): the
    lock file goes, then the lock."""
    if held is None or held[1].closed:
        return
    try:
        os.unlink(held[0])
    except OSError:
        pass
    try:
        held[1].close()
    except OSError:
        pass


def float64_fits(folder: Path, need: int) -> bool:
    """Whether ``need`` bytes (a float64 factor's disk pre-flight) fit on the disk of
    ``folder`` once its float32 tiles (all written before a fallback) are removed."""
    try:
        free = shutil.disk_usage(folder if folder.is_dir() else folder.parent).free
        held = sum(p.stat().st_size for p in _tile_files(folder)) if folder.is_dir() else 0
    except OSError:  # (a tile removed meanwhile: another process's; the lock will say)
        return False
    return free + held >= need


def _tile_files(directory: Path) -> list:
    """The checkpoint's tile files: ``A_i_j.npy`` and ``L_i_j.npy`` with whole numbers i, j
    (a user's ``A_train_x.npy`` is not one)."""
    return [p for p in directory.glob("[AL]_*_*.npy")
            if all(part.isdigit() for part in p.stem.split("_")[1:])]


def discard_checkpoint(directory: Path, *, hold: bool = False) -> None:
    """Remove an out-of-core checkpoint's own files from ``directory`` (the manifest, the
    tiles, the low-rank part; holding the folder while it does with ``hold``); the folder
    and anything else in it stay."""
    lock = hold_folder(directory) if hold else None
    try:
        for p in [directory / MANIFEST, directory / LOW_RANK_FILE, *_tile_files(directory)]:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    finally:
        release_folder(lock)
