"""The ``napari-calc`` command line.

Each sub-command lives in its own module of this package with a
``register(subparsers)`` function. User mistakes end as one line on stderr
(``napari-calc: <file>: <reason>``) and a non-zero exit status, never a
traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys

from ..core.errors import NapariCalcError, printable

#: Sub-command modules, in the order ``--help`` lists them.
SUBCOMMANDS = ("detect", "demo", "view", "review", "phantom", "evaluate")


def error_line(msg) -> None:
    """Print one error line on stderr (a newline in a file name does not
    split it: see :func:`~napari_calc.core.errors.printable`)."""
    print(f"napari-calc: {printable(msg)}", file=sys.stderr)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other error.

    argparse prints the whole usage block before its message; for a mistyped
    value the block hides the one line that says what is wrong. Sub-command
    parsers are made from the same class.
    """

    def error(self, message):
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


class Terminated(KeyboardInterrupt):
    """A stop request by signal (SIGTERM from ``kill``, ``timeout``, SLURM or
    Kubernetes; SIGHUP when the terminal closes), handled like Ctrl-C: the
    run stops cleanly and says so. It is a :class:`KeyboardInterrupt`, so
    every clean-up that Ctrl-C gets (workers stopped, run manifest marked
    interrupted) runs for it too."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


#: The signals the command line turns into :class:`Terminated`.
STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))


@contextlib.contextmanager
def stop_signals_as_interrupt():
    """Within the block, :data:`STOP_SIGNALS` raise :class:`Terminated` in the
    main thread (a signal the process ignores, e.g. SIGHUP under ``nohup``,
    stays ignored). The previous handlers come back at the end."""

    def handler(signum, frame):
        raise Terminated(signum)

    old = {}
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) is signal.SIG_IGN:
            continue
        try:
            old[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: leave the signals alone
            break
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(
        prog="napari-calc",
        description="Detect, review and export breast microcalcifications.",
    )
    parser.add_argument("--version", action="version", version=f"napari-calc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except ImportError as exc:  # a sub-command whose module is missing
            if getattr(exc, "name", "") == f"{__name__}.{name}":
                continue
            raise
        mod.register(sub)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``napari-calc`` script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # `view` and `review` run napari's event loop, which has its own idea of stopping
    stops = contextlib.nullcontext() if args.command in ("view", "review") else stop_signals_as_interrupt()
    try:
        with stops:
            return int(args.func(args) or 0)
    except NapariCalcError as exc:
        error_line(exc)
        return 1
    except KeyboardInterrupt as exc:
        by = f" by {exc.name}" if isinstance(exc, Terminated) else ""
        progress = getattr(exc, "progress", None)
        error_line(f"interrupted{by}" + (f"; {progress}" if progress else ""))
        return 128 + exc.signum if isinstance(exc, Terminated) else 130
    except BrokenPipeError:  # e.g. `napari-calc demo | head`: the reader left
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
