"""Joining a Ray cluster, against a real head this module starts (`ray start --head --block` on
loopback, its own temp folder and ports, token authentication; killed after): the token alone
joins it, a missing or wrong token and an address where no Ray head listens are one line each
with nothing left in the study, and the start check names a node that cannot see the data.
About 40-60 s on 2 busy cores (the head's start-up and one smoke trial on it)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from study import cluster, results

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "0123456789abcdef" * 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any Ray auth settings, HOME moved (no token in
    ~/.ray), the kernel cache kept where it is (no rebuild)."""
    from variants.fast import build

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env.update(
        HOME=str(home),
        ODYSSEY_EXT_DIR=str(build.cache_dir()),
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONPATH=str(ROOT),
    )
    return {**env, **extra}


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A one-node Ray cluster with token authentication on 127.0.0.1; yields its address."""
    tmp = tmp_path_factory.mktemp("head")
    (tmp / "home").mkdir()
    port = _free_port()
    ports = [str(_free_port()) for _ in range(3)]
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block"]
    cmd += ["--port", str(port), "--node-ip-address", "127.0.0.1", "--num-cpus", "1"]
    cmd += ["--ray-client-server-port", ports[0], "--dashboard-agent-listen-port", ports[1]]
    cmd += ["--dashboard-port", ports[2], "--include-dashboard", "false"]
    cmd += ["--temp-dir", str(tmp / "ray"), "--disable-usage-stats"]
    env = _env(tmp / "home", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN)
    log = open(tmp / "head.log", "w")
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 90
        while "block forever" not in (tmp / "head.log").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, (
                tmp / "head.log"
            ).read_text()
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the head and every process it started
        proc.wait(30)
        log.close()


def _odyssey(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "odyssey", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
    )


def _run_args(tmp_path: Path, address: str, data: Path, trials: int = 1) -> list[str]:
    return (
        ["run", "smoke", "--tasks", "jsb_chorales", "--variants", "V", "--trials", str(trials)]
        + ["--ray-address", address, "--results", str(tmp_path / "res"), "--data-dir", str(data)]
        + ["--no-live"]
    )


def _one_line(p: subprocess.CompletedProcess) -> str:
    """The error line; beside it only the line that counts what Ray wrote to the study's log
    (its client's warning about the refused token), when the study folder exists."""
    lines = [
        line
        for line in p.stderr.splitlines()
        if line.strip() and "Ray, MLflow and the workers wrote" not in line
    ]
    assert p.returncode == 2 and len(lines) == 1, p.stdout[-2000:] + p.stderr[-3000:]
    return lines[0]


@pytest.mark.integration
def test_the_token_alone_joins_and_a_bad_one_changes_nothing(head, tmp_path, smoke_data):
    home = tmp_path / "home"
    home.mkdir()
    # the cluster's token, RAY_AUTH_MODE unset: joined, one trial run on the cluster
    ok = _odyssey(_run_args(tmp_path, head, smoke_data), _env(home, RAY_AUTH_TOKEN=TOKEN), tmp_path)
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-3000:]
    study_dir = tmp_path / "res" / "smoke"
    assert list(results.read_trials(study_dir)["status"]) == ["complete"]

    # no token: one line, the study unchanged (nothing asked of Optuna, nothing running)
    before = (study_dir / results.TRIALS_FILE).read_bytes()
    p = _odyssey(_run_args(tmp_path, head, smoke_data, trials=2), _env(home), tmp_path)
    line = _one_line(p)
    assert f"the Ray cluster at {head} requires a token and no token was found here" in line
    assert "`ray get-auth-token` on the head node prints it" in line
    assert (study_dir / results.TRIALS_FILE).read_bytes() == before
    storage = f"sqlite:///{study_dir / 'optuna.db'}"
    trials = optuna.load_study(study_name="smoke/jsb_chorales/V", storage=storage).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE]

    # a wrong token on a first start: one line, and no study folder
    first = _run_args(tmp_path, head, smoke_data) + ["--study", "fresh"]
    p = _odyssey(first, _env(home, RAY_AUTH_TOKEN="f" * 64), tmp_path)
    assert "requires a token and it refused this driver's token" in _one_line(p)
    assert not (tmp_path / "res" / "fresh").exists()


@pytest.mark.integration
def test_no_ray_head_at_the_address_is_one_line(tmp_path, smoke_data, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    nothing = f"127.0.0.1:{_free_port()}"
    line = _one_line(_odyssey(_run_args(tmp_path, nothing, smoke_data), _env(home), tmp_path))
    assert line.startswith(f"odyssey run: error: no Ray cluster answers at {nothing} (")
    assert not (tmp_path / "res").exists() or not any((tmp_path / "res").iterdir())
    with socket.socket() as other:  # something that listens but is no Ray head
        other.bind(("127.0.0.1", 0))
        other.listen(8)
        address = f"127.0.0.1:{other.getsockname()[1]}"
        monkeypatch.setattr(cluster, "PROBE_TIMEOUT_S", 5.0)  # Ray's client would wait 30 s
        with pytest.raises(cluster.ClusterError) as e:
            cluster.connect(address)
    assert str(e.value).startswith(f"something answers at {address} but no Ray head replied")


@pytest.mark.integration
def test_the_start_check_names_a_node_that_cannot_see_the_data(head, tmp_path, monkeypatch):
    import ray

    monkeypatch.setenv("RAY_AUTH_TOKEN", TOKEN)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    runtime_env = {"env_vars": {"PYTHONPATH": str(ROOT)}}
    cluster.connect(head, runtime_env=runtime_env)
    try:
        node = ray.nodes()[0]["NodeManagerAddress"]  # the head's own address for its node
        with pytest.raises(cluster.ClusterError) as e:
            cluster.check_nodes(ray, [str(tmp_path), str(tmp_path / "nope")], False, runtime_env)
    finally:
        ray.shutdown()
        os.environ.pop("RAY_AUTH_MODE", None)  # set by connect for this process
    msg = str(e.value)
    assert msg.startswith(f"node {node}: cannot see the prepared data {tmp_path / 'nope'} (")
    assert str(tmp_path) + " " not in msg  # the folder it can see is not named
    assert "\n" not in msg


def test_node_check_lists_what_a_node_lacks(tmp_path, monkeypatch):
    assert cluster.node_check([str(tmp_path)], kernel=False) == []
    monkeypatch.setenv("ODYSSEY_NO_BUILD", "1")  # a deliberate choice, not a problem
    assert cluster.node_check([str(tmp_path / "x")], kernel=True) == [
        f"cannot see the prepared data {tmp_path / 'x'}"
    ]


def test_with_a_cluster_the_device_comes_from_the_cluster_not_the_driver(smoke, monkeypatch):
    from types import SimpleNamespace

    from study import runner

    def cluster_of(gpus: int):
        return SimpleNamespace(cluster_resources=lambda: {"CPU": 8.0, "GPU": float(gpus)})

    assert cluster.resolve_device(cluster_of(2), "h:6379", "cuda") == "cuda"
    assert cluster.resolve_device(cluster_of(2), "h:6379", "auto") == "cuda"
    assert cluster.resolve_device(cluster_of(0), "h:6379", "auto") == "cpu"
    assert cluster.resolve_device(cluster_of(2), "h:6379", "cpu") == "cpu"
    with pytest.raises(cluster.ClusterError, match=r"--device cuda but the Ray cluster at h:6379"):
        cluster.resolve_device(cluster_of(0), "h:6379", "cuda")

    # the driver (no GPU here) hands "cuda" to the executor that joins, and asks torch nothing
    asked = []
    joined = SimpleNamespace(device="cuda")
    monkeypatch.setattr(runner, "_ray_executor", lambda cfg, d: asked.append(d) or joined)
    monkeypatch.setattr(runner, "resolve_device", lambda d: pytest.fail("checked locally"))
    cfg = smoke(device="cuda", ray_address="h:6379")
    assert runner._join_cluster(cfg, None) == (joined, "cuda") and asked == ["cuda"]
