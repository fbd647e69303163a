"""Watching a study: the per-(task, variant) summary behind `odyssey status` and the live display
of `odyssey run` (a rich table on a terminal, one log line per finished trial otherwise)."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import pandas as pd
from rich.console import Console
from rich.live import Live
from rich.table import Table

log = logging.getLogger(__name__)


def summarize(
    df: pd.DataFrame,
    pairs: list[tuple[str, str]],
    expected: int,
    directions: dict[str, str],
    metrics: dict[str, str] | None = None,
) -> pd.DataFrame:
    """One row per (task, variant): done, failed, expected, best validation and its test value,
    mean trial seconds, and the failed trials as (trial number, first line of the reason). Pairs
    only in the table are included too."""
    seen = list(dict.fromkeys(pairs + list(zip(df["task"], df["variant"], strict=True))))
    out = []
    for task, variant in seen:
        sub = df[(df["task"] == task) & (df["variant"] == variant)]
        ok = sub[sub["status"] == "complete"]
        best_val = best_test = math.nan
        if len(ok):
            minimize = directions.get(task, "minimize") == "minimize"
            i = ok["val_metric"].idxmin() if minimize else ok["val_metric"].idxmax()
            best_val, best_test = float(ok.loc[i, "val_metric"]), float(ok.loc[i, "test_metric"])
        failed = sub[sub["status"] == "failed"]
        out.append(
            {
                "task": task,
                "variant": variant,
                "done": len(ok),
                "failed": len(failed),
                "expected": expected if (task, variant) in pairs else len(sub),
                "metric": sub["metric"].iloc[0] if len(sub) else (metrics or {}).get(task, ""),
                "best_val": best_val,
                "best_test": best_test,
                "mean_wall_s": float(sub["wall_s"].mean()) if len(sub) else math.nan,
                "errors": [
                    (int(n), (str(e).strip().splitlines() or ["no reason recorded"])[0])
                    for n, e in zip(failed["trial"], failed["error"].fillna(""), strict=True)
                ],
            }
        )
    return pd.DataFrame(out)


def remaining(summary: pd.DataFrame) -> int:
    """Trials still to run (expected minus finished, per pair, never below 0)."""
    if summary.empty:
        return 0
    left = (summary["expected"] - summary["done"] - summary["failed"]).clip(lower=0)
    return int(left.sum())


def task_rates(summary: pd.DataFrame) -> dict[str, float]:
    """Seconds per trial of each task with a finished trial: the mean `wall_s` over its finished
    trials. A packed trial's `wall_s` is its share of its pack's time, so this is the rate at
    the task's pack size: core seconds per trial."""
    finished = summary["done"] + summary["failed"]
    out = {}
    for task in dict.fromkeys(summary["task"]):
        mine = (summary["task"] == task) & (finished > 0)
        n = float(finished[mine].sum())
        if n:
            out[task] = float((summary["mean_wall_s"][mine].fillna(0) * finished[mine]).sum() / n)
    return out


def eta_seconds(
    summary: pd.DataFrame, workers: int, rates: dict[str, float] | None = None
) -> float:
    """Sum over tasks of remaining trials x that task's seconds per trial, over `workers`.
    `rates` (task -> seconds per trial, e.g. measured in this run at its pack sizes) override
    `task_rates(summary)`; a task with no rate yet counts at the mean of the known ones.
    Averaging over all finished trials instead lets many fast trials of one task (packed JSB
    Chorales) hide the slow ones still to come. 0 when nothing remains; NaN when unknown."""
    if summary.empty:
        return math.nan
    left = (summary["expected"] - summary["done"] - summary["failed"]).clip(lower=0)
    if left.sum() == 0:
        return 0.0
    known = {**task_rates(summary), **(rates or {})}
    if not known:
        return math.nan
    fallback = sum(known.values()) / len(known)
    total = sum(
        float(n) * known.get(t, fallback) for t, n in zip(summary["task"], left, strict=True)
    )
    return total / max(workers, 1)


def fmt_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def table(
    summary: pd.DataFrame, running: dict[tuple[str, str], int] | None = None, title: str = ""
) -> Table:
    t = Table(title=title or None, show_edge=False, pad_edge=False)
    cols = ["task", "variant", "metric", "done", "failed"]
    cols += ["running"] if running is not None else []
    for c in cols + ["of", "best val", "its test"]:
        t.add_column(
            c,
            justify="left" if c in ("task", "variant", "metric") else "right",
            no_wrap=True,
            min_width=len(c),
        )
    for r in summary.itertuples():
        best = "-" if math.isnan(r.best_val) else f"{r.best_val:.4g}"
        test = "-" if math.isnan(r.best_test) else f"{r.best_test:.4g}"
        cells = [r.task, r.variant, r.metric, str(r.done), str(r.failed)]
        if running is not None:
            cells.append(str(running.get((r.task, r.variant), 0)))
        t.add_row(*cells, str(r.expected), best, test)
    return t


class Display:
    """Live per-pair table with totals and ETA; plain log lines when stderr is not a terminal."""

    def __init__(
        self,
        name: str,
        pairs: list[tuple[str, str]],
        expected: int,
        directions: dict[str, str],
        workers: int,
        live: bool | None = None,
        metrics: dict[str, str] | None = None,
        packs: dict[str, int] | None = None,
    ) -> None:
        self.name, self.pairs, self.expected, self.metrics = name, pairs, expected, metrics
        self.directions, self.workers, self.packs = directions, workers, packs or {}
        self.running: dict[tuple[str, str], int] = {}
        # (task, pack size) -> wall_s of the trials finished in this run, for the ETA
        self._walls: dict[tuple[str, int], list[float]] = {}
        self._first_start: dict[str, float] = {}  # task -> when its first trial of this run began
        self.clock = time.monotonic
        self.df = pd.DataFrame()
        # the terminal, also while third-party output goes to a file
        from study.console import screen

        use_live = screen().isatty() if live is None else live
        self._live = (
            Live(console=Console(file=screen()), refresh_per_second=2) if use_live else None
        )

    def __enter__(self) -> Display:
        if self._live is not None:
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def rates(self) -> dict[str, float]:
        """Seconds per trial of each task at its pack size in this run, from this run's trials."""
        out = {}
        for task in {t for t, _ in self.pairs}:
            walls = self._walls.get((task, self.packs.get(task, 1)), [])
            walls = [w for w in walls if math.isfinite(w)]
            if walls:
                out[task] = sum(walls) / len(walls)
        return out

    def eta(self, s: pd.DataFrame) -> str:
        """'; ETA 1m05s', or nothing once no trial remains. A task none of whose trials has
        finished yet counts at least the time its first trial has been running (per trial of
        its pack): its trials take at least that long, however fast the other tasks are."""
        if not remaining(s):
            return ""
        rates = {**task_rates(s), **self.rates()}
        fallback = sum(rates.values()) / len(rates) if rates else 0.0
        for task, since in self._first_start.items():
            if task not in rates:
                running = (self.clock() - since) / self.packs.get(task, 1)
                rates[task] = max(running, fallback)
        return f"; ETA {fmt_seconds(eta_seconds(s, self.workers, rates or None))}"

    def _render(self) -> Table:
        s = summarize(self.df, self.pairs, self.expected, self.directions, self.metrics)
        done, failed = int(s["done"].sum()), int(s["failed"].sum())
        total = int(s["expected"].sum())
        title = (
            f"study {self.name}: {done} done, {sum(self.running.values())} running, "
            f"{failed} failed of {total}{self.eta(s)}"
        )
        return table(s, self.running, title)

    def update(self, df: pd.DataFrame | None = None) -> None:
        if df is not None:
            self.df = df
        if self._live is not None:
            self._live.update(self._render())

    def started(self, task: str, variant: str) -> None:
        self.running[(task, variant)] = self.running.get((task, variant), 0) + 1
        self._first_start.setdefault(task, self.clock())
        self.update()

    def requeued(self, task: str, variant: str) -> None:
        """A trial went back to the queue (its worker raised or died); it is no longer running."""
        self.running[(task, variant)] = max(0, self.running.get((task, variant), 0) - 1)
        self.update()

    def finished(self, row: dict[str, Any], df: pd.DataFrame) -> None:
        key = (row["task"], row["variant"])
        self.running[key] = max(0, self.running.get(key, 0) - 1)
        pack = (row["task"], self.packs.get(row["task"], 1))
        self._walls.setdefault(pack, []).append(float(row["wall_s"]))
        self.update(df)
        if self._live is None:
            s = summarize(df, self.pairs, self.expected, self.directions)
            n = int((s["done"] + s["failed"]).sum())
            what = (
                f"{row['metric']} {row['val_metric']:.4g} (test {row['test_metric']:.4g})"
                if row["status"] == "complete"
                else f"FAILED: {str(row['error']).splitlines()[0]}"
            )
            log.info(
                "%s/%s trial %d: %s in %.1f s [%d/%d finished%s]",
                row["task"],
                row["variant"],
                row["trial"],
                what,
                row["wall_s"],
                n,
                int(s["expected"].sum()),
                self.eta(s),
            )
