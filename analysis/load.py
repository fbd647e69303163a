"""Reading one study's results folder for the report: `trials.parquet`, `config.yaml` and
`data.json` only.

The report never talks to Ray, MLflow or Optuna (DESIGN.md, "Dependency direction"). Rows are
normalised here (missing optional columns get explicit "unknown" values) and the variant and task
orders are taken from the registries, never typed by hand; names the registries do not know are
kept and listed after the known ones.
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

log = logging.getLogger(__name__)

TRIALS_FILE = "trials.parquet"
CONFIG_FILE = "config.yaml"
DATA_FILE = "data.json"  # written by the study at start (study.runner.record_data)
EPOCHS_DIR = "epochs.parquet"  # one part file per trial: task, variant, trial, epoch, name, value
EPOCH_COLUMNS = ("task", "variant", "trial", "epoch", "name", "value")

# columns the report cannot do without
REQUIRED = ("task", "variant", "status", "val_metric", "test_metric")
# optional columns and the value a missing one gets
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
    "started_at": "",
    "finished_at": "",
    "code_version": "unknown",
    "metric": "",
    "data_source": "unknown",
    "stand_in": pd.NA,
    "test_extra": "{}",
}


@dataclass(frozen=True)
class StudyResults:
    """What the report is built from; `trials` holds every row (complete, failed, anything)."""

    study: str
    folder: Path
    trials: pd.DataFrame
    config: dict[str, Any]
    config_text: str
    variants: list[str]  # registry order, then names the registry does not know
    tasks: list[str]
    baseline: str  # the registry's first variant (V)
    notes: list[str] = field(default_factory=list)  # problems found while reading
    data: dict[str, dict] = field(default_factory=dict)  # data.json: task -> data summary
    epochs: pd.DataFrame = field(  # per-epoch history, long form (EPOCH_COLUMNS)
        default_factory=lambda: pd.DataFrame(columns=list(EPOCH_COLUMNS))
    )


def variant_registry() -> list[str]:
    """Variant names in the registry's (the paper's) order; V first."""
    import variants

    return list(variants.VARIANTS)


def task_registry() -> dict[str, str]:
    """Task name -> title, in the registry's order."""
    import tasks

    return {name: t.title for name, t in tasks.TASKS.items()}


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
    return out.reset_index(drop=True)


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
    config_text, config = "", {}
    if (folder / CONFIG_FILE).is_file():
        config_text = (folder / CONFIG_FILE).read_text()
        try:
            loaded = yaml.safe_load(config_text)
        except yaml.YAMLError as e:
            loaded = None
            notes.append(f"{CONFIG_FILE} could not be parsed ({e}); expected counts are unknown")
        if isinstance(loaded, dict):
            config = loaded
        elif loaded is not None:
            notes.append(f"{CONFIG_FILE} is not a mapping; expected counts are unknown")
    else:
        notes.append(f"no {CONFIG_FILE} in {folder}; expected counts are unknown")

    data: dict[str, dict] = {}
    if (folder / DATA_FILE).is_file():
        try:
            loaded = json.loads((folder / DATA_FILE).read_text())
            data = loaded if isinstance(loaded, dict) else {}
        except json.JSONDecodeError as e:
            notes.append(f"{DATA_FILE} could not be parsed ({e}); data sizes are unknown")

    path = folder / TRIALS_FILE
    if path.is_file():
        trials = normalise(pd.read_parquet(path))
    else:
        notes.append(f"no {TRIALS_FILE} in {folder} yet: no trial has finished")
        trials = normalise(pd.DataFrame({c: pd.Series(dtype=object) for c in REQUIRED}))

    epochs = read_epochs(folder, notes)
    variant_names = set(trials["variant"].dropna()) | set(_as_list(config.get("variants")))
    task_names = set(trials["task"].dropna()) | set(_as_list(config.get("tasks")))
    registry = variant_registry()
    variants, unknown_v = ordered(variant_names, registry)
    tasks, unknown_t = ordered(task_names, list(task_registry()))
    if unknown_v:
        notes.append(f"variant(s) not in the registry, listed last: {', '.join(unknown_v)}")
    if unknown_t:
        notes.append(f"task(s) not in the registry, listed last: {', '.join(unknown_t)}")
    return StudyResults(
        study,
        folder,
        trials,
        config,
        config_text,
        variants,
        tasks,
        baseline=registry[0],
        notes=notes,
        data=data,
        epochs=epochs,
    )


def read_epochs(folder: Path, notes: list[str]) -> pd.DataFrame:
    """`<folder>/epochs.parquet/` as one long table; empty (and a note) when absent or broken."""
    path = folder / EPOCHS_DIR
    empty = pd.DataFrame(columns=list(EPOCH_COLUMNS))
    if not path.exists() or (path.is_dir() and not any(path.glob("*.parquet"))):
        notes.append(f"no {EPOCHS_DIR} in {folder}: no learning curves")
        return empty
    try:
        epochs = pd.read_parquet(path)
    except (OSError, ValueError) as e:
        notes.append(f"{EPOCHS_DIR} could not be read ({e}); no learning curves")
        return empty
    missing = [c for c in EPOCH_COLUMNS if c not in epochs.columns]
    if missing:
        notes.append(f"{EPOCHS_DIR} lacks column(s) {', '.join(missing)}; no learning curves")
        return empty
    epochs = epochs[list(EPOCH_COLUMNS)].copy()
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
