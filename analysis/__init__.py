"""The study report (`odyssey report`): the paper's analysis of one study as an HTML page.

Reads only `results/<study>/` (`trials.parquet`, `epochs.parquet/`, `config.yaml`, `data.json`),
through the results contract `study.results`, and imports nothing else of ours: no torch, Ray,
Optuna, MLflow, variants or tasks, so it runs anywhere pandas and matplotlib do. Writes
`reports/<study>/` with `index.html` (self-contained), `figures/`, `tables/*.csv` and
`summary.md`.

Modules: `load` (reading) and `names` (what things are called), `stats` (rank and Welch tests,
Holm, effect sizes, divergence fences), `power` (the tests' power where we differ from the
paper), `fanova` and `importance` (hyperparameter importance), `learning` (learning curves),
`paper` and `paper_facts.yaml` (the paper's findings, tagged), `provenance`, `model` (the typed
`Analysis`), `build` (the entry point: analyse, then write), `summary` (summary.md), `plots`,
`page`, `render`, `render_paper` and `templates/` (the HTML page), `screenshot` (headless
Chromium PNGs: `python -m analysis.screenshot`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from analysis.model import Settings

__all__ = ["Settings", "build"]


def build(
    study: str,
    results_dir: Path = Path("results"),
    out_dir: Path | None = None,
    settings: Settings | None = None,
) -> Path:
    """Build `<out_dir>/index.html` (default `reports/<study>/`) and return its path."""
    from analysis.build import build as _build

    return _build(study, results_dir, out_dir, settings)


def __getattr__(name: str):
    if name == "Settings":
        from analysis.model import Settings

        return Settings
    raise AttributeError(name)
