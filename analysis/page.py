"""HTML building blocks of the report page (the page itself is `templates/report.html.j2`).

Figures are embedded as base64 PNG (and also written to `figures/`), so the page is one
self-contained file; tables use one number format per column (`column_format`); everything
user-derived is escaped. Each block is `Markup`: the template's autoescape leaves it as it is.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

import pandas as pd
from markupsafe import Markup, escape
from matplotlib.figure import Figure


def esc(text: object) -> Markup:
    return escape(str(text))


def html(parts: list[str]) -> Markup:
    """Blocks built here (escaped where they hold data) as one piece of the page."""
    return Markup("\n".join(parts))


def figure(fig: Figure, name: str, figures_dir: Path, alt: str, dpi: int = 100) -> Markup:
    """Save `fig` to figures/<name>.png and return an <img> with the PNG embedded."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    data = buf.getvalue()
    (figures_dir / f"{name}.png").write_bytes(data)
    encoded = base64.b64encode(data).decode("ascii")
    return Markup(
        f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{encoded}">'
        f'<figcaption class="muted">{esc(alt)} (figures/{esc(name)}.png)</figcaption></figure>'
    )


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _fmt(value: object) -> str:
    if _missing(value):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def is_p_value(name: str) -> bool:
    return name == "p" or name.startswith("p (")


def column_format(name: str, values: list[object]) -> list[str]:
    """One format for a whole column: p-values to 4 decimals ('< 0.0001' below), integers as
    integers, other numbers to a fixed number of decimals chosen from the column's median
    magnitude (4 significant digits there; scientific below 1e-3), text as it is."""
    nums = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    finite = [float(v) for v in nums if math.isfinite(float(v))]
    if not finite or len(nums) < sum(not _missing(v) for v in values):
        return [_fmt(v) for v in values]
    if is_p_value(name):
        return ["" if _missing(v) else "< 0.0001" if v < 1e-4 else f"{v:.4f}" for v in values]
    if all(v == int(v) for v in finite):
        return ["" if _missing(v) else f"{int(v)}" for v in values]
    mags = sorted(abs(v) for v in finite if v != 0) or [1.0]
    median = mags[len(mags) // 2]
    if median < 1e-3:
        return ["" if _missing(v) else f"{v:.2e}" for v in values]
    decimals = min(6, max(0, 3 - math.floor(math.log10(median))))
    return ["" if _missing(v) else f"{v:.{decimals}f}" for v in values]


CLASSED = {"worse", "better", "agrees", "differs"}


def table(
    df: pd.DataFrame,
    classed: tuple[str, ...] = (),
    index: bool = False,
    wide: tuple[str, ...] = (),
) -> Markup:
    """An HTML table; cells of the `classed` columns get a CSS class from their value, those
    of the `wide` columns room for a sentence."""
    if df is None or df.empty:
        return Markup('<p class="muted">(empty)</p>')
    frame = df.reset_index() if index else df
    head = "".join(f"<th>{esc(c)}</th>" for c in frame.columns)
    texts = {
        i: column_format(str(c), frame.iloc[:, i].tolist()) for i, c in enumerate(frame.columns)
    }
    body = []
    for r, row in enumerate(frame.itertuples(index=False)):
        cells = []
        for i, (col, value) in enumerate(zip(frame.columns, row, strict=True)):
            text = texts[i][r]
            cls = "" if isinstance(value, int | float) else ' class="txt"'
            if col in classed:
                if text in CLASSED:
                    cls = f' class="{text}"'
                elif text.startswith(("YES", "generated stand-in")):
                    cls = ' class="stand-in"'
                elif text.startswith("too few"):
                    cls = ' class="few"'
            if col in wide:
                cls = ' class="txt wide"'
            cells.append(f"<td{cls}>{esc(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return Markup(
        f'<table class="data"><thead><tr>{head}</tr></thead><tbody>'
        + "".join(body)
        + "</tbody></table>"
    )


def banner(text: str, loud: bool = False) -> Markup:
    return Markup(f'<div class="banner{" loud" if loud else ""}">{esc(text)}</div>')


def note(text: str) -> Markup:
    return Markup(f'<div class="note">{esc(text)}</div>')
