"""The page's opening statement (comparable with the paper or not, and how the protocol differs)
and the blocks of its provenance section: code versions, plug-ins, trial counts per pair."""

from __future__ import annotations

from markupsafe import Markup

from analysis import provenance
from analysis.model import Analysis
from analysis.page import esc, note, table
from analysis.render_paper import tag_legend


def against_paper(a: Analysis) -> list[str]:
    """The page's first statement: which tasks may be held against the paper's findings, what
    each ran on, and how the study's protocol differs from the paper's (for every study)."""
    same = [t for t in a.res.tasks if a.comparable[t].comparable]
    if not a.res.tasks:
        head = "No task yet, so nothing to compare with the paper."
    elif not same:
        head = (
            "Not comparable with the paper: no task of this study is one of the paper's on "
            "its real corpus under its protocol, so the page holds none of the paper's "
            "findings against it."
        )
    elif len(same) == len(a.res.tasks):
        head = "Comparable with the paper: " + ", ".join(same) + "."
    else:
        head = (
            "Comparable with the paper: "
            + ", ".join(same)
            + "; not comparable: "
            + ", ".join(t for t in a.res.tasks if t not in same)
            + "."
        )
    items = [f"<li><b>{esc(t)}</b>: {esc(a.task_data[t].label)}</li>" for t in a.res.tasks]
    protocol = (
        "the paper's (its search space, batch size 1, at most 150 epochs, early stopping after 15)"
        if not a.protocol
        else "differs from the paper's: " + "; ".join(a.protocol)
    )
    out = [
        f'<div class="{"verdict" if same else "verdict no"}"><p><b>{esc(head)}</b></p>',
        f"<p>Protocol: {esc(protocol)}.</p>",
        "<p>Data per task:</p><ul>" + "".join(items) + "</ul>",
    ]
    if same:
        out.append(
            f'<p class="muted">The paper\'s findings carry certainty tags: {esc(tag_legend())}.</p>'
        )
    return out + ["</div>"]


def versions(a: Analysis) -> Markup:
    """Code versions with their trial counts, and whether the numbers moved between them."""
    found = provenance.code_versions(a.res.trials, a.done)
    rerun = provenance.reruns(a.res.reruns)
    rerun_html = Markup(f"<p>{esc(rerun)}</p>") if rerun else Markup("")
    if len(found) <= 1:
        return Markup(f"<p>Code version: {esc(counts(a.totals.code_versions))}.</p>") + rerun_html
    check = provenance.version_effect(a.done, a.settings.seed)
    shift = provenance.version_residuals(a.done, a.settings.seed).groupby("code_version")
    found["median rank residual (+: higher metric than predicted)"] = found["code version"].map(
        shift["residual"].median()
    )
    return Markup(
        "<p>Trials come from {} code versions (the commit each trial ran on). {}</p>{}{}"
    ).format(len(found), check, table(found), rerun_html)


def plugins(a: Analysis) -> Markup | None:
    rows = provenance.plugins(a.res.plugins)
    if rows.empty:
        return None
    return table(rows)


def progress_block(a: Analysis) -> Markup:
    """Trial counts per pair: one line where every pair is in the same state (the counts are
    in the Overview's grid), else a table of the pairs that are not done."""
    prog = a.progress[a.progress["state"] != "not in this study"]
    if prog.empty:
        return note("No pairs yet.")
    states = prog["state"].unique()
    if len(states) == 1:
        return note(f"Every pair: {states[0]} (counts in the Overview's grid).")
    open_ = prog[prog["state"] != "done"]
    done = len(prog) - len(open_)
    return Markup("{}{}").format(
        table(open_), note(f"The other {done} pair(s): done.") if done else ""
    )


def counts(by_name: dict[str, int]) -> str:
    return ", ".join(f"{k} ({v} trials)" for k, v in by_name.items()) or "none"
