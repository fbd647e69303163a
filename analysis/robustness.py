"""Whether the Fig. 3 verdicts survive the numerical noise of the code that recorded the trials.

A study's trials may have been recorded by code whose numbers are not exactly reproducible (e.g.
trained in packs before a trial's numbers were made independent of its pack). Rerunning a sample
of them (`odyssey verify`) measures how far such a trial's metrics move. This module carries that
into the verdicts of the paper's Fig. 3 statistics (`analysis.stats.compare_to_baseline`: all
trials and top 10 %, raw and Holm), two ways:
- `resampled`: every movable trial's metrics multiplied by (1 + e), e drawn from the measured
  relative differences (validation and test of one rerun together, so the top-10 % selection
  moves too), many times; per verdict, the fraction of draws that keep it. This is the realistic
  question: had these trials run on other code, would the verdicts read the same? The noise is
  not the same for every trial: a diverged trial's NLL can move by half between two runs, a
  converged one's by 1e-4. So each trial draws from the NEIGHBOURS reruns nearest to it in rank
  (its test metric's percentile within its task), not from all of them.
- `worst_case_margin`: the smallest systematic shift that changes a verdict: every movable trial
  of every variant but the baseline scaled by (1 + d) and the baseline's by (1 - d), then the
  opposite signs. Numerical noise is not systematic by variant, so this bounds, not estimates.
Metrics are minimised (as `analysis.stats.oriented` makes them).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis import stats

KEY = ["task", "subset", "variant"]

VERDICTS = ("verdict", "verdict_holm")
DELTAS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)  # relative perturbations tried, in order
NEIGHBOURS = 10  # reruns a trial draws its difference from: the nearest to it in rank


def level(trials: pd.DataFrame) -> pd.Series:
    """Each trial's test metric as a percentile rank within its task (NaN for no metric)."""
    return trials.groupby("task", observed=True)["test_metric"].rank(pct=True)


def _candidates(levels: np.ndarray, rerun_levels: np.ndarray, k: int) -> np.ndarray:
    """(n, k) indices of the `k` reruns nearest each of `levels` (ties: the lower index)."""
    k = min(k, len(rerun_levels))
    gap = np.abs(np.nan_to_num(levels, nan=0.5)[:, None] - rerun_levels[None, :])  # (n, R)
    return np.argsort(gap, axis=1, kind="stable")[:, :k]


def verdicts(
    trials: pd.DataFrame, variants: Sequence[str], baseline: str, alpha: float = 0.05
) -> pd.DataFrame:
    """The Fig. 3 verdicts (raw and Holm) per (task, subset, variant) of a minimised table."""
    table = stats.compare_to_baseline(
        stats.with_subsets(trials), list(variants), baseline, alpha, n_resamples=1
    )
    return table.set_index(KEY)[list(VERDICTS)]


def perturbed(
    trials: pd.DataFrame, movable: pd.Series, baseline: str, delta: float
) -> pd.DataFrame:
    """`trials` with the `movable` rows' metrics scaled by (1 + delta) (the baseline's by
    (1 - delta)); a negative delta shifts the other way."""
    out = trials.copy()
    sign = np.where(out["variant"] == baseline, -1.0, 1.0)
    factor = np.where(movable.to_numpy(bool), 1.0 + sign * delta, 1.0)
    for col in ("val_metric", "test_metric"):
        out[col] = out[col].to_numpy(float) * factor
    return out


def worst_case_margin(
    trials: pd.DataFrame,
    movable: pd.Series,
    variants: Sequence[str],
    baseline: str,
    deltas: Sequence[float] = DELTAS,
) -> tuple[float | None, pd.DataFrame]:
    """The smallest of `deltas` at which some verdict changes when the `movable` trials move
    apart or together by that relative amount (None: none changes up to the largest), and the
    verdicts that changed there (columns task, subset, variant, which, recorded, moved, delta)."""
    base = verdicts(trials, variants, baseline)
    for delta in deltas:
        changed = []
        for signed in (delta, -delta):
            now = verdicts(perturbed(trials, movable, baseline, signed), variants, baseline)
            for which in VERDICTS:
                diff = base[which] != now[which]
                for key in base.index[diff.to_numpy()]:
                    changed.append((*key, which, base.at[key, which], now.at[key, which], signed))
        if changed:
            cols = ["task", "subset", "variant", "which", "recorded", "moved", "delta"]
            return delta, pd.DataFrame(changed, columns=cols)
    return None, pd.DataFrame()


def resampled(
    trials: pd.DataFrame,
    movable: pd.Series,
    rel_diffs: np.ndarray,
    variants: Sequence[str],
    baseline: str,
    draws: int = 200,
    seed: int = 0,
    alpha: float = 0.05,
    neighbours: int = NEIGHBOURS,
) -> pd.DataFrame:
    """Per (task, subset, variant): the recorded verdicts and, over `draws` redraws of the
    `movable` trials' metrics, the fraction of draws that keep each verdict (`kept`,
    `kept_holm`). `rel_diffs`: measured relative differences of validation and test metric,
    (R, 2), or (R, 3) with the rerun trial's `level` third: then each movable trial draws from
    the `neighbours` reruns nearest its own level, else from all."""
    rel_diffs = np.asarray(rel_diffs, dtype=float)
    if not len(rel_diffs):
        raise ValueError("no measured differences to draw from: rerun some trials first")
    base = verdicts(trials, variants, baseline, alpha)
    kept = pd.DataFrame(0, index=base.index, columns=list(VERDICTS))
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(movable.to_numpy(bool))
    if rel_diffs.shape[1] == 3:
        near = _candidates(level(trials).to_numpy(float)[rows], rel_diffs[:, 2], neighbours)
    else:
        near = np.broadcast_to(np.arange(len(rel_diffs)), (len(rows), len(rel_diffs)))
    for _ in range(draws):
        moved = trials.copy()
        pick = near[np.arange(len(rows)), rng.integers(near.shape[1], size=len(rows))]
        e = rel_diffs[pick, :2]  # (n movable, 2)
        for j, col in enumerate(("val_metric", "test_metric")):
            values = moved[col].to_numpy(float).copy()
            values[rows] *= 1.0 + e[:, j]
            moved[col] = values
        kept += (verdicts(moved, variants, baseline, alpha) == base).astype(int)
    out = base.rename(columns={"verdict": "recorded", "verdict_holm": "recorded_holm"})
    out["kept"] = kept["verdict"] / draws
    out["kept_holm"] = kept["verdict_holm"] / draws
    return out.reset_index()


def rerun_noise(trials: pd.DataFrame, reruns: pd.DataFrame) -> tuple[pd.Series, np.ndarray] | None:
    """From `odyssey verify`'s reruns: which trials' numbers are not reproducible (those whose
    `numerics` has a rerun that did not come back bitwise) and the relative differences measured
    for them ((R, 3): validation, test, and the rerun trial's `level` in `trials`); None when
    every rerun came back bitwise (or none ran)."""
    if reruns.empty or "identical" not in reruns:
        return None
    moved = reruns[~reruns["identical"].astype(bool)]
    kinds = set(moved["recorded_numerics"].astype(str))
    if not kinds:
        return None
    movable = trials["numerics"].astype(str).isin(kinds)
    rel = differences(trials, reruns[reruns["recorded_numerics"].astype(str).isin(kinds)])
    return (movable, rel) if movable.any() and len(rel) else None


def differences(trials: pd.DataFrame, reruns: pd.DataFrame) -> np.ndarray:
    """(R, 3): each rerun's relative differences of validation and test metric, and its trial's
    `level` in `trials` (0.5 where the rerun does not name its trial)."""
    key = ["task", "variant", "trial"]
    if set(key) <= set(reruns.columns):
        levels = trials[key].assign(level=level(trials).to_numpy())
        reruns = reruns.merge(levels, on=key, how="left")
    else:
        reruns = reruns.assign(level=0.5)
    return reruns[["rel_val", "rel_test", "level"]].dropna().to_numpy(float)
