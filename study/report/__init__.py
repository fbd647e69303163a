"""The study report (`odyssey report`): the paper's analysis of one study as an HTML page.

Reads only `results/<study>/trials.parquet` and `config.yaml`; writes `reports/<study>/` with
`index.html` (self-contained), `figures/`, `tables/*.csv` and `summary.md`. Modules: `load`
(reading), `stats` (Welch tests, Holm, effect sizes), `fanova` and `importance` (hyperparameter
importance), `paper` (the paper's findings), `provenance`, `plots`, `page` and `render` (HTML),
`build` (the entry point).
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
