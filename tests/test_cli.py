"""The `odyssey` command line as a user meets it: help, tables, JSON, data commands, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from odyssey.cli import main

COMMANDS = ["variants", "tasks", "data", "run", "status", "report", "bench"]


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for command in COMMANDS:
        assert command in text


def test_console_script_runs():
    out = subprocess.run(
        [sys.executable, "-m", "odyssey", "variants", "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = json.loads(out)
    assert [r["name"] for r in rows] == [
        "V",
        "NIG",
        "NFG",
        "NOG",
        "NIAF",
        "NOAF",
        "NP",
        "CIFG",
        "FGR",
        "GRU",
        "RNN",
        "LEAKY",
    ]
    params = {r["name"]: r["params"] for r in rows}
    assert params["V"] == 4 * 100 * 139 + 700 and params["FGR"] == params["V"] + 9 * 100 * 100
    assert params["RNN"] == 100 * 139 + 200 == params["LEAKY"]  # two biases; bias + tau


def test_variants_table(capsys):
    assert main(["variants"]) == 0
    out = capsys.readouterr().out
    assert "CIFG" in out and "56,300" in out


def test_tasks_json(capsys):
    assert main(["tasks", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"timit", "iam_online", "jsb_chorales", "adding", "counting"}
    assert (rows["timit"]["input_size"], rows["timit"]["output_size"]) == (39, 61)
    assert (rows["iam_online"]["input_size"], rows["iam_online"]["output_size"]) == (4, 82)
    assert rows["jsb_chorales"]["bidirectional"] is False and rows["timit"]["bidirectional"] is True
    assert (rows["counting"]["input_size"], rows["counting"]["output_size"]) == (2, 3)


def test_data_prepare_then_info_json(tmp_path, capsys):
    assert (
        main(["data", "prepare", "jsb_chorales", "--size", "5", "--data-dir", str(tmp_path)]) == 0
    )
    capsys.readouterr()
    assert main(["data", "info", "jsb_chorales", "--json", "--data-dir", str(tmp_path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["source"] == "real" and info["input_size"] == 88 and info["output_size"] == 88
    assert info["splits"]["train"]["sequences"] == 5
    assert set(info["splits"]) == {"train", "valid", "test"}
    assert all(set(s) == {"sequences", "frames"} for s in info["splits"].values())


def test_user_errors_are_one_clear_line(tmp_path, capsys):
    assert main(["data", "prepare", "timitt", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'timitt'; known: timit, iam_online, jsb_chorales" in err
    assert "Traceback" not in err
    assert main(["data", "info", "jsb_chorales", "--data-dir", str(tmp_path / "empty")]) == 2
    assert "odyssey data prepare jsb_chorales" in capsys.readouterr().err


def test_sigterm_stops_a_forked_child_quietly(capfd):
    """Data preparation's process pool stops its workers with SIGTERM: they must die as without
    the CLI's handler (no KeyboardInterrupt traceback), while the main process gets Ctrl-C."""
    import multiprocessing as mp
    import signal
    import time

    from study import signals

    old = signal.getsignal(signal.SIGTERM)
    signals.terminate_as_interrupt()  # what main() installs
    try:
        child = mp.get_context("fork").Process(target=time.sleep, args=(30,))
        child.start()
        time.sleep(0.3)
        child.terminate()
        child.join(10)
        assert child.exitcode == -signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            signals.raise_interrupt(signal.SIGTERM, None)
    finally:
        signal.signal(signal.SIGTERM, old)
    assert "Traceback" not in capfd.readouterr().err
