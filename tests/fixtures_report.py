"""A realistic, seeded results table for report tests (the columns of study/results.py SCHEMA).

The test metric is a known function of the hyperparameters (a learning-rate basin, better with
size, worse with noise, momentum irrelevant) plus a per-variant shift that mimics the paper's
Fig. 3 (NFG and NOAF clearly worse everywhere, NIG/NOG/NIAF worse on TIMIT and IAM, FGR worse on
JSB), so tests and eyes can check the report against what was put in. `explode` sets a few
trials of one variant to diverged-but-finite values (NLL 1e3-1e4), as NOAF did in a demo run;
`make_epochs` writes per-epoch validation curves that end at each trial's validation metric.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

VARIANTS_FALLBACK = ["V", "NIG", "NFG", "NOG", "NIAF", "NOAF", "NP", "CIFG", "FGR", "GRU"]
TASKS_FALLBACK = ["timit", "iam_online", "jsb_chorales"]
METRIC = {"timit": "frame_error", "iam_online": "char_error", "jsb_chorales": "nll"}
BASE = {"timit": 0.32, "iam_online": 0.12, "jsb_chorales": 8.5}
SCALE = {"timit": 0.3, "iam_online": 0.4, "jsb_chorales": 12.0}
SHIFT = {  # in units of SCALE, per variant and task (timit, iam, jsb)
    "NFG": (0.25, 0.25, 0.25),
    "NOAF": (0.3, 0.3, 0.3),
    "NIG": (0.12, 0.12, -0.01),
    "NOG": (0.12, 0.12, 0.0),
    "NIAF": (0.12, 0.12, -0.01),
    "FGR": (0.0, 0.0, 0.12),
}


def registry_orders() -> tuple[list[str], list[str]]:
    """The paper's variants and tasks in the registries' order (the fallback only if they do not
    import); the registries also hold baselines and synthetic tasks a paper study does not run."""
    try:
        import variants

        v = [n for n in variants.VARIANTS if n in VARIANTS_FALLBACK]
    except ImportError:
        v = VARIANTS_FALLBACK
    try:
        import tasks

        t = [n for n in tasks.TASKS if n in tasks.PAPER_TASKS]
    except ImportError:
        t = TASKS_FALLBACK
    return v, t


def make_trials(
    trials: int = 20,
    seed: int = 0,
    study: str = "fixture",
    tasks: list[str] | None = None,
    variants: list[str] | None = None,
    fail_rate: float = 0.03,
    explode: dict[tuple[str, str], list[float]] | None = None,
) -> pd.DataFrame:
    """`trials` rows per (task, variant), paper search space, seeded. `explode[(task, variant)]`:
    test (and validation) metrics given to that pair's first complete trials."""
    v_all, t_all = registry_orders()
    tasks, variants = tasks or t_all, variants or v_all
    rng = np.random.default_rng(seed)
    rows = []
    for ti, task in enumerate(tasks):
        for variant in variants:
            shift = SHIFT.get(variant, (0.0, 0.0, 0.0))[min(ti, 2)]
            for k in range(trials):
                lr = 10 ** rng.uniform(-6, -2)
                hidden = int(round(10 ** rng.uniform(np.log10(20), np.log10(200))))
                momentum = 1 - 10 ** rng.uniform(-2, 0)
                noise = rng.uniform(0, 1)
                # basin in log10(lr) around -3, size helps with diminishing returns
                quality = (
                    0.5 * ((np.log10(lr) + 3.0) / 2.0) ** 2
                    + 0.08 * (2.3 - np.log10(hidden))
                    + 0.05 * noise
                    + shift
                )
                test = BASE.get(task, 1.0) + SCALE.get(task, 1.0) * (quality + 0.02 * rng.normal())
                val = test + SCALE.get(task, 1.0) * 0.01 * rng.normal()
                failed = rng.random() < fail_rate
                wall = 3.0 * (hidden / 20) ** 1.5 * rng.lognormal(0, 0.2)
                rows.append(
                    {
                        "study": study,
                        "task": task,
                        "variant": variant,
                        "trial": k,
                        "seed": int(rng.integers(2**31)),
                        "status": "failed" if failed else "complete",
                        "error": "diverged: loss is nan at epoch 3" if failed else "",
                        "hp_hidden_size": hidden,
                        "hp_learning_rate": lr,
                        "hp_momentum": momentum,
                        "hp_input_noise": noise,
                        "n_params": float(4 * hidden * (hidden + 40)),
                        "epochs": 20,
                        "best_epoch": 12,
                        "val_metric": np.nan if failed else val,
                        "test_metric": np.nan if failed else test,
                        "train_loss": 1.0,
                        "wall_s": wall,
                        "device": "cpu",
                        "started_at": "2025-01-01T00:00:00",
                        "finished_at": "2025-01-01T00:10:00",
                        "code_version": "abc1234",
                        "metric": METRIC.get(task, "metric"),
                        "data_source": "real" if task == "jsb_chorales" else "synthetic",
                        "stand_in": task != "jsb_chorales",
                        "test_extra": "{}",
                    }
                )
    df = pd.DataFrame(rows)
    for (task, variant), values in (explode or {}).items():
        idx = df.index[
            (df["task"] == task) & (df["variant"] == variant) & (df["status"] == "complete")
        ][: len(values)]
        df.loc[idx, "test_metric"] = values[: len(idx)]
        df.loc[idx, "val_metric"] = np.asarray(values[: len(idx)]) * 0.98
    return df


def make_epochs(trials: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Long per-epoch history (task, variant, trial, epoch, name, value) of complete trials:
    val/<metric> decays from 3x its final value to the trial's val_metric over its epochs."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in trials[trials["status"] == "complete"].itertuples(index=False):
        n = int(r.epochs)
        e = np.arange(1, n + 1)
        curve = r.val_metric * (1 + 2 * np.exp(-e / (2 + 4 * rng.random())))
        curve = curve * (1 + 0.01 * rng.normal(size=n))
        curve[-1] = r.val_metric
        for epoch, value in zip(e, curve, strict=True):
            rows.append(
                {
                    "task": r.task,
                    "variant": r.variant,
                    "trial": int(r.trial),
                    "epoch": int(epoch),
                    "name": f"val/{r.metric}",
                    "value": float(value),
                }
            )
    return pd.DataFrame(rows, columns=["task", "variant", "trial", "epoch", "name", "value"])


def write_study(
    results_dir: Path,
    trials: pd.DataFrame,
    study: str = "fixture",
    expected: int | None = None,
    tasks: list[str] | None = None,
    variants: list[str] | None = None,
    epochs: bool = True,
    training: dict | None = None,
    data: dict | None = None,
    plugins: dict | None = None,
) -> Path:
    """Write `<results_dir>/<study>/trials.parquet`, a config.yaml like the study writes (the
    paper's protocol unless `training` overrides some of it; `data`: its per-task data
    settings) and (with `epochs`) an `epochs.parquet/` folder of one part file per (task,
    variant). With `plugins`, also a data.json whose top-level "plugins" holds it and whose
    plug-in tasks say `"source": "plugin"` (without, no data.json, as in older studies)."""
    folder = results_dir / study
    folder.mkdir(parents=True, exist_ok=True)
    trials.to_parquet(folder / "trials.parquet", index=False)
    history = make_epochs(trials) if epochs and len(trials) else None
    if history is not None and len(history):
        (folder / "epochs.parquet").mkdir(exist_ok=True)
        for (task, variant), part in history.groupby(["task", "variant"], sort=False):
            part.to_parquet(folder / "epochs.parquet" / f"{task}__{variant}.parquet", index=False)
    v_all, t_all = registry_orders()
    config = {
        "name": study,
        "tasks": tasks or [t for t in t_all if t in set(trials["task"])] or t_all,
        "variants": variants or [v for v in v_all if v in set(trials["variant"])] or v_all,
        "trials": expected
        if expected is not None
        else int(trials.groupby(["task", "variant"]).size().max() if len(trials) else 1),
        "seed": 0,
        "space": {
            "hidden_size": [20, 200],
            "learning_rate": [1e-6, 1e-2],
            "one_minus_momentum": [0.01, 1.0],
            "input_noise": [0.0, 1.0],
        },
        "sampler": "random",
        "training": {"batch_size": 1, "max_epochs": 150, "patience": 15, **(training or {})},
        "data": data or {},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    if plugins is not None:
        tasks_doc = {
            t: {"title": t, "metric": METRIC.get(t, "metric"), "direction": "minimize"}
            | ({"source": "plugin", "stand_in": None} if t in plugins.get("tasks", {}) else {})
            for t in config["tasks"]
        }
        doc = {"format": 2, "variants": {}, "tasks": tasks_doc, "plugins": plugins}
        (folder / "data.json").write_text(json.dumps(doc, indent=2))
    return folder
