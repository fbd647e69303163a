"""What a newcomer meets around a study's start: a failed first start leaves nothing behind that
`status` or `report` could take for a study, a second driver is refused, and `status` names each
failed trial by number with its reason."""

from __future__ import annotations

import argparse
import math
import os

import pytest

from odyssey.commands.run import status
from study import runner, setup
from study.progress import summarize
from study.scheduler import InlineExecutor
from study.worker import run_trial


def _run(cfg, fn=run_trial):
    return runner.run(cfg, executor_factory=lambda c, d: InlineExecutor(fn), live=False)


def test_a_failed_first_start_leaves_no_study_folder(tmp_path, smoke):
    from analysis.build import build

    empty = tmp_path / "empty"
    empty.mkdir()
    bad = smoke(
        trials=1,
        variants=["V"],
        data={"jsb_chorales": {"path": str(empty)}},
        data_dir=str(tmp_path / "data"),
    )
    with pytest.raises(Exception, match=str(empty)):
        _run(bad)
    assert not bad.study_dir.exists()  # no .lock, no data.json: nothing looks like a study
    with pytest.raises(ValueError, match="no study 'smoke'"):
        status(argparse.Namespace(study="smoke", results=bad.results))
    with pytest.raises(FileNotFoundError, match="no study 'smoke'"):
        build("smoke", tmp_path / "res", tmp_path / "report")


def test_a_started_study_and_a_folder_of_other_files_are_kept(tmp_path, smoke):
    good = smoke(trials=1, variants=["V"])
    assert _run(good)["complete"] == 1
    before = sorted(p.name for p in good.study_dir.iterdir())
    assert ".lock" in before  # a started study keeps its lock file (status reads the pid)
    # a folder the user made, holding something else: only the lock file goes
    other = tmp_path / "res" / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with setup.study_lock(other):
        assert (other / ".lock").read_text().strip().isdigit()
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in good.study_dir.iterdir()) == before


def test_a_second_driver_is_refused(tmp_path):
    sdir = tmp_path / "s"
    (sdir).mkdir()
    (sdir / "config.yaml").write_text("")  # a started study: its lock file stays
    with setup.study_lock(sdir):
        with pytest.raises(ValueError, match="already being run by another driver"):
            with setup.study_lock(sdir):
                pass
    with setup.study_lock(sdir):  # released: the next driver gets it
        pass


HOLD = """
import sys, time
from pathlib import Path
from study.setup import study_lock
with study_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_status_sees_the_driver_of_another_process_and_its_pid_survives_a_refusal(tmp_path):
    import subprocess
    import sys

    sdir = tmp_path / "s"
    sdir.mkdir()
    (sdir / "config.yaml").write_text("")
    assert setup.running_driver(sdir) is None  # no lock file yet
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(sdir)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(setup.PROJECT_ROOT)},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        pid = str(holder.pid)
        assert setup.running_driver(sdir) == pid
        with pytest.raises(ValueError, match=f"another driver \\(pid {pid}\\)"):
            with setup.study_lock(sdir):
                pass
        assert (sdir / ".lock").read_text() == pid  # the refused driver left it as it was
        (sdir / ".lock").chmod(0o444)  # status only reads: a study another user runs
        assert setup.running_driver(sdir) == pid
    finally:
        holder.kill()
        holder.wait()
    assert setup.running_driver(sdir) is None  # the OS released the lock of the killed driver


def test_status_numbers_failed_trials_and_gives_reasons(tmp_path, capsys, smoke):
    cfg = smoke(trials=3, variants=["V"])

    def diverge(job):  # trials 0 and 2 fail with the same reason
        if job["trial"] != 1:
            job = {**job, "hparams": {**job["hparams"], "learning_rate": math.inf}}
        return run_trial(job)

    _run(cfg, diverge)
    capsys.readouterr()
    assert status(argparse.Namespace(study="smoke", results=cfg.results)) == 0
    out = capsys.readouterr().out
    assert "2 failed trials:" in out
    assert "jsb_chorales/V trial 0: training loss became nan in epoch 1" in out
    assert "jsb_chorales/V trial 2: training loss became nan in epoch 1" in out


def test_summary_of_failures_without_a_reason():
    rows = [
        {"task": "t", "variant": "V", "trial": 4, "status": "failed", "error": None},
        {"task": "t", "variant": "V", "trial": 7, "status": "failed", "error": "  \nboom\n"},
        {"task": "t", "variant": "V", "trial": 9, "status": "failed", "error": "x\ny"},
    ]
    import pandas as pd

    df = pd.DataFrame(
        [
            {**r, "val_metric": math.nan, "test_metric": math.nan, "metric": "m", "wall_s": 1.0}
            for r in rows
        ]
    )
    s = summarize(df, [("t", "V")], 10, {"t": "minimize"})
    assert s.loc[0, "errors"] == [(4, "no reason recorded"), (7, "boom"), (9, "x")]
