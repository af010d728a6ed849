"""The ``kernelfit`` command line: a thin dispatcher over subcommand modules.

Each subcommand lives in its own module of this package and defines ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Errors that users can cause derive
from :class:`kernelfit.errors.KernelfitError`; they are printed as one line on standard
error with a non-zero exit code, never as a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import sys
import warnings
from typing import Optional, Sequence

from ..errors import KernelfitError

__all__ = ["main", "build_parser", "SUBCOMMANDS"]

# name -> module (imported only when the parser is built)
SUBCOMMANDS = {
    "solve": "kernelfit.cli.solve",
    "predict": "kernelfit.cli.predict",
    "verify": "kernelfit.cli.verify",
    "randomize": "kernelfit.cli.randomize",
    "bench": "kernelfit.cli.bench",
    "datasets": "kernelfit.cli.datasets",
    "reproduce": "kernelfit.cli.reproduce",
}


class _HelpFormatter(argparse.HelpFormatter):
    """Shows an option's default when it says something (not None/False, not already given)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text or action.default in (None, False, argparse.SUPPRESS)
                or not action.option_strings):
            return text
        return text + " (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """argparse with errors routed through kernelfit's one-line error format."""

    def error(self, message):  # pragma: no cover - exercised through main()
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _available_subcommands():
    for name, modname in SUBCOMMANDS.items():
        try:
            spec = importlib.util.find_spec(modname)
        except (ImportError, ValueError):
            spec = None
        if spec is not None:
            yield name, modname


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(
        prog="kernelfit",
        description="Exact kernel interpolation (K alpha = y, no regularization) and numeric "
                    "checks of Zhang et al., 'Understanding deep learning requires rethinking "
                    "generalization' (ICLR 2017).",
    )
    parser.add_argument("--version", action="version", version=f"kernelfit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, modname in _available_subcommands():
        mod = importlib.import_module(modname)
        p = sub.add_parser(name, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP),
                           formatter_class=_HelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


@contextlib.contextmanager
def _device_fallback_said_in_one_line(command: str):
    """``--device auto`` without a usable GPU: the library's DeviceFallbackWarning is
    printed as one line (``kernelfit solve: warning: no usable GPU, running on the CPU: ...``)."""
    from ..backend import DeviceFallbackWarning

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DeviceFallbackWarning):
            print(f"kernelfit {command}: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("always", DeviceFallbackWarning)
        warnings.showwarning = show
        yield


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        with _device_fallback_said_in_one_line(args.command):
            return int(args._run(args) or 0)
    except KernelfitError as exc:
        print(f"kernelfit {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"kernelfit {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # pragma: no cover - e.g. `kernelfit solve --json | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
