"""The study report (`odyssey report`): the paper's analysis of one study as an HTML page.

Reads only `results/<study>/` (`trials.parquet`, `epochs.parquet/`, `config.yaml`, `data.json`);
writes `reports/<study>/` with `index.html` (self-contained), `figures/`, `tables/*.csv` and
`summary.md`. Modules: `load` (reading), `stats` (rank and Welch tests, Holm, effect sizes,
divergence fences), `power` (the tests' power where we differ from the paper), `fanova` and
`importance` (hyperparameter importance), `learning` (learning curves), `paper` and
`paper_facts.yaml` (the paper's findings, tagged), `provenance`, `plots`, `page`, `render` and
`render_paper` (HTML), `build` (the entry point), `screenshot` (headless Chromium PNGs).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["Settings", "build"]


def build(
    study: str, results_dir: Path = Path("results"), out_dir: Path | None = None, settings=None
) -> Path:
    """Build `<out_dir>/index.html` (default `reports/<study>/`) and return its path."""
    from study.report.build import build as _build

    return _build(study, results_dir, out_dir, settings)


def __getattr__(name: str):
    if name == "Settings":
        from study.report.build import Settings

        return Settings
    raise AttributeError(name)
