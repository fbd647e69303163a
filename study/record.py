"""The Optuna record: one Optuna study per (task, variant), driven by ask/tell from the driver only.

Storage: SQLite `<results>/<study>/optuna.db` by default, any RDB URL otherwise. The Optuna study
of a pair is named `<study>/<task>/<variant>`. The results table is the source of truth;
`reconcile` brings Optuna in line with it on start:

- RUNNING trial with a result row  -> told from the row (the driver died after writing the row);
- RUNNING trial without a row      -> to be rerun with its stored parameters and told to the same
                                      trial number (the driver died before the trial finished);
- finished trial without a row     -> cannot be rerun (Optuna trials are final): reported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from study import results
from study.space import make_sampler

log = logging.getLogger(__name__)
ROW_ATTR = "row"  # trial user attribute: the trial's result row as JSON


@dataclass(frozen=True)
class Pending:
    """An Optuna trial that is asked but has no result yet."""

    task: str
    variant: str
    number: int
    params: dict[str, Any]  # raw Optuna parameters (see study.space)


def storage(url: str) -> optuna.storages.BaseStorage:
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def study_name(study: str, task: str, variant: str) -> str:
    return f"{study}/{task}/{variant}"


def open_study(
    store: optuna.storages.BaseStorage,
    study: str,
    task: str,
    variant: str,
    direction: str,
    sampler: str,
    seed: int,
) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = optuna.create_study(
        storage=store,
        study_name=study_name(study, task, variant),
        direction=direction,
        sampler=make_sampler(sampler, seed, task, variant),
        load_if_exists=True,
    )
    s.set_user_attr("task", task)
    s.set_user_attr("variant", variant)
    return s


def reconcile(
    s: optuna.Study,
    task: str,
    variant: str,
    rows: dict[int, dict[str, Any]],
    space: dict[str, BaseDistribution],
) -> tuple[list[Pending], list[int]]:
    """Tell RUNNING trials whose result row exists; return (trials to rerun, finished trials
    that have no row). `rows` maps trial number -> result row of this pair. A trial cut off
    while `ask` was storing its parameters gets the missing ones from the study's sampler
    (the same values for the per-trial seeded random sampler)."""
    rerun, orphans = [], []
    for t in s.get_trials(deepcopy=False):
        row = rows.get(t.number)
        if t.state == TrialState.RUNNING:
            if row is None:
                params = dict(t.params)
                for name, dist in space.items():
                    if name not in params:
                        params[name] = s.sampler.sample_independent(s, t, name, dist)
                        trial_id = t._trial_id  # Optuna keeps no public number -> id lookup
                        s._storage.set_trial_param(
                            trial_id, name, dist.to_internal_repr(params[name]), dist
                        )
                rerun.append(Pending(task, variant, t.number, params))
            else:
                tell(s, t.number, row)
                log.info("%s/%s trial %d: told Optuna its recorded result", task, variant, t.number)
        elif t.state == TrialState.WAITING:  # enqueued elsewhere; never ours
            continue
        elif row is None:
            orphans.append(t.number)
    return rerun, orphans


def ask(s: optuna.Study, space: dict, task: str, variant: str) -> Pending:
    trial = s.ask(space)  # samples every parameter now, with the study's sampler
    return Pending(task, variant, trial.number, dict(trial.params))


def tell(s: optuna.Study, number: int, row: dict[str, Any]) -> None:
    """Finish trial `number` from its result row (complete -> value; failed -> FAIL + reason)."""
    trial_id = s._storage.get_trial_id_from_study_id_trial_number(s._study_id, number)
    s._storage.set_trial_user_attr(trial_id, "status", row["status"])
    if row.get("error"):
        s._storage.set_trial_user_attr(trial_id, "error", str(row["error"])[:2000])
    s._storage.set_trial_user_attr(trial_id, "momentum", float(row["hp_momentum"]))
    # the whole row, so that a lost or damaged results table is rebuilt exactly (study.repair)
    s._storage.set_trial_user_attr(trial_id, ROW_ATTR, results.row_to_json(row))
    if row["status"] == "complete":
        s.tell(number, float(row["val_metric"]), skip_if_finished=True)
    else:
        s.tell(number, state=TrialState.FAIL, skip_if_finished=True)


def count_trials(s: optuna.Study) -> int:
    return len(s.get_trials(deepcopy=False))
