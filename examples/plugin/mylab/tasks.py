"""Delayed recall, as an lstm-odyssey task plug-in: at every step, name the symbol seen DELAY
steps earlier (framewise classification; the first DELAY steps are not scored).

The task contract (what lstm-odyssey's training and checks need): `collate` makes time-major
batches `x (T, B, M)` with `lengths (B,)`; `sequence_loss` is each sequence's loss summed over its
frames; `errors` gives (sum, count) pairs so that split metrics are corpus-level ratios; `tiny`
makes a small instance for `odyssey check task`; `prepare` writes the splits a study trains on.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from tasks import Batch, SequenceSet, Task
from tasks.base import pad_time_major, summed, time_mask

SYMBOLS, DELAY = 6, 3


def _sequences(rng: np.random.Generator, count: int, low: int, high: int, prefix: str):
    inputs, targets = [], []
    for _ in range(count):
        seq = rng.integers(0, SYMBOLS, int(rng.integers(low, high + 1)))
        inputs.append(np.eye(SYMBOLS, dtype=np.float32)[seq])  # (T, SYMBOLS) one-hot
        targets.append(np.concatenate([np.full(DELAY, -1), seq[:-DELAY]]).astype(np.int64))
    return SequenceSet(inputs, targets, [f"{prefix}{i:04d}" for i in range(count)])


def _splits(rng: np.random.Generator, n_train: int, low: int, high: int):
    return {
        "train": _sequences(rng, n_train, low, high, "train-"),
        "valid": _sequences(rng, max(2, n_train // 4), low, high, "valid-"),
        "test": _sequences(rng, max(2, n_train // 4), low, high, "test-"),
    }


def prepare(work_dir, source, path, size, seed, progress):
    return _splits(np.random.default_rng(seed), size or 200, 10, 30), {"origin": "generated"}


def collate(items):
    x, lengths = pad_time_major([i[0] for i in items])
    y, _ = pad_time_major([i[1] for i in items], fill=-1)
    return Batch(x, lengths, y)  # targets (T, B): -1 where nothing is scored


def _scored(logits: torch.Tensor, batch: Batch):
    mask = time_mask(batch.lengths, logits.shape[0], logits.device) & (batch.targets >= 0)
    return mask, batch.targets.clamp(min=0)


def sequence_loss(logits, batch):
    mask, target = _scored(logits, batch)
    ce = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")  # (T, B)
    return torch.where(mask, ce, 0.0).sum(0)  # (B,): summed over each sequence's frames


def errors(logits, batch):
    mask, target = _scored(logits, batch)
    wrong = (logits.argmax(-1) != target) & mask
    return {"recall_error": (float(wrong.sum()), int(mask.sum()))}


RECALL = Task(
    name="recall",
    title=f"Delayed recall (name the symbol {DELAY} steps back)",
    input_size=SYMBOLS,
    output_size=SYMBOLS,
    bidirectional=False,
    metric="recall_error",
    metric_direction="minimize",
    loss_name="cross-entropy summed over scored frames",
    sources=("synthetic",),
    default_source="synthetic",
    stand_in=(),
    description=f"random sequences of {SYMBOLS} symbols, 10-30 steps",
    prepare=prepare,
    collate=collate,
    loss=summed(sequence_loss),
    sequence_loss=sequence_loss,
    errors=errors,
    tiny=lambda rng: _splits(rng, 12, 6, 12),
)
