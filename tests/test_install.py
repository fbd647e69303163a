""".ci/install as a newcomer sees it: a line per stage with its time, progress while pip works,
pip's own output in .venv/install.log, its warnings once each; on failure the log's tail.
Run against a stand-in `.venv/bin/python` that answers like pip, so it takes a second."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FAKE_PYTHON = """#!/usr/bin/env bash
if [ "$1" = "-c" ]; then echo "torch 2.13.0+cpu optuna 4 ray 2.60 mlflow 3"; exit 0; fi
case "$*" in *-e*) [ -n "${FAIL:-}" ] && { echo "ERROR: no matching distribution"; exit 1; } ;; esac
echo "Looking in links: /opt/wheels"
echo "Collecting alpha"
echo "WARNING: Location 'file:///opt/pypi-more/simple/alpha/' is ignored: it is neither a file nor a directory."
sleep 1.5
echo "Processing /opt/wheels/beta-1.0-py3-none-any.whl"
echo "WARNING: Location 'file:///opt/pypi-more/simple/beta/' is ignored: it is neither a file nor a directory."
echo "WARNING: beta 1.0 has a yanked dependency"
echo "Installing collected packages: alpha, beta"
echo "Successfully installed alpha-1 beta-1.0"
"""


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / ".ci" / "install", repo / ".ci" / "install")
    py = repo / ".venv" / "bin" / "python"
    py.parent.mkdir(parents=True)
    py.write_text(FAKE_PYTHON)
    py.chmod(py.stat().st_mode | stat.S_IEXEC)
    return repo


def _install(repo: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(repo / ".ci" / "install")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ODYSSEY_INSTALL_PROGRESS_S": "1", **env},
    )


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_install_reports_each_stage_with_its_time(tmp_path):
    repo = _repo(tmp_path)
    r = _install(repo)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    stages = [line for line in lines if line.startswith("[")]
    assert [s.split("]")[0] + "]" for s in stages] == ["[1/3]", "[2/3]", "[3/3]"]
    done = [line for line in lines if line.startswith("  done in ")]
    assert len(done) == 3 and all(line.endswith("s (installed 2 packages)") for line in done)
    assert any(line.startswith("  ... 1s: ") for line in lines)  # progress while pip works
    # pip's warnings once each; the machine's index notes as one count
    assert lines.count("pip: WARNING: beta 1.0 has a yanked dependency") == 1
    assert "pip: 6 notes that a configured package index lacks a package" in r.stdout
    assert lines[-1].startswith("installed in ") and "torch 2.13.0" in lines[-1]
    assert "Collecting alpha" not in r.stdout  # pip's chatter is in the log
    assert "Collecting alpha" in (repo / ".venv" / "install.log").read_text()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_install_failure_shows_the_end_of_the_log(tmp_path):
    r = _install(_repo(tmp_path), FAIL="1")
    assert r.returncode == 1
    assert "failed after" in r.stderr and "ERROR: no matching distribution" in r.stderr
    assert "installed in" not in r.stdout


def test_our_packaging_builds_without_warnings(tmp_path):
    """The editable build pip runs for `.ci/install`, here through setuptools' own hook: no
    warning from our pyproject.toml (pip prints a backend's warnings as BuildBackendWarning;
    for a flat layout without `package-dir`, setuptools warns on every editable install)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for pkg in ("variants", "tasks", "study", "benchmarks"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    code = (
        "import warnings; warnings.simplefilter('always')\n"
        "from setuptools import build_meta as b\n"
        f"print('WHEEL', b.build_editable({str(tmp_path / 'dist')!r}))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=src, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "WHEEL lstm_odyssey-0.1.0" in r.stdout
    warned = [
        line for line in r.stderr.splitlines() if "Warning" in line or "InformationOnly" in line
    ]
    assert not warned, "\n".join(warned)
