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
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    import logging

    from study.report.build import Settings, build

    if args.trees < 1 or (args.variant_trees is not None and args.variant_trees < 1):
        raise ValueError("--trees and --variant-trees must be at least 1")
    settings = Settings(n_trees=args.trees, n_trees_variant=args.variant_trees, seed=args.seed)
    index = build(args.study, args.results, args.out, settings)
    logging.getLogger("odyssey.report").info("report: %s", index.resolve())
    return 0
