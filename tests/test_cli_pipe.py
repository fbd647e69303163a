"""A closed pipe (`odyssey variants --json | head`) ends every command quietly: exit status 1,
as rich's console does, and nothing on stderr (no BrokenPipeError traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "command", [["variants", "--json"], ["variants"], ["tasks", "--json"], ["status", "x"]]
)
def test_a_closed_pipe_ends_quietly(command, tmp_path):
    if command[0] == "status":  # a finished study's status, from a saved config and table
        command = ["status", "reference-jsb", "--results", str(ROOT / "results")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen(
        [sys.executable, "-m", "odyssey", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env=env,
    )
    p.stdout.close()  # the reader is gone before the command writes a byte (`| head -0`)
    err = p.stderr.read().decode()
    assert p.wait(120) == 1, err
    assert err == ""
