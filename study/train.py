"""The training loop of one trial (Greff et al. 2017, section III).

A pure function: task, variant, hyperparameters, prepared splits, protocol settings and a seed in;
one flat result dict out; per-epoch metrics go to a `report(metrics)` callback. It imports none of
Ray, Optuna or MLflow, so it runs the same in a test, a Ray worker or a notebook.

Protocol: minibatches of `batch_size` sequences (1 in the paper), reshuffled every epoch with the
trial's generator; fresh Gaussian input noise (std `input_noise`) at every presentation during
training only; loss = the task's summed loss / number of sequences in the minibatch; pylstm's
Nesterov step with the learning rate scaled by (1 - momentum) (`study.optim`); validation and test
evaluated after every epoch as corpus-level metrics; early stopping after `patience` epochs without
a validation improvement, at most `max_epochs`; the reported test metric is the one at the best
validation epoch. A NaN / inf loss or parameter ends training; the trial is failed (with the
reason) unless an earlier epoch gave a finite validation metric, whose result it then keeps
(status complete, the divergence noted in `error`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

from study.config import TrainConfig
from study.model import build_model, count_parameters, hidden_per_direction
from study.optim import NesterovStep
from tasks.base import SequenceSet, Splits, Task

Report = Callable[[dict[str, Any]], None]


class Diverged(Exception):
    """The loss or the parameters became NaN or infinite."""


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, task: Task, data: SequenceSet, batch_size: int, device: torch.device
) -> dict[str, float]:
    """Corpus-level metrics of a split: sum of errors / sum of counts over all its sequences."""
    model.eval()
    order = sorted(range(len(data)), key=lambda i: len(data.inputs[i]))  # less padding
    sums: dict[str, list[float]] = {}
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = task.collate([(data.inputs[i], data.targets[i]) for i in idx]).to(device)
        logits = model(batch.x, batch.lengths)  # (T, B, K)
        for name, (s, c) in task.errors(logits, batch).items():
            acc = sums.setdefault(name, [0.0, 0])
            acc[0] += float(s)
            acc[1] += int(c)
    return {name: (s / c if c else math.nan) for name, (s, c) in sums.items()}


def _better(a: float, b: float, direction: str) -> bool:
    return a < b if direction == "minimize" else a > b


def _finite_parameters(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def train(
    task: Task,
    variant: str,
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
    `test_extra` (other test metrics at that epoch), `wall_s`, `device`, `hidden_per_direction`."""
    t0 = time.perf_counter()
    torch.set_num_threads(settings.threads)
    device = torch.device(device)
    gen = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
    lr, mu, noise = hparams["learning_rate"], hparams["momentum"], hparams["input_noise"]
    hidden = hidden_per_direction(
        int(hparams["hidden_size"]), hidden_size_meaning, task.bidirectional
    )
    model = build_model(task, variant, hidden, gen).to(device)
    opt = NesterovStep(model.parameters(), lr=lr, momentum=mu)
    train_set = splits["train"]
    n = len(train_set)
    metric, direction = task.metric, task.metric_direction

    best: dict[str, Any] = {"epoch": 0, "val": math.nan, "test": {}, "train_loss": math.nan}
    epoch, error = 0, None
    try:
        for epoch in range(1, settings.max_epochs + 1):
            t_epoch = time.perf_counter()
            model.train()
            order = torch.randperm(n, generator=gen).tolist()
            loss_total, seqs = 0.0, 0
            for start in range(0, n, settings.batch_size):
                idx = order[start : start + settings.batch_size]
                batch = task.collate([(train_set.inputs[i], train_set.targets[i]) for i in idx])
                if noise > 0:  # fresh noise at every presentation, training only
                    batch.x = batch.x + noise * torch.randn(batch.x.shape, generator=gen)
                batch = batch.to(device)
                opt.look_ahead()
                logits = model(batch.x, batch.lengths)  # (T, B, K)
                loss_sum, count = task.loss(logits, batch)
                loss = loss_sum / count  # summed over frames, averaged over sequences
                if not torch.isfinite(loss):
                    raise Diverged(f"training loss became {float(loss.detach())} in epoch {epoch}")
                opt.zero_grad()
                loss.backward()
                opt.step()
                loss_total += float(loss_sum.detach())
                seqs += count
            if not _finite_parameters(model):
                raise Diverged(f"parameters became NaN/inf in epoch {epoch}")
            train_loss = loss_total / max(seqs, 1)
            val = evaluate(model, task, splits["valid"], settings.eval_batch_size, device)
            test = evaluate(model, task, splits["test"], settings.eval_batch_size, device)
            if not math.isfinite(val[metric]):
                raise Diverged(f"validation {metric} became {val[metric]} in epoch {epoch}")
            if best["epoch"] == 0 or _better(val[metric], best["val"], direction):
                best = {"epoch": epoch, "val": val[metric], "test": test, "train_loss": train_loss}
            if report is not None:
                report(epoch_metrics(epoch, train_loss, val, test, time.perf_counter() - t_epoch))
            if epoch - best["epoch"] >= settings.patience:
                break
    except Diverged as e:
        error = str(e)

    return trial_result(
        best,
        error,
        epoch,
        count_parameters(model),
        time.perf_counter() - t0,
        str(device),
        hidden,
        metric,
    )


def epoch_metrics(
    epoch: int, train_loss: float, val: dict, test: dict, seconds: float
) -> dict[str, Any]:
    """One epoch's flat metrics dict, as the `report` callback gets it."""
    return {
        "epoch": epoch,
        "train/loss": train_loss,
        **{f"val/{k}": v for k, v in val.items()},
        **{f"test/{k}": v for k, v in test.items()},
        "time_s": seconds,
    }


def trial_result(
    best: dict[str, Any],
    error: str | None,
    epochs: int,
    n_params: int,
    wall_s: float,
    device: str,
    hidden: int,
    metric: str,
) -> dict[str, Any]:
    """A finished trial's result from its best epoch (`epoch`, `val`, `test` metrics,
    `train_loss`) and the error that ended it, if any. Diverging after a good epoch keeps that
    epoch's result (as early stopping on validation would); a trial fails only when no epoch
    produced a finite validation metric."""
    failed = error is not None and best["epoch"] == 0
    if error is not None and not failed:
        error = f"{error}; kept the best epoch {best['epoch']}"
    return {
        "status": "failed" if failed else "complete",
        "error": error,
        "n_params": n_params,
        "epochs": epochs,
        "best_epoch": best["epoch"],
        "val_metric": math.nan if failed else best["val"],
        "test_metric": math.nan if failed else best["test"].get(metric, math.nan),
        "train_loss": math.nan if failed else best["train_loss"],
        "test_extra": {} if failed else {k: v for k, v in best["test"].items() if k != metric},
        "wall_s": wall_s,
        "device": device,
        "hidden_per_direction": hidden,
    }
