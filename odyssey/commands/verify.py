"""`odyssey verify STUDY`: retrain a sample of a study's recorded trials on this code, with their
recorded parameters and seeds, compare their numbers with the recorded ones, and say whether the
differences found could move a verdict of the report (`analysis.robustness`).

What it answers: are this study's numbers reproducible, and do trials recorded by older code (e.g.
before a trial's numbers were independent of its pack) still support the report's verdicts? Each
rerun lands at once in the study's `reruns.parquet` (nothing else of the study is touched, so it
may run beside the study itself); a later `verify` adds to it and draws only trials not rerun yet.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("odyssey")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        help="rerun a sample of recorded trials and compare their numbers",
        description="Retrain a sample of a study's complete trials on this code with their "
        "recorded parameters and seeds (on the CPU), compare validation and test metric, epochs "
        "and best epoch with the recorded ones, and test whether differences of the size found "
        "could change a verdict of the report. Results go to the study's reruns.parquet.",
    )
    p.add_argument("study", metavar="STUDY", help="study name (a folder under --results)")
    p.add_argument("--results", default="results", help="results folder (default: results/)")
    p.add_argument(
        "--sample", type=int, default=1, help="trials per (task, variant) to rerun (default: 1)"
    )
    p.add_argument(
        "--numerics",
        help="draw only trials whose `numerics` is this (e.g. unknown: recorded before the column)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the sample and the redraws")
    p.add_argument(
        "--draws",
        type=int,
        default=200,
        help="redraws of the verdicts with the measured differences (default: 200; 0: none)",
    )
    p.set_defaults(func=verify)


def verify(args: argparse.Namespace) -> int:
    import pandas as pd

    from study import results
    from study.config import saved_study
    from study.console import UserError

    if args.sample < 0 or args.draws < 0:
        raise UserError("--sample and --draws take a count >= 0")
    sdir, cfg = saved_study(args.results, args.study)
    _activate(cfg)
    table = results.read_trials(sdir)
    done = table[(table["status"] == "complete") & table["test_metric"].notna()]
    population = _population(done, args.numerics)
    reruns = read_reruns(sdir)
    sample = _sample(population, reruns, args.sample, args.seed)
    if len(sample):
        reruns = _rerun(sdir, cfg, sample, reruns)
    if reruns.empty:
        print("no reruns yet: nothing to compare")
        return 0
    print(summary(reruns))
    if args.draws and len(cfg.variants) > 1:
        ours = pd.Series(
            table.set_index(["task", "variant", "trial"]).index.isin(
                population.set_index(["task", "variant", "trial"]).index
            ),
            index=table.index,
        )
        print(_verdicts(table, ours, reruns, cfg, args.draws, args.seed))
    return 0


def _activate(cfg) -> None:
    """Register the study's plug-ins, as its workers do."""
    from study.plugins import activate

    declared = cfg.declared_plugins()
    if declared.get("cells") or declared.get("tasks"):
        activate(declared, cfg.plugin_dirs)


def _population(done, numerics: str | None):
    """The complete trials a sample may take: all, or those with `numerics`."""
    from study.console import UserError

    if numerics is None:
        return done
    found = sorted(done["numerics"].dropna().unique())
    if numerics not in found:
        raise UserError(
            f"no complete trial has numerics {numerics!r}; this study's: {', '.join(found)}"
        )
    return done[done["numerics"] == numerics]


def _sample(population, reruns, per_pair: int, seed: int):
    """Per (task, variant), `per_pair` trials not rerun yet, drawn with `seed`."""
    import numpy as np
    import pandas as pd

    rerun = set(zip(reruns["task"], reruns["variant"], reruns["trial"], strict=True))
    picks = []
    rng = np.random.default_rng(seed)
    for _, group in population.sort_values(["task", "variant", "trial"]).groupby(
        ["task", "variant"], sort=False
    ):
        keys = zip(group["task"], group["variant"], group["trial"], strict=True)
        left = group[[k not in rerun for k in keys]]
        if per_pair and len(left):
            take = rng.choice(len(left), size=min(per_pair, len(left)), replace=False)
            picks.append(left.iloc[np.sort(take)])
    return pd.concat(picks) if picks else population.iloc[:0]


def read_reruns(sdir: Path):
    import pandas as pd

    from study import results

    found = results.read_reruns(sdir)
    return found if len(found.columns) else pd.DataFrame(columns=_COLUMNS)


_COLUMNS = [
    "task", "variant", "trial", "recorded_code_version", "recorded_numerics", "code_version",
    "numerics", "recorded_epochs", "epochs", "recorded_best_epoch", "best_epoch",
    "recorded_val", "val", "recorded_test", "test", "rel_val", "rel_test", "identical",
    "wall_s", "rerun_at",
]  # fmt: skip


def _hparams(row: dict[str, Any]) -> dict[str, Any]:
    """The trial's hyperparameters as its job carried them (`study.space.hyperparameters`)."""
    extra = row.get("hp_extra")
    extra = json.loads(extra) if isinstance(extra, str) and extra else {}
    return {
        "hidden_size": int(row["hp_hidden_size"]),
        "learning_rate": float(row["hp_learning_rate"]),
        "momentum": float(row["hp_momentum"]),
        "input_noise": float(row["hp_input_noise"]),
        **extra,
    }


def _rerun(sdir: Path, cfg, sample, reruns):
    """Retrain `sample` one trial at a time in this process, appending each comparison to
    reruns.parquet as it finishes; the table of all reruns."""
    import pandas as pd
    import pyarrow as pa

    from study import plan, results
    from study.setup import code_version, prepare_data
    from study.worker import now_iso, run_trial

    data = prepare_data(cfg)
    version = code_version()
    rows = sample.to_dict("records")
    started = time.perf_counter()
    log.info("rerunning %d recorded trials on %s, one at a time", len(rows), version)
    for i, row in enumerate(rows, 1):
        job = {
            **plan._base(cfg, row["task"], row["variant"], data[row["task"]][0], "cpu"),
            "trial": int(row["trial"]),
            "hparams": _hparams(row),
            # the row holds the study's seed; the trial's own follows from it as the runner's
            "seed": plan.seed_of(int(row["seed"]), row["task"], row["variant"], int(row["trial"])),
        }
        t0 = time.perf_counter()
        got = run_trial(job)
        if got.get("retryable"):
            raise RuntimeError(f"rerun of {row['variant']} trial {row['trial']}: {got['error']}")
        new = _compare(row, got, version, time.perf_counter() - t0, now_iso())
        reruns = pd.concat([reruns, pd.DataFrame([new], columns=_COLUMNS)], ignore_index=True)
        results._atomic_write(
            pa.Table.from_pandas(reruns, preserve_index=False), sdir / results.RERUNS_FILE
        )
        eta = (time.perf_counter() - started) / i * (len(rows) - i)
        log.info(
            "%s/%s trial %d: test %.6g -> %.6g (%s)  [%d/%d, ETA %s]",
            row["task"], row["variant"], row["trial"], new["recorded_test"], new["test"],
            "identical" if new["identical"] else f"{new['rel_test']:+.2e}",
            i, len(rows), _duration(eta),
        )  # fmt: skip
    return reruns


def _compare(row: dict, got: dict, version: str, wall: float, at: str) -> dict[str, Any]:
    def rel(new: float, old: float) -> float:
        return (new - old) / abs(old) if old else math.nan

    same = (
        got["status"] == row["status"]
        and got["epochs"] == row["epochs"]
        and got["best_epoch"] == row["best_epoch"]
        and got["val_metric"] == row["val_metric"]
        and got["test_metric"] == row["test_metric"]
    )
    return {
        "task": row["task"],
        "variant": row["variant"],
        "trial": int(row["trial"]),
        "recorded_code_version": row["code_version"],
        "recorded_numerics": row.get("numerics"),
        "code_version": version,
        "numerics": got.get("numerics"),
        "recorded_epochs": int(row["epochs"]),
        "epochs": int(got["epochs"]),
        "recorded_best_epoch": int(row["best_epoch"]),
        "best_epoch": int(got["best_epoch"]),
        "recorded_val": float(row["val_metric"]),
        "val": float(got["val_metric"]),
        "recorded_test": float(row["test_metric"]),
        "test": float(got["test_metric"]),
        "rel_val": rel(float(got["val_metric"]), float(row["val_metric"])),
        "rel_test": rel(float(got["test_metric"]), float(row["test_metric"])),
        "identical": bool(same),
        "wall_s": wall,
        "rerun_at": at,
    }


def _duration(seconds: float) -> str:
    m = int(round(seconds / 60))
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m"


def summary(reruns) -> str:
    """What the reruns show, in a few lines."""
    n = len(reruns)
    same = int(reruns["identical"].sum())
    rel = reruns[["rel_val", "rel_test"]].abs()
    moved = int((reruns["best_epoch"] != reruns["recorded_best_epoch"]).sum())
    lines = [
        f"{n} reruns: {same} bitwise identical to the recorded numbers; best epoch moved in {moved}",
        f"  |relative difference|: validation median {rel['rel_val'].median():.2e}, "
        f"largest {rel['rel_val'].max():.2e}; test median {rel['rel_test'].median():.2e}, "
        f"largest {rel['rel_test'].max():.2e}",
    ]
    by = reruns.groupby("recorded_code_version")["identical"].agg(["size", "sum"])
    lines.append(
        "  by recorded code version: "
        + ", ".join(f"{v} {int(s)}/{int(k)} identical" for v, (k, s) in by.iterrows())
    )
    return "\n".join(lines)


def _verdicts(table, ours, reruns, cfg, draws: int, seed: int) -> str:
    """The verdicts' stability under the measured differences (`analysis.robustness`)."""
    import tasks
    from analysis import robustness, stats

    maximize = [t for t in cfg.tasks if tasks.get(t).metric_direction == "maximize"]
    trials = stats.oriented(table, maximize)
    rel = robustness.differences(trials, reruns)
    variants, baseline = list(cfg.variants), cfg.variants[0]
    kept = robustness.resampled(trials, ours, rel, variants, baseline, draws, seed)
    delta, changed = robustness.worst_case_margin(trials, ours, variants, baseline)
    lines = [
        f"verdicts with each of the {int(ours.sum())} sampled-from trials' metrics redrawn "
        f"{draws} times (times 1 + the relative difference of one of the "
        f"{robustness.NEIGHBOURS} reruns nearest it in rank); kept = share of redraws that keep "
        "the verdict:"
    ]
    for r in kept.itertuples():
        lines.append(
            f"  {r.task:<14} {r.subset:<11} {r.variant:<6} {r.recorded:<15} kept {r.kept:6.1%}"
            f"   Holm: {r.recorded_holm:<15} kept {r.kept_holm:6.1%}"
        )
    if delta is None:
        lines.append("worst case: no systematic shift up to 10 % changes a verdict")
    else:
        first = changed.iloc[0]
        lines.append(
            f"worst case: a systematic shift of {delta:.0e} (every variant's trials against the "
            f"baseline's) first changes {first.variant} ({first.subset}, {first.which}): "
            f"{first.recorded} -> {first.moved}"
        )
    return "\n".join(lines)
