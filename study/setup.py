"""What a study needs before its first trial: the code version, the device, the driver's lock on
its folder, the config check and record, the data (prepared and recorded), and opening a store
with a one-line error. Steps of `study.runner`, kept apart so that the driver reads as its run."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from study import config as config_mod
from study import preflight, results
from study.config import StudyConfig
from study.results import LOCK_FILE, RUN_LOG

log = logging.getLogger("study.runner")  # the driver's lines, as before the split
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def code_version() -> str:
    """`git describe` of the checkout (with -dirty), else the installed package version."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from importlib.metadata import version

        return version("lstm-odyssey")
    except Exception:  # not installed
        return "unknown"


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda but torch sees no CUDA device; valid here: cpu, auto")
    return device


# A driver waits this long for the lock: `running_driver` (status) holds it for an instant too.
LOCK_WAIT_S = 1.0


@contextmanager
def study_lock(study_dir: Path) -> Iterator[None]:
    """Refuse a second driver on the same study (an flock, released by the OS even after kill -9).

    A start that ends before the study's config was saved (a wrong data path, a bad URL,
    Ctrl-C during data preparation) recorded nothing: it leaves no lock file, and a folder it
    found empty is removed again, so that `status` and `report` do not take it for a study."""
    study_dir.mkdir(parents=True, exist_ok=True)
    path = study_dir / LOCK_FILE
    fresh = not any(p.name not in (LOCK_FILE, RUN_LOG) for p in study_dir.iterdir())
    saved = study_dir / results.CONFIG_FILE
    # flock only (no silent fallback to a marker file that kill -9 would leave behind)
    lock = FileLock(path, fallback_to_soft=False, preserve_lock_file=True)
    try:
        try:
            lock.acquire(timeout=LOCK_WAIT_S)
        except FileNotFoundError:  # a failed first start removed the folder while this one waited
            study_dir.mkdir(parents=True, exist_ok=True)
            lock.acquire(timeout=LOCK_WAIT_S)
    except Timeout:
        raise ValueError(
            f"study {study_dir} is already being run by another driver "
            f"(pid {_holder(path)}); wait for it or stop it"
        ) from None
    try:
        path.write_text(str(os.getpid()))
        yield
    finally:
        try:
            if not saved.is_file():  # still held: nobody can be starting
                path.unlink(missing_ok=True)
                if fresh and not (study_dir / results.TRIALS_FILE).exists():
                    shutil.rmtree(study_dir, ignore_errors=True)
        finally:
            lock.release()


def running_driver(study_dir: Path) -> str | None:
    """The pid of the driver running the study (as its lock file says; '?' if it says nothing),
    or None when no driver holds the lock."""
    import fcntl

    path = study_dir / LOCK_FILE
    try:  # read-only: `status` works on a study another user runs, or on read-only storage
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None  # never started, or a failed first start
    try:  # a shared flock conflicts with the driver's exclusive one (filelock's, also flock)
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(path)
    finally:
        os.close(fd)  # also releases the shared lock
    return None


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"


def check_config(cfg: StudyConfig) -> None:
    """Refuse a config that changes what the study's (saved) trials mean."""
    path = cfg.study_dir / results.CONFIG_FILE
    if path.is_file():
        old = config_mod.load_saved(path)
        diff = config_mod.fingerprint_diff(old, cfg)
        if diff:
            raise ValueError(
                f"study {cfg.name!r} in {cfg.study_dir} was run with a different "
                f"{', '.join(diff)}; that would change what its trials mean. Use the saved "
                f"settings, or start a new study with --study NEW_NAME"
            )


def save_config(cfg: StudyConfig) -> None:
    """Save the resolved config: done once the data and the stores opened, so a first start that
    fails on a typo (a wrong data path, a bad URL) does not bind the study to it. It describes the
    whole study: a run over fewer tasks or variants, or fewer trials, than earlier runs keeps
    theirs (the union of tasks and variants, the most trials asked), so that reports and
    `status` still know what was planned for every pair."""
    path = cfg.study_dir / results.CONFIG_FILE
    if path.is_file():
        old = config_mod.load_saved(path)
        cfg = cfg.model_copy(
            update={
                "tasks": tuple(dict.fromkeys(old.tasks + cfg.tasks)),
                "variants": tuple(dict.fromkeys(old.variants + cfg.variants)),
                "custom_variants": {**old.custom_variants, **cfg.custom_variants},
                "trials": max(old.trials, cfg.trials),
            }
        )
    tmp = path.with_name(f".{results.CONFIG_FILE}.tmp")
    tmp.write_text(config_mod.dump(cfg))
    os.replace(tmp, path)


def record_data(
    study_dir: Path,
    metas: dict[str, dict],
    declared: Mapping[str, Mapping[str, Any]] | None = None,
    plugins: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Check and record the data each task trains on, in `data.json` (source, stand-in or not,
    data version, split sizes, the task's notes: dropped lines, conventions; the report shows it),
    with the names the report uses: the task's title, metric and direction, and every variant's
    title in the registry's order, then those the study declares (`declared`: name -> flags),
    and the identity of every plug-in it uses (`plugins`: import path -> identity).

    A resume on data of another version than the study started on is refused: a newer generator
    or feature extractor made it, and the trials would no longer be comparable."""
    import json

    import tasks
    import variants

    seen = results.read_data(study_dir)
    if seen is not None:
        versions = {t: int(s["data_version"]) for t, s in seen.tasks.items()}
    else:
        legacy = study_dir / results.LEGACY_DATA_VERSIONS
        versions = json.loads(legacy.read_text()) if legacy.is_file() else {}
        seen = results.DataSummary()
    now = {t: int(m.get("data_version", 1)) for t, m in metas.items()}
    changed = {t: (versions[t], v) for t, v in now.items() if t in versions and versions[t] != v}
    if changed:
        what = ", ".join(f"{t} (version {a} -> {b})" for t, (a, b) in changed.items())
        raise ValueError(
            f"the prepared data changed since study {study_dir.name!r} started: {what}; its "
            f"trials would not be comparable. Start a new study with --study NEW_NAME"
        )
    recorded = dict(seen.tasks)
    for name, meta in metas.items():
        task = tasks.get(name)
        plugin = tasks.ORIGINS.get(name, "built-in")
        user = plugin != "built-in"  # a user's task: neither the real corpus nor a stand-in
        recorded[name] = {
            "title": task.title,
            "metric": task.metric,
            "direction": task.metric_direction,
            "source": "plugin" if user else meta.get("source"),
            "stand_in": None if user else bool(meta.get("stand_in", False)),
            "origin": f"{meta.get('source')} data of plug-in {plugin}"
            if user
            else meta.get("origin"),
            "data_version": now[name],
            "splits": meta.get("splits", {}),
            "notes": list(task.data_notes(meta)),
        }
    known = list(tasks.TASKS)  # the registry's order, then tasks it no longer has
    order = [t for t in known if t in recorded] + [t for t in recorded if t not in known]
    names = {name: spec.change for name, spec in variants.VARIANTS.items()}
    for name, title in seen.variants.items():  # declared by an earlier run of the study
        names.setdefault(name, title)
    for name, flags in (declared or {}).items():
        names[name] = results.declared_title(flags)
    prev = seen.plugins if isinstance(seen.plugins, dict) else {}
    found = {
        k: dict(v) if isinstance(v := prev.get(k), dict) else {} for k in ("variants", "tasks")
    }
    by_path = dict(plugins or {})
    for name, flags in (declared or {}).items():
        if str(flags.get("kind", "")) in by_path:
            found["variants"][name] = by_path[str(flags["kind"])]
    for name in metas:
        if tasks.ORIGINS.get(name, "built-in") in by_path:
            found["tasks"][name] = by_path[tasks.ORIGINS[name]]
    summary = results.DataSummary(
        names, {t: recorded[t] for t in order}, {k: v for k, v in found.items() if v}
    )
    results.write_data(study_dir, summary)


def init_mlflow_store(uri: str) -> None:
    """Create MLflow's schema in the database at `uri`."""
    from study.tracking import MlflowClient  # MLflow without its telemetry

    MlflowClient(tracking_uri=uri).search_experiments(max_results=1)


def _check_server(what: str, uri: str) -> None:
    """`require_answer` for the http(s) or database server named by `uri`, if any."""
    from urllib.parse import urlsplit

    from study.scheduler import require_answer

    parts = urlsplit(uri)
    if parts.scheme in ("", "file") or parts.scheme.startswith("sqlite") or not parts.hostname:
        return
    default_ports = {"http": 80, "https": 443, "postgresql": 5432, "mysql": 3306}
    try:
        port = parts.port or default_ports.get(parts.scheme.split("+")[0])
    except ValueError:
        return  # a malformed port: the client's own error says it better
    if port is not None:
        require_answer(
            parts.hostname,
            port,
            f"the {what} {uri} does not answer",
            "start that server, or leave the option out to keep the store in the study folder",
        )


def open_store(
    what: str,
    uri: str,
    opener: Callable[[str], Any],
    default_db: Path | None,
    init: Callable[[str], Any] | None = None,
    if_broken: str = "",
) -> Any:
    """`opener(uri)`, with a one-line error naming `what` and the URI when it fails (plus
    `if_broken`, advice for a study folder's own database that exists but does not open).

    `default_db`: the study folder's own SQLite file behind `uri`, if it is one. A new one is
    built under a temporary name and moved into place once its schema is complete (`init`, or
    `opener` itself), so that a first start killed while the schema is written leaves no
    half-built database that every later start would trip on."""
    _check_server(what, uri)
    if default_db is not None and not default_db.exists():
        for stale in default_db.parent.glob(f".{default_db.name}.init-*"):
            stale.unlink(missing_ok=True)  # from a start killed while building (we hold the lock)
        tmp = default_db.with_name(f".{default_db.name}.init-{os.getpid()}")
        try:
            with preflight.writing(default_db):
                (init or opener)(f"sqlite:///{tmp.resolve()}")
        except preflight.DiskFull:
            tmp.unlink(missing_ok=True)  # a half-built schema: the next start builds it anew
            raise
        except Exception as e:  # noqa: BLE001 - reported with what was being opened
            raise ValueError(
                f"could not create the {what} {uri}: {preflight.short_error(e)}"
            ) from e
        os.replace(tmp, default_db)
    try:
        with preflight.writing(default_db or uri):
            return opener(uri)
    except preflight.DiskFull:
        raise
    except Exception as e:  # noqa: BLE001 - reported with what was being opened
        hint = (
            if_broken
            if default_db is not None
            else "; valid: a URL like sqlite:////abs/path.db, or a server whose driver is installed"
        )
        raise ValueError(
            f"could not open the {what} {uri}: {preflight.short_error(e)}{hint}"
        ) from e


def prepare_data(cfg: StudyConfig) -> dict[str, tuple[str, dict]]:
    """Prepared data folder and meta per task, preparing what is missing (cached in data_dir)."""
    import tasks
    from tasks.base import dataset_key, default_data_dir, prepared_dir, read_meta

    out = {}
    data_dir = Path(cfg.data_dir).expanduser() if cfg.data_dir else default_data_dir()
    for name in cfg.tasks:
        d = cfg.data_for(name)
        source = d.source or tasks.get(name).default_source
        folder = prepared_dir(data_dir, name, dataset_key(source, d.size, d.seed))
        meta_ok = (folder / "meta.json").is_file()
        if (
            meta_ok
            and d.path is not None
            and read_meta(folder).get("path") == str(Path(d.path).expanduser())
        ):
            out[name] = (str(folder), read_meta(folder))  # tasks.prepare re-reads a given path
            continue
        if not meta_ok or d.path is not None:
            log.info(
                "preparing %s data (source %s%s) in %s",
                name,
                source,
                f", size {d.size}" if d.size else "",
                folder,
            )
        folder, meta = tasks.prepare(name, source, d.path, d.size, d.seed, data_dir, progress=False)
        out[name] = (str(folder), meta)
    return out
