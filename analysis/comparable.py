"""Whether a study's task can be held against the paper's findings, and how its protocol differs
from the paper's.

The paper's findings (its Fig. 3 verdicts, best results and fANOVA claims) were measured on three
real corpora under one protocol: random search over hidden size [20, 200] (log-uniform integer),
learning rate [1e-6, 1e-2] (log-uniform), 1 - momentum [0.01, 1] (log-uniform) and input noise
[0, 1], online SGD (batch size 1), at most 150 epochs, early stopping after 15 without a
validation improvement. The `paper` preset (`study/presets/paper.yaml`) states that protocol for
the harness; it is read here, never typed a second time. A task is comparable only when it is one
of the paper's tasks, on its real, full corpus, under that protocol; anything else is said
("not comparable") with exactly what differs.

`protocol_differences` and `comparability` are pure; `paper_protocol` reads the preset.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from study import results

# the shipped `paper` preset, beside the results contract in the `study` package (read as a file:
# importing `study.presets` is not part of the report's contract)
PAPER_PRESET = Path(results.__file__).resolve().with_name("presets") / "paper.yaml"
PAPER_TASKS = ("timit", "iam_online", "jsb_chorales")

# search-space keys in the paper's words, and how their bounds are written
SPACE = {
    "hidden_size": "hidden size",
    "learning_rate": "learning rate",
    "one_minus_momentum": "1 - momentum",
    "input_noise": "input noise",
}
TRAINING = {  # key -> (its name, a sentence with the study's value and the paper's)
    "batch_size": ("batch size", "batch size {v} (paper {p})"),
    "max_epochs": ("maximum epochs", "at most {v} epochs (paper {p})"),
    "patience": ("patience", "early stopping after {v} epochs without improvement (paper {p})"),
}


@cache
def paper_protocol() -> dict[str, Any]:
    """The paper's protocol as the `paper` preset states it: {space, training, sampler}."""
    preset = yaml.safe_load(PAPER_PRESET.read_text())
    return {
        "space": {k: preset["space"][k] for k in SPACE},
        "training": {k: preset["training"][k] for k in TRAINING},
        "sampler": preset["sampler"],
    }


def _number(v: float) -> str:
    """Bounds as the brief writes them: 1e-06 -> '1e-6', 0.05 -> '5e-2', 200 -> '200', 0.5."""
    v = float(v)
    if v == 0 or 0.1 <= abs(v) < 1e4:
        return f"{v:g}"
    exponent = math.floor(math.log10(abs(v)))
    return f"{round(v / 10**exponent, 3):g}e{exponent}"


def _pair(value: Any) -> tuple[float, float] | None:
    try:
        lo, hi = (float(x) for x in value)
    except (TypeError, ValueError):
        return None
    return lo, hi


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def protocol_differences(config: Mapping[str, Any], paper: Mapping[str, Any]) -> list[str]:
    """How a study's config (config.yaml as a mapping) differs from the paper's protocol
    (`paper_protocol()`), one phrase each, e.g. 'batch size 4 (paper 1)'; [] when it is the
    paper's. A setting the config does not record is a difference ('... not recorded')."""
    out: list[str] = []
    space = config.get("space") if isinstance(config.get("space"), Mapping) else {}
    for key, words in SPACE.items():
        p_lo, p_hi = paper["space"][key]
        paper_text = f"{_number(p_lo)}..{_number(p_hi)}"
        found = _pair(space.get(key)) if space else None
        if found is None:
            out.append(f"{words} range not recorded (paper {paper_text})")
        elif not (_same(found[0], p_lo) and _same(found[1], p_hi)):
            out.append(f"{words} {_number(found[0])}..{_number(found[1])} (paper {paper_text})")
    training = config.get("training") if isinstance(config.get("training"), Mapping) else {}
    for key, (name, sentence) in TRAINING.items():
        want = paper["training"][key]
        value = training.get(key) if training else None
        if value is None:
            out.append(f"{name} not recorded (paper {want})")
        elif value != want:
            out.append(sentence.format(v=value, p=want))
    sampler = config.get("sampler")
    if sampler is not None and sampler != paper["sampler"]:
        out.append(f"search by {sampler} (paper: {paper['sampler']} search)")
    return out


@dataclass(frozen=True)
class TaskData:
    """What a study's task ran on, as the results folder records it."""

    kind: str  # 'paper' (one of the paper's tasks), 'plugin' (the user's) or 'other'
    stand_in: bool | None  # a generated stand-in corpus (None: not recorded)
    plugin: str = ""  # the plug-in's import path, e.g. 'mylab.tasks:ADDING'
    size: int | None = None  # training sequences the study cut the corpus to (None: all)

    @property
    def label(self) -> str:
        """The data in words: 'real corpus', 'generated stand-in', 'your task (plug-in ...)'."""
        if self.kind == "plugin":
            return f"your task (plug-in {self.plugin})" if self.plugin else "your task (plug-in)"
        if self.kind == "other":
            return "not one of the paper's tasks"
        base = {None: "unknown", True: "generated stand-in", False: "real corpus"}[self.stand_in]
        return base + (f", cut to {self.size} training sequences" if self.size else "")


@dataclass(frozen=True)
class Comparability:
    """Whether a task's findings may be held against the paper's, and what bars it."""

    comparable: bool
    reasons: tuple[str, ...] = ()  # what differs from the paper (empty when comparable)

    @property
    def text(self) -> str:
        if self.comparable:
            return "comparable with the paper"
        return "not comparable: " + "; ".join(self.reasons)


def comparability(task: str, data: TaskData, differences: list[str]) -> Comparability:
    """Comparable only for one of the paper's tasks on its real, full corpus under the paper's
    protocol (`differences` from `protocol_differences` is empty); else every reason, the
    data's first."""
    reasons: list[str] = []
    if data.kind == "plugin":
        reasons.append(f"{task} is your own task (a plug-in), not one of the paper's")
    elif data.kind == "other" or task not in PAPER_TASKS:
        reasons.append(f"{task} is not one of the paper's tasks")
    elif data.stand_in is None:
        reasons.append("whether the data is the real corpus is not recorded")
    elif data.stand_in:
        reasons.append("generated stand-in corpus (paper: the real one)")
    if data.kind == "paper" and data.size:
        reasons.append(f"corpus cut to {data.size} training sequences (paper: all of it)")
    reasons += differences
    return Comparability(not reasons, tuple(reasons))


def task_data(
    task: str,
    entry: Mapping[str, Any] | None,
    stand_in: bool | None,
    plugin: Mapping[str, Any] | None,
    config: Mapping[str, Any],
) -> TaskData:
    """A task's `TaskData` from its data.json entry, its trials' stand-in flag, its data.json
    plug-in entry (None: not a plug-in) and the study's config (a `data.<task>.size` cut)."""
    entry = entry or {}
    if plugin is not None or entry.get("source") == "plugin":
        return TaskData("plugin", None, str((plugin or {}).get("path") or ""))
    if task not in PAPER_TASKS:
        return TaskData("other", stand_in)
    if stand_in is None and isinstance(entry.get("stand_in"), bool):
        stand_in = entry["stand_in"]
    data = config.get("data") if isinstance(config.get("data"), Mapping) else {}
    spec = data.get(task) if isinstance(data.get(task), Mapping) else {}
    size = spec.get("size")
    return TaskData("paper", stand_in, size=int(size) if isinstance(size, int) else None)
