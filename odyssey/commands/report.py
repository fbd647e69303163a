"""`odyssey report STUDY`: build the study's HTML report from its results folder."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="build reports/STUDY/index.html from results/STUDY/",
        description="Turn a study's results table into the paper's analysis: box plots and "
        "Welch tests against V, fANOVA hyperparameter importance, the paper's findings beside "
        "ours, and provenance. Works on partial and running studies.",
    )
    p.add_argument("study", metavar="STUDY", help="study name (a folder under --results)")
    p.add_argument(
        "--results",
        type=Path,
        default=Path("results"),
        help="folder holding one subfolder per study (default: results)",
    )
    p.add_argument("--out", type=Path, default=None, help="output folder (default: reports/STUDY)")
    p.add_argument(
        "--trees",
        type=int,
        default=100,
        help="fANOVA trees per task, variants pooled (default: 100, as in the paper)",
    )
    p.add_argument(
        "--variant-trees",
        type=int,
        default=None,
        help="fANOVA trees per (task, variant) (default: same as --trees)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the forests and bootstraps")
    p.add_argument(
        "--fanova-target",
        choices=("rank", "metric"),
        default="rank",
        help="what fANOVA explains: the rank of each trial's test metric in its group (default; "
        "robust to diverged trials) or the metric itself, capped at the divergence fence",
    )
    p.add_argument(
        "--fanova-resamples",
        type=int,
        default=40,
        help="bootstrap resamples of the trials on which the pooled fANOVA is refitted, to say "
        "how far the paper's hyperparameter claims move (default 40; 0: none)",
    )
    p.add_argument(
        "--fence-iqr",
        type=float,
        default=3.0,
        help="divergence fence Q3 + K IQR of a task's test metrics (default 3: Tukey's far out)",
    )
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    import logging

    from analysis.build import Settings, build

    if args.trees < 1 or (args.variant_trees is not None and args.variant_trees < 1):
        raise ValueError("--trees and --variant-trees must be at least 1")
    if args.fanova_resamples < 0:
        raise ValueError(f"--fanova-resamples must be 0 or more, got {args.fanova_resamples}")
    if not args.fence_iqr > 0:
        raise ValueError(f"--fence-iqr must be positive, got {args.fence_iqr}")
    settings = Settings(
        n_trees=args.trees,
        n_trees_variant=args.variant_trees,
        seed=args.seed,
        fence_iqr=args.fence_iqr,
        fanova_target=args.fanova_target,
        fanova_resamples=args.fanova_resamples,
    )
    index = build(args.study, args.results, args.out, settings)
    logging.getLogger("odyssey.report").info("report: %s", index.resolve())
    return 0
