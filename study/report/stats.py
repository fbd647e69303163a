"""Which variants differ from the baseline: the paper's Fig. 3 statistics (reference section 5).

Pure functions on tidy tables. Rules, stated once here and repeated on the page:
- only `status == 'complete'` trials with finite validation and test metrics count;
- top 10 % of a (task, variant) pair: the ceil(10 % of n) trials with the lowest validation
  metric (at least 1; ties broken by trial number), as in the paper's bottom row;
- Welch's t-test (scipy.stats.ttest_ind, equal_var=False) of each variant against the baseline,
  per task and subset; Holm's step-down correction over the variants of one (task, subset);
- a verdict needs >= 2 trials in both groups; all metrics are minimised, so a significantly
  higher mean is 'worse';
- effect sizes: difference of means (variant - baseline) and Hedges' g (pooled SD, small-sample
  corrected), each with a percentile bootstrap 95 % CI from a seeded np.random.Generator.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats as sps

ALL, TOP = "all trials", "top 10%"
SUBSETS = (ALL, TOP)
MIN_PER_GROUP = 2
TOO_FEW = "too few trials"


def complete(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials that finished with finite validation and test metrics."""
    ok = (
        (trials["status"] == "complete")
        & np.isfinite(trials["val_metric"])
        & np.isfinite(trials["test_metric"])
    )
    return trials[ok.fillna(False).astype(bool)]


def top_count(n: int, fraction: float = 0.1) -> int:
    """How many trials form the top `fraction` of n: ceil(fraction * n), at least 1 (0 if n = 0)."""
    if n <= 0:
        return 0
    return max(1, math.ceil(fraction * n - 1e-9))


def top_fraction(
    trials: pd.DataFrame, fraction: float = 0.1, by: str = "val_metric"
) -> pd.DataFrame:
    """Per (task, variant): the `top_count` trials with the lowest `by` (ties: lower trial first)."""
    parts = []
    for _, group in trials.groupby(["task", "variant"], sort=False, observed=True):
        ranked = group.sort_values([by, "trial"], kind="mergesort")
        parts.append(ranked.head(top_count(len(group), fraction)))
    return pd.concat(parts) if parts else trials.iloc[:0]


def with_subsets(trials: pd.DataFrame, fraction: float = 0.1) -> pd.DataFrame:
    """Long table: complete trials once with subset ALL and the top ones again with subset TOP."""
    done = complete(trials)
    return pd.concat(
        [done.assign(subset=ALL), top_fraction(done, fraction).assign(subset=TOP)],
        ignore_index=True,
    )


def holm(pvalues: np.ndarray | list[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values; NaN entries are ignored (and stay NaN)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="mergesort")]
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out


def welch(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Welch's t statistic, its Welch-Satterthwaite degrees of freedom and the two-sided p."""
    res = sps.ttest_ind(x, y, equal_var=False)
    vx, vy = np.var(x, ddof=1) / len(x), np.var(y, ddof=1) / len(y)
    dof = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1)) if vx + vy > 0 else np.nan
    return float(res.statistic), float(dof), float(res.pvalue)


def hedges_g(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """(mean x - mean y) / pooled SD, times the small-sample correction 1 - 3 / (4 dof - 1)."""
    nx, ny = x.shape[axis], y.shape[axis]
    dof = nx + ny - 2
    pooled = np.sqrt(
        ((nx - 1) * np.var(x, ddof=1, axis=axis) + (ny - 1) * np.var(y, ddof=1, axis=axis)) / dof
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        d = (np.mean(x, axis=axis) - np.mean(y, axis=axis)) / pooled
    return d * (1.0 - 3.0 / (4.0 * dof - 1.0))


def _mean_diff(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def bootstrap_ci(
    statistic, x: np.ndarray, y: np.ndarray, rng: np.random.Generator, n_resamples: int = 2000
) -> tuple[float, float]:
    """Percentile bootstrap 95 % CI of statistic(x, y), resampling each group independently."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate (constant) samples give NaN, stated as such
        res = sps.bootstrap(
            (x, y),
            statistic,
            n_resamples=n_resamples,
            vectorized=True,
            paired=False,
            method="percentile",
            rng=rng,
        )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def verdict(n: int, n_base: int, diff: float, p_adj: float, alpha: float) -> str:
    if n < MIN_PER_GROUP or n_base < MIN_PER_GROUP:
        return TOO_FEW
    if not np.isfinite(p_adj):
        return "n.s. (no variance)"
    if p_adj < alpha:
        return "worse" if diff > 0 else "better"
    return "n.s."


def compare_to_baseline(
    long: pd.DataFrame,
    variants: list[str],
    baseline: str,
    alpha: float = 0.05,
    seed: int = 0,
    n_resamples: int = 2000,
) -> pd.DataFrame:
    """One row per (task, subset, variant != baseline) from a `with_subsets` table.

    Columns: task, subset, variant, n, n_base, mean, mean_base, diff, diff_lo, diff_hi, g, g_lo,
    g_hi, t, dof, p, p_holm, verdict. A missing baseline gives 'no baseline' rows.
    """
    rows = []
    tasks = list(dict.fromkeys(long["task"]))
    for ti, task in enumerate(tasks):
        for si, subset in enumerate(SUBSETS):
            part = long[(long["task"] == task) & (long["subset"] == subset)]
            base = part.loc[part["variant"] == baseline, "test_metric"].to_numpy(float)
            block = []
            for vi, variant in enumerate(variants):
                if variant == baseline:
                    continue
                x = part.loc[part["variant"] == variant, "test_metric"].to_numpy(float)
                row = {
                    "task": task,
                    "subset": subset,
                    "variant": variant,
                    "n": len(x),
                    "n_base": len(base),
                    "mean": _nanmean(x),
                    "mean_base": _nanmean(base),
                }
                row["diff"] = row["mean"] - row["mean_base"]
                row.update(
                    diff_lo=np.nan,
                    diff_hi=np.nan,
                    g=np.nan,
                    g_lo=np.nan,
                    g_hi=np.nan,
                    t=np.nan,
                    dof=np.nan,
                    p=np.nan,
                )
                if len(x) >= MIN_PER_GROUP and len(base) >= MIN_PER_GROUP:
                    row["t"], row["dof"], row["p"] = welch(x, base)
                    row["g"] = float(hedges_g(x, base))
                    rng = np.random.default_rng(np.random.SeedSequence([seed, ti, si, vi]))
                    row["diff_lo"], row["diff_hi"] = bootstrap_ci(
                        _mean_diff, x, base, rng, n_resamples
                    )
                    row["g_lo"], row["g_hi"] = bootstrap_ci(hedges_g, x, base, rng, n_resamples)
                block.append(row)
            if not block:
                continue
            adjusted = holm([r["p"] for r in block])
            for r, p_adj in zip(block, adjusted, strict=True):
                r["p_holm"] = p_adj
                # `verdict` is the paper's test (Welch at alpha, uncorrected); `verdict_holm`
                # controls the family-wise error over this task's comparisons.
                for key, p_used in (("verdict", r["p"]), ("verdict_holm", p_adj)):
                    r[key] = (
                        "no baseline"
                        if len(base) == 0 and r["n"] > 0
                        else verdict(r["n"], r["n_base"], r["diff"], p_used, alpha)
                    )
            rows.extend(block)
    columns = [
        "task",
        "subset",
        "variant",
        "n",
        "n_base",
        "mean",
        "mean_base",
        "diff",
        "diff_lo",
        "diff_hi",
        "g",
        "g_lo",
        "g_hi",
        "t",
        "dof",
        "p",
        "p_holm",
        "verdict",
        "verdict_holm",
    ]
    return pd.DataFrame(rows, columns=columns)


def _nanmean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else np.nan


def variant_summary(long: pd.DataFrame) -> pd.DataFrame:
    """Per (task, subset, variant): n, mean, std, median, best test metric, mean n_params."""
    g = long.groupby(["task", "subset", "variant"], sort=False, observed=True)
    out = g.agg(
        n=("test_metric", "size"),
        mean=("test_metric", "mean"),
        std=("test_metric", "std"),
        median=("test_metric", "median"),
        best=("test_metric", "min"),
        mean_params=("n_params", "mean"),
    )
    return out.reset_index()
