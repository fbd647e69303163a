"""The report page: an `Analysis` (study.report.build) drawn as one self-contained HTML file.

Section order follows the paper: variants against V (Fig. 3), hyperparameter importance
(Figs. 4-6), the paper's findings beside ours, then provenance and the methods used.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from study.report import learning, plots, provenance
from study.report.importance import wide
from study.report.page import (
    banner,
    column_format,
    document,
    esc,
    figure,
    note,
    notes_list,
    table,
)
from study.report.render_paper import methods_section, paper_section, size_line
from study.report.stats import SUBSETS, TOO_FEW, TOP, too_few_text

matplotlib.use("Agg")

STAND_IN_TAG = "\n[GENERATED STAND-IN DATA: not comparable with the paper]"
STAND_IN_TEXT = (
    "{task}: these numbers come from a GENERATED STAND-IN corpus, not the real "
    "{title} data. They test the harness; they are NOT comparable with the paper's."
)


def _task_titles() -> dict[str, str]:
    from study.report.load import task_registry

    try:
        return task_registry()
    except ImportError:  # titles are cosmetic; the names still identify the tasks
        return {}


def render(a, figures_dir: Path) -> str:
    res = a.res
    titles = _task_titles()
    body = [
        f"<h1>Study <code>{esc(res.study)}</code>: LSTM variants compared</h1>",
        f'<p class="muted">Built {dt.datetime.now().isoformat(timespec="seconds")} from '
        f"{esc(res.folder)}/ (trials.parquet, config.yaml). After Greff et al., "
        "&ldquo;LSTM: A Search Space Odyssey&rdquo; (IEEE TNNLS 2017).</p>",
        f'<p class="header"><b>{esc(size_line(a))}</b></p>',
    ]
    nav = ["<nav>", '<a href="#overview">Overview</a>']
    nav += [f'<a href="#task-{esc(t)}">{esc(t)}</a>' for t in res.tasks]
    nav += [
        '<a href="#paper">Beside the paper</a>',
        '<a href="#provenance">Provenance</a>',
        '<a href="#methods">Methods</a>',
        "</nav>",
    ]
    body += nav
    stand_in = [t for t, f in a.stand_in.items() if f]
    if stand_in:
        body.append(
            banner(
                "Generated stand-in data: " + ", ".join(stand_in) + " ran on "
                "generated corpora. Their numbers test the harness only and are NOT "
                "comparable with the paper's.",
                loud=True,
            )
        )
    body.append(notes_list(a.notices))
    body += _overview(a)
    for task in res.tasks:
        body += _task_section(a, task, titles.get(task, task), figures_dir)
    body += paper_section(a)
    body += _provenance_section(a)
    body += methods_section(a)
    return document(f"odyssey report: {res.study}", body)


def _overview(a) -> list[str]:
    t = a.totals
    out = [
        '<h2 id="overview">Overview</h2>',
        f"<p>{t['trials']} trials recorded: <b>{t['complete']} complete</b>, "
        f"{t['failed']} failed. Total compute {provenance.human_seconds(t['compute_s'])} "
        f"(sum of wall_s). Baseline: <b>{esc(a.res.baseline)}</b>.</p>",
    ]
    if a.progress.empty:
        return out + ['<p class="muted">No tasks or variants known yet.</p>']
    cells = a.progress.assign(
        cell=[
            f"{c}/{e if pd.notna(e) else '?'}"
            + (f" ({f} failed)" if f else "")
            + (" MISSING" if s == "missing" else "")
            for c, e, f, s in zip(
                a.progress["complete"],
                a.progress["expected"],
                a.progress["failed"],
                a.progress["state"],
                strict=True,
            )
        ]
    )
    grid = cells.pivot(index="variant", columns="task", values="cell").reindex(
        index=a.res.variants, columns=a.res.tasks
    )
    out += [
        "<h3>Complete / expected trials per pair</h3>",
        table(grid, index=True),
        "<h3>Data per task</h3>",
        table(a.sources, classed=("stand-in corpus",)),
    ]
    return out


def ci_column(name: str, v: pd.Series, lo: pd.Series, hi: pd.Series) -> list[str]:
    """'value [low, high]' strings, all three in the column's one number format."""
    n = len(v)
    texts = column_format(name, [*v.tolist(), *lo.tolist(), *hi.tolist()])
    out = []
    for i in range(n):
        value, low, high = texts[i], texts[n + i], texts[2 * n + i]
        out.append(f"{value} [{low}, {high}]" if value and low and high else value)
    return out


def significance_tables(sig: pd.DataFrame, baseline: str) -> list[str]:
    """Per subset: one table of the tested variants, and one line naming those with too few
    trials (instead of rows of empty cells)."""
    out = []
    for subset in SUBSETS:
        part = sig[sig["subset"] == subset]
        if part.empty:
            continue
        few = part[part["verdict"] == TOO_FEW]
        tested = part[part["verdict"] != TOO_FEW]
        out.append(
            f"<h4>{esc(subset)}"
            + (" (ranked by validation metric)" if subset == TOP else "")
            + "</h4>"
        )
        if len(tested):
            out.append(table(_significance_frame(tested, baseline), classed=("verdict",)))
        if len(few):
            groups = few.assign(k=few[["n", "n_base"]].min(axis=1)).groupby("k", sort=True)
            out.append(
                note(
                    "; ".join(
                        f"{too_few_text(int(k), int(g['n_needed'].iloc[0]))}: "
                        + ", ".join(g["variant"])
                        for k, g in groups
                    )
                    + ". No test, interval or effect size for "
                    + ("these." if len(tested) else "any variant in this subset.")
                )
            )
    return out


def _significance_frame(sig: pd.DataFrame, baseline: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "variant": sig["variant"],
            "n": sig["n"],
            f"n {baseline}": sig["n_base"],
            "median": sig["median"],
            f"median {baseline}": sig["median_base"],
            "diverged": sig["diverged"],
            f"P(worse than {baseline})": sig["prob_worse"],
            "p": sig["p"],
            "verdict": sig["verdict"],
            "p (Holm)": sig["p_holm"],
            "verdict (Holm)": sig["verdict_holm"],
            "diff of means [95% CI]": ci_column(
                "diff", sig["diff"], sig["diff_lo"], sig["diff_hi"]
            ),
            "Hedges g [95% CI]": ci_column("g", sig["g"], sig["g_lo"], sig["g_hi"]),
            "p (Welch)": sig["p_welch"],
            "verdict (Welch)": sig["verdict_welch"],
        }
    )


def titled(a, task: str, text: str) -> str:
    """A figure title, with the stand-in label when the task's data was generated."""
    return text + (STAND_IN_TAG if a.stand_in.get(task) else "")


def _task_section(a, task: str, title: str, figures_dir: Path) -> list[str]:
    res, metric = a.res, a.metrics.get(task, "metric")
    out = [f'<h2 id="task-{esc(task)}">{esc(title)} <span class="muted">({esc(task)})</span></h2>']
    if a.stand_in.get(task):
        out.append(banner(STAND_IN_TEXT.format(task=task, title=title), loud=True))
    elif a.stand_in.get(task) is None:
        out.append(
            note(
                "The results table does not say whether this task's data is real or a "
                "generated stand-in."
            )
        )
    long = a.long[a.long["task"] == task]
    if long.empty:
        return out + [note(f"No complete trial for {task} yet: nothing to compare.")]
    sig = a.significance[a.significance["task"] == task]
    out += [
        f"<h3>Variants against {esc(res.baseline)} (test {esc(metric)}, lower is better)</h3>",
        figure(
            plots.variant_boxes(
                long,
                sig,
                res.variants,
                res.baseline,
                metric,
                titled(a, task, f"{title}: test {metric} per variant"),
                a.fences.get(task, np.inf),
            ),
            f"boxes_{task}",
            figures_dir,
            f"{task}: test {metric} per variant; top: all "
            "complete trials, bottom: top 10% by validation metric",
        ),
    ]
    if (sig["verdict"] == "no baseline").any():
        out.append(banner(f"No complete {res.baseline} trial: no variant could be tested."))
    out += significance_tables(sig, res.baseline)
    out += _learning_part(a, task, title, metric, figures_dir)
    out += _importance_part(a, task, metric, figures_dir)
    done = a.done[a.done["task"] == task]
    fig, b = plots.time_vs_hidden(
        done, res.variants, titled(a, task, f"{task}: training time vs hidden size")
    )
    out += [
        "<h3>Training time against hidden size</h3>",
        figure(
            fig,
            f"time_{task}",
            figures_dir,
            f"{task}: wall time per trial vs hidden size (log-log, least-squares trend)",
        ),
        f"<p>Fitted trend: time &prop; hidden<sup>{b:.2f}</sup>.</p>"
        if pd.notna(b)
        else '<p class="muted">Too few distinct hidden sizes with a wall time to fit a trend.</p>',
    ]
    return out


def _learning_part(a, task: str, title: str, metric: str, figures_dir: Path) -> list[str]:
    part = a.learning[a.learning["task"] == task]
    out = ["<h3>Learning curves (validation metric per epoch)</h3>"]
    if part.empty:
        return out + [note(f"No per-epoch history for {task} (epochs.parquet).")]
    fig = learning.figure(
        part,
        a.res.variants,
        a.res.baseline,
        metric,
        titled(a, task, f"{title}: validation {metric} per epoch"),
        a.fences.get(task, np.inf),
    )
    return out + [
        figure(fig, f"curves_{task}", figures_dir, f"{task}: learning curves per variant")
    ]


def _importance_part(a, task: str, metric: str, figures_dir: Path) -> list[str]:
    imp = a.fanova["importance"]
    imp = imp[imp["task"] == task]
    skipped = a.fanova["skipped"]
    skipped = skipped[skipped["task"] == task]
    out = ["<h3>Hyperparameter importance (fANOVA)</h3>"]
    if len(skipped):
        out.append(note("Not analysed: " + _skipped_text(skipped)))
    if imp.empty:
        return out
    trees = sorted(set(imp["trees"]))
    capped = imp[(imp["group"] == "all")]["capped"]
    limit = a.fences.get(task, np.inf)
    target = imp["target"].iloc[0] if "target" in imp else "metric"
    what = (
        f"test-{esc(metric)} ranks (within each group)"
        if target == "rank"
        else (f"test {esc(metric)} (capped at the fence)")
    )
    out.append(
        f"<p>Fraction of the variance of the {what} explained by each "
        "hyperparameter (main effects), each pair (interactions) and the rest "
        f"(higher order); mean over {', '.join(map(str, trees))} trees."
        + (
            f" {int(capped.iloc[0])} diverged trial(s) capped at the fence {limit:.4g}."
            if len(capped) and capped.iloc[0]
            else ""
        )
        + "</p>"
    )
    out.append(
        figure(
            plots.importance_chart(imp, titled(a, task, f"{task}: variance fractions")),
            f"importance_{task}",
            figures_dir,
            f"{task}: fANOVA variance fractions",
        )
    )
    out.append(table(wide(imp, task), index=True))
    curves = a.fanova["curves"]
    curves = curves[curves["task"] == task]
    if len(curves):
        out.append(
            figure(
                plots.marginal_curves(
                    curves,
                    metric,
                    titled(
                        a,
                        task,
                        f"{task}: marginal test {metric} "
                        "(all variants pooled; band: +-1 std over trees, clipped to the domain)",
                    ),
                ),
                f"marginals_{task}",
                figures_dir,
                f"{task}: fANOVA marginal curves",
            )
        )
    if task in a.fanova["surfaces"]:
        g_lr, g_h, z = a.fanova["surfaces"][task]
        out.append(
            figure(
                plots.pair_surface(
                    g_lr,
                    g_h,
                    z,
                    metric,
                    titled(a, task, f"{task}: learning rate x hidden size (pooled marginal)"),
                ),
                f"lr_hidden_{task}",
                figures_dir,
                f"{task}: pairwise marginal of learning rate and hidden size",
            )
        )
    return out


def _skipped_text(skipped: pd.DataFrame) -> str:
    """Groups with the same reason listed once: 'too few trials (n = 4, needs >= 10): V, NIG'."""
    return "; ".join(
        f"{reason}: {', '.join(g['group'])}" for reason, g in skipped.groupby("reason", sort=False)
    )


def _provenance_section(a) -> list[str]:
    t = a.totals
    versions = ", ".join(f"{k} ({v} trials)" for k, v in t["code_versions"].items()) or "none"
    devices = ", ".join(f"{k} ({v} trials)" for k, v in t["devices"].items()) or "none"
    out = [
        '<h2 id="provenance">Provenance</h2>',
        f"<p>Code version(s): {esc(versions)}.<br>Devices: {esc(devices)}.<br>"
        f"Total compute: {provenance.human_seconds(t['compute_s'])} "
        f"({t['compute_s']:.0f} s, all recorded trials). First trial started "
        f"{esc(t['first_started'])}, last finished {esc(t['last_finished'])}.</p>",
        "<h3>Trials per (task, variant)</h3>",
        table(a.progress),
        "<h3>Failed trials</h3>",
        table(a.failures) if len(a.failures) else "<p>No trial failed.</p>",
        "<h3>Study config (config.yaml)</h3>",
        f"<pre>{esc(a.res.config_text) or '(no config.yaml)'}</pre>",
    ]
    return out
