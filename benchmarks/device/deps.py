"""The distributions the GPU checks (`check.sh`) need beyond what a CUDA image with PyTorch has:
pyproject.toml's dependencies and, recursively, their own requirements (as installed in the
environment running this), less the services and report libraries the checks never import and
what the image provides. One name per line, with the version installed here when there is one.

    python benchmarks/device/deps.py            # name==version lines (wheels.sh downloads them)
    python benchmarks/device/deps.py --missing  # those not installed in this environment
"""

from __future__ import annotations

import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

try:
    from packaging.requirements import Requirement
except ImportError:  # pip carries its own copy
    from pip._vendor.packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
# the study's services and the report's libraries: the checks (gpu tests, `bench study`) never
# import them, and their wheels would outweigh everything else
NOT_USED = {"ray", "mlflow", "optuna", "seaborn", "matplotlib", "scikit-learn", "statsmodels"}
# a CUDA image with PyTorch (and Triton, which CUDA builds of torch depend on) has these
IMAGE = {"torch", "triton", "numpy", "pandas", "pyarrow", "scipy", "pyyaml", "jinja2", "filelock"}
IMAGE |= {"pytest", "pytest-timeout", "setuptools", "pip", "markupsafe", "typing-extensions"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def needed() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [Requirement(r) for r in project["dependencies"]]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = canonical(req.name)
        if name in seen or name in NOT_USED or name in IMAGE:
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        seen.add(name)
        try:
            todo += [Requirement(r) for r in md.requires(name) or []]
        except md.PackageNotFoundError:
            pass  # not installed here: its own requirements are unknown
    return sorted(seen)


def main(argv: list[str]) -> int:
    for name in needed():
        try:
            version = md.version(name)
        except md.PackageNotFoundError:
            print(name)
            continue
        if "--missing" not in argv:
            print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
