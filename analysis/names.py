"""What the report calls things: variant order and titles (the first variant is the baseline),
task titles, metrics and metric directions.

A study records them in its `data.json` when it starts (`study.setup.record_data`); declared
variants are also named in its `config.yaml` (`custom_variants`). A study from before it did so
gets the paper's names from the small table below: the report never imports the `variants` or
`tasks` registries (and so never torch) to name things.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from study import results

# The paper's variants, in its order (Greff et al. 2017, Table 1 and Fig. 3), as the registry
# (`variants.VARIANTS`) titles them; GRU is ours, the paper's footnote aside.
PAPER_VARIANTS: dict[str, str] = {
    "V": "vanilla: peepholes, forget gate, g = h = tanh",
    "NIG": "i = 1 (no input gate)",
    "NFG": "f = 1 (no forget gate)",
    "NOG": "o = 1 (no output gate)",
    "NIAF": "g(x) = x (no input activation)",
    "NOAF": "h(x) = x (no output activation)",
    "NP": "no peepholes p_i, p_f, p_o",
    "CIFG": "f = 1 - i (coupled input and forget gate)",
    "FGR": "gates see i, f, o of t-1 (+9 N x N matrices R_ab)",
    "GRU": "GRU (torch.nn.GRU / cuDNN form of Chung et al. 2014)",
}


@dataclass(frozen=True)
class TaskName:
    """A task as the report names it."""

    title: str
    metric: str  # the metric's key, e.g. 'frame_error'; '' when not recorded
    direction: str = "minimize"  # results.DIRECTIONS

    @property
    def better(self) -> str:
        """'lower' or 'higher': which way the metric is better, in words."""
        return "higher" if self.direction == "maximize" else "lower"


PAPER_TASKS: dict[str, TaskName] = {
    "timit": TaskName("TIMIT (framewise phone classification, 61 classes)", "frame_error"),
    "iam_online": TaskName("IAM-OnDB (online handwriting, CTC character error)", "char_error"),
    "jsb_chorales": TaskName("JSB Chorales (polyphonic music, next-step NLL)", "nll"),
}


@dataclass(frozen=True)
class Names:
    """Variant and task names in the report's order, with their titles."""

    variants: dict[str, str]  # name -> title; the first is the baseline
    tasks: dict[str, TaskName]

    @property
    def baseline(self) -> str:
        return next(iter(self.variants))

    def title(self, task: str) -> str:
        return self.tasks[task].title if task in self.tasks else task


def study_names(summary: results.DataSummary | None, config: dict[str, Any]) -> Names:
    """Names from the study's data.json (`summary`) and config.yaml (declared variants), the
    paper's table for what they do not say."""
    variants = dict(summary.variants) if summary and summary.variants else dict(PAPER_VARIANTS)
    declared = config.get("custom_variants")
    for name, flags in (declared if isinstance(declared, dict) else {}).items():
        variants.setdefault(
            str(name), results.declared_title(flags if isinstance(flags, dict) else {})
        )
    tasks: dict[str, TaskName] = {}
    for name, entry in (summary.tasks if summary else {}).items():
        if entry.get("title"):
            tasks[name] = TaskName(
                str(entry["title"]), str(entry.get("metric") or ""), _direction(entry)
            )
    for name, task in PAPER_TASKS.items():
        tasks.setdefault(name, task)
    return Names(variants, tasks)


def _direction(entry: dict[str, Any]) -> str:
    direction = entry.get("direction")
    return direction if direction in results.DIRECTIONS else "minimize"
