"""Leaky-integrator units with learned time constants: an RNN whose units keep a share of their
past state, the idea of leaky-integrator echo state networks (Jaeger, Lukosevicius, Popovici and
Siewert 2007) and of Mozer's (1992) multiscale units, with the leak rate trained per unit:

    h = (1 - a) * h' + a * tanh(W x + R h' + b),     a = sigmoid(tau)
with ' = time t-1 and h = 0 before the first step; tau (one per unit) is drawn from N(0, 0.1^2)
like every weight, so a ~ 0.5 at the start. a = 1 is the plain tanh RNN; a -> 0 holds the state.
It has a gate-like interpolation but no input-dependent gate: a baseline between the RNN and the
GRU. Parameters with a leading trial dimension K (`variants.lstm_cell`): `W (K, N, M)`,
`R (K, N, N)`, `b (K, N)`, `tau (K, N)`.

The compiled CPU kernels (`variants.fast`) implement the LSTM variants and the GRU only: `scan`
runs the reference time loop on every device.
"""

from __future__ import annotations

import torch
from torch import nn

from variants.lstm_cell import init_normal_
from variants.spec import LeakySpec


class LeakyCell(nn.Module):
    """One direction of leaky-integrator units for K trials."""

    packable = True
    input_blocks: int | None = None  # see LSTMCell.input_blocks

    def __init__(
        self,
        spec: LeakySpec,
        input_size: int,
        hidden_size: int,
        trials: int = 1,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.spec, self.input_size, self.hidden_size, self.trials = (
            spec,
            input_size,
            hidden_size,
            trials,
        )
        k, n = trials, hidden_size
        self.W = nn.Parameter(torch.empty(k, n, input_size))
        self.R = nn.Parameter(torch.empty(k, n, n))
        self.b = nn.Parameter(torch.empty(k, n))
        self.tau = nn.Parameter(torch.empty(k, n))
        init_normal_(self, generator)

    def hidden_blocks(self) -> dict[str, tuple[int | None, ...]]:
        """As `LSTMCell.hidden_blocks`: blocks of N units per dimension of each parameter."""
        return {"W": (1, self.input_blocks), "R": (1, 1), "b": (1,), "tau": (1,)}

    def scan(
        self, x: torch.Tensor, steps: torch.Tensor | None = None, need_cells: bool = True
    ) -> tuple[torch.Tensor, None]:
        """`x (K, T, B, M)` -> outputs `(K, T, B, N)` and None, always through `scan_reference`
        (no compiled kernel); `steps` is accepted for the cell contract and ignored."""
        return self.scan_reference(x)

    def scan_reference(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Reference time loop: `x (K, T, B, M)` -> outputs `(K, T, B, N)`."""
        trials, t_len, batch, m = x.shape
        xw = torch.baddbmm(
            self.b.unsqueeze(1), x.reshape(trials, t_len * batch, m), self.W.transpose(1, 2)
        ).view(trials, t_len, batch, -1)  # (K, T, B, N)
        a = torch.sigmoid(self.tau).unsqueeze(1)  # (K, 1, N)
        h = x.new_zeros(trials, batch, self.hidden_size)  # (K, B, N)
        r_t = self.R.transpose(1, 2)
        hs = []
        for xw_t in xw.unbind(1):
            h = (1.0 - a) * h + a * torch.tanh(torch.baddbmm(xw_t, h, r_t))
            hs.append(h)
        return torch.stack(hs, 1), None
