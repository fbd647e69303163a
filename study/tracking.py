"""MLflow tracking of a study, from the driver only (workers never talk to MLflow).

Default store: SQLite `<results>/<study>/mlflow.db` (MLflow 3's default backend; the file store
is legacy). Open it with `mlflow ui --backend-store-uri sqlite:///<results>/<study>/mlflow.db`.
One experiment per study holding a parent run (tag role=study) and one nested child run per
finished trial (tags task, variant, seed, trial, key, code_version, device, numerics, status;
params are the four hyperparameters; metrics per epoch with step = epoch plus the final `best/*` values).
A trial's child run is logged in one batch and then terminated, so `reconcile` can tell complete
runs (FINISHED / FAILED) from runs cut off by a crash (RUNNING: deleted and logged again).
A trial has at most one run: `reconcile` matches runs to rows on the `key` tag
(task/variant/trial; the experiment is the study) and deletes any second run of a key. The tag
`row` keeps the trial's whole result row (JSON), so a lost results table is rebuilt exactly.
"""

from __future__ import annotations

import logging
import math
import os
import time
from datetime import datetime
from typing import Any

# Nothing leaves the machine: MLflow 3 sends usage telemetry by default, decided when it is
# imported. A user can still opt in by setting the variable. The study's other MLflow users
# import MlflowClient from here, so that this line runs first.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param  # noqa: E402

from study.config import flatten  # noqa: E402
from study.results import row_to_json

log = logging.getLogger(__name__)
_BATCH = 1000  # MLflow's limit of metrics per log_batch call
ROW_TAG = "row"  # a trial run's tag holding its result row as JSON


def trial_key(task: str, variant: str, trial: int) -> str:
    return f"{task}/{variant}/{trial}"


def _ms(iso: str | None) -> int:
    """Milliseconds since the epoch of an ISO timestamp (now if missing: null, or NaN as pandas
    reads a column that is all null)."""
    if not isinstance(iso, str) or not iso:
        return int(time.time() * 1000)
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


class Tracker:
    def __init__(
        self,
        uri: str,
        study: str,
        config: dict[str, Any],
        code_version: str,
        artifact_location: str | None = None,
    ) -> None:
        """`artifact_location`: where a new experiment keeps artifacts (MLflow's default is
        ./mlruns under the current directory; the runner puts it in the study folder)."""
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(study)
        self.experiment_id = (
            exp.experiment_id
            if exp
            else self.client.create_experiment(study, artifact_location=artifact_location)
        )
        found = self.client.search_runs([self.experiment_id], "tags.role = 'study'", max_results=1)
        if found:
            self.parent_id = found[0].info.run_id
            self.client.update_run(self.parent_id, status="RUNNING")
        else:
            run = self.client.create_run(
                self.experiment_id,
                run_name=study,
                tags={"role": "study", "study": study, "code_version": code_version},
            )
            self.parent_id = run.info.run_id
            params = [Param(k, str(v)[:6000]) for k, v in flatten(config).items()]
            for i in range(0, len(params), 100):
                self.client.log_batch(self.parent_id, params=params[i : i + 100])

    def trial_runs(self) -> list:
        runs, token = [], None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], "tags.role = 'trial'", max_results=1000, page_token=token
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def reconcile(self, rows: list[dict[str, Any]], history: Any) -> int:
        """Log every result row that has no terminated child run; returns how many were logged.
        `history(task, variant, trial)` gives a trial's per-epoch records."""
        done = set()
        for run in sorted(self.trial_runs(), key=lambda r: r.info.start_time or 0):
            key = run.data.tags.get("key")
            if run.info.status in ("FINISHED", "FAILED") and key not in done:
                done.add(key)
            else:  # cut off by a crash, or a second run of a trial: one run per trial
                if key in done:
                    log.info("MLflow: deleted a second run of trial %s", key)
                self.client.delete_run(run.info.run_id)
        missing = [r for r in rows if trial_key(r["task"], r["variant"], r["trial"]) not in done]
        for r in missing:
            self.log_trial(r, history(r["task"], r["variant"], r["trial"]))
        return len(missing)

    def log_trial(self, row: dict[str, Any], history: list[dict[str, Any]]) -> None:
        key = trial_key(row["task"], row["variant"], row["trial"])
        tags = {
            "mlflow.parentRunId": self.parent_id,
            "role": "trial",
            "key": key,
            **{
                k: str(row[k])
                for k in (
                    "task",
                    "variant",
                    "seed",
                    "trial",
                    "code_version",
                    "device",
                    "numerics",
                    "status",
                    "metric",
                    "data_source",
                )
            },
        }
        if row.get("error"):
            tags["error"] = str(row["error"])[:5000]
        tags[ROW_TAG] = row_to_json(row, max_chars=8000)  # MLflow's tag length limit
        run = self.client.create_run(
            self.experiment_id, run_name=key, tags=tags, start_time=_ms(row.get("started_at"))
        )
        params = [Param(k[3:], str(row[k])) for k in row if k.startswith("hp_")]
        now = int(time.time() * 1000)
        metrics = [
            Metric(k, float(v), now, int(rec["epoch"]))
            for rec in history
            for k, v in rec.items()
            if k != "epoch" and isinstance(v, (int, float)) and math.isfinite(v)
        ]
        finals = {
            "best/val_metric": row["val_metric"],
            "best/test_metric": row["test_metric"],
            "train_loss": row["train_loss"],
            "wall_s": row["wall_s"],
            "n_params": row["n_params"],
            "epochs": row["epochs"],
            "best_epoch": row["best_epoch"],
        }
        metrics += [
            Metric(k, float(v), now, 0)
            for k, v in finals.items()
            if v is not None and math.isfinite(float(v))
        ]
        self.client.log_batch(run.info.run_id, params=params)
        for i in range(0, len(metrics), _BATCH):
            self.client.log_batch(run.info.run_id, metrics=metrics[i : i + _BATCH])
        self.client.set_terminated(
            run.info.run_id,
            "FINISHED" if row["status"] == "complete" else "FAILED",
            end_time=_ms(row.get("finished_at")),
        )

    def close(self, finished: bool) -> None:
        self.client.set_terminated(self.parent_id, "FINISHED" if finished else "KILLED")
