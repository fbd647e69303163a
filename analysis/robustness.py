"""Whether the Fig. 3 verdicts survive the numerical noise of the code that recorded the trials.

A study's trials may have been recorded by code whose numbers are not exactly reproducible (e.g.
trained in packs before a trial's numbers were made independent of its pack). Rerunning a sample
of them (`odyssey verify`) measures how far such a trial's metrics move. This module carries that
into the verdicts of the paper's Fig. 3 statistics (`analysis.stats.compare_to_baseline`: all
trials and top 10 %, raw and Holm), two ways:
- `resampled`: every movable trial's metrics multiplied by (1 + e), e drawn from the measured
  relative differences (validation and test of one rerun together, so the top-10 % selection
  moves too), many times; per verdict, the fraction of draws that keep it. This is the realistic
  question: had these trials run on other code, would the verdicts read the same?
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
) -> pd.DataFrame:
    """Per (task, subset, variant): the recorded verdicts and, over `draws` redraws of the
    `movable` trials' metrics (each times 1 + a row of `rel_diffs`, an (R, 2) array of measured
    relative differences of validation and test metric, drawn with replacement), the fraction
    of draws that keep each verdict (`kept`, `kept_holm`)."""
    rel_diffs = np.asarray(rel_diffs, dtype=float).reshape(-1, 2)
    if not len(rel_diffs):
        raise ValueError("no measured differences to draw from: rerun some trials first")
    base = verdicts(trials, variants, baseline, alpha)
    kept = pd.DataFrame(0, index=base.index, columns=list(VERDICTS))
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(movable.to_numpy(bool))
    for _ in range(draws):
        moved = trials.copy()
        e = rel_diffs[rng.integers(len(rel_diffs), size=len(rows))]  # (n movable, 2)
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
    for them ((R, 2): validation, test); None when every rerun came back bitwise (or none ran)."""
    if reruns.empty or "identical" not in reruns:
        return None
    moved = reruns[~reruns["identical"].astype(bool)]
    kinds = set(moved["recorded_numerics"].astype(str))
    if not kinds:
        return None
    movable = trials["numerics"].astype(str).isin(kinds)
    rel = reruns[reruns["recorded_numerics"].astype(str).isin(kinds)]
    rel = rel[["rel_val", "rel_test"]].dropna().to_numpy(float)
    return (movable, rel) if movable.any() and len(rel) else None
