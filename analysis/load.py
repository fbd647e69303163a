"""Reading one study's results folder for the report, through the results contract
(`study.results`: file names, schemas, readers): `trials.parquet`, `epochs.parquet/`,
`config.yaml` and `data.json` only.

The report never talks to Ray, MLflow or Optuna (README, "Layout"). Rows are
normalised here (missing optional columns get explicit "unknown" values); the variant and task
orders and titles are those the study recorded (`analysis.names`), never typed by hand; names
the study does not name are kept and listed after the known ones.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from analysis.names import Names, study_names
from study import results

log = logging.getLogger(__name__)

EPOCH_COLUMNS = tuple(results.EPOCH_SCHEMA.names)  # task, variant, trial, epoch, name, value

# columns the report cannot do without
REQUIRED = ("task", "variant", "status", "val_metric", "test_metric")
# every other column of the table (results.COLUMNS) and the value a missing one gets
DEFAULTS: dict[str, Any] = {
    "study": "",
    "trial": -1,
    "seed": -1,
    "error": "",
    "hp_hidden_size": np.nan,
    "hp_learning_rate": np.nan,
    "hp_momentum": np.nan,
    "hp_input_noise": np.nan,
    "n_params": np.nan,
    "epochs": np.nan,
    "best_epoch": np.nan,
    "train_loss": np.nan,
    "wall_s": np.nan,
    "device": "unknown",
    "numerics": "unknown",
    "started_at": "",
    "finished_at": "",
    "code_version": "unknown",
    "metric": "",
    "data_source": "unknown",
    "stand_in": pd.NA,
    "test_extra": "{}",
    "hp_extra": "{}",
}


@dataclass(frozen=True)
class StudyResults:
    """What the report is built from; `trials` holds every row (complete, failed, anything)."""

    study: str
    folder: Path
    trials: pd.DataFrame
    config: dict[str, Any]
    config_text: str
    variants: list[str]  # the study's, in the recorded order, then names it does not name
    tasks: list[str]
    baseline: str  # the recorded order's first variant (V)
    names: Names  # titles of variants and tasks, metrics and their directions
    notes: list[str] = field(default_factory=list)  # problems found while reading
    data: dict[str, dict] = field(default_factory=dict)  # data.json: task -> data summary
    epochs: pd.DataFrame = field(  # per-epoch history, long form (EPOCH_COLUMNS)
        default_factory=lambda: pd.DataFrame(columns=list(EPOCH_COLUMNS))
    )
    # data.json's "plugins": {"variants": {name: {path, distribution, version, sha256}},
    # "tasks": {...}}; both empty for a study without plug-ins (or from before they were recorded)
    plugins: dict[str, dict[str, dict]] = field(
        default_factory=lambda: {"variants": {}, "tasks": {}}
    )
    reruns: pd.DataFrame = field(default_factory=pd.DataFrame)  # `odyssey verify`'s comparisons


def ordered(names: set[str], registry: list[str]) -> tuple[list[str], list[str]]:
    """`names` in registry order, then the unknown ones sorted; also returns the unknown ones."""
    known = [n for n in registry if n in names]
    unknown = sorted(n for n in names if n not in registry)
    return known + unknown, unknown


def normalise(trials: pd.DataFrame) -> pd.DataFrame:
    """Fill optional columns, coerce types; raises ValueError naming missing required columns."""
    missing = [c for c in REQUIRED if c not in trials.columns]
    if missing:
        raise ValueError(
            f"results table lacks column(s) {', '.join(missing)}; has: {', '.join(trials.columns)}"
        )
    out = trials.copy()
    for col, default in DEFAULTS.items():
        if col not in out.columns:
            out[col] = default
    for col in (
        "val_metric",
        "test_metric",
        "wall_s",
        "n_params",
        "hp_hidden_size",
        "hp_learning_rate",
        "hp_momentum",
        "hp_input_noise",
    ):
        out[col] = pd.to_numeric(out[col], errors="coerce").astype(float)
    for col in ("task", "variant", "status", "device", "code_version", "metric", "data_source"):
        out[col] = out[col].astype("string").fillna("unknown" if col != "status" else "")
    out["error"] = out["error"].astype("string").fillna("")
    out["stand_in"] = out["stand_in"].astype("boolean")
    return with_extra_columns(out).reset_index(drop=True)


def with_extra_columns(trials: pd.DataFrame) -> pd.DataFrame:
    """The study's own search dimensions (`hp_extra`, a JSON object per row) as `hp_<name>`
    columns (numbers where they are numbers), beside the paper's four."""
    parsed = []
    for text in trials["hp_extra"].astype("string").fillna("{}"):
        try:
            value = json.loads(text)
        except ValueError:
            value = {}
        parsed.append(value if isinstance(value, dict) else {})
    names = sorted(
        {k for d in parsed for k in d} - {c[3:] for c in trials.columns if c.startswith("hp_")}
    )
    out = trials.copy()
    for name in names:
        column = pd.Series([d.get(name) for d in parsed], index=trials.index)
        numeric = pd.to_numeric(column, errors="coerce")
        out[f"hp_{name}"] = numeric if numeric.notna().sum() == column.notna().sum() else column
    return out


def read_results(study: str, results_dir: Path | str = Path("results")) -> StudyResults:
    """Read `<results_dir>/<study>/`; a folder without a table yet gives an empty table."""
    results_dir = Path(results_dir)
    folder = results_dir / study
    if not folder.is_dir():
        known = (
            sorted(p.name for p in results_dir.iterdir() if p.is_dir())
            if results_dir.is_dir()
            else []
        )
        raise FileNotFoundError(
            f"no study {study!r} under {results_dir}/; known studies: {', '.join(known) or 'none'}"
        )
    notes: list[str] = []
    config_text, config = _read_config(folder, notes)
    try:
        summary = results.read_data(folder)
    except ValueError as e:
        summary = None
        notes.append(f"{e}; data sizes are unknown")
    names = study_names(summary, config)

    if (folder / results.TRIALS_FILE).is_file():
        trials = normalise(results.read_trials(folder, strict=False))
    else:
        notes.append(f"no {results.TRIALS_FILE} in {folder} yet: no trial has finished")
        trials = normalise(pd.DataFrame({c: pd.Series(dtype=object) for c in REQUIRED}))

    epochs = read_epochs(folder, notes)
    variant_names = set(trials["variant"].dropna()) | set(_as_list(config.get("variants")))
    task_names = set(trials["task"].dropna()) | set(_as_list(config.get("tasks")))
    variants, unknown_v = ordered(variant_names, list(names.variants))
    tasks, unknown_t = ordered(task_names, list(names.tasks))
    plugins = read_plugins(folder, summary, notes)
    unknown_v = [v for v in unknown_v if v not in plugins["variants"]]  # named under Provenance
    if unknown_v:
        notes.append(f"variant(s) the study does not name, listed last: {', '.join(unknown_v)}")
    if unknown_t:
        notes.append(f"task(s) the study does not name, listed last: {', '.join(unknown_t)}")
    return StudyResults(
        study,
        folder,
        trials,
        config,
        config_text,
        variants,
        tasks,
        baseline=names.baseline,
        names=names,
        notes=notes,
        data=summary.tasks if summary else {},
        epochs=epochs,
        plugins=plugins,
        reruns=results.read_reruns(folder),
    )


PLUGIN_KINDS = ("variants", "tasks")


def read_plugins(
    folder: Path, summary: results.DataSummary | None, notes: list[str]
) -> dict[str, dict[str, dict]]:
    """The plug-ins (user's variants and tasks) data.json names, by kind; empty kinds when it
    names none (the key is absent in studies from before plug-ins). Taken from the contract's
    summary when it carries them, else read from the file's top-level "plugins" key."""
    out: dict[str, dict[str, dict]] = {k: {} for k in PLUGIN_KINDS}
    raw = getattr(summary, "plugins", None)
    if raw is None and summary is not None:
        try:
            doc = json.loads((folder / results.DATA_FILE).read_bytes().decode("utf-8"))
        except (OSError, ValueError):
            doc = {}
        raw = doc.get("plugins") if isinstance(doc, dict) else None
    if raw is None:
        return out
    if not isinstance(raw, dict):
        notes.append(f"{results.DATA_FILE}: 'plugins' is not a mapping; plug-ins are not named")
        return out
    for kind in PLUGIN_KINDS:
        entries = raw.get(kind) or {}
        if not isinstance(entries, dict):
            notes.append(f"{results.DATA_FILE}: plugins.{kind} is not a mapping; ignored")
            continue
        out[kind] = {
            str(name): {k: "" if v is None else str(v) for k, v in entry.items()}
            if isinstance(entry, dict)
            else {"path": str(entry)}
            for name, entry in entries.items()
        }
    return out


def _read_config(folder: Path, notes: list[str]) -> tuple[str, dict[str, Any]]:
    """config.yaml as text and as a mapping ({} with a note when absent or unreadable)."""
    path, name = folder / results.CONFIG_FILE, results.CONFIG_FILE
    if not path.is_file():
        notes.append(f"no {name} in {folder}; expected counts are unknown")
        return "", {}
    text = path.read_text()
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as e:
        notes.append(f"{name} could not be parsed ({e}); expected counts are unknown")
        return text, {}
    if isinstance(loaded, dict):
        return text, loaded
    if loaded is not None:
        notes.append(f"{name} is not a mapping; expected counts are unknown")
    return text, {}


def read_epochs(folder: Path, notes: list[str]) -> pd.DataFrame:
    """`<folder>/epochs.parquet/` as one long table; empty (and a note) when absent or broken."""
    empty = pd.DataFrame(columns=list(EPOCH_COLUMNS))
    try:
        epochs = results.read_epochs(folder)
    except ValueError as e:  # results.DamagedFile
        notes.append(f"{results.EPOCHS_DIR} could not be read ({e}); no learning curves")
        return empty
    if epochs.empty:
        notes.append(f"no {results.EPOCHS_DIR} in {folder}: no learning curves")
        return empty
    for col in ("task", "variant", "name"):
        epochs[col] = epochs[col].astype(str)
    epochs["value"] = pd.to_numeric(epochs["value"], errors="coerce").astype(float)
    return epochs


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def expected_trials(config: dict[str, Any], task: str, variant: str) -> int | None:
    """Trials the config asks for per (task, variant), or None when the config does not say."""
    if task not in _as_list(config.get("tasks")) or variant not in _as_list(config.get("variants")):
        return None
    trials = config.get("trials")
    if isinstance(trials, dict):  # tolerate {task: n} or {task: {variant: n}}
        trials = trials.get(task)
        if isinstance(trials, dict):
            trials = trials.get(variant)
    try:
        return int(trials) if trials is not None else None
    except (TypeError, ValueError):
        return None


def space_bounds(config: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """The search space box from the config (`space:`) in raw units, for the keys it names."""
    space = config.get("space")
    out: dict[str, tuple[float, float]] = {}
    if not isinstance(space, dict):
        return out
    for key in ("hidden_size", "learning_rate", "one_minus_momentum", "input_noise"):
        value = space.get(key)
        try:
            lo, hi = (float(v) for v in value)
        except (TypeError, ValueError):
            continue
        if lo < hi:
            out[key] = (lo, hi)
    return out
