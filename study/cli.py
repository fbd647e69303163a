"""The `odyssey` command line: one entry point, one module per command group (study/commands/)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys

# module -> commands it registers, in the order `odyssey --help` lists them
COMMAND_MODULES = ("variants", "data", "run", "report", "bench", "doctor")


class UserError(Exception):
    """An error the user can fix; printed without a traceback."""


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
        importlib.import_module(f"study.commands.{name}").register(sub)
    return parser


_MAIN_PID: list[int] = []


def die_if_forked(owner_pid: int) -> bool:
    """For a SIGTERM handler installed by process `owner_pid`: in a forked child (a
    data-preparation pool worker, which its pool stops with SIGTERM), die of the signal quietly,
    as without the handler. Returns False in the owner itself."""
    if os.getpid() == owner_pid:
        return False
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
    return True


def on_terminate(signum, frame) -> None:
    """SIGTERM (sent by `timeout`, `docker stop`, Slurm) ends a command as Ctrl-C does."""
    if _MAIN_PID and die_if_forked(_MAIN_PID[0]):
        return
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _MAIN_PID[:] = [os.getpid()]
    signal.signal(signal.SIGTERM, on_terminate)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    from tasks.base import DataError  # light: numpy and torch are needed by every command anyway

    try:
        return int(args.func(args) or 0)
    except (UserError, DataError, ValueError, FileNotFoundError) as e:
        if args.verbose:
            raise
        print(f"odyssey {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # run as `python -m study.cli`: use the module's own classes (not __main__'s copies), so that
    # `except UserError` catches what the commands raise
    from study.cli import main as _main

    sys.exit(_main())
