"""Online SGD with Nesterov momentum exactly as pylstm's `NesterovStep` (the paper's library).

With learning rate lr, momentum mu and eps = (1 - mu) * lr (`scale_learning_rate=True`):

    v <- mu v;  theta <- theta + v          (look ahead: `look_ahead()`, before the forward pass)
    g = grad L(theta)
    dv = eps g;  v <- v - dv;  theta <- theta - dv      (`step()`, after backward)

so after a step theta holds the non-look-ahead parameters theta_t + v_t, which is what validation
and test see. `torch.optim.SGD(lr=eps, momentum=mu, nesterov=True)` follows the same trajectory
in the look-ahead coordinates phi = theta + mu v (its buffer b = -v / eps): the two differ only
in which point is evaluated between steps (tests/test_study_train.py checks both facts).

One optimizer serves one model or a pack of trials (`NesterovStep.for_trials`): there every
parameter's leading dimension is the trial and each trial has its own lr and mu (`set_trial`);
the updates are elementwise, so a trial's numbers are those it gets alone.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def _check(lr: float, momentum: float) -> None:
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if not lr > 0:
        raise ValueError(f"learning rate must be positive, got {lr}")


class NesterovStep:
    """pylstm's Nesterov step for `params` with one `lr` and `momentum`."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, momentum: float) -> None:
        _check(lr, momentum)
        self._setup(params, ())
        self.lr, self.momentum = lr, momentum
        self.mu.fill_(momentum)
        self.eps.fill_((1.0 - momentum) * lr)  # rounded once, from double, as a scalar would be

    @classmethod
    def for_trials(cls, params: Iterable[torch.nn.Parameter], trials: int) -> NesterovStep:
        """A pack's optimizer: every parameter is `(trials, ...)`; all trials start empty (rates
        0: a step leaves them as they are) until `set_trial` gives one its rates."""
        opt = cls.__new__(cls)
        opt._setup(params, (trials,))
        return opt

    def _setup(self, params: Iterable[torch.nn.Parameter], shape: tuple[int, ...]) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.velocity = [torch.zeros_like(p) for p in self.params]
        first = self.params[0]
        # per-trial rates in the parameters' dtype, viewed to broadcast over each parameter
        self.mu = torch.zeros(shape, dtype=first.dtype, device=first.device)
        self.eps = torch.zeros(shape, dtype=first.dtype, device=first.device)
        lead = [-1] if shape else []
        self._mu = [self.mu.view(*lead, *[1] * (p.dim() - len(lead))) for p in self.params]
        self._eps = [self.eps.view(*lead, *[1] * (p.dim() - len(lead))) for p in self.params]
        self.frozen: torch.Tensor | None = None

    def set_frozen(self, frozen: torch.Tensor | None) -> None:
        """`frozen (trials,)` bool, on the parameters' device and updated there by its owner
        (or None: none): `look_ahead` and `step` leave a frozen trial's parameters and velocity
        exactly as they are (a pack's diverged trial, `study.step`); the others' updates are
        unchanged."""
        self.frozen = frozen

    def _rows(self, t: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return t.view(-1, *[1] * (p.dim() - 1))

    @torch.no_grad()
    def set_trial(self, k: int, lr: float, momentum: float) -> None:
        """Trial `k` starts afresh: its rates, and zero velocity."""
        _check(lr, momentum)
        self.mu[k] = momentum
        self.eps[k] = (1.0 - momentum) * lr
        for v in self.velocity:
            v[k].zero_()

    def set_hparams(self, k: int, hparams: dict) -> None:
        """Trial `k` starts afresh with its hyperparameters (the optimizer registry's API,
        `study.optimizers`)."""
        self.set_trial(k, float(hparams["learning_rate"]), float(hparams["momentum"]))

    @torch.no_grad()
    def clear_trial(self, k: int) -> None:
        self.mu[k] = 0.0
        self.eps[k] = 0.0
        for v in self.velocity:
            v[k].zero_()

    @torch.no_grad()
    def look_ahead(self) -> None:
        if self.frozen is None:
            torch._foreach_mul_(self.velocity, self._mu)
            torch._foreach_add_(self.params, self.velocity)
            return
        # a frozen trial: v * 1 and p + (-0.0) leave every value as it is (NaN, -0.0 included)
        mu = torch.where(self.frozen, 1.0, self.mu)  # (K,)
        torch._foreach_mul_(self.velocity, [self._rows(mu, v) for v in self.velocity])
        shift = [
            torch.where(self._rows(self.frozen, v), -0.0, v) for v in self.velocity
        ]  # (K, ...) each
        torch._foreach_add_(self.params, shift)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, masks: list[torch.Tensor] | None = None) -> None:
        """The update from the gradients; `masks` (one per parameter, 0 or 1) zero some first
        (a pack's padded units)."""
        used = [i for i, p in enumerate(self.params) if p.grad is not None]  # others: unreached
        if not used:
            return
        grads = [self.params[i].grad for i in used]
        if self.frozen is not None:  # a zero gradient leaves v and theta as they are (dv = +0)
            grads = [torch.where(self._rows(self.frozen, g), 0.0, g) for g in grads]
        if masks is not None:
            torch._foreach_mul_(grads, [masks[i] for i in used])
        dv = torch._foreach_mul(grads, [self._eps[i] for i in used])
        torch._foreach_sub_([self.velocity[i] for i in used], dv)
        torch._foreach_sub_([self.params[i] for i in used], dv)
