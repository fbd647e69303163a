"""The page's closing sections: the paper beside us, and the methods (how every number was made).

Kept apart from `render` (the per-task sections) so each file stays one screenful of purpose.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import paper
from analysis.importance import MIN_TRIALS
from analysis.model import Analysis
from analysis.page import esc, note, table
from analysis.stats import FENCE_IQR, MIN_PER_GROUP, TOO_FEW, too_few_text

CLASSED = (
    "match",
    "match (all)",
    "match (top 10%)",
    "stand-in data",
    "ours (all)",
    "ours (top 10%)",
    "Welch (all)",
    "paper",
)


def why_not(a: Analysis, task: str) -> str:
    """What bars a task from the paper's comparison, in a few words: its data's reasons, and
    the protocol as one phrase (the page's header lists how it differs)."""
    why = [r for r in a.comparable[task].reasons if r not in a.protocol]
    if a.protocol:
        why.append("the protocol differs from the paper's, as listed at the top of the page")
    return "; ".join(why)


def tag_legend() -> str:
    """The certainty tags in words, for the page."""
    return "; ".join(f"[{k}] {v}" for k, v in paper.TAGS.items())


def paper_section(a: Analysis) -> list[str]:
    same = [t for t in a.res.tasks if a.comparable[t].comparable]
    out = ['<h2 id="paper">The paper beside us</h2>']
    others = [t for t in a.res.tasks if t not in same]
    if others:
        data = {t: [r for r in a.comparable[t].reasons if r not in a.protocol] for t in others}
        out.append(
            note(
                "Not comparable with the paper, so none of its findings is held against "
                + ("this study" if not same else ", ".join(others))
                + ": "
                + (
                    "its protocol differs from the paper's (listed at the top of the page)"
                    if a.protocol
                    else ""
                )
                + ("; " if a.protocol and any(data.values()) else "")
                + "; ".join(f"{t}: {', '.join(why)}" for t, why in data.items() if why)
                + "."
            )
        )
    if not same:
        return out
    out.append(
        "<p>The paper's findings (Greff et al. 2017, Fig. 3 and Figs. 4-6) and reference "
        f"numbers ship with the report in <code>{paper.FACTS_NAME}</code>, each with a "
        f"certainty tag: {esc(tag_legend())}. <b>Most are [R]</b>: read an [R] verdict as the "
        "paper's finding as remembered, to be confirmed against its text.</p>"
    )
    out.append(
        "<p>For " + ", ".join(f"<b>{esc(t)}</b>" for t in same) + " (the paper's task on its "
        "real corpus, under the paper's protocol): &lsquo;agrees&rsquo; compares significance "
        "and direction only. Ours is the rank test's verdict; the paper's own Welch test on "
        "our trials is shown beside it. Where they differ, the power our test had at its n "
        "says how much the difference means, and the cause sums it up: 'too few trials' while "
        "our 95% interval for Hedges' g still holds an effect the paper's test could call "
        "significant in its direction (or, for the paper's n.s., one too small for it: "
        "'compatible'), 'real disagreement' once the interval excludes them all.</p>"
    )
    pv = a.paper_variants
    out.append("<h3>Which variants differ from V (Fig. 3)</h3>")
    for task in same:
        part = pv[pv["task"] == task] if len(pv) else pv
        if len(same) > 1:
            out.append(f"<h4>{esc(task)}</h4>")
        out += _verdict_table(part)
    out.append(
        '<p class="muted">Paper notes: '
        + "; ".join(
            f"<b>{esc(v)}</b> {esc(f['note'])} [{esc(f['tag'])}]"
            for v, f in paper.facts()["variants"].items()
        )
        + ".</p>"
    )
    out += [
        "<h3>Best results: the paper's and the references' beside ours</h3>",
        _plain(a.paper_reference)
        if len(a.paper_reference)
        else note("None of the comparable tasks has a reference result."),
        "<h3>Best and median per variant (all trials)</h3>",
        _plain(a.paper_best) if len(a.paper_best) else note("No complete trials to compare."),
        "<h3>Hyperparameters (Figs. 4-6)</h3>",
        note(
            "Each claim is checked on the pooled fANOVA of the task; 'bootstrap' refits it on "
            f"{a.settings.fanova_resamples} resamples of the trials "
            f"({a.settings.fanova_resample_trees} trees each) and says how far its number moves "
            f"(or how often the claim holds). 'on {a.res.baseline} alone' checks the claim on "
            f"the baseline's trials (the paper draws its marginals for {a.res.baseline}). "
            "Cause of a difference: 'too few trials' while the bootstrap still reaches the "
            "paper's side (for momentum: or reaches what momentum gets once shuffled, i.e. with "
            f"no effect at all), 'holds on {a.res.baseline} alone' when pooling the variants "
            "makes it, else 'real disagreement'."
        ),
        *_claims_table(a.paper_hp),
    ]
    if "GRU" in a.res.variants:
        out.append(
            '<p class="muted">GRU was not part of the paper; it has no Fig. 3 verdict '
            "(Chung et al.'s GRU number is listed for JSB).</p>"
        )
    return out


def _plain(df: pd.DataFrame) -> str:
    """A paper table without its 'stand-in data' column: every task here is comparable, so it
    would say 'no' on every row (the CSV keeps it)."""
    return table(df.drop(columns=["stand-in data"], errors="ignore"), classed=CLASSED)


def _claims_table(hp: pd.DataFrame) -> list[str]:
    """The fANOVA claims; a task without a pooled fANOVA gets one line, not five rows."""
    out = []
    none = hp[hp["this study"].str.startswith("no fANOVA")] if len(hp) else hp
    for task in dict.fromkeys(none["task"]) if len(none) else []:
        out.append(note(f"{task}: no pooled fANOVA (too few trials), so no claim is checked."))
    shown = hp[~hp.index.isin(none.index)] if len(hp) else hp
    if len(shown):
        out.append(_plain(shown))
    return out


POWER_COLUMNS = {
    "power for that d here": "power for the paper's smallest significant d",
    "power for observed g": "power for our g",
    "n per group for 80% power (observed g)": "n per group for 80% power",
}
VERDICT_COLUMNS = ["variant", "paper", "tag"] + [
    f"{c} ({s})" for s in ("all", "top 10%") for c in ("ours", "n / n V", "Welch", "match", "cause")
]


def _verdict_table(pv: pd.DataFrame) -> list[str]:
    """The Fig. 3 comparison of one task: a verdict table (pairs with too few trials in one
    line, not rows), then the power and the explanation of each difference in a second
    table, so that neither is wider than the page."""
    out = []
    pv = pv[pv["ours (all)"] != "not run"]  # the paper's variants this study did not run
    if pv.empty:
        return [note("None of the paper's Fig. 3 variants ran in this study.")]
    few_all = pv["ours (all)"] == TOO_FEW
    if few_all.all():
        ks = sorted({int(t.split(" / ")[0]) for t in pv["n / n V (all)"] if t})
        return [
            note(
                f"{too_few_text(min(ks) if ks else 0, MIN_PER_GROUP)} in every pair: "
                "no verdict is compared with the paper's."
            )
        ]
    shown = pv[~few_all]
    if few_all.any():
        out.append(
            note(
                "Too few trials for a test, so not compared: "
                + ", ".join(pv.loc[few_all, "variant"])
                + "."
            )
        )
    if (shown["ours (top 10%)"] == TOO_FEW).all():
        ks = sorted({int(t.split(" / ")[0]) for t in shown["n / n V (top 10%)"] if t})
        out.append(
            note(
                f"Top 10%: {too_few_text(max(ks) if ks else 0, MIN_PER_GROUP)} in every pair, "
                "so only the all-trials verdicts are compared."
            )
        )
        columns = [c for c in VERDICT_COLUMNS if "top 10%" not in c]
    else:
        columns = VERDICT_COLUMNS
    out.append(table(shown.reindex(columns=[c for c in columns if c in shown]), classed=CLASSED))
    differs = shown[shown["explanation"] != ""]
    if len(differs):
        why = differs[["variant", *POWER_COLUMNS, "explanation"]].rename(columns=POWER_COLUMNS)
        for col in POWER_COLUMNS.values():
            if col.startswith("power"):
                why[col] = [f"{100 * v:.0f}%" if pd.notna(v) else "" for v in why[col]]
        out.append("<p>Where ours differs from the paper's:</p>")
        out.append(table(why, wide=("explanation",)))
    return out


def _target_text(target: str) -> str:
    if target == "rank":
        return (
            "the rank of each trial's test metric within its group (a monotone transform: a "
            "diverged trial is the worst one and no more, where on the raw metric one NLL of "
            "10^4 would carry nearly all the variance; without divergence the fractions are "
            "close to the raw metric's)"
        )
    return "the test metric, capped at the task's divergence fence"


def methods_items(a: Analysis) -> list[str]:
    """The Methods list: how every number on the page was made, one item per step."""
    s = a.settings
    per_variant = s.n_trees if s.n_trees_variant is None else s.n_trees_variant
    top = f"{100 * s.top_fraction:.0f}%"
    k = s.fence_iqr
    fences = ", ".join(
        f"{t}: {v:.4g}" if np.isfinite(v) else f"{t}: none" for t, v in a.fences.items()
    )
    items = [
        "Only trials with status 'complete' and finite validation and test metrics are analysed.",
        f"Top {top}: per (task, variant), the ceil({top} of n) trials with the lowest validation "
        "metric (at least 1; ties by trial number).",
        f"Verdict: two-sided Mann-Whitney U test (scipy.stats.mannwhitneyu, exact p for small "
        f"samples without ties) of each variant against {a.res.baseline} at alpha = {s.alpha}, "
        f"raw p as in the paper, separately for all trials and the top {top}. A rank test "
        "because a diverged-but-finite trial (an NLL of 10^4 among values near 8.5) inflates "
        "the variance until Welch's test calls a catastrophically worse variant 'n.s.'; ranked, "
        "it is simply the worst trial. Effect: P(variant > baseline), 0.5 meaning none.",
        f"At least {MIN_PER_GROUP} trials per group: at 4 against 4 the exact two-sided "
        "Mann-Whitney p can reach 2/70 = 0.029, at 3 against 3 no outcome goes below 0.10. "
        "Smaller groups get one 'too few trials (n = k, needs >= m)' line per table.",
        "Beside it: Welch's t-test (scipy.stats.ttest_ind, equal_var=False), the paper's test; "
        "Holm's step-down correction over the variants of one (task, subset); difference of "
        "means and Hedges' g with percentile bootstrap 95% CIs (scipy.stats.bootstrap, "
        f"{s.n_resamples} resamples, generator seeded from {s.seed}).",
        f"Diverged trials: complete trials above the task's fence Q3 + {k} IQR of all its "
        f"complete test metrics (Tukey's far-out fence; fences: {fences or 'none'}). They stay "
        "in every test and are counted per variant; box plots and learning curves cut their "
        "axes at the fence, as the paper's Fig. 3 cuts its axes, and count what lies above.",
        "Power, where our verdict differs from the paper's: statsmodels TTestIndPower "
        "(two-sided) at our n, for the smallest |d| the paper's Welch test could call "
        "significant at its n (200 per pair, 20 in the top 10%), and for our observed g.",
        f"fANOVA (Hutter et al. 2014) of {_target_text(s.fanova_target)}, on log10(learning rate), log10(hidden size), log10(1 - momentum) and the "
        "input-noise std, under the uniform measure on the config's search box (widened to "
        "the data if needed): a scikit-learn random forest (bootstrap, 70% of features per "
        "split, fully grown) decomposed exactly per tree (analysis/fanova.py, checked "
        "against Optuna's tree code). Fractions are raw shares: mains + pairs + higher order "
        "= 1. Marginal curves and the pairwise surface are drawn in metric units (a rank maps "
        "back through the empirical quantile function of the group's metric); bands (+-1 std "
        "over trees) are clipped to the metric's domain.",
        f"Trees: {s.n_trees} per task (variants pooled), {per_variant} per (task, variant); "
        f"groups with fewer than {MIN_TRIALS} complete trials or a constant metric are not "
        "analysed. The pooled analysis has no variant feature: differences between variants "
        "act as noise for its forest.",
        f"Uncertainty of the pooled fractions: the forest refitted on "
        f"{s.fanova_resamples} bootstrap resamples of the task's trials ({s.fanova_resample_trees} "
        "trees each, ranks recomputed within the resample); the paper's hyperparameter claims "
        "show the 2.5-97.5 percentiles of their number over the resamples, or the share of "
        "resamples in which a ranking claim holds.",
        "Learning curves: median and quartiles of the validation metric per epoch over the "
        "complete trials that reached that epoch (epochs.parquet).",
        "Tables as CSV in tables/ (every table with a task column says whether its numbers "
        "come from a stand-in corpus), figures in figures/.",
    ]
    return items


__all__ = ["FENCE_IQR", "methods_items", "paper_section"]
