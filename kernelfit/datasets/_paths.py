"""Where datasets live: the data-directory precedence and the per-user cache directory.

Precedence (first that is set wins):

1. the ``data_dir`` argument (``--data-dir`` on the command line);
2. the ``KERNELFIT_DATA`` environment variable;
3. the per-user cache, ``$XDG_CACHE_HOME/kernelfit`` or ``~/.cache/kernelfit``.

Under the data directory each dataset has its own folder: ``mnist/``, ``fashion-mnist/``,
``cifar10/``. Nothing here creates directories; the fetch step does that when it writes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from ..errors import InputError

__all__ = ["ENV_VAR", "default_cache_dir", "resolve_data_dir"]

ENV_VAR = "KERNELFIT_DATA"

PathLike = Union[str, "os.PathLike[str]"]


def default_cache_dir() -> Path:
    """The per-user cache directory: ``$XDG_CACHE_HOME/kernelfit`` or ``~/.cache/kernelfit``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "kernelfit"


def resolve_data_dir(data_dir: Optional[PathLike] = None) -> Path:
    """The directory datasets are read from (and downloaded into).

    ``data_dir`` wins when given, then ``KERNELFIT_DATA``, then :func:`default_cache_dir`.
    Raises :class:`~kernelfit.errors.InputError` when the chosen path exists but is not a
    directory. A relative path is made absolute (messages name folders that make sense
    from anywhere: 'in . itself, not in mnist' read oddly).
    """
    if data_dir is not None and str(data_dir).strip() != "":
        path = Path(data_dir).expanduser().absolute()
        origin = "data_dir"
    else:
        env = os.environ.get(ENV_VAR, "").strip()
        if env:
            path = Path(env).expanduser().absolute()
            origin = f"${ENV_VAR}"
        else:
            path = default_cache_dir()
            origin = "the default cache directory"
    if path.exists() and not path.is_dir():
        raise InputError(f"{origin} {str(path)!r} exists but is not a directory",
                         **({"param": "data_dir"} if origin == "data_dir" else {}))
    return path
