"""Progress bars for long loops (tqdm), silent unless asked for or on a terminal."""

from __future__ import annotations

import os
import sys
from typing import Iterable, Optional

__all__ = ["progress", "progress_enabled"]


def progress_enabled(flag: Optional[bool] = None) -> bool:
    """Whether progress bars are shown.

    ``flag`` wins when given; otherwise ``KERNELFIT_PROGRESS`` (``0``/``1``) decides, and
    failing that a bar is shown only when standard error is a terminal.
    """
    if flag is not None:
        return bool(flag)
    env = os.environ.get("KERNELFIT_PROGRESS")
    if env is not None:
        return env.strip() not in ("", "0", "false", "no")
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def progress(iterable: Iterable = None, *, total: Optional[int] = None, desc: str = "",
             enabled: Optional[bool] = None, unit: str = "it"):
    """Wrap ``iterable`` in a tqdm bar on standard error when progress is enabled.

    With no ``iterable``, returns a manually updated bar (``bar.update(k)``).
    """
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False,
                disable=not progress_enabled(enabled), file=sys.stderr,
                dynamic_ncols=True)
