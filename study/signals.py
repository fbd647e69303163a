"""SIGTERM (sent by `timeout`, `docker stop`, Slurm) ends a command as Ctrl-C does: one home for
the handlers that make it so.

- `terminate_as_interrupt()`: the CLI's, for a whole command: SIGTERM raises KeyboardInterrupt,
  and the CLI says how to resume.
- `stop_requested_on_sigterm()`: the study driver's, while trials run: SIGTERM only asks for a
  stop, which `StopRequest.check()` raises as KeyboardInterrupt at the next point between two
  recordings, never in the middle of a database write.
- `keep_sigterm_handler()`: around a call that installs a SIGTERM handler of its own (`ray.init`
  puts its crash handler in place), so that ours is back afterwards.

A forked child (a data-preparation pool worker, which its pool stops with SIGTERM) inherits these
handlers; there they die of the signal quietly, as without them.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_OWNER: list[int] = []  # the process that called `terminate_as_interrupt`


def terminate_as_interrupt() -> None:
    """From now on SIGTERM raises KeyboardInterrupt in this process (`raise_interrupt`)."""
    _OWNER[:] = [os.getpid()]
    signal.signal(signal.SIGTERM, raise_interrupt)


def raise_interrupt(signum, frame) -> None:
    """The SIGTERM handler of `terminate_as_interrupt`."""
    if _OWNER and _die_if_forked(_OWNER[0]):
        return
    raise KeyboardInterrupt


class StopRequest:
    """Whether SIGTERM asked the study to stop; `check` is called where stopping is safe."""

    def __init__(self) -> None:
        self.requested = False

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt


@contextmanager
def stop_requested_on_sigterm() -> Iterator[StopRequest]:
    """While the block runs, SIGTERM sets `requested` on the request it yields instead of
    interrupting; the previous handler is back on leaving. Off the main thread (where Python
    cannot install handlers) the request is never set."""
    stop, owner = StopRequest(), os.getpid()

    def request(signum, frame) -> None:
        if not _die_if_forked(owner):
            stop.requested = True

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, request)
    try:
        yield stop
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


@contextmanager
def keep_sigterm_handler() -> Iterator[None]:
    """Put this process's Python SIGTERM handler back after the block, whatever the block
    installed in its place."""
    handler = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if callable(handler) and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)


def _die_if_forked(owner_pid: int) -> bool:
    """For a SIGTERM handler installed by process `owner_pid`: in a forked child, die of the
    signal as without the handler. Returns False in the owner itself."""
    if os.getpid() == owner_pid:
        return False
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
    return True
