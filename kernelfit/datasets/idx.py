"""The IDX file format (MNIST, Fashion-MNIST): a strict parser, a reader and a writer.

An IDX file is a big-endian header, ``0x00 0x00 <type> <ndim>`` followed by ``ndim``
unsigned 32-bit dimensions, then the data in C order. MNIST images have magic
``0x00000803`` (unsigned bytes, 3 dimensions), labels ``0x00000801``.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from ..errors import DataError, InputError
from ._fetch import gunzip, is_gzip

__all__ = ["IDX_TYPES", "IMAGES_MAGIC", "LABELS_MAGIC", "parse_idx", "encode_idx",
           "read_idx_bytes", "read_idx"]

#: type code -> big-endian dtype
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


def parse_idx(data: bytes, name: str = "<IDX data>", *,
              expect_magic: Optional[int] = None) -> np.ndarray:
    """Parse IDX bytes into a native-endian array (a copy, safe to keep).

    Every malformed input raises :class:`~kernelfit.errors.DataError` naming ``name``: a bad
    magic number (or one other than ``expect_magic``), a header or body shorter than the
    declared dimensions (truncated) or longer (trailing bytes).
    """
    data = memoryview(data).cast("B") if not isinstance(data, (bytes, bytearray)) else data
    size = len(data)
    if size < 4:
        raise DataError(f"{name}: truncated IDX file ({size} bytes, shorter than the 4-byte "
                        f"magic number)")
    magic = int.from_bytes(bytes(data[:4]), "big")
    type_code, ndim = data[2], data[3]
    if data[0] != 0 or data[1] != 0 or type_code not in IDX_TYPES or ndim == 0:
        raise DataError(f"{name}: not an IDX file (bad magic number 0x{magic:08x})")
    if expect_magic is not None and magic != expect_magic:
        raise DataError(f"{name}: bad magic number 0x{magic:08x} (expected 0x{expect_magic:08x})")
    header = 4 + 4 * ndim
    if size < header:
        raise DataError(f"{name}: truncated IDX file ({size} bytes, the header of a "
                        f"{ndim}-dimensional array needs {header})")
    dims: Tuple[int, ...] = struct.unpack(f">{ndim}I", bytes(data[4:header]))
    dtype = np.dtype(IDX_TYPES[type_code])
    count = 1
    for d in dims:
        count *= d
    need = count * dtype.itemsize
    have = size - header
    shape = " x ".join(str(d) for d in dims)
    if have < need:
        raise DataError(f"{name}: truncated IDX file (header declares {shape} = {need} data "
                        f"bytes, file holds {have})")
    if have > need:
        raise DataError(f"{name}: IDX file has {have - need} trailing bytes after the declared "
                        f"{shape} data")
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def encode_idx(array: np.ndarray) -> bytes:
    """Encode ``array`` (1 to 255 dimensions, an IDX dtype) as IDX bytes."""
    arr = np.asarray(array)
    for code, spec in IDX_TYPES.items():
        if np.dtype(spec).newbyteorder("=") == arr.dtype.newbyteorder("="):
            break
    else:
        raise InputError(f"dtype {arr.dtype} has no IDX type code (IDX holds "
                         f"{', '.join(sorted({np.dtype(t).name for t in IDX_TYPES.values()}))})",
                         param="array")
    if not 1 <= arr.ndim <= 255:
        raise InputError(f"IDX arrays have 1 to 255 dimensions, got {arr.ndim}", param="array")
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + np.ascontiguousarray(arr, dtype=IDX_TYPES[code]).tobytes()


def read_idx_bytes(path: Path) -> Tuple[bytes, Optional[bytes]]:
    """Read ``path``; return ``(stored_bytes, decompressed_or_None)``.

    Gzip is recognised by its magic bytes, not the file name.
    """
    path = Path(path)
    try:
        stored = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if is_gzip(stored):
        return stored, gunzip(stored, str(path))
    return stored, None


def read_idx(path: Path, *, expect_magic: Optional[int] = None) -> np.ndarray:
    """Read an IDX file, gzip-compressed or raw, with :func:`parse_idx`'s validation."""
    stored, content = read_idx_bytes(path)
    return parse_idx(content if content is not None else stored, str(path),
                     expect_magic=expect_magic)
