"""Figures of the report: `DataFrame -> Figure`, drawn with matplotlib's Agg canvas (no pyplot).

- `variant_boxes`: the paper's Fig. 3 for one task (all trials on top, top 10 % below, grey bars
  for the mean parameter count of the top 10 %, significant differences coloured);
- `importance_chart`: fANOVA variance fractions (Figs. 5-6) pooled and per variant;
- `marginal_curves`, `pair_surface`: fANOVA marginals (Fig. 4 and the pairwise heat maps);
- `time_vs_hidden`: training time against hidden size (the paper's green curves).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from analysis.importance import HYPERPARAMETERS
from analysis.stats import ALL, SUBSETS, TOP, per_epoch, timing_sample
from analysis.stats import fence as stats_fence

COLOURS = {
    "worse": "#e6550d",
    "better": "#3182bd",
    "n.s.": "#d9d9d9",
    "baseline": "#ffffff",
    "other": "#fff2c2",  # too few trials: pale yellow, never mistaken for the white baseline
}
PARAMS_GREY = "#9e9e9e"


def _verdict_colour(variant: str, baseline: str, verdict: str | None) -> str:
    if variant == baseline:
        return COLOURS["baseline"]
    return COLOURS.get(verdict or "", COLOURS["other"] if verdict != "n.s." else COLOURS["n.s."])


def _clip_outliers(ax, data: list[np.ndarray], pos: np.ndarray, fence: float | None = None) -> int:
    """Keep a few diverging trials (NLL in the thousands) from flattening every box: cut the axis
    at `fence` (default: Q3 + 3 IQR of the pooled values, `stats.fence`), as the paper's Fig. 3
    cuts its axes, and write how many trials of each variant lie above it. Returns how many
    were cut."""
    pooled = np.concatenate([d[np.isfinite(d)] for d in data if len(d)] or [np.array([])])
    if len(pooled) < 4:
        return 0
    if fence is None or not np.isfinite(fence):
        fence = stats_fence(pooled)
    if not np.isfinite(fence) or pooled.max() <= fence:
        return 0
    low = pooled.min()
    ax.set_ylim(low - 0.05 * (fence - low), fence)
    total = 0
    for i, d in enumerate(data):
        above = int((d > fence).sum())
        if above:
            total += above
            ax.annotate(
                f"\u2191{above}",
                (pos[i] - 0.12, 1.0),
                xycoords=("data", "axes fraction"),
                ha="center",
                va="top",
                fontsize=8,
                color="#b00",
            )
    return total


def variant_boxes(
    long: pd.DataFrame,
    significance: pd.DataFrame,
    variants: list[str],
    baseline: str,
    metric: str,
    title: str,
    fence: float = np.inf,
) -> Figure:
    """Two rows (all trials, top 10 %) of test-metric boxes per variant for one task; the axis
    is cut at the task's divergence `fence` (see `_clip_outliers`)."""
    fig = Figure(figsize=(max(7.0, 0.85 * len(variants) + 2), 7.2), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    top = long[long["subset"] == TOP]
    params = top.groupby("variant", observed=True)["n_params"].mean()
    pos = np.arange(len(variants))
    for ax, subset in zip(axes, SUBSETS, strict=True):
        part = long[long["subset"] == subset]
        sig = significance[significance["subset"] == subset].set_index("variant")["verdict"]
        data = [part.loc[part["variant"] == v, "test_metric"].to_numpy(float) for v in variants]
        present = [i for i, d in enumerate(data) if len(d)]
        if present:
            bp = ax.boxplot(
                [data[i] for i in present],
                positions=pos[present] - 0.12,
                widths=0.5,
                patch_artist=True,
                showmeans=True,
                showfliers=True,
                medianprops={"color": "black"},
                meanprops={
                    "marker": "D",
                    "markerfacecolor": "black",
                    "markeredgecolor": "black",
                    "markersize": 3,
                },
                flierprops={"markersize": 2, "alpha": 0.5},
            )
            for patch, i in zip(bp["boxes"], present, strict=True):
                patch.set_facecolor(_verdict_colour(variants[i], baseline, sig.get(variants[i])))
                patch.set_edgecolor("black")
                patch.set_linewidth(1.8 if variants[i] == baseline else 1.0)
        for i, d in enumerate(data):
            if not len(d):
                ax.text(
                    pos[i],
                    0.5,
                    "no trials",
                    transform=ax.get_xaxis_transform(),
                    ha="center",
                    va="center",
                    rotation=90,
                    color="#b00",
                    fontsize=8,
                )
        clipped = _clip_outliers(ax, data, pos, fence)
        ax.set_ylabel(f"test {metric}")
        ax.set_title(
            f"{subset}"
            + (" (ranked by validation metric)" if subset == TOP else "")
            + (f"; {clipped} far outlier(s) above the axis, counted at the top" if clipped else ""),
            fontsize=10,
            loc="left",
        )
        ax.grid(axis="y", alpha=0.3)
        twin = ax.twinx()
        heights = [params.get(v, np.nan) for v in variants]
        twin.bar(pos + 0.32, np.nan_to_num(heights), width=0.16, color=PARAMS_GREY, alpha=0.45)
        twin.set_ylabel("mean parameters, top 10%", color="#777", fontsize=8)
        twin.tick_params(axis="y", colors="#777", labelsize=7)
        ax.set_zorder(twin.get_zorder() + 1)
        ax.patch.set_visible(False)
    counts = long.groupby(["subset", "variant"], observed=True).size()
    axes[-1].set_xticks(
        pos,
        [f"{v}\nn={counts.get((ALL, v), 0)}/{counts.get((TOP, v), 0)}" for v in variants],
        fontsize=9,
    )
    axes[-1].set_xlim(-0.7, len(variants) - 0.3)
    handles = [
        Patch(facecolor=COLOURS[k], edgecolor="black", label=lab)
        for k, lab in (
            ("baseline", f"{baseline} (baseline)"),
            ("worse", "significantly worse"),
            ("better", "significantly better"),
            ("n.s.", "not significant"),
            ("other", "too few trials"),
        )
    ] + [Patch(facecolor=PARAMS_GREY, alpha=0.6, label="mean parameters (top 10%)")]
    # a narrow figure (few variants) stacks the legend in rows instead of running off the sides
    ncol = 6 if fig.get_figwidth() >= 10 else 3
    fig.legend(handles=handles, loc="outside lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    return fig


def importance_chart(importance: pd.DataFrame, title: str) -> Figure:
    """Left: pooled fractions with +-1 std across trees; right: groups x effects heat map."""
    pooled = importance[importance["group"] == "all"]
    fig = Figure(figsize=(13, 4.8), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[1, 1.5])
    if len(pooled):
        y = np.arange(len(pooled))
        kinds = pooled["kind"].map(
            {"main": "#3182bd", "pairwise": "#9ecae1", "higher order": "#bdbdbd"}
        )
        left.barh(y, pooled["fraction"], xerr=pooled["std"], color=kinds, capsize=2)
        left.set_yticks(y, pooled["effect"], fontsize=8)
        left.invert_yaxis()
        left.set_xlim(0, 1)
        left.set_xlabel("fraction of variance (mean over trees)")
        for yi, f, sd in zip(y, pooled["fraction"], pooled["std"], strict=True):
            left.text(min(f + sd + 0.02, 0.9), yi, f"{100 * f:.1f}%", va="center", fontsize=7)
        left.set_title("all variants pooled", fontsize=10, loc="left")
    else:
        left.text(0.5, 0.5, "no pooled fANOVA\n(too few trials)", ha="center", va="center")
        left.set_axis_off()
    groups = list(dict.fromkeys(importance["group"]))
    effects = list(dict.fromkeys(importance["effect"]))
    if groups:
        grid = importance.pivot(index="group", columns="effect", values="fraction").reindex(
            index=groups, columns=effects
        )
        im = right.imshow(grid.to_numpy(float), aspect="auto", cmap="Blues", vmin=0, vmax=1)
        right.set_xticks(
            range(len(effects)), [_short(e) for e in effects], rotation=40, ha="right", fontsize=8
        )
        right.set_yticks(range(len(groups)), groups, fontsize=8)
        for (i, j), v in np.ndenumerate(grid.to_numpy(float)):
            if np.isfinite(v):
                right.text(
                    j,
                    i,
                    f"{100 * v:.0f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if v > 0.55 else "black",
                )
        fig.colorbar(im, ax=right, label="fraction of variance")
        right.set_title("per group (%, rows: pooled then variants)", fontsize=10, loc="left")
    fig.suptitle(title, fontsize=11)
    return fig


def _short(effect: str) -> str:
    return (
        effect.replace("log10(learning rate)", "lr")
        .replace("log10(hidden size)", "hidden")
        .replace("log10(1 - momentum)", "1-mom")
        .replace("input noise std", "noise")
    )


def marginal_curves(curves: pd.DataFrame, metric: str, title: str) -> Figure:
    """One panel per hyperparameter: the marginal test metric, mean and the band `lo`-`hi`
    (mean -+ std across trees, clipped to the metric's domain by `importance.analyse`)."""
    fig = Figure(figsize=(13, 3.4), layout="constrained")
    axes = fig.subplots(1, len(HYPERPARAMETERS), sharey=True)
    for ax, (key, (_, label, _)) in zip(axes, HYPERPARAMETERS.items(), strict=True):
        c = curves[curves["hp"] == key]
        ax.plot(c["x"], c["mean"], color="#3182bd")
        ax.fill_between(
            c["x"],
            c["lo"],
            c["hi"],
            color="#3182bd",
            alpha=0.25,
            linewidth=0,
        )
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"marginal test {metric}")
    fig.suptitle(title, fontsize=11)
    return fig


def pair_surface(
    g_lr: np.ndarray, g_hidden: np.ndarray, z: np.ndarray, metric: str, title: str
) -> Figure:
    """Heat map of the learning-rate x hidden-size marginal (mean over trees)."""
    fig = Figure(figsize=(6, 4.6), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(
        z.T,
        origin="lower",
        aspect="auto",
        cmap="viridis_r",
        extent=(g_lr[0], g_lr[-1], g_hidden[0], g_hidden[-1]),
    )
    fig.colorbar(im, ax=ax, label=f"marginal test {metric}")
    ax.set_xlabel(HYPERPARAMETERS["learning_rate"][1])
    ax.set_ylabel(HYPERPARAMETERS["hidden_size"][1])
    ax.set_title(title, fontsize=10)
    return fig


def _log_ticks(axis) -> None:
    """Labels at 1, 2, 3 and 5 times each power of ten, written plainly (20, 50, 0.3)."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_locator(LogLocator(base=10, subs=tuple(range(1, 10))))
    axis.set_minor_formatter(NullFormatter())


def time_vs_hidden(done: pd.DataFrame, variants: list[str], title: str) -> tuple[Figure, float]:
    """Scatter of training time per epoch against hidden size (log-log) with a least-squares
    power-law trend; the legend sits to the right of the axes, never over the points.

    Returns the figure and the fitted exponent b of time per epoch ~ hidden^b (NaN if it
    cannot be fit).
    """
    fig = Figure(figsize=(8.5, 4.4), layout="constrained")
    ax = fig.subplots()
    ok = per_epoch(done)
    # several code versions: coloured by version, whose timing (packing, kernels) differs more
    # than the variants' do
    by = "code_version" if ok["code_version"].nunique() > 1 else "variant"
    versions = ok.sort_values("started_at")["code_version"] if by == "code_version" else None
    groups = list(dict.fromkeys(versions)) if versions is not None else variants
    for i, g in enumerate(groups):
        part = ok[ok[by] == g]
        if len(part):
            ax.scatter(
                part["hp_hidden_size"],
                part["s_per_epoch"],
                s=10,
                alpha=0.6,
                color=f"C{i % 10}",
                label=f"code {g}" if by == "code_version" else g,
            )
    exponent = np.nan
    fit, version = timing_sample(ok)
    if fit["hp_hidden_size"].nunique() >= 2:
        lx, ly = np.log10(fit["hp_hidden_size"]), np.log10(fit["s_per_epoch"])
        exponent, intercept = np.polyfit(lx, ly, 1)
        xs = np.linspace(lx.min(), lx.max(), 50)
        ax.plot(
            10**xs,
            10 ** (intercept + exponent * xs),
            color="black",
            linewidth=1.5,
            label=f"trend{f' (code {version})' if version else ''}: ~ hidden^{exponent:.2f}",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    _log_ticks(ax.xaxis)
    _log_ticks(ax.yaxis)
    ax.set_xlabel("hidden size (blocks)")
    ax.set_ylabel("training time per epoch (s)")
    ax.grid(alpha=0.3, which="major")
    if len(ok):
        fig.legend(loc="outside right upper", fontsize=8, frameon=False)
    ax.set_title(title, fontsize=10)
    return fig, float(exponent)


__all__ = [
    "ALL",
    "importance_chart",
    "marginal_curves",
    "pair_surface",
    "time_vs_hidden",
    "variant_boxes",
]
