"""Progress: the ETA weighs each task's remaining trials by that task's own seconds per trial
(hand-worked numbers), and a study with nothing left shows no ETA (live title, log line and
`odyssey status`)."""

from __future__ import annotations

import logging
import math

import pandas as pd
import pytest

from study import progress, runner
from study.scheduler import InlineExecutor

PAIRS = [("jsb", "V"), ("iam", "V")]


def _table(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"task": t, "variant": v, "trial": i, "status": s, "wall_s": w, "metric": "m"}
            | {"val_metric": 1.0, "test_metric": 1.0, "error": None}
            for i, (t, s, w) in enumerate(rows)
            for v in ["V"]
        ]
    )


def test_eta_weighs_each_task_by_its_own_rate():
    # jsb: 10 finished at 1 s each, 5 of 15 to go; iam: 2 finished at 20 s, 8 of 10 to go.
    rows = [("jsb", "complete", 1.0)] * 10 + [("iam", "complete", 20.0)] * 2
    s = progress.summarize(_table(rows), PAIRS, 0, {}).assign(expected=[15, 10])
    # by hand: (5 x 1 s + 8 x 20 s) / 2 workers = 82.5 s; the mean over all 12 finished trials
    # (50 / 12 = 4.17 s) would say 13 x 4.17 / 2 = 27.1 s
    assert progress.eta_seconds(s, workers=2) == pytest.approx(82.5)
    assert progress.task_rates(s) == {"jsb": 1.0, "iam": 20.0}
    # a rate measured in this run (at this run's pack size) overrides the table's
    assert progress.eta_seconds(s, 2, {"jsb": 0.5}) == pytest.approx((5 * 0.5 + 8 * 20) / 2)


def test_eta_of_a_task_without_a_finished_trial_uses_the_known_rates():
    rows = [("jsb", "complete", 2.0)] * 2 + [("jsb", "failed", 4.0)]  # failed trials count
    s = progress.summarize(_table(rows), PAIRS, 0, {}).assign(expected=[4, 3])
    # jsb: 8 / 3 s per trial, 1 to go; iam: no rate yet, so jsb's, 3 to go: 4 x 8/3 / 1 worker
    assert progress.eta_seconds(s, 1) == pytest.approx(4 * 8 / 3)
    assert math.isnan(progress.eta_seconds(s.assign(done=0, failed=0), 1))  # nothing known


def test_a_task_still_running_its_first_trials_counts_at_least_their_time():
    # jsb: 10 of 15 finished at 1 s each; iam: nothing finished, its first trial began 30 s ago
    rows = [("jsb", "complete", 1.0)] * 10
    df = _table(rows)
    display = progress.Display("x", PAIRS, 15, {}, 2, live=False, packs={"jsb": 4, "iam": 1})
    display.update(df)
    display.clock = lambda: 100.0
    display.started("iam", "V")
    display.clock = lambda: 130.0
    s = progress.summarize(df, PAIRS, 15, {}).assign(expected=[15, 10])
    # by hand: (5 x 1 s + 10 x 30 s) / 2 workers = 152.5 s (the jsb rate alone: 7.5 s)
    assert display.eta(s) == "; ETA 2m32s"


def test_no_eta_once_nothing_remains(caplog):
    rows = [("jsb", "complete", 1.0), ("iam", "failed", 3.0)]
    df = _table(rows)
    s = progress.summarize(df, PAIRS, 1, {})
    assert progress.remaining(s) == 0
    display = progress.Display("x", PAIRS, 1, {}, 2, live=False, packs={"jsb": 4})
    display.update(df)
    assert "ETA" not in display._render().title
    with caplog.at_level(logging.INFO, logger="study.progress"):
        display.finished(df.iloc[1].to_dict(), df)
    assert "[2/2 finished]" in caplog.messages[-1]
    assert display.rates() == {"iam": 3.0}  # the (task, pack size) of this run's trials


def test_status_of_a_finished_study_shows_no_eta(smoke, capsys):
    from odyssey import cli

    cfg = smoke(trials=1, tasks=["jsb_chorales"], variants=["V"])
    runner.run(cfg, executor_factory=lambda c, d: InlineExecutor(), live=False)
    capsys.readouterr()
    assert cli.main(["status", cfg.name, "--results", str(cfg.results)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"study {cfg.name}: 1 complete, 0 failed of 1; not running"
