"""The analysis of one study as typed data: what `analysis.build.analyse` computes from the
results folder and what the page (`analysis.render`) and the digest (`analysis.summary`) show.

Kept apart from both so that each imports it and neither imports the other: build -> render,
never back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from analysis.comparable import Comparability, TaskData
from analysis.importance import Importance
from analysis.load import StudyResults
from analysis.provenance import Totals
from analysis.stats import FENCE_IQR


@dataclass(frozen=True)
class Settings:
    """Knobs of the analysis; defaults are the paper's (alpha 0.05, 100 trees, top 10 %)."""

    alpha: float = 0.05
    top_fraction: float = 0.1
    n_trees: int = 100  # per task, variants pooled
    n_trees_variant: int | None = None  # per (task, variant); None: same as n_trees
    n_resamples: int = 2000  # bootstrap resamples per confidence interval
    seed: int = 0
    fence_iqr: float | None = FENCE_IQR  # divergence fence Q3 + k IQR; None: no cap
    fanova_target: str = "rank"  # 'rank' (robust) or 'metric' (capped at the fence)
    fanova_resamples: int = 40  # bootstrap resamples of the pooled fANOVA (0: none)
    fanova_resample_trees: int = 16  # trees per resample
    rerun_draws: int = 200  # redraws of the verdicts with `odyssey verify`'s differences (0: none)


@dataclass(frozen=True)
class Analysis:
    """Every table the page shows (tidy, long format), computed from the results alone."""

    res: StudyResults
    settings: Settings
    done: pd.DataFrame  # complete trials
    long: pd.DataFrame  # complete trials with a `subset` column (all / top 10 %)
    summary: pd.DataFrame  # stats.variant_summary
    significance: pd.DataFrame  # stats.COLUMNS
    fanova: Importance
    progress: pd.DataFrame  # provenance.progress
    failures: pd.DataFrame  # provenance.failures
    sources: pd.DataFrame  # provenance.data_sources
    stand_in: dict[str, bool | None]  # task -> generated stand-in data (None: unknown)
    protocol: list[str]  # how the study's protocol differs from the paper's ([]: it is the paper's)
    task_data: dict[str, TaskData]  # task -> what it ran on (the paper's corpus, a plug-in, ...)
    comparable: dict[str, Comparability]  # task -> whether the paper's findings apply, and why not
    totals: Totals
    paper_variants: pd.DataFrame  # paper.compare_variants
    paper_best: pd.DataFrame  # paper.best_results
    paper_reference: pd.DataFrame  # paper.reference_results
    paper_hp: pd.DataFrame  # paper.compare_hyperparameters
    learning: pd.DataFrame  # learning.curves
    fences: dict[str, float]  # task -> divergence fence (inf: none)
    metrics: dict[str, str]  # task -> metric name
    time_trend: pd.DataFrame  # build.time_trend
    notices: list[str]  # what is missing or partial, in words
    # `robustness.rerun_noise`: the trials whose numbers do not reproduce bitwise and the
    # differences measured for them (None: every rerun came back bitwise, or none ran)
    rerun_noise: tuple[pd.Series, Any] | None = None
