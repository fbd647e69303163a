"""Where a study's numbers come from: trial counts against the config, failures, compute, data.

Pure `DataFrame -> DataFrame` summaries for the report's provenance section; a study still
running, a missing (task, variant) pair or an empty table are states to describe, not errors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import kruskal
from sklearn.ensemble import RandomForestRegressor

from analysis.importance import encode
from analysis.load import StudyResults, expected_trials
from analysis.stats import MIN_PER_GROUP, complete


def progress(res: StudyResults) -> pd.DataFrame:
    """Per (task, variant): complete, failed, other, expected and a state in words."""
    t = res.trials
    rows = []
    for task in res.tasks:
        for variant in res.variants:
            pair = t[(t["task"] == task) & (t["variant"] == variant)]
            n_ok = len(complete(pair))
            n_failed = int((pair["status"] == "failed").sum())
            n_other = len(pair) - n_ok - n_failed
            expected = expected_trials(res.config, task, variant)
            if len(pair) == 0:
                state = "missing" if expected else "not in this study"
            elif n_ok < MIN_PER_GROUP:
                state = "too few complete trials"
            elif expected is not None and n_ok + n_failed < expected:
                state = "in progress"
            else:
                state = "done"
            rows.append(
                {
                    "task": task,
                    "variant": variant,
                    "complete": n_ok,
                    "failed": n_failed,
                    "other": n_other,
                    "expected": expected,
                    "state": state,
                }
            )
    out = pd.DataFrame(
        rows, columns=["task", "variant", "complete", "failed", "other", "expected", "state"]
    )
    return out.astype({"expected": "Int64"})


def failures(trials: pd.DataFrame) -> pd.DataFrame:
    """Failed trials grouped by (task, variant, reason) with their count and trial numbers."""
    failed = trials[trials["status"] == "failed"]
    if failed.empty:
        return pd.DataFrame(columns=["task", "variant", "reason", "count", "trials"])
    g = failed.assign(reason=failed["error"].replace("", "(no reason recorded)")).groupby(
        ["task", "variant", "reason"], sort=False, observed=True
    )
    return (
        g["trial"].agg(count="size", trials=lambda s: ", ".join(map(str, sorted(s)))).reset_index()
    )


def _sizes(summary: dict) -> str:
    splits = summary.get("splits") or {}
    if not splits:
        return "unknown"
    return " / ".join(
        f"{splits[s].get('sequences', '?'):,}" if isinstance(splits.get(s), dict) else "?"
        for s in ("train", "valid", "test")
    )


def data_sources(
    trials: pd.DataFrame,
    tasks: list[str],
    data: dict[str, dict] | None = None,
    labels: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Per task: data source(s), what the data is (`labels`: the real corpus, a generated
    stand-in, the user's plug-in task, ...; from the trials' stand-in flags without them),
    metric name(s), and from the study's data.json (when there) the split sizes and notes."""
    data, labels = data or {}, labels or {}
    rows = []
    for task in tasks:
        part = trials[trials["task"] == task]
        flags = set(part["stand_in"].dropna().tolist())
        stand_in = None if not flags else bool(any(flags))
        label = labels.get(task) or {None: "unknown", True: "generated stand-in"}.get(
            stand_in, "real corpus"
        )
        rows.append(
            {
                "task": task,
                "data source": ", ".join(sorted(set(part["data_source"]))) or "no trials",
                "data": label,
                "metric": ", ".join(sorted(set(part["metric"]) - {""})) or "unknown",
                "trials": len(part),
                "sequences train / valid / test": _sizes(data.get(task, {})),
                "notes": "; ".join(data.get(task, {}).get("notes", [])) or "",
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "task",
            "data source",
            "data",
            "metric",
            "trials",
            "sequences train / valid / test",
            "notes",
        ],
    )


def stand_in_flags(trials: pd.DataFrame, tasks: list[str]) -> dict[str, bool | None]:
    """Task -> True if any of its trials ran on a generated stand-in, None when unknown."""
    out: dict[str, bool | None] = {}
    for task in tasks:
        flags = set(trials.loc[trials["task"] == task, "stand_in"].dropna().tolist())
        out[task] = bool(any(flags)) if flags else None
    return out


@dataclass(frozen=True)
class Totals:
    """Headline numbers of a study's table."""

    trials: int
    complete: int
    failed: int
    compute_s: float  # sum of wall_s
    devices: dict[str, int]  # device -> trials
    code_versions: dict[str, int]  # code version -> trials
    first_started: str
    last_finished: str


def totals(trials: pd.DataFrame) -> Totals:
    """Headline numbers: trial counts by status, compute time, devices, code versions."""
    wall = trials["wall_s"].sum(min_count=1)
    return Totals(
        trials=len(trials),
        complete=len(complete(trials)),
        failed=int((trials["status"] == "failed").sum()),
        compute_s=float(wall) if pd.notna(wall) else 0.0,
        devices={str(k): int(v) for k, v in trials["device"].value_counts().items()},
        code_versions={str(k): int(v) for k, v in trials["code_version"].value_counts().items()},
        first_started=str(trials["started_at"].astype(str).replace("", pd.NA).min())
        if len(trials)
        else "",
        last_finished=str(trials["finished_at"].astype(str).replace("", pd.NA).max())
        if len(trials)
        else "",
    )


def code_versions(trials: pd.DataFrame, done: pd.DataFrame) -> pd.DataFrame:
    """Per code version (the commit a trial ran on): trials, complete ones, variants and tasks
    run, when its trials started and finished, in order of first start."""
    if trials.empty:
        return pd.DataFrame(columns=["code version", "trials", "complete", "pairs", "from", "to"])
    ok = done.groupby("code_version").size()
    rows = []
    for version, part in trials.groupby("code_version", sort=False):
        rows.append(
            {
                "code version": str(version),
                "trials": len(part),
                "complete": int(ok.get(version, 0)),
                "pairs": len(part[["task", "variant"]].drop_duplicates()),
                "from": str(part["started_at"].replace("", pd.NA).min()),
                "to": str(part["finished_at"].replace("", pd.NA).max()),
            }
        )
    return pd.DataFrame(rows).sort_values(["from", "code version"]).reset_index(drop=True)


MIN_PER_VERSION = 10  # complete trials a code version needs to enter the check


def version_residuals(done: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Complete trials with `residual`: each trial's percentile rank of the test metric within
    its (task, variant), minus what a random forest on its hyperparameters and variant predicts
    for it out of bag. A study stopped and resumed does not split its trials at random between
    code versions: trials still running at a stop (long ones: small learning rates, large
    networks) are finished by the next version, so the raw metrics of two versions differ even
    when no code change touched training; the residuals take the hyperparameters out."""
    parts = []
    for _, part in done.groupby("task", sort=False):
        part = part.dropna(subset=["test_metric"])
        x = encode(part).assign(variant=pd.factorize(part["variant"])[0])
        ok = np.isfinite(x.to_numpy(float)).all(axis=1)
        part, x = part[ok], x[ok]
        if len(part) < 3 * MIN_PER_VERSION:
            continue
        y = part.groupby("variant")["test_metric"].rank(pct=True).to_numpy()
        forest = RandomForestRegressor(
            n_estimators=200, min_samples_leaf=5, oob_score=True, random_state=seed, n_jobs=1
        ).fit(x.to_numpy(float), y)
        parts.append(part.assign(residual=y - forest.oob_prediction_))
    return pd.concat(parts) if parts else done.iloc[:0].assign(residual=np.nan)


def version_effect(done: pd.DataFrame, seed: int = 0) -> str:
    """Whether the numbers moved between code versions, in one sentence: a Kruskal-Wallis
    test across versions of `version_residuals` (versions with at least MIN_PER_VERSION
    complete trials)."""
    res = version_residuals(done, seed)
    groups = [g["residual"].to_numpy() for _, g in res.groupby("code_version")]
    groups = [g for g in groups if len(g) >= MIN_PER_VERSION]
    if len(groups) < 2:
        return (
            f"Fewer than two versions have {MIN_PER_VERSION} complete trials (of a task with "
            f"{3 * MIN_PER_VERSION} or more), so whether a code change moved the numbers is "
            "not tested."
        )
    p = float(kruskal(*groups).pvalue)
    verdict = (
        "no sign that a code change moved the numbers"
        if p >= 0.05
        else "the versions DIFFER beyond what their trials' hyperparameters explain (a code "
        "change, or chance in what the forest leaves unexplained; the table's last column "
        "shows which version stands out)"
    )
    return (
        f"Each trial's rank within its (task, variant), less what its hyperparameters and "
        f"variant predict (out-of-bag random forest), compared across the {len(groups)} "
        f"versions with at least {MIN_PER_VERSION} complete trials (Kruskal-Wallis, "
        f"p = {p:.2g}): {verdict}. Hyperparameters are taken out because a resumed study "
        "finishes its longest trials in the next version; the test sees only shifts that are "
        "large against the spread of the trials."
    )


def reruns(found: pd.DataFrame) -> str:
    """What `odyssey verify`'s reruns showed, in a sentence per `numerics` of the recorded
    trials ('' without reruns)."""
    if found.empty:
        return ""
    versions = ", ".join(sorted(found["code_version"].astype(str).unique()))
    parts = []
    kinds = found["recorded_numerics"].astype(str) if "recorded_numerics" in found else None
    groups = found.groupby(kinds, sort=True) if kinds is not None else [("", found)]
    for kind, part in groups:
        n, same = len(part), int(part["identical"].sum())
        text = f"of {n} recorded with numerics {kind}, {same} reproduced bitwise"
        if same < n:
            rel = part.loc[~part["identical"].astype(bool), "rel_test"].abs()
            moved = int((part["best_epoch"] != part["recorded_best_epoch"]).sum())
            text += (
                f"; the test metric of the others moved by {rel.median():.1e} relative "
                f"(median), {rel.max():.1e} at most, and the best epoch in {moved}"
            )
        parts.append(text)
    return (
        f"{len(found)} recorded trials were retrained with their parameters and seeds on "
        f"{versions} (odyssey verify): " + "; ".join(parts) + "."
    )


def plugins(found: dict[str, dict[str, dict]]) -> pd.DataFrame:
    """One row per plug-in (the user's variant or task): its import path, distribution,
    version and the first 12 hex digits of its sha256."""
    rows = [
        {
            "kind": kind.removesuffix("s"),
            "name": name,
            "path": entry.get("path", ""),
            "distribution": entry.get("distribution", ""),
            "version": entry.get("version", ""),
            "sha256": (entry.get("sha256") or "")[:12],
        }
        for kind, entries in found.items()
        for name, entry in entries.items()
    ]
    return pd.DataFrame(rows, columns=["kind", "name", "path", "distribution", "version", "sha256"])


def human_seconds(s: float) -> str:
    """12345 -> '3 h 25 min'."""
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"
