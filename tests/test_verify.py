"""`odyssey verify`: a rerun of recorded trials reproduces them bitwise on this code (packed or
not), a recorded number that differs is caught with its relative difference, reruns accumulate
without repeats; and `analysis.robustness` moves verdicts exactly where hand-built data says."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from analysis import provenance, robustness
from analysis.load import read_results
from odyssey.cli import main
from odyssey.commands.verify import read_reruns
from study import results, runner
from study.scheduler import InlineExecutor
from study.worker import run_pack

pytestmark = pytest.mark.integration  # whole studies


def _run(cfg):
    return runner.run(
        cfg, executor_factory=lambda c, d: InlineExecutor(pack_fn=run_pack), live=False
    )


def test_reruns_of_a_packed_study_are_bitwise_its_records(tmp_path, smoke, capsys):
    cfg = smoke(tmp_path, pack=2)
    assert _run(cfg)["complete"] == 6
    res = str(tmp_path / "res")
    assert main(["verify", "smoke", "--results", res, "--sample", "2", "--draws", "5"]) == 0
    out = capsys.readouterr().out
    reruns = read_reruns(cfg.study_dir)
    assert len(reruns) == 4 and reruns["identical"].all()  # 2 per variant, trained alone now
    assert (reruns["rel_test"] == 0).all() and (reruns["numerics"] == "cpu-compiled").all()
    assert "4 reruns: 4 bitwise identical" in out
    # a second call takes the trials not rerun yet, and keeps the first ones
    assert main(["verify", "smoke", "--results", res, "--sample", "5", "--draws", "0"]) == 0
    again = read_reruns(cfg.study_dir)
    assert len(again) == 6 and not again.duplicated(["variant", "trial"]).any()
    assert "6 reruns: 6 bitwise identical" in capsys.readouterr().out
    text = provenance.reruns(read_results("smoke", res).reruns)  # the report's sentence
    assert text.startswith("6 recorded trials were retrained") and "6 reproduced" in text


def test_a_recorded_number_that_differs_is_found_with_its_relative_difference(
    tmp_path, smoke, capsys
):
    cfg = smoke(tmp_path, variants=["V"])
    _run(cfg)
    table = results.read_trials(cfg.study_dir)
    true_test = float(table.loc[table["trial"] == 1, "test_metric"].iloc[0])
    table.loc[table["trial"] == 1, "test_metric"] = true_test * 1.01  # as if recorded elsewhere
    table.loc[table["trial"] == 1, "numerics"] = "unknown"
    results._atomic_write(
        pa.Table.from_pandas(table, schema=results.SCHEMA, preserve_index=False),
        cfg.study_dir / results.TRIALS_FILE,
    )
    args = ["verify", "smoke", "--results", str(tmp_path / "res"), "--numerics", "unknown"]
    assert main([*args, "--sample", "3"]) == 0
    (row,) = read_reruns(cfg.study_dir).to_dict("records")
    assert row["trial"] == 1 and not row["identical"]
    assert row["test"] == true_test
    assert row["rel_test"] == pytest.approx(1 / 1.01 - 1, rel=1e-9)
    assert row["rel_val"] == 0
    assert "1 reruns: 0 bitwise identical" in capsys.readouterr().out
    text = provenance.reruns(read_results("smoke", tmp_path / "res").reruns)
    assert "0 reproduced" in text and "moved by 9.9e-03 relative (median)" in text


def test_verify_names_the_valid_numerics(tmp_path, smoke, capsys):
    cfg = smoke(tmp_path, variants=["V"])
    _run(cfg)
    args = ["verify", "smoke", "--results", str(tmp_path / "res"), "--numerics", "gpu"]
    assert main(args) == 2
    assert (
        "no complete trial has numerics 'gpu'; this study's: cpu-compiled"
        in capsys.readouterr().err
    )


def _table(base: list[float], other: list[float]) -> pd.DataFrame:
    rows = [("V", i, v) for i, v in enumerate(base)] + [("X", i, v) for i, v in enumerate(other)]
    df = pd.DataFrame(rows, columns=["variant", "trial", "test_metric"])
    return df.assign(task="t", status="complete", val_metric=df["test_metric"])


def test_worst_case_margin_is_where_the_rank_test_turns():
    # 4 against 4: only complete separation is significant (exact p = 2/70 = 0.029; one
    # overlap gives 8/70 = 0.11). X's lowest 13.5 sits below V's highest 13.6: n.s. X up and V
    # down by d separates them once 13.5 (1 + d) > 13.6 (1 - d), i.e. d > 0.1 / 27.1 = 3.7e-3:
    # not at 3e-3, at the next step of the grid, 1e-2, and only towards "worse"
    table = _table([10.0, 11.0, 12.0, 13.6], [13.5, 14.0, 15.0, 16.0])
    everything = pd.Series(True, index=table.index)
    got = robustness.verdicts(table, ["V", "X"], "V")
    assert got.loc[("t", "all trials", "X"), "verdict"] == "n.s."
    delta, changed = robustness.worst_case_margin(table, everything, ["V", "X"], "V")
    assert delta == 1e-2
    assert set(changed["moved"]) == {"worse"} and set(changed["delta"]) == {1e-2}
    assert set(changed["subset"]) == {"all trials"}  # the top 10 % is 1 trial each: too few
    nothing = pd.Series(False, index=table.index)
    assert robustness.worst_case_margin(table, nothing, ["V", "X"], "V")[0] is None


def test_resampled_keeps_every_verdict_under_zero_differences_and_loses_a_fragile_one():
    # 8 against 8, X shifted by 3.5 steps of 1e-4 relative: worse at exact p = 0.021; a relative
    # noise of 3e-4 reshuffles them
    base = list(10 + 0.001 * np.arange(8))
    table = _table(base, [v + 0.0035 for v in base])
    rng = np.random.default_rng(0)
    everything = pd.Series(True, index=table.index)
    zero = np.zeros((3, 2))
    kept = robustness.resampled(table, everything, zero, ["V", "X"], "V", draws=5)
    assert (kept["kept"] == 1.0).all() and (kept["kept_holm"] == 1.0).all()
    noisy = np.column_stack([rng.normal(0, 3e-3, 50)] * 2)
    kept = robustness.resampled(table, everything, noisy, ["V", "X"], "V", draws=40)
    row = kept.set_index("subset").loc["all trials"]
    assert row["recorded"] == "worse" and 0 < row["kept"] < 1
    with pytest.raises(ValueError, match="no measured differences"):
        robustness.resampled(table, everything, np.zeros((0, 2)), ["V", "X"], "V")


def test_the_report_marks_how_well_each_verdict_survives_rerun_noise(tmp_path):
    """With reruns that did not come back bitwise, the significance table gets `kept` columns
    for the trials of that numerics only, and the page says what they mean; with bitwise
    reruns only, nothing is added."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from fixtures_report import make_trials, write_study

    from analysis.build import Settings, analyse, build

    trials = make_trials(trials=12, seed=0, tasks=["jsb_chorales"], variants=["V", "NOAF", "NP"])
    trials["numerics"] = ["unknown" if i % 2 else "cpu-compiled" for i in range(len(trials))]
    folder = write_study(
        tmp_path, trials, "noisy", tasks=["jsb_chorales"], variants=["V", "NOAF", "NP"]
    )
    reruns = pd.DataFrame(
        {
            "recorded_numerics": ["unknown", "unknown", "cpu-compiled"],
            "identical": [False, True, True],
            "rel_val": [0.02, 0.0, 0.0],
            "rel_test": [-0.03, 0.0, 0.0],
            "code_version": "abc1234",
            "best_epoch": [5, 7, 7],
            "recorded_best_epoch": [6, 7, 7],
        }
    )
    movable, rel = robustness.rerun_noise(read_results("noisy", tmp_path).trials, reruns)
    assert movable.sum() == len(trials) // 2
    assert rel.tolist() == [[0.02, -0.03, 0.5], [0.0, 0.0, 0.5]]  # unnamed trials: mid level
    reruns.to_parquet(folder / "reruns.parquet")
    got = analyse(
        read_results("noisy", tmp_path), Settings(n_trees=4, fanova_resamples=0, rerun_draws=5)
    )
    tested = got.significance[got.significance["verdict"] != "too few trials"]
    assert tested["kept"].between(0, 1).all() and tested["kept_holm"].notna().all()
    settings = Settings(n_trees=4, fanova_resamples=0, rerun_draws=5, n_resamples=50)
    page = build("noisy", tmp_path, tmp_path / "out", settings).read_text()
    assert "kept (Holm)" in page and "were redrawn 5 times" in page
    assert "odyssey verify retrained 2 of them" in page
    reruns.assign(identical=True).to_parquet(folder / "reruns.parquet")
    got = analyse(read_results("noisy", tmp_path), Settings(n_trees=4, fanova_resamples=0))
    assert got.significance["kept"].isna().all()


def test_each_trial_draws_from_the_reruns_nearest_it_in_rank():
    """A diverged trial's metric moves by tens of percent between runs, a converged one's by
    1e-4: a trial draws its difference from the reruns nearest it in rank, so the huge
    differences of the worst trials never reach the best ones."""
    base = list(10 + 0.001 * np.arange(8)) + [500.0, 600.0]  # two diverged trials last
    table = _table(base, [v + 0.0035 for v in base[:8]] + [550.0, 650.0])
    everything = pd.Series(True, index=table.index)
    lv = robustness.level(table).to_numpy()
    assert lv[9] == 0.95 and lv[0] == 0.05  # V: second worst and best of the 20
    # reruns: at the best ranks nothing moved; at the worst ones, by half
    rel = np.array([[0.0, 0.0, 0.1], [0.0, 0.0, 0.3], [0.5, -0.5, 0.95], [-0.5, 0.5, 1.0]])
    near = robustness.resampled(table, everything, rel, ["V", "X"], "V", draws=20, neighbours=2)
    top = near.set_index("subset").loc["top 10%"]
    assert top["recorded"] == "too few trials" or top["kept"] == 1.0
    row = near.set_index("subset").loc["all trials"]
    assert row["kept"] == 1.0  # the 8 against 8 near 10 never move; the diverged stay worst
    mixed = robustness.resampled(table, everything, rel[:, :2], ["V", "X"], "V", draws=20)
    assert mixed.set_index("subset").loc["all trials", "kept"] < 1.0  # drawn from all: moves
