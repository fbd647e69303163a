"""The package layering (README, "Layout"): variants, tasks -> study -> results/ -> analysis,
with the command line (odyssey/) on top of study, analysis and benchmarks; no arrow runs back up.

variants imports torch only (no other package of ours; ninja only to build its kernel); tasks
never imports variants or study; only study imports ray, optuna or mlflow, and the training loop
and model import none of them; analysis (the report) reads the results folder through
`study.results` alone and imports neither torch nor any package that would bring it.
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"variants", "tasks", "study", "analysis", "benchmarks", "odyssey"}
SCHEDULING = {"ray", "optuna", "mlflow"}
# what the report may import besides the stdlib and itself: the results contract and the
# scientific stack (PIL: matplotlib's image library, for analysis.screenshot)
ANALYSIS_ALLOWED = {"numpy", "scipy", "pandas", "pyarrow", "sklearn", "statsmodels"} | {
    "matplotlib",
    "seaborn",
    "yaml",
    "jinja2",
    "markupsafe",
    "PIL",
}
ANALYSIS_FORBIDDEN = {"torch", "variants", "tasks"} | SCHEDULING


def imports(path: Path, depth: int = 1) -> set[str]:
    """Absolute module names `path` imports, cut to their first `depth` parts."""
    tree = ast.parse(path.read_text(), str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {".".join(a.name.split(".")[:depth]) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if depth > 1 and "." not in node.module:  # `from study import results`
                found |= {f"{node.module}.{a.name}" for a in node.names}
            else:
                found.add(".".join(node.module.split(".")[:depth]))
    return found


def files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize(
    "package,forbidden",
    [
        ("variants", (OURS - {"variants"}) | SCHEDULING),
        ("tasks", (OURS - {"tasks"}) | SCHEDULING),
        ("benchmarks", SCHEDULING | {"odyssey"}),
        ("analysis", ({"variants", "tasks", "benchmarks", "odyssey"}) | SCHEDULING),
        ("study", {"analysis", "benchmarks", "odyssey"}),
    ],
)
def test_lower_layers_do_not_import_upwards(package, forbidden):
    assert files(package), f"no modules found in {package}/"
    bad = {str(p.relative_to(ROOT)): sorted(imports(p) & forbidden) for p in files(package)}
    assert not {k: v for k, v in bad.items() if v}


def test_variants_imports_only_torch_and_the_stdlib():
    # ninja: only the build tool of the fused kernel (variants/fast/build.py), found on PATH
    allowed = {"torch", "variants", "ninja", "__future__"} | set(sys.stdlib_module_names)
    # triton: only the optional GPU kernels, imported when their path runs (variants.fast)
    optional = {
        "variants/fast/triton_lstm.py",
        "variants/fast/triton_gru.py",
        "variants/fast/triton_noise.py",
    }
    bad = {
        str(p.relative_to(ROOT)): sorted(
            imports(p) - allowed - ({"triton"} if str(p.relative_to(ROOT)) in optional else set())
        )
        for p in files("variants")
    }
    assert not {k: v for k, v in bad.items() if v}


@pytest.mark.parametrize(
    "module",
    [
        "study/train.py",
        "study/pack.py",
        "study/evaluation.py",
        "study/model.py",
        "study/optim.py",
        "study/slots.py",
    ],
)
def test_training_loop_imports_no_scheduler(module):
    path = ROOT / module
    assert path.is_file(), f"{module} is part of the design"
    assert not imports(path) & SCHEDULING


def test_the_report_builder_reads_files_not_services():
    for path in files("analysis"):
        assert not imports(path) & SCHEDULING, path


def test_the_report_imports_only_the_results_contract_and_the_scientific_stack():
    allowed = ANALYSIS_ALLOWED | {"analysis", "__future__"} | set(sys.stdlib_module_names)
    assert files("analysis"), "no modules found in analysis/"
    for path in files("analysis"):
        ours = {m for m in imports(path, depth=2) if m.split(".")[0] == "study"}
        assert ours <= {"study.results"}, (path, sorted(ours))
        outside = imports(path) - allowed - {"study"}
        assert not outside, (path, sorted(outside))
        assert not imports(path) & ANALYSIS_FORBIDDEN, path


BLOCKED = ("torch", "ray", "optuna", "mlflow", "variants", "tasks")
# A finder first on sys.meta_path makes importing a blocked package fail. Not
# `sys.modules[name] = None`: scipy looks torch up in sys.modules (to recognise its tensors) and
# trips on a None there, so that block would fail for a reason of scipy's, not ours.
RUN_BLOCKED = """
import importlib.abc
import sys

BLOCKED = {blocked!r}


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked in this test")
        return None


sys.meta_path.insert(0, Block())
from pathlib import Path

import analysis
from analysis.model import Settings

out = Path(sys.argv[1])
fast = Settings(n_trees=4, n_trees_variant=2, n_resamples=50)
index = analysis.build("reference-jsb", out / "results", out / "report", fast)
assert "Beside the paper" in index.read_text()
loaded = {{m.split(".")[0] for m in sys.modules}}
assert not loaded & set(BLOCKED), sorted(loaded & set(BLOCKED))
ours = sorted(m for m in sys.modules if m.startswith("study.") and m != "study.results")
assert not ours, ours
print("built", index)
"""


def test_the_report_builds_with_torch_and_the_scheduler_blocked(tmp_path):
    """The shipped reference study's report, built in a process where importing torch, Ray,
    Optuna, MLflow, variants or tasks fails: the report needs none of them."""
    import shutil
    import subprocess

    shutil.copytree(ROOT / "results" / "reference-jsb", tmp_path / "results" / "reference-jsb")
    shutil.rmtree(tmp_path / "results" / "reference-jsb" / "report", ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, "-c", RUN_BLOCKED.format(blocked=BLOCKED), str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "built" in done.stdout
