"""`odyssey report`: one study's results table -> `reports/<study>/` (index.html, figures/,
tables/*.csv, summary.md). The analysis (`analyse`) is pure; `build` writes the files.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from study.report import importance, learning, paper, provenance, stats
from study.report.load import StudyResults, read_results, space_bounds

log = logging.getLogger(__name__)


@dataclass
class Settings:
    """Knobs of the analysis; defaults are the paper's (alpha 0.05, 100 trees, top 10 %)."""

    alpha: float = 0.05
    top_fraction: float = 0.1
    n_trees: int = 100  # per task, variants pooled
    n_trees_variant: int | None = None  # per (task, variant); None: same as n_trees
    n_resamples: int = 2000  # bootstrap resamples per confidence interval
    seed: int = 0
    fence_iqr: float | None = stats.FENCE_IQR  # divergence fence Q3 + k IQR; None: no cap
    fanova_target: str = "rank"  # 'rank' (robust) or 'metric' (capped at the fence)


@dataclass
class Analysis:
    """Every table the page shows (tidy, long format), computed from the results alone."""

    res: StudyResults
    settings: Settings
    done: pd.DataFrame  # complete trials
    long: pd.DataFrame  # complete trials with a `subset` column (all / top 10 %)
    summary: pd.DataFrame
    significance: pd.DataFrame
    fanova: dict
    progress: pd.DataFrame
    failures: pd.DataFrame
    sources: pd.DataFrame
    stand_in: dict[str, bool | None]
    totals: dict
    paper_variants: pd.DataFrame
    paper_best: pd.DataFrame
    paper_reference: pd.DataFrame
    paper_hp: pd.DataFrame
    learning: pd.DataFrame
    fences: dict[str, float]
    metrics: dict[str, str]
    time_trend: pd.DataFrame
    notices: list[str]


def metric_name(trials: pd.DataFrame, task: str) -> str:
    names = trials.loc[(trials["task"] == task) & (trials["metric"] != ""), "metric"]
    return str(names.mode().iloc[0]) if len(names) and names.iloc[0] != "unknown" else "metric"


def time_trend(done: pd.DataFrame, tasks: list[str]) -> pd.DataFrame:
    """Per task: exponent b of the least-squares fit log10(wall_s) = a + b log10(hidden size)."""
    rows = []
    for task in tasks:
        ok = done[(done["task"] == task) & (done["wall_s"] > 0) & (done["hp_hidden_size"] > 0)]
        b = np.nan
        if ok["hp_hidden_size"].nunique() >= 2:
            b = float(np.polyfit(np.log10(ok["hp_hidden_size"]), np.log10(ok["wall_s"]), 1)[0])
        rows.append(
            {
                "task": task,
                "trials": len(ok),
                "exponent": b,
                "median wall_s": float(ok["wall_s"].median()) if len(ok) else np.nan,
            }
        )
    return pd.DataFrame(rows, columns=["task", "trials", "exponent", "median wall_s"])


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
            + ", ".join(f"{t}/{v}" for t, v in zip(few["task"], few["variant"], strict=True))
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


def analyse(res: StudyResults, settings: Settings | None = None) -> Analysis:
    """All statistics of the report (no files written)."""
    s = settings or Settings()
    done = stats.complete(res.trials)
    long = stats.with_subsets(res.trials, s.top_fraction)
    fences = stats.task_fences(done, s.fence_iqr)
    metrics = {t: metric_name(res.trials, t) for t in res.tasks}
    t0 = time.perf_counter()
    significance = stats.compare_to_baseline(
        long, res.variants, res.baseline, s.alpha, s.seed, s.n_resamples, fences
    )
    log.info("significance tests: %.1f s", time.perf_counter() - t0)
    t0 = time.perf_counter()
    fan = importance.analyse(
        done,
        res.tasks,
        res.variants,
        space_bounds(res.config),
        n_trees=s.n_trees,
        n_trees_variant=s.n_trees_variant,
        seed=s.seed,
        fences=fences,
        metrics=metrics,
        target=s.fanova_target,
    )
    log.info("fANOVA: %.1f s", time.perf_counter() - t0)
    prog = provenance.progress(res)
    stand_in = provenance.stand_in_flags(res.trials, res.tasks)
    summary = stats.variant_summary(long)
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
        sources=provenance.data_sources(res.trials, res.tasks, res.data),
        stand_in=stand_in,
        totals=provenance.totals(res.trials),
        paper_variants=paper.compare_variants(significance, stand_in, res.tasks, s.alpha),
        paper_best=paper.best_results(summary, stand_in, res.tasks),
        paper_reference=paper.reference_results(summary, stand_in, res.tasks),
        paper_hp=paper.compare_hyperparameters(fan["importance"], stand_in, res.tasks),
        learning=learning.curves(res.epochs, done, metrics),
        fences=fences,
        metrics=metrics,
        time_trend=time_trend(done, res.tasks),
        notices=notices(res, prog, done),
    )


def with_stand_in(df: pd.DataFrame, stand_in: dict[str, bool | None]) -> pd.DataFrame:
    """`df` with a 'stand-in data' column from its 'task' column (unchanged without one), so a
    CSV read on its own still says which numbers came from a generated corpus."""
    if "task" not in df.columns or "stand-in data" in df.columns:
        return df
    flags = df["task"].map(lambda t: paper.stand_in_text(stand_in.get(t)))
    return df.assign(**{"stand-in data": flags})


def write_tables(a: Analysis, tables_dir: Path) -> None:
    tables = {
        "significance": a.significance,
        "variant_summary": a.summary,
        "importance": a.fanova["importance"],
        "importance_skipped": a.fanova["skipped"],
        "marginal_curves": a.fanova["curves"],
        "progress": a.progress,
        "failures": a.failures,
        "data_sources": a.sources,
        "paper_variants": a.paper_variants,
        "paper_best": a.paper_best,
        "paper_reference": a.paper_reference,
        "paper_hyperparameters": a.paper_hp,
        "learning_curves": a.learning,
        "time_trend": a.time_trend,
    }
    for name, df in tables.items():
        with_stand_in(df, a.stand_in).to_csv(tables_dir / f"{name}.csv", index=False)


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-style markdown table (pandas' to_markdown needs the tabulate package)."""
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "---|" * len(df.columns)
    rows = [
        "| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |"
        for row in df.itertuples(index=False)
    ]
    return "\n".join([head, rule, *rows])


def summary_markdown(a: Analysis) -> str:
    """A short plain-text digest of the page."""
    t, res = a.totals, a.res
    lines = [
        f"# Study `{res.study}`: report summary",
        "",
        f"- trials: {t['complete']} complete, {t['failed']} failed, {t['trials']} recorded; "
        f"compute {provenance.human_seconds(t['compute_s'])} (sum of wall_s)",
        f"- tasks: {', '.join(res.tasks) or 'none'}; variants: "
        f"{', '.join(res.variants) or 'none'}; baseline {res.baseline}",
    ]
    from study.report.render_paper import size_line

    lines.append(f"- {size_line(a)}")
    for task, flag in a.stand_in.items():
        if flag:
            lines.append(
                f"- **{task} ran on a generated stand-in corpus: its numbers are not "
                "comparable with the paper's**"
            )
    lines += [f"- {n}" for n in a.notices]
    lines += [
        "",
        f"## Variants against {res.baseline} (Mann-Whitney U, raw p, alpha {a.settings.alpha})",
        "",
    ]
    if len(a.significance):
        counts = (
            a.significance.groupby(["task", "subset", "verdict"], sort=False)
            .size()
            .unstack(fill_value=0)
            .reset_index()
        )
        lines.append(markdown_table(counts))
        lines.append("")
        for (task, subset), part in a.significance.groupby(["task", "subset"], sort=False):
            for word in ("worse", "better"):
                names = part.loc[part["verdict"] == word, "variant"].tolist()
                if names:
                    lines.append(f"- {task}, {subset}: significantly {word}: {', '.join(names)}")
    else:
        lines.append("no tests (no complete trials)")
    lines += ["", "## Hyperparameter importance (fANOVA, variants pooled)", ""]
    imp = a.fanova["importance"]
    pooled = imp[imp["group"] == importance.POOLED]
    if len(pooled):
        lines.append(
            pooled.pivot(index="task", columns="effect", values="fraction")
            .reindex(
                index=[t for t in res.tasks if t in set(pooled["task"])],
                columns=list(dict.fromkeys(pooled["effect"])),
            )
            .round(3)
            .reset_index()
            .pipe(markdown_table)
        )
    else:
        lines.append("no pooled fANOVA (too few trials)")
    lines += ["", "## Beside the paper", ""]
    for label, df, col in (
        ("variant verdicts (all trials)", a.paper_variants, "match (all)"),
        ("variant verdicts (top 10%)", a.paper_variants, "match (top 10%)"),
        ("hyperparameter claims", a.paper_hp, "match"),
    ):
        if len(df):
            c = df[col].value_counts().to_dict()
            lines.append(f"- {label}: " + ", ".join(f"{k} {v}" for k, v in c.items()))
    for r in a.paper_reference.itertuples(index=False):
        ours = "no trial" if pd.isna(r[5]) else f"{r[5]:.4g} ({r[6]})"
        flag = " (stand-in data: not comparable)" if a.stand_in.get(r.task) else ""
        lines.append(f"- {r.task}: {r.source} [{r.tag}] {r[3]:.4g}; our best {ours}{flag}")
    return "\n".join(lines) + "\n"


def build(
    study: str,
    results_dir: Path = Path("results"),
    out_dir: Path | None = None,
    settings: Settings | None = None,
) -> Path:
    """Build `<out_dir>/index.html` (default `reports/<study>/`) and return its path."""
    from study.report.render import render  # matplotlib: only when a page is drawn

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
