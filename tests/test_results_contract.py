"""The results-folder contract from the writer's side (study.results, study.setup, the runner)
to the reader's (analysis/load.py, which takes every file name and schema from study.results):
every column the reader relies on written, and what was written read back unchanged, names and
titles included. The report tests build their own rows; this one does not."""

from __future__ import annotations

import math

import pandas as pd
import pytest

import variants
from analysis import load
from analysis.build import Settings, build
from study import config, results, runner


def test_the_reader_has_a_rule_for_every_written_column():
    """A missing column is either one the report needs or one with a stated default; a column
    the writer adds must get one of the two."""
    read = set(load.REQUIRED) | set(load.DEFAULTS)
    assert read == set(results.COLUMNS), sorted(read ^ set(results.COLUMNS))
    assert load.EPOCH_COLUMNS == tuple(results.EPOCH_SCHEMA.names)


def _row(trial: int, status: str = "complete", variant: str = "NP") -> dict:
    ok = status == "complete"
    return results.make_row(
        study="contract",
        task="jsb_chorales",
        variant=variant,
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


def _write_study(
    tmp_path, spec: str | None = None, variant: str = "NP"
) -> tuple[config.StudyConfig, list[dict]]:
    if spec is None:
        cfg = config.resolve("smoke", {"results": str(tmp_path), "name": "contract"})
    else:
        path = tmp_path / "mine.yaml"
        path.write_text(spec)
        cfg = config.resolve(str(path), {"results": str(tmp_path), "name": "contract"})
    folder = cfg.study_dir
    folder.mkdir(parents=True)
    (folder / results.CONFIG_FILE).write_text(config.dump(cfg))
    runner.record_data(
        folder,
        {
            "jsb_chorales": {
                "source": "real",
                "data_version": 1,
                "splits": {"train": {"sequences": 12, "frames": 345}},
            }
        },
        cfg.custom_variants,
    )
    rows = [_row(0, variant=variant), _row(1, "failed", variant)]
    for row in rows:
        history = [{"epoch": e, "train/loss": 10.0 - e, "val/nll": 9.0 + e} for e in (1, 2)]
        results.write_epochs(folder, row["task"], row["variant"], row["trial"], history)
        results.append_trial(folder, row)
    return cfg, rows


def test_what_the_writer_writes_the_reader_reads(tmp_path):
    cfg, rows = _write_study(tmp_path)
    got = load.read_results("contract", tmp_path)
    assert got.notes == [] and got.variants == ["V", "NP"] and got.tasks == ["jsb_chorales"]
    assert got.config["trials"] == cfg.trials
    assert got.data["jsb_chorales"]["source"] == "real"
    assert list(got.names.variants) == list(variants.VARIANTS) and got.baseline == "V"
    jsb = got.names.tasks["jsb_chorales"]
    assert (jsb.title, jsb.metric, jsb.better) == (
        "JSB Chorales (polyphonic music, next-step NLL)",
        "nll",
        "lower",
    )
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


def test_a_declared_variant_is_named_in_the_report(tmp_path):
    spec = "preset: smoke\nvariants:\n  - V\n  - {name: CIFG-NP, coupled_input_forget: true, peepholes: false}\n"
    _write_study(tmp_path, spec, "CIFG-NP")
    got = load.read_results("contract", tmp_path)
    assert got.variants == ["V", "CIFG-NP"] and got.notes == []
    assert got.names.variants["CIFG-NP"].startswith("declared: ")
    # a folder from before data.json named variants: the config's declaration still names it
    summary = results.read_data(got.folder)
    results.write_data(got.folder, results.DataSummary({}, summary.tasks))
    again = load.read_results("contract", tmp_path)
    assert again.variants == ["V", "CIFG-NP"] and again.notes == []
    index = build("contract", tmp_path, tmp_path / "out", Settings(n_trees=4, n_resamples=50))
    assert "CIFG-NP" in index.read_text()


def test_an_old_data_json_is_read_and_a_broken_one_is_named(tmp_path):
    _write_study(tmp_path)
    folder = tmp_path / "contract"
    old = '{"jsb_chorales": {"source": "real", "stand_in": false, "data_version": 1}}'
    (folder / results.DATA_FILE).write_text(old)  # format 1: the tasks alone
    summary = results.read_data(folder)
    assert summary.variants == {} and summary.tasks["jsb_chorales"]["source"] == "real"
    got = load.read_results("contract", tmp_path)  # names from the paper's table
    assert got.variants == ["V", "NP"] and got.names.title("jsb_chorales").startswith("JSB")
    (folder / results.DATA_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="data.json does not read as"):
        results.read_data(folder)
    assert any(
        "data.json does not read as" in n for n in load.read_results("contract", tmp_path).notes
    )


def test_the_reports_fallback_names_are_the_registries():
    """analysis/names.py names old studies without importing the registries (and torch): its
    copies must say what the registries say, in their order (the registries' first entries: the
    baselines and synthetic tasks came later, so no old study holds them)."""
    import tasks
    import variants
    from analysis import names

    paper = list(variants.VARIANTS)[: len(names.PAPER_VARIANTS)]
    assert names.PAPER_VARIANTS == {n: variants.VARIANTS[n].change for n in paper}
    assert list(names.PAPER_TASKS) == list(tasks.TASKS)[: len(names.PAPER_TASKS)]
    for name, got in names.PAPER_TASKS.items():
        task = tasks.TASKS[name]
        assert (got.title, got.metric, got.direction) == (
            task.title,
            task.metric,
            task.metric_direction,
        )
