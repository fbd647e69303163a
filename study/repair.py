"""Repairing a study's four stores from each other: nothing recorded is ever lost.

The stores: the results table (`trials.parquet`, the source of truth), the per-epoch history
(`epochs.parquet/`), the Optuna record and the MLflow runs. Each finished trial is in all four;
each can be rebuilt from the others without training anything again:

    results row     <- Optuna trial attribute `row` (exact), else MLflow tag `row` (exact),
                       else MLflow tags, params and final metrics (studies from before `row`),
                       else its epoch history and seeded parameters (study.rebuild; marked)
    Optuna trial    <- results row (`add_trial` with its parameters, value and state, under the
                       same trial number; a number with no row becomes RUNNING, so it is rerun
                       with its seeded parameters, as after a crash)
    MLflow run      <- results row + epoch history (study.tracking.Tracker.reconcile)
    epoch history   <- the MLflow run's per-epoch metrics

A damaged file (or one of another schema or store) is moved to `<study>/damaged/`
(study.stores.aside), never deleted. Every repair is logged in one line saying what was rebuilt
and from what. `fix=False` (`odyssey doctor --check`) only says what would be done.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from study import preflight, record, results, stores
from study.tracking import ROW_TAG, trial_key

log = logging.getLogger(__name__)
FINALS = ("best/val_metric", "best/test_metric", "train_loss", "wall_s", "n_params", "epochs")
FINALS += ("best_epoch",)


@dataclass
class Findings:
    """What a check found and what a repair did, one line each (also logged)."""

    fix: bool
    lines: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # neither repaired nor lost: where things are

    def say(self, done: str, todo: str | None = None) -> None:
        line = done if self.fix or todo is None else todo
        self.lines.append(line)
        log.warning("%s", line)

    def note(self, line: str) -> None:
        self.notes.append(line)
        log.warning("%s", line)

    def unrecoverable(self, line: str) -> None:
        self.lost.append(line)
        log.error("%s", line)


def load_table(study_dir: Path, found: Findings) -> Any:
    """The results table; a damaged one is moved aside (fix) and an empty table returned, to be
    rebuilt by `rebuild_rows`."""
    try:
        return results.read_trials(study_dir)
    except results.DamagedFile as e:
        if found.fix:
            dest = stores.aside(e.path, study_dir)
            found.say(f"{e.what}: kept it as {dest}; rebuilding it from Optuna, MLflow and epochs")
        else:
            found.say("", f"{e.what}: would rebuild it from Optuna and MLflow")
        return results.empty()


def open_own_db(
    what: str, default_db: Path | None, study_dir: Path, opener: Callable[[], Any], found: Findings
) -> Any:
    """`opener()` (opens the store and reads what the run needs from it). When the study folder's
    own SQLite file behind it is damaged, it is moved aside and a new one opened (the caller then
    rebuilds it from the table). A shared store (`default_db` None) is never moved: its error is
    raised, naming it."""
    if default_db is not None:
        why = stores.sqlite_damage(default_db)
        if why:
            return _aside_and_reopen(what, default_db, study_dir, opener, found, why)
    try:
        return opener()
    except Exception as e:  # noqa: BLE001 - decided below: damage, or the user's to fix
        if preflight.disk_full(e):
            raise preflight.DiskFull(default_db or what) from e
        first = preflight.short_error(e)
        # a store that is busy, or too old for the installed library, is not damaged
        busy_or_old = any(w in str(e) for w in ("upgrade", "database is locked", "busy"))
        if default_db is None or not default_db.exists() or busy_or_old:
            if isinstance(e, ValueError):  # already one line naming the store
                raise
            raise ValueError(f"could not read the {what}: {first}") from e
        return _aside_and_reopen(what, default_db, study_dir, opener, found, first)


def _aside_and_reopen(what, default_db, study_dir, opener, found: Findings, why: str):
    if not found.fix:
        found.say("", f"{what} {default_db} is damaged ({why}); would rebuild it")
        return None
    dest = stores.aside(default_db, study_dir)
    found.say(f"{what} {default_db} was damaged ({why}): kept it as {dest}; rebuilding it")
    try:
        return opener()
    except Exception as e:  # noqa: BLE001 - one line naming the store
        if preflight.disk_full(e):
            raise preflight.DiskFull(default_db) from e
        raise ValueError(
            f"could not rebuild the {what} {default_db}: {preflight.short_error(e)}"
        ) from e


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat("T", "seconds")


def row_from_run(run: Any, study: str, stand_in: dict[str, bool]) -> tuple[dict[str, Any], bool]:
    """(result row, exact) of an MLflow trial run: its `row` tag, else its tags, params and
    final metrics (runs from before the tag; `test_extra` is then empty)."""
    tags, params, m = run.data.tags, run.data.params, run.data.metrics
    if ROW_TAG in tags:
        return results.row_from_json(tags[ROW_TAG]), True
    nan = math.nan
    row = results.make_row(
        study=study,
        task=tags["task"],
        variant=tags["variant"],
        trial=int(tags["trial"]),
        seed=int(tags["seed"]),
        status=tags["status"],
        error=tags.get("error"),
        hp_hidden_size=int(params["hidden_size"]),
        hp_learning_rate=float(params["learning_rate"]),
        hp_momentum=float(params["momentum"]),
        hp_input_noise=float(params["input_noise"]),
        n_params=int(m.get("n_params", 0)),
        epochs=int(m.get("epochs", 0)),
        best_epoch=int(m.get("best_epoch", 0)),
        val_metric=m.get("best/val_metric", nan),
        test_metric=m.get("best/test_metric", nan),
        train_loss=m.get("train_loss", nan),
        wall_s=float(m.get("wall_s", nan)),
        device=tags.get("device"),
        numerics=tags.get("numerics"),
        started_at=_iso(run.info.start_time),
        finished_at=_iso(run.info.end_time),
        code_version=tags.get("code_version"),
        metric=tags.get("metric"),
        data_source=tags.get("data_source"),
        stand_in=stand_in.get(tags["task"], False),
        test_extra={},
        hp_extra={},
    )
    return row, False


def _stand_in(study_dir: Path) -> dict[str, bool]:
    summary = results.read_data(study_dir)
    if summary is None:
        return {}
    return {t: bool(s.get("stand_in")) for t, s in summary.tasks.items()}


def rebuild_rows(
    study_dir: Path,
    study: str,
    df: Any,
    studies: dict[tuple[str, str], optuna.Study],
    runs: list[Any],
    found: Findings,
    cfg: Any = None,
) -> Any:
    """Add to the table every finished trial that Optuna or MLflow holds and it lacks; with the
    study's `cfg`, then those that only their per-epoch history holds (study.rebuild)."""
    have = {
        trial_key(t, v, int(k))
        for t, v, k in zip(df["task"], df["variant"], df["trial"], strict=True)
    }
    got: dict[str, dict[str, Any]] = {}
    source: dict[str, str] = {}
    for s in studies.values():
        for t in s.get_trials(deepcopy=False):
            row_json = t.user_attrs.get(record.ROW_ATTR)
            if t.state.is_finished() and row_json:
                row = results.row_from_json(row_json)
                key = trial_key(row["task"], row["variant"], row["trial"])
                if key not in have:
                    got[key], source[key] = row, "Optuna"
    stand_in = _stand_in(study_dir)
    for run in runs:
        key = run.data.tags.get("key")
        if run.info.status not in ("FINISHED", "FAILED") or key in have or key in got:
            continue
        try:
            got[key], exact = row_from_run(run, study, stand_in)
        except (KeyError, ValueError) as e:
            found.unrecoverable(f"MLflow run {run.info.run_id} ({key}) cannot be read: {e}")
            continue
        source[key] = "MLflow" if exact else "MLflow tags, params and metrics"
    if cfg is not None:
        from study import rebuild

        derived = rebuild.rows_from_epochs(cfg, have | set(got), studies, found)
        for row in derived:
            key = trial_key(row["task"], row["variant"], row["trial"])
            got[key], source[key] = row, "epochs.parquet and the seeded parameters"
    if not got:
        return df
    by_source = {s: sum(v == s for v in source.values()) for s in sorted(set(source.values()))}
    what = ", ".join(f"{n} from {s}" for s, n in by_source.items())
    found.say(
        f"{results.TRIALS_FILE}: rebuilt {len(got)} rows ({what})",
        f"{results.TRIALS_FILE} lacks {len(got)} recorded trials ({what}); would rebuild them",
    )
    if any(s.startswith("epochs.parquet") for s in source.values()):
        from study import rebuild

        derived = [got[k] for k, s in source.items() if s.startswith("epochs.parquet")]
        found.say(rebuild.note(derived), rebuild.note(derived))
    if not found.fix:  # what the table would hold, for the checks that follow
        import pandas as pd

        new = pd.DataFrame(list(got.values()), columns=list(results.COLUMNS))
        return pd.concat([df, new], ignore_index=True) if len(df) else new
    return results.add_trials(study_dir, list(got.values()))


def raw_params(row: dict[str, Any], space: dict[str, BaseDistribution]) -> dict[str, Any]:
    """The Optuna parameters behind a row's `hp_*` values (see study.space)."""
    omm = space["one_minus_momentum"]
    return {
        "hidden_size": int(row["hp_hidden_size"]),
        "learning_rate": float(row["hp_learning_rate"]),
        "one_minus_momentum": min(max(1.0 - float(row["hp_momentum"]), omm.low), omm.high),
        "input_noise": float(row["hp_input_noise"]),
    }


def restore_optuna(
    s: optuna.Study,
    pair: tuple[str, str],
    rows: dict[int, dict[str, Any]],
    space: dict[str, BaseDistribution],
    found: Findings,
) -> None:
    """Give the Optuna study every recorded trial it lacks, under the same numbers, without
    training anything: finished ones from their rows; a number with no row (a trial that was
    running when the record was lost) as RUNNING, so the run reruns it with its parameters."""
    n = len(s.get_trials(deepcopy=False))
    top = max(rows, default=-1)
    if top < n:
        return
    restored = [k for k in range(n, top + 1) if k in rows]
    found.say(
        f"Optuna {s.study_name}: restored {len(restored)} recorded trials from {results.TRIALS_FILE}",
        f"Optuna {s.study_name} lacks {len(restored)} recorded trials; would restore them",
    )
    lost = [k for k in range(n, top + 1) if k not in rows]
    if lost:
        found.say(
            f"Optuna {s.study_name}: no store holds a result of trials {lost} (no row, no "
            "history: stopped while running, or failed before its first epoch); `odyssey run` "
            "trains them again with their seeded parameters",
            f"Optuna {s.study_name}: no store holds a result of trials {lost}; `odyssey run` "
            "would train them again with their seeded parameters",
        )
    if not found.fix:
        return
    for k in range(n, top + 1):
        row = rows.get(k)
        if row is None:
            s._storage.create_new_trial(s._study_id)  # RUNNING: rerun with its seeded parameters
        else:
            ok = row["status"] == "complete" and math.isfinite(float(row["val_metric"]))
            attrs = {"status": row["status"], "momentum": float(row["hp_momentum"])}
            if row.get("error"):
                attrs["error"] = str(row["error"])[:2000]
            attrs[record.ROW_ATTR] = results.row_to_json(row)
            s.add_trial(
                optuna.trial.create_trial(
                    state=TrialState.COMPLETE if ok else TrialState.FAIL,
                    value=float(row["val_metric"]) if ok else None,
                    params=raw_params(row, space),
                    distributions=space,
                    user_attrs=attrs,
                )
            )
        assert s._storage.get_n_trials(s._study_id) == k + 1, "Optuna renumbered a trial"


def repair_epochs(
    study_dir: Path, df: Any, tracker: Any, runs: list[Any], found: Findings, shared: str = ""
) -> None:
    """Every trial's per-epoch history readable in `epochs.parquet/`: a damaged part file moves
    aside, and a missing one is written again from the MLflow run's per-epoch metrics (`runs`:
    the study's trial runs). The folder is read as one table first; only when that fails is
    each part file read on its own. `shared`: the Optuna storage URL when several results
    folders share it (a trial run from another folder keeps its history there)."""
    by_key = {r.data.tags.get("key"): r for r in runs}
    try:
        whole = results.read_epochs(study_dir)
        sound = {trial_key(t, v, int(k)) for t, v, k in set(zip(*_key_cols(whole), strict=True))}
    except results.DamagedFile:
        sound = None
    rebuilt, damaged, nowhere = 0, [], []
    cols = (df["task"], df["variant"], df["trial"], df["status"])
    for t, v, k, status in zip(*cols, strict=True):
        if sound is not None and trial_key(t, v, int(k)) in sound:
            continue
        path = results.epochs_path(study_dir, t, v, int(k))
        was_damaged = False
        if path.exists():
            try:
                results.read_epochs(study_dir, t, v, int(k))
                continue
            except results.DamagedFile as e:
                damaged.append(e.what)
                was_damaged = True
                if not found.fix:
                    continue
                stores.aside(path, study_dir)
        run = by_key.get(trial_key(t, v, int(k)))
        if run is None:
            if was_damaged:
                found.unrecoverable(f"{path}: damaged and no MLflow run to rebuild it from")
            elif status == "complete":  # a diverged trial may have stopped before any epoch
                nowhere.append(trial_key(t, v, int(k)))
            continue
        history: dict[int, dict[str, Any]] = {}
        for name in run.data.metrics:
            if name in FINALS:
                continue
            for m in tracker.client.get_metric_history(run.info.run_id, name):
                history.setdefault(int(m.step), {"epoch": int(m.step)})[name] = m.value
        if not history:
            continue
        if found.fix:
            results.write_epochs(study_dir, t, v, int(k), [history[e] for e in sorted(history)])
        rebuilt += 1
    if nowhere and shared:
        shown = ", ".join(nowhere[:6]) + (
            f" and {len(nowhere) - 6} more" if len(nowhere) > 6 else ""
        )
        found.note(
            f"{results.EPOCHS_DIR}: this results folder lacks the per-epoch history of "
            f"{len(nowhere)} trials ({shown}): they were run from another results folder sharing "
            f"the storage {shared}, which keeps their history; their rows are here"
        )
    elif nowhere:
        found.unrecoverable(
            f"{results.EPOCHS_DIR}: the per-epoch history of {len(nowhere)} recorded trials is in "
            "no store (no part file, no MLflow run); their rows and final metrics are kept"
        )
    if rebuilt or damaged:
        found.say(
            f"{results.EPOCHS_DIR}: {len(damaged)} damaged part files kept in "
            f"{stores.damaged_dir(study_dir)}; rebuilt {rebuilt} trials' history from MLflow",
            f"{results.EPOCHS_DIR}: {len(damaged)} damaged part files, {rebuilt} trials' history "
            f"missing; would rebuild them from MLflow",
        )


def _key_cols(df: Any) -> tuple:
    return df["task"], df["variant"], df["trial"]
