"""Learning curves per variant: the validation metric per epoch, from `epochs.parquet/`.

Per (task, variant, epoch): the median and the quartiles of `val/<metric>` over the complete
trials that reached that epoch (early stopping ends trials at different epochs, so later epochs
summarise fewer trials; `n` says how many). Drawn as one small panel per variant with the
baseline's median dashed in every panel, so the figure reads the same with 2 or 10 variants.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

COLUMNS = ["task", "variant", "epoch", "n", "median", "q25", "q75"]


def curves(epochs: pd.DataFrame, done: pd.DataFrame, metrics: dict[str, str]) -> pd.DataFrame:
    """Tidy (task, variant, epoch, n, median, q25, q75) of the validation metric."""
    if epochs.empty or done.empty:
        return pd.DataFrame(columns=COLUMNS)
    keep = done[["task", "variant", "trial"]].drop_duplicates()
    names = epochs["task"].map(lambda t: f"val/{metrics.get(t, '')}")
    val = epochs[epochs["name"] == names].merge(keep, on=["task", "variant", "trial"])
    val = val[np.isfinite(val["value"])]
    if val.empty:
        return pd.DataFrame(columns=COLUMNS)
    g = val.groupby(["task", "variant", "epoch"], sort=True, observed=True)["value"]
    out = pd.DataFrame(
        {
            "n": g.size(),
            "median": g.median(),
            "q25": g.quantile(0.25),
            "q75": g.quantile(0.75),
        }
    ).reset_index()
    return out[COLUMNS]


def figure(
    part: pd.DataFrame, variants: list[str], baseline: str, metric: str, title: str, top: float
) -> Figure:
    """Small multiples (one panel per variant) of one task's curves; the y axis is cut at `top`
    (the task's divergence fence) so that one diverged trial cannot flatten every panel."""
    present = [v for v in variants if v in set(part["variant"])]
    ncol = min(5, max(1, len(present)))
    nrow = max(1, math.ceil(len(present) / ncol))
    width = max(7.0, 2.6 * ncol + 1.0)
    fig = Figure(figsize=(width, 2.2 * nrow + 1.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrow, ncol, sharex=True, sharey=True, squeeze=False))
    base = part[part["variant"] == baseline]
    low = float(np.nanmin(part["q25"])) if len(part) else 0.0
    high = float(np.nanmax(part["q75"])) if len(part) else 1.0
    cut = np.isfinite(top) and high > top
    for ax, variant in zip(axes.flat, present, strict=False):
        c = part[part["variant"] == variant]
        ax.fill_between(c["epoch"], c["q25"], c["q75"], color="#3182bd", alpha=0.25, lw=0)
        ax.plot(c["epoch"], c["median"], color="#3182bd", lw=1.5, label=f"{variant} median")
        if variant != baseline and len(base):
            ax.plot(base["epoch"], base["median"], color="#555", lw=1, ls="--")
        ax.set_title(f"{variant} (n = {int(c['n'].max())})", fontsize=9, loc="left")
        if cut and float(np.nanmin(c["median"])) > top:
            ax.text(
                0.5,
                0.5,
                f"above the axis\n(median >= {float(np.nanmin(c['median'])):.4g})",
                transform=ax.transAxes,
                ha="center",
                va="center",
                fontsize=8,
                color="#b00",
            )
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(present) :]:
        ax.set_axis_off()
    if cut:
        axes.flat[0].set_ylim(low - 0.05 * (top - low), top)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"val {metric}", fontsize=8)
    for ax in axes[-1, :]:
        ax.set_xlabel("epoch", fontsize=8)
    legend = (
        f"line: median, band: quartiles over trials still training; dashed: {baseline} median"
        + ("; axis cut at the divergence fence" if cut else "")
    )
    chars = int(width * 12)  # about 12 characters per inch at 10 pt
    lines = [w for line in f"{title}\n{legend}".split("\n") for w in textwrap.wrap(line, chars)]
    fig.suptitle("\n".join(lines), fontsize=10)
    return fig
