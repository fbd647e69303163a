"""Online SGD with Nesterov momentum exactly as pylstm's `NesterovStep` (the paper's library).

With learning rate lr, momentum mu and eps = (1 - mu) * lr (`scale_learning_rate=True`):

    v <- mu v;  theta <- theta + v          (look ahead: `look_ahead()`, before the forward pass)
    g = grad L(theta)
    dv = eps g;  v <- v - dv;  theta <- theta - dv      (`step()`, after backward)

so after a step theta holds the non-look-ahead parameters theta_t + v_t, which is what validation
and test see. `torch.optim.SGD(lr=eps, momentum=mu, nesterov=True)` follows the same trajectory
in the look-ahead coordinates phi = theta + mu v (its buffer b = -v / eps): the two differ only
in which point is evaluated between steps (tests/test_study_train.py checks both facts).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class NesterovStep:
    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, momentum: float) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.momentum = lr, momentum
        self.velocity = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def look_ahead(self) -> None:
        for p, v in zip(self.params, self.velocity, strict=True):
            v.mul_(self.momentum)
            p.add_(v)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        eps = (1.0 - self.momentum) * self.lr
        for p, v in zip(self.params, self.velocity, strict=True):
            if p.grad is None:  # a parameter the loss does not reach
                continue
            dv = p.grad * eps
            v.sub_(dv)
            p.sub_(dv)
