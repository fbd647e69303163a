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
"""

from __future__ import annotations

import json
import math
import os
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
        ("started_at", pa.string()),
        ("finished_at", pa.string()),
        ("code_version", pa.string()),
        ("metric", pa.string()),
        ("data_source", pa.string()),
        ("stand_in", pa.bool_()),
        ("test_extra", pa.string()),  # JSON object of extra test metrics at the best epoch
    ]
)
COLUMNS = tuple(SCHEMA.names)
KEY = ("task", "variant", "trial")
TRIALS_FILE = "trials.parquet"
EPOCHS_DIR = "epochs.parquet"


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


def _read(path: Path, schema: pa.Schema) -> pa.Table:
    try:
        return pq.read_table(path, schema=schema, page_checksum_verification=True)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise DamagedFile(path, e) from e


def read_trials(study_dir: Path) -> pd.DataFrame:
    """The table (empty if there is none yet); `DamagedFile` if it does not read back."""
    path = Path(study_dir) / TRIALS_FILE
    if not path.is_file():
        return empty()
    return _read(path, SCHEMA).to_pandas()


def _atomic_write(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp, write_page_checksum=True)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    # make the rename itself durable before Optuna's tell (committed) can outlive it
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_row(**values: Any) -> dict[str, Any]:
    """A row with exactly the table's columns (missing ones are an error: the report relies on them)."""
    missing = [c for c in COLUMNS if c not in values]
    extra = [k for k in values if k not in COLUMNS]
    if missing or extra:
        raise ValueError(f"result row: missing columns {missing}, unknown columns {extra}")
    row = dict(values)
    if isinstance(row["test_extra"], dict):
        row["test_extra"] = json.dumps(row["test_extra"], sort_keys=True)
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
    return _read(path, EPOCH_SCHEMA).to_pandas()


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
