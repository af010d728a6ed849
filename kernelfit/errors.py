"""Exceptions raised by kernelfit for foreseeable mistakes.

Every error a user can cause (bad input, missing or corrupt data, a request that
cannot fit in memory, a kernel matrix that is not positive definite) derives from
:class:`KernelfitError`. The command-line interface prints such errors as one clear
message and exits with a non-zero code; anything else is a bug.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "KernelfitError",
    "InputError",
    "DataError",
    "DownloadError",
    "ChecksumError",
    "MemoryPlanError",
    "NotPositiveDefiniteError",
    "BackendUnavailableError",
]


class KernelfitError(Exception):
    """Base class of the errors kernelfit reports to users."""

    exit_code = 2


class InputError(KernelfitError, ValueError):
    """An argument, option or array is invalid (shape, range, NaN, unknown name)."""


class DataError(KernelfitError):
    """A dataset file is missing, truncated, corrupt or of the wrong format."""

    exit_code = 3


class DownloadError(DataError):
    """A dataset could not be downloaded (offline, server error)."""


class ChecksumError(DataError):
    """A downloaded or cached file does not match its published checksum."""


class MemoryPlanError(KernelfitError, MemoryError):
    """The memory pre-flight found that a request cannot fit."""

    exit_code = 4

    def __init__(self, message: str, required_bytes: int = 0, available_bytes: int = 0):
        super().__init__(message)
        self.required_bytes = int(required_bytes)
        self.available_bytes = int(available_bytes)


class NotPositiveDefiniteError(KernelfitError, np.linalg.LinAlgError):
    """The Cholesky factorization met a non-positive pivot."""

    exit_code = 5

    def __init__(self, message: str, index: int = -1):
        super().__init__(message)
        self.index = int(index)


class BackendUnavailableError(KernelfitError):
    """The requested device (for example a GPU) is not usable on this machine."""
