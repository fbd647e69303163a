"""Optimizers of packed trials, as a registry: the paper's Nesterov step (default) and Adam.

A pack trains K trials in one model whose parameters carry a leading trial dimension; an
optimizer here keeps per-slot hyperparameters and state, and updates every slot with elementwise
operations only, so a trial's update never depends on its neighbours (or on how many there are).
The contract (a plug-in optimizer, named by import path in `training.optimizer`, follows it):

    __init__(params: list[Tensor], slots: int)       every tensor (K, ...)
    hyperparameters: tuple[str, ...]                  the trial hyperparameters it reads
    place(slot, hparams)                              a new trial in `slot`: its settings, zero state
    clear(slot)                                       an empty slot: no update
    look_ahead()                                      before the forward pass (Nesterov's); or no-op
    step(grads)                                       after backward: update every slot

`nesterov` is pylstm's NesterovStep as Greff et al. 2017 trained (section III): with eps =
(1 - mu) lr, `look_ahead`: v <- mu v, theta <- theta + v; `step`: dv = eps g, v <- v - dv,
theta <- theta - dv. `adam` is torch.optim.Adam's update (Kingma and Ba 2015) with per-slot step
counts; betas and weight decay are the hyperparameters `beta1`, `beta2`, `weight_decay` when the
search space has them (`space.extra`), else 0.9, 0.999 and 0.
"""

from __future__ import annotations

from typing import Any

import torch


def _per_slot(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(K,) -> (K, 1, ..., 1) broadcasting over a parameter of `like`'s shape."""
    return values.view(-1, *[1] * (like.dim() - 1))


class Nesterov:
    """pylstm's Nesterov step (the paper's), per slot."""

    hyperparameters = ("learning_rate", "momentum")

    def __init__(self, params: list[torch.Tensor], slots: int) -> None:
        self.params = params
        device = params[0].device
        self.velocity = [torch.zeros_like(p) for p in params]
        self.mu = torch.zeros(slots, device=device)
        self.eps = torch.zeros(slots, device=device)  # (1 - mu) lr, pylstm's scaled rate
        self.mu_v = [_per_slot(self.mu, p) for p in params]
        self.eps_v = [_per_slot(self.eps, p) for p in params]

    @torch.no_grad()
    def place(self, slot: int, hparams: dict[str, Any]) -> None:
        lr, mu = float(hparams["learning_rate"]), float(hparams["momentum"])
        if not 0.0 <= mu < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {mu}")
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        for v in self.velocity:
            v[slot].zero_()
        self.mu[slot] = mu
        self.eps[slot] = (1.0 - mu) * lr

    @torch.no_grad()
    def clear(self, slot: int) -> None:
        for v in self.velocity:
            v[slot].zero_()
        self.mu[slot] = 0.0
        self.eps[slot] = 0.0

    @torch.no_grad()
    def look_ahead(self) -> None:
        torch._foreach_mul_(self.velocity, self.mu_v)
        torch._foreach_add_(self.params, self.velocity)

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor]) -> None:
        dv = torch._foreach_mul(grads, self.eps_v)
        torch._foreach_sub_(self.velocity, dv)
        torch._foreach_sub_(self.params, dv)


class Adam:
    """torch.optim.Adam's update, per slot (its own learning rate, betas, step count)."""

    hyperparameters = ("learning_rate",)

    def __init__(self, params: list[torch.Tensor], slots: int) -> None:
        self.params = params
        device = params[0].device
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.lr, self.b1, self.b2, self.wd, self.t = (
            torch.zeros(slots, device=device, dtype=torch.float64) for _ in range(5)
        )
        self.eps = 1e-8

    @torch.no_grad()
    def place(self, slot: int, hparams: dict[str, Any]) -> None:
        for m, v in zip(self.m, self.v, strict=True):
            m[slot].zero_()
            v[slot].zero_()
        self.lr[slot] = float(hparams["learning_rate"])
        self.b1[slot] = float(hparams.get("beta1", 0.9))
        self.b2[slot] = float(hparams.get("beta2", 0.999))
        self.wd[slot] = float(hparams.get("weight_decay", 0.0))
        self.t[slot] = 0

    @torch.no_grad()
    def clear(self, slot: int) -> None:
        self.place(slot, {"learning_rate": 0.0})

    def look_ahead(self) -> None:
        pass

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor]) -> None:
        self.t += (self.lr > 0).to(self.t.dtype)  # an empty slot does not count steps
        t = self.t.clamp(min=1)
        step_size = (self.lr / (1 - self.b1**t)).float()  # (K,), as torch.optim.Adam
        sqrt_bc2 = (1 - self.b2**t).sqrt().float()
        b1, b2, wd = self.b1.float(), self.b2.float(), self.wd.float()
        for p, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            if g is None:
                continue
            g = g + _per_slot(wd, p) * p
            m.mul_(_per_slot(b1, p)).add_((1 - _per_slot(b1, p)) * g)
            v.mul_(_per_slot(b2, p)).add_((1 - _per_slot(b2, p)) * g * g)
            denom = v.sqrt() / _per_slot(sqrt_bc2, p) + self.eps
            p.sub_(_per_slot(step_size, p) * m / denom)


OPTIMIZERS: dict[str, type] = {"nesterov": Nesterov, "adam": Adam}


def get(name: str) -> type:
    """The optimizer class `name`: a registry name or a plug-in's import path."""
    if name in OPTIMIZERS:
        return OPTIMIZERS[name]
    if ":" in name:
        from study.plugins import load

        cls = load(name)[0]
        for method in ("place", "clear", "look_ahead", "step"):
            if not callable(getattr(cls, method, None)):
                raise ValueError(
                    f"optimizer {name}: {getattr(cls, '__name__', cls)} has no {method}()"
                )
        return cls
    raise ValueError(
        f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}, or an import path "
        f"like mylab.optim:Lion"
    )
