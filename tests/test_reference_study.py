"""The shipped reference study (results/reference-jsb/): the paper's protocol on JSB Chorales.
Its plan (every variant, the paper's search space and training protocol) and its table (what
that plan can produce, each trial once) are checked here; the report is rebuilt from it alone."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

import variants
from study import config, results

FOLDER = Path(__file__).resolve().parent.parent / "results" / "reference-jsb"


@pytest.fixture(scope="module")
def shipped():
    cfg = config.load_saved(FOLDER / "config.yaml")
    return cfg, results.read_trials(FOLDER)


def test_the_plan_is_the_papers_protocol(shipped):
    cfg, _ = shipped
    assert cfg.tasks == ("jsb_chorales",) and cfg.variants == tuple(variants.VARIANTS)[:10]
    assert cfg.trials >= 50 and cfg.sampler == "random" and cfg.seed == 0
    t, s = cfg.training, cfg.space
    assert (t.batch_size, t.max_epochs, t.patience) == (1, 150, 15)
    assert s.hidden_size == (20, 200) and s.hidden_size_meaning == "per_direction"
    assert s.learning_rate == (1e-6, 1e-2) and s.one_minus_momentum == (0.01, 1.0)
    assert s.input_noise == (0.0, 1.0)
    assert not cfg.data  # the task's default source: the real, shipped JSB Chorales


def test_the_table_holds_what_the_plan_can_produce(shipped):
    cfg, df = shipped
    assert len(df) > 0 and not df.duplicated(list(results.KEY)).any()
    assert set(df["task"]) == {"jsb_chorales"} and set(df["variant"]) <= set(cfg.variants)
    assert df["trial"].between(0, cfg.trials - 1).all()
    assert set(df["status"]) <= {"complete", "failed"} and not df["stand_in"].any()
    assert df["hp_hidden_size"].between(20, 200).all()
    assert df["hp_learning_rate"].between(1e-6, 1e-2).all()
    assert df["hp_momentum"].between(0.0, 0.99 + 1e-9).all()
    assert df["hp_input_noise"].between(0.0, 1.0).all()
    assert df["epochs"].between(1, 150).all() and (df["best_epoch"] <= df["epochs"]).all()
    done = df[df["status"] == "complete"]
    assert (done["test_metric"] > 0).all()  # an NLL
    epochs = results.read_epochs(FOLDER)
    assert set(map(tuple, epochs[["variant", "trial"]].drop_duplicates().values)) >= set(
        map(tuple, done[["variant", "trial"]].values)
    )


def test_the_report_rebuilds_from_the_shipped_folder_alone(tmp_path):
    from analysis.build import build

    shutil.copytree(FOLDER, tmp_path / "reference-jsb")
    index = build("reference-jsb", tmp_path, tmp_path / "report")
    html = index.read_text()
    n = len(pd.read_parquet(FOLDER / "trials.parquet"))
    assert f"{n} trials recorded" in html
    assert "Beside the paper" in html


def test_every_variant_has_at_least_fifty_trials(shipped):
    cfg, df = shipped
    per_variant = df.groupby("variant").size().reindex(list(cfg.variants), fill_value=0)
    assert (per_variant >= 50).all(), per_variant.to_dict()


def test_the_shipped_built_report_is_of_the_shipped_table():
    n = len(pd.read_parquet(FOLDER / "trials.parquet"))
    summary = (FOLDER / "report" / "summary.md").read_text()
    assert f"{n} recorded" in summary, (
        "rebuild it: odyssey report reference-jsb --results results --out results/reference-jsb/report"
    )
