"""Evaluation of the trials of a pack (`study.pack`; a single model is a pack of one): corpus-level
metrics, sum of errors / sum of counts over all sequences of a split, every trial seeing the same
sequences in one pass. A task's `errors` may give its (sum, count) pairs as 0-d tensors: they stay
on the device until the split is done, then come to the host in one read (`study.step.read`),
as float64 (exact for float32 sums and integer counts, as `float()` is)."""

from __future__ import annotations

from typing import Any

import torch

from study.model import SequenceModel
from study.step import batch_to, read
from tasks.base import SequenceSet, Task, split_metrics

EVAL_ELEMENTS = 2**26  # off the CPU: the largest evaluation activation of a pack, in elements


def eval_rows(device_type: str, trials: int, batch_size: int, longest: int, width: int) -> int:
    """Sequences per evaluation batch of a pack of `trials`. On the CPU `batch_size` whatever the
    pack: the kernels run trial by trial, and a trial's batches must not depend on its pack (their
    shapes decide BLAS's summation order). Elsewhere one launch per operation and step serves all
    trials, so as many rows as keep the largest activation (trials x rows x `longest` steps x
    `width`) under EVAL_ELEMENTS, at most `batch_size`."""
    if device_type == "cpu":
        return batch_size
    return max(1, min(batch_size, EVAL_ELEMENTS // (trials * longest * width)))


def evaluate_pack(
    pack: Any, data: SequenceSet, batch_size: int, live: list[int]
) -> list[dict[str, float]]:
    """Corpus-level metrics of a split for every slot of `pack` (a `study.pack._Pack`; `{}` for
    slots not in `live`), in one pass over the split (all trials see the same sequences)."""
    longest = max(len(x) for x in data.inputs)
    width = 4 * pack.hidden * pack.model.rnn.directions
    rows = eval_rows(pack.device.type, pack.k, batch_size, longest, width)
    return evaluate_slots(pack.model, pack.task, data, rows, live, pack.own_units, pack.device)


@torch.no_grad()
def evaluate_slots(
    model: SequenceModel,
    task: Task,
    data: SequenceSet,
    rows: int,
    live: list[int],
    own_units: bool,
    device: torch.device,
) -> list[dict[str, float]]:
    """Corpus-level metrics of a split for the slots `live` of `model`: sum of errors / sum of
    counts over all its sequences (or the task's own `aggregate` of its batches' pairs), in
    batches of `rows` (shortest first, less padding)."""
    k = model.rnn.trials
    model.eval()
    order = sorted(range(len(data)), key=lambda i: len(data.inputs[i]))
    pairs: list[dict[str, list[list[Any]]]] = [{} for _ in range(k)]
    pending: list[torch.Tensor] = []  # the tensors among them, read together at the end
    for start in range(0, len(order), rows):
        idx = order[start : start + rows]
        batch = batch_to(task.collate([(data.inputs[i], data.targets[i]) for i in idx]), device)
        x = batch.x.unsqueeze(0).expand(k, *batch.x.shape)  # (K, T, B, M)
        lengths = batch.lengths.unsqueeze(0).expand(k, -1)
        logits = model.forward_trials(x, lengths, live, own_units)  # [(T, B, O)]
        for s, out in zip(live, logits, strict=True):
            for name, pair in task.errors(out, batch).items():
                pair = list(pair)
                for j, v in enumerate(pair):
                    if isinstance(v, torch.Tensor):
                        v = v.detach().reshape(())  # float32 or integer: exact in float64
                        pending.append(v.to(device, torch.float64, non_blocking=True))
                        pair[j] = _At(len(pending) - 1)
                pairs[s].setdefault(name, []).append(pair)
    values = read(torch.stack(pending)) if pending else []
    host = [
        {name: [tuple(_host(v, values) for v in pair) for pair in p] for name, p in d.items()}
        for d in pairs
    ]
    # a ratio of sums (or the task's own `aggregate`), in batch order as always
    return [split_metrics(task, d) for d in host]


class _At(int):
    """A tensor's place in the split's one read."""


def _host(v: Any, values: list[float]) -> float:
    """A pair's value as a float: a number as it is, a tensor's from the one read."""
    return values[v] if isinstance(v, _At) else float(v)
