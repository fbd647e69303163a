"""Watching a study: the per-(task, variant) summary behind `odyssey status` and the live display
of `odyssey run` (a rich table on a terminal, one log line per finished trial otherwise)."""

from __future__ import annotations

import logging
import math
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


def eta_seconds(summary: pd.DataFrame, workers: int) -> float:
    """Remaining trials x mean trial time (over all finished trials) / workers."""
    if summary.empty:
        return math.nan
    remaining = float(
        (summary["expected"] - summary["done"] - summary["failed"]).clip(lower=0).sum()
    )
    finished = summary["done"] + summary["failed"]
    if remaining == 0:
        return 0.0
    if finished.sum() == 0:
        return math.nan
    mean = float((summary["mean_wall_s"].fillna(0) * finished).sum() / finished.sum())
    return remaining * mean / max(workers, 1)


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
    ) -> None:
        self.name, self.pairs, self.expected, self.metrics = name, pairs, expected, metrics
        self.directions, self.workers = directions, workers
        self.running: dict[tuple[str, str], int] = {}
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

    def _render(self) -> Table:
        s = summarize(self.df, self.pairs, self.expected, self.directions, self.metrics)
        done, failed = int(s["done"].sum()), int(s["failed"].sum())
        total = int(s["expected"].sum())
        title = (
            f"study {self.name}: {done} done, {sum(self.running.values())} running, "
            f"{failed} failed of {total}; ETA {fmt_seconds(eta_seconds(s, self.workers))}"
        )
        return table(s, self.running, title)

    def update(self, df: pd.DataFrame | None = None) -> None:
        if df is not None:
            self.df = df
        if self._live is not None:
            self._live.update(self._render())

    def started(self, task: str, variant: str) -> None:
        self.running[(task, variant)] = self.running.get((task, variant), 0) + 1
        self.update()

    def requeued(self, task: str, variant: str) -> None:
        """A trial went back to the queue (its worker raised or died); it is no longer running."""
        self.running[(task, variant)] = max(0, self.running.get((task, variant), 0) - 1)
        self.update()

    def finished(self, row: dict[str, Any], df: pd.DataFrame) -> None:
        key = (row["task"], row["variant"])
        self.running[key] = max(0, self.running.get(key, 0) - 1)
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
                "%s/%s trial %d: %s in %.1f s [%d/%d finished, ETA %s]",
                row["task"],
                row["variant"],
                row["trial"],
                what,
                row["wall_s"],
                n,
                int(s["expected"].sum()),
                fmt_seconds(eta_seconds(s, self.workers)),
            )
