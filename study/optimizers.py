"""Optimizers of packed trials, as a registry: the paper's Nesterov step (default) and Adam.

A pack trains K trials in one model whose parameters carry a leading trial dimension; an
optimizer here keeps per-trial hyperparameters and state and updates every trial with elementwise
operations only, so a trial's update never depends on its neighbours (or on how many there are).
The contract (a plug-in optimizer, named by import path in `training.optimizer`, follows it):

    cls.for_trials(params, trials)      every tensor (K, ...); K = `trials`
    set_hparams(k, hparams)             trial k starts afresh: its hyperparameters, zero state
    clear_trial(k)                      an empty slot: no update
    look_ahead()                        before the forward pass (Nesterov's); or nothing
    zero_grad()
    step(masks=None)                    after backward; `masks` (0/1 per parameter) zero a
                                        pack's padded units' gradients first
    set_frozen(frozen)                  optional: `frozen (K,)` bool on the device (or None),
                                        set before look_ahead and step; they leave a frozen
                                        trial exactly as it is. Without it the pack gives a
                                        diverged trial a zero gradient and, where it trains
                                        on, restores its parameters after each step

`nesterov` is pylstm's NesterovStep as Greff et al. 2017 trained (`study.optim`). `adam` is
torch.optim.Adam's update (Kingma and Ba 2015) with per-trial step counts; `beta1`, `beta2` and
`weight_decay` are hyperparameters from the search space (`space.extra`) when it has them, else
0.9, 0.999 and 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from study.optim import NesterovStep


def _per_trial(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(K,) -> (K, 1, ..., 1) broadcasting over a parameter of `like`'s shape."""
    return values.view(-1, *[1] * (like.dim() - 1))


class Adam:
    """torch.optim.Adam's update, per trial (its own learning rate, betas, step count)."""

    def __init__(self, params: list[torch.nn.Parameter], trials: int) -> None:
        self.params = params
        device = params[0].device
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.lr, self.b1, self.b2, self.wd, self.t = (
            torch.zeros(trials, device=device, dtype=torch.float64) for _ in range(5)
        )
        self.eps = 1e-8
        self.frozen: torch.Tensor | None = None

    def set_frozen(self, frozen: torch.Tensor | None) -> None:
        """As `NesterovStep.set_frozen`: a frozen trial's parameters and moments stay as they
        are, and its step count does not advance."""
        self.frozen = frozen

    @classmethod
    def for_trials(cls, params: Iterable[torch.nn.Parameter], trials: int) -> Adam:
        return cls([p for p in params if p.requires_grad], trials)

    @torch.no_grad()
    def set_hparams(self, k: int, hparams: dict[str, Any]) -> None:
        lr = float(hparams["learning_rate"])
        if lr < 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        for m, v in zip(self.m, self.v, strict=True):
            m[k].zero_()
            v[k].zero_()
        self.lr[k] = lr
        self.b1[k] = float(hparams.get("beta1", 0.9))
        self.b2[k] = float(hparams.get("beta2", 0.999))
        self.wd[k] = float(hparams.get("weight_decay", 0.0))
        self.t[k] = 0

    def clear_trial(self, k: int) -> None:
        self.set_hparams(k, {"learning_rate": 0.0})

    def look_ahead(self) -> None:
        pass

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, masks: list[torch.Tensor] | None = None) -> None:
        counts = self.lr > 0  # an empty slot (or a frozen one) counts no steps
        if self.frozen is not None:
            counts = counts & ~self.frozen
        self.t += counts.to(self.t.dtype)
        t = self.t.clamp(min=1)
        step_size = (self.lr / (1 - self.b1**t)).float()  # (K,), as torch.optim.Adam
        sqrt_bc2 = (1 - self.b2**t).sqrt().float()
        b1, b2, wd = self.b1.float(), self.b2.float(), self.wd.float()
        for i, (p, m, v) in enumerate(zip(self.params, self.m, self.v, strict=True)):
            if p.grad is None:  # a parameter the loss does not reach
                continue
            g = p.grad if masks is None else p.grad * masks[i]
            g = g + _per_trial(wd, p) * p
            if self.frozen is None:
                m.mul_(_per_trial(b1, p)).add_((1 - _per_trial(b1, p)) * g)
                v.mul_(_per_trial(b2, p)).add_((1 - _per_trial(b2, p)) * g * g)
                denom = v.sqrt() / _per_trial(sqrt_bc2, p) + self.eps
                p.sub_(_per_trial(step_size, p) * m / denom)
                continue
            # the same operations out of place; a frozen trial keeps its old values
            keep = _per_trial(self.frozen, p)
            m.copy_(torch.where(keep, m, m * _per_trial(b1, p) + (1 - _per_trial(b1, p)) * g))
            v.copy_(torch.where(keep, v, v * _per_trial(b2, p) + (1 - _per_trial(b2, p)) * g * g))
            denom = v.sqrt() / _per_trial(sqrt_bc2, p) + self.eps
            p.copy_(torch.where(keep, p, p - _per_trial(step_size, p) * m / denom))


OPTIMIZERS: dict[str, type] = {"nesterov": NesterovStep, "adam": Adam}
API = ("for_trials", "set_hparams", "clear_trial", "look_ahead", "zero_grad", "step")


def get(name: str) -> type:
    """The optimizer class `name`: a registry name or a plug-in's import path."""
    if name in OPTIMIZERS:
        return OPTIMIZERS[name]
    if ":" in name:
        from study.plugins import load

        cls = load(name)[0]
        missing = [m for m in API if not callable(getattr(cls, m, None))]
        if missing:
            what = getattr(cls, "__name__", type(cls).__name__)
            raise ValueError(f"optimizer {name}: {what} has no {', '.join(missing)}")
        return cls
    raise ValueError(
        f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}, or an import path "
        f"like mylab.optim:Lion"
    )
