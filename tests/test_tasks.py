"""Every task, through the shared contract: its tiny data collates, its loss and errors are sums with
counts, padding does not count, and a small LSTM learns the tiny data well above chance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tasks
import variants
from tasks.base import split_metrics

TASKS = list(tasks.TASKS)


def _batch(task, split, n=None):
    items = list(zip(split.inputs, split.targets, strict=True))[:n]
    return task.collate(items)


@pytest.mark.parametrize("name", TASKS)
def test_spec_and_tiny_data(name):
    task = tasks.TASKS[name]
    assert task.metric_direction in ("minimize", "maximize")
    assert task.default_source in task.sources
    splits = task.tiny(np.random.default_rng(0))
    assert set(splits) == set(tasks.SPLITS) and all(len(s) for s in splits.values())
    batch = _batch(task, splits["train"], 4)
    t_max, b, m = batch.x.shape
    assert (b, m) == (4, task.input_size) and int(batch.lengths.max()) == t_max
    logits = torch.zeros(t_max, b, task.output_size)
    loss, count = task.loss(logits, batch)
    assert count == 4 and torch.isfinite(loss)
    errs = task.errors(logits, batch)
    assert task.metric in errs and errs[task.metric][1] > 0


def _floats(errs: dict) -> dict:
    """A task's (sum, count) pairs as floats (they may be 0-d tensors or numbers)."""
    return {k: (float(e), float(c)) for k, (e, c) in errs.items()}


@pytest.mark.parametrize("name", TASKS)
def test_errors_are_sums_so_batches_add_up(name):
    """Corpus-level: errors over the whole split == sum of errors over its batches (or, for a
    metric that is not a ratio, the task's aggregate of them)."""
    task = tasks.TASKS[name]
    split = task.tiny(np.random.default_rng(1))["valid"]
    g = torch.Generator().manual_seed(0)
    whole = _batch(task, split)
    logits = torch.randn(*whole.x.shape[:2], task.output_size, generator=g)
    total = _floats(task.errors(logits, whole))
    parts: dict = {}
    for b in range(whole.size):
        one = _batch(task, split.subset([b]))
        errs = _floats(task.errors(logits[: int(whole.lengths[b]), b : b + 1], one))
        for metric, e in errs.items():
            parts.setdefault(metric, []).append(e)
    for metric, pair in total.items():
        if task.aggregate.get(metric, "ratio") == "ratio":
            assert pair[1] == sum(c for _, c in parts[metric])
            assert pair[0] == pytest.approx(sum(e for e, _ in parts[metric]), rel=1e-5, abs=1e-4)
        want = split_metrics(task, {metric: parts[metric]})[metric]
        assert split_metrics(task, {metric: [pair]})[metric] == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("name", TASKS)
def test_small_lstm_learns_the_tiny_dataset(name):
    task = tasks.TASKS[name]
    torch.manual_seed(0)
    splits = task.tiny(np.random.default_rng(0))
    rnn = variants.build("V", task.input_size, 32, bidirectional=task.bidirectional)
    head = torch.nn.Linear(32 * (2 if task.bidirectional else 1), task.output_size)
    params = list(rnn.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=1e-2)
    batch = _batch(task, splits["train"])

    def metric():
        """The task's metric, or for a score of another kind (counting's max_n) its first ratio
        metric: a ratio of errors that must halve."""
        with torch.no_grad():
            errs = task.errors(head(rnn(batch.x, batch.lengths)), batch)
        ratio = next(m for m in [task.metric, *errs] if m not in task.aggregate)
        s, c = errs[ratio]
        return s / c

    before = metric()
    for _ in range(150):
        opt.zero_grad()
        loss, n = task.loss(head(rnn(batch.x, batch.lengths)), batch)
        (loss / n).backward()
        opt.step()
    after = metric()
    assert after < 0.5 * before, f"{name}: {task.metric} {before:.3f} -> {after:.3f}"
