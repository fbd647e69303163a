"""`odyssey run PRESET|SPEC.yaml [overrides]` runs or resumes a study; `odyssey status STUDY`
shows its progress per (task, variant). See study/runner.py for what a run does."""

from __future__ import annotations

import argparse


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run or resume a study (the same command resumes)",
        description="Run a study from a preset (demo, smoke, paper) or a YAML file; flags override "
        "the file. Running it again continues where it stopped.",
    )
    p.add_argument("spec", metavar="PRESET|SPEC.yaml", help="demo, smoke, paper or a YAML file")
    p.add_argument("--study", dest="name", help="study name (default: the preset or file name)")
    p.add_argument("--tasks", type=_csv, help="comma list of tasks, or 'all'")
    p.add_argument("--variants", type=_csv, help="comma list of variants, or 'all'")
    p.add_argument("--trials", type=int, help="trials per (task, variant)")
    p.add_argument("--workers", type=int, help="trials in parallel (default: all CPUs)")
    p.add_argument("--ray-address", dest="ray_address", help="Ray cluster to use (default: local)")
    p.add_argument("--storage", help="Optuna RDB URL (default: sqlite in the study folder)")
    p.add_argument(
        "--tracking-uri",
        dest="tracking_uri",
        help="MLflow tracking URI (default: sqlite in the study folder)",
    )
    p.add_argument("--results", help="results folder (default: results/)")
    p.add_argument("--data-dir", dest="data_dir", help="prepared-data cache folder")
    p.add_argument("--seed", type=int, help="study seed (parameters and initial weights)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), help="where trials train")
    t = p.add_argument_group("training protocol (the `training:` section of the config)")
    t.add_argument(
        "--batch-size", dest="training.batch_size", metavar="N", type=int, help="sequences per step"
    )
    t.add_argument(
        "--max-epochs",
        dest="training.max_epochs",
        metavar="N",
        type=int,
        help="most epochs a trial trains",
    )
    t.add_argument(
        "--patience",
        dest="training.patience",
        metavar="N",
        type=int,
        help="stop a trial after this many epochs without a validation improvement",
    )
    t.add_argument(
        "--pack",
        dest="training.pack",
        metavar="N",
        type=int,
        help="trials of one (task, variant) trained together (default: chosen per device); "
        "execution only, results are the same",
    )
    p.add_argument("--no-live", action="store_true", help="log lines instead of a live table")
    p.set_defaults(func=run)

    s = sub.add_parser("status", help="progress of a study per (task, variant)")
    s.add_argument("study", help="study name (a folder in the results folder)")
    s.add_argument("--results", default="results", help="results folder (default: results/)")
    s.set_defaults(func=status)


OVERRIDES = (
    "name",
    "tasks",
    "variants",
    "trials",
    "workers",
    "ray_address",
    "storage",
    "tracking_uri",
    "results",
    "data_dir",
    "seed",
    "device",
    "training.batch_size",
    "training.max_epochs",
    "training.patience",
    "training.pack",
)


def run(args: argparse.Namespace) -> int:
    from study import preflight
    from study.config import resolve
    from study.console import noise_to_file
    from study.plugins import check_declared
    from study.results import RUN_LOG
    from study.runner import run as run_study

    preflight.check_paths({}, spec=args.spec)
    cfg = resolve(args.spec, {k: getattr(args, k) for k in OVERRIDES})
    # before the log file is opened in the study folder: a refused start writes nothing
    preflight.check_paths(cfg.to_dict())
    preflight.check_results_dir(cfg.study_dir, create=False)
    preflight.check_blocked(cfg.study_dir)
    check_declared(cfg)  # a refused plug-in leaves no study folder
    if args.verbose:  # everything on the screen
        counts = run_study(cfg, live=False if args.no_live else None)
        _report(cfg)
    else:
        with noise_to_file(cfg.study_dir / RUN_LOG):
            counts = run_study(cfg, live=False if args.no_live else None)
            _report(cfg)
    return 0 if counts["complete"] + counts["failed"] >= counts["expected"] else 1


def _report(cfg) -> None:
    """The study's report, when its config asks for one (the runner knows nothing of reports)."""
    if not cfg.report:
        return
    import logging
    from pathlib import Path

    try:
        import analysis
    except ModuleNotFoundError as e:
        if e.name != "analysis":
            raise
        logging.getLogger("study.runner").info(
            "no report builder installed (the analysis package is missing); skipped the report"
        )
        return
    out = analysis.build(cfg.name, Path(cfg.results), None)
    logging.getLogger("study.runner").info("report: %s", out)


def status(args: argparse.Namespace) -> int:
    import os

    from rich.console import Console

    import tasks
    from study import results
    from study.config import saved_study
    from study.progress import eta_seconds, fmt_seconds, remaining, summarize, table
    from study.setup import running_driver

    sdir, cfg = saved_study(args.results, args.study)
    df = results.read_trials(sdir)
    pairs = [(t, v) for t in cfg.tasks for v in cfg.variants]
    directions = {t: tasks.get(t).metric_direction for t in set(cfg.tasks) | set(df["task"])}
    metrics = {t: tasks.get(t).metric for t in directions}
    s = summarize(df, pairs, cfg.trials, directions, metrics)
    workers = cfg.workers or os.cpu_count() or 1
    console = Console()
    done, failed, expected = int(s["done"].sum()), int(s["failed"].sum()), int(s["expected"].sum())
    pid = running_driver(sdir)
    running = "not running" if pid is None else f"running (driver pid {pid})"
    eta = (
        f"; ETA {fmt_seconds(eta_seconds(s, workers))} at {workers} workers" if remaining(s) else ""
    )
    console.print(
        f"study {cfg.name}: {done} complete, {failed} failed of {expected}; {running}{eta}",
        soft_wrap=True,  # one line also when piped (a script may read it)
    )
    console.print(table(s))
    failures = [(r.task, r.variant, n, e) for r in s.itertuples() for n, e in r.errors]
    if failures:
        console.print(f"\n{len(failures)} failed trials:")
        for task, variant, n, e in failures[:50]:
            console.print(f"  {task}/{variant} trial {n}: {e}", markup=False, highlight=False)
        if len(failures) > 50:
            console.print(
                f"  ... and {len(failures) - 50} more ({results.TRIALS_FILE}, column error)"
            )
    mean = s["mean_wall_s"].dropna()
    if len(mean):
        console.print(f"\nmean trial time {float(mean.mean()):.1f} s; results in {sdir}")
    return 0
