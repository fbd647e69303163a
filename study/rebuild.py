"""Result rows rebuilt from the per-epoch history alone, when no other store holds a trial's row.

A part file of `epochs.parquet/` is written once a trial finished (before its row), so it stands
for a finished trial. When the table, Optuna and MLflow have all lost that trial, its row is
derived, exactly where that is possible:

    hp_*                 the trial's Optuna parameters if Optuna still holds the trial; else, with
                         the `random` sampler, the seeded draw (study.space.TrialSeededSampler:
                         a function of seed, task, variant, trial number and parameter name)
    best_epoch, val_metric, test_metric, train_loss, test_extra
                         the training loop's rule over the history: the first epoch, then each
                         strictly better validation metric (ties keep the earlier epoch)
    epochs, error        the last epoch when it stopped training (patience or the epoch limit);
                         otherwise the epoch after it diverged (the loop reports no epoch whose
                         parameters or validation metric were not finite), with a note in `error`
    n_params             counted on the model built from the variant and hidden size
    study, seed, metric, data_source, stand_in
                         the study's config and data.json

What the history does not hold is left empty (null / NaN), never invented: wall_s, device,
started_at, finished_at; `code_version` says `REBUILT` (results/README.md). With another sampler
(TPE draws from the study's history) a trial whose parameters are in no store cannot be rebuilt:
its part file is kept in `damaged/` and the trial is run again, and a line says so.
"""

from __future__ import annotations

import logging
import math
from types import SimpleNamespace
from typing import Any

import pandas as pd

from study import results, stores
from study.tracking import trial_key

log = logging.getLogger(__name__)
REBUILT = "unknown: rebuilt from epochs.parquet"  # code_version of a row rebuilt from history


def seeded_params(cfg: Any, task: str, variant: str, number: int) -> dict[str, Any]:
    """The raw Optuna parameters the `random` sampler gives trial `number` of a pair."""
    from study.space import make_sampler, search_space

    sampler = make_sampler("random", cfg.seed, task, variant)
    trial = SimpleNamespace(number=number)  # the sampler reads only the trial's number
    return {
        name: sampler.sample_independent(None, trial, name, dist)  # type: ignore[arg-type]
        for name, dist in search_space(cfg.space).items()
    }


def n_params(cfg: Any, task: Any, variant: str, hidden_size: int) -> int:
    import torch

    import variants
    from study.model import build_model, count_parameters, hidden_per_direction

    spec = cfg.custom_variants.get(variant)
    which = variants.spec_from_dict(dict(spec)) if spec is not None else variant
    hidden = hidden_per_direction(hidden_size, cfg.space.hidden_size_meaning, task.bidirectional)
    layers = {"layers": cfg.training.layers, "residual": cfg.training.residual}
    model = build_model(task, which, hidden, torch.Generator().manual_seed(0), **layers)
    return count_parameters(model)


def row_from_history(
    cfg: Any, task_name: str, variant: str, number: int, long: pd.DataFrame, raw: dict[str, Any]
) -> dict[str, Any]:
    """The result row of one trial from its per-epoch history (long form) and raw parameters."""
    import tasks
    from study.pack import better as _better
    from study.space import HYPERPARAMETERS, hyperparameters

    task = tasks.get(task_name)
    metric = task.metric
    history = results.history_records(long)
    best = history[0]
    for rec in history[1:]:
        if _better(rec[f"val/{metric}"], best[f"val/{metric}"], task.metric_direction):
            best = rec
    last, b = history[-1]["epoch"], best["epoch"]
    stopped = last - b >= cfg.training.patience or last >= cfg.training.max_epochs
    error = None
    if not stopped:
        error = (
            f"training ended in epoch {last + 1}, before early stopping (a divergence; its "
            f"message was not kept: rebuilt from epochs.parquet); kept the best epoch {b}"
        )
    hp = hyperparameters(raw)
    summary = results.read_data(cfg.study_dir)
    data = summary.tasks.get(task_name, {}) if summary is not None else {}
    values = dict(
        study=cfg.name,
        task=task_name,
        variant=variant,
        trial=number,
        seed=cfg.seed,
        status="complete",
        error=error,
        hp_hidden_size=hp["hidden_size"],
        hp_learning_rate=hp["learning_rate"],
        hp_momentum=hp["momentum"],
        hp_input_noise=hp["input_noise"],
        n_params=n_params(cfg, task, variant, hp["hidden_size"]),
        epochs=last if stopped else last + 1,
        best_epoch=b,
        val_metric=best[f"val/{metric}"],
        test_metric=best.get(f"test/{metric}", math.nan),
        train_loss=best.get("train/loss", math.nan),
        wall_s=math.nan,
        device=None,
        started_at=None,
        finished_at=None,
        code_version=REBUILT,
        metric=metric,
        data_source=str(data.get("source")),
        stand_in=bool(data.get("stand_in", False)),
        test_extra={
            k[5:]: v for k, v in best.items() if k.startswith("test/") and k != f"test/{metric}"
        },
        hp_extra={k: v for k, v in hp.items() if k not in HYPERPARAMETERS},
    )
    # a column the history says nothing about (one added to the table later) is left empty
    return results.make_row(**{c: values.get(c) for c in results.COLUMNS})


def rows_from_epochs(cfg: Any, have: set[str], studies: dict, found: Any) -> list[dict[str, Any]]:
    """Rows of the finished trials whose history `epochs.parquet/` holds and no other store does
    (`have`: keys of the rows known). A trial Optuna holds as running is left to be rerun (the
    run keeps the old part file in damaged/); one whose parameters cannot be derived is reported
    and its part file kept in damaged/ (fix), so that the rerun writes its own."""
    folder = cfg.study_dir / results.EPOCHS_DIR
    if not folder.is_dir():
        return []
    rows, retrain = [], []
    for path in sorted(folder.glob("*.parquet")):
        try:
            long = results.read_part(path)
        except results.DamagedFile:
            continue  # left for repair_epochs (a row) or the rerun (no row)
        keys = set(zip(long["task"], long["variant"], long["trial"], strict=True))
        if len(keys) != 1:
            continue
        task, variant, number = next(iter(keys))
        number = int(number)
        if trial_key(task, variant, number) in have:
            continue
        s = studies.get((task, variant))
        frozen = _trial(s, number)
        if frozen is not None and not frozen.state.is_finished():
            continue  # a trial being run when the driver stopped: rerun with its parameters
        if frozen is not None and frozen.params:
            raw = dict(frozen.params)
        elif cfg.sampler == "random":
            raw = seeded_params(cfg, task, variant, number)
        else:
            retrain.append((path, f"{task}/{variant}/{number}"))
            continue
        rows.append(row_from_history(cfg, task, variant, number, long, raw))
    if retrain:
        names = ", ".join(k for _, k in retrain)
        found.say(
            f"{results.EPOCHS_DIR}: the parameters of trials {names} are in no store (the "
            f"{cfg.sampler} sampler draws them from the study's history), so their rows cannot "
            f"be rebuilt from their history: their part files are kept in damaged/ and "
            f"`odyssey run` trains these trial numbers again",
            f"{results.EPOCHS_DIR}: the parameters of trials {names} are in no store; would keep "
            f"their part files in damaged/, and `odyssey run` would train them again",
        )
        if found.fix:
            for path, _ in retrain:
                stores.aside(path, cfg.study_dir)
    return rows


def _trial(s: Any, number: int) -> Any:
    if s is None:
        return None
    trials = s.get_trials(deepcopy=False)
    return trials[number] if number < len(trials) and trials[number].number == number else None


def note(rows: list[dict[str, Any]]) -> str:
    return (
        f"{len(rows)} rows rebuilt from their per-epoch history: their wall_s, device, "
        f"started_at and finished_at are unknown (empty), code_version says {REBUILT!r}"
    )


__all__ = ["REBUILT", "note", "row_from_history", "rows_from_epochs", "seeded_params"]
