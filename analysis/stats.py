"""Which variants differ from the baseline: the paper's Fig. 3 statistics, made robust.

Pure functions on tidy tables. Rules, stated once here and repeated on the page:
- only `status == 'complete'` trials with finite validation and test metrics count;
- top 10 % of a (task, variant) pair: the ceil(10 % of n) trials with the lowest validation
  metric (at least 1; ties broken by trial number), as in the paper's bottom row;
- the verdict is a two-sided Mann-Whitney U test (scipy.stats.mannwhitneyu; exact p for small
  samples without ties) of each variant against the baseline, per task and subset. A rank test,
  because a diverged-but-finite trial (an NLL of 10^4 among values near 8.5) inflates a variance
  until Welch's test calls a catastrophically worse variant "n.s."; under a rank test such a trial
  is simply the worst one. Welch's t-test (the paper's, scipy.stats.ttest_ind with
  equal_var=False) is reported beside it, and Holm's step-down correction over the variants of
  one (task, subset);
- a verdict needs >= MIN_PER_GROUP = 4 trials in both groups: at 4 against 4 the exact two-sided
  Mann-Whitney p can reach 2/70 = 0.029 < 0.05, at 3 against 3 its smallest value is 0.10, so
  below 4 no outcome could be significant. All metrics are minimised: a variant whose values
  rank higher is 'worse';
- effect sizes: P(variant > baseline) (the U statistic / (n n_base), ties counted half; 0.5 is
  no effect), difference of means (variant - baseline) and Hedges' g (pooled SD, small-sample
  corrected), the latter two with a percentile bootstrap 95 % CI from a seeded Generator;
- diverged trials: complete trials above the task's far-out fence Q3 + 3 IQR (Tukey) of all its
  complete trials, counted per variant. They stay in every test; the fANOVA caps them at the
  fence (analysis.importance).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats as sps

ALL, TOP = "all trials", "top 10%"
SUBSETS = (ALL, TOP)
MIN_PER_GROUP = 4
TOO_FEW = "too few trials"
FENCE_IQR = 3.0  # Tukey's far-out fence: Q3 + 3 IQR


def too_few_text(n: int, needed: int) -> str:
    """The one message every small-sample cell and note uses."""
    return f"{TOO_FEW} (n = {n}, needs >= {needed})"


def fence(values: np.ndarray, k: float | None = FENCE_IQR) -> float:
    """Q3 + k IQR of the finite values (inf when k is None, there are < 4 values or IQR = 0)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if k is None or len(v) < 4:
        return np.inf
    q1, q3 = np.percentile(v, [25, 75])
    return float(q3 + k * (q3 - q1)) if q3 > q1 else np.inf


def task_fences(done: pd.DataFrame, k: float | None = FENCE_IQR) -> dict[str, float]:
    """Per task: the divergence fence over all its complete trials (all variants)."""
    return {
        str(task): fence(part["test_metric"].to_numpy(float), k)
        for task, part in done.groupby("task", sort=False, observed=True)
    }


def oriented(trials: pd.DataFrame, maximize: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """`trials` with `val_metric` and `test_metric` negated for the tasks in `maximize` (their
    metric is better higher, e.g. counting's largest n), so that every statistic (the top
    fraction, the rank tests' sign, fANOVA) reads lower as better. Applied twice, the values come
    back."""
    if not maximize or trials.empty:
        return trials
    flip = trials["task"].isin(list(maximize)).to_numpy()
    out = trials.copy()
    for col in ("val_metric", "test_metric"):
        out[col] = np.where(flip, -out[col].to_numpy(float), out[col].to_numpy(float))
    return out


def shown_as_measured(table: pd.DataFrame, maximize: tuple[str, ...]) -> pd.DataFrame:
    """`compare_to_baseline`'s rows with the means, medians and differences of the tasks in
    `maximize` turned back from the negated values the tests ran on (verdicts unchanged)."""
    if not maximize or table.empty:
        return table
    out = table.copy()
    flip = out["task"].isin(list(maximize))
    for col in ("mean", "mean_base", "median", "median_base", "diff"):
        out.loc[flip, col] = -out.loc[flip, col]
    return out


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
    return float(res.statistic), float(res.df), float(res.pvalue)


def rank_test(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Two-sided Mann-Whitney U test of x against y: (P(x > y) + P(x = y) / 2, p)."""
    res = sps.mannwhitneyu(x, y, alternative="two-sided", method="auto")
    return float(res.statistic) / (len(x) * len(y)), float(res.pvalue)


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


def verdict(n: int, n_base: int, direction: float, p: float, alpha: float) -> str:
    """'worse' / 'better' / 'n.s.' from a p and the sign of the effect (> 0: variant higher)."""
    if n < MIN_PER_GROUP or n_base < MIN_PER_GROUP:
        return TOO_FEW
    if not np.isfinite(p):
        return "n.s. (no variance)"
    if p < alpha:
        return "worse" if direction > 0 else "better"
    return "n.s."


COLUMNS = [
    "task",
    "subset",
    "variant",
    "n",
    "n_base",
    "n_needed",
    "mean",
    "mean_base",
    "median",
    "median_base",
    "diverged",
    "diverged_base",
    "prob_worse",
    "p",
    "p_holm",
    "verdict",
    "verdict_holm",
    "diff",
    "diff_lo",
    "diff_hi",
    "g",
    "g_lo",
    "g_hi",
    "t",
    "dof",
    "p_welch",
    "verdict_welch",
]


def _test_row(
    x: np.ndarray, base: np.ndarray, rng: np.random.Generator, n_resamples: int
) -> dict[str, float]:
    out = dict.fromkeys(("prob_worse", "p", "diff_lo", "diff_hi", "g", "g_lo", "g_hi"), np.nan)
    out.update(t=np.nan, dof=np.nan, p_welch=np.nan)
    if len(x) < MIN_PER_GROUP or len(base) < MIN_PER_GROUP:
        return out
    out["prob_worse"], out["p"] = rank_test(x, base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant samples: Welch's p is NaN, stated as such
        out["t"], out["dof"], out["p_welch"] = welch(x, base)
    out["g"] = float(hedges_g(x, base))
    out["diff_lo"], out["diff_hi"] = bootstrap_ci(_mean_diff, x, base, rng, n_resamples)
    out["g_lo"], out["g_hi"] = bootstrap_ci(hedges_g, x, base, rng, n_resamples)
    return out


def compare_to_baseline(
    long: pd.DataFrame,
    variants: list[str],
    baseline: str,
    alpha: float = 0.05,
    seed: int = 0,
    n_resamples: int = 2000,
    fences: dict[str, float] | None = None,
) -> pd.DataFrame:
    """One row per (task, subset, variant != baseline) from a `with_subsets` table (COLUMNS).

    `p`, `p_holm`, `verdict`, `verdict_holm` are the rank test's; `p_welch`, `verdict_welch` the
    paper's Welch test. `diverged` counts trials above the task's fence (`task_fences`). A
    missing baseline gives 'no baseline' rows.
    """
    fences = fences or {}
    rows = []
    tasks = list(dict.fromkeys(long["task"]))
    for ti, task in enumerate(tasks):
        limit = fences.get(task, np.inf)
        for si, subset in enumerate(SUBSETS):
            part = long[(long["task"] == task) & (long["subset"] == subset)]
            base = part.loc[part["variant"] == baseline, "test_metric"].to_numpy(float)
            block = []
            for vi, variant in enumerate(variants):
                if variant == baseline:
                    continue
                x = part.loc[part["variant"] == variant, "test_metric"].to_numpy(float)
                rng = np.random.default_rng(np.random.SeedSequence([seed, ti, si, vi]))
                row = {
                    "task": task,
                    "subset": subset,
                    "variant": variant,
                    "n": len(x),
                    "n_base": len(base),
                    "n_needed": MIN_PER_GROUP,
                    "mean": _nanmean(x),
                    "mean_base": _nanmean(base),
                    "median": float(np.median(x)) if len(x) else np.nan,
                    "median_base": float(np.median(base)) if len(base) else np.nan,
                    "diverged": int((x > limit).sum()),
                    "diverged_base": int((base > limit).sum()),
                    **_test_row(x, base, rng, n_resamples),
                }
                row["diff"] = row["mean"] - row["mean_base"]
                block.append(row)
            if not block:
                continue
            adjusted = holm([r["p"] for r in block])
            for r, p_adj in zip(block, adjusted, strict=True):
                r["p_holm"] = p_adj
                # `verdict`: the rank test at alpha, uncorrected like the paper's; `verdict_holm`
                # controls the family-wise error over this task's comparisons.
                for key, p_used, sign in (
                    ("verdict", r["p"], r["prob_worse"] - 0.5),
                    ("verdict_holm", p_adj, r["prob_worse"] - 0.5),
                    ("verdict_welch", r["p_welch"], r["diff"]),
                ):
                    r[key] = (
                        "no baseline"
                        if len(base) == 0 and r["n"] > 0
                        else verdict(r["n"], r["n_base"], sign, p_used, alpha)
                    )
            rows.extend(block)
    return pd.DataFrame(rows, columns=COLUMNS)


def _nanmean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else np.nan


def variant_summary(long: pd.DataFrame, maximize: tuple[str, ...] = ()) -> pd.DataFrame:
    """Per (task, subset, variant): n, mean, std, median, best test metric (the highest for the
    tasks in `maximize`), mean n_params."""
    g = long.groupby(["task", "subset", "variant"], sort=False, observed=True)
    out = g.agg(
        n=("test_metric", "size"),
        mean=("test_metric", "mean"),
        std=("test_metric", "std"),
        median=("test_metric", "median"),
        best=("test_metric", "min"),
        highest=("test_metric", "max"),
        mean_params=("n_params", "mean"),
    ).reset_index()
    flip = out["task"].isin(list(maximize))
    out["best"] = out["best"].where(~flip, out["highest"])
    return out.drop(columns="highest")


def per_epoch(done: pd.DataFrame) -> pd.DataFrame:
    """Complete trials with a positive hidden size, wall time and epoch count, and their
    `s_per_epoch` (wall_s / epochs: early stopping makes time per trial mostly a matter of
    when a trial stopped)."""
    ok = done[(done["wall_s"] > 0) & (done["hp_hidden_size"] > 0) & (done["epochs"] > 0)]
    return ok.assign(s_per_epoch=ok["wall_s"] / ok["epochs"])


def timing_sample(ok: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The trials a time trend is fitted on: all of them, or with several code versions those
    of the version with the most trials (how a packed trial's time is recorded changed between
    versions), and that version ('' when all)."""
    if ok.empty or ok["code_version"].nunique() <= 1:
        return ok, ""
    version = str(ok["code_version"].value_counts().index[0])
    return ok[ok["code_version"] == version], version
