"""The paper's findings as data, and this study's findings beside them.

Greff et al. 2017: Fig. 3 (which variants differ from V, per dataset), the best results, and
Figs. 4-6 (fANOVA variance fractions), plus the JSB numbers of Chung et al. 2014 and
Boulanger-Lewandowski et al. 2012. The facts ship with the package in `paper_facts.yaml`, each
tagged V (verified in a public source), C (corroborated by the authors' code or notes quoting
the paper) or R (recalled, not checked against the paper's text). They are held against a
study's task only where `analysis.comparable` finds it comparable.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from analysis import power
from analysis.stats import ALL, TOO_FEW, TOP

FACTS_FILE = Path(__file__).with_name("paper_facts.yaml")
FACTS_NAME = "analysis/paper_facts.yaml"
TAGS = {
    "V": "verified in a public source",
    "C": "corroborated by the authors' code or by notes quoting the paper",
    "R": "recalled, not checked against the paper's text",
}


@cache
def facts() -> dict:
    """The shipped paper facts (see paper_facts.yaml for the tags)."""
    return yaml.safe_load(FACTS_FILE.read_text())


def paper_n(subset: str) -> int:
    """Trials per pair behind the paper's test on `subset` (200, or its top 10 %: 20)."""
    n = int(facts()["protocol"]["trials_per_pair"]["value"])
    return n if subset == ALL else max(1, round(n * facts()["protocol"]["top_fraction"]["value"]))


def compare_variants(
    significance: pd.DataFrame,
    stand_in: dict[str, bool | None],
    tasks: list[str],
    alpha: float = 0.05,
) -> pd.DataFrame:
    """The paper's Fig. 3 verdict beside ours on all trials and on the top 10 %, one row per
    (task, variant), with power numbers and an explanation wherever they differ on all trials
    (`power.explain`; the top 10 % differences are explained in words)."""
    rows = []
    sig = significance.set_index(["task", "subset", "variant"]) if len(significance) else None
    for task in tasks:
        for variant, fact in facts()["variants"].items():
            if task not in fact["verdicts"]:
                continue
            paper = fact["verdicts"][task]
            row: dict[str, object] = {
                "task": task,
                "variant": variant,
                "paper": paper,
                "tag": fact["tag"],
            }
            notes = []
            for subset, label in ((ALL, "all"), (TOP, "top 10%")):
                key = (task, subset, variant)
                found = sig.loc[key] if sig is not None and key in sig.index else None
                ours = "not run" if found is None else str(found["verdict"])
                row[f"ours ({label})"] = ours
                row[f"n / n V ({label})"] = (
                    "" if found is None else f"{found['n']} / {found['n_base']}"
                )
                row[f"match ({label})"] = _match(paper, ours)
                if subset == ALL:
                    row["Welch (all)"] = "" if found is None else found["verdict_welch"]
                row[f"cause ({label})"] = ""
                if row[f"match ({label})"] != "differs":
                    continue
                why = power.explain(
                    paper,
                    ours,
                    int(found["n"]),
                    int(found["n_base"]),
                    float(found["g"]),
                    float(found["g_lo"]),
                    float(found["g_hi"]),
                    paper_n(subset),
                    alpha,
                    int(found["diverged"]),
                )
                row[f"cause ({label})"] = why.pop("cause")
                notes.append(f"{label}: {why.pop('explanation')}")
                if subset == ALL:
                    row.update(why)
            if notes and stand_in.get(task):
                notes.append("generated stand-in data, not the paper's corpus")
            row["explanation"] = "; ".join(notes)
            row["stand-in data"] = stand_in_text(stand_in.get(task))
            row["paper note"] = fact["note"]
            rows.append(row)
    out = pd.DataFrame(rows)
    first = [c for c in out.columns if c not in POWER_KEYS + TAIL] or VERDICT_KEYS
    return out.reindex(columns=first + POWER_KEYS + TAIL)


VERDICT_KEYS = ["task", "variant", "paper", "tag"] + [  # the columns of an empty table
    f"{c} ({s})"
    for s in ("all", "top 10%")
    for c in ("ours", "n / n V", "match", *(("Welch",) if s == "all" else ()), "cause")
]
POWER_KEYS = [
    "paper n",
    "smallest d significant at paper n",
    "power for that d here",
    "power for observed g",
    "n per group for 80% power (observed g)",
]
TAIL = ["explanation", "stand-in data", "paper note"]


def _match(paper: str, found: str) -> str:
    if found == "not run":
        return "not run"
    if found in (TOO_FEW, "no baseline"):
        return "not enough trials"
    found_sig = found in ("worse", "better")
    paper_sig = paper in ("worse", "better")
    if found_sig == paper_sig and (not found_sig or found == paper):
        return "agrees"
    return "differs"


def best_results(
    summary: pd.DataFrame, stand_in: dict[str, bool | None], tasks: list[str]
) -> pd.DataFrame:
    """Per task and variant: our best and median test metric (all trials), beside the paper's
    best trial of the task and a reference number reached by that variant where one exists
    (Chung et al.'s LSTM for V, GRU for GRU)."""
    rows = []
    allsum = summary[summary["subset"] == ALL] if len(summary) else summary
    for task in tasks:
        refs = facts()["best"].get(task, [])
        greff = [f for f in refs if f["who"].startswith("Greff")]
        ours = allsum[allsum["task"] == task] if len(allsum) else allsum
        for r in ours.itertuples(index=False):
            named = [f for f in refs if f.get("variant") == r.variant]
            rows.append(
                {
                    "task": task,
                    "variant": r.variant,
                    "n": r.n,
                    "best (ours)": r.best,
                    "median (ours)": r.median,
                    "paper's best (any variant)": greff[0]["value"] if greff else np.nan,
                    "tag": greff[0]["tag"] if greff else "",
                    "reference": named[0]["value"] if named else np.nan,
                    "source": f"{named[0]['who']} [{named[0]['tag']}]" if named else "",
                    "stand-in data": stand_in_text(stand_in.get(task)),
                }
            )
    columns = ["task", "variant", "n", "best (ours)", "median (ours)"]
    columns += ["paper's best (any variant)", "tag", "reference", "source"]
    return pd.DataFrame(rows, columns=[*columns, "stand-in data"])


def reference_results(
    summary: pd.DataFrame, stand_in: dict[str, bool | None], tasks: list[str]
) -> pd.DataFrame:
    """Per task: every best result the paper and the references report, beside our best trial
    of any variant (and which variant reached it)."""
    rows = []
    allsum = summary[summary["subset"] == ALL] if len(summary) else summary
    for task in tasks:
        ours = allsum[allsum["task"] == task] if len(allsum) else allsum
        best = ours.loc[ours["best"].idxmin()] if len(ours) and ours["best"].notna().any() else None
        for f in facts()["best"].get(task, []):
            rows.append(
                {
                    "task": task,
                    "source": f["who"],
                    "tag": f["tag"],
                    "their best": f["value"],
                    "their variant": f.get("variant", ""),
                    "our best": np.nan if best is None else best["best"],
                    "our variant": "" if best is None else best["variant"],
                    "note": f["note"],
                    "stand-in data": stand_in_text(stand_in.get(task)),
                }
            )
    columns = ["task", "source", "tag", "their best", "their variant", "our best", "our variant"]
    return pd.DataFrame(rows, columns=[*columns, "note", "stand-in data"])


# the claims that compare a number to a bound: claim -> (main effect, or "pairwise" for the sum
# of the pairwise fractions; the bound; whether the claim holds below it)
BOUNDS = {
    "lr_dominant": ("learning_rate", 2 / 3, False),
    "momentum_small": ("momentum", 0.01, True),
    "interactions_small": ("pairwise", 0.10, True),
}


def _claim(claim: str, main: pd.Series, pairs: float) -> tuple[bool, float, str]:
    """Whether a claim holds on one fANOVA (main fractions by hp, sum of the pairwise ones),
    the number it rests on (NaN for the rank claims) and that number as text."""
    ranked = main.sort_values(ascending=False)
    if claim == "lr_largest":
        return bool(ranked.index[0] == "learning_rate"), np.nan, f"largest: {ranked.index[0]}"
    if claim == "hidden_second":
        return bool(ranked.index[1] == "hidden_size"), np.nan, f"second: {ranked.index[1]}"
    if claim in BOUNDS:
        effect, bound, below = BOUNDS[claim]
        value = pairs if effect == "pairwise" else float(main[effect])
        return bool(value < bound if below else value > bound), value, f"{100 * value:.1f}%"
    raise ValueError(f"unknown claim {claim!r}; known: {', '.join(_claims())}")


def _split(imp: pd.DataFrame) -> tuple[pd.Series, float]:
    main = imp[imp["kind"] == "main"].set_index("hp")["fraction"]
    return main, float(imp.loc[imp["kind"] == "pairwise", "fraction"].sum())


def _resampled(claim: str, boot: pd.DataFrame, floor: float = 0.0) -> tuple[str, str]:
    """The claim on the bootstrap resamples: the 95 % interval of its number (or how often it
    holds) as text, and the cause of a disagreement: 'too few trials' while the interval reaches
    the paper's side (or the claim holds in at least 2.5 % of resamples), else 'real
    disagreement'. `floor`: for a claim that an effect is small, the fraction an effect of
    none gets at this n; an interval that reaches below it cannot tell the two apart either."""
    found = [_claim(claim, *_split(part)) for _, part in boot.groupby("resample")]
    if not found:
        return "", ""
    holds = np.array([h for h, _, _ in found])
    if claim in BOUNDS:
        lo, hi = np.percentile([v for _, v, _ in found], [2.5, 97.5])
        _, bound, below = BOUNDS[claim]
        reaches = lo < max(bound, floor) if below else hi > bound
        text = f"{100 * lo:.1f}-{100 * hi:.1f}% (95%, {len(found)} resamples)"
        if below and floor > bound:
            text += f"; no effect at all gets up to {100 * floor:.1f}% at this n"
    else:
        reaches = holds.mean() >= 0.025
        text = f"holds in {100 * holds.mean():.0f}% of {len(found)} resamples"
    return text, "too few trials" if reaches else "real disagreement"


def _claims() -> list[str]:
    return [c["id"] for c in facts()["hyperparameters"]]


HP_COLUMNS = ["task", "paper", "tag", "rule", "this study", "measured", "bootstrap"]


def compare_hyperparameters(
    importance: pd.DataFrame,
    resampled: pd.DataFrame,
    stand_in: dict[str, bool | None],
    tasks: list[str],
    baseline: str = "V",
    nulls: dict[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Each hyperparameter claim per task against the pooled fANOVA table (group == 'all'),
    with its spread over bootstrap resamples of the trials, the same claim on the baseline's
    trials alone (the paper's marginals are V's; which trials its pie charts pool is not
    known) and, where it differs, the cause: 'too few trials' or 'real disagreement' from the
    resamples, or 'holds on V alone' when only the pooling makes the difference. `nulls`:
    task -> momentum's fractions with momentum shuffled (`importance.null_fractions`); the
    momentum claim is a real disagreement only above them too."""
    nulls = nulls or {}
    rows = []
    for task in tasks:
        in_task = importance[importance["task"] == task]
        imp = in_task[in_task["group"] == "all"]
        alone = in_task[in_task["group"] == baseline]
        boot = resampled[resampled["task"] == task]
        for c in facts()["hyperparameters"]:
            spread, cause, on_base = "", "", ""
            if imp.empty:
                value, found, match = "", "no fANOVA (too few trials)", "not enough trials"
            else:
                holds, _, value = _claim(c["id"], *_split(imp))
                found, match = ("holds", "agrees") if holds else ("does not hold", "differs")
                floor = 0.0
                if c["id"] == "momentum_small" and len(nulls.get(task, ())):
                    floor = float(np.percentile(nulls[task], 97.5))
                spread, why = _resampled(c["id"], boot, floor)
                if len(alone):
                    base_holds, _, base_value = _claim(c["id"], *_split(alone))
                    on_base = f"{base_value} ({'holds' if base_holds else 'does not hold'})"
                    if not holds and base_holds:
                        why = f"holds on {baseline} alone"
                cause = "" if holds else why
            rows.append(
                {
                    "task": task,
                    "paper": c["text"],
                    "tag": c["tag"],
                    "rule": c["check"],
                    "this study": found,
                    "measured": value,
                    "bootstrap": spread,
                    f"on {baseline} alone": on_base,
                    "match": match,
                    "cause": cause,
                    "stand-in data": stand_in_text(stand_in.get(task)),
                }
            )
    columns = [*HP_COLUMNS, f"on {baseline} alone", "match", "cause", "stand-in data"]
    return pd.DataFrame(rows, columns=columns)


def stand_in_text(flag: bool | None) -> str:
    if flag is None:
        return "unknown"
    return "YES - not comparable" if flag else "no"
