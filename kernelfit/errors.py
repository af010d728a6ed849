"""Exceptions raised by kernelfit for foreseeable mistakes.

Every error a user can cause (bad input, missing or corrupt data, a request that
cannot fit in memory, a kernel matrix that is not positive definite) derives from
:class:`KernelfitError`. The library speaks in data: a message states the problem in the
words of the Python API (parameter names, not command-line flags), and the error carries
the structured facts behind it (``param``, needed and available bytes, the failing pivot,
the diagnosed causes, ...). The command-line interface turns those facts into one line of
advice naming its flags and chooses the exit code (``kernelfit.cli.EXIT_CODES``); the
error classes carry no exit codes.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

__all__ = [
    "KernelfitError",
    "InputError",
    "InputTypeError",
    "DataError",
    "DownloadError",
    "ChecksumError",
    "MemoryPlanError",
    "NotPositiveDefiniteError",
    "BackendUnavailableError",
    "InexactFitWarning",
]


class KernelfitError(Exception):
    """Base class of the errors kernelfit reports to users.

    ``facts`` holds the structured facts behind the message (JSON-ready values); the
    named attributes of the subclasses are views of the same facts.
    """

    def __init__(self, message: str = "", **facts):
        super().__init__(message)
        self.facts = dict(facts)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class InputError(KernelfitError, ValueError):
    """An argument, option or array is invalid (shape, range, NaN, unknown name).

    ``param`` names the offending parameter as the Python API spells it (``'ooc_dir'``,
    ``'n_train'``, ``'bandwidth'``, ...) when there is one.
    """

    def __init__(self, message: str = "", param: Optional[str] = None, **facts):
        super().__init__(message, param=param, **facts)
        self.param = param


class InputTypeError(InputError, TypeError):
    """An input of the wrong type (sparse where dense is required, objects that are not
    numbers): both an :class:`InputError` and a ``TypeError``, as scikit-learn expects."""


class DataError(KernelfitError):
    """A dataset file is missing, truncated, corrupt or of the wrong format."""


class DownloadError(DataError):
    """A dataset could not be downloaded (offline, server error).

    ``missing`` lists the files that are missing, ``directory`` where they were looked for.
    """

    def __init__(self, message: str = "", missing: Sequence[str] = (),
                 directory: Optional[str] = None, **facts):
        super().__init__(message, missing=list(missing), directory=directory, **facts)
        self.missing = list(missing)
        self.directory = directory


class ChecksumError(DataError):
    """A downloaded or cached file does not match its published checksum."""


class MemoryPlanError(KernelfitError, MemoryError):
    """The memory pre-flight found that a request cannot fit.

    ``required_bytes`` and ``available_bytes`` are the figures; ``request`` describes what
    was planned (n, d, n_outputs, n_test, dtype, precision, solver, device, tile_size,
    placement) so that a caller can look for a configuration that fits
    (:func:`kernelfit.solvers.plan.would_fit`).
    """

    def __init__(self, message: str = "", required_bytes: int = 0, available_bytes: int = 0,
                 request: Optional[dict] = None, **facts):
        super().__init__(message, required_bytes=int(required_bytes),
                         available_bytes=int(available_bytes), request=dict(request or {}),
                         **facts)
        self.required_bytes = int(required_bytes)
        self.available_bytes = int(available_bytes)
        self.request = dict(request or {})


class NotPositiveDefiniteError(KernelfitError, np.linalg.LinAlgError):
    """The Cholesky factorization met a non-positive pivot.

    ``index`` is the first failing pivot (-1 when unknown); ``causes`` the diagnosed
    reasons (``'low_rank_linear'``, ``'low_rank_polynomial'``, ``'duplicates'``,
    ``'ill_conditioned'``, ``'shift_failed'``); further facts: ``dtype`` (the precision
    that failed), ``ridge``, ``n``, ``d``, ``n_outputs``, ``n_duplicates``,
    ``n_conflicting`` (duplicates whose target differs from their copy's),
    ``mean_diagonal``.
    """

    def __init__(self, message: str = "", index: int = -1, causes: Sequence[str] = (),
                 **facts):
        super().__init__(message, index=int(index), causes=list(causes), **facts)
        self.index = int(index)
        self.causes = list(causes)


class BackendUnavailableError(KernelfitError):
    """The requested device (for example a GPU) is not usable on this machine."""


class InexactFitWarning(UserWarning):
    """A fit whose certified float64 residual is above the exactness threshold although
    nothing asked for an inexact one (no ridge, no refinement target above the threshold):
    its coefficients do not interpolate the labels. The message names the likely cause."""
