"""`odyssey report`: one study's results folder -> `reports/<study>/` (index.html, figures/,
tables/*.csv, summary.md). The analysis (`analyse`, typed as `analysis.model.Analysis`) is pure;
`build` writes the files, drawing the page with `analysis.render`.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import comparable, importance, learning, paper, provenance, robustness, stats
from analysis.load import StudyResults, read_results, space_bounds
from analysis.model import Analysis, Settings
from analysis.summary import summary_markdown
from study import results

__all__ = ["Analysis", "Settings", "analyse", "build"]

log = logging.getLogger(__name__)


def metric_name(res: StudyResults, task: str) -> str:
    """The task's metric as the study recorded it, else as its trials name it, else 'metric'."""
    recorded = res.names.tasks.get(task)
    if recorded is not None and recorded.metric:
        return recorded.metric
    trials = res.trials
    names = trials.loc[(trials["task"] == task) & (trials["metric"] != ""), "metric"]
    return str(names.mode().iloc[0]) if len(names) and names.iloc[0] != "unknown" else "metric"


def time_trend(done: pd.DataFrame, tasks: list[str]) -> pd.DataFrame:
    """Per task: exponent b of the least-squares fit log10(s per epoch) = a + b log10(hidden
    size), time per epoch being wall_s / epochs (`stats.per_epoch`)."""
    rows = []
    for task in tasks:
        ok, version = stats.timing_sample(stats.per_epoch(done[done["task"] == task]))
        b = np.nan
        if ok["hp_hidden_size"].nunique() >= 2:
            b = float(np.polyfit(np.log10(ok["hp_hidden_size"]), np.log10(ok["s_per_epoch"]), 1)[0])
        rows.append(
            {
                "task": task,
                "trials": len(ok),
                "code version": version or "all",
                "exponent": b,
                "median s per epoch": float(ok["s_per_epoch"].median()) if len(ok) else np.nan,
            }
        )
    columns = ["task", "trials", "code version", "exponent", "median s per epoch"]
    return pd.DataFrame(rows, columns=columns)


def notices(res: StudyResults, prog: pd.DataFrame, done: pd.DataFrame) -> list[str]:
    """Plain-language statements about what is missing or partial."""
    out = list(res.notes)
    if res.trials.empty:
        out.append("the results table has no trials yet: nothing to compare")
    missing = prog[prog["state"] == "missing"]
    if len(missing):
        out.append(
            "pairs with no trial at all: "
            + ", ".join(
                f"{t}/{v}" for t, v in zip(missing["task"], missing["variant"], strict=True)
            )
        )
    few = prog[prog["state"] == "too few complete trials"]
    if len(few):
        out.append(
            f"pairs with fewer than {stats.MIN_PER_GROUP} complete trials (no test): "
            + _pairs_text(few, prog)
        )
    running = prog[prog["state"] == "in progress"]
    if len(running):
        out.append(
            f"{len(running)} pair(s) have not reached the expected number of trials; the "
            "study may still be running and this report shows the state so far"
        )
    for task in res.tasks:
        in_task = done[done["task"] == task]
        if len(in_task) and not (in_task["variant"] == res.baseline).any():
            out.append(
                f"{task}: no complete trial of the baseline {res.baseline}, so no "
                "variant can be tested against it"
            )
    n_failed = int((res.trials["status"] == "failed").sum())
    if n_failed:
        out.append(f"{n_failed} trial(s) failed; reasons are listed under Provenance")
    return out


def _pairs_text(pairs: pd.DataFrame, prog: pd.DataFrame) -> str:
    """(task, variant) pairs in few words: 'every pair', or per task 'timit (every variant)'
    or 'timit: V, NIG'."""
    studied = prog[prog["state"] != "not in this study"]
    if len(pairs) == len(studied):
        return "every pair"
    parts = []
    for task, part in pairs.groupby("task", sort=False):
        if len(part) == (studied["task"] == task).sum():
            parts.append(f"{task} (every variant)")
        else:
            parts.append(f"{task}: {', '.join(part['variant'])}")
    return "; ".join(parts)


def _with_rerun_noise(
    significance: pd.DataFrame, trials: pd.DataFrame, res: StudyResults, s: Settings, noise
) -> pd.DataFrame:
    """`significance` with `kept` / `kept_holm`: where `odyssey verify` found trials whose
    numbers do not reproduce bitwise (`noise`, `robustness.rerun_noise`), the share of redraws
    of their metrics (with the measured differences) that keep each verdict; NaN otherwise."""
    out = significance.assign(kept=math.nan, kept_holm=math.nan)
    if noise is None or not s.rerun_draws or out.empty:
        return out
    t0 = time.perf_counter()
    movable, rel = noise
    kept = robustness.resampled(
        trials, movable, rel, res.variants, res.baseline, s.rerun_draws, s.seed, s.alpha
    ).set_index(["task", "subset", "variant"])
    key = pd.MultiIndex.from_frame(out[["task", "subset", "variant"]])
    out["kept"] = kept["kept"].reindex(key).to_numpy()
    out["kept_holm"] = kept["kept_holm"].reindex(key).to_numpy()
    log.info(
        "verdicts under rerun noise (%d redraws): %.1f s", s.rerun_draws, time.perf_counter() - t0
    )
    return out


def analyse(res: StudyResults, settings: Settings | None = None) -> Analysis:
    """All statistics of the report (no files written)."""
    s = settings or Settings()
    # a metric that is better higher is negated for the statistics (lower is better there) and
    # has no divergence fence; tables and figures show it as it is
    maximize = tuple(
        t for t in res.tasks if t in res.names.tasks and res.names.tasks[t].direction == "maximize"
    )
    trials = stats.oriented(res.trials, maximize)
    done = stats.complete(res.trials)
    long_lower = stats.with_subsets(trials, s.top_fraction)
    long = stats.oriented(long_lower, maximize)
    done_lower = stats.complete(trials)  # what fences and fANOVA read: lower is better
    fences = stats.task_fences(done_lower, s.fence_iqr)
    fences.update(dict.fromkeys(maximize, math.inf))
    metrics = {t: metric_name(res, t) for t in res.tasks}
    t0 = time.perf_counter()
    significance = stats.shown_as_measured(
        stats.compare_to_baseline(
            long_lower, res.variants, res.baseline, s.alpha, s.seed, s.n_resamples, fences
        ),
        maximize,
    )
    log.info("significance tests: %.1f s", time.perf_counter() - t0)
    noise = robustness.rerun_noise(trials, res.reruns)
    significance = _with_rerun_noise(significance, trials, res, s, noise)
    t0 = time.perf_counter()
    fan = importance.analyse(
        done_lower,
        res.tasks,
        res.variants,
        space_bounds(res.config),
        n_trees=s.n_trees,
        n_trees_variant=s.n_trees_variant,
        seed=s.seed,
        fences=fences,
        metrics=metrics,
        target=s.fanova_target,
        resamples=s.fanova_resamples,
        resample_trees=s.fanova_resample_trees,
        extra=(res.config.get("space") or {}).get("extra") if res.config else None,
    )
    log.info("fANOVA: %.1f s", time.perf_counter() - t0)
    prog = provenance.progress(res)
    stand_in = provenance.stand_in_flags(res.trials, res.tasks)
    protocol = (
        comparable.protocol_differences(res.config, comparable.paper_protocol())
        if res.config
        else [f"no readable {results.CONFIG_FILE}: the protocol is unknown"]
    )
    data = {
        t: comparable.task_data(
            t, res.data.get(t), stand_in.get(t), res.plugins["tasks"].get(t), res.config
        )
        for t in res.tasks
    }
    verdicts = {t: comparable.comparability(t, data[t], protocol) for t in res.tasks}
    # a plug-in task is the user's own data, never a stand-in for one of the paper's corpora
    stand_in = {t: False if data[t].kind == "plugin" else f for t, f in stand_in.items()}
    # the paper's findings are held only against tasks they apply to
    same = [t for t in res.tasks if verdicts[t].comparable]
    summary = stats.variant_summary(long, maximize)
    return Analysis(
        res=res,
        settings=s,
        done=done,
        long=long,
        summary=summary,
        significance=significance,
        fanova=fan,
        progress=prog,
        failures=provenance.failures(res.trials),
        sources=provenance.data_sources(
            res.trials, res.tasks, res.data, {t: d.label for t, d in data.items()}
        ),
        stand_in=stand_in,
        protocol=protocol,
        task_data=data,
        comparable=verdicts,
        totals=provenance.totals(res.trials),
        paper_variants=paper.compare_variants(significance, stand_in, same, s.alpha),
        paper_best=paper.best_results(summary, stand_in, same),
        paper_reference=paper.reference_results(summary, stand_in, same),
        paper_hp=paper.compare_hyperparameters(
            fan.importance, fan.resampled, stand_in, same, res.baseline, fan.null_momentum
        ),
        learning=learning.curves(res.epochs, done, metrics),
        fences=fences,
        metrics=metrics,
        time_trend=time_trend(done, res.tasks),
        notices=notices(res, prog, done),
        rerun_noise=noise,
    )


def with_stand_in(df: pd.DataFrame, a: Analysis) -> pd.DataFrame:
    """`df` with a 'stand-in data' column from its 'task' column (unchanged without one), so a
    CSV read on its own still says which numbers came from a generated corpus (or from a task
    that is not the paper's), and a 'comparable with the paper' column."""
    if "task" not in df.columns:
        return df
    out = df
    if "stand-in data" not in out.columns:
        out = out.assign(**{"stand-in data": out["task"].map(lambda t: data_text(a, t))})
    if "comparable with the paper" not in out.columns:
        out = out.assign(
            **{"comparable with the paper": out["task"].map(lambda t: _comparable_text(a, t))}
        )
    return out


def data_text(a: Analysis, task: str) -> str:
    """The CSV's 'stand-in data' cell: the stand-in flag for the paper's tasks, else what the
    task is (a plug-in, a task that is not the paper's)."""
    d = a.task_data.get(task)
    if d is not None and d.kind != "paper":
        return d.label
    return paper.stand_in_text(a.stand_in.get(task))


def _comparable_text(a: Analysis, task: str) -> str:
    c = a.comparable.get(task)
    return "unknown" if c is None else ("yes" if c.comparable else "no: " + "; ".join(c.reasons))


def comparability_table(a: Analysis) -> pd.DataFrame:
    """Per task: what it ran on, whether the paper's findings apply, and what differs."""
    return pd.DataFrame(
        [
            {
                "task": t,
                "data": a.task_data[t].label,
                "comparable": "yes" if a.comparable[t].comparable else "no",
                "what differs from the paper": "; ".join(a.comparable[t].reasons),
            }
            for t in a.res.tasks
        ],
        columns=["task", "data", "comparable", "what differs from the paper"],
    )


def write_tables(a: Analysis, tables_dir: Path) -> None:
    tables = {
        "significance": a.significance,
        "variant_summary": a.summary,
        "importance": a.fanova.importance,
        "importance_skipped": a.fanova.skipped,
        "marginal_curves": a.fanova.curves,
        "progress": a.progress,
        "failures": a.failures,
        "data_sources": a.sources,
        "paper_variants": a.paper_variants,
        "paper_best": a.paper_best,
        "paper_reference": a.paper_reference,
        "paper_hyperparameters": a.paper_hp,
        "learning_curves": a.learning,
        "time_trend": a.time_trend,
        "comparability": comparability_table(a),
    }
    for name, df in tables.items():
        labelled = df if name == "comparability" else with_stand_in(df, a)
        labelled.to_csv(tables_dir / f"{name}.csv", index=False)


def build(
    study: str,
    results_dir: Path = Path("results"),
    out_dir: Path | None = None,
    settings: Settings | None = None,
) -> Path:
    """Build `<out_dir>/index.html` (default `reports/<study>/`) and return its path."""
    from analysis.render import render  # matplotlib: only when a page is drawn (not analyse)

    t0 = time.perf_counter()
    res = read_results(study, Path(results_dir))
    out = Path(out_dir) if out_dir is not None else Path("reports") / study
    figures_dir, tables_dir = out / "figures", out / "tables"
    for folder, suffix in ((figures_dir, ".png"), (tables_dir, ".csv")):
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(f"*{suffix}"):  # from an earlier build of this report
            stale.unlink()
    a = analyse(res, settings)
    write_tables(a, tables_dir)
    (out / "summary.md").write_text(summary_markdown(a))
    index = out / "index.html"
    index.write_text(render(a, figures_dir))
    log.info("report for %s written to %s in %.1f s", study, index, time.perf_counter() - t0)
    return index
