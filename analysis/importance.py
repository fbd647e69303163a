"""Hyperparameter importance as in the paper's Figs. 4-6 (fANOVA, Hutter et al. 2014).

fANOVA (`analysis.fanova`) of the test metric over the four searched hyperparameters in the
units the authors analysed: log10(learning rate), log10(hidden size), log10(1 - momentum) and the
raw input-noise standard deviation. The uniform measure is the search box from the study config
(widened to the data where trials lie outside it), so fractions match the paper's definition.
Groups: each task with all variants pooled ('all') and each (task, variant).

Diverged-but-finite trials: one NLL of 10^4 among values near 10 carries nearly all of a
group's variance, so fANOVA on the raw metric explains the divergence, not the search. The
default target is therefore a monotone transform, the rank of each trial's test metric within
its group (average ranks for ties, divided by n): a diverged trial is the worst one and no more.
On the fixture's JSB trials without divergence, rank and raw targets give learning-rate
fractions of 0.78 and 0.81; with three NOAF trials at 1e3-1e4, raw fractions move by up to 0.46
and rank fractions by 0.05 (tests/test_report_robust.py). `target="metric"` fits the metric
itself, capped at the task's divergence fence (`stats.task_fences`). Marginal curves and the
pairwise surface are drawn in metric units: a rank r maps back through the empirical quantile
function of the group's (fence-capped) metric, and bands are clipped to the metric's domain
(>= 0; <= 1 for error rates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from analysis import fanova
from analysis.stats import too_few_text

# results column -> (key, label, encoding into analysis units)
HYPERPARAMETERS = {
    "learning_rate": ("hp_learning_rate", "log10(learning rate)", np.log10),
    "hidden_size": ("hp_hidden_size", "log10(hidden size)", np.log10),
    "momentum": (
        "hp_momentum",
        "log10(1 - momentum)",
        lambda m: np.log10(np.clip(1.0 - np.asarray(m, float), 1e-12, None)),
    ),
    "input_noise": ("hp_input_noise", "input noise std", lambda s: np.asarray(s, float)),
}
# config `space:` key -> the same encoding applied to its bounds
SPACE_KEYS = {
    "learning_rate": "learning_rate",
    "hidden_size": "hidden_size",
    "momentum": "one_minus_momentum",
    "input_noise": "input_noise",
}
MIN_TRIALS = 10
POOLED = "all"
TARGETS = ("rank", "metric")


def domain(metric: str) -> tuple[float, float]:
    """The values a metric can take: error rates in [0, 1], anything else (an NLL) >= 0."""
    return (0.0, 1.0) if metric.endswith("error") else (0.0, np.inf)


Dimensions = dict[str, tuple[str, str, Any]]  # key -> (results column, label, encoding)


def extra_dimensions(extra: dict[str, Any] | None) -> tuple[Dimensions, dict[str, tuple]]:
    """A study's own search dimensions (`space.extra` of its config), as further fANOVA inputs
    (columns `hp_<name>`, expanded from the table's `hp_extra`), and their boxes in analysis
    units. Float and int: their values (log10 when `log`). Categorical: the index of the value
    in `choices`, in the box [-0.5, c - 0.5], so that the uniform measure gives every choice the
    same weight (1/c), as fANOVA's own categorical dimensions do; a value not among the choices
    reads as missing."""
    dims: Dimensions = {}
    boxes: dict[str, tuple] = {}
    for name, d in (extra or {}).items():
        if not isinstance(d, dict):
            continue
        if d.get("type") == "categorical" and d.get("choices"):
            index = {choice: i for i, choice in enumerate(d["choices"])}
            dims[name] = (f"hp_{name}", f"{name} (categorical)", _choice_index(index))
            boxes[name] = (-0.5, len(index) - 0.5)
            continue
        if d.get("type") not in ("float", "int"):
            continue
        log = bool(d.get("log"))
        enc = np.log10 if log else _as_float
        dims[name] = (f"hp_{name}", f"log10({name})" if log else name, enc)
        try:
            lo, hi = float(d["low"]), float(d["high"])
            boxes[name] = (math.log10(lo), math.log10(hi)) if log else (lo, hi)
        except (KeyError, TypeError, ValueError):
            pass
    return dims, boxes


def _as_float(values: Any) -> np.ndarray:
    return np.asarray(values, float)


def _choice_index(index: dict[Any, int]):
    """values -> their position among a categorical dimension's choices (NaN: not a choice)."""

    def encode(values: Any) -> np.ndarray:
        return np.array([index.get(v, np.nan) for v in values], dtype=float)

    return encode


def encode(trials: pd.DataFrame, dims: Dimensions | None = None) -> pd.DataFrame:
    """The hyperparameters in analysis units, one column per key of `dims` (the paper's four
    unless a study adds its own)."""
    dims = dims or HYPERPARAMETERS
    with np.errstate(divide="ignore", invalid="ignore"):
        return pd.DataFrame(
            {
                k: enc(_values(trials[col])) if col in trials else np.full(len(trials), np.nan)
                for k, (col, _, enc) in dims.items()
            },
            index=trials.index,
        )


def _values(column: pd.Series) -> np.ndarray:
    """A column as numbers where it holds numbers, as it is otherwise (a categorical's)."""
    try:
        return column.to_numpy(float)
    except (TypeError, ValueError):
        return column.to_numpy(object)


def analysis_bounds(
    x: pd.DataFrame, space: dict[str, tuple[float, float]], boxes: dict[str, tuple] | None = None
) -> np.ndarray:
    """(D, 2) box in analysis units: the config's search space, widened to cover the data
    (`boxes`: the study's own dimensions, already in analysis units)."""
    rows = []
    boxes = boxes or {}
    for key in x.columns:
        lo, hi = float(x[key].min()), float(x[key].max())
        if key in boxes:
            lo, hi = min(lo, boxes[key][0]), max(hi, boxes[key][1])
        elif key in SPACE_KEYS and SPACE_KEYS[key] in space:
            a, b = space[SPACE_KEYS[key]]
            if key == "input_noise":
                lo, hi = min(lo, a), max(hi, b)
            else:  # log10 of the raw bounds; momentum's space key is already 1 - momentum
                lo, hi = min(lo, math.log10(a)) if a > 0 else lo, max(hi, math.log10(b))
        if not hi > lo:  # a constant hyperparameter: any box works, it explains nothing
            lo, hi = lo - 0.5, hi + 0.5
        rows.append((lo, hi))
    return np.array(rows)


def why_not(x: pd.DataFrame, y: np.ndarray) -> str | None:
    """Why a group cannot be analysed, or None when it can."""
    if len(y) < MIN_TRIALS:
        return too_few_text(len(y), MIN_TRIALS)
    if not np.all(np.isfinite(x.to_numpy())):
        return "some hyperparameters are missing or out of range"
    if np.ptp(y) == 0:
        return "the test metric is constant, so there is no variance to explain"
    return None


@dataclass(frozen=True)
class Importance:
    """The fANOVA tables of a study."""

    # tidy rows: task, group, effect, kind, hp, fraction, std, n, capped, target, trees
    importance: pd.DataFrame
    skipped: pd.DataFrame  # task, group, reason
    # task, hp, x, mean, lo, hi for pooled groups in metric units; lo/hi: mean -+ std over trees,
    # clipped to the metric's `domain`
    curves: pd.DataFrame
    # task -> (learning-rate grid (G,), hidden-size grid (G,), (G, G) mean pooled marginal)
    surfaces: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    # the pooled fANOVA refitted on bootstrap resamples of each task's trials (`bootstrap`):
    # task, resample, effect (as `hp` above), kind, fraction
    resampled: pd.DataFrame
    # task -> momentum's pooled fraction in forests fitted with the momentum column shuffled
    # (`null_fractions`): what a hyperparameter without any effect gets at this n
    null_momentum: dict[str, np.ndarray] = field(default_factory=dict)


RESAMPLED_COLUMNS = ["task", "resample", "hp", "kind", "fraction"]


def bootstrap(
    x: np.ndarray,
    capped: np.ndarray,
    bounds: np.ndarray,
    target: str,
    resamples: int,
    trees: int,
    seed: int,
    keys: list[str] | None = None,
) -> pd.DataFrame:
    """How far the pooled fractions move with another draw of trials: the forest refitted on
    `resamples` bootstrap resamples of the trials (`trees` trees each; the rank target ranked
    again within the resample). Rows: resample, hp, kind, fraction."""
    keys = keys or list(HYPERPARAMETERS)
    rng = np.random.default_rng(seed)
    rows = []
    for b in range(resamples):
        pick = rng.integers(0, len(capped), len(capped))
        yb = capped[pick]
        if np.ptp(yb) == 0:
            continue
        y = rankdata(yb) / len(yb) if target == "rank" else yb
        fa = fanova.fit(x[pick], y, bounds, keys, trees, int(rng.integers(2**31)))
        rows += [
            {"resample": b, "hp": r["effect"], "kind": r["kind"], "fraction": r["fraction"]}
            for r in fa.importances()
        ]
    return pd.DataFrame(rows, columns=RESAMPLED_COLUMNS[1:])


def null_fractions(
    x: np.ndarray,
    y: np.ndarray,
    bounds: np.ndarray,
    column: int,
    fits: int,
    trees: int,
    seed: int,
    keys: list[str] | None = None,
) -> np.ndarray:
    """The main-effect fraction a forest gives hyperparameter `column` once its values are
    shuffled over the trials (so that it has no effect at all), in `fits` refits: a forest
    fitted to a few hundred trials gives every input some variance, so a small fraction can
    only be told from none above these."""
    keys = keys or list(HYPERPARAMETERS)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(fits):
        shuffled = x.copy()
        shuffled[:, column] = rng.permutation(shuffled[:, column])
        fa = fanova.fit(shuffled, y, bounds, keys, trees, int(rng.integers(2**31)))
        out.append(next(r["fraction"] for r in fa.importances() if r["effect"] == keys[column]))
    return np.asarray(out)


def analyse(
    done: pd.DataFrame,
    tasks: list[str],
    variants: list[str],
    space: dict[str, tuple[float, float]],
    n_trees: int = 100,
    n_trees_variant: int | None = None,
    seed: int = 0,
    grid: int = 50,
    fences: dict[str, float] | None = None,
    metrics: dict[str, str] | None = None,
    target: str = "rank",
    resamples: int = 0,
    resample_trees: int = 16,
    extra: dict[str, Any] | None = None,
) -> Importance:
    """fANOVA per task (pooled) and per (task, variant) over complete trials, the test metric
    capped at `fences[task]` (no cap where absent); the pooled one also on `resamples`
    bootstrap resamples (`bootstrap`). `extra`: the study's own search dimensions (its config's
    `space.extra`), analysed beside the paper's four."""
    if target not in TARGETS:
        raise ValueError(f"unknown fANOVA target {target!r}; known: {', '.join(TARGETS)}")
    fences, metrics = fences or {}, metrics or {}
    rows, skipped, curves, surfaces, resampled = [], [], [], {}, []
    null_momentum: dict[str, np.ndarray] = {}
    own, boxes = extra_dimensions(extra)
    dims = {**HYPERPARAMETERS, **own}
    keys = list(dims)
    for ti, task in enumerate(tasks):
        in_task = done[done["task"] == task]
        groups = [(POOLED, in_task)] + [(v, in_task[in_task["variant"] == v]) for v in variants]
        for gi, (group, part) in enumerate(groups):
            x, raw = encode(part, dims), part["test_metric"].to_numpy(float)
            capped = np.minimum(raw, fences.get(task, np.inf))
            reason = why_not(x, capped)
            if reason:
                skipped.append({"task": task, "group": group, "reason": reason})
                continue
            trees = n_trees if group == POOLED or n_trees_variant is None else n_trees_variant
            bounds = analysis_bounds(x, space, boxes)
            group_seed = int(np.random.SeedSequence([seed, ti, gi]).generate_state(1)[0])
            y = rankdata(capped) / len(capped) if target == "rank" else capped
            back = _quantiles(capped) if target == "rank" else _identity
            fa = fanova.fit(x.to_numpy(), y, bounds, keys, n_trees=trees, seed=group_seed)
            for r in fa.importances():
                rows.append(
                    {
                        "task": task,
                        "group": group,
                        **r,
                        "hp": r["effect"],
                        "effect": _label(r["effect"]),
                        "n": len(y),
                        "capped": int((raw > capped).sum()),
                        "target": target,
                        "trees": trees,
                    }
                )
            if group == POOLED and resamples:
                boot = bootstrap(
                    x.to_numpy(),
                    capped,
                    bounds,
                    target,
                    resamples,
                    resample_trees,
                    group_seed,
                    keys,
                )
                resampled.append(boot.assign(task=task))
                null_momentum[task] = null_fractions(
                    x.to_numpy(),
                    y,
                    bounds,
                    keys.index("momentum"),
                    max(8, resamples // 4),
                    resample_trees,
                    group_seed + 1,
                    keys,
                )
            if group == POOLED:
                for d, key in enumerate(keys):
                    g = np.linspace(bounds[d, 0], bounds[d, 1], grid)
                    mean, std = fa.curve(d, g)
                    lo, hi = domain(metrics.get(task, ""))
                    mean, low, high = back(mean), back(mean - std), back(mean + std)
                    curves.append(
                        pd.DataFrame(
                            {
                                "task": task,
                                "hp": key,
                                "x": g,
                                "mean": mean,
                                "lo": np.clip(low, lo, hi),
                                "hi": np.clip(high, lo, hi),
                            }
                        )
                    )
                g_lr = np.linspace(*bounds[0], 40)
                g_h = np.linspace(*bounds[1], 40)
                surfaces[task] = (g_lr, g_h, back(fa.surface(0, 1, g_lr, g_h)))
    columns = [
        "task",
        "group",
        "effect",
        "kind",
        "hp",
        "fraction",
        "std",
        "n",
        "capped",
        "target",
        "trees",
    ]
    return Importance(
        importance=pd.DataFrame(rows, columns=columns),
        skipped=pd.DataFrame(skipped, columns=["task", "group", "reason"]),
        curves=pd.concat(curves, ignore_index=True)
        if curves
        else pd.DataFrame(columns=["task", "hp", "x", "mean", "lo", "hi"]),
        surfaces=surfaces,
        resampled=pd.concat(resampled, ignore_index=True)[RESAMPLED_COLUMNS]
        if resampled
        else pd.DataFrame(columns=RESAMPLED_COLUMNS),
        null_momentum=null_momentum,
    )


def _identity(v: np.ndarray) -> np.ndarray:
    return v


def _quantiles(values: np.ndarray):
    """Rank (in (0, 1]) -> the metric's empirical quantile in `values`, elementwise."""

    def back(r: np.ndarray) -> np.ndarray:
        r = np.asarray(r, float)
        return np.quantile(values, np.clip(r, 0.0, 1.0).reshape(-1)).reshape(r.shape)

    return back


def _label(effect: str) -> str:
    """'learning_rate x momentum' -> 'log10(learning rate) x log10(1 - momentum)'."""
    parts = effect.split(" x ")
    return " x ".join(HYPERPARAMETERS[p][1] if p in HYPERPARAMETERS else p for p in parts)


def wide(importance: pd.DataFrame, task: str) -> pd.DataFrame:
    """Groups (rows: pooled first, then variants) x effects (columns) of one task's fractions."""
    part = importance[importance["task"] == task]
    if part.empty:
        return pd.DataFrame()
    order = list(dict.fromkeys(part["effect"]))
    table = part.pivot(index="group", columns="effect", values="fraction")[order]
    return table.loc[list(dict.fromkeys(part["group"]))]
