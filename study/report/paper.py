"""The paper's findings as data, and this study's findings beside them (reference section 5).

Greff et al. 2017, Fig. 3 (which variants differ significantly from V, per dataset) and
Figs. 4-6 (fANOVA variance fractions). Confidence tags as in `reference/odyssey-paper.md`:
[V] verified in a public source, [C] corroborated by the authors' code or third-party notes,
[R] recalled, not checked. The reference tags the variant findings [R] as a whole and notes that
many are also [C] by third-party notes without saying which; we carry [R].
"""

from __future__ import annotations

import pandas as pd

from study.report.stats import ALL, TOO_FEW, TOP

# Fig. 3: the paper's verdict per (variant, task) against V; GRU was not in the paper.
_WORSE_ALL = {"timit": "worse", "iam_online": "worse", "jsb_chorales": "worse"}
_WORSE_TI = {"timit": "worse", "iam_online": "worse", "jsb_chorales": "n.s."}
_NS = {"timit": "n.s.", "iam_online": "n.s.", "jsb_chorales": "n.s."}
VARIANT_FINDINGS: dict[str, dict[str, str]] = {
    "NIG": _WORSE_TI,
    "NFG": _WORSE_ALL,
    "NOG": _WORSE_TI,
    "NIAF": _WORSE_TI,
    "NOAF": _WORSE_ALL,
    "NP": _NS,
    "CIFG": _NS,
    "FGR": {"timit": "n.s.", "iam_online": "n.s.", "jsb_chorales": "worse"},
}
VARIANT_TAG = "R"
VARIANT_NOTES = {
    "NFG": "worse on all three datasets",
    "NOAF": "worse on all three; unbounded cell state without output squashing",
    "NIG": "worse on TIMIT and IAM, not significant on JSB (slightly better on average)",
    "NOG": "worse on TIMIT and IAM, not significant on JSB",
    "NIAF": "worse on TIMIT and IAM, not significant on JSB (slightly better on average)",
    "NP": "no significant change on any dataset",
    "CIFG": "no significant change on any dataset",
    "FGR": "no significant change on TIMIT or IAM, worse on JSB",
}

# Figs. 4-6: claims about the variance fractions, per dataset (all with variants pooled here).
# Each claim: (id, text, tag, test on one task's importance table -> bool, rule stated on page).
HP_FINDINGS = [
    (
        "lr_dominant",
        "learning rate explains more than 2/3 of the variance",
        "R",
        "main effect of log10(learning rate) > 0.667",
    ),
    (
        "hidden_second",
        "hidden size is the second most important hyperparameter",
        "R",
        "log10(hidden size) has the second largest main effect",
    ),
    (
        "momentum_small",
        "momentum explains less than 1 % of the variance",
        "R",
        "main effect of log10(1 - momentum) < 0.01",
    ),
    (
        "interactions_small",
        "interactions are small overall",
        "R",
        "sum of the 6 pairwise fractions < 0.10",
    ),
]


def _check_hp(claim: str, imp: pd.DataFrame) -> bool:
    main = imp[imp["kind"] == "main"].set_index("hp")["fraction"]
    if claim == "lr_dominant":
        return bool(main["learning_rate"] > 2 / 3)
    if claim == "hidden_second":
        return bool(main.sort_values(ascending=False).index[1] == "hidden_size")
    if claim == "momentum_small":
        return bool(main["momentum"] < 0.01)
    if claim == "interactions_small":
        return bool(imp.loc[imp["kind"] == "pairwise", "fraction"].sum() < 0.10)
    raise ValueError(f"unknown claim {claim!r}")


def compare_variants(
    significance: pd.DataFrame, stand_in: dict[str, bool | None], tasks: list[str]
) -> pd.DataFrame:
    """The paper's verdict beside ours on all trials and on the top 10 % (`compare_to_baseline`)."""
    rows = []
    ours = (
        significance.set_index(["task", "subset", "variant"])["verdict"]
        if len(significance)
        else pd.Series(dtype=object)
    )
    for task in tasks:
        for variant, per_task in VARIANT_FINDINGS.items():
            if task not in per_task:
                continue
            paper = per_task[task]
            row = {
                "task": task,
                "variant": variant,
                "paper": paper,
                "tag": VARIANT_TAG,
                "paper note": VARIANT_NOTES[variant],
            }
            for subset, label in ((ALL, "all trials"), (TOP, "top 10%")):
                found = ours.get((task, subset, variant), "not run")
                row[f"this study ({label})"] = found
                row[f"match ({label})"] = _match(paper, found)
            row["stand-in data"] = _stand_in_text(stand_in.get(task))
            rows.append(row)
    return pd.DataFrame(rows)


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


def compare_hyperparameters(
    importance: pd.DataFrame, stand_in: dict[str, bool | None], tasks: list[str]
) -> pd.DataFrame:
    """Each hyperparameter claim per task against the pooled fANOVA table (group == 'all')."""
    rows = []
    for task in tasks:
        imp = importance[(importance["task"] == task) & (importance["group"] == "all")]
        for claim, text, tag, rule in HP_FINDINGS:
            if imp.empty:
                found, match = "no fANOVA (too few trials)", "not enough trials"
            else:
                holds = _check_hp(claim, imp)
                found, match = (
                    ("holds" if holds else "does not hold"),
                    ("agrees" if holds else "differs"),
                )
            rows.append(
                {
                    "task": task,
                    "claim": text,
                    "tag": tag,
                    "rule": rule,
                    "this study": found,
                    "stand-in data": _stand_in_text(stand_in.get(task)),
                    "match": match,
                }
            )
    return pd.DataFrame(rows)


def _stand_in_text(flag: bool | None) -> str:
    if flag is None:
        return "unknown"
    return "YES - not comparable" if flag else "no"
