"""The terminal a person watches while the `odyssey` command line runs, and where the rest goes.

Logging: our own lines (loggers of our packages) go to the screen in one format. While a study
runs, everything else (Ray's and MLflow's loggers, what Ray's processes and workers print, C++
crash dumps, Python warnings) goes to the study's log file, `results/<study>/odyssey.log`
(`study.results.RUN_LOG`), with our lines, and the screen gets one summary line saying how much
went there.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


class UserError(Exception):
    """An error the user can fix; the command line prints it in one line, without a traceback."""


# logger names shown on screen
OURS = ("study", "tasks", "variants", "analysis", "benchmarks", "odyssey")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_OUR_LINE = re.compile(
    rf"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) ({'|'.join(OURS)})[.:]"
)
_SCREEN: list[TextIO] = []


def screen() -> TextIO:
    """The stream a person watches (the terminal's stderr), also while `noise_to_file` sends
    everything else printed on stderr and stdout to a log file."""
    return _SCREEN[0] if _SCREEN else sys.stderr


def is_ours(record: logging.LogRecord) -> bool:
    return record.name.split(".")[0] in OURS


def setup_logging(verbose: bool) -> None:
    """Our format on the screen; third-party loggers only from WARNING on (and all of them with
    -v). `noise_to_file` narrows the screen to our own lines."""
    root = logging.getLogger()
    for h in [h for h in root.handlers if h.get_name() == "odyssey-screen"]:
        root.removeHandler(h)  # from an earlier main() in this process (tests)
    handler = logging.StreamHandler(screen())
    handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S"))
    handler.addFilter(lambda r: verbose or is_ours(r) or r.levelno >= logging.WARNING)
    handler.set_name("odyssey-screen")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


class _LogFile(io.TextIOWrapper):
    """The log file: a write that fails (a full disk) loses that text instead of raising in
    whichever library printed it; the run's own writes fail, and say which file, instead."""

    def write(self, s: str) -> int:
        try:
            return super().write(s)
        except OSError:
            return len(s)

    def flush(self) -> None:
        try:
            super().flush()
        except OSError:
            pass


def open_log(path: Path) -> TextIO:
    """`path` opened for appending, line-buffered, as `_LogFile`; a one-line `UserError` when it
    cannot be (a folder in its place, a read-only folder)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        raw = open(path, "ab")  # noqa: SIM115 - stays open for the loggers that hold it
    except OSError as e:
        why = "a folder stands there" if path.is_dir() else (e.strerror or str(e))
        raise UserError(
            f"cannot open the study's log {path} ({why}); move it out of the way or give "
            f"another --results, then run the same command again"
        ) from None
    return _LogFile(raw, encoding="utf-8", errors="replace", line_buffering=True)


@contextmanager
def noise_to_file(path: Path) -> Iterator[None]:
    """Send third-party output to `path` (appended) while the block runs: Python's stdout and
    stderr, the process's file descriptors 1 and 2 (C++ logs of Ray's core), and third-party
    loggers. Our own log lines go to both the screen and the file. On leaving, one line on the
    screen says how many third-party lines, warnings and errors the file received."""
    logfile = open_log(path)
    start = logfile.tell()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = os.dup(1), os.dup(2)
    term = open(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115
    root = logging.getLogger()
    handler = next((h for h in root.handlers if h.get_name() == "odyssey-screen"), None)
    to_file = logging.StreamHandler(logfile)
    to_file.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S"))
    old_streams, old_filters = (sys.stdout, sys.stderr), list(handler.filters) if handler else []
    # MLflow then logs through our handlers (into the file, in our format) instead of its own
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    os.dup2(logfile.fileno(), 1)
    os.dup2(logfile.fileno(), 2)
    sys.stdout = sys.stderr = logfile
    _SCREEN[:] = [term]
    if handler is not None:
        handler.setStream(term)
        handler.filters = [is_ours]
    root.addHandler(to_file)
    try:
        yield
    finally:
        root.removeHandler(to_file)
        for stream in (sys.stdout, sys.stderr, logfile):
            try:  # the screen is restored whatever happened to the log file
                stream.flush()
            except (OSError, ValueError):
                pass
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        sys.stdout, sys.stderr = old_streams
        _SCREEN.clear()
        if handler is not None:
            handler.setStream(sys.stderr)
            handler.filters = old_filters
        term.close()
        # the file stays open: loggers set up meanwhile (Ray's) may still write to it
        lines, bad = third_party_lines(path, start) if path.is_file() else (0, 0)
        if lines:
            logging.getLogger("odyssey").info(
                "Ray, MLflow and the workers wrote %d lines to %s (warnings or errors: %d)",
                lines,
                path,
                bad,
            )


def third_party_lines(path: Path, start: int = 0) -> tuple[int, int]:
    """Lines of `path` from byte `start` that are not our own log lines, and how many of them
    look like warnings or errors."""
    with open(path, encoding="utf-8", errors="replace") as f:
        f.seek(start)
        other = [line for line in f if line.strip() and not _OUR_LINE.match(line)]
    bad = sum(bool(re.search(r"WARN|ERROR|Error|FATAL|Fatal|SIG[A-Z]+", line)) for line in other)
    return len(other), bad
