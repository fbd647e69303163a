"""The last damage cases of a results folder: a table of the wrong schema, a path blocked by a
folder or a file, only the epoch files left, swapped databases, a second folder on a shared
storage. Each ends without a traceback, with no row lost and no trial retrained unless a line
said so; the study trained once by test_repair's module fixture is copied for each case."""

from __future__ import annotations

import math
import shutil
import subprocess

import pandas as pd
import pytest
from test_repair import (  # noqa: F401 - finished: the module fixture, one trained study
    VARIANTS,
    _cfg,
    _mlflow_runs,
    _optuna,
    _run,
    _sorted,
    _sorted_epochs,
    check_all_stores,
    diverge_v1,
    finished,
)

from study import rebuild, repair, results

pytestmark = pytest.mark.integration  # whole studies


@pytest.fixture
def damaged(request, tmp_path, smoke_data):
    """(config, table, epochs) of a copy of the finished study."""
    base, table, epochs = request.getfixturevalue("finished")
    shutil.copytree(base / "res", tmp_path / "res")
    return _cfg(tmp_path / "res", smoke_data), table, epochs


def _doctor(cfg, *extra):
    from odyssey import cli

    return cli.main(["doctor", cfg.name, "--results", str(cfg.results), *extra])


def _read_only_view(src, dst, done):
    """`dst`: a read-only bind mount of `src` (skips where binding is not allowed)."""
    dst.mkdir()
    for cmd in (
        ["mount", "--bind", str(src), str(dst)],
        ["mount", "-o", "remount,ro,bind", str(dst)],
    ):
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot make a read-only bind mount here: {r.stderr.strip()}")
        done.append(dst)


def _part(cfg, variant="V", trial=0):
    return results.epochs_path(cfg.study_dir, "jsb_chorales", variant, trial)


@pytest.mark.parametrize("how", ["run", "doctor"])
def test_a_table_of_the_wrong_schema_is_damage_not_rows(damaged, caplog, capsys, how):
    """An epochs part file copied over trials.parquet is a valid Parquet file: it is set aside
    and the table rebuilt (6 rows, none of them junk), never merged with null columns."""
    cfg, table, epochs = damaged
    shutil.copy(_part(cfg), cfg.study_dir / "trials.parquet")
    with pytest.raises(results.DamagedFile, match="lacks the columns study, seed, status"):
        results.read_trials(cfg.study_dir)
    caplog.set_level("INFO")
    if how == "doctor":
        assert _doctor(cfg, "--check") == 1
        assert "trials.parquet is damaged (not a table of this kind" in capsys.readouterr().out
        assert _doctor(cfg) == 0
        assert "rebuilt 6 rows (6 from Optuna)" in capsys.readouterr().out
    assert _run(cfg)["ran"] == 0
    check_all_stores(cfg, table, epochs)
    (kept,) = (cfg.study_dir / "damaged").glob("trials.parquet.*")
    assert kept.read_bytes() == _part(cfg).read_bytes()
    assert _doctor(cfg, "--check") == 0


def test_an_epoch_part_file_of_the_wrong_schema_is_rebuilt_from_mlflow(damaged, caplog):
    cfg, table, epochs = damaged
    shutil.copy(cfg.study_dir / "trials.parquet", _part(cfg, "NP", 2))
    caplog.set_level("INFO")
    assert _run(cfg)["ran"] == 0
    assert "1 damaged part files kept" in caplog.text and "rebuilt 1 trials' history" in caplog.text
    check_all_stores(cfg, table, epochs)


@pytest.mark.parametrize("name", ["trials.parquet", "optuna.db", "mlflow.db", "config.yaml"])
def test_a_folder_where_a_store_belongs_is_one_line_and_touched_nowhere(damaged, capsys, name):
    cfg, table, epochs = damaged
    blocked = cfg.study_dir / name
    kept = cfg.study_dir.parent / "kept"
    shutil.move(blocked, kept)
    blocked.mkdir()
    (blocked / "mine.txt").write_text("the user's")
    before = sorted(str(p.relative_to(cfg.study_dir)) for p in cfg.study_dir.rglob("*"))
    with pytest.raises(results.BlockedPath, match=f"{name} is a folder, where the study's"):
        _run(cfg)
    if name != "config.yaml":  # without its config the folder is no study to the doctor
        assert _doctor(cfg) == 2 and _doctor(cfg, "--check") == 2
        err = capsys.readouterr().err
        assert f"{name} is a folder" in err and "move it out of the way" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 2
    assert sorted(str(p.relative_to(cfg.study_dir)) for p in cfg.study_dir.rglob("*")) == before
    shutil.rmtree(blocked)
    shutil.move(kept, blocked)
    assert _run(cfg)["ran"] == 0
    check_all_stores(cfg, table, epochs)


def test_a_file_named_damaged_is_worked_around(damaged, caplog):
    cfg, table, epochs = damaged
    (cfg.study_dir / "damaged").write_text("the user's notes")
    p = cfg.study_dir / "trials.parquet"
    p.write_bytes(p.read_bytes()[:100])
    caplog.set_level("INFO")
    assert _run(cfg)["ran"] == 0
    assert "damaged-1/trials.parquet." in caplog.text
    assert (cfg.study_dir / "damaged").read_text() == "the user's notes"
    check_all_stores(cfg, table, epochs)


def test_the_log_blocked_by_a_folder_is_one_line(damaged, capsys):
    from odyssey import cli

    cfg, _, _ = damaged
    (cfg.study_dir / "odyssey.log").mkdir()
    argv = ["run", "smoke", "--results", str(cfg.results), "--data-dir", str(cfg.data_dir)]
    assert cli.main([*argv, "--trials", "3", "--variants", "V,NP"]) == 2
    err = capsys.readouterr().err
    assert "odyssey.log is a folder, where the study's odyssey.log belongs" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("swap", ["optuna.db>mlflow.db", "mlflow.db>optuna.db"])
def test_a_database_copied_over_the_other_is_repaired_in_one_run(damaged, caplog, swap):
    cfg, table, epochs = damaged
    src, dst = swap.split(">")
    shutil.copy(cfg.study_dir / src, cfg.study_dir / dst)
    caplog.set_level("INFO")
    assert _run(cfg)["ran"] == 0
    which = "an Optuna database" if src == "optuna.db" else "an MLflow database"
    assert f"{dst} was damaged (it holds {which}" in caplog.text
    check_all_stores(cfg, table, epochs)


def test_only_the_epoch_files_left(damaged, capsys, caplog):
    """Table, Optuna and MLflow lost: the doctor rebuilds the five trials that have history
    from it and the seeded parameters (exactly, wherever the history determines a column; the
    rest empty, marked), says that V/1 (failed before its first epoch: no history) will be
    trained again, and the run trains only that one; no epoch file is overwritten."""
    cfg, table, epochs = damaged
    parts = {p.name: p.read_bytes() for p in (cfg.study_dir / "epochs.parquet").iterdir()}
    for name in ("trials.parquet", "optuna.db", "mlflow.db"):
        (cfg.study_dir / name).write_bytes(b"lost" * 100)
    assert _doctor(cfg) == 0
    out = capsys.readouterr().out
    assert "rebuilt 5 rows (5 from epochs.parquet and the seeded parameters)" in out
    assert "code_version says 'unknown: rebuilt from epochs.parquet'" in out
    assert "no store holds a result of trials [1]" in out and "trains them again" in out
    jobs = []
    caplog.set_level("INFO")
    counts = _run(cfg, lambda job: jobs.append(job) or diverge_v1(job))
    assert counts == {"complete": 5, "failed": 1, "expected": 6, "ran": 1}
    assert [(j["variant"], j["trial"]) for j in jobs] == [("V", 1)]
    assert "rerunning 1 interrupted trials (1)" in caplog.text
    assert {p.name: p.read_bytes() for p in (cfg.study_dir / "epochs.parquet").iterdir()} == parts
    df = _sorted(results.read_trials(cfg.study_dir))
    unknown = ["wall_s", "device", "numerics", "started_at", "finished_at", "code_version"]
    derived = [c for c in results.COLUMNS if c not in unknown]
    pd.testing.assert_frame_equal(df[derived], table[derived])
    rebuilt = df[df["code_version"] == rebuild.REBUILT]
    assert len(rebuilt) == 5 and rebuilt["wall_s"].isna().all()
    assert rebuilt[["device", "started_at", "finished_at"]].isna().all().all()
    assert (df["code_version"] != rebuild.REBUILT).sum() == 1  # V/1, trained again
    assert all(math.isfinite(v) for v in rebuilt["test_metric"])
    pd.testing.assert_frame_equal(_sorted_epochs(results.read_epochs(cfg.study_dir)), epochs)
    for v in VARIANTS:
        assert [t.number for t in _optuna(cfg, v).get_trials()] == [0, 1, 2]
    assert len(_mlflow_runs(cfg)[2]) == 6
    assert _doctor(cfg, "--check") == 0


def test_without_seeded_parameters_the_trials_to_train_again_are_named(damaged):
    """TPE draws from the study's history: with no store holding a trial's parameters, its
    row cannot be rebuilt; one line names the trials, and their part files move to damaged/
    (the rerun writes its own, never over them)."""
    cfg, _, _ = damaged
    found = repair.Findings(fix=True)
    assert (
        rebuild.rows_from_epochs(cfg.model_copy(update={"sampler": "tpe"}), set(), {}, found) == []
    )
    (line,) = found.lines
    assert "trials jsb_chorales/NP/0, jsb_chorales/NP/1" in line and "again" in line
    assert not list((cfg.study_dir / "epochs.parquet").glob("*.parquet"))
    assert len(list((cfg.study_dir / "damaged").glob("jsb_chorales__*"))) == 5


def test_the_best_epoch_rule_of_the_rebuild_is_the_training_loops(smoke):
    """Ties keep the earlier epoch; a history that ends before patience and the epoch limit
    ended in a divergence one epoch later (noted in `error`, status complete)."""
    vals = [3.0, 2.0, 2.0, 2.5]
    long = pd.DataFrame(
        [
            {"task": "jsb_chorales", "variant": "V", "trial": 7, "epoch": e, "name": n, "value": x}
            for e, val in enumerate(vals, 1)
            for n, x in (("val/nll", val), ("test/nll", 10.0 + e), ("train/loss", e), ("time_s", 1))
        ]
    )
    for patience, epochs in ((5, 5), (2, 4)):  # diverged in epoch 5; stopped by patience
        cfg = smoke(**{"training.patience": patience, "training.max_epochs": 10})
        raw = rebuild.seeded_params(cfg, "jsb_chorales", "V", 7)
        row = rebuild.row_from_history(cfg, "jsb_chorales", "V", 7, long, raw)
        assert (row["best_epoch"], row["val_metric"], row["test_metric"]) == (2, 2.0, 12.0)
        assert row["train_loss"] == 2.0 and row["epochs"] == epochs
        assert row["status"] == "complete" and math.isnan(row["wall_s"])
        assert (row["error"] is None) == (epochs == 4)
    assert (
        "ended in epoch 5"
        in rebuild.row_from_history(
            smoke(**{"training.patience": 5, "training.max_epochs": 10}),
            "jsb_chorales",
            "V",
            7,
            long,
            raw,
        )["error"]
    )


def test_doctor_on_a_read_only_study_is_one_line_and_check_still_reads(damaged, capsys):
    """Read-only through a read-only bind mount (root writes through permission bits)."""
    cfg, _, _ = damaged
    bound, ro = [], cfg.study_dir.parent.parent / "ro"
    try:
        _read_only_view(cfg.study_dir.parent, ro, bound)
        assert _doctor(cfg.model_copy(update={"results": str(ro)})) == 2
        err = capsys.readouterr().err
        assert f"the study folder {ro / cfg.name} is read-only (Read-only file system)" in err
        assert "--check` only reads" in err and "Traceback" not in err
        assert _doctor(cfg.model_copy(update={"results": str(ro)}), "--check") == 0
        assert "the four stores agree" in capsys.readouterr().out
    finally:
        for where in bound[:1]:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_second_folder_on_a_shared_storage_warns_which_history_it_lacks(
    tmp_path, caplog, smoke_data
):
    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    first = _cfg(tmp_path / "res1", smoke_data, storage=shared, variants=["V"], trials=2)
    second = _cfg(tmp_path / "res2", smoke_data, storage=shared, variants=["V"], trials=2)
    assert _run(first, diverge_v1)["ran"] == 2
    caplog.set_level("INFO")
    assert _run(second) == {"complete": 1, "failed": 1, "expected": 2, "ran": 0}
    assert "lacks the per-epoch history of 1 trials (jsb_chorales/V/0)" in caplog.text
    assert shared in caplog.text
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    pd.testing.assert_frame_equal(
        _sorted(results.read_trials(second.study_dir)),
        _sorted(results.read_trials(first.study_dir)),
    )
