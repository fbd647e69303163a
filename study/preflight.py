"""Checks before a study writes anything, and what a full disk looks like to the user.

- `check_paths`: every path and name a run is given (`--study`, `--results`, `--data-dir`, the
  spec file, data paths, store URLs) is UTF-8; one line naming the flag and the byte otherwise,
  before anything is created or started (Ray and SQLite need UTF-8 paths).
- `check_results_dir`: the study folder can be written (not a file, not under one, not read-only,
  a mount with space left); checked without writing before the log file is opened in it.
- `check_blocked`: nothing stands where one of the study's files or folders belongs (a folder
  named `trials.parquet`): one line naming it; nothing is moved.
- `writing(path)`: a write that fails because the disk is full becomes `DiskFull`, one line
  naming the file and saying that the same command resumes the study once there is space.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from study import results
from study.console import UserError

# the flag that sets each top-level setting (others are named by their dotted key)
FLAGS = {
    "name": "--study",
    "results": "--results",
    "data_dir": "--data-dir",
    "storage": "--storage",
    "tracking_uri": "--tracking-uri",
    "ray_address": "--ray-address",
}


def undecodable(text: str) -> str | None:
    """None if `text` (a path from the OS) is valid UTF-8, else where it is not ("byte 0xff at
    position 7"). Python keeps undecodable path bytes as lone surrogates."""
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError as e:
        raw = text[e.start].encode("utf-8", "surrogateescape")
        return f"byte 0x{raw[0]:02x} at position {e.start}"


def check_results_dir(study_dir: Path, option: str = "--results", create: bool = True) -> None:
    """Create the study folder (`create`), or say in one line why it cannot be used: a path that
    is not UTF-8, a file on the way, a read-only folder or mount, a full disk. Without `create`
    nothing is written: the check that runs before the log file is opened in the folder."""
    where = undecodable(str(study_dir))
    if where:
        raise ValueError(
            f"{option} path {str(study_dir)!r} is not UTF-8 ({where}); the study's databases "
            f"need UTF-8 paths: rename the folder or give another one with {option}"
        )
    existing = study_dir
    for parent in (study_dir, *study_dir.parents):
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(
                    f"{option}: {parent} is a file, not a folder; give a folder with {option}"
                )
            existing = parent
            break
    why = _unwritable(existing)
    if why:
        raise ValueError(
            f"{option}: the study folder {study_dir} is read-only ({why}); give a writable folder "
            f"with {option}, or make it writable"
            if existing == study_dir
            else f"{option}: cannot create the study folder {study_dir}: {existing} is read-only "
            f"({why}); give a writable folder with {option}"
        )
    full = _no_space(existing)
    if full:
        raise ValueError(
            f"{option}: no space left on the device holding {existing} ({full}); free some space "
            f"and run the same command again (a study resumes where it stopped)"
        )
    if not create:
        return
    try:
        study_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(
            f"{option}: cannot create the study folder {study_dir} ({e.strerror}); "
            f"give a writable folder with {option}"
        ) from None


def _unwritable(folder: Path) -> str | None:
    """Why files cannot be created in `folder` (its mount is read-only, which refuses root too;
    its permissions), or None."""
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "Read-only file system"
    except OSError:
        pass
    return None if os.access(folder, os.W_OK | os.X_OK) else "Permission denied"


def _no_space(folder: Path) -> str | None:
    """Why nothing fits on the device holding `folder` (no free block or inode), or None."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    if st.f_blocks and st.f_bavail == 0:
        return "0 bytes free"
    if st.f_files and st.f_favail == 0:
        return "no free inodes"
    return None


def check_paths(settings: Mapping[str, Any], spec: str | None = None) -> None:
    """One line naming the flag (or setting) and the byte when a path or name given to a run
    is not UTF-8 (`settings`: the config as plain data; `spec`: the PRESET|SPEC.yaml argument)."""
    if spec is not None:
        where = undecodable(spec)
        if where:
            raise ValueError(
                f"the spec file name {spec!r} is not UTF-8 ({where}); rename the file (the "
                f"study's name, folder and databases need UTF-8 names)"
            )

    def walk(value: Any, key: str) -> None:
        if isinstance(value, str):
            where = undecodable(value)
            if where:
                flag = FLAGS.get(key, f"setting {key}")
                raise ValueError(
                    f"{flag} {value!r} is not UTF-8 ({where}); the study's folders, databases and "
                    f"workers need UTF-8 names: rename it or give another one with {flag}"
                )
        elif isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v, key)

    walk(settings, "")


# what belongs at each path of a study folder: a regular file, or a folder
FILES = (results.TRIALS_FILE, results.OPTUNA_DB, results.MLFLOW_DB, results.CONFIG_FILE)
FILES += (results.DATA_FILE, results.LOCK_FILE, results.RUN_LOG)
FOLDERS = (results.EPOCHS_DIR,)


def check_blocked(study_dir: Path) -> None:
    """A one-line `results.BlockedPath` when a folder stands where one of the study's files
    belongs (or a file where its epochs folder belongs); nothing is moved or changed."""
    for name in FILES:
        path = study_dir / name
        if (path.exists() or path.is_symlink()) and not path.is_file():
            what = "a folder" if path.is_dir() else "not a regular file"
            raise results.BlockedPath(path, what, name)
    for name in FOLDERS:
        path = study_dir / name
        if path.exists() and not path.is_dir():
            raise results.BlockedPath(path, "a file", f"{name}/ folder")


class DiskFull(UserError):
    """A write failed because the device holding the study is full."""

    def __init__(self, path: Path | str | None) -> None:
        what = f"could not write {path}" if path else "a write failed"
        super().__init__(
            f"no space left on the device: {what}; nothing recorded was lost, and the study "
            f"resumes with the same command once there is space"
        )


def _chain(e: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo = [e]
    while todo:
        x = todo.pop()
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        yield x
        todo += [x.__cause__, x.__context__, getattr(x, "orig", None)]


def disk_full(e: BaseException) -> bool:
    """Whether `e` (or what caused it: an OSError, SQLite's SQLITE_FULL behind SQLAlchemy or
    MLflow) says the disk is full."""
    for x in _chain(e):
        if isinstance(x, OSError) and x.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(x)
        if "database or disk is full" in text or "No space left on device" in text:
            return True
    return False


def full_path(e: BaseException) -> str | None:
    """The file an OSError in `e`'s chain names, if any."""
    return next((x.filename for x in _chain(e) if isinstance(x, OSError) and x.filename), None)


@contextmanager
def writing(path: Path | str) -> Iterator[None]:
    """Run the block; a disk-full failure in it becomes `DiskFull` naming `path`."""
    try:
        yield
    except DiskFull:
        raise
    except Exception as e:
        if disk_full(e):
            raise DiskFull(path) from e
        raise


def short_error(e: BaseException) -> str:
    """The first line of an error, without SQLAlchemy's SQL dump: the driver's own message."""
    orig = getattr(e, "orig", None)
    text = str(orig if orig is not None else e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    return first.split(" [SQL:")[0]
