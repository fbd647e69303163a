"""`odyssey doctor STUDY [--check]`: check a study's four stores against each other and repair
what can be repaired (study.repair), saying what was done; `--check` only reports.

The stores: trials.parquet (the source of truth), epochs.parquet/, the Optuna record and the
MLflow runs. Exit status: 0 when the stores agree (or were made to agree), 1 when `--check`
found something to repair or something could not be recovered.
"""

from __future__ import annotations

import argparse
from contextlib import ExitStack, nullcontext
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        help="check a study's stores against each other and repair them",
        description="Check trials.parquet, epochs.parquet/, Optuna and MLflow of a study against "
        "each other and rebuild what is missing or damaged from the others (damaged files are "
        "kept in the study's damaged/ folder). Nothing is retrained.",
    )
    p.add_argument("study", metavar="STUDY", help="study name (a folder under --results)")
    p.add_argument("--results", default="results", help="results folder (default: results/)")
    p.add_argument("--check", action="store_true", help="only report; change nothing")
    p.set_defaults(func=doctor)


class _Runs:
    """Read-only view of a study's MLflow trial runs (what --check uses instead of a Tracker,
    which would create the experiment and mark its parent run as running)."""

    def __init__(self, uri: str, study: str) -> None:
        from study.tracking import MlflowClient  # MLflow without its telemetry

        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(study)
        self.experiment_id = exp.experiment_id if exp else None

    def trial_runs(self) -> list:
        from study.tracking import Tracker

        return Tracker.trial_runs(self) if self.experiment_id else []  # type: ignore[arg-type]


def doctor(args: argparse.Namespace) -> int:
    import logging

    quiet = logging.getLogger("study.repair")  # its lines are printed at the end
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        return _doctor(args)
    finally:
        quiet.setLevel(level)


def _doctor(args: argparse.Namespace) -> int:
    import tasks
    from study import config, preflight, record, repair, results, runner, setup, stores
    from study.space import search_space
    from study.tracking import trial_key

    sdir, cfg = config.saved_study(args.results, args.study)
    preflight.check_blocked(sdir)
    if not args.check:
        try:
            preflight.check_results_dir(sdir, create=False)
        except ValueError as e:
            raise ValueError(f"{e} (`odyssey doctor {args.study} --check` only reads)") from None
    cfg = cfg.model_copy(update={"results": str(Path(args.results).expanduser())})
    found = repair.Findings(fix=not args.check)
    space = search_space(cfg.space)
    directions = {t: tasks.get(t).metric_direction for t in cfg.tasks}
    with setup.study_lock(sdir) if found.fix else nullcontext(), ExitStack() as held:
        df = repair.load_table(sdir, found)
        studies = stores.open_optuna(cfg, directions, found, held, setup.open_store)
        if found.fix:
            tracker = stores.open_tracker(
                cfg, setup.code_version(), found, setup.open_store, setup.init_mlflow_store
            )
        else:
            db = None if cfg.tracking_uri else sdir / results.MLFLOW_DB
            if db is not None and not db.exists():
                found.say("", f"MLflow store {db} is missing; would log every trial into a new one")
                tracker = None
            else:
                tracker = repair.open_own_db(
                    "MLflow tracking URI", db, sdir, lambda: _Runs(cfg.mlflow_uri, cfg.name), found
                )
        runs = tracker.trial_runs() if tracker else []
        df = repair.rebuild_rows(sdir, cfg.name, df, studies or {}, runs, found, cfg)
        by_pair = runner._rows_by_pair(df)
        interrupted = 0
        for (task, variant), s in (studies or {}).items():
            rows = by_pair.get((task, variant), {})
            repair.restore_optuna(s, (task, variant), rows, space, found)
            if found.fix:
                rerun, orphans = record.reconcile(s, task, variant, rows, space)
                interrupted += len(rerun)
            else:
                orphans = []
                for t in s.get_trials(deepcopy=False):
                    interrupted += t.state.name == "RUNNING" and t.number not in rows
                    if t.state.is_finished() and t.number not in rows:
                        orphans.append(t.number)
                if any(t.state.name == "RUNNING" and t.number in rows for t in s.get_trials()):
                    found.say("", f"Optuna {s.study_name}: trials with results not yet told")
            if orphans and found.fix:
                found.unrecoverable(
                    f"{task}/{variant}: Optuna trials {orphans} finished but no store holds "
                    "their results"
                )
        repair.repair_epochs(sdir, df, tracker, runs, found, cfg.storage or "")
        keys = [r.data.tags.get("key") for r in runs if r.info.status in ("FINISHED", "FAILED")]
        extra = len(keys) - len(set(keys))
        if extra:
            found.say(
                f"MLflow: deleted {extra} second runs of trials",
                f"MLflow holds {extra} second runs of trials; would delete them",
            )
        if found.fix:
            relogged = tracker.reconcile(
                df.to_dict("records"),
                lambda t, v, k: results.history_records(results.read_epochs(sdir, t, v, k)),
            )
            if relogged:
                found.say(f"MLflow: logged {relogged} recorded trials that had no run")
            tracker.close(finished=interrupted == 0)
        else:
            rows_keys = {trial_key(t, v, int(k)) for t, v, k in zip(*_key_cols(df), strict=True)}
            missing = rows_keys - set(keys)
            if tracker is not None and missing:
                found.say(
                    "", f"MLflow lacks runs of {len(missing)} recorded trials; would log them"
                )
    n_runs = len(tracker.trial_runs()) if tracker else 0
    print(
        f"study {cfg.name}: {len(df)} trials recorded{'' if found.fix else ' (once repaired)'}, "
        f"{sum(len(s.get_trials(deepcopy=False)) for s in (studies or {}).values())} Optuna "
        f"trials, {n_runs} MLflow trial runs; {interrupted} interrupted trials (`odyssey run` "
        f"reruns them)"
    )
    for line in found.lines:
        print(("repaired: " if found.fix else "to repair: ") + line)
    for line in found.notes:
        print("note: " + line)
    for line in found.lost:
        print("cannot recover: " + line)
    if not found.lines and not found.lost:
        print("the four stores agree; nothing to repair")
    return 1 if found.lost or (not found.fix and found.lines) else 0


def _key_cols(df):
    return df["task"], df["variant"], df["trial"]
