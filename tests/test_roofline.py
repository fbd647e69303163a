"""The GPU roofline projection (`benchmarks.roofline`) and the bench's padding waste, on cases
computed by hand from the formulas of the module docstring."""

from __future__ import annotations

import json

import pytest

import variants
from benchmarks import packs, roofline
from variants.fast.triton_launch import LAUNCHES_PER_STEP


def test_step_bytes_by_hand():
    v, fgr, gru = (variants.VARIANTS[n] for n in ("V", "FGR", "GRU"))
    # V, N = 100, B = 1: G = 4, P = 3. Forward: 4 N^2 = 40000, (G + P) N = 700, a row reads
    # 4N + 2N = 600 and writes 4N + 3N = 700: 42000 floats. Backward: 40000, P N = 300, a row
    # reads 4N + 4N + 4N = 1200, writes 4N + N = 500, weight-gradient share 4N + N = 500: 42500
    assert roofline.step_bytes(v, 100) == {"forward": 168000, "backward": 170000}
    # FGR, N = 10: weights 400 + 900, (G + P) N = 70, a row 40+20+30 read, 40+30+30 written:
    # 1560 floats; backward 1300 + 30 + 230 + 110 = 1670
    assert roofline.step_bytes(fgr, 10) == {"forward": 6240, "backward": 6680}
    # GRU, N = 10: 300 + 30 + 90 = 420; backward 300 + 210 = 510; float64 doubles it
    assert roofline.step_bytes(gru, 10) == {"forward": 1680, "backward": 2040}
    assert roofline.step_bytes(gru, 10, itemsize=8) == {"forward": 3360, "backward": 4080}
    # batch rows scale only the per-row part: V, N = 100, B = 2 adds 1300 and 2200 floats
    assert roofline.step_bytes(v, 100, batch=2) == {"forward": 173200, "backward": 178800}


def test_step_time_by_hand():
    v = variants.VARIANTS["V"]
    assert sum(LAUNCHES_PER_STEP.values()) == 2
    # one trial: each launch moves well under 4 us worth of bytes: launch-bound, 2 x 4 us
    assert roofline.step_seconds(v, 100, 1) == pytest.approx(8e-6)
    # 256 trials: 43.008 MB and 43.52 MB at 3.35 TB/s = 12.838 + 12.991 us
    assert roofline.step_seconds(v, 100, 256) == pytest.approx(25.829e-6, rel=1e-4)
    # per trial-frame: the step over the trials; two packs add their steps
    assert roofline.trial_frame_us(v, [[100] * 256]) == pytest.approx(25.829 / 256, rel=1e-4)
    assert roofline.trial_frame_us(v, [[100], [50, 40]]) == pytest.approx(16 / 3)
    assert roofline.trial_frame_us(v, [[100], [50, 40]], directions=2) == pytest.approx(32 / 3)


def test_bench_cut_and_waste():
    widths = [20, 200, 190, 180, 100, 25]
    assert packs.cut(widths, 2, "cpu") == [[0, 5], [4, 3], [2, 1]]
    assert packs.cut(widths, 8, "cuda") == [[0, 5], [4], [3, 2, 1]]
    # (20^2 + 25^2) + 100^2 + (180^2 + 190^2 + 200^2) over 2 25^2 + 100^2 + 3 200^2
    assert packs.cut_waste([[20, 25], [100], [180, 190, 200]]) == pytest.approx(1 - 119525 / 131250)


def test_projection_cli_json(capsys):
    from odyssey.cli import main

    assert main(["bench", "study", "--protocol", "paper", "--projection", "--packs", "4"]) == 0
    assert "GPU projection, NOT measured" in capsys.readouterr().out
    assert main(["bench", "study", "--protocol", "paper", "--projection", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["gpu_projection"]
    assert [r["pack"] for r in rows] == [1, 4, 8, 16]
    assert rows[0]["projected_us_per_trial_frame"] == 8.0  # one trial: launch-bound
    assert all(r["launches_per_step"] == 2 and 0 <= r["pad_waste"] <= 0.25 for r in rows)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_paper_bench_prints_waste_and_projection(monkeypatch, capsys, device):
    """The measured table carries the pad waste; on CUDA the projection stands beside the
    measured time, elsewhere it is printed alone, labelled as not measured (training stubbed)."""
    from odyssey.cli import main

    row = {
        "task": "jsb_chorales",
        "pack": 4,
        "trials": 4,
        "pad_waste": 0.125,
        "projected_gpu_us_per_trial_frame": 2.5,
        "us_per_trial_frame": 9.0,
        "speedup": 1.5,
        "trial_epochs_per_core_hour": 100.0,
        "projected_grid_core_hours": 7.0,
        "mean_epochs": 100.0,
        "mean_epochs_from": "assumed",
    }
    monkeypatch.setattr(packs, "run", lambda *a, **k: {"rows": [row]})
    args = ["bench", "study", "--protocol", "paper", "--packs", "4", "--device", device]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "12%" in out or "13%" in out  # the pad waste
    assert ("projected us (loop)" in out) == (device == "cuda")
    assert ("GPU projection, NOT measured" in out) == (device == "cpu")
