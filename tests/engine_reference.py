"""Reference runs of the training engine, and the fixture of their numbers
(tests/data/engine_reference.json) that tests/test_engine_reads.py holds the engine to bitwise.

The fixture was written with this script at commit 11b1a75 (before the engine kept finiteness,
noise and evaluation sums on the device), on the CPU:

    .venv/bin/python tests/engine_reference.py --write

Each case trains short trials on the CPU (JSB tiny): a pack of three slots over five trials (input
noise, a wider and a narrower trial, one diverging in epoch 1 and one in epoch 2 mid-epoch; slots
refilled), a single trial with two sequences a batch (GRU), two trials of a two-layer stack (the
one-at-a-time path) and an Adam pack with a diverging trial. It records every result field
(but `wall_s` and `started_at`), every epoch's metrics (but `time_s`) and a SHA-256 of each
trial's final weights; floats as `float.hex`, so equality is bitwise.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

import tasks
from study.config import TrainConfig
from study.pack import PackTrial, train_pack

FIXTURE = Path(__file__).parent / "data" / "engine_reference.json"
JSB = tasks.get("jsb_chorales")


def _hp(hidden: int, lr: float, momentum: float, noise: float) -> dict[str, Any]:
    return {"hidden_size": hidden, "learning_rate": lr, "momentum": momentum, "input_noise": noise}


# case -> (variant, settings, slots, {trial: (hparams, seed)})
CASES: dict[str, tuple[str, TrainConfig, int, dict[str, tuple[dict[str, Any], int]]]] = {
    "pack": (
        "V",
        TrainConfig(batch_size=1, max_epochs=4, patience=4, eval_batch_size=2),
        3,
        {
            "noise": (_hp(5, 0.05, 0.9, 0.3), 10),
            "wide": (_hp(8, 0.02, 0.5, 0.1), 11),
            "boom": (_hp(5, 6e36, 0.5, 0.1), 0),  # training loss inf in epoch 1
            "late": (_hp(5, 1.5e36, 0.9, 0.1), 3),  # training loss inf in epoch 2, keeps epoch 1
            "narrow": (_hp(3, 0.1, 0.0, 0.0), 12),  # takes a freed slot
        },
    ),
    "gru_batch2": (
        "GRU",
        TrainConfig(batch_size=2, max_epochs=3, patience=3, eval_batch_size=3),
        1,
        {"one": (_hp(6, 0.05, 0.9, 0.2), 5)},
    ),
    "stack": (
        "V",
        TrainConfig(batch_size=1, max_epochs=2, patience=2, eval_batch_size=2, layers=2),
        2,
        {"a": (_hp(4, 0.05, 0.9, 0.2), 7), "b": (_hp(3, 0.1, 0.5, 0.0), 8)},
    ),
    "adam": (
        "V",
        TrainConfig(batch_size=1, max_epochs=3, patience=3, eval_batch_size=2, optimizer="adam"),
        2,
        {"ok": (_hp(5, 0.01, 0.0, 0.2), 21), "boom": (_hp(5, 1e38, 0.0, 0.0), 22)},
    ),
}


def splits() -> dict:
    data = JSB.tiny(np.random.default_rng(0))
    return {"train": data["train"].subset(range(6)), **{s: data[s] for s in ("valid", "test")}}


def canonical(value: Any) -> Any:
    """JSON-able, floats as `float.hex` (bitwise; NaN and inf included)."""
    if isinstance(value, float):
        return value.hex()
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value


def digest(weights: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(weights):
        h.update(name.encode())
        h.update(weights[name].detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def run_case(name: str) -> dict[str, Any]:
    """One case's trials: {trial: {"result", "history", "weights"}} (canonical)."""
    variant, settings, slots, trials = CASES[name]
    histories: dict[str, list] = {}
    weights: dict[str, str] = {}
    out = {}
    pack = [PackTrial(key, hp, seed) for key, (hp, seed) in trials.items()]
    run = train_pack(
        JSB, variant, pack, splits(), settings, slots,
        lambda key, m: histories.setdefault(key, []).append(m), "cpu",
        on_finish=lambda key, w: weights.__setitem__(key, digest(w)),
    )  # fmt: skip
    for key, result in run:
        result = {k: v for k, v in result.items() if k not in ("wall_s", "started_at")}
        history = [{k: v for k, v in m.items() if k != "time_s"} for m in histories.get(key, [])]
        out[key] = canonical({"result": result, "history": history, "weights": weights[key]})
    return out


def run() -> dict[str, Any]:
    return {name: run_case(name) for name in CASES}


if __name__ == "__main__":
    got = run()
    if "--write" in sys.argv:
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        FIXTURE.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    for name, trials in got.items():
        for key, t in trials.items():
            print(name, key, t["result"]["status"], t["result"]["error"], t["result"]["epochs"])
