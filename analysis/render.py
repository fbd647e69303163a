"""The report page: an `Analysis` (analysis.model) drawn as one self-contained HTML file, laid
out by the Jinja2 template `templates/report.html.j2` (autoescaped; figures embedded as PNG).

Section order follows the paper: variants against V (Fig. 3), hyperparameter importance
(Figs. 4-6), the paper's findings beside ours, then provenance and the methods used. This module
draws the figures and builds the tables of each section; the template places them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jinja2
import matplotlib
import numpy as np
import pandas as pd
from markupsafe import Markup

from analysis import learning, plots, provenance, robustness
from analysis.importance import wide
from analysis.model import Analysis
from analysis.page import banner, column_format, esc, figure, html, note, table
from analysis.render_paper import methods_items, paper_section, why_not
from analysis.render_provenance import against_paper, counts, plugins, progress_block, versions
from analysis.stats import SUBSETS, TOO_FEW, TOP, too_few_text
from analysis.summary import size_line
from study import results

matplotlib.use("Agg")

STAND_IN_TAG = "\n[GENERATED STAND-IN DATA: not comparable with the paper]"
STAND_IN_TEXT = (
    "{task}: these numbers come from a GENERATED STAND-IN corpus, not the real "
    "{title} data. They test the harness; they are NOT comparable with the paper's."
)


@dataclass(frozen=True)
class TaskSection:
    """One task's part of the page: its heading's words, and its blocks."""

    task: str
    title: str
    body: Markup


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("analysis", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a name the template uses and render forgot fails
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("report.html.j2")


def render(a: Analysis, figures_dir: Path) -> str:
    """The page's HTML; figures are also written to `figures_dir`."""
    res, t = a.res, a.totals
    grid = None
    if not a.progress.empty:
        grid = table(_progress_grid(a), index=True)
    return _template().render(
        study=res.study,
        built=dt.datetime.now().isoformat(timespec="seconds"),
        folder=str(res.folder),
        files=f"{results.TRIALS_FILE}, {results.CONFIG_FILE}",
        against_paper=html(against_paper(a)),
        size_line=size_line(a),
        tasks=res.tasks,
        stand_in=[task for task, flag in a.stand_in.items() if flag],
        notices=a.notices,
        totals=t,
        compute=provenance.human_seconds(t.compute_s),
        baseline=res.baseline,
        grid=grid,
        sources=table(a.sources, classed=("data",)),
        task_sections=[_task_section(a, task, figures_dir) for task in res.tasks],
        paper=html(paper_section(a)),
        versions=versions(a),
        plugins=plugins(a),
        devices=counts(t.devices),
        progress=progress_block(a),
        failures=table(a.failures) if len(a.failures) else None,
        config_file=results.CONFIG_FILE,
        config_text=res.config_text,
        methods=methods_items(a),
    )


def _progress_grid(a: Analysis) -> pd.DataFrame:
    """Variant x task: 'complete/expected (failed)' per pair."""
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
    return cells.pivot(index="variant", columns="task", values="cell").reindex(
        index=a.res.variants, columns=a.res.tasks
    )


def ci_column(name: str, v: pd.Series, lo: pd.Series, hi: pd.Series) -> list[str]:
    """'value [low, high]' strings, all three in the column's one number format."""
    n = len(v)
    texts = column_format(name, [*v.tolist(), *lo.tolist(), *hi.tolist()])
    out = []
    for i in range(n):
        value, low, high = texts[i], texts[n + i], texts[2 * n + i]
        out.append(f"{value} [{low}, {high}]" if value and low and high else value)
    return out


def significance_tables(sig: pd.DataFrame, baseline: str, kept_note: str = "") -> list[str]:
    """Per subset: one table of the tested variants, and one line naming those with too few
    trials (instead of rows of empty cells); `kept_note` explains the `kept` columns, shown
    where the study has trials whose numbers do not reproduce bitwise."""
    out = []
    if "kept" in sig and sig["kept"].notna().any() and kept_note:
        out.append(note(kept_note))
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


def _percent(values: pd.Series) -> list[str]:
    return ["" if pd.isna(v) else f"{v:.0%}" for v in values]


def _kept_note(a: Analysis) -> str:
    """What the `kept` columns mean, with the reruns they rest on."""
    if a.rerun_noise is None or not a.settings.rerun_draws:
        return ""
    movable, rel = a.rerun_noise
    return (
        f"kept: {int(movable.sum())} trials of this study were recorded by code whose numbers "
        f"do not reproduce bitwise (odyssey verify retrained {len(rel)} of them: median "
        f"|relative difference| of the test metric {np.median(np.abs(rel[:, 1])):.1e}, largest "
        f"{np.abs(rel[:, 1]).max():.1e}). Their metrics were redrawn {a.settings.rerun_draws} "
        "times, each times 1 + the difference of one of the "
        f"{robustness.NEIGHBOURS} reruns nearest it in rank, and the tests rerun: kept is the "
        "share of redraws that give the same verdict. Below about 95 %, the verdict is within "
        "the run-to-run noise of such trials."
    )


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
            **(
                {"kept": _percent(sig["kept"]), "kept (Holm)": _percent(sig["kept_holm"])}
                if "kept" in sig and sig["kept"].notna().any()
                else {}
            ),
        }
    )


def titled(a: Analysis, task: str, text: str) -> str:
    """A figure title, with the stand-in label when the task's data was generated."""
    return text + (STAND_IN_TAG if a.stand_in.get(task) else "")


def _task_section(a: Analysis, task: str, figures_dir: Path) -> TaskSection:
    title = a.res.names.title(task)
    return TaskSection(task, title, html(_task_parts(a, task, title, figures_dir)))


def _task_parts(a: Analysis, task: str, title: str, figures_dir: Path) -> list[str]:
    res, metric = a.res, a.metrics.get(task, "metric")
    better = res.names.tasks[task].better if task in res.names.tasks else "lower"
    c, data = a.comparable[task], a.task_data[task]
    text = f"{data.label}; " + (c.text if c.comparable else "not comparable: " + why_not(a, task))
    out: list[str] = [
        f'<p class="{"verdict" if c.comparable else "verdict no"}"><b>{esc(text)}.</b></p>'
    ]
    if a.stand_in.get(task):
        out.append(banner(STAND_IN_TEXT.format(task=task, title=title), loud=True))
    elif a.stand_in.get(task) is None and data.kind == "paper":
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
        f"<h3>Variants against {esc(res.baseline)} (test {esc(metric)}, {better} is better)</h3>",
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
    out += significance_tables(sig, res.baseline, _kept_note(a))
    out += _learning_part(a, task, title, metric, figures_dir)
    out += _importance_part(a, task, metric, figures_dir)
    done = a.done[a.done["task"] == task]
    fig, b = plots.time_vs_hidden(
        done, res.variants, titled(a, task, f"{task}: training time per epoch vs hidden size")
    )
    out += [
        "<h3>Training time against hidden size</h3>",
        figure(
            fig,
            f"time_{task}",
            figures_dir,
            f"{task}: training time per epoch vs hidden size (log-log, least-squares trend)",
        ),
        "<p>Time per epoch (wall_s / epochs), so that early stopping does not move it; a "
        "trial trained in a pack records its share of the pack's time (code from before that "
        "recorded the whole pack's). Several code versions are coloured by version, and the "
        "trend is fitted on the version with the most trials: packing and kernels changed "
        "between them.</p>",
        f"<p>Fitted trend: time per epoch &prop; hidden<sup>{b:.2f}</sup>.</p>"
        if pd.notna(b)
        else '<p class="muted">Too few distinct hidden sizes with a wall time to fit a trend.</p>',
    ]
    return out


def _learning_part(a: Analysis, task: str, title: str, metric: str, figures_dir: Path) -> list[str]:
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


def _importance_part(a: Analysis, task: str, metric: str, figures_dir: Path) -> list[str]:
    imp = a.fanova.importance
    imp = imp[imp["task"] == task]
    skipped = a.fanova.skipped
    skipped = skipped[skipped["task"] == task]
    out = ["<h3>Hyperparameter importance (fANOVA)</h3>"]
    pooled_skipped = skipped[skipped["group"] == "all"]
    per_variant = skipped[skipped["group"] != "all"]
    if imp.empty or len(pooled_skipped):
        reason = _skipped_text(pooled_skipped) if len(pooled_skipped) else "no complete trials"
        return out + [note(f"No fANOVA for {task}: {reason.removesuffix(': all')}.")]
    if len(per_variant):
        out.append(
            note(
                "The pooled fANOVA (all variants) is below; per variant, not analysed: "
                + _skipped_text(per_variant)
                + "."
            )
        )
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
    curves = a.fanova.curves
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
    if task in a.fanova.surfaces:
        g_lr, g_h, z = a.fanova.surfaces[task]
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
