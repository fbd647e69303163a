"""HTML building blocks of the report page: one self-contained file, no template engine.

Figures are embedded as base64 PNG (and also written to `figures/`), tables are pandas HTML
with numbers formatted for reading; everything user-derived is escaped.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 0 auto;
       max-width: 1280px; padding: 0 24px 60px; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 4px;
margin-top: 2.2em; } h3 { margin-top: 1.6em; }
table.data { border-collapse: collapse; font-size: 13px; margin: 8px 0 16px; }
table.data th, table.data td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
table.data th { background: #f4f4f4; } table.data td.txt { text-align: left; }
.banner { background: #fff3cd; border: 2px solid #e0a800; padding: 10px 14px; margin: 12px 0;
          font-weight: 600; }
.banner.loud { background: #ffe0e0; border-color: #c00; color: #700; }
.note { background: #eef5ff; border-left: 4px solid #3182bd; padding: 8px 12px; margin: 10px 0; }
.muted { color: #777; font-size: 13px; } pre { background: #f7f7f7; padding: 10px;
overflow-x: auto; font-size: 12px; } img { max-width: 100%; }
td.worse, td.differs { background: #fde0d0; } td.better { background: #dbe9f6; }
td.agrees { background: #e3f4e3; } td.stand-in { background: #ffe0e0; font-weight: 600; }
nav a { margin-right: 14px; }
"""


def esc(text: object) -> str:
    return html.escape(str(text))


def figure(fig: Figure, name: str, figures_dir: Path, alt: str, dpi: int = 100) -> str:
    """Save `fig` to figures/<name>.png and return an <img> with the PNG embedded."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    data = buf.getvalue()
    (figures_dir / f"{name}.png").write_bytes(data)
    encoded = base64.b64encode(data).decode("ascii")
    return (
        f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{encoded}">'
        f'<figcaption class="muted">{esc(alt)} (figures/{esc(name)}.png)</figcaption></figure>'
    )


def _fmt(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1e5 or abs(value) < 1e-3:
            return f"{value:.2e}"
        return f"{value:.4g}"
    return str(value)


CLASSED = {"worse", "better", "agrees", "differs"}


def table(df: pd.DataFrame, classed: tuple[str, ...] = (), index: bool = False) -> str:
    """An HTML table; cells of the `classed` columns get a CSS class from their value."""
    if df is None or df.empty:
        return '<p class="muted">(empty)</p>'
    frame = df.reset_index() if index else df
    head = "".join(f"<th>{esc(c)}</th>" for c in frame.columns)
    body = []
    for row in frame.itertuples(index=False):
        cells = []
        for col, value in zip(frame.columns, row, strict=True):
            text = _fmt(value)
            cls = "" if isinstance(value, int | float) else ' class="txt"'
            if col in classed:
                if text in CLASSED:
                    cls = f' class="{text}"'
                elif text.startswith("YES"):
                    cls = ' class="stand-in"'
            cells.append(f"<td{cls}>{esc(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<table class="data"><thead><tr>{head}</tr></thead><tbody>'
        + "".join(body)
        + "</tbody></table>"
    )


def banner(text: str, loud: bool = False) -> str:
    return f'<div class="banner{" loud" if loud else ""}">{esc(text)}</div>'


def note(text: str) -> str:
    return f'<div class="note">{esc(text)}</div>'


def notes_list(items: list[str]) -> str:
    if not items:
        return ""
    return (
        '<div class="note"><b>Notices</b><ul>'
        + "".join(f"<li>{esc(i)}</li>" for i in items)
        + "</ul></div>"
    )


def document(title: str, body: list[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )
