"""The `odyssey` command line: one entry point, one module per command group (odyssey/commands/).

It sits above study, analysis and benchmarks (nothing of theirs imports it). What the screen shows
while a study runs, and the log file everything else goes to, is `study.console`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from study import preflight, signals
from study.console import UserError, screen, setup_logging

# module -> commands it registers, in the order `odyssey --help` lists them
COMMAND_MODULES = ("variants", "data", "check", "run", "report", "verify", "bench", "doctor")

__all__ = ["COMMAND_MODULES", "UserError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="odyssey",
        description="LSTM ablation studies after Greff et al., 'LSTM: A Search Space Odyssey' (2017).",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging, and full tracebacks for errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"odyssey.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signals.terminate_as_interrupt()  # SIGTERM ends the command as Ctrl-C does
    setup_logging(args.verbose)
    from tasks.base import DataError  # light: numpy and torch are needed by every command anyway

    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, so that a closed pipe is caught below and not at exit
        return code
    except BrokenPipeError:
        return _closed_pipe()
    except (UserError, DataError, ValueError, FileNotFoundError) as e:
        if args.verbose:
            raise
        print(f"odyssey {args.command}: error: {e}", file=screen())
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=screen())
        return 130
    except Exception as e:
        if args.verbose or not preflight.disk_full(e):
            raise
        print(
            f"odyssey {args.command}: error: {preflight.DiskFull(preflight.full_path(e))}",
            file=screen(),
        )
        return 2


def _closed_pipe() -> int:
    """The reader of our output went away (`odyssey variants --json | head`): stop quietly, as
    a command killed by SIGPIPE does, with nothing on stderr. What is still buffered goes to
    /dev/null, so that Python's flush at exit does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError):  # a stream without a file descriptor (a test's capture)
            pass
    os.close(devnull)
    return 1  # as rich does when its console meets a closed pipe


if __name__ == "__main__":
    # run as `python -m odyssey.cli`: use the module's own classes (not __main__'s copies)
    from odyssey.cli import main as _main

    sys.exit(_main())
