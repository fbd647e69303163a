"""The report page: an `Analysis` (study.report.build) drawn as one self-contained HTML file.

Section order follows the paper: variants against V (Fig. 3), hyperparameter importance
(Figs. 4-6), the paper's findings beside ours, then provenance and the methods used.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import matplotlib
import pandas as pd

from study.report import plots, provenance
from study.report.importance import MIN_TRIALS, wide
from study.report.page import banner, document, esc, figure, note, notes_list, table
from study.report.stats import MIN_PER_GROUP, SUBSETS

matplotlib.use("Agg")

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
    body += _paper_section(a)
    body += _provenance_section(a)
    body += _methods_section(a)
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


def _significance_table(sig: pd.DataFrame) -> pd.DataFrame:
    def ci(v, lo, hi):
        return "" if pd.isna(v) else f"{v:.4g} [{lo:.3g}, {hi:.3g}]"

    return pd.DataFrame(
        {
            "subset": sig["subset"],
            "variant": sig["variant"],
            "n": sig["n"],
            "n base": sig["n_base"],
            "mean": sig["mean"],
            "base mean": sig["mean_base"],
            "diff [95% CI]": [
                ci(*r) for r in zip(sig["diff"], sig["diff_lo"], sig["diff_hi"], strict=True)
            ],
            "Hedges g [95% CI]": [
                ci(*r) for r in zip(sig["g"], sig["g_lo"], sig["g_hi"], strict=True)
            ],
            "t": sig["t"],
            "dof": sig["dof"],
            "p": sig["p"],
            "p (Holm)": sig["p_holm"],
            "verdict": sig["verdict"],
            "verdict (Holm)": sig["verdict_holm"],
        }
    )


def _task_section(a, task: str, title: str, figures_dir: Path) -> list[str]:
    from study.report.build import metric_name

    res, metric = a.res, metric_name(a.res.trials, task)
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
                long, sig, res.variants, res.baseline, metric, f"{title}: test {metric} per variant"
            ),
            f"boxes_{task}",
            figures_dir,
            f"{task}: test {metric} per variant; top: all "
            "complete trials, bottom: top 10% by validation metric",
        ),
    ]
    if (sig["verdict"] == "no baseline").any():
        out.append(banner(f"No complete {res.baseline} trial: no variant could be tested."))
    out.append(table(_significance_table(sig), classed=("verdict",)))
    out += _importance_part(a, task, metric, figures_dir)
    done = a.done[a.done["task"] == task]
    fig, b = plots.time_vs_hidden(done, res.variants, f"{task}: training time vs hidden size")
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


def _importance_part(a, task: str, metric: str, figures_dir: Path) -> list[str]:
    imp = a.fanova["importance"]
    imp = imp[imp["task"] == task]
    skipped = a.fanova["skipped"]
    skipped = skipped[skipped["task"] == task]
    out = ["<h3>Hyperparameter importance (fANOVA)</h3>"]
    if imp.empty:
        out.append(
            note(
                f"No fANOVA for {task}: "
                + "; ".join(
                    f"{g}: {r}" for g, r in zip(skipped["group"], skipped["reason"], strict=True)
                )
            )
        )
        return out
    trees = sorted(set(imp["trees"]))
    out.append(
        f"<p>Fraction of the test-{esc(metric)} variance explained by each "
        "hyperparameter (main effects), each pair (interactions) and the rest "
        f"(higher order); mean over {', '.join(map(str, trees))} trees.</p>"
    )
    out.append(
        figure(
            plots.importance_chart(imp, f"{task}: variance fractions"),
            f"importance_{task}",
            figures_dir,
            f"{task}: fANOVA variance fractions",
        )
    )
    out.append(table(wide(imp, task).round(4), index=True))
    if len(skipped):
        out.append(
            note(
                "Not analysed: "
                + "; ".join(
                    f"{g} ({r})" for g, r in zip(skipped["group"], skipped["reason"], strict=True)
                )
            )
        )
    curves = a.fanova["curves"]
    curves = curves[curves["task"] == task]
    if len(curves):
        out.append(
            figure(
                plots.marginal_curves(
                    curves,
                    metric,
                    f"{task}: marginal test {metric} "
                    "(all variants pooled; band: +-1 std over trees)",
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
                    g_lr, g_h, z, metric, f"{task}: learning rate x hidden size (pooled marginal)"
                ),
                f"lr_hidden_{task}",
                figures_dir,
                f"{task}: pairwise marginal of learning rate and hidden size",
            )
        )
    return out


def _paper_section(a) -> list[str]:
    out = [
        '<h2 id="paper">The paper beside us</h2>',
        "<p>The paper's findings (Greff et al. 2017, Fig. 3 and Figs. 4-6) with the "
        "confidence tags of our reference: [V] verified, [C] corroborated, [R] recalled. "
        "&lsquo;agrees&rsquo; compares significance and direction only.</p>",
    ]
    if any(a.stand_in.values()):
        out.append(
            banner(
                "Rows marked 'YES - not comparable' come from generated stand-in "
                "corpora: agreement or difference there says nothing about the paper.",
                loud=True,
            )
        )
    classed = ("match (all trials)", "match (top 10%)", "match", "stand-in data")
    out += [
        "<h3>Which variants are significantly worse than V</h3>",
        table(a.paper_variants, classed=classed)
        if len(a.paper_variants)
        else note("None of this study's tasks is one of the paper's."),
        "<h3>Hyperparameters</h3>",
        table(a.paper_hp, classed=classed),
    ]
    if "GRU" in a.res.variants:
        out.append('<p class="muted">GRU was not part of the paper; it has no paper verdict.</p>')
    return out


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


def _methods_section(a) -> list[str]:
    s = a.settings
    per_variant = s.n_trees if s.n_trees_variant is None else s.n_trees_variant
    items = [
        "Only trials with status 'complete' and finite validation and test metrics are analysed.",
        f"Top {100 * s.top_fraction:.0f}%: per (task, variant), the ceil({100 * s.top_fraction:.0f}% "
        "of n) trials with the lowest validation metric (at least 1; ties by trial number).",
        f"Welch's t-test (scipy.stats.ttest_ind, equal_var=False) of each variant against "
        f"{a.res.baseline}, separately for all trials and for the top {100 * s.top_fraction:.0f}%;"
        f" needs at least {MIN_PER_GROUP} trials in both groups ('too few trials' otherwise).",
        f"Holm's step-down correction over the variants of one (task, subset), our own "
        f"implementation (tested against a hand-worked vector). 'verdict' uses the raw p at alpha "
        f"= {s.alpha}, as the paper did (and so do the colours and the paper comparison); "
        f"'verdict (Holm)' uses the Holm-adjusted p. All metrics are minimised: a higher mean "
        f"is 'worse'.",
        f"Effect sizes: difference of means (variant - {a.res.baseline}) and Hedges' g (pooled "
        f"SD, small-sample corrected), with percentile bootstrap 95% CIs (scipy.stats.bootstrap,"
        f" {s.n_resamples} resamples, np.random.Generator seeded from {s.seed}).",
        "fANOVA (Hutter et al. 2014) of the test metric on log10(learning rate), log10(hidden "
        "size), log10(1 - momentum) and the input-noise std, under the uniform measure on the "
        "config's search box (widened to the data if needed): a scikit-learn random forest "
        "(bootstrap, 70% of features per split, fully grown) decomposed exactly per tree by our "
        "vectorised implementation of the automl/fanova algorithm (study/report/fanova.py; "
        "checked against Optuna's tree code on the same trees). Fractions are raw shares of "
        "the total variance, so mains + pairs + higher order = 1.",
        f"Trees: {s.n_trees} per task (variants pooled), {per_variant} per (task, variant); "
        f"groups with fewer than {MIN_TRIALS} complete trials or a constant metric are not "
        "analysed. Marginal curves: mean and std across trees. The pooled analysis has no "
        "variant feature: differences between variants act as noise for its forest.",
        "Subsets: " + ", ".join(SUBSETS) + ". Tables as CSV in tables/, figures in figures/.",
    ]
    return [
        '<h2 id="methods">Methods</h2>',
        "<ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>",
    ]
