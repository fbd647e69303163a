"""What runs in a worker process: one trial (`run_trial`) or a pack of trials (`run_pack`): load the
prepared data (once per process), train, and return each result with its per-epoch history. No
Ray, Optuna or MLflow here either, so the same functions serve Ray workers and the in-process
executor of tests."""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_DATA: dict[str, Any] = {}  # prepared folder -> splits, kept for the life of the process


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def load_splits(data_path: str):
    from tasks.base import load_prepared

    if data_path not in _DATA:
        _DATA.clear()  # one dataset at a time keeps a worker's memory bounded
        _DATA[data_path] = load_prepared(Path(data_path))[0]
    return _DATA[data_path]


def retryable(error: str, epochs: int = 0, history: list | None = None) -> dict[str, Any]:
    """A result that is no property of the trial's hyperparameters (an exception, a dead
    worker): the driver reruns the trial or stops the study, and records nothing."""
    return {
        "status": "error",
        "retryable": True,
        "error": error,
        "epochs": epochs,
        "history": history if history is not None else [],
    }


def activate_plugins(job: dict[str, Any]) -> None:
    """Register the study's plug-ins in this process (a worker imports the package afresh and
    knows only the built-ins), by the import paths the job carries."""
    declared = job.get("plugins") or {}
    if declared.get("cells") or declared.get("tasks"):
        from study.plugins import activate

        activate(declared, job.get("plugin_dirs") or ())


def variant_of(job: dict[str, Any]) -> Any:
    """The job's variant: its registry name, or the spec of a variant declared in the study
    file (`variant_spec`, flags as `variants.spec_from_dict` takes them)."""
    if job.get("variant_spec") is not None:
        import variants

        return variants.spec_from_dict(job["variant_spec"])
    return job["variant"]


def run_trial(job: dict[str, Any]) -> dict[str, Any]:
    """`job`: task, variant, trial, hparams, data_path, training (TrainConfig fields), seed,
    device, hidden_size_meaning. Returns the train() result plus history, started_at,
    finished_at: the job runs as a pack of one (`run_pack`). A divergence is a result (the trial
    is failed). Any other exception (a missing data file on a node, out of memory, a bug) is not
    a property of the trial's hyperparameters: it comes back as status 'error' with `retryable`,
    and the driver reruns the trial or stops the study without recording it, so nothing is
    wrongly recorded as failed."""
    trial = {"trial": job.get("trial"), "hparams": job["hparams"], "seed": job["seed"]}
    single = {k: v for k, v in job.items() if k not in ("trial", "hparams", "seed")}
    (result,) = run_pack({**single, "trials": [trial], "slots": 1})
    if "trial" not in job:
        result.pop("trial")
    return result


def run_pack(job: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A pack job (`study.pack`): task, variant, trials ([{trial, hparams, seed}]), slots,
    data_path, training, device, hidden_size_meaning. Yields one result per trial, as
    `run_trial` returns it plus `trial`, as soon as the trial finishes. Any exception other than
    a divergence becomes a retryable error for every trial not yet yielded."""
    import tasks
    from study.config import TrainConfig
    from study.pack import PackTrial, train_pack

    histories: dict[Any, list[dict[str, Any]]] = {t["trial"]: [] for t in job["trials"]}
    pending = dict.fromkeys(histories)
    started = now_iso()
    try:
        activate_plugins(job)
        trials = [PackTrial(t["trial"], t["hparams"], t["seed"]) for t in job["trials"]]
        results = train_pack(
            tasks.get(job["task"]),
            variant_of(job),
            trials,
            load_splits(job["data_path"]),
            TrainConfig(**job["training"]),
            job["slots"],
            lambda key, metrics: histories[key].append(metrics),
            job["device"],
            job["hidden_size_meaning"],
        )
        for key, result in results:
            pending.pop(key)
            yield {**result, "trial": key, "history": histories[key], "finished_at": now_iso()}
    except Exception as e:  # reported to the driver per trial, which reruns them or stops
        tb = traceback.format_exc(limit=6)
        for key in pending:
            yield {
                **retryable(f"{type(e).__name__}: {e}\n{tb}", len(histories[key]), histories[key]),
                "trial": key,
                "started_at": started,
                "finished_at": now_iso(),
            }
