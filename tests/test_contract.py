"""The cell and task contracts: every built-in passes the same checks a plug-in must pass, and
each check catches the fault it is named after (deliberately broken cells and tasks)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import tasks
import variants
from tasks.base import summed
from tasks.contract import check_task
from variants.contract import check_cell


@pytest.mark.parametrize("name", list(variants.VARIANTS))
def test_every_registered_variant_passes_the_cell_contract(name):
    failed = [(f.check, f.detail) for f in check_cell(variants.VARIANTS[name]) if not f.ok]
    assert not failed


@pytest.mark.parametrize("name", list(tasks.TASKS))
def test_every_registered_task_passes_the_task_contract(name):
    failed = [(c, d) for c, ok, d in check_task(tasks.TASKS[name]) if not ok]
    assert not failed


class TanhRNN(nn.Module):
    """A correct minimal cell (h = tanh(W x + R h' + b)), the base of the broken ones below."""

    def __init__(self, spec, input_size, hidden_size, trials=1, generator=None):
        super().__init__()
        k, n = trials, hidden_size
        self.W = nn.Parameter(torch.empty(k, n, input_size))
        self.R = nn.Parameter(torch.empty(k, n, n))
        self.b = nn.Parameter(torch.empty(k, n))
        with torch.no_grad():
            for p in self.parameters():
                p.normal_(0.0, 0.1, generator=generator)

    def hidden_blocks(self):
        return {"W": (1, None), "R": (1, 1), "b": (1,)}

    def pre(self, x_t, h):  # (K, B, N)
        return torch.bmm(x_t, self.W.transpose(1, 2)) + torch.bmm(h, self.R.transpose(1, 2))

    def act(self, a):
        return torch.tanh(a + self.b.unsqueeze(1))

    def scan(self, x, steps=None, need_cells=True):
        h = x.new_zeros(x.shape[0], x.shape[2], self.R.shape[-1])
        out = []
        for x_t in x.unbind(1):
            h = self.act(self.pre(x_t, h))
            out.append(h)
        return torch.stack(out, 1), None


class MixesTrials(TanhRNN):
    def act(self, a):  # trial k sees the mean over the pack: trials are not independent
        return torch.tanh(a + self.b.unsqueeze(1) + 0.1 * a.mean(0, keepdim=True))


class LeaksIntoPadding(TanhRNN):
    def act(self, a):  # a constant on every unit: zero-weight (padded) units are not zero
        return torch.tanh(a + self.b.unsqueeze(1)) + 0.5


class _WrongBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return torch.tanh(a)

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        return grad * (1 - torch.tanh(a))  # should be 1 - tanh(a)^2


class WrongGradient(TanhRNN):
    def act(self, a):
        return _WrongBackward.apply(a + self.b.unsqueeze(1))


class KeepsState(TanhRNN):
    def scan(self, x, steps=None, need_cells=True):  # carries its last state into the next call
        y, _ = super().scan(x)
        self.b.data += 0.01
        return y, None


class WrongShape(TanhRNN):
    def scan(self, x, steps=None, need_cells=True):
        y, _ = super().scan(x)
        return y.transpose(1, 2), None  # (K, B, T, N)


@pytest.mark.parametrize(
    "cls,check",
    [
        (MixesTrials, "pack = singles"),
        (LeaksIntoPadding, "padded units zero"),
        (WrongGradient, "gradcheck (float64)"),
        (KeepsState, "zero initial state, causal"),
        (WrongShape, "shapes"),
    ],
)
def test_a_broken_cell_fails_the_check_named_after_its_fault(cls, check):
    kind = f"tests.test_contract:{cls.__name__}"
    variants.register_cell(kind, cls, origin=kind)
    found = {f.check: f for f in check_cell(variants.CellSpec(kind))}
    assert not found[check].ok, found[check]
    assert found[check].detail  # says what failed, with the number
    assert found["construct"].ok


def test_the_correct_base_cell_passes():
    variants.register_cell("tests.test_contract:TanhRNN", TanhRNN)
    failed = [f for f in check_cell(variants.CellSpec("tests.test_contract:TanhRNN")) if not f.ok]
    assert not failed


JSB = tasks.TASKS["jsb_chorales"]


def _broken(**changes) -> tasks.Task:
    return dataclasses.replace(JSB, name="broken", **changes)


def _mean_loss(logits, batch):
    s, n = JSB.loss(logits, batch)
    return s / n, n


def _mean_errors(logits, batch):
    return {k: (s / c, 1) for k, (s, c) in JSB.errors(logits, batch).items()}


def _vector_errors(logits, batch):
    return {k: (s.reshape(1), c) for k, (s, c) in JSB.errors(logits, batch).items()}


def _float_errors(logits, batch):
    return {k: (float(s), int(c)) for k, (s, c) in JSB.errors(logits, batch).items()}


def test_errors_may_be_numbers_or_0d_tensors():
    """JSB's errors are 0-d tensors; the same as Python numbers pass as well."""
    assert isinstance(JSB.errors(*_jsb_batch())["nll"][0], torch.Tensor)
    found = {c: ok for c, ok, _ in check_task(_broken(errors=_float_errors))}
    assert all(found.values()), found


def _jsb_batch():
    data = JSB.tiny(np.random.default_rng(0))["valid"]
    batch = JSB.collate([(data.inputs[0], data.targets[0])])
    return torch.zeros(*batch.x.shape[:2], JSB.output_size), batch


def _overlapping(rng):
    splits = JSB.tiny(rng)
    return {**splits, "test": splits["train"]}


@pytest.mark.parametrize(
    "changes,check",
    [
        ({"loss": _mean_loss}, "loss a sum"),
        ({"errors": _mean_errors}, "errors (sum, count)"),
        ({"errors": _vector_errors}, "errors (sum, count)"),
        ({"tiny": _overlapping}, "tiny splits disjoint, non-empty"),
        ({"metric_direction": "lower"}, "declared"),
        ({"metric": "accuracy"}, "errors (sum, count)"),
        ({"input_size": 12}, "tiny splits disjoint, non-empty"),
    ],
)
def test_a_broken_task_fails_the_check_named_after_its_fault(changes, check):
    found = {c: (ok, d) for c, ok, d in check_task(_broken(**changes))}
    assert found[check][0] is False, found
    assert found[check][1]


def test_a_mean_over_frames_in_sequence_loss_is_still_a_sum_over_sequences():
    # the contract's sum check is over sequences; the loss of one sequence is the task's own
    def per_frame_mean(logits, batch):
        return JSB.sequence_loss(logits, batch) / batch.lengths.to(logits.dtype)

    task = _broken(sequence_loss=per_frame_mean, loss=summed(per_frame_mean))
    assert all(ok for _, ok, _ in check_task(task))


def test_tiny_data_is_checked_for_empty_splits():
    def empty_valid(rng):
        splits = JSB.tiny(rng)
        return {**splits, "valid": splits["valid"].subset([])}

    found = {c: (ok, d) for c, ok, d in check_task(_broken(tiny=empty_valid))}
    assert found["tiny splits disjoint, non-empty"] == (False, "the valid split is empty")


def test_finite_on_a_tiny_task_reports_the_loss():
    found = {f.check: f for f in check_cell(variants.VARIANTS["GRU"])}
    assert "->" in found["finite on a tiny task"].detail
    assert np.isfinite(float(found["finite on a tiny task"].detail.split("-> ")[1]))
