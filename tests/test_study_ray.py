"""End to end on a local Ray instance: `odyssey run smoke` in a subprocess, the driver killed with
SIGKILL mid-study, the same command again; every trial exactly once in the results table and in
Optuna, one MLflow run per trial, `odyssey status` agrees, and the report builds. Two Ray
start-ups (~20-40 s): the one real end-to-end test, part of the default suite."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from study import results

pytestmark = pytest.mark.integration  # whole studies

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "odyssey"]


def _cmd(tmp_path: Path) -> list[str]:
    return CLI + [
        "run",
        "smoke",
        "--tasks",
        "jsb_chorales",
        "--variants",
        "V,NP",
        "--trials",
        "3",
        "--workers",
        "2",
        "--results",
        str(tmp_path / "res"),
        "--data-dir",
        str(tmp_path / "data"),
        "--no-live",
    ]


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }


def test_kill_9_mid_study_then_resume(tmp_path):
    study_dir = tmp_path / "res" / "smoke"
    # Ray's session folders in a folder of this test's (short: Ray's socket paths must fit 107
    # characters): the killed driver's stays, the finished run's is removed
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    try:
        _kill_9_then_resume(tmp_path, study_dir, {**_env(), "RAY_TMPDIR": str(ray_tmp)})
        assert len(list(ray_tmp.rglob("session_2*"))) == 1
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _kill_9_then_resume(tmp_path: Path, study_dir: Path, env: dict[str, str]) -> None:
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(
        _cmd(tmp_path),
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if len(results.read_trials(study_dir)) >= 1:
                break
            time.sleep(0.02)
        assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)  # the driver only, at whatever point it is
        proc.wait(30)
    finally:
        try:  # then Ray's helper processes the dead driver leaves behind (same session)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()
    at_kill = len(results.read_trials(study_dir))
    assert 1 <= at_kill < 6, f"kill came too late to test anything ({at_kill} rows)"

    log_file = study_dir / "odyssey.log"
    before = log_file.stat().st_size if log_file.is_file() else 0  # the second run appends
    second = subprocess.run(
        _cmd(tmp_path),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    # the screen: our lines only; what Ray and the workers print (a token warning, where Ray
    # gives one: not once the machine holds a token) went to the study's log file, counted
    from study.console import _OUR_LINE, third_party_lines

    screen = [line for line in second.stderr.splitlines() if line.strip()]
    assert screen and all(_OUR_LINE.match(line) for line in screen), screen
    assert "Token authentication" not in second.stderr + second.stdout
    if third_party_lines(log_file, before)[0]:
        assert "wrote" in second.stderr and "odyssey.log" in second.stderr

    df = results.read_trials(study_dir)
    assert len(df) == 6 and not df.duplicated(["task", "variant", "trial"]).any()
    assert set(df["status"]) == {"complete"}
    storage = f"sqlite:///{study_dir / 'optuna.db'}"
    for v in ("V", "NP"):
        trials = optuna.load_study(study_name=f"smoke/jsb_chorales/{v}", storage=storage).trials
        assert [t.number for t in trials] == [0, 1, 2]
        assert all(t.state == TrialState.COMPLETE for t in trials)
        sub = df[df["variant"] == v].set_index("trial")
        assert [t.value for t in trials] == list(sub.loc[[0, 1, 2], "val_metric"])
        assert [t.params["hidden_size"] for t in trials] == list(
            sub.loc[[0, 1, 2], "hp_hidden_size"]
        )
    client = MlflowClient(f"sqlite:///{study_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id], "tags.role = 'trial'")
    assert sorted(r.data.tags["key"] for r in runs) == sorted(
        f"jsb_chorales/{v}/{k}" for v in ("V", "NP") for k in range(3)
    )
    assert all(r.info.status == "FINISHED" for r in runs)

    status = subprocess.run(
        CLI + ["status", "smoke", "--results", str(tmp_path / "res")],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.returncode == 0 and "6 complete, 0 failed of 6" in status.stdout

    report = subprocess.run(
        CLI
        + ["report", "smoke", "--results", str(tmp_path / "res"), "--out", str(tmp_path / "rep")],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "jsb_chorales" in html and "NP" in html
