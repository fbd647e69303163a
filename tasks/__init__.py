"""What variants are compared on: the three tasks of Greff et al. 2017 (paper section II/IV), and
two generated synthetic tasks (adding, counting).

`TASKS` maps a task name to its frozen `Task` spec; the built-ins are registered by `register`,
as a user's plug-in task is (`ORIGINS` says where each came from: "built-in" or the plug-in's
import path; `tasks.contract` checks a task against the contract). `prepare` and `load` manage
the prepared data (a per-user cache by default). This package never imports `variants` or `study`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tasks.adding import TASK as _ADDING
from tasks.base import (
    SOURCES,
    SPLITS,
    Batch,
    DataError,
    SequenceSet,
    Splits,
    Task,
    dataset_key,
    default_data_dir,
    list_prepared,
    load_prepared,
    prepared_dir,
    read_meta,
    remove_prepared,
    save_prepared,
)
from tasks.counting import TASK as _COUNTING
from tasks.iam_online import TASK as _IAM
from tasks.jsb_chorales import TASK as _JSB
from tasks.timit import TASK as _TIMIT

log = logging.getLogger(__name__)
TASKS: dict[str, Task] = {}
ORIGINS: dict[str, str] = {}
PAPER_TASKS = ("timit", "iam_online", "jsb_chorales")  # the three tasks of Greff et al. 2017


def register(task: Task, origin: str = "built-in") -> Task:
    """Add `task` under its name. The same task again is a no-op (a reloaded plug-in replaces
    its own entry); another task under a taken name is refused."""
    if not isinstance(task, Task):
        raise TypeError(f"{origin}: expected a tasks.Task, got {type(task).__name__}")
    old = ORIGINS.get(task.name)
    if old is not None and old != origin:
        raise ValueError(
            f"task name {task.name!r} is taken ({old}); name the task from {origin} differently"
        )
    TASKS[task.name] = task
    ORIGINS[task.name] = origin
    return task


for _task in (_TIMIT, _IAM, _JSB, _ADDING, _COUNTING):
    register(_task)

__all__ = [
    "ORIGINS",
    "PAPER_TASKS",
    "SOURCES",
    "SPLITS",
    "TASKS",
    "Batch",
    "DataError",
    "SequenceSet",
    "Splits",
    "Task",
    "default_data_dir",
    "get",
    "info",
    "load",
    "prepare",
    "register",
]


def get(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None


def _check_source(task: Task, source: str | None) -> str:
    source = source or task.default_source
    if source not in task.sources:
        raise ValueError(
            f"task {task.name!r} has no data source {source!r}; valid: {', '.join(task.sources)}"
        )
    return source


def prepare(
    name: str,
    source: str | None = None,
    path: Path | str | None = None,
    size: int | None = None,
    seed: int = 0,
    data_dir: Path | str | None = None,
    progress: bool = True,
    force: bool = False,
) -> tuple[Path, dict]:
    """Prepare a task's data once (generated or read from `path`) and return its folder and meta."""
    task = get(name)
    source = _check_source(task, source)
    if size is not None and size < 1:
        raise ValueError(f"--size must be a positive number of sequences, got {size}")
    if path is not None:
        path = Path(path).expanduser()
        if not path.exists():
            raise DataError(f"{name}: --path {path} does not exist")
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    out = prepared_dir(data_dir, name, dataset_key(source, size, seed))
    if path is None and not force and (out / "meta.json").is_file():
        meta = read_meta(out)
        old = stale_version(task, meta)
        if old is None:
            return out, meta
        log.info(
            "%s: prepared data in %s is of an older version (%s, now %s); preparing again",
            name,
            out,
            old,
            task.data_version,
        )
    remove_prepared(out)
    out.mkdir(parents=True, exist_ok=True)
    splits, extra = task.prepare(out, source, path, size, seed, progress)
    meta = {
        "task": name,
        "source": source,
        "stand_in": source in task.stand_in,
        "path": str(path) if path else None,
        "size": size,
        "seed": seed,
        "input_size": task.input_size,
        "output_size": task.output_size,
        "data_version": task.data_version,
        **extra,
    }
    return out, save_prepared(out, splits, meta)


def find_prepared(
    name: str,
    source: str | None = None,
    size: int | None = None,
    seed: int = 0,
    data_dir: Path | str | None = None,
) -> Path:
    """The prepared folder a study with these settings uses; with no source, the newest prepared."""
    task = get(name)
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    if source is None and size is None:
        found = list_prepared(data_dir, name)
        if found:
            return found[0]
        source = task.default_source
    out = prepared_dir(data_dir, name, dataset_key(_check_source(task, source), size, seed))
    if not (out / "meta.json").is_file():
        raise DataError(
            f"{name}: no prepared data at {out}; run `odyssey data prepare {name}`"
            + (f" --source {source}" if source else "")
            + (f" --size {size}" if size else "")
        )
    return out


def load(name: str, **where) -> tuple[Splits, dict]:
    """Load prepared splits (see `find_prepared` for the keyword arguments). Data prepared by an
    older version of the task's generator or features is refused, never silently used."""
    folder = find_prepared(name, **where)
    old = stale_version(get(name), read_meta(folder))
    if old is not None:
        raise DataError(
            f"{name}: the data in {folder} was prepared by an older version of the task "
            f"(data version {old}, now {get(name).data_version}); prepare it again with "
            f"`odyssey data prepare {name}` and the same options"
        )
    return load_prepared(folder)


def stale_version(task: Task, meta: dict) -> int | None:
    """The data version of prepared data (its meta) when it is not the task's own, else None."""
    version = int(meta.get("data_version", 1))
    return None if version == task.data_version else version


def info(name: str, **where) -> dict:
    """`source`, `input_size`, `output_size`, `splits: {split: {sequences, frames}}` and the rest."""
    out = find_prepared(name, **where)
    return {**read_meta(out), "dir": str(out)}
