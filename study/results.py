"""The results table: `<results>/<study>/trials.parquet`, one row per finished trial.

This table is the study's source of truth: the Optuna record and the MLflow runs are reconciled
from it on every start, and every report reads only it. It is rewritten atomically (temp file +
`os.replace`) after each finished trial, so a crash leaves either the old or the new table; its
pages carry CRC checksums, so a file damaged later (a torn copy, a bad disk) reads as
`DamagedFile`, never as wrong numbers. A damaged or missing table is rebuilt from the other
stores (study.repair).
Per-epoch history goes to `epochs.parquet/`, a folder of one part file per trial in tidy long form
(task, variant, trial, epoch, name, value; readable as one table with `pandas.read_parquet`),
written before the trial's row.

This module owns the whole study folder's contract (`<results>/<study>/`): the names of its files,
the schemas of the tables, and the reading and writing of `data.json` (what each task trains on,
and the names the report shows: variant order and titles, task titles, metrics and directions).
The report (`analysis/`) reads the folder through it alone, so it imports nothing heavier than
pandas and pyarrow: no torch, Ray, Optuna or MLflow.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema(
    [
        ("study", pa.string()),
        ("task", pa.string()),
        ("variant", pa.string()),
        ("trial", pa.int64()),
        ("seed", pa.int64()),
        ("status", pa.string()),  # 'complete' | 'failed'
        ("error", pa.string()),
        ("hp_hidden_size", pa.int64()),
        ("hp_learning_rate", pa.float64()),
        ("hp_momentum", pa.float64()),
        ("hp_input_noise", pa.float64()),
        ("n_params", pa.int64()),
        ("epochs", pa.int64()),
        ("best_epoch", pa.int64()),
        ("val_metric", pa.float64()),
        ("test_metric", pa.float64()),
        ("train_loss", pa.float64()),
        ("wall_s", pa.float64()),
        ("device", pa.string()),
        ("numerics", pa.string()),  # the implementation that trained it (variants.fast.numerics)
        ("started_at", pa.string()),
        ("finished_at", pa.string()),
        ("code_version", pa.string()),
        ("metric", pa.string()),
        ("data_source", pa.string()),
        ("stand_in", pa.bool_()),
        ("test_extra", pa.string()),  # JSON object of extra test metrics at the best epoch
        # JSON object of the study's own search dimensions (`space.extra`), null before them
        ("hp_extra", pa.string()),
    ]
)
COLUMNS = tuple(SCHEMA.names)
UNKNOWN = "unknown"  # `numerics` of a row recorded before the column existed
KEY = ("task", "variant", "trial")
TRIALS_FILE = "trials.parquet"  # one row per finished trial (SCHEMA)
EPOCHS_DIR = "epochs.parquet"  # per-epoch history, one part file per trial (EPOCH_SCHEMA)
CONFIG_FILE = "config.yaml"  # the resolved study config (study.config.dump)
DATA_FILE = "data.json"  # the data each task trains on, and names for the report (DataSummary)
LEGACY_DATA_VERSIONS = "data_versions.json"  # what studies before data.json recorded
RUN_LOG = "odyssey.log"  # what a running study prints besides our own lines (study.console)
RERUNS_FILE = "reruns.parquet"  # recorded trials retrained and compared (`odyssey verify`)
LOCK_FILE = ".lock"  # held by the running driver; holds its pid (study.setup.study_lock)
OPTUNA_DB = "optuna.db"  # the Optuna studies, unless the config names another storage
MLFLOW_DB = "mlflow.db"  # the MLflow runs, unless the config names another tracking URI


def empty() -> pd.DataFrame:
    return SCHEMA.empty_table().to_pandas()


class DamagedFile(ValueError):
    """A results file that exists but does not read back (truncated, overwritten, bad checksum)."""

    def __init__(self, path: Path, error: Exception) -> None:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        first = first.split("': ", 1)[-1].split(". ")[0]  # Arrow repeats the path, then advises
        self.path, self.what = Path(path), f"{path} is damaged ({first})"
        study = self.path.parent.parent if self.path.parent.name == EPOCHS_DIR else self.path.parent
        super().__init__(
            f"{self.what}; `odyssey doctor {study.name} --results {study.parent}` rebuilds it "
            f"from the study's other stores (so does the next `odyssey run` of the study)"
        )


# The columns every results table has held since the first version: a file without one of them
# is not a results table (an epochs part file copied over it is a valid Parquet file). A column
# added to SCHEMA later may be missing from an older table: it reads back empty.
REQUIRED = ("study", "task", "variant", "trial", "seed", "status", "error", "hp_hidden_size")
REQUIRED += ("hp_learning_rate", "hp_momentum", "hp_input_noise", "n_params", "epochs")
REQUIRED += ("best_epoch", "val_metric", "test_metric", "train_loss", "wall_s", "device")
REQUIRED += ("started_at", "finished_at", "code_version", "metric", "data_source", "stand_in")
REQUIRED += ("test_extra",)


class BlockedPath(ValueError):
    """Something else (a folder, a file) stands where a results file or folder belongs."""

    def __init__(self, path: Path, is_what: str, belongs: str) -> None:
        self.path = Path(path)
        super().__init__(
            f"{path} is {is_what}, where the study's {belongs} belongs; move it out of the way "
            f"(nothing else was changed) and run the same command again"
        )


def schema_problem(found: pa.Schema, schema: pa.Schema, required: tuple[str, ...]) -> str | None:
    """Why a file's schema is not `schema` (a `required` column missing, a column of another
    type), or None."""
    have = {f.name: f.type for f in found}
    missing = [c for c in required if c not in have]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        return f"not a table of this kind: it lacks the columns {', '.join(missing[:3])}{more}"
    for f in schema:
        got = have.get(f.name)
        if got is not None and not pa.types.is_null(got) and not _castable(got, f.type):
            return f"not a table of this kind: its column {f.name} is {got}, not {f.type}"
    return None


def _kind(t: pa.DataType) -> str:
    """The family of a type that reading with a schema converts within (string and
    large_string, int32 and int64, ...)."""
    if pa.types.is_dictionary(t):
        return _kind(t.value_type)
    for kind in ("string", "large_string", "string_view"):
        if getattr(pa.types, f"is_{kind}")(t):
            return "string"
    for kind in ("integer", "floating", "boolean"):
        if getattr(pa.types, f"is_{kind}")(t):
            return kind
    return str(t)


def _castable(found: pa.DataType, want: pa.DataType) -> bool:
    a, b = _kind(found), _kind(want)
    return a == b or (a == "integer" and b == "floating")


def _read(path: Path, schema: pa.Schema | None, required: tuple[str, ...] = ()) -> pa.Table:
    """The table at `path` (a file, or a folder of part files). With `schema`, every file must
    hold its columns with its types: a valid Parquet file of another table (an epochs part file
    copied over the results table) is damage too, never read as rows of nulls."""
    if path.exists() and not path.is_file() and not path.is_dir():
        raise BlockedPath(path, "not a regular file", "table")
    try:
        if schema is not None:
            files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
            for f in files:
                problem = schema_problem(pq.read_schema(f), schema, required)
                if problem:
                    raise DamagedFile(f, ValueError(problem))
        return pq.read_table(path, schema=schema, page_checksum_verification=True)
    except (pa.ArrowException, OSError, ValueError) as e:
        if isinstance(e, DamagedFile | BlockedPath):
            raise
        raise DamagedFile(path, e) from e


def read_trials(study_dir: Path, strict: bool = True) -> pd.DataFrame:
    """The table (empty if there is none yet); `DamagedFile` if it does not read back. With
    `strict=False`, the columns the file has, as they are (a table of an older version, or one
    written by other tools): the report reads it so and fills in what is missing."""
    path = Path(study_dir) / TRIALS_FILE
    if path.is_dir():
        raise BlockedPath(path, "a folder", "results table")
    if not path.is_file():
        return empty()
    df = _read(path, SCHEMA if strict else None, REQUIRED).to_pandas()
    if strict:  # a table from before the column: its trials' implementation is not known
        df["numerics"] = df["numerics"].fillna(UNKNOWN)
    return df


def _atomic_write(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp, write_page_checksum=True)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    except OSError as e:  # a full disk: no half-written temp file left, the error names `path`
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, f"could not write {path}: {e}", str(path)) from e
    os.replace(tmp, path)
    # make the rename itself durable before Optuna's tell (committed) can outlive it
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_row(**values: Any) -> dict[str, Any]:
    """A row with exactly the table's columns (missing ones are an error: the report relies on them;
    `numerics`, which rows before it lack, is "unknown" when missing, and `hp_extra`, a study's
    own search dimensions, empty)."""
    if values.get("numerics") is None:
        values["numerics"] = UNKNOWN
    if values.get("hp_extra") is None:
        values["hp_extra"] = {}
    missing = [c for c in COLUMNS if c not in values]
    extra = [k for k in values if k not in COLUMNS]
    if missing or extra:
        raise ValueError(f"result row: missing columns {missing}, unknown columns {extra}")
    row = dict(values)
    for k in ("test_extra", "hp_extra"):
        if isinstance(row[k], dict):
            row[k] = json.dumps(row[k], sort_keys=True)
    for k in ("val_metric", "test_metric", "train_loss"):
        v = row[k]
        row[k] = math.nan if v is None else float(v)
    return row


def append_trial(study_dir: Path, row: dict[str, Any]) -> pd.DataFrame:
    """Add (or replace, by task/variant/trial) one row and rewrite the table atomically."""
    df = read_trials(study_dir)
    key = tuple(row[k] for k in KEY)
    keep = ~((df["task"] == key[0]) & (df["variant"] == key[1]) & (df["trial"] == key[2]))
    new = pd.DataFrame([row], columns=list(COLUMNS))
    df = pd.concat([df[keep], new], ignore_index=True) if keep.any() else new
    table = pa.Table.from_pandas(df, schema=SCHEMA, preserve_index=False)
    _atomic_write(table, Path(study_dir) / TRIALS_FILE)
    return table.to_pandas()


def add_trials(study_dir: Path, rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Add many rows (by task/variant/trial, replacing any) in one atomic rewrite (a rebuild)."""
    df = read_trials(study_dir)
    new = pd.DataFrame(rows, columns=list(COLUMNS))
    keys = set(zip(new["task"], new["variant"], new["trial"], strict=True))
    keep = [k not in keys for k in zip(df["task"], df["variant"], df["trial"], strict=True)]
    df = pd.concat([df[keep], new], ignore_index=True) if any(keep) else new
    df = df.sort_values(list(KEY), kind="stable", ignore_index=True)
    table = pa.Table.from_pandas(df, schema=SCHEMA, preserve_index=False)
    _atomic_write(table, Path(study_dir) / TRIALS_FILE)
    return table.to_pandas()


EPOCH_SCHEMA = pa.schema(
    [
        ("task", pa.string()),
        ("variant", pa.string()),
        ("trial", pa.int64()),
        ("epoch", pa.int64()),
        ("name", pa.string()),  # train/loss, val/<metric>, test/<metric>, time_s, ...
        ("value", pa.float64()),
    ]
)


def write_epochs(
    study_dir: Path, task: str, variant: str, trial: int, history: list[dict[str, Any]]
) -> None:
    """One part file of a trial's per-epoch history in tidy long form (EPOCH_SCHEMA), so the
    folder reads as one table (`pandas.read_parquet(".../epochs.parquet")`) across tasks."""
    if not history:
        return
    folder = Path(study_dir) / EPOCHS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "task": task,
            "variant": variant,
            "trial": trial,
            "epoch": int(rec["epoch"]),
            "name": name,
            "value": float(value),
        }
        for rec in history
        for name, value in rec.items()
        if name != "epoch"
    ]
    table = pa.Table.from_pylist(rows, schema=EPOCH_SCHEMA)
    _atomic_write(table, folder / f"{task}__{variant}__{trial:05d}.parquet")


def read_epochs(
    study_dir: Path, task: str | None = None, variant: str | None = None, trial: int | None = None
) -> pd.DataFrame:
    """Per-epoch history (long form: task, variant, trial, epoch, name, value); all of it, or
    one trial's."""
    folder = Path(study_dir) / EPOCHS_DIR
    if trial is not None:
        path = folder / f"{task}__{variant}__{trial:05d}.parquet"
    else:
        path = folder
    if not path.exists() or (path.is_dir() and not any(path.glob("*.parquet"))):
        return EPOCH_SCHEMA.empty_table().to_pandas()
    return _read(path, EPOCH_SCHEMA, tuple(EPOCH_SCHEMA.names)).to_pandas()


def read_part(path: Path) -> pd.DataFrame:
    """One part file of `epochs.parquet/` (long form); `DamagedFile` if it is not one."""
    return _read(path, EPOCH_SCHEMA, tuple(EPOCH_SCHEMA.names)).to_pandas()


def epochs_path(study_dir: Path, task: str, variant: str, trial: int) -> Path:
    return Path(study_dir) / EPOCHS_DIR / f"{task}__{variant}__{trial:05d}.parquet"


def history_records(epochs: pd.DataFrame) -> list[dict[str, Any]]:
    """Long per-epoch rows of one trial -> [{"epoch": e, name: value, ...}] as reported."""
    out = []
    for epoch, sub in epochs.groupby("epoch", sort=True):
        out.append({"epoch": int(epoch), **dict(zip(sub["name"], sub["value"], strict=True))})
    return out


def row_to_json(row: dict[str, Any], max_chars: int | None = None) -> str:
    """A result row as JSON (what Optuna and MLflow keep of it, to rebuild the table from).
    With `max_chars`, a long error text is shortened to fit."""

    def plain(v: Any) -> Any:
        return v.item() if hasattr(v, "item") else str(v)

    values = {k: row[k] for k in COLUMNS}
    text = json.dumps(values, default=plain, sort_keys=True)
    if max_chars is not None and len(text) > max_chars and values.get("error"):
        cut = len(str(values["error"])) - (len(text) - max_chars) - 20
        values["error"] = str(values["error"])[: max(cut, 0)] + " [shortened]"
        text = json.dumps(values, default=plain, sort_keys=True)
    return text


def row_from_json(text: str) -> dict[str, Any]:
    values = json.loads(text)
    return make_row(**{k: values.get(k) for k in COLUMNS})


# --------------------------------------------------------------------------------- data.json
DATA_FORMAT = 2  # 1: {task: summary}, without variant names (studies before the report read it)
DIRECTIONS = ("minimize", "maximize")  # a task's metric direction, in Optuna's words


@dataclass(frozen=True)
class DataSummary:
    """`data.json`: what the study recorded at its start.

    `variants`: name -> title, in the registry's (the paper's) order, then the variants the study
    declares itself; the first is the baseline. Empty for a study from before format 2.
    `tasks`: name -> {title, metric, direction ('minimize' | 'maximize'), source, stand_in,
    origin, data_version, splits: {split: {sequences, frames}}, notes: [str]}; title, metric and
    direction are missing in a study from before format 2.
    `plugins`: {"variants": {name: identity}, "tasks": {name: identity}} for the plug-ins the
    study uses, identity = {path, distribution, version, sha256} (`study.plugins`); a plug-in
    task's entry in `tasks` has source "plugin" and stand_in null. Empty without plug-ins.
    """

    variants: dict[str, str] = field(default_factory=dict)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)


def read_data(study_dir: Path) -> DataSummary | None:
    """The study's `data.json` (either format), None when there is none; a ValueError naming the
    file when it does not read as one."""
    path = Path(study_dir) / DATA_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
        if not isinstance(raw, dict):
            raise ValueError(f"a JSON object was expected, found {type(raw).__name__}")
        if "format" not in raw:  # format 1: the tasks alone
            variants, tasks = {}, raw
        elif raw["format"] == DATA_FORMAT:
            variants, tasks = raw.get("variants", {}), raw.get("tasks", {})
        else:
            raise ValueError(f"format {raw['format']!r} is not one this version reads (1, 2)")
        if not isinstance(variants, dict) or not isinstance(tasks, dict):
            raise ValueError("'variants' and 'tasks' must be JSON objects")
        if not all(isinstance(s, dict) for s in tasks.values()):
            raise ValueError("each task's entry must be a JSON object")
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"{path} does not read as a study's data summary: {first}") from e
    plugins = raw.get("plugins") if "format" in raw else None
    # as written (a reader checks its shape: the report notes a malformed one)
    return DataSummary(
        {str(k): str(v) for k, v in variants.items()},
        dict(tasks),
        {} if plugins is None else plugins,
    )


def declared_title(flags: Mapping[str, Any]) -> str:
    """The title of a variant a study file declares (`{name: X, peepholes: false}`): its flags
    (a plug-in cell's: its import path and flags)."""
    kind = str(flags.get("kind", ""))
    rest = {k: v for k, v in flags.items() if k != "kind"}
    if ":" in kind:
        return f"plug-in {kind}" + "".join(f", {k}={v}" for k, v in rest.items())
    return "declared: " + ", ".join(f"{k}={v}" for k, v in flags.items())


def write_data(study_dir: Path, summary: DataSummary) -> None:
    """Write `data.json` (format 2) atomically."""
    path = Path(study_dir) / DATA_FILE
    doc = {"format": DATA_FORMAT, "variants": summary.variants, "tasks": summary.tasks}
    if summary.plugins:
        doc["plugins"] = summary.plugins
    tmp = path.with_name(f".{DATA_FILE}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
    except OSError as e:  # as _atomic_write
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, f"could not write {path}: {e}", str(path)) from e
    os.replace(tmp, path)


def read_reruns(study_dir: Path) -> pd.DataFrame:
    """The study's reruns (`odyssey verify`); empty when it has none."""
    path = Path(study_dir) / RERUNS_FILE
    return pd.read_parquet(path) if path.is_file() else pd.DataFrame()
