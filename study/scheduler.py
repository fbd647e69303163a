"""Scheduling trials on Ray (or in-process, for tests and debugging).

`ray.init()` starts a local instance when no address is given (quiet logs, no dashboard); with an
address the same code connects to a cluster. A job is one trial (`study.worker.run_trial`, a Ray
task) or a pack of trials (`study.worker.run_pack`, a Ray generator task that streams each
trial's result as it finishes), with `num_cpus=1` (and a fraction of a GPU on cuda); the driver
keeps at most `workers` jobs in flight. `submit(tag, job)` takes a trial's tag, or for a pack a
list of tags in the order of `job["trials"]`; `wait` returns `(tag, result)` per finished trial.
Workers get the prepared data's path, not the data, and load it once per worker process.

The worker environment sets glibc malloc to keep freed memory (1.3-1.9x faster training on these
machines, measured) and OMP_NUM_THREADS=1 (one thread per trial).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from study import cluster
from study.cluster import check_reachable, require_answer  # noqa: F401 - their old home
from study.signals import keep_sigterm_handler
from study.worker import retryable

log = logging.getLogger(__name__)

WORKER_ENV = {
    "MALLOC_TRIM_THRESHOLD_": "17179869184",
    "MALLOC_TOP_PAD_": "1073741824",
    "MALLOC_MMAP_THRESHOLD_": "17179869184",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
PROJECT_ROOT = Path(__file__).resolve().parent.parent
PASSED_ON = ("ODYSSEY_NO_BUILD", "ODYSSEY_CELLS")  # driver settings a cluster's workers get


def die_with_parent() -> None:
    """Ray's worker setup hook: the kernel kills this worker when its parent (the raylet) dies.
    A local instance's raylet already dies with the driver (Ray's fate sharing), but a worker
    busy in a training loop could outlive both after `kill -9` of the driver, holding a CPU."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1  # <linux/prctl.h>
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the parent died before the line above: follow it now
        os._exit(1)


RAY_DETAILS = "odyssey-ray-messages.log"  # in Ray's session log folder


def one_line_ray_messages() -> None:
    """Ray prints what its raylets and GCS report (a node died, a worker was killed for memory)
    to the driver's output as blocks of dozens of lines of cluster state. Keep the first line
    there, naming the file in Ray's session log folder that gets the whole block. Installed
    before `ray.init`, which hands Ray's printer to its log listeners (a Ray internal)."""
    import ray._private.worker as ray_worker

    original = ray_worker.print_to_stdstream
    if getattr(original, "one_line", False):
        return

    def printer(data: dict, ignore_prefix: bool) -> None:
        text = "\n".join(data.get("lines", []))
        if data.get("pid") != "raylet" or "\n" not in text.strip():
            return original(data, ignore_prefix)
        first = next(line for line in text.splitlines() if line.strip()).strip()
        node = getattr(ray_worker, "_global_node", None)
        folder = Path(node.get_logs_dir_path()) if node is not None else Path(os.getcwd())
        path = folder / RAY_DETAILS
        try:
            with open(path, "a") as f:
                f.write(text.rstrip() + "\n\n")
        except OSError:
            path = None
        log.warning("Ray: %s%s", first[:300], f" (details: {path})" if path else "")

    printer.one_line = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = printer


def pack_tags(tags: list[Any], job: dict[str, Any]) -> dict[int, Any]:
    """Trial number -> tag for a pack job."""
    return {t["trial"]: tag for tag, t in zip(tags, job["trials"], strict=True)}


def lost_trials(tags: dict[int, Any], error: str) -> list[tuple[Any, dict[str, Any]]]:
    """Retryable error results for the trials of a pack that never reported (its worker died)."""
    return [(tag, retryable(error)) for tag in tags.values()]


class InlineExecutor:
    """Runs jobs in this process (sequential; no Ray): a trial job when it is submitted (`fn`),
    a pack job one streamed result per `wait` (`pack_fn`, a generator of per-trial results),
    so that the driver records each trial of a pack as it finishes, as with Ray."""

    def __init__(
        self,
        fn: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        pack_fn: Callable[[dict[str, Any]], Any] | None = None,
    ) -> None:
        from study.worker import run_pack, run_trial

        self.fn = fn or run_trial
        self.pack_fn = pack_fn or run_pack
        self.workers = 1
        self._done: list[tuple[Any, dict[str, Any]]] = []
        self._packs: list[tuple[Any, dict[int, Any]]] = []  # (generator, {trial: tag} left)

    def submit(self, tag: Any, job: dict[str, Any]) -> None:
        if job.get("kind") == "pack":
            self._packs.append((iter(self.pack_fn(job)), pack_tags(tag, job)))
        else:
            self._done.append((tag, self.fn(job)))

    def wait(self, timeout: float) -> list[tuple[Any, dict[str, Any]]]:
        if self._packs:
            gen, tags = self._packs[0]
            try:
                result = next(gen)
                self._done.append((tags.pop(result["trial"]), result))
            except StopIteration:
                self._packs.pop(0)
                self._done += lost_trials(tags, "pack ended without reporting these trials")
            except Exception as e:  # as a dying Ray worker: what did not report is rerun
                self._packs.pop(0)
                self._done += lost_trials(tags, f"pack failed: {type(e).__name__}: {e}")
        done, self._done = self._done, []
        return done

    @property
    def in_flight(self) -> int:
        return len(self._done) + len(self._packs)

    def shutdown(self, keep_logs: bool = False) -> None:
        pass


class RayExecutor:
    """Trials as Ray tasks; `wait` returns the (tag, result) pairs finished so far."""

    def __init__(
        self,
        address: str | None,
        workers: int | None,
        device: str,
        gpus_per_job: float,
        modules: list[str] | tuple[str, ...] = (),
    ) -> None:
        """Start a local instance (`address` None) or join a cluster; `device` ("cpu", "cuda",
        "auto") is resolved against where the trials run: this machine, or the cluster's GPUs.
        `modules`: plug-in package folders (or module files) the workers must import: on this
        machine their parent folders join the workers' PYTHONPATH, on a cluster they are shipped
        with the job (Ray's runtime environment `py_modules`)."""
        self._modules = list(modules)
        # Nothing leaves the machine: Ray reports usage stats by default (a user can opt in)
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        import ray

        from study.worker import run_pack, run_trial

        self.ray, self.address, self._asked_device = ray, address, device
        self._session_dir: str | None = None  # a local instance's folder under /tmp/ray
        if address is None:
            from study.setup import resolve_device

            self.device = resolve_device(device)  # before Ray starts: a wrong device fails fast
        one_line_ray_messages()
        env = dict(WORKER_ENV)
        # workers die with the raylet that started them (which dies with a local driver)
        self.runtime_env: dict[str, Any] = {
            "env_vars": env,
            "worker_process_setup_hook": "study.scheduler.die_with_parent",
        }
        with keep_sigterm_handler():  # ray.init puts its crash handler in place of ours
            if address is None:
                self._start_local(env, workers)
            else:
                self._join(address, env)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = workers or cpus
        options: dict[str, Any] = {"num_cpus": 1, "max_retries": 0}
        if self.device == "cuda":
            options["num_gpus"] = gpus_per_job
        self._remote = ray.remote(run_trial).options(**options)
        self._remote_pack = ray.remote(run_pack).options(**options)  # a streaming generator
        self._refs: dict[Any, Any] = {}  # ObjectRef -> tag
        self._packs: dict[Any, dict[int, Any]] = {}  # ObjectRefGenerator -> {trial: tag} left
        log.info(
            "Ray: %s, %d CPUs%s, %d jobs (trials or packs) in parallel",
            address or "local instance",
            cpus,
            f", {cluster.gpus(ray):g} GPUs, {gpus_per_job:g} per job"
            if self.device == "cuda"
            else "",
            self.workers,
        )

    def _start_local(self, env: dict[str, str], workers: int | None) -> None:
        # local workers import our packages from this checkout
        parents = [str(Path(m).parent) for m in self._modules]
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(PROJECT_ROOT), *parents, os.environ.get("PYTHONPATH")) if p
        )
        # address="local": always a fresh local instance. Without it ray.init() would join
        # whatever cluster RAY_ADDRESS or /tmp/ray/ray_current_cluster names, silently.
        self.ray.init(
            address="local",
            num_cpus=workers or os.cpu_count(),
            include_dashboard=False,
            log_to_driver=True,
            ignore_reinit_error=True,
            logging_level=logging.WARNING,
            runtime_env=self.runtime_env,
        )
        node = getattr(self.ray._private.worker, "_global_node", None)  # a Ray internal
        self._session_dir = node.get_session_dir_path() if node is not None else None

    def _join(self, address: str, env: dict[str, str]) -> None:
        # a cluster gets the code shipped with the job; data paths must be shared storage
        import study
        import tasks
        import variants

        self.runtime_env["py_modules"] = [
            str(Path(m.__file__).parent) for m in (variants, tasks, study)
        ] + self._modules
        # the run's own switches reach the workers (a local instance's inherit them)
        env.update({k: os.environ[k] for k in PASSED_ON if k in os.environ})
        cluster.connect(address, logging_level=logging.WARNING, runtime_env=self.runtime_env)
        try:
            self.device = cluster.resolve_device(self.ray, address, self._asked_device)
        except cluster.ClusterError:
            self.ray.shutdown()
            raise

    def submit(self, tag: Any, job: dict[str, Any]) -> None:
        if job.get("kind") == "pack":
            self._packs[self._remote_pack.remote(job)] = pack_tags(tag, job)
        else:
            self._refs[self._remote.remote(job)] = tag

    @property
    def in_flight(self) -> int:
        return len(self._refs) + len(self._packs)

    def wait(self, timeout: float) -> list[tuple[Any, dict[str, Any]]]:
        waitables = list(self._refs) + list(self._packs)
        if not waitables:
            return []
        ready, rest = self.ray.wait(waitables, num_returns=1, timeout=timeout)
        if ready and rest:  # collect whatever else has finished meanwhile
            ready += self.ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        out = []
        for ref in ready:
            if ref in self._packs:
                out += self._next_of_pack(ref)
                continue
            tag = self._refs.pop(ref)
            try:
                out.append((tag, self.ray.get(ref)))
            except Exception as e:  # the worker process died (OOM, segfault, ...)
                out.append((tag, retryable(f"worker died: {type(e).__name__}: {str(e)[:2000]}")))
        return out

    def _next_of_pack(self, gen: Any) -> list[tuple[Any, dict[str, Any]]]:
        """The next result a pack streamed; at its end, errors for the trials it never
        reported (its worker died, or it stopped early)."""
        tags = self._packs[gen]
        try:
            result = self.ray.get(next(gen))
        except StopIteration:
            del self._packs[gen]
            return lost_trials(tags, "pack ended without reporting these trials")
        except Exception as e:  # the worker process died (OOM, segfault, ...)
            del self._packs[gen]
            return lost_trials(tags, f"worker died: {type(e).__name__}: {str(e)[:2000]}")
        tag = tags.pop(result["trial"])
        if not tags:  # every trial reported: the generator has nothing more to give
            del self._packs[gen]
        return [(tag, result)]

    def check_nodes(self, data_paths: list[str], kernel: bool) -> None:
        """On a cluster: every node can import the package, see the data and (`kernel`) build
        the CPU kernel, or one line naming the node. A local instance is this machine."""
        if self.address is not None:
            cluster.check_nodes(self.ray, data_paths, kernel, self.runtime_env)

    def shutdown(self, keep_logs: bool = False) -> None:
        """Cancel what runs and leave Ray; a local instance's session folder (its logs, under
        /tmp/ray) is removed unless `keep_logs` (the run ended with an error) or a message
        named a file in it."""
        for ref in list(self._refs) + list(self._packs):
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - shutting down; Ray kills what is left
                pass
        self._refs.clear()
        self._packs.clear()
        self.ray.shutdown()
        if not self._session_dir:
            return
        # kept where a log line pointed into it (Ray's messages, `one_line_ray_messages`)
        if keep_logs or (Path(self._session_dir) / "logs" / RAY_DETAILS).exists():
            log.info("Ray's logs of this run: %s", self._session_dir)
        else:
            cluster.remove_session_dir(self._session_dir)
