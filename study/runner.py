"""The driver of a study (DESIGN.md "The run, end to end"): config check, data, Optuna, Ray, MLflow.

Recording order per finished trial: per-epoch history, then the results row (atomic), then Optuna
`tell`, then the MLflow run. The results table is the source of truth; on every start Optuna and
MLflow are reconciled from it, so a driver killed at any moment (even `kill -9`) resumes exactly:

    killed after ask, before/while the trial runs  -> Optuna RUNNING, no row: rerun, same params,
                                                      told to the same trial number
    killed while the row is written                -> os.replace: old table or new one
    killed after the row, before tell              -> Optuna RUNNING with a row: told from the row
    killed after tell, before / during MLflow      -> row without a terminated run: logged again

New trials are asked one at a time just before they are submitted, so at most `workers` trials
are ever RUNNING in Optuna. One driver per study at a time (a lock file enforces it).
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import math
import os
import shutil
import subprocess
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from study import config as config_mod
from study import plan, record, repair, results, stores
from study.cli import RUN_LOG, UserError, die_if_forked
from study.config import StudyConfig
from study.space import hyperparameters, search_space

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def code_version() -> str:
    """`git describe` of the checkout (with -dirty), else the installed package version."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from importlib.metadata import version

        return version("lstm-odyssey")
    except Exception:  # not installed
        return "unknown"


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda but torch sees no CUDA device; valid here: cpu, auto")
    return device


@contextmanager
def study_lock(study_dir: Path) -> Iterator[None]:
    """Refuse a second driver on the same study (released by the OS even after kill -9).

    A start that ends before the study's config was saved (a wrong data path, a bad URL,
    Ctrl-C during data preparation) recorded nothing: it leaves no lock file, and a folder it
    found empty is removed again, so that `status` and `report` do not take it for a study."""
    study_dir.mkdir(parents=True, exist_ok=True)
    path = study_dir / ".lock"
    fresh = not any(p.name not in (".lock", RUN_LOG) for p in study_dir.iterdir())
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not path.is_file() or os.fstat(f.fileno()).st_ino != os.stat(path).st_ino:
                raise FileNotFoundError  # a failed start removed the file we opened: one at a time
        except (BlockingIOError, FileNotFoundError):
            f.seek(0)
            raise ValueError(
                f"study {study_dir} is already being run by another driver "
                f"(pid {f.read().strip() or '?'}); wait for it or stop it"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            if not (study_dir / "config.yaml").is_file():  # still held: nobody can be starting
                path.unlink(missing_ok=True)
                if fresh and not (study_dir / results.TRIALS_FILE).exists():
                    shutil.rmtree(study_dir, ignore_errors=True)
            fcntl.flock(f, fcntl.LOCK_UN)


def check_config(cfg: StudyConfig) -> None:
    """Refuse a config that changes what the study's (saved) trials mean."""
    path = cfg.study_dir / "config.yaml"
    if path.is_file():
        old = config_mod.load_saved(path)
        diff = config_mod.fingerprint_diff(old, cfg)
        if diff:
            raise ValueError(
                f"study {cfg.name!r} in {cfg.study_dir} was run with a different "
                f"{', '.join(diff)}; that would change what its trials mean. Use the saved "
                f"settings, or start a new study with --study NEW_NAME"
            )


def save_config(cfg: StudyConfig) -> None:
    """Save the resolved config: done once the data and the stores opened, so a first start that
    fails on a typo (a wrong data path, a bad URL) does not bind the study to it. It describes the
    whole study: a run over fewer tasks or variants, or fewer trials, than earlier runs keeps
    theirs (the union of tasks and variants, the most trials asked), so that reports and
    `status` still know what was planned for every pair."""
    path = cfg.study_dir / "config.yaml"
    if path.is_file():
        old = config_mod.load_saved(path)
        cfg = dataclasses.replace(
            cfg,
            tasks=tuple(dict.fromkeys(old.tasks + cfg.tasks)),
            variants=tuple(dict.fromkeys(old.variants + cfg.variants)),
            custom_variants={**old.custom_variants, **cfg.custom_variants},
            trials=max(old.trials, cfg.trials),
        )
    tmp = path.with_name(".config.yaml.tmp")
    tmp.write_text(config_mod.dump(cfg))
    os.replace(tmp, path)


DATA_SUMMARY = "data.json"
LEGACY_VERSIONS = "data_versions.json"  # what studies before data.json recorded


def record_data(study_dir: Path, metas: dict[str, dict]) -> None:
    """Check and record the data each task trains on, in `data.json` (source, stand-in or not,
    data version, split sizes, the task's notes: dropped lines, conventions; the report shows it).

    A resume on data of another version than the study started on is refused: a newer generator
    or feature extractor made it, and the trials would no longer be comparable."""
    import json

    import tasks

    path = study_dir / DATA_SUMMARY
    if path.is_file():
        seen = json.loads(config_mod.read_text(path))
        versions = {t: int(s["data_version"]) for t, s in seen.items()}
    else:
        seen = {}
        legacy = study_dir / LEGACY_VERSIONS
        versions = json.loads(legacy.read_text()) if legacy.is_file() else {}
    now = {t: int(m.get("data_version", 1)) for t, m in metas.items()}
    changed = {t: (versions[t], v) for t, v in now.items() if t in versions and versions[t] != v}
    if changed:
        what = ", ".join(f"{t} (version {a} -> {b})" for t, (a, b) in changed.items())
        raise ValueError(
            f"the prepared data changed since study {study_dir.name!r} started: {what}; its "
            f"trials would not be comparable. Start a new study with --study NEW_NAME"
        )
    for name, meta in metas.items():
        seen[name] = {
            "source": meta.get("source"),
            "stand_in": bool(meta.get("stand_in", False)),
            "origin": meta.get("origin"),
            "data_version": now[name],
            "splits": meta.get("splits", {}),
            "notes": list(tasks.get(name).data_notes(meta)),
        }
    tmp = path.with_name(f".{DATA_SUMMARY}.tmp")
    tmp.write_text(json.dumps(seen, indent=2))
    os.replace(tmp, path)


def init_mlflow_store(uri: str) -> None:
    """Create MLflow's schema in the database at `uri`."""
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=uri).search_experiments(max_results=1)


def _check_server(what: str, uri: str) -> None:
    """`require_answer` for the http(s) or database server named by `uri`, if any."""
    from urllib.parse import urlsplit

    from study.scheduler import require_answer

    parts = urlsplit(uri)
    if parts.scheme in ("", "file") or parts.scheme.startswith("sqlite") or not parts.hostname:
        return
    default_ports = {"http": 80, "https": 443, "postgresql": 5432, "mysql": 3306}
    try:
        port = parts.port or default_ports.get(parts.scheme.split("+")[0])
    except ValueError:
        return  # a malformed port: the client's own error says it better
    if port is not None:
        require_answer(
            parts.hostname,
            port,
            f"the {what} {uri} does not answer",
            "start that server, or leave the option out to keep the store in the study folder",
        )


def open_store(
    what: str,
    uri: str,
    opener: Callable[[str], Any],
    default_db: Path | None,
    init: Callable[[str], Any] | None = None,
    if_broken: str = "",
) -> Any:
    """`opener(uri)`, with a one-line error naming `what` and the URI when it fails (plus
    `if_broken`, advice for a study folder's own database that exists but does not open).

    `default_db`: the study folder's own SQLite file behind `uri`, if it is one. A new one is
    built under a temporary name and moved into place once its schema is complete (`init`, or
    `opener` itself), so that a first start killed while the schema is written leaves no
    half-built database that every later start would trip on."""
    _check_server(what, uri)
    if default_db is not None and not default_db.exists():
        for stale in default_db.parent.glob(f".{default_db.name}.init-*"):
            stale.unlink(missing_ok=True)  # from a start killed while building (we hold the lock)
        tmp = default_db.with_name(f".{default_db.name}.init-{os.getpid()}")
        try:
            (init or opener)(f"sqlite:///{tmp.resolve()}")
        except Exception as e:  # noqa: BLE001 - reported with what was being opened
            raise ValueError(f"could not create the {what} {uri}: {e}") from e
        os.replace(tmp, default_db)
    try:
        return opener(uri)
    except Exception as e:  # noqa: BLE001 - reported with what was being opened
        hint = (
            if_broken
            if default_db is not None
            else "; valid: a URL like sqlite:////abs/path.db, or a server whose driver is installed"
        )
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"could not open the {what} {uri}: {first}{hint}") from e


def prepare_data(cfg: StudyConfig) -> dict[str, tuple[str, dict]]:
    """Prepared data folder and meta per task, preparing what is missing (cached in data_dir)."""
    import tasks
    from tasks.base import dataset_key, default_data_dir, prepared_dir, read_meta

    out = {}
    data_dir = Path(cfg.data_dir).expanduser() if cfg.data_dir else default_data_dir()
    for name in cfg.tasks:
        d = cfg.data_for(name)
        source = d.source or tasks.get(name).default_source
        folder = prepared_dir(data_dir, name, dataset_key(source, d.size, d.seed))
        meta_ok = (folder / "meta.json").is_file()
        if (
            meta_ok
            and d.path is not None
            and read_meta(folder).get("path") == str(Path(d.path).expanduser())
        ):
            out[name] = (str(folder), read_meta(folder))  # tasks.prepare re-reads a given path
            continue
        if not meta_ok or d.path is not None:
            log.info(
                "preparing %s data (source %s%s) in %s",
                name,
                source,
                f", size {d.size}" if d.size else "",
                folder,
            )
        folder, meta = tasks.prepare(name, source, d.path, d.size, d.seed, data_dir, progress=False)
        out[name] = (str(folder), meta)
    return out


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
        started_at=result.get("started_at"),
        finished_at=result.get("finished_at"),
        code_version=version,
        metric=metric,
        data_source=str(data_meta.get("source")),
        stand_in=bool(data_meta.get("stand_in", False)),
        test_extra=result.get("test_extra") or {},
    )


class _DeferredTerminate:
    """While a study runs, SIGTERM (`timeout`, `docker stop`, Slurm) stops it at the next point
    between two recordings, as an interrupt (the CLI says how to resume), instead of in the
    middle of a database write."""

    def __init__(self) -> None:
        import signal
        import threading

        self.requested = False
        self.pid = os.getpid()
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._request)

    def _request(self, signum, frame) -> None:
        if not die_if_forked(self.pid):
            self.requested = True

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def restore(self) -> None:
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
            self.previous = None


def run(
    cfg: StudyConfig,
    executor_factory: Callable[[StudyConfig, str], Any] | None = None,
    live: bool | None = None,
) -> dict[str, Any]:
    """Run or resume a study; returns counts {'complete', 'failed', 'expected', 'ran'}."""
    stores.check_results_dir(cfg.study_dir)
    with study_lock(cfg.study_dir), ExitStack() as held:  # held: the lease of a shared storage
        check_config(cfg)
        return _run_locked(cfg, executor_factory, live, held)


def _ray_executor(cfg: StudyConfig, device: str):
    from study.scheduler import RayExecutor

    return RayExecutor(cfg.ray_address, cfg.workers, device, cfg.gpus_per_trial)


def _run_locked(
    cfg: StudyConfig, executor_factory, live: bool | None, held: ExitStack | None = None
) -> dict[str, Any]:
    import tasks
    from study.progress import Display

    device = resolve_device(cfg.device)
    version = code_version()
    sdir = cfg.study_dir
    log.info(
        "study %s: results in %s (trials.parquet), config in %s",
        cfg.name,
        sdir,
        sdir / "config.yaml",
    )
    data = prepare_data(cfg)
    record_data(sdir, {t: meta for t, (_, meta) in data.items()})
    found = repair.Findings(fix=True)
    df = repair.load_table(sdir, found)
    space = search_space(cfg.space)
    directions = {t: tasks.get(t).metric_direction for t in cfg.tasks}
    studies = stores.open_optuna(cfg, directions, found, held, open_store)
    tracker = stores.open_tracker(cfg, version, found, open_store, init_mlflow_store)
    save_config(cfg)
    runs = tracker.trial_runs()
    df = repair.rebuild_rows(sdir, cfg.name, df, studies, runs, found)
    by_pair = _rows_by_pair(df)
    queue: deque = deque()
    new_counts: dict[tuple[str, str], int] = {}
    for (task, variant), s in studies.items():
        rows = by_pair.get((task, variant), {})
        repair.restore_optuna(s, (task, variant), rows, space, found)
        rerun, orphans = record.reconcile(s, task, variant, rows, space)
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
        queue.extend(rerun)
        if rerun:
            log.info(
                "%s/%s: rerunning interrupted trials %s with their parameters",
                task,
                variant,
                [p.number for p in rerun],
            )
        new_counts[(task, variant)] = max(0, cfg.trials - record.count_trials(s))
    # new trials round-robin over the pairs, so every pair progresses evenly
    for k in range(max(new_counts.values(), default=0)):
        queue.extend(pair for pair, n in new_counts.items() if k < n)

    repair.repair_epochs(sdir, df, tracker, runs, found)  # before MLflow logs runs from history
    relogged = tracker.reconcile(
        df.to_dict("records"),
        lambda t, v, k: results.history_records(results.read_epochs(sdir, t, v, k)),
    )
    if relogged:
        log.info("MLflow: logged %d recorded trials that had no run", relogged)
    log.info("Optuna: %s  (view: optuna-dashboard %s)", cfg.optuna_storage, cfg.optuna_storage)
    log.info("MLflow: %s  (view: mlflow ui --backend-store-uri %s)", cfg.mlflow_uri, cfg.mlflow_uri)

    ran, finished_ok = 0, False
    attempts: dict[tuple[str, str, int], int] = {}
    executor = None
    terminate = _DeferredTerminate()
    pack = plan.pack_size(cfg, device)
    try:
        if queue:
            if pack > 1:
                queue = _ask_packs(cfg, studies, space, queue, pack)
            log.info(
                "%d trials to run on %s%s",
                sum(len(i) if isinstance(i, list) else 1 for i in queue),
                device,
                f", in packs of up to {pack} trials" if pack > 1 else "",
            )
            executor = (executor_factory or _ray_executor)(cfg, device)
            metrics = {t: tasks.get(t).metric for t in cfg.tasks}
            with Display(
                cfg.name, _pairs(cfg), cfg.trials, directions, executor.workers, live, metrics
            ) as display:
                display.update(df)
                while queue or executor.in_flight:
                    terminate.check()  # between recordings: nothing is half written
                    while queue and executor.in_flight < executor.workers:
                        item = queue.popleft()
                        if pack > 1 and isinstance(item, record.Pending):  # retried trials:
                            item = _repack(item, queue)  # packed again with their pair's
                        if isinstance(item, list):  # a pack of asked trials of one pair
                            job = plan.pack_job(cfg, item, data[item[0].task][0], device, pack)
                            executor.submit(item, job)
                            for p in item:
                                display.started(p.task, p.variant)
                            continue
                        p = (
                            item
                            if isinstance(item, record.Pending)
                            else record.ask(studies[item], space, *item)
                        )
                        executor.submit(p, plan.trial_job(cfg, p, data[p.task][0], device))
                        display.started(p.task, p.variant)
                    for p, result in executor.wait(timeout=1.0):
                        if result.get("retryable"):
                            _retry_or_stop(p, result, attempts, queue)
                            display.requeued(p.task, p.variant)
                            continue
                        hp = hyperparameters(p.params)
                        row = make_row(
                            cfg,
                            p,
                            hp,
                            result,
                            data[p.task][1],
                            tasks.get(p.task).metric,
                            version,
                            device,
                        )
                        results.write_epochs(
                            sdir, p.task, p.variant, p.number, result.get("history", [])
                        )
                        df = results.append_trial(sdir, row)
                        record.tell(studies[(p.task, p.variant)], p.number, row)
                        tracker.log_trial(row, result.get("history", []))
                        ran += 1
                        display.finished(row, df)
                    display.update()
        finished_ok = True
    finally:
        terminate.restore()
        if executor is not None:
            executor.shutdown()
        tracker.close(finished_ok)

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


def _ask_packs(cfg: StudyConfig, studies: dict, space: dict, queue: deque, pack: int) -> deque:
    """Turn the queue (interrupted trials and pairs to ask) into packs: every remaining trial
    of a pair is asked now (random search draws them independently of results), then the
    pair's trials are cut into packs of similar hidden size, round-robin over the pairs."""
    import tasks

    by_pair: dict[tuple[str, str], list[record.Pending]] = {}
    for item in queue:
        p = item if isinstance(item, record.Pending) else record.ask(studies[item], space, *item)
        by_pair.setdefault((p.task, p.variant), []).append(p)
    per_pair = [
        plan.cut_into_packs(
            trials, pack, cfg.space.hidden_size_meaning, tasks.get(task).bidirectional
        )
        for (task, _), trials in by_pair.items()
    ]
    return deque(plan.interleave(per_pair))


def _repack(first: record.Pending, queue: deque) -> list[record.Pending]:
    """`first` and the other retried trials of its pair waiting in `queue`, as one pack."""
    pair = (first.task, first.variant)
    same = [q for q in queue if isinstance(q, record.Pending) and (q.task, q.variant) == pair]
    for q in same:
        queue.remove(q)
    return [first, *same]


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
