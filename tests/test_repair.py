"""Damaged and shared stores: a finished study, one kind of damage, the same command
again. Every case must end with every trial exactly once in all four stores (trials.parquet,
epochs.parquet/, Optuna, MLflow), with the table and the history exactly as first recorded
(started_at unchanged: nothing retrained) and a logged line saying what was repaired.

One study is trained once per module; each case works on a copy of its results folder."""

from __future__ import annotations

import math
import shutil
import sqlite3

import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from study import config, results, runner
from study.scheduler import InlineExecutor
from study.tracking import Tracker
from study.worker import run_trial

pytestmark = pytest.mark.integration  # whole studies

VARIANTS = ("V", "NP")
TRIALS = 3


def _cfg(res, data, **kw):
    """The smoke study, one trial per job (the per-trial functions injected here run then)."""
    over = {"results": str(res), "data_dir": str(data), "trials": TRIALS, "training.pack": 1}
    return config.resolve("smoke", {**over, **kw})


def _run(cfg, fn=None):
    def retrain(job):
        pytest.fail(f"retrained {job['variant']}/{job['trial']}: nothing should run")

    return runner.run(cfg, executor_factory=lambda c, d: InlineExecutor(fn or retrain), live=False)


def diverge_v1(job):
    """Trial V/1 diverges: the study holds a failed trial (NaN metrics, an error) too."""
    if (job["variant"], job["trial"]) == ("V", 1):
        job = {**job, "hparams": {**job["hparams"], "learning_rate": math.inf}}
    return run_trial(job)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, smoke_data):
    base = tmp_path_factory.mktemp("finished")
    cfg = _cfg(base / "res", smoke_data)
    counts = runner.run(cfg, lambda c, d: InlineExecutor(diverge_v1), live=False)
    assert counts == {"complete": 5, "failed": 1, "expected": 6, "ran": 6}
    table = _sorted(results.read_trials(cfg.study_dir))
    epochs = _sorted_epochs(results.read_epochs(cfg.study_dir))
    return base, table, epochs


@pytest.fixture
def study(finished, tmp_path, smoke_data):
    base, table, epochs = finished
    shutil.copytree(base / "res", tmp_path / "res")
    return _cfg(tmp_path / "res", smoke_data), table, epochs


def _sorted(df):
    return df.sort_values(["task", "variant", "trial"]).reset_index(drop=True)


def _sorted_epochs(df):
    return df.sort_values(["task", "variant", "trial", "epoch", "name"]).reset_index(drop=True)


def _optuna(cfg, variant):
    return optuna.load_study(
        study_name=f"{cfg.name}/jsb_chorales/{variant}", storage=cfg.optuna_storage
    )


def _mlflow_runs(cfg):
    client = MlflowClient(cfg.mlflow_uri)
    exp = client.get_experiment_by_name(cfg.name)
    return client, exp, client.search_runs([exp.experiment_id], "tags.role = 'trial'")


def check_all_stores(cfg, table, epochs, exact_extra=True):
    df = _sorted(results.read_trials(cfg.study_dir))
    cols = [c for c in results.COLUMNS if exact_extra or c != "test_extra"]
    pd.testing.assert_frame_equal(df[cols], table[cols])  # started_at included: not retrained
    pd.testing.assert_frame_equal(_sorted_epochs(results.read_epochs(cfg.study_dir)), epochs)
    for v in VARIANTS:
        sub = df[df["variant"] == v].set_index("trial")
        trials = _optuna(cfg, v).get_trials()
        assert [t.number for t in trials] == list(range(TRIALS))
        for t in trials:
            row = sub.loc[t.number]
            assert t.params["hidden_size"] == row["hp_hidden_size"]
            assert t.params["learning_rate"] == row["hp_learning_rate"]
            assert 1 - t.params["one_minus_momentum"] == pytest.approx(row["hp_momentum"])
            if row["status"] == "complete":
                assert t.state == TrialState.COMPLETE and t.value == row["val_metric"]
            else:
                assert t.state == TrialState.FAIL and t.user_attrs["error"] == row["error"]
    client, exp, runs = _mlflow_runs(cfg)
    keys = sorted(r.data.tags["key"] for r in runs)
    assert keys == sorted(f"jsb_chorales/{v}/{k}" for v in VARIANTS for k in range(TRIALS))
    status = {r.data.tags["key"]: r.info.status for r in runs}
    assert status.pop("jsb_chorales/V/1") == "FAILED" and set(status.values()) == {"FINISHED"}
    parent = client.search_runs([exp.experiment_id], "tags.role = 'study'")
    assert len(parent) == 1
    for r in runs:
        assert r.data.tags["mlflow.parentRunId"] == parent[0].info.run_id
        _, variant, k = r.data.tags["key"].split("/")
        row = df[(df["variant"] == variant) & (df["trial"] == int(k))].iloc[0]
        if row["status"] == "complete":
            assert r.data.metrics["best/test_metric"] == row["test_metric"]
            steps = client.get_metric_history(r.info.run_id, "val/nll")
            assert [m.step for m in steps] == list(range(1, row["epochs"] + 1))


def _scramble(path, start_fraction=0.0, n=None):
    data = bytearray(path.read_bytes())
    start = int(len(data) * start_fraction)
    end = len(data) if n is None else start + n
    for i in range(start, end):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def _sql(path, statement):
    con = sqlite3.connect(path)
    con.execute(statement)
    con.commit()
    con.close()


def truncate_table(cfg):
    p = cfg.study_dir / "trials.parquet"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def remove_table(cfg):
    (cfg.study_dir / "trials.parquet").unlink()


def flip_bytes_in_table(cfg):  # same size, footer intact: only the page checksums see it
    import pyarrow.parquet as pq

    path = cfg.study_dir / "trials.parquet"
    group = pq.ParquetFile(path).metadata.row_group(0)
    column = next(
        group.column(i)
        for i in range(group.num_columns)
        if group.column(i).path_in_schema == "val_metric"
    )
    data = bytearray(path.read_bytes())
    end = column.dictionary_page_offset + column.total_compressed_size
    data[end - 12 : end - 4] = bytes(b ^ 0x5A for b in data[end - 12 : end - 4])
    path.write_bytes(bytes(data))


def garbage_optuna(cfg):
    _scramble(cfg.study_dir / "optuna.db", 0.0, 4096)


def garbage_inside_optuna(cfg):  # a sound SQLite file whose contents Optuna cannot read
    _sql(cfg.study_dir / "optuna.db", "update trial_user_attributes set value_json = '{x'")


def remove_optuna(cfg):
    (cfg.study_dir / "optuna.db").unlink()


def garbage_mlflow(cfg):
    (cfg.study_dir / "mlflow.db").write_bytes(b"not a database" * 1000)


def remove_mlflow(cfg):
    (cfg.study_dir / "mlflow.db").unlink()


def duplicate_mlflow_run(cfg):
    row = results.read_trials(cfg.study_dir).to_dict("records")[0]
    history = results.history_records(
        results.read_epochs(cfg.study_dir, row["task"], row["variant"], row["trial"])
    )
    Tracker(cfg.mlflow_uri, cfg.name, cfg.to_dict(), "x").log_trial(row, history)
    assert len(_mlflow_runs(cfg)[2]) == 7


def damage_epoch_part(cfg):
    truncate = next((cfg.study_dir / "epochs.parquet").glob("*.parquet"))
    truncate.write_bytes(truncate.read_bytes()[:100])


def remove_epochs(cfg):
    shutil.rmtree(cfg.study_dir / "epochs.parquet")


def remove_table_and_optuna(cfg):
    remove_table(cfg)
    remove_optuna(cfg)


def remove_table_and_mlflow(cfg):
    remove_table(cfg)
    remove_mlflow(cfg)


def remove_optuna_and_mlflow(cfg):
    remove_optuna(cfg)
    remove_mlflow(cfg)


CASES = [
    (truncate_table, "trials.parquet: rebuilt 6 rows (6 from Optuna)"),
    (remove_table, "trials.parquet: rebuilt 6 rows (6 from Optuna)"),
    (flip_bytes_in_table, "trials.parquet: rebuilt 6 rows (6 from Optuna)"),
    (garbage_optuna, "restored 3 recorded trials from trials.parquet"),
    (garbage_inside_optuna, "restored 3 recorded trials from trials.parquet"),
    (remove_optuna, "restored 3 recorded trials from trials.parquet"),
    (garbage_mlflow, "MLflow: logged 6 recorded trials that had no run"),
    (remove_mlflow, "MLflow: logged 6 recorded trials that had no run"),
    (duplicate_mlflow_run, "MLflow: deleted a second run of trial jsb_chorales/V/0"),
    (damage_epoch_part, "rebuilt 1 trials' history from MLflow"),
    (remove_epochs, "rebuilt 5 trials' history from MLflow"),
    (remove_table_and_optuna, "trials.parquet: rebuilt 6 rows (6 from MLflow)"),
    (remove_table_and_mlflow, "trials.parquet: rebuilt 6 rows (6 from Optuna)"),
    (remove_optuna_and_mlflow, "MLflow: logged 6 recorded trials that had no run"),
]


@pytest.mark.parametrize(("damage", "says"), CASES, ids=[c[0].__name__ for c in CASES])
def test_damage_is_repaired_without_retraining(study, caplog, damage, says):
    cfg, table, epochs = study
    damage(cfg)
    caplog.set_level("INFO")
    counts = _run(cfg)
    assert counts == {"complete": 5, "failed": 1, "expected": 6, "ran": 0}
    assert says in caplog.text
    check_all_stores(cfg, table, epochs)
    if not damage.__name__.startswith(("remove", "duplicate")):  # the damaged file is kept
        assert any((cfg.study_dir / "damaged").iterdir())
    caplog.clear()
    assert _run(cfg)["ran"] == 0 and "rebuilt" not in caplog.text  # repaired for good


def test_a_study_from_before_the_row_attribute_is_rebuilt_from_mlflow_tags(study, caplog):
    cfg, table, epochs = study
    remove_table(cfg)
    _sql(cfg.study_dir / "optuna.db", "delete from trial_user_attributes where key = 'row'")
    _sql(cfg.study_dir / "mlflow.db", "delete from tags where key = 'row'")
    caplog.set_level("INFO")
    assert _run(cfg)["ran"] == 0
    assert "rebuilt 6 rows (6 from MLflow tags, params and metrics)" in caplog.text
    check_all_stores(cfg, table, epochs, exact_extra=False)


def test_a_trial_running_when_optuna_was_lost_is_rerun_with_its_parameters(study, caplog):
    """Table, history and MLflow lack trial V/2 (it was running), and optuna.db is lost: the
    restored record keeps number 1 for it and reruns it with the same seeded parameters."""
    cfg, table, epochs = study
    df = results.read_trials(cfg.study_dir)
    df = df[~((df["variant"] == "V") & (df["trial"] == 2))]
    import pyarrow as pa

    results._atomic_write(
        pa.Table.from_pandas(df, schema=results.SCHEMA, preserve_index=False),
        cfg.study_dir / "trials.parquet",
    )
    results.epochs_path(cfg.study_dir, "jsb_chorales", "V", 2).unlink()
    client, _, runs = _mlflow_runs(cfg)
    client.delete_run(next(r for r in runs if r.data.tags["key"] == "jsb_chorales/V/2").info.run_id)
    remove_optuna(cfg)
    jobs = []
    counts = _run(cfg, lambda job: jobs.append(job) or run_trial(job))
    assert counts["ran"] == 1 and [(j["variant"], j["trial"]) for j in jobs] == [("V", 2)]
    old = table[(table["variant"] == "V") & (table["trial"] == 2)].iloc[0]
    assert jobs[0]["hparams"]["hidden_size"] == old["hp_hidden_size"]
    assert jobs[0]["hparams"]["learning_rate"] == old["hp_learning_rate"]
    new = _sorted(results.read_trials(cfg.study_dir))
    same = new.drop(columns=["started_at", "finished_at", "wall_s"])
    pd.testing.assert_frame_equal(same, table.drop(columns=["started_at", "finished_at", "wall_s"]))
    check_all_stores(cfg, new, _sorted_epochs(results.read_epochs(cfg.study_dir)))


def test_history_kept_nowhere_else_is_reported_lost(study, caplog):
    """Only the table left: rows, Optuna and MLflow come back; the per-epoch history, which
    only epochs.parquet/ and MLflow held, is reported as lost (not silently missing)."""
    cfg, table, _ = study
    remove_optuna_and_mlflow(cfg)
    shutil.rmtree(cfg.study_dir / "epochs.parquet")
    caplog.set_level("INFO")
    assert _run(cfg)["ran"] == 0
    assert "per-epoch history of 5 recorded trials is in no store" in caplog.text
    pd.testing.assert_frame_equal(_sorted(results.read_trials(cfg.study_dir)), table)
    assert len(_mlflow_runs(cfg)[2]) == 6


def test_two_results_folders_on_one_storage_take_turns(tmp_path, caplog, smoke_data):
    """The lease in the shared storage refuses a second driver, naming the first; once the
    first is done, the second folder's table is rebuilt from the shared record, nothing is run
    twice and the trial budget is not doubled."""
    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    first = _cfg(tmp_path / "res1", smoke_data, storage=shared)
    second = _cfg(tmp_path / "res2", smoke_data, storage=shared)
    refused = []

    def start_second_meanwhile(job):
        if not refused:
            with pytest.raises(ValueError, match="is being run by another driver") as e:
                _run(second)
            refused.append(str(e.value))
        return diverge_v1(job)

    assert _run(first, start_second_meanwhile)["ran"] == 6
    assert f"results {first.study_dir.resolve()}" in refused[0] and shared in refused[0]
    caplog.set_level("INFO")
    assert _run(second) == {"complete": 5, "failed": 1, "expected": 6, "ran": 0}
    assert "trials.parquet: rebuilt 6 rows (6 from Optuna)" in caplog.text
    assert [len(_optuna(first, v).get_trials()) for v in VARIANTS] == [TRIALS, TRIALS]
    pd.testing.assert_frame_equal(
        _sorted(results.read_trials(second.study_dir)),
        _sorted(results.read_trials(first.study_dir)),
    )
    assert len(_mlflow_runs(second)[2]) == 6


def test_doctor_checks_then_repairs_the_four_stores(study, capsys):
    from odyssey import cli

    cfg, table, epochs = study
    duplicate_mlflow_run(cfg)
    truncate_table(cfg)
    remove_optuna(cfg)
    damage_epoch_part(cfg)
    before = sorted(p.name for p in cfg.study_dir.iterdir())
    args = ["doctor", cfg.name, "--results", str(cfg.results)]
    assert cli.main([*args, "--check"]) == 1
    out = capsys.readouterr().out
    assert "to repair: " in out and "trials.parquet is damaged" in out
    assert "optuna.db is missing; would rebuild it" in out
    assert "MLflow holds 1 second runs of trials; would delete them" in out
    assert "epochs.parquet: 1 damaged part files" in out
    assert sorted(p.name for p in cfg.study_dir.iterdir()) == before  # --check changed nothing

    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "repaired: " in out and "rebuilt 6 rows" in out and "cannot recover" not in out
    assert "repaired: MLflow: deleted 1 second runs of trials" in out
    check_all_stores(cfg, table, epochs)
    assert cli.main([*args, "--check"]) == 0
    assert "the four stores agree; nothing to repair" in capsys.readouterr().out
    assert _run(cfg)["ran"] == 0
