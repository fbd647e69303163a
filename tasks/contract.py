"""The conformance checks a task (built-in or a user's plug-in) must pass before a study uses it.

The contract is the `Task` spec of `tasks.base`: sizes and direction declared; `tiny(rng)` gives
three small, disjoint, non-empty splits; `collate` makes a time-major batch `x (T, B, M)` with
`lengths (B,)`; `sequence_loss` is each sequence's loss *summed* over its frames `(B,)`, `loss`
their sum with the number of sequences (so minibatch and corpus means are taken by the trainer,
not inside the task); `errors` gives `metric -> (sum, count)` pairs that add up across batches, so
split metrics are corpus-level ratios (each a number or a 0-d tensor: a tensor stays on the device
until the trainer reads a split's sums at once). `check_task` checks each on the task's tiny data
with random logits; the built-in tasks pass the same checks (tests/test_contract.py).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import numpy as np
import torch

from tasks.base import SPLITS, Batch, SequenceSet, Task, aggregate

DIRECTIONS = ("minimize", "maximize")


class _Found(Exception):
    """A failed check, with the detail that failed."""


def _pairs(data: SequenceSet, idx: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(data.inputs[i], data.targets[i]) for i in idx]


def _logits(task: Task, batch: Batch, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*batch.x.shape[:2], task.output_size, generator=gen)  # (T, B, O)


def _declared(task: Task, splits) -> str:
    if task.metric_direction not in DIRECTIONS:
        raise _Found(f"metric_direction {task.metric_direction!r}; valid: {', '.join(DIRECTIONS)}")
    for what in ("input_size", "output_size"):
        value = getattr(task, what)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _Found(f"{what} must be an integer >= 1, got {value!r}")
    if task.default_source not in task.sources:
        raise _Found(f"default_source {task.default_source!r} is not in sources {task.sources}")
    return f"{task.metric} ({task.metric_direction})"


def _splits(task: Task, splits) -> str:
    if not isinstance(splits, dict) or set(splits) != set(SPLITS):
        raise _Found(f"tiny() must return the splits {', '.join(SPLITS)}, got {list(splits)}")
    seen: dict[str, str] = {}
    for split in SPLITS:
        data = splits[split]
        if len(data) == 0:
            raise _Found(f"the {split} split is empty")
        for i, x in enumerate(data.inputs):
            if x.ndim != 2 or x.shape[1] != task.input_size or len(x) < 1:
                raise _Found(
                    f"{split}[{i}]: input of shape {x.shape}, expected (T, {task.input_size})"
                )
            key = hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()
            if seen.get(key, split) != split and not task.overlapping_splits:
                raise _Found(f"a {split} sequence is also in the {seen[key]} split")
            seen[key] = split
    sizes = ", ".join(f"{s} {len(splits[s])}" for s in SPLITS)
    return sizes + (" (overlap declared by the task)" if task.overlapping_splits else "")


def _collate(task: Task, splits) -> str:
    data = splits["train"]
    idx = list(range(min(3, len(data))))
    batch = task.collate(_pairs(data, idx))
    t_max = max(len(data.inputs[i]) for i in idx)
    want = (t_max, len(idx), task.input_size)
    if tuple(batch.x.shape) != want:
        raise _Found(f"x has shape {tuple(batch.x.shape)}, expected (T, B, M) = {want}")
    got = [int(v) for v in batch.lengths]
    if got != [len(data.inputs[i]) for i in idx]:
        raise _Found(f"lengths {got} are not the sequences' lengths")
    return f"x {want}"


def _loss(task: Task, splits) -> str:
    data = splits["train"]
    a, b = 0, min(1, len(data) - 1)
    one = task.collate(_pairs(data, [a]))
    two = task.collate(_pairs(data, [a, a]))
    pair = task.collate(_pairs(data, [a, b]))
    lo_one = _logits(task, one)
    lo_two = torch.cat([lo_one, lo_one], dim=1)  # the same logits for both copies
    s1, c1 = task.loss(lo_one, one)
    s2, c2 = task.loss(lo_two, two)
    if not (math.isfinite(float(s1)) and math.isfinite(float(s2))):
        raise _Found(f"the loss of random logits is {float(s1)}")
    if (c1, c2) != (1, 2):
        raise _Found(f"loss counts {c1} and {c2} for batches of 1 and 2 sequences (want 1, 2)")
    if not math.isclose(float(s2), 2 * float(s1), rel_tol=1e-5, abs_tol=1e-6):
        raise _Found(
            f"two copies of a sequence give loss {float(s2):.6g}, not twice one's "
            f"{float(s1):.6g}: the loss must be a sum over sequences, not a mean"
        )
    per = task.sequence_loss(_logits(task, pair, 1), pair)
    if tuple(per.shape) != (2,):
        raise _Found(f"sequence_loss gives shape {tuple(per.shape)}, expected (B,) = (2,)")
    if not math.isclose(
        float(per.sum()), float(task.loss(_logits(task, pair, 1), pair)[0]), rel_tol=1e-5
    ):
        raise _Found("loss is not the sum of sequence_loss")
    return f"loss of one sequence {float(s1):.4g}"


def _errors(task: Task, splits) -> str:
    data = splits["valid"]
    idx = list(range(min(2, len(data))))
    batch = task.collate(_pairs(data, idx))
    logits = _logits(task, batch)
    both = task.errors(logits, batch)
    if task.metric not in both:
        raise _Found(f"errors() gives {sorted(both)}, not the declared metric {task.metric!r}")
    for name, value in both.items():
        if not (isinstance(value, tuple) and len(value) == 2):
            raise _Found(f"errors()[{name!r}] must be a (sum, count) pair, got {value!r}")
        for v in value:
            if isinstance(v, torch.Tensor) and v.dim() != 0:
                raise _Found(
                    f"errors()[{name!r}] holds a tensor of shape {tuple(v.shape)}: a sum or "
                    "count is a number or a 0-d tensor"
                )
            if not isinstance(v, (int, float, torch.Tensor)):
                raise _Found(f"errors()[{name!r}] holds {v!r}: a number or a 0-d tensor")
    if len(idx) < 2:
        return "one validation sequence: additivity not checked"
    parts = []
    for i in idx:
        single = task.collate(_pairs(data, [i]))
        parts.append(task.errors(logits[: int(batch.lengths[i]), i : i + 1], single))
    for name, (s, c) in both.items():
        kind = task.aggregate.get(name, "ratio")
        if kind != "ratio":  # combined by its own rule: whole and parts must agree under it
            whole, split = aggregate(kind, [(s, c)]), aggregate(kind, [p[name] for p in parts])
            if not (whole == split or math.isclose(whole, split, rel_tol=1e-6)):
                raise _Found(
                    f"{name} ({kind}): {whole:.6g} for two sequences, {split:.6g} one by one"
                )
            continue
        s_parts = sum(float(p[name][0]) for p in parts)
        c_parts = sum(int(p[name][1]) for p in parts)
        if int(c) != c_parts or not math.isclose(float(s), s_parts, rel_tol=1e-5, abs_tol=1e-9):
            raise _Found(
                f"{name}: ({float(s):.6g}, {int(c)}) for two sequences, but "
                f"({s_parts:.6g}, {c_parts}) summed one by one: errors must be (sum, count)"
            )
    return ", ".join(sorted(both))


CHECKS: tuple[tuple[str, Callable], ...] = (
    ("declared", _declared),
    ("tiny splits disjoint, non-empty", _splits),
    ("collate shapes", _collate),
    ("loss a sum", _loss),
    ("errors (sum, count)", _errors),
)


def check_task(task: Task) -> list[tuple[str, bool, str]]:
    """`(check, ok, detail)` for each check of the contract, on `task.tiny(rng)`."""
    out: list[tuple[str, bool, str]] = []
    try:
        splits = task.tiny(np.random.default_rng(0))
    except Exception as e:
        return [("tiny data", False, f"{type(e).__name__}: {e}")]
    for name, check in CHECKS:
        try:
            out.append((name, True, check(task, splits)))
        except _Found as e:
            out.append((name, False, str(e)))
        except Exception as e:
            out.append((name, False, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"))
    return out
