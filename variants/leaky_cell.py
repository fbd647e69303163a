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

from variants.rnn_cell import RNNCell


class LeakyCell(RNNCell):
    """One direction of leaky-integrator units for K trials (the RNN cell with a learned leak)."""

    VECTORS = ("b", "tau")  # (K, N) each

    def _bias(self) -> torch.Tensor:
        return self.b  # (K, N)

    def _step(self, h: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        a = torch.sigmoid(self.tau).unsqueeze(1)  # (K, 1, N)
        return (1.0 - a) * h + a * torch.tanh(pre)
