"""The results-folder contract from the writer's side (study.results, the runner) to the reader's
(study/report/load.py): the same file names, every column the reader relies on written, and what
was written read back unchanged. The report tests build their own rows; this one does not."""

from __future__ import annotations

import math

import pandas as pd

from study import config, results, runner, setup
from study.report import load


def test_file_names_agree():
    assert load.TRIALS_FILE == results.TRIALS_FILE
    assert load.EPOCHS_DIR == results.EPOCHS_DIR
    assert load.DATA_FILE == setup.DATA_SUMMARY
    assert load.CONFIG_FILE == "config.yaml"
    assert tuple(load.EPOCH_COLUMNS)[:4] == ("task", "variant", "trial", "epoch")


def test_every_column_the_reader_uses_is_written():
    read = set(load.REQUIRED) | set(load.DEFAULTS)
    assert read <= set(results.COLUMNS), sorted(read - set(results.COLUMNS))


def _row(trial: int, status: str = "complete") -> dict:
    ok = status == "complete"
    return results.make_row(
        study="contract",
        task="jsb_chorales",
        variant="NP",
        trial=trial,
        seed=0,
        status=status,
        error=None if ok else "training loss became nan in epoch 1",
        hp_hidden_size=20 + trial,
        hp_learning_rate=1e-3,
        hp_momentum=0.9,
        hp_input_noise=0.1,
        n_params=1234,
        epochs=3,
        best_epoch=2 if ok else 0,
        val_metric=9.5 + trial if ok else math.nan,
        test_metric=9.6 + trial if ok else math.nan,
        train_loss=9.0,
        wall_s=1.5,
        device="cpu",
        started_at="2026-12-03T00:00:00+00:00",
        finished_at="2026-12-03T00:00:02+00:00",
        code_version="abc",
        metric="nll",
        data_source="real",
        stand_in=False,
        test_extra={},
    )


def test_what_the_writer_writes_the_reader_reads(tmp_path):
    cfg = config.resolve("smoke", {"results": str(tmp_path), "name": "contract"})
    folder = cfg.study_dir
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(config.dump(cfg))
    runner.record_data(
        folder, {"jsb_chorales": {"source": "real", "data_version": 1, "splits": {"train": 12}}}
    )
    rows = [_row(0), _row(1, "failed")]
    for row in rows:
        history = [{"epoch": e, "train/loss": 10.0 - e, "val/nll": 9.0 + e} for e in (1, 2)]
        results.write_epochs(folder, row["task"], row["variant"], row["trial"], history)
        results.append_trial(folder, row)

    got = load.read_results("contract", tmp_path)
    assert got.notes == [] and got.variants == ["V", "NP"] and got.tasks == ["jsb_chorales"]
    assert got.config["trials"] == cfg.trials
    assert got.data["jsb_chorales"]["source"] == "real"
    table = got.trials.set_index("trial")
    for row in rows:
        for col in (c for c in results.COLUMNS if c != "trial"):
            want, have = row[col], table.loc[row["trial"], col]
            if isinstance(want, float) and math.isnan(want):
                assert pd.isna(have), col
            else:
                assert have == want or (want is None and have in ("", None)), col
    epochs = got.epochs
    assert len(epochs) == 8 and set(epochs["name"]) == {"train/loss", "val/nll"}
