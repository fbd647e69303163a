"""What a study refuses or contains before it can do harm: a driver lease left by a killed
driver, results folders it cannot use, a spec file that is not UTF-8, Ray workers outliving a
killed driver, and Ray's blocks of cluster state in the terminal."""

from __future__ import annotations

import socket
import time

import pytest

from study import config, runner, setup
from study.scheduler import InlineExecutor
from study.worker import run_trial


def _run(cfg):
    return runner.run(cfg, executor_factory=lambda c, d: InlineExecutor(run_trial), live=False)


def test_a_lease_left_by_a_killed_driver_expires(tmp_path, caplog):
    from study import stores

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    a = stores.DriverLease(url, "s", tmp_path / "a")
    a.acquire()
    a._stop.set()  # killed: no more heartbeats, no release
    b = stores.DriverLease(url, "s", tmp_path / "b")
    with pytest.raises(
        ValueError, match=r"'s' in storage .* by another driver \(host .*results .*/a;"
    ):
        b.acquire()
    with b.engine.begin() as c:
        c.execute(b.table.update().values(heartbeat=b.table.c.heartbeat - stores.LEASE_TTL_S - 1))
    with b:
        assert "took over the lease of a driver that stopped" in caplog.text
    with stores.DriverLease(url, "s", tmp_path / "c"):  # b released it
        pass
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], text=True, capture_output=True
    ).stdout.strip()
    with b.engine.begin() as c:  # a driver of this host, killed a moment ago: no need to wait
        c.execute(
            b.table.insert().values(
                study="s",
                holder=f"host {socket.gethostname()} pid {dead}, results x",
                heartbeat=time.time(),
            )
        )
    caplog.clear()
    with stores.DriverLease(url, "s", tmp_path / "d"):
        assert f"pid {dead}, results x; last heartbeat 0 s ago" in caplog.text


def test_unusable_results_folders_are_one_line_errors(tmp_path, monkeypatch, smoke):
    import os
    from pathlib import Path

    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"--results: .*/file is a file, not a folder"):
        _run(smoke(results=str(tmp_path / "file")))
    odd = os.fsdecode(bytes(tmp_path) + b"/r\xe9s")
    with pytest.raises(ValueError, match=r"is not UTF-8 \(byte 0xe9 at position \d+\)"):
        _run(smoke(results=odd))
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o500)
    if os.access(tmp_path / "ro", os.W_OK):  # root writes anyway: let the OS refuse it here

        def refuse(self, *args, **kwargs):
            raise PermissionError(13, "Permission denied", str(self))

        monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(ValueError, match=r"--results: cannot create the study folder .*Permission"):
        _run(smoke(results=str(tmp_path / "ro")))


def test_a_spec_file_that_is_not_utf8_names_the_file_and_byte(tmp_path):
    spec = tmp_path / "mine.yaml"
    spec.write_bytes(b"preset: smoke\n# caf\xe9\n")
    with pytest.raises(ValueError, match=r"mine.yaml: byte 0xe9 at position 19 is not UTF-8"):
        config.resolve(str(spec), {})


DRIVER = """
import ctypes, os, signal, sys, time
from study.scheduler import RayExecutor
RayExecutor(None, 1, "cpu", 0.0)
import ray

def spin(path):
    sig = ctypes.c_int(0)
    ctypes.CDLL(None, use_errno=True).prctl(2, ctypes.byref(sig), 0, 0, 0)  # PR_GET_PDEATHSIG
    open(path + ".tmp", "w").write(f"{os.getpid()} {sig.value}")
    os.replace(path + ".tmp", path)
    while True:
        sum(i * i for i in range(100000))

ray.remote(num_cpus=1)(spin).remote(sys.argv[1])
time.sleep(600)
"""


@pytest.mark.slow
def test_ray_workers_die_with_a_killed_driver(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    script, pidfile = tmp_path / "driver.py", tmp_path / "worker.pid"
    script.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(setup.PROJECT_ROOT)}
    driver = subprocess.Popen([sys.executable, str(script), str(pidfile)], env=env)
    try:
        for _ in range(120):
            if pidfile.exists() or driver.poll() is not None:
                break
            time.sleep(1)
        pid, deathsig = map(int, pidfile.read_text().split())
        assert deathsig == signal.SIGKILL  # the worker setup hook ran in the worker
    finally:
        driver.kill()  # kill -9
        driver.wait()
    for _ in range(30):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    pytest.fail(f"Ray worker {pid} outlived its driver by 15 s")


def test_a_block_of_ray_cluster_state_is_one_line_with_the_detail_in_a_file(tmp_path, caplog):
    import ray._private.worker as ray_worker

    from study import scheduler

    printed = []
    original = ray_worker.print_to_stdstream
    try:
        ray_worker.print_to_stdstream = lambda data, ignore_prefix: printed.append(data)
        scheduler.one_line_ray_messages()
        block = "A node died: 10.0.0.2 (node id abc)\n" + "\n".join(f"state {i}" for i in range(40))
        with pytest.MonkeyPatch.context() as m:
            m.chdir(tmp_path)
            ray_worker.print_to_stdstream({"lines": [block], "pid": "raylet"}, False)
            ray_worker.print_to_stdstream({"lines": ["one line"], "pid": "raylet"}, False)
            ray_worker.print_to_stdstream({"lines": ["a\nb"], "pid": 42}, False)
    finally:
        ray_worker.print_to_stdstream = original
    assert [d["lines"] for d in printed] == [["one line"], ["a\nb"]]  # the rest passes through
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Ray:")]
    assert line.startswith("Ray: A node died: 10.0.0.2 (node id abc) (details: ")
    assert (tmp_path / scheduler.RAY_DETAILS).read_text().count("state") == 40
