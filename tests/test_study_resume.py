"""Resume logic of the driver without Ray (trials run in-process): a crash at each point of
recording a trial, then the same command again; every trial must appear exactly once in the
results table, in Optuna (same number, same parameters) and in MLflow. A diverging trial is
recorded as failed and the study goes on."""

from __future__ import annotations

import math

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

import tasks
import variants
from study import record, results, runner, setup
from study.scheduler import InlineExecutor
from study.tracking import Tracker
from study.worker import run_trial

pytestmark = pytest.mark.integration  # whole studies


class Killed(BaseException):
    """Stands in for the driver dying (BaseException: nothing in the driver may catch it)."""


def _run(cfg, fn=run_trial):
    return runner.run(cfg, executor_factory=lambda c, d: InlineExecutor(fn), live=False)


def _optuna(cfg, variant):
    return optuna.load_study(
        study_name=f"{cfg.name}/jsb_chorales/{variant}", storage=cfg.optuna_storage
    )


def _check_exactly_once(cfg):
    df = results.read_trials(cfg.study_dir)
    assert len(df) == 6 and not df.duplicated(["task", "variant", "trial"]).any()
    for v in ("V", "NP"):
        sub = df[df["variant"] == v].set_index("trial")
        assert sorted(sub.index) == [0, 1, 2]
        trials = _optuna(cfg, v).get_trials()
        assert [t.number for t in trials] == [0, 1, 2]
        for t in trials:
            row = sub.loc[t.number]
            assert t.params["hidden_size"] == row["hp_hidden_size"]
            assert 1 - t.params["one_minus_momentum"] == pytest.approx(row["hp_momentum"])
            if row["status"] == "complete":
                assert t.state == TrialState.COMPLETE and t.value == row["val_metric"]
            else:
                assert t.state == TrialState.FAIL
    client = MlflowClient(cfg.mlflow_uri)
    exp = client.get_experiment_by_name(cfg.name)
    runs = client.search_runs([exp.experiment_id], "tags.role = 'trial'")
    keys = sorted(r.data.tags["key"] for r in runs)
    assert keys == sorted(f"jsb_chorales/{v}/{k}" for v in ("V", "NP") for k in range(3))
    assert all(r.info.status in ("FINISHED", "FAILED") for r in runs)
    parent = client.search_runs([exp.experiment_id], "tags.role = 'study'")
    assert len(parent) == 1 and all(
        r.data.tags["mlflow.parentRunId"] == parent[0].info.run_id for r in runs
    )
    return df


def test_killed_while_a_trial_runs(tmp_path, smoke):
    cfg = smoke()
    calls = []

    def dies_on_third(job):
        calls.append(job)
        if len(calls) == 3:
            raise Killed
        return run_trial(job)

    with pytest.raises(Killed):
        _run(cfg, dies_on_third)
    assert len(results.read_trials(cfg.study_dir)) == 2
    running = [
        t
        for v in ("V", "NP")
        for t in _optuna(cfg, v).get_trials()
        if t.state == TrialState.RUNNING
    ]
    assert len(running) == 1
    asked = calls[2]

    rerun = []
    counts = _run(cfg, lambda job: rerun.append(job) or run_trial(job))
    assert counts == {"complete": 6, "failed": 0, "expected": 6, "ran": 4}
    # the interrupted trial ran first, with its original number and parameters
    first = rerun[0]
    assert (first["variant"], first["trial"], first["hparams"], first["seed"]) == (
        asked["variant"],
        asked["trial"],
        asked["hparams"],
        asked["seed"],
    )
    _check_exactly_once(cfg)
    # a third run has nothing to do
    assert _run(cfg, lambda job: pytest.fail("nothing should run"))["ran"] == 0


@pytest.mark.parametrize("where", ["row_write", "tell", "mlflow"])
def test_killed_while_recording(tmp_path, monkeypatch, where, smoke):
    cfg = smoke()
    real = {
        "row_write": (results.os, "replace"),
        "tell": (record, "tell"),
        "mlflow": (Tracker, "log_trial"),
    }[where]
    original = getattr(*real)
    state = {"n": 0}

    def dies_on_second(*args, **kwargs):
        if where == "row_write" and not str(args[1]).endswith("trials.parquet"):
            return original(*args, **kwargs)  # epoch part files are written normally
        state["n"] += 1
        if state["n"] == 2:
            raise Killed
        return original(*args, **kwargs)

    monkeypatch.setattr(*real, dies_on_second)
    with pytest.raises(Killed):
        _run(cfg)
    monkeypatch.setattr(*real, original)
    rows = len(results.read_trials(cfg.study_dir))
    assert rows == (1 if where == "row_write" else 2)  # os.replace: old table, never a torn one
    counts = _run(cfg)
    assert counts["complete"] == 6 and counts["ran"] == 6 - rows
    df = _check_exactly_once(cfg)
    client = MlflowClient(cfg.mlflow_uri)
    exp = client.get_experiment_by_name(cfg.name)
    for run in client.search_runs([exp.experiment_id], "tags.role = 'trial'"):
        task, variant, k = run.data.tags["key"].split("/")
        row = df[(df["variant"] == variant) & (df["trial"] == int(k))].iloc[0]
        steps = client.get_metric_history(run.info.run_id, "val/nll")
        assert [m.step for m in steps] == list(range(1, row["epochs"] + 1))
        assert run.data.metrics["best/test_metric"] == row["test_metric"]


def test_diverging_trial_is_failed_and_the_study_goes_on(tmp_path, smoke):
    cfg = smoke()
    crashes = []

    def diverge_v1(job):
        if (job["variant"], job["trial"]) == ("V", 1):
            job = {**job, "hparams": {**job["hparams"], "learning_rate": math.inf}}
        return run_trial(job)

    def crash_np2_once(job):  # a transient system error: rerun with the same parameters
        if (job["variant"], job["trial"]) == ("NP", 2) and not crashes:
            crashes.append(job["hparams"])
            raise RuntimeError("boom")
        if (job["variant"], job["trial"]) == ("NP", 2):
            assert job["hparams"] == crashes[0]
        return diverge_v1(job)

    counts = _run(cfg, lambda job: _guard(crash_np2_once, job))
    assert counts == {"complete": 5, "failed": 1, "expected": 6, "ran": 6}
    df = _check_exactly_once(cfg).set_index(["variant", "trial"])
    assert df.loc[("V", 1), "status"] == "failed" and "became nan" in df.loc[("V", 1), "error"]
    assert df.loc[("NP", 2), "status"] == "complete"
    assert math.isnan(df.loc[("V", 1), "test_metric"])
    assert (df[df["status"] == "complete"]["test_metric"] > 0).all()


def test_a_persistent_system_error_stops_the_study_unrecorded_and_resumes(tmp_path, smoke):
    cfg = smoke()

    def broken_np1(job):
        if (job["variant"], job["trial"]) == ("NP", 1):
            raise FileNotFoundError("data not on this node")
        return run_trial(job)

    with pytest.raises(runner.TrialError, match="(?s)NP/1 failed 3 times.*data not on this node"):
        _run(cfg, lambda job: _guard(broken_np1, job))
    df = results.read_trials(cfg.study_dir)
    assert not ((df["variant"] == "NP") & (df["trial"] == 1)).any()  # never recorded as failed
    counts = _run(cfg)  # the cause is fixed: the same command resumes
    assert counts["complete"] + counts["failed"] == 6
    _check_exactly_once(cfg)


def _guard(fn, job):
    """What a Ray worker does around the trial (study.worker.run_trial's contract): an exception
    comes back as a retryable error, not as a result of the trial."""
    try:
        return fn(job)
    except Exception as e:
        return {
            "status": "error",
            "retryable": True,
            "error": f"{type(e).__name__}: {e}",
            "epochs": 0,
            "history": [],
        }


def test_status_shows_progress_and_failures(tmp_path, capsys, smoke):
    import argparse

    from odyssey.commands.run import status

    cfg = smoke(trials=2, variants=["V"])

    def diverge_second(job):
        if job["trial"] == 1:
            job = {**job, "hparams": {**job["hparams"], "learning_rate": math.inf}}
        return run_trial(job)

    _run(cfg, diverge_second)
    capsys.readouterr()
    assert status(argparse.Namespace(study="smoke", results=cfg.results)) == 0
    out = capsys.readouterr().out
    assert "smoke: 1 complete, 1 failed of 2; not running" in out
    assert "jsb_chorales/V trial 1: training loss became nan in epoch 1" in out
    with pytest.raises(ValueError, match="no study 'nope'.*known: smoke"):
        status(argparse.Namespace(study="nope", results=cfg.results))


def test_killed_inside_ask(tmp_path, smoke):
    """The driver died while Optuna's ask stored the parameters: the rerun completes them with
    the values the per-trial seeded sampler gives trial 0 anyway."""
    from study.space import hyperparameters, make_sampler, search_space

    cfg = smoke(trials=1, variants=["V"])
    cfg.study_dir.mkdir(parents=True)
    store = record.storage(cfg.optuna_storage)
    s = record.open_study(store, "smoke", "jsb_chorales", "V", "minimize", "random", 0)
    s.ask().suggest_int("hidden_size", 4, 12, log=True)  # ... and the driver dies here
    jobs = []
    assert _run(cfg, lambda job: jobs.append(job) or run_trial(job))["ran"] == 1
    fresh = optuna.create_study(sampler=make_sampler("random", 0, "jsb_chorales", "V"))
    assert jobs[0]["trial"] == 0
    assert jobs[0]["hparams"] == hyperparameters(fresh.ask(search_space(cfg.space)).params)
    (t,) = _optuna(cfg, "V").get_trials()
    assert t.state == TrialState.COMPLETE and len(t.params) == 4


def test_resume_refuses_data_of_another_version(tmp_path, smoke):
    cfg = smoke(trials=1, variants=["V"])
    _run(cfg)
    setup.record_data(cfg.study_dir, {"jsb_chorales": {"data_version": 1}})  # same: fine
    with pytest.raises(ValueError, match=r"jsb_chorales \(version 1 -> 2\).*--study NEW_NAME"):
        setup.record_data(cfg.study_dir, {"jsb_chorales": {"data_version": 2}})
    # a study from before data.json recorded its versions in data_versions.json: still enforced
    (cfg.study_dir / "data.json").unlink()
    (cfg.study_dir / "data_versions.json").write_text('{"jsb_chorales": 0}')
    with pytest.raises(ValueError, match=r"jsb_chorales \(version 0 -> 1\)"):
        setup.record_data(cfg.study_dir, {"jsb_chorales": {"data_version": 1}})


def test_the_study_records_its_data_for_the_report(tmp_path, smoke):
    from analysis import load, provenance

    cfg = smoke(trials=1, variants=["V"])
    _run(cfg)
    recorded = results.read_data(cfg.study_dir)
    assert list(recorded.variants) == list(variants.VARIANTS)  # the order the report uses
    summary = recorded.tasks["jsb_chorales"]
    assert summary["title"] == tasks.get("jsb_chorales").title
    assert (summary["metric"], summary["direction"]) == ("nll", "minimize")
    assert summary["source"] == "real" and summary["stand_in"] is False
    assert set(summary["splits"]) == {"train", "valid", "test"}
    assert any("L - 1 predictions" in n for n in summary["notes"])
    res = load.read_results(cfg.name, cfg.results)
    table = provenance.data_sources(res.trials, res.tasks, res.data).set_index("task")
    sizes = " / ".join(f"{summary['splits'][s]['sequences']:,}" for s in ("train", "valid", "test"))
    assert table.loc["jsb_chorales", "sequences train / valid / test"] == sizes
    assert "first frame is never scored" in table.loc["jsb_chorales", "notes"]


def test_killed_while_the_mlflow_schema_is_written(tmp_path, monkeypatch, smoke):
    import sqlite3

    cfg = smoke(trials=1, variants=["V"])

    def dies_half_way(uri):
        sqlite3.connect(uri.removeprefix("sqlite:///")).execute("create table logged_models (x)")
        raise Killed

    monkeypatch.setattr(runner, "init_mlflow_store", dies_half_way)
    with pytest.raises(Killed):
        _run(cfg)
    assert not (cfg.study_dir / "mlflow.db").exists()  # the half-built schema stayed aside
    assert not (cfg.study_dir / "config.yaml").exists()
    monkeypatch.undo()
    assert _run(cfg)["complete"] == 1  # the same command again just works
    assert not list(cfg.study_dir.glob(".mlflow.db.init-*"))


def test_a_failed_first_start_does_not_bind_the_study_to_its_settings(tmp_path, smoke):
    empty = tmp_path / "empty"  # exists (else the config refuses it) but holds no corpus
    empty.mkdir()
    bad = smoke(
        trials=1,
        variants=["V"],
        data={"jsb_chorales": {"path": str(empty)}},
        data_dir=str(tmp_path / "data"),
    )
    with pytest.raises(Exception, match=str(empty)):
        _run(bad)
    assert not (bad.study_dir / "config.yaml").exists()
    assert _run(smoke(trials=1, variants=["V"]))["complete"] == 1


def test_a_broken_mlflow_store_is_kept_aside_and_rebuilt(tmp_path, smoke):
    cfg = smoke(trials=1, variants=["V"])
    cfg.study_dir.mkdir(parents=True)
    (cfg.study_dir / "mlflow.db").write_bytes(b"not a database")
    assert _run(cfg)["complete"] == 1
    (kept,) = (cfg.study_dir / "damaged").glob("mlflow.db.*")
    assert kept.read_bytes() == b"not a database"


def test_sigterm_stops_the_study_between_recordings(tmp_path, smoke):
    import os
    import signal

    cfg = smoke(trials=3)

    def run_then_sigterm(job):
        out = run_trial(job)
        if job["trial"] == 0 and job["variant"] == "V":
            os.kill(os.getpid(), signal.SIGTERM)  # arrives while this trial is being handed back
        return out

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        _run(cfg, run_then_sigterm)
    assert signal.getsignal(signal.SIGTERM) is before  # the study's handler is gone again
    df = results.read_trials(cfg.study_dir)
    assert 1 <= len(df) < 6  # stopped early, at a recording boundary
    _run(cfg)
    _check_exactly_once(cfg)


@pytest.mark.parametrize(
    ("option", "uri", "what"),
    [
        ("tracking_uri", "http://127.0.0.1:1", "MLflow tracking URI"),
        ("storage", "postgresql://u@127.0.0.1:1/db", "Optuna storage"),
    ],
)
def test_a_server_that_does_not_answer_fails_fast(tmp_path, option, uri, what, smoke):
    cfg = smoke(trials=1, variants=["V"], **{option: uri})
    with pytest.raises(ValueError, match=f"the {what} .* does not answer"):
        _run(cfg)
    assert not (cfg.study_dir / "config.yaml").exists()


def test_check_reachable_names_the_ray_address():
    from study.scheduler import check_reachable

    with pytest.raises(ValueError, match=r"no Ray cluster answers at ray://127.0.0.1:1"):
        check_reachable("ray://127.0.0.1:1")
    check_reachable("auto")  # left to Ray


def test_a_smaller_rerun_keeps_the_study_plan(tmp_path, smoke):
    from study import config as config_mod

    _run(smoke(trials=2))
    cfg = smoke(trials=1, variants=["V"])
    counts = _run(cfg)
    assert counts == {"complete": 2, "failed": 0, "expected": 2, "ran": 0}  # V has 2 >= 1
    saved = config_mod.load_saved(cfg.study_dir / "config.yaml")
    assert saved.variants == ("V", "NP") and saved.trials == 2


def test_interrupted_trials_are_listed_as_runs_of_numbers():
    from study.runner import number_ranges

    assert number_ranges([58, 52, 53, 54, 56, 59, 199]) == "52-54, 56, 58-59, 199"
    assert number_ranges([7]) == "7" and number_ranges([]) == ""
