"""Counting: next-symbol prediction on a^n b^n (Weiss, Goldberg and Yahav 2018, "On the
practical computational power of finite precision RNNs for language recognition": an LSTM can
count, a GRU or a tanh RNN, squashing its state, cannot). No data to download.

A sequence of the language is n a's, then n b's, then the end: the network reads a^n b^n one
symbol a step (one-hot inputs over {a, b}) and predicts the next symbol over {a, b, end} at every
step. While it reads a's the next symbol is open (another a, or the first b); from the first b on
it is determined: b until n b's have been read, then the end. Only the determined steps are
trained and scored, so a correct prediction needs the count of a's.

Training lengths: n = 1..TRAIN_N. Validation: every n = 1..VALID_N; test: every n = 1..TEST_N,
both beyond the training lengths. Metrics:
- `max_n` (maximize): the largest n such that every sequence of the split with n' <= n is
  predicted correctly (argmax) at all its determined steps; TEST_N if all are; 0 if n = 1 fails.
  Not a ratio: each batch gives (its smallest failing n - 1, or inf; its largest n), combined by
  the "prefix" aggregate of `tasks.base.aggregate`.
- `step_error`: the share of determined steps predicted wrongly (a ratio).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tasks.base import Batch, DataError, SequenceSet, Splits, Task, pad_time_major, summed

A, B, END = 0, 1, 2  # output classes; the inputs are one-hot over {a, b}
OPEN = -1  # target of a step whose next symbol is not determined
TRAIN_N, VALID_N, TEST_N = 10, 20, 50
TRAIN = 500  # training sequences (n drawn uniformly from 1..TRAIN_N); `size` sets it


def sequence(n: int) -> tuple[np.ndarray, np.ndarray]:
    """a^n b^n: inputs `(2n, 2)` one-hot, targets `(2n,)`: OPEN while reading a's (steps
    0..n-1), then b for steps n..2n-2 and END at step 2n-1."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    x = np.zeros((2 * n, 2), np.float32)
    x[:n, A] = 1.0
    x[n:, B] = 1.0
    y = np.full(2 * n, OPEN, np.int64)
    y[n:-1] = B
    y[-1] = END
    return x, y


def to_set(ns: list[int], prefix: str) -> SequenceSet:
    pairs = [sequence(int(n)) for n in ns]
    return SequenceSet(
        [p[0] for p in pairs], [p[1] for p in pairs], [f"{prefix}n{n:03d}" for n in ns]
    )


def make_splits(rng: np.random.Generator, train: int, train_n: int, valid_n: int, test_n: int):
    return {
        "train": to_set(rng.integers(1, train_n + 1, size=train).tolist(), "train-"),
        "valid": to_set(list(range(1, valid_n + 1)), "valid-"),
        "test": to_set(list(range(1, test_n + 1)), "test-"),
    }


def prepare(
    work_dir: Path, source: str, path: Path | None, size: int | None, seed: int, progress: bool
) -> tuple[Splits, dict]:
    if path is not None:
        raise DataError("counting: the task generates its own data; it reads no --path")
    rng = np.random.default_rng(seed)
    splits = make_splits(rng, size or TRAIN, TRAIN_N, VALID_N, TEST_N)
    return splits, {"train_n": TRAIN_N, "valid_n": VALID_N, "test_n": TEST_N}


def collate(items: list[tuple[np.ndarray, np.ndarray]]) -> Batch:
    x, lengths = pad_time_major([i[0] for i in items])  # (T, B, 2)
    y, _ = pad_time_major([i[1] for i in items], fill=OPEN)  # (T, B); padding is never scored
    return Batch(x, lengths, y)


def sequence_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Cross-entropy of each sequence `(B,)`, summed over its determined steps."""
    t_len, b, k = logits.shape
    ce = F.cross_entropy(
        logits.reshape(t_len * b, k), batch.targets.reshape(-1), ignore_index=OPEN, reduction="none"
    ).view(t_len, b)
    # where, not a product: an open or padded step adds 0 even if its logits are not finite
    return torch.where(batch.targets != OPEN, ce, 0.0).sum(0)


loss = summed(sequence_loss)


def errors(logits: torch.Tensor, batch: Batch) -> dict[str, tuple[float, float]]:
    scored = batch.targets != OPEN  # (T, B)
    wrong = (logits.argmax(-1) != batch.targets) & scored  # (T, B)
    n = (batch.lengths // 2).tolist()  # each sequence's n
    failed = wrong.any(0).cpu().tolist()
    first_fail = min((nb for nb, f in zip(n, failed, strict=True) if f), default=math.inf)
    return {
        "max_n": (first_fail - 1, max(n)),
        "step_error": (float(wrong.sum()), int(scored.sum())),
    }


def tiny(rng: np.random.Generator) -> Splits:
    """Training n = 1..4, validation and test up to 6 and 8."""
    return make_splits(rng, 24, 4, 6, 8)


TASK = Task(
    name="counting",
    title=f"Counting (a^n b^n next symbol; trained n <= {TRAIN_N}, tested to {TEST_N})",
    input_size=2,
    output_size=3,
    bidirectional=False,
    metric="max_n",
    metric_direction="maximize",
    loss_name="cross-entropy summed over the determined steps",
    sources=("synthetic",),
    default_source="synthetic",
    stand_in=(),
    description=f"{TRAIN} generated a^n b^n, n <= {TRAIN_N}; every n to {VALID_N} / {TEST_N}",
    prepare=prepare,
    collate=collate,
    loss=loss,
    sequence_loss=sequence_loss,
    errors=errors,
    tiny=tiny,
    aggregate={"max_n": "prefix"},
    overlapping_splits=True,
    data_notes=lambda meta: [
        f"max_n: the largest n such that every a^n' b^n' with n' <= n is predicted right at "
        f"all determined steps (trained on n <= {meta.get('train_n', TRAIN_N)}; validation to "
        f"{meta.get('valid_n', VALID_N)}, test to {meta.get('test_n', TEST_N)}); step_error: "
        "the share of determined steps predicted wrong"
    ],
)
