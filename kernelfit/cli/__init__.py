"""The ``kernelfit`` command line: a thin dispatcher over subcommand modules.

Each subcommand lives in its own module of this package and defines ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Errors that users can cause derive
from :class:`kernelfit.errors.KernelfitError`; they carry facts, which
:mod:`kernelfit.cli._advice` turns into one line on standard error naming the flags that
help, with the exit code of :data:`EXIT_CODES`; never a traceback. Warnings are one line too.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import logging
import os
import re
import signal
import sys
import threading
import warnings
from typing import Optional, Sequence

from ..errors import DataError, KernelfitError, MemoryPlanError, NotPositiveDefiniteError

__all__ = ["main", "console_main", "build_parser", "SUBCOMMANDS", "EXIT_CODES",
           "exit_code_for"]

#: error class -> exit code, first match wins (the library's errors carry no codes).
#: 0 success, 1 a bug (an unexpected exception) or a failed check, 2 bad input or usage,
#: 3 missing or corrupt data, 4 the memory plan does not fit, 5 K not positive definite,
#: 6 the solve is not exact (``kernelfit solve``, see kernelfit.kernel_defaults), 7 the
#: file system refused (permission, disk full), 130 interrupted (Ctrl-C), 143 terminated
#: (SIGTERM, e.g. ``kill`` or a batch system's time limit), 141 the output's reader went
#: away (``| head``).
EXIT_CODES = (
    (MemoryPlanError, 4),
    (NotPositiveDefiniteError, 5),
    (DataError, 3),
    (KernelfitError, 2),
    (OSError, 7),
)

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


#: an option followed by a negative value (``--n-train -5``, ``--memory-budget -5G``)
_NEGATIVE = re.compile(r"--[a-z-]+\s+-\d")
#: the arguments being parsed (for the message of a parse error)
_ARGV: Optional[Sequence[str]] = None


class _Parser(argparse.ArgumentParser):
    """argparse with errors as one line (the problem, and where to read the options)."""

    def error(self, message):  # pragma: no cover - exercised through main()
        if message.endswith("expected one argument") and _NEGATIVE.search(
                " ".join(_ARGV or ())):
            # `--memory-budget -5G`: argparse reads the value as an option
            message += " (a value that starts with '-' reads as an option; these are positive)"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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


def exit_code_for(exc: BaseException) -> int:
    """The exit code of an error the user can cause (see :data:`EXIT_CODES`)."""
    for cls, code in EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return 1


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


#: options naming a file, folder, dataset or address: an empty value ('') is a mistake (it
#: was ignored, or meant the current folder)
_NOT_EMPTY = ("input", "data_dir", "model", "ooc_dir", "out", "save", "output",
              "feature_cache_dir")


def _check_not_empty(args) -> None:
    from ..errors import InputError

    for dest in _NOT_EMPTY:
        value = getattr(args, dest, None)
        if isinstance(value, str) and not value.strip():
            raise InputError(f"{dest} is empty; give a value (see kernelfit {args.command} "
                             "--help)", param=dest)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as Ctrl-C is: the same clean-up runs (temporary
    files removed, checkpoints kept), then exit 143 instead of 130."""


#: the signals received while a command runs (an interruption raised inside a finalizer,
#: a weakref callback during garbage collection, is printed and dropped by Python: the
#: command would go on to the end and exit 0 as if never interrupted)
_RECEIVED: list = []


def _raise_interrupt(signum, frame):
    _RECEIVED.append(signum)
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


@contextlib.contextmanager
def _signals_as_interrupt():
    """Ctrl-C and SIGTERM raise in the main thread while a command runs, and are
    remembered (main thread only; the handlers that were there before come back after)."""
    _RECEIVED.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {sig: signal.signal(sig, _raise_interrupt)
              for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _lost_interrupt(prefix: str, rc: int) -> int:
    """The exit code of a command that returned ``rc``: an interruption it never saw (lost
    inside a finalizer) is still one, said in one line."""
    if not _RECEIVED:
        return rc
    return _stop_line(prefix, _RECEIVED[0] == signal.SIGTERM, " (the signal came while "
                      "Python was finishing an object and did not stop the command, which "
                      "ran to its end: its output is complete)")


def _stopped(prefix: str, exc: KeyboardInterrupt, args=None) -> int:
    """One line for Ctrl-C or SIGTERM (naming ``--resume`` where a checkpoint stays); the
    exit code."""
    return _stop_line(prefix, isinstance(exc, Terminated), _resume_hint(args))


def _stop_line(prefix: str, term: bool, more: str) -> int:
    """Print ``<prefix>: interrupted|terminated<more>``; the exit code, 130 or 143."""
    print(f"{prefix}: {'terminated' if term else 'interrupted'}{more}", file=sys.stderr)
    return 143 if term else 130


def _resume_hint(args, when: str = "") -> str:
    """'; the checkpoint ... stays: ... --resume continues it' where an out-of-core solve or
    randomize stopped with its checkpoint folder holding something, else ''."""
    ooc = getattr(args, "ooc_dir", None)
    if not (ooc and getattr(args, "command", None) in ("solve", "randomize")
            and os.path.isdir(ooc) and os.listdir(ooc)):
        return ""
    return f"; the checkpoint in {ooc} stays: {when}the same command with --resume continues it"


def main(argv: Optional[Sequence[str]] = None) -> int:
    with _signals_as_interrupt():
        return _main(argv)


def console_main() -> None:
    """The ``kernelfit`` command (and ``python -m kernelfit``): :func:`main`, then exit.
    After Ctrl-C or SIGTERM (its clean-up done, its line printed) the process ends at once:
    the interpreter's own shutdown would wait on, or tear down, threads still inside native
    code (SciPy's FFT under the Gabor map's thread pool), and aborted with "terminate called
    without an active exception" (exit 134) about one time in eight."""
    rc = main()
    if rc in (130, 143):
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(rc)
    sys.exit(rc)


def _main(argv: Optional[Sequence[str]] = None) -> int:
    global _ARGV
    _ARGV = list(sys.argv[1:] if argv is None else argv)
    try:  # the parser imports each command's module: Ctrl-C may come that early
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
    except KeyboardInterrupt as exc:  # the command, as typed, where it is one
        typed = next((a for a in _ARGV if not a.startswith("-")), None)
        return _stopped(f"kernelfit {typed}" if typed in SUBCOMMANDS else "kernelfit", exc)
    if extra:  # named by the (sub)command that was given them, not by `kernelfit`
        where = " ".join(["kernelfit"] + [w for w in (getattr(args, "command", None),
                                                      getattr(args, "action", None)) if w])
        print(f"{where}: error: unrecognized arguments: {' '.join(extra)} (see {where} "
              "--help)", file=sys.stderr)
        return 2
    if getattr(args, "_run", None) is None:
        names = ", ".join(name for name, _ in _available_subcommands())
        print(f"kernelfit: error: choose a command: {names} (see kernelfit --help)",
              file=sys.stderr)
        return 2
    prefix = f"kernelfit {args.command}"

    def show_warning(message, category, filename, lineno, file=None, line=None):
        print(f"{prefix}: warning: {_one_line(message)}", file=sys.stderr)

    from ..backend import DeviceFallbackWarning
    from ._advice import explain, explain_os_error

    # the library's warning log lines (auto's fallback to float64, for one) in the same
    # form as its warnings; without a handler Python would print the bare message
    said = _SayWarnings(show_warning)
    logger = logging.getLogger("kernelfit")
    logger.addHandler(said)
    try:
        with warnings.catch_warnings():
            # the device fallback of --device auto is said every time, in one line
            warnings.simplefilter("always", DeviceFallbackWarning)
            warnings.showwarning = show_warning
            _check_not_empty(args)
            return _lost_interrupt(prefix, int(args._run(args) or 0))
    except KernelfitError as exc:
        print(f"{prefix}: error: {_one_line(explain(exc, args))}", file=sys.stderr)
        return exit_code_for(exc)
    except KeyboardInterrupt as exc:
        return _stopped(prefix, exc, args)
    except BrokenPipeError:  # pragma: no cover - e.g. `kernelfit solve --json | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 141  # as a shell reports SIGPIPE (128 + 13); 1 means a bug
    except OSError as exc:  # the file system said no: one line, not a traceback
        hint = _resume_hint(args, "once that is mended, ")
        print(f"{prefix}: error: {_one_line(explain_os_error(exc))}{hint}", file=sys.stderr)
        return exit_code_for(exc)
    except MemoryError:
        print(f"{prefix}: error: ran out of memory although the memory plan fitted (other "
              "processes took memory meanwhile?); free memory or ask for less (a smaller "
              "--n-train)", file=sys.stderr)
        return exit_code_for(MemoryPlanError())
    finally:
        logger.removeHandler(said)


class _SayWarnings(logging.Handler):
    """Hands the ``kernelfit`` logger's warnings (and worse) to ``show``, as the command's
    other warnings are said."""

    def __init__(self, show):
        super().__init__(logging.WARNING)
        self.show = show

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.show(record.getMessage(), None, "", 0)
        except Exception:  # pragma: no cover - never let a log line end the command
            self.handleError(record)


if __name__ == "__main__":  # pragma: no cover
    console_main()
