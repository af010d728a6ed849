"""Downloading and verifying dataset files.

A missing file is downloaded from each of its mirrors in turn into a temporary file in the
destination directory, checked against its published SHA-256 and only then renamed into
place with :func:`os.replace`. A failed or unverified download never leaves anything behind.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

from .._io import check_writable_folder
from ..errors import ChecksumError, DataError, DownloadError
from ..progress import progress
from ._paths import ENV_VAR
from .sources import RemoteFile

__all__ = [
    "sha256_bytes",
    "sha256_file",
    "gunzip",
    "verify_bytes",
    "verify_file",
    "download",
    "download_all",
    "missing_files_error",
]

_CHUNK = 1 << 20
_TIMEOUT_S = 60.0


def _urlopen(url: str, timeout: float):
    """Open ``url``; a module-level hook so that tests can substitute a fake network."""
    return urllib.request.urlopen(url, timeout=timeout)


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of the file at ``path``, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_gzip(data: bytes) -> bool:
    """Whether ``data`` starts with the gzip magic bytes."""
    return data[:2] == b"\x1f\x8b"


def gunzip(data: bytes, name: str) -> bytes:
    """Decompress gzip ``data``; corrupt or truncated input raises DataError naming ``name``."""
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{name}: corrupt or truncated gzip data ({exc}); delete it to "
                        "download it again, or replace it with the official file") from None


def verify_bytes(data: bytes, remote: Optional[RemoteFile], name: str,
                 content: Optional[bytes] = None, *, uncompressed_copy: bool = False) -> None:
    """Check file bytes against ``remote``'s published checksums.

    ``data`` are the bytes as stored; ``content`` the decompressed bytes when the file is
    gzip. A file matches when the stored bytes have the published SHA-256, or when its
    (decompressed) content has the published content SHA-256. ``uncompressed_copy`` marks a
    file stored without its ``.gz`` (only a content hash can verify it; with none known it
    passes, to be checked for structure only). Files with no known checksum pass. Raises
    :class:`~kernelfit.errors.ChecksumError` otherwise.
    """
    if remote is None:
        return
    if uncompressed_copy:
        if remote.content_sha256 is None:
            return
        actual = sha256_bytes(data)
        if actual == remote.content_sha256:
            return
        expected = remote.content_sha256
    else:
        if remote.sha256 is None and remote.content_sha256 is None:
            return
        actual = sha256_bytes(data)
        if remote.sha256 is not None and actual == remote.sha256:
            return
        if remote.content_sha256 is not None and content is not None:
            if sha256_bytes(content) == remote.content_sha256:
                return
        expected = remote.sha256 or remote.content_sha256
    raise ChecksumError(
        f"{name} does not match the published checksum of {remote.filename} "
        f"(sha256 {actual}, expected {expected}); the file is corrupt or not the official "
        f"one: delete it to download it again, or replace it with the official file")


def verify_file(path: Path, remote: Optional[RemoteFile]) -> None:
    """Check the file at ``path`` against ``remote`` (see :func:`verify_bytes`)."""
    if remote is None:
        return
    if remote.sha256 is not None and remote.content_sha256 is None:
        actual = sha256_file(path)
        if actual != remote.sha256:
            raise ChecksumError(
                f"{path} does not match the published checksum of {remote.filename} "
                f"(sha256 {actual}, expected {remote.sha256}); delete it to download it "
                f"again, or replace it with the official file")
        return
    data = path.read_bytes()
    content = gunzip(data, str(path)) if is_gzip(data) else None
    verify_bytes(data, remote, str(path), content)


def missing_files_error(dataset: str, directory: Path, filenames: Iterable[str],
                        reason: str, found_in: Optional[Path] = None) -> DownloadError:
    """A DownloadError saying where kernelfit looked and how to supply the files.

    ``found_in``: the data directory given, a folder named ``dataset`` that holds the files
    itself (``directory`` is ``found_in/dataset``): facts ``found_in`` and
    ``parent_data_dir`` (its parent, the data directory that reads them as they are)."""
    filenames = list(filenames)
    names = ", ".join(filenames)
    if found_in is not None:
        parent = Path(found_in).absolute().parent
        return DownloadError(
            f"{dataset}: missing {names} in {directory} ({reason}): the data directory is "
            f"the folder holding {dataset}/; point data_dir at {parent}",
            missing=filenames, directory=str(directory), dataset=dataset, reason=reason,
            param="data_dir", found_in=str(found_in), parent_data_dir=str(parent))
    return DownloadError(
        f"{dataset}: missing {names} in {directory} ({reason}); put the files in {directory}, "
        f"or point data_dir or ${ENV_VAR} at a directory holding {dataset}/ with them",
        missing=filenames, directory=str(directory), dataset=dataset, reason=reason,
        param="data_dir")


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError:  # pragma: no cover - nothing better to do
        pass


def _download_one(url: str, tmp_path: Path, desc: str) -> None:
    with _urlopen(url, _TIMEOUT_S) as response, open(tmp_path, "wb") as out:
        total = response.headers.get("Content-Length") if hasattr(response, "headers") else None
        try:
            total = int(total) if total else None
        except (TypeError, ValueError):
            total = None
        with progress(total=total, desc=desc, unit="B") as bar:
            while True:
                chunk = response.read(_CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                bar.update(len(chunk))
        out.flush()
        os.fsync(out.fileno())


def download(remote: RemoteFile, directory: Path, dataset: str) -> Path:
    """Download ``remote`` into ``directory``, verified, and return its final path.

    Mirrors are tried in order. Raises :class:`~kernelfit.errors.ChecksumError` when every
    mirror that answered served bytes with the wrong checksum, and
    :class:`~kernelfit.errors.DownloadError` when none could be reached. A ``directory``
    where files cannot be created (``/proc/x``, a read-only folder) is an
    :class:`~kernelfit.errors.InputError` (``param='data_dir'``), before any download. The
    folders this call created (``directory`` and any of its parents) are removed again when
    the download fails or is interrupted.
    """
    directory = Path(directory)
    check_writable_folder(directory, param="data_dir")
    created = []  # the folders this call makes (the data folder too), deepest first
    for p in (directory, *directory.parents):
        if p.exists():
            break
        created.append(p)
    try:
        return _download_into(remote, directory, dataset)
    finally:
        for p in created:  # leave no empty folder behind (also on Ctrl-C)
            try:
                p.rmdir()
            except OSError:  # not empty (the file arrived) or already gone
                break


def download_all(remotes: Sequence[RemoteFile], directory: Path, dataset: str) -> List[Path]:
    """Download every file of ``remotes``; when some fail, one error names all of them."""
    paths: List[Path] = []
    failed: List[str] = []
    reasons: List[str] = []
    for remote in remotes:
        try:
            paths.append(download(remote, directory, dataset))
        except DownloadError as exc:
            failed.append(remote.filename)
            reasons.append(str(exc.facts.get("reason") or exc))
    if failed:
        more = " (the other files failed alike)" if len(failed) > 1 else ""
        raise missing_files_error(dataset, directory, failed, reasons[0] + more)
    return paths


def _download_into(remote: RemoteFile, directory: Path, dataset: str) -> Path:
    dest = directory / remote.filename
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise missing_files_error(dataset, directory, [remote.filename],
                                  f"cannot create the directory to download into: {exc}") from None
    failures: List[str] = []
    bad_checksum = False
    for url in remote.urls:
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{remote.filename}.", suffix=".part",
                                            dir=directory)
        except OSError as exc:
            raise missing_files_error(dataset, directory, [remote.filename],
                                      f"cannot write there: {exc}") from None
        os.close(fd)
        tmp_path = Path(tmp_name)
        try:
            _download_one(url, tmp_path, f"downloading {remote.filename}")
            verify_file(tmp_path, remote)
            os.replace(tmp_path, dest)
            return dest
        except ChecksumError as exc:
            bad_checksum = True
            failures.append(f"{url}: {exc}")
        except DataError as exc:
            bad_checksum = True
            failures.append(f"{url}: {exc}")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            failures.append(f"{url}: {getattr(exc, 'reason', exc)}")
        finally:
            _remove_quietly(tmp_path)
    detail = "; ".join(failures) if failures else "no download location known"
    if bad_checksum:
        raise ChecksumError(f"{dataset}: could not download a verified {remote.filename} "
                            f"into {directory}: {detail}")
    raise missing_files_error(dataset, directory, [remote.filename],
                              f"download failed: {detail}")
