"""Joining a Ray cluster, checking its nodes before the first trial, and tidying a local instance.

`connect(address)` joins a cluster or says in one line, within seconds, why it cannot: nothing
listens there, something that is not a Ray head listens there, or the head refuses the driver's
token. A Ray 2.60 head uses token authentication when started with `RAY_AUTH_MODE=token` or where
a token exists (`~/.ray/auth_token`, which any local `ray.init()` creates), but a driver given an
explicit address turns token mode on only when told (`RAY_AUTH_MODE=token`), and otherwise
retries for about 20 s before a long traceback. So when `RAY_AUTH_MODE` is unset and
a token is at hand (`RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH` or `~/.ray/auth_token`), the driver
uses it; a head without authentication accepts a driver that sends a token.

`check_nodes` runs one small task on every node (`node_check`): it imports the packages, loads
(or builds) the compiled CPU kernel where the study trains on the CPU, and looks for each prepared
data folder, so that a node that cannot do one of these is named in one line before any trial.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from study.console import UserError

PROBE_TIMEOUT_S = 15.0  # a Ray head answers within seconds (Python and Ray start first)
NODE_CHECK_TIMEOUT_S = 600.0  # a first kernel build on a slow node takes a minute or more
TOKEN_ADVICE = (
    "give the driver the cluster's token: `ray get-auth-token` on the head node prints it; put it "
    "in ~/.ray/auth_token on this machine or export RAY_AUTH_TOKEN=<token> (or start the cluster "
    "with RAY_AUTH_MODE=disabled)"
)


class ClusterError(UserError):
    """The cluster cannot be joined, or one of its nodes cannot run trials."""


def require_answer(host: str, port: int, what: str, advice: str, timeout_s: float = 5.0) -> None:
    """Fail fast, with a clear error, when nothing answers at host:port: the clients of Ray,
    MLflow and SQLAlchemy would retry for minutes before saying so."""
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as e:
        raise ValueError(f"{what} ({e}); {advice}") from None


def _host_port(address: str) -> tuple[str, int] | None:
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    return (host, int(port)) if sep and port.isdigit() and host else None


def check_reachable(address: str) -> None:
    """`require_answer` for a `host:port` or `ray://host:port` Ray address; "auto" and other
    forms are left to Ray."""
    hp = _host_port(address)
    if hp is not None:
        require_answer(
            *hp,
            f"no Ray cluster answers at {address}",
            "start one there (`ray start --head` prints its address) or leave --ray-address out "
            "for a local instance",
        )


def use_token_if_available() -> tuple[str, bool]:
    """Token mode for this driver when RAY_AUTH_MODE is unset and a token is at hand (Ray
    enables it by itself only for a cluster it finds automatically). Returns the mode in use
    and whether a token was found."""
    from ray._raylet import AuthenticationTokenLoader, Config  # Ray internals, as `ray start`

    found = AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True)
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None:
        return mode.lower(), found
    if not found:
        return "disabled", False
    os.environ["RAY_AUTH_MODE"] = "token"
    Config.initialize("")  # Ray reads the mode from its cached config: refresh it
    AuthenticationTokenLoader.instance().reset_cache()
    return "token", True


# Ask the head for its cluster id once, as `ray.init` does first: exit 0 answered, 3 refused the
# token, 4 anything else (its first line on stdout)
PROBE = """
import sys
from ray._raylet import GcsClient
from ray.exceptions import AuthenticationError
try:
    GcsClient(address=sys.argv[1], cluster_id=None)
except AuthenticationError:
    sys.exit(3)
except Exception as e:
    print((str(e).strip().splitlines() or [type(e).__name__])[0][:300])
    sys.exit(4)
"""


def _probe(address: str) -> str | None:
    """None when a Ray head answers at `address`; else 'auth', 'timeout' or the error's first
    line. In a child process with a time limit: Ray's client retries for 30 s or more, and
    prints its retries, where this says one thing within seconds."""
    try:
        p = subprocess.run(
            [sys.executable, "-c", PROBE, address],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return "timeout"
    if p.returncode == 0:
        return None
    if p.returncode == 3:
        return "auth"
    return p.stdout.strip() or (p.stderr.strip().splitlines() or ["?"])[-1][:300]


def connect(address: str, **init_kwargs: Any) -> None:
    """`ray.init(address=...)`, or one line saying why the cluster cannot be joined."""
    import ray

    check_reachable(address)
    mode, found = use_token_if_available()
    if _host_port(address) is not None and not address.startswith("ray://"):
        problem = _probe(address)
        if problem == "auth":
            why = "it refused this driver's token"
            if not found:
                why = "no token was found here (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token)"
            elif mode != "token":
                why = f"RAY_AUTH_MODE={mode} is set here: unset it (or set it to token)"
            raise ClusterError(
                f"the Ray cluster at {address} requires a token and {why}; {TOKEN_ADVICE}"
            )
        if problem == "timeout":
            raise ClusterError(
                f"something answers at {address} but no Ray head replied within "
                f"{PROBE_TIMEOUT_S:.0f} s; check the address (`ray start --head` prints it: the "
                f"head's host and GCS port, 6379 by default)"
            )
        if problem is not None:
            raise ClusterError(f"no Ray cluster at {address}: {problem}")
    try:
        ray.init(address=address, **init_kwargs)
    except Exception as e:  # a version mismatch, a lost head: Ray's own words, one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:400]
        raise ClusterError(f"joining the Ray cluster at {address} failed: {first}") from None


def gpus(ray: Any) -> float:
    """The GPUs of the connected cluster (all nodes)."""
    return float(ray.cluster_resources().get("GPU", 0))


def resolve_device(ray: Any, address: str, device: str) -> str:
    """The device for "cpu", "cuda" or "auto" from the cluster's GPUs (the driver trains nothing)."""
    if device == "cpu":
        return "cpu"
    if gpus(ray) > 0:
        return "cuda"
    if device == "auto":
        return "cpu"
    raise ClusterError(
        f"--device cuda but the Ray cluster at {address} has no GPU (its nodes registered none: "
        f"start them with a CUDA build of torch, or `ray start --num-gpus N`); valid: cpu, auto"
    )


def node_check(data_paths: list[str], kernel: bool) -> list[str]:
    """Runs on a node: what this node lacks to run the study's trials (empty: nothing)."""
    problems = []
    try:
        import study.worker  # noqa: F401 - what a trial imports: torch, tasks, variants
        import tasks  # noqa: F401
        import variants  # noqa: F401
    except Exception as e:  # noqa: BLE001
        return [f"cannot import the package ({type(e).__name__}: {e})"]
    for path in data_paths:
        if not Path(path).is_dir():
            problems.append(f"cannot see the prepared data {path}")
    if kernel and not os.environ.get("ODYSSEY_NO_BUILD"):
        from variants.fast import build

        if build.load() is None:
            error = str(build.status()["error"]).splitlines()[0][:200]
            problems.append(
                f"cannot build the CPU kernel ({error}); install g++ and ninja there, or set "
                "ODYSSEY_NO_BUILD=1 for the slower reference loops"
            )
    return problems


def check_nodes(ray: Any, data_paths: list[str], kernel: bool, runtime_env: dict) -> None:
    """`node_check` on every alive node with CPUs; one line per node that cannot run trials."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU")]
    remote = ray.remote(node_check)
    refs = {
        remote.options(
            num_cpus=0,
            runtime_env=runtime_env,
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
        ).remote(data_paths, kernel): n.get("NodeManagerAddress", n["NodeID"][:8])
        for n in nodes
    }
    ready, missing = ray.wait(list(refs), num_returns=len(refs), timeout=NODE_CHECK_TIMEOUT_S)
    lines = [
        f"node {refs[r]}: no answer to the start check within {NODE_CHECK_TIMEOUT_S:.0f} s"
        for r in missing
    ]
    for ref in ready:
        try:
            problems = ray.get(ref)
        except Exception as e:  # noqa: BLE001 - the task could not even start there
            cause = getattr(e, "cause", None) or e
            problems = [
                f"cannot import the package ({type(cause).__name__}: "
                f"{str(cause).strip().splitlines()[-1][:200]})"
            ]
        lines += [f"node {refs[ref]}: {p}" for p in problems]
    if lines:
        raise ClusterError(
            "; ".join(lines) + " (every node needs the same Python and packages, g++ and ninja "
            "for the CPU kernel, and the data at the same path: README, 'On a cluster or a GPU')"
        )


def remove_session_dir(session_dir: str | None) -> None:
    """Remove a local Ray instance's session folder (under /tmp/ray) after it stopped, and the
    `session_latest` link when it points there."""
    if not session_dir:
        return
    folder = Path(session_dir)
    latest = folder.parent / "session_latest"
    try:
        if latest.is_symlink() and Path(os.readlink(latest)).name == folder.name:
            latest.unlink()
    except OSError:
        pass
    shutil.rmtree(folder, ignore_errors=True)
