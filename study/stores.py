"""Opening a study's stores safely: the results folder, damaged files, and the driver lease.

- `check_results_dir` (study.preflight): a `--results` that cannot be used is one clear error.
- `aside`: a damaged file is never deleted; it moves to `<study>/damaged/` with a time stamp, and
  the stores are rebuilt from what remains (study.repair).
- `sqlite_damage`: whether a study folder's own SQLite file is unreadable (not a database,
  failed `PRAGMA quick_check`), decided by SQLite itself.
- `DriverLease`: one driver per study also when several results folders share one `--storage`:
  a row in the storage's own database (table `odyssey_driver_lease`, keyed by study name) that
  a driver inserts atomically, keeps alive with a heartbeat, and deletes when it stops. A lease
  whose heartbeat is older than `LEASE_TTL_S`, or whose holder is a process of this host that
  has ended (a driver killed with `kill -9`), is taken over.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from study import results
from study.preflight import check_results_dir, undecodable

__all__ = ["DriverLease", "aside", "check_results_dir", "sqlite_damage", "undecodable"]
log = logging.getLogger(__name__)

DAMAGED_DIR = "damaged"
LEASE_TABLE = "odyssey_driver_lease"
LEASE_TTL_S = 90.0
HEARTBEAT_S = 20.0


def damaged_dir(study_dir: Path) -> Path:
    """`<study>/damaged/`, or `damaged-N/` when something else (a file) holds that name."""
    for n in range(1000):
        folder = study_dir / (DAMAGED_DIR if n == 0 else f"{DAMAGED_DIR}-{n}")
        if folder.is_dir() or not (folder.exists() or folder.is_symlink()):
            return folder
    raise results.BlockedPath(study_dir / DAMAGED_DIR, "a file", f"{DAMAGED_DIR}/ folder")


def aside(path: Path, study_dir: Path) -> Path:
    """Move a damaged file (or folder) to `<study>/damaged/<name>.<UTC time>`; never deleted."""
    folder = damaged_dir(study_dir)
    folder.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    dest = folder / f"{path.name}.{stamp}"
    os.replace(path, dest)
    for suffix in ("-journal", "-wal", "-shm"):  # SQLite's side files belong to it
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, folder / f"{side.name}.{stamp}")
    return dest


# tables that tell the study folder's two databases apart (a copy of one over the other, or
# another program's database, is damage: recognised here, before Optuna or MLflow open it and
# cache an engine for its URL)
TABLES = {results.OPTUNA_DB: ("studies", "trials"), results.MLFLOW_DB: ("experiments", "runs")}
KNOWN = {
    ("studies", "version_info"): "an Optuna database",
    ("experiments", "runs"): "an MLflow database",
}


def sqlite_damage(path: Path) -> str | None:
    """Why the SQLite database at `path` is unreadable (SQLite's own words) or not the store its
    name says (`TABLES`: an Optuna database where MLflow's belongs), or None if it is sound or
    absent. A file that is sound to SQLite but not to Optuna/MLflow is found when they open it."""
    if not path.is_file():
        return None
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
        try:
            rows = con.execute("PRAGMA quick_check").fetchall()
            names = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        return str(e)
    problems = [r[0] for r in rows if r[0] != "ok"]
    if problems:
        return "; ".join(problems[:3])
    need = TABLES.get(path.name, ())
    if names and not all(t in names for t in need):
        what = next((w for k, w in KNOWN.items() if all(t in names for t in k)), None)
        if what:
            return f"it holds {what}, not this store's"
        shown = ", ".join(sorted(names)[:4]) + (", ..." if len(names) > 4 else "")
        return f"it holds other tables ({shown}), not {', '.join(need)}"
    return None


def holder_name(study_dir: Path) -> str:
    return f"host {socket.gethostname()} pid {os.getpid()}, results {study_dir.resolve()}"


def _dead_here(holder: str) -> bool:
    """Whether a lease holder (see `holder_name`) is a process of this host that has ended
    (a driver killed with `kill -9`): its lease need not wait for the heartbeat to expire."""
    import re

    m = re.match(r"host (\S+) pid (\d+),", holder)
    if not m or m.group(1) != socket.gethostname():
        return False
    try:
        os.kill(int(m.group(2)), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


class DriverLease:
    """The lease of study `name` in the database behind `url` (see the module docstring)."""

    def __init__(self, url: str, name: str, study_dir: Path, engine=None) -> None:
        import sqlalchemy as sa

        self.sa = sa
        self.url, self.name = url, name
        self.holder = holder_name(study_dir)
        self.engine = engine if engine is not None else sa.create_engine(url)
        self.table = sa.Table(
            LEASE_TABLE,
            sa.MetaData(),
            sa.Column("study", sa.String(512), primary_key=True),
            sa.Column("holder", sa.String(1024), nullable=False),
            sa.Column("heartbeat", sa.Float, nullable=False),
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        sa, t = self.sa, self.table
        t.create(self.engine, checkfirst=True)
        for _ in range(3):  # insert, or take over a stale row; a row deleted meanwhile: again
            now = time.time()
            try:
                with self.engine.begin() as c:
                    c.execute(t.insert().values(study=self.name, holder=self.holder, heartbeat=now))
                break
            except sa.exc.IntegrityError:  # a lease row exists: whose, and is it alive?
                pass
            with self.engine.begin() as c:
                row = c.execute(sa.select(t).where(t.c.study == self.name)).first()
                if row is None:
                    continue
                alive = now - row.heartbeat < LEASE_TTL_S and not _dead_here(row.holder)
                if row.holder != self.holder and alive:
                    self._refuse(row, now)
                took = c.execute(
                    t.update()
                    .where(t.c.study == self.name, t.c.heartbeat == row.heartbeat)
                    .values(holder=self.holder, heartbeat=now)
                ).rowcount
            if took == 1:
                if row.holder != self.holder:
                    log.warning(
                        "study %s: took over the lease of a driver that stopped without "
                        "releasing it (%s; last heartbeat %.0f s ago)",
                        self.name,
                        row.holder,
                        now - row.heartbeat,
                    )
                break
        else:
            raise ValueError(f"study {self.name!r}: could not take the driver lease in {self.url}")
        self._thread = threading.Thread(target=self._beat, name="odyssey-lease", daemon=True)
        self._thread.start()

    def _refuse(self, row, now: float) -> None:
        raise ValueError(
            f"study {self.name!r} in storage {self.url} is being run by another driver "
            f"({row.holder}; heartbeat {now - row.heartbeat:.0f} s ago); wait for it, stop it, "
            f"or use another --study name (a lease not renewed for {LEASE_TTL_S:.0f} s expires)"
        )

    def _beat(self) -> None:
        t = self.table
        while not self._stop.wait(HEARTBEAT_S):
            try:
                with self.engine.begin() as c:
                    n = c.execute(
                        t.update()
                        .where(t.c.study == self.name, t.c.holder == self.holder)
                        .values(heartbeat=time.time())
                    ).rowcount
                if n != 1:
                    log.error("study %s: lost the driver lease to another driver", self.name)
                    return
            except Exception as e:  # noqa: BLE001 - a missed beat is retried; the lease has slack
                log.debug("lease heartbeat failed: %s", e)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        t = self.table
        try:
            with self.engine.begin() as c:
                c.execute(t.delete().where(t.c.study == self.name, t.c.holder == self.holder))
        except Exception as e:  # noqa: BLE001 - an unreleased lease expires by itself
            log.warning("could not release the driver lease of %s: %s", self.name, e)

    def __enter__(self) -> DriverLease:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def open_optuna(cfg, directions: dict[str, str], found, held, open_store) -> dict:
    """Open the Optuna record (`open_store`: study.runner's) and every pair's study in it, reading
    each once; a damaged study-folder database moves aside and a new one is opened (study.repair
    refills it from the table). With a shared `--storage`, take the driver lease first (held
    until `held`, an ExitStack, closes)."""
    import optuna

    from study import record, repair

    default_db = None if cfg.storage else cfg.study_dir / results.OPTUNA_DB
    if not found.fix and default_db is not None and not default_db.exists():
        found.say("", f"Optuna storage {default_db} is missing; would rebuild it from the table")
        return None

    def opener() -> dict:
        store = open_store("Optuna storage", cfg.optuna_storage, record.storage, default_db)
        if cfg.storage and held is not None and found.fix:  # --check reads only: no lease
            lease = DriverLease(cfg.optuna_storage, cfg.name, cfg.study_dir, store.engine)
            held.enter_context(lease)
        studies = {}
        for task, variant in [(t, v) for t in cfg.tasks for v in cfg.variants]:
            if found.fix:
                s = record.open_study(
                    store, cfg.name, task, variant, directions[task], cfg.sampler, cfg.seed
                )
            else:  # --check writes nothing, not even a missing pair's empty study
                try:
                    name = record.study_name(cfg.name, task, variant)
                    s = optuna.load_study(study_name=name, storage=store)
                except KeyError:
                    found.say("", f"Optuna has no study {name}; would create it")
                    continue
            s.get_trials(deepcopy=False)  # reads every trial: damage shows here, not later
            studies[(task, variant)] = s
        return studies

    return repair.open_own_db("Optuna storage", default_db, cfg.study_dir, opener, found)


def open_tracker(cfg, version: str, found, open_store, init) -> object:
    """Open the MLflow store (`open_store`, `init`: study.runner's) and list its trial runs once;
    a damaged study-folder database moves aside and a new one is opened (its runs are logged
    again from the table by Tracker.reconcile)."""
    from study import repair
    from study.tracking import Tracker

    artifacts = None if cfg.tracking_uri else (cfg.study_dir / "mlartifacts").resolve().as_uri()
    default_db = None if cfg.tracking_uri else cfg.study_dir / results.MLFLOW_DB

    def opener():
        tracker = open_store(
            "MLflow tracking URI",
            cfg.mlflow_uri,
            lambda uri: Tracker(uri, cfg.name, cfg.to_dict(), version, artifacts),
            default_db,
            init=init,
        )
        tracker.client.search_runs([tracker.experiment_id], max_results=1)  # reads the store
        return tracker

    return repair.open_own_db("MLflow tracking URI", default_db, cfg.study_dir, opener, found)
