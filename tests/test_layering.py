"""The package layering of DESIGN.md: variants, tasks -> study -> results -> reports.

variants imports torch only (no other package of ours; ninja only to build its kernel); tasks never imports variants or study;
only study imports ray, optuna or mlflow, and the training loop and model import none of them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"variants", "tasks", "study", "benchmarks"}
SCHEDULING = {"ray", "optuna", "mlflow"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize(
    "package,forbidden",
    [
        ("variants", (OURS - {"variants"}) | SCHEDULING),
        ("tasks", (OURS - {"tasks"}) | SCHEDULING),
        ("benchmarks", SCHEDULING),
    ],
)
def test_lower_layers_do_not_import_upwards(package, forbidden):
    assert files(package), f"no modules found in {package}/"
    bad = {str(p.relative_to(ROOT)): sorted(imports(p) & forbidden) for p in files(package)}
    assert not {k: v for k, v in bad.items() if v}


def test_variants_imports_only_torch_and_the_stdlib():
    import sys

    # ninja: only the build tool of the fused kernel (variants/fast/build.py), found on PATH
    allowed = {"torch", "variants", "ninja", "__future__"} | set(sys.stdlib_module_names)
    bad = {str(p.relative_to(ROOT)): sorted(imports(p) - allowed) for p in files("variants")}
    assert not {k: v for k, v in bad.items() if v}


@pytest.mark.parametrize("module", ["study/train.py", "study/model.py"])
def test_training_loop_imports_no_scheduler(module):
    path = ROOT / module
    assert path.is_file(), f"{module} is part of the design"
    assert not imports(path) & SCHEDULING


def test_the_report_builder_reads_files_not_services():
    for path in files("study/report"):
        assert not imports(path) & SCHEDULING, path
