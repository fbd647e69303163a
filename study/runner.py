"""The driver of a study: config check, data, Optuna, Ray, MLflow (README, "Layout").

Recording order per finished trial: per-epoch history, then the results row (atomic), then Optuna
`tell`, then the MLflow run. The results table is the source of truth; on every start Optuna and
MLflow are reconciled from it, so a driver killed at any moment (even `kill -9`) resumes exactly:

    killed after ask, before/while the trial runs  -> Optuna RUNNING, no row: rerun, same params,
                                                      told to the same trial number
    killed while the row is written                -> os.replace: old table or new one
    killed after the row, before tell              -> Optuna RUNNING with a row: told from the row
    killed after tell, before / during MLflow      -> row without a terminated run: logged again

With one trial per job, new trials are asked one at a time just before they are submitted; with
packs (`study.plan`), all of a pair's remaining trials are asked up front (random search draws
them independently of results), and a killed driver reruns the asked ones with their parameters.
One driver per study at a time (a lock file, and a lease in a shared storage, enforce it).
Before the first trial: `study.setup` (lock, config, data, stores) and `study.repair`.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pandas as pd

import tasks
from study import plan, preflight, record, repair, results, stores
from study.config import StudyConfig
from study.console import UserError
from study.setup import (
    check_config,
    code_version,
    init_mlflow_store,
    open_store,
    prepare_data,
    record_data,
    resolve_device,
    save_config,
    study_lock,
)
from study.signals import StopRequest, stop_requested_on_sigterm
from study.space import HYPERPARAMETERS, hyperparameters, search_space

log = logging.getLogger(__name__)


def number_ranges(numbers: list[int]) -> str:
    """Trial numbers as runs: [52, 53, 54, 56, 58, 59] -> "52-54, 56, 58-59"."""
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _pairs(cfg: StudyConfig) -> list[tuple[str, str]]:
    return [(t, v) for t in cfg.tasks for v in cfg.variants]


def _rows_by_pair(df) -> dict[tuple[str, str], dict[int, dict[str, Any]]]:
    out: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for r in df.to_dict("records"):
        out.setdefault((r["task"], r["variant"]), {})[int(r["trial"])] = r
    return out


def make_row(
    cfg: StudyConfig,
    p: record.Pending,
    hp: dict[str, Any],
    result: dict[str, Any],
    data_meta: dict,
    metric: str,
    version: str,
    device: str,
) -> dict[str, Any]:
    nan = math.nan
    return results.make_row(
        study=cfg.name,
        task=p.task,
        variant=p.variant,
        trial=p.number,
        seed=cfg.seed,
        status=result.get("status", "failed"),
        error=result.get("error"),
        hp_hidden_size=hp["hidden_size"],
        hp_learning_rate=hp["learning_rate"],
        hp_momentum=hp["momentum"],
        hp_input_noise=hp["input_noise"],
        n_params=result.get("n_params", 0),
        epochs=result.get("epochs", 0),
        best_epoch=result.get("best_epoch", 0),
        val_metric=result.get("val_metric", nan),
        test_metric=result.get("test_metric", nan),
        train_loss=result.get("train_loss", nan),
        wall_s=float(result.get("wall_s", nan)),
        device=result.get("device", device),
        numerics=result.get("numerics"),
        started_at=result.get("started_at"),
        finished_at=result.get("finished_at"),
        code_version=version,
        metric=metric,
        data_source=str(data_meta.get("source")),
        stand_in=bool(data_meta.get("stand_in", False)),
        test_extra=result.get("test_extra") or {},
        hp_extra={k: v for k, v in hp.items() if k not in HYPERPARAMETERS},
    )


def run(
    cfg: StudyConfig,
    executor_factory: Callable[[StudyConfig, str], Any] | None = None,
    live: bool | None = None,
) -> dict[str, Any]:
    """Run or resume a study; returns counts {'complete', 'failed', 'expected', 'ran'}."""
    from study.plugins import check_declared

    check_declared(cfg)  # a plug-in that breaks the contract is refused before anything is written
    preflight.check_paths(cfg.to_dict())
    stores.check_results_dir(cfg.study_dir)
    preflight.check_blocked(cfg.study_dir)
    with study_lock(cfg.study_dir), ExitStack() as held:  # held: the lease of a shared storage
        check_config(cfg)
        return _run_locked(cfg, executor_factory, live, held)


def _ray_executor(cfg: StudyConfig, device: str):
    from study.plugins import roots
    from study.scheduler import RayExecutor

    modules = roots(cfg.plugin_identity)
    return RayExecutor(cfg.ray_address, cfg.workers, device, cfg.gpus_per_job, modules)


def _join_cluster(cfg: StudyConfig, executor_factory) -> tuple[Any, str]:
    """With a cluster address, join it before anything is written (an unreachable cluster or a
    refused token leaves the study as it was) and take the device from the cluster's GPUs;
    else the device of this machine, and the executor is started once there is work."""
    if executor_factory is None and cfg.ray_address is not None:
        executor = _ray_executor(cfg, cfg.device)
        return executor, executor.device
    return None, resolve_device(cfg.device)


@dataclass
class _Open:
    """A study's stores, opened and reconciled with its results table: what the loop records to."""

    cfg: StudyConfig
    device: str
    version: str
    data: dict[str, tuple[str, dict]]  # task -> (prepared data folder, data meta)
    space: dict
    studies: dict[tuple[str, str], Any]  # (task, variant) -> Optuna study
    tracker: Any  # study.tracking.Tracker
    table: pd.DataFrame  # the results table as last written
    packs: dict[str, int]  # task -> trials per job (study.plan.pack_size)


def _run_locked(
    cfg: StudyConfig, executor_factory, live: bool | None, held: ExitStack | None = None
) -> dict[str, Any]:
    """The run in four steps: open the stores, plan the queue, run it, count. From planning on
    (which asks Optuna for packed trials up front), SIGTERM stops the run between two writes."""
    joined, device = _join_cluster(cfg, executor_factory)
    try:
        st = _open_stores(cfg, held, device)
        finished = False
        try:
            if joined is not None:  # before planning, which asks Optuna for trials
                _check_nodes(st, joined)
            with stop_requested_on_sigterm() as stop:
                queue = _plan(st)
                factory = (lambda c, d: joined) if joined else executor_factory or _ray_executor
                ran = _run_queue(st, queue, stop, factory, live)
            finished = True
        finally:
            try:
                st.tracker.close(finished)
            except Exception as e:  # noqa: BLE001 - the error that stopped the run says more
                if finished:
                    raise
                log.debug("could not mark the MLflow study run as stopped: %s", e)
    finally:
        if joined is not None:  # also when _run_queue never ran it (a no-op when it did)
            joined.shutdown()
    return _count(cfg, st.table, ran)


def _check_nodes(st: _Open, executor) -> None:
    """Every node of a cluster can import the package, see each task's data and, for CPU
    training, build the compiled kernel (`study.cluster.node_check`)."""
    import variants.fast

    kernel = st.device == "cpu" and variants.fast.mode() == "fast"
    executor.check_nodes(sorted({path for path, _ in st.data.values()}), kernel)


def _open_stores(cfg: StudyConfig, held: ExitStack | None, device: str) -> _Open:
    """Data, the results table, Optuna and MLflow: opened, repaired where damaged, and brought
    back in step with the table (the source of truth)."""
    sdir = cfg.study_dir
    log.info(
        "study %s: results in %s (%s), config in %s",
        cfg.name,
        sdir,
        results.TRIALS_FILE,
        sdir / results.CONFIG_FILE,
    )
    version = code_version()
    data = prepare_data(cfg)
    metas = {t: meta for t, (_, meta) in data.items()}
    record_data(sdir, metas, cfg.custom_variants, cfg.plugin_identity)
    found = repair.Findings(fix=True)
    df = repair.load_table(sdir, found)
    directions = {t: tasks.get(t).metric_direction for t in cfg.tasks}
    studies = stores.open_optuna(cfg, directions, found, held, open_store)
    tracker = stores.open_tracker(cfg, version, found, open_store, init_mlflow_store)
    with preflight.writing(sdir / results.CONFIG_FILE):
        save_config(cfg)
    runs = tracker.trial_runs()
    df = repair.rebuild_rows(sdir, cfg.name, df, studies, runs, found, cfg)
    packs = {t: plan.pack_size(cfg, device, tasks.get(t).bidirectional) for t in cfg.tasks}
    for name in cfg.variants:
        if max(packs.values()) > 1 and not plan.packable(name):
            log.info("variant %s: its cell is not packable; its trials run one per job", name)
    st = _Open(cfg, device, version, data, search_space(cfg.space), studies, tracker, df, packs)
    by_pair = _rows_by_pair(df)
    for pair, s in studies.items():
        repair.restore_optuna(s, pair, by_pair.get(pair, {}), st.space, found)
    repair.repair_epochs(sdir, df, tracker, runs, found, cfg.storage or "")  # before MLflow logs
    relogged = tracker.reconcile(
        df.to_dict("records"),
        lambda t, v, k: results.history_records(results.read_epochs(sdir, t, v, k)),
    )
    if relogged:
        log.info("MLflow: logged %d recorded trials that had no run", relogged)
    log.info("Optuna: %s  (view: optuna-dashboard %s)", cfg.optuna_storage, cfg.optuna_storage)
    log.info("MLflow: %s  (view: mlflow ui --backend-store-uri %s)", cfg.mlflow_uri, cfg.mlflow_uri)
    return st


def _plan(st: _Open) -> deque:
    """The queue: each pair's interrupted trials (rerun with their parameters), then its new
    ones, merged over the pairs so that their recorded trial counts stay level (a pair behind
    the others catches up first; `plan.interleave`); packed where the task's pack size is above
    1."""
    cfg = st.cfg
    by_pair = _rows_by_pair(st.table)
    items: dict[tuple[str, str], list] = {}
    for (task, variant), s in st.studies.items():
        rerun, orphans = record.reconcile(
            s, task, variant, by_pair.get((task, variant), {}), st.space
        )
        if orphans:
            log.warning(
                "%s/%s: Optuna trials %s finished but no store holds their results (no results "
                "row, no row in Optuna or MLflow); they cannot be rerun. `odyssey doctor %s` "
                "lists what each store holds; or start a new study with --study NEW_NAME",
                task,
                variant,
                orphans,
                cfg.name,
            )
        if rerun:
            log.info(
                "%s/%s: rerunning %d interrupted trials (%s) with their parameters",
                task,
                variant,
                len(rerun),
                number_ranges([p.number for p in rerun]),
            )
        new = max(0, cfg.trials - record.count_trials(s))
        items[(task, variant)] = [*rerun, *[(task, variant)] * new]
    done = {pair: len(by_pair.get(pair, {})) for pair in items}
    queue = deque(plan.interleave(list(items.values()), list(done.values()), size=lambda _: 1))
    if queue and max(st.packs.values()) > 1:
        queue = plan.ask_packs(cfg, st.studies, st.space, queue, st.packs, st.device, done)
    return queue


def _run_queue(
    st: _Open, queue: deque, stop: StopRequest, executor_factory, live: bool | None
) -> int:
    """Submit the queue's trials and packs as workers free up and record each result as it
    arrives; returns how many were recorded. SIGTERM stops it between two recordings."""
    from study.progress import Display

    if not queue:
        return 0
    cfg, device, packs = st.cfg, st.device, st.packs
    pack = max(packs.values())
    log.info(
        "%d trials to run on %s%s",
        sum(len(i) if isinstance(i, list) else 1 for i in queue),
        device,
        f", in packs of up to {pack} trials" if pack > 1 else "",
    )
    ran, attempts = 0, {}
    executor, failed = None, False
    try:
        executor = executor_factory(cfg, device)
        directions = {t: tasks.get(t).metric_direction for t in cfg.tasks}
        metrics = {t: tasks.get(t).metric for t in cfg.tasks}
        with Display(
            cfg.name, _pairs(cfg), cfg.trials, directions, executor.workers, live, metrics, packs
        ) as display:
            display.update(st.table)
            while queue or executor.in_flight:
                stop.check()  # between recordings: nothing is half written
                while queue and executor.in_flight < executor.workers:
                    _submit(st, queue, executor, display, packs)
                for p, result in executor.wait(timeout=1.0):
                    if result.get("retryable"):
                        _retry_or_stop(p, result, attempts, queue)
                        display.requeued(p.task, p.variant)
                        continue
                    display.finished(_record(st, p, result), st.table)
                    ran += 1
                display.update()
    except Exception:  # not Ctrl-C: keep a local Ray instance's logs for the diagnosis
        failed = True
        raise
    finally:
        if executor is not None:
            executor.shutdown(**({"keep_logs": True} if failed else {}))
    return ran


def _submit(st: _Open, queue: deque, executor, display, packs: dict[str, int]) -> None:
    """Submit the queue's next item: a pack of asked trials, an interrupted trial, or a new
    trial asked of its pair's Optuna study now."""
    item = queue.popleft()
    if (
        packs[plan.task_of(item)] > 1
        and isinstance(item, record.Pending)
        and plan.packable(item.variant)
    ):
        width = None  # on CUDA a retried trial joins only trials of similar width
        if st.device.startswith("cuda"):
            bidirectional = tasks.get(item.task).bidirectional
            width = plan.width_of(st.cfg.space.hidden_size_meaning, bidirectional)
        item = plan.repack(item, queue, width)  # retried: packed again with its pair
    if isinstance(item, list):  # a pack of asked trials of one pair
        task = item[0].task
        executor.submit(item, plan.pack_job(st.cfg, item, st.data[task][0], st.device, packs[task]))
        for p in item:
            display.started(p.task, p.variant)
        return
    p = item if isinstance(item, record.Pending) else record.ask(st.studies[item], st.space, *item)
    executor.submit(p, plan.trial_job(st.cfg, p, st.data[p.task][0], st.device))
    display.started(p.task, p.variant)


def _record(st: _Open, p: record.Pending, result: dict[str, Any]) -> dict[str, Any]:
    """Record a finished trial in the module docstring's order: history, row, Optuna, MLflow."""
    row = make_row(
        st.cfg,
        p,
        hyperparameters(p.params),
        result,
        st.data[p.task][1],
        tasks.get(p.task).metric,
        st.version,
        st.device,
    )
    sdir = st.cfg.study_dir
    part = results.epochs_path(sdir, p.task, p.variant, p.number)
    if part.exists():  # history of an earlier run of this trial that no store held a row for
        log.warning("%s: kept the earlier run's history as %s", part, stores.aside(part, sdir))
    with preflight.writing(part):
        results.write_epochs(sdir, p.task, p.variant, p.number, result.get("history", []))
    with preflight.writing(sdir / results.TRIALS_FILE):
        st.table = results.append_trial(sdir, row)
    with preflight.writing(st.cfg.optuna_storage):
        record.tell(st.studies[(p.task, p.variant)], p.number, row)
    with preflight.writing(st.cfg.mlflow_uri):
        st.tracker.log_trial(row, result.get("history", []))
    return row


def _count(cfg: StudyConfig, df: pd.DataFrame, ran: int) -> dict[str, Any]:
    """Counts of this study's pairs in the table: complete, failed, expected, and run now."""
    pairs = set(_pairs(cfg))
    mine = [(t, v) in pairs for t, v in zip(df.get("task", []), df.get("variant", []), strict=True)]
    status = df["status"][mine] if len(df) else []
    counts = {
        "complete": int(sum(s == "complete" for s in status)),
        "failed": int(sum(s == "failed" for s in status)),
        # per pair, the trials asked for now, or more where earlier runs asked for (and ran) more
        "expected": sum(
            max(cfg.trials, int(((df["task"] == t) & (df["variant"] == v)).sum()) if len(df) else 0)
            for t, v in _pairs(cfg)
        ),
        "ran": ran,
    }
    log.info(
        "study %s: %d complete, %d failed of %d expected (%d run now)",
        cfg.name,
        counts["complete"],
        counts["failed"],
        counts["expected"],
        ran,
    )
    return counts


MAX_ATTEMPTS = 3  # a trial hit by a system error (not a divergence) runs at most this often


class TrialError(UserError):
    """A trial kept failing for a reason outside its hyperparameters; the study stops unrecorded."""


def _retry_or_stop(p: record.Pending, result: dict[str, Any], attempts: dict, queue: deque) -> None:
    """Rerun a trial whose worker raised or died (same parameters); after MAX_ATTEMPTS stop the
    study without recording it, so that fixing the cause and rerunning the command resumes it."""
    key = (p.task, p.variant, p.number)
    attempts[key] = attempts.get(key, 1) + 1
    first_line = str(result.get("error", "")).splitlines()[0] if result.get("error") else "?"
    if attempts[key] > MAX_ATTEMPTS:
        raise TrialError(
            f"trial {p.task}/{p.variant}/{p.number} failed {MAX_ATTEMPTS} times for a reason "
            f"outside its hyperparameters, so the study stopped without recording it:\n"
            f"{result.get('error')}\nNothing recorded is lost: fix the cause and run the same "
            f"command again to resume."
        )
    log.warning(
        "%s/%s trial %d: %s; running it again (attempt %d of %d)",
        p.task,
        p.variant,
        p.number,
        first_line,
        attempts[key],
        MAX_ATTEMPTS,
    )
    queue.appendleft(p)
