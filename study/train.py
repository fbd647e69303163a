"""One trial: a pack of one through the training engine (`study.pack`, where the protocol is).

A pure function: task, variant, hyperparameters, prepared splits, protocol settings and a seed in;
one flat result dict out; per-epoch metrics go to a `report(metrics)` callback. It imports none of
Ray, Optuna or MLflow, so it runs the same in a test, a Ray worker or a notebook. A trial trained
here gives the numbers it gives in any pack (on the CPU bitwise; see `study.pack`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from study.config import TrainConfig
from study.evaluation import evaluate_slots
from study.model import SequenceModel
from study.pack import PackTrial, train_pack
from tasks.base import SequenceSet, Splits, Task

Report = Callable[[dict[str, Any]], None]


def train(
    task: Task,
    variant: Any,
    hparams: dict[str, Any],
    splits: Splits,
    settings: TrainConfig,
    seed: int | torch.Generator,
    device: str | torch.device = "cpu",
    report: Report | None = None,
    hidden_size_meaning: str = "per_direction",
) -> dict[str, Any]:
    """Train one trial; returns `status` ('complete' | 'failed'), `error`, `n_params`, `epochs`,
    `best_epoch`, `val_metric`, `test_metric`, `train_loss` (all at the best validation epoch),
    `test_extra` (other test metrics at that epoch), `wall_s`, `device`, `numerics` (which
    implementation ran, `variants.fast.numerics`), `hidden_per_direction`, `started_at`."""
    on_epoch = None if report is None else (lambda _key, metrics: report(metrics))
    trial = PackTrial(0, hparams, seed)
    results = train_pack(
        task, variant, [trial], splits, settings, 1, on_epoch, device, hidden_size_meaning
    )
    ((_, result),) = list(results)
    return result


def evaluate(
    model: SequenceModel, task: Task, data: SequenceSet, batch_size: int, device: torch.device
) -> dict[str, float]:
    """Corpus-level metrics of a split for a single model, as training evaluates it."""
    device = torch.device(device)
    own_units = device.type == "cpu"
    return evaluate_slots(model, task, data, batch_size, [0], own_units, device)[0]
