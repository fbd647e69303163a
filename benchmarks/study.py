"""Trials per hour of a fixed small training grid, and where a trial's time goes.

Runs `study.train.train` (a pack of one through the engine a Ray worker runs) in this process,
one trial after another with one torch thread, over variants x hidden sizes on one task, and splits
the wall time of each trial into:
- `data`: `task.collate` (padding, tensors) for training and evaluation batches;
- `loop`: the model's forward and backward during training (the recurrent time loop, the
  output layer and the loss's backward; from the model's forward call to the last parameter
  gradient);
- `eval`: validation and test evaluation minus its collation;
- `other`: the rest (optimiser step, loss, noise, bookkeeping, reporting).
Trials per hour is for one worker; with W workers on W free cores it scales about W-fold.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from typing import Any

import torch

import variants
from variants import fast

DEFAULT_HPARAMS = {"learning_rate": 1e-2, "momentum": 0.9, "input_noise": 0.1}


class _Clock:
    def __init__(self) -> None:
        self.data = self.loop = self.eval = 0.0
        self.bwd_start: float | None = None
        self.last_grad = 0.0


class _MarkBackward(torch.autograd.Function):
    """Identity that records when the backward pass reaches the model's output."""

    @staticmethod
    def forward(ctx, x, clock):  # noqa: D102
        ctx.clock = clock
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        ctx.clock.bwd_start = time.perf_counter()
        return grad, None


def _flush(c: _Clock) -> None:
    """Add the previous step's backward (output reached -> last gradient) to `loop`."""
    if c.bwd_start is not None and c.last_grad > c.bwd_start:
        c.loop += c.last_grad - c.bwd_start
    c.bwd_start = None


@contextmanager
def _instrument(clock: _Clock):
    """Times the engine's training forward and backward (`SequenceModel.forward_trials` with
    gradients on, to the last parameter gradient) and its evaluation (`evaluate_slots`)."""
    import study.evaluation as evaluation
    from study.model import SequenceModel

    forward, evaluate = SequenceModel.forward_trials, evaluation.evaluate_slots
    hooked: dict[int, list] = {}

    def grad_done(_p: torch.Tensor) -> None:
        clock.last_grad = time.perf_counter()

    def timed_forward(model, *a, **k):
        if not torch.is_grad_enabled():
            return forward(model, *a, **k)
        if id(model) not in hooked:
            hooked[id(model)] = [
                p.register_post_accumulate_grad_hook(grad_done) for p in model.parameters()
            ]
        _flush(clock)
        start = time.perf_counter()
        outs = forward(model, *a, **k)
        clock.loop += time.perf_counter() - start
        return [_MarkBackward.apply(out, clock) for out in outs]

    def timed_evaluate(*a, **k):
        start, data_before = time.perf_counter(), clock.data
        try:
            return evaluate(*a, **k)
        finally:
            clock.eval += time.perf_counter() - start - (clock.data - data_before)

    SequenceModel.forward_trials, evaluation.evaluate_slots = timed_forward, timed_evaluate
    try:
        yield
    finally:
        SequenceModel.forward_trials, evaluation.evaluate_slots = forward, evaluate
        for handles in hooked.values():
            for h in handles:
                h.remove()


def _timed_task(task, clock: _Clock):
    collate = task.collate

    def timed_collate(items):
        start = time.perf_counter()
        try:
            return collate(items)
        finally:
            clock.data += time.perf_counter() - start

    return dataclasses.replace(task, collate=timed_collate)


def run(
    task_name: str = "jsb_chorales",
    names: Iterable[str] = tuple(variants.VARIANTS),
    hidden_sizes: Iterable[int] = (32, 128),
    size: int | None = None,
    max_epochs: int = 3,
    batch_size: int = 4,
    seed: int = 0,
    path: str = "fast",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train the grid; returns `{"trials": [...], "summary": {...}}` (see the module docstring)."""
    import tasks
    from study.config import TrainConfig
    from study.train import train

    names = list(names)
    for name in names:
        variants.get_spec(name)
    task = tasks.get(task_name)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        tasks.prepare(task_name, size=size, seed=seed, data_dir=tmp, progress=False)
        splits, _ = tasks.load(task_name, size=size, seed=seed, data_dir=tmp)
        prepare_s = time.perf_counter() - t0
    settings = TrainConfig(
        batch_size=batch_size, max_epochs=max_epochs, patience=max_epochs, threads=1
    )
    rows = []
    for name in names:
        for hidden in hidden_sizes:
            if progress:
                progress(f"{name} N={hidden}")
            clock = _Clock()
            start = time.perf_counter()
            with fast.use(path), _instrument(clock):
                result = train(
                    _timed_task(task, clock),
                    name,
                    {"hidden_size": hidden, **DEFAULT_HPARAMS},
                    splits,
                    settings,
                    seed,
                    "cpu",
                )
            wall = time.perf_counter() - start
            _flush(clock)
            rows.append(
                {
                    "variant": name,
                    "hidden": hidden,
                    "status": result["status"],
                    "epochs": result["epochs"],
                    "wall_s": round(wall, 3),
                    "data_s": round(clock.data, 3),
                    "loop_s": round(clock.loop, 3),
                    "eval_s": round(clock.eval, 3),
                    "other_s": round(wall - clock.data - clock.loop - clock.eval, 3),
                }
            )
    total = sum(r["wall_s"] for r in rows)
    summary = {
        "task": task_name,
        "path": path,
        "trials": len(rows),
        "wall_s": round(total, 2),
        "prepare_s": round(prepare_s, 2),
        "trials_per_hour_one_worker": round(3600 * len(rows) / total, 1) if total else None,
        **{
            f"share_{k}": round(sum(r[f"{k}_s"] for r in rows) / total, 3) if total else None
            for k in ("data", "loop", "eval", "other")
        },
        "settings": {
            "size": size,
            "max_epochs": max_epochs,
            "batch_size": batch_size,
            "hidden_sizes": list(hidden_sizes),
            **DEFAULT_HPARAMS,
        },
    }
    return {"trials": rows, "summary": summary}
