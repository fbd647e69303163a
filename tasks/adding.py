"""The adding problem (Hochreiter & Schmidhuber 1997, experiment 4): a long-range dependency with
no data to download.

Each step shows two inputs, a value drawn from U(0, 1) and a marker in {0, 1}; exactly two steps
are marked, one in the first half of the sequence and one in the second. At the last step the
network must output the sum of the two marked values. Loss: the squared error at the last step
(one scored frame per sequence, so the per-sequence sum over frames is that error). Metric: mean
squared error over a split's sequences. Predicting the mean (1) everywhere scores the variance of
the sum of two independent U(0, 1) values, 2 x 1/12 = 1/6 = 0.1667: a network must beat that to
have found the marked values at all. (The marker placement follows the common modern form of the
task, e.g. Le, Jaitly and Hinton 2015; the target is the plain sum, without the 1997 scaling.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tasks.base import Batch, DataError, SequenceSet, Splits, Task, pad_time_major, summed

STEPS = 100  # sequence length T
TRAIN, VALID, TEST = 2000, 500, 1000  # sequences per split (`size` sets the training count)
MEAN_BASELINE_MSE = 1.0 / 6.0  # Var(U1 + U2) for independent U(0, 1): what predicting 1 scores


def generate(rng: np.random.Generator, count: int, steps: int, prefix: str) -> SequenceSet:
    """`count` sequences of `steps` steps: inputs `(T, 2)` (value, marker), target `(1,)` the
    sum of the two marked values."""
    if steps < 2:
        raise ValueError(f"the adding problem needs at least 2 steps, got {steps}")
    values = rng.random((count, steps)).astype(np.float32)  # (S, T), U[0, 1)
    half = steps // 2
    first = rng.integers(0, half, size=count)
    second = rng.integers(half, steps, size=count)
    markers = np.zeros((count, steps), np.float32)
    rows = np.arange(count)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    targets = values[rows, first] + values[rows, second]  # (S,) float32
    inputs = np.stack([values, markers], axis=-1)  # (S, T, 2)
    return SequenceSet(
        list(inputs),
        [targets[i : i + 1] for i in range(count)],
        [f"{prefix}{i:05d}" for i in range(count)],
    )


def prepare(
    work_dir: Path, source: str, path: Path | None, size: int | None, seed: int, progress: bool
) -> tuple[Splits, dict]:
    if path is not None:
        raise DataError("adding: the task generates its own data; it reads no --path")
    rng = np.random.default_rng(seed)
    counts = {"train": size or TRAIN, "valid": VALID, "test": TEST}
    splits = {s: generate(rng, n, STEPS, f"{s}-") for s, n in counts.items()}
    return splits, {"steps": STEPS, "origin": "generated (adding problem)"}


def collate(items: list[tuple[np.ndarray, np.ndarray]]) -> Batch:
    x, lengths = pad_time_major([i[0] for i in items])  # (T, B, 2)
    y = torch.from_numpy(np.concatenate([i[1] for i in items]))  # (B,)
    return Batch(x, lengths, y)


def _last(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """The output at each sequence's last step `(B,)`."""
    last = (batch.lengths.to(logits.device) - 1).view(1, -1, 1)  # (1, B, 1)
    return logits.gather(0, last.expand(1, -1, logits.shape[2]))[0, :, 0]


def sequence_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Squared error of each sequence `(B,)` at its last step (its only scored frame)."""
    return (_last(logits, batch) - batch.targets).pow(2)


loss = summed(sequence_loss)


def errors(logits: torch.Tensor, batch: Batch) -> dict[str, tuple[float, int]]:
    return {"mse": (float(sequence_loss(logits, batch).sum()), batch.size)}


def tiny(rng: np.random.Generator) -> Splits:
    """Short sequences (10 steps), enough to learn the sum in a test."""
    return {s: generate(rng, n, 10, f"{s}-") for s, n in (("train", 32), ("valid", 8), ("test", 8))}


TASK = Task(
    name="adding",
    title="Adding problem (sum of two marked values, T = 100)",
    input_size=2,
    output_size=1,
    bidirectional=False,
    metric="mse",
    metric_direction="minimize",
    loss_name="squared error at the last step",
    sources=("synthetic",),
    default_source="synthetic",
    stand_in=(),
    description=f"{TRAIN}/{VALID}/{TEST} generated sequences of {STEPS} steps",
    prepare=prepare,
    collate=collate,
    loss=loss,
    sequence_loss=sequence_loss,
    errors=errors,
    tiny=tiny,
    data_notes=lambda meta: [
        f"MSE of the sum at the last of {meta.get('steps', STEPS)} steps; predicting the mean "
        f"(1) scores {MEAN_BASELINE_MSE:.4f} (= 1/6, the variance of the sum of two U(0, 1) "
        "values): only a score below it shows the marked values were found"
    ],
)
