"""`summary.md`: a short plain-text digest of the report page, for a terminal or a diff; and
the study's size against the paper's in one sentence (`size_line`), which the page shows too."""

from __future__ import annotations

import pandas as pd

from analysis import importance, paper, provenance
from analysis.model import Analysis
from analysis.stats import MIN_PER_GROUP, SUBSETS


def size_line(a: Analysis) -> str:
    """The study's size against the paper's (200 trials per pair), in one sentence."""
    per_pair = a.progress["complete"] if len(a.progress) else pd.Series(dtype=int)
    per_pair = per_pair[a.progress["state"] != "not in this study"] if len(per_pair) else per_pair
    want = paper.paper_n(SUBSETS[0])
    if per_pair.empty:
        return f"No trials yet; the paper ran {want} per (variant, dataset) pair."
    lo, med, hi = int(per_pair.min()), int(per_pair.median()), int(per_pair.max())
    size = f"{med}" if lo == hi else f"{lo}-{hi} (median {med})"
    text = (
        f"Study size: {size} complete trial(s) per (task, variant) pair; the paper ran {want} "
        f"per pair [{paper.facts()['protocol']['trials_per_pair']['tag']}]."
    )
    if med < want:
        text += (
            f" With {med} per pair the tests can detect only large differences"
            + (
                " (see the power numbers beside the paper's verdicts)"
                if any(c.comparable for c in a.comparable.values())
                else ""
            )
            + (
                f" and below {MIN_PER_GROUP} per group there is no test at all."
                if lo < MIN_PER_GROUP
                else "."
            )
        )
    return text


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
        *(
            f"- {res_task}: {a.task_data[res_task].label}; {a.comparable[res_task].text}"
            for res_task in res.tasks
        ),
        "- protocol: "
        + (
            "the paper's"
            if not a.protocol
            else "differs from the paper's: " + "; ".join(a.protocol)
        ),
        f"- trials: {t.complete} complete, {t.failed} failed, {t.trials} recorded; "
        f"compute {provenance.human_seconds(t.compute_s)} (sum of wall_s)",
        f"- tasks: {', '.join(res.tasks) or 'none'}; variants: "
        f"{', '.join(res.variants) or 'none'}; baseline {res.baseline}",
    ]
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
    imp = a.fanova.importance
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
            cause = col.replace("match", "cause")
            if cause in df:
                what = "variant" if "variant" in df else "rule"
                why = [f"{r.task}/{r[what]}: {r[cause]}" for _, r in df.iterrows() if r[cause]]
                if why:
                    lines.append("  - where they differ: " + ", ".join(why))
    for r in a.paper_reference.itertuples(index=False):
        ours = "no trial" if pd.isna(r[5]) else f"{r[5]:.4g} ({r[6]})"
        flag = " (stand-in data: not comparable)" if a.stand_in.get(r.task) else ""
        lines.append(f"- {r.task}: {r.source} [{r.tag}] {r[3]:.4g}; our best {ours}{flag}")
    return "\n".join(lines) + "\n"
