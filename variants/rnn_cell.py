"""The plain tanh RNN (Elman 1990), in torch.nn.RNN's parameter layout: the ungated baseline.

    h = tanh(W x + b_ih + R h' + b_hh)
with ' = time t-1 and h = 0 before the first step. Parameters, with a leading trial dimension K as
in `variants.lstm_cell` (a single model is K = 1): `W (K, N, M)`, `R (K, N, N)`, `b_ih (K, N)`,
`b_hh (K, N)` (torch.nn.RNN's weight_ih, weight_hh, bias_ih, bias_hh).

The compiled CPU kernels (`variants.fast`) implement the LSTM variants and the GRU only: `scan`
runs the reference time loop on every device.
"""

from __future__ import annotations

import torch
from torch import nn

from variants.lstm_cell import init_normal_
from variants.spec import RNNSpec


class RNNCell(nn.Module):
    """One direction of a tanh RNN for K trials; `scan` runs it over a whole oriented batch.
    Subclasses (`variants.leaky_cell`) name their two per-unit vectors in `VECTORS` and change
    `_step`."""

    packable = True
    input_blocks: int | None = None  # see LSTMCell.input_blocks
    VECTORS = ("b_ih", "b_hh")  # (K, N) each, registered after W and R

    def __init__(
        self,
        spec: RNNSpec,
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
        for name in self.VECTORS:
            self.register_parameter(name, nn.Parameter(torch.empty(k, n)))
        init_normal_(self, generator)

    def hidden_blocks(self) -> dict[str, tuple[int | None, ...]]:
        """As `LSTMCell.hidden_blocks`: blocks of N units per dimension of each parameter."""
        return {"W": (1, self.input_blocks), "R": (1, 1), **{v: (1,) for v in self.VECTORS}}

    def scan(
        self, x: torch.Tensor, steps: torch.Tensor | None = None, need_cells: bool = True
    ) -> tuple[torch.Tensor, None]:
        """`x (K, T, B, M)` -> outputs `(K, T, B, N)` and None (no cell state), always through
        `scan_reference` (no compiled kernel); `steps` is accepted for the cell contract and
        ignored (the layer masks padded steps)."""
        return self.scan_reference(x)

    def _bias(self) -> torch.Tensor:
        return self.b_ih + self.b_hh  # (K, N)

    def _step(self, h: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        """The next state from `h' (K, B, N)` and `pre = W x + b + R h'`."""
        return torch.tanh(pre)

    def scan_reference(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Reference time loop: `x (K, T, B, M)` -> outputs `(K, T, B, N)`."""
        trials, t_len, batch, m = x.shape
        bias = self._bias().unsqueeze(1)  # (K, 1, N)
        # the input projection of all steps in one (batched) matrix product, outside the loop
        xw = torch.baddbmm(bias, x.reshape(trials, t_len * batch, m), self.W.transpose(1, 2))
        xw = xw.view(trials, t_len, batch, -1)  # (K, T, B, N)
        h = x.new_zeros(trials, batch, self.hidden_size)  # (K, B, N)
        r_t = self.R.transpose(1, 2)
        hs = []
        for xw_t in xw.unbind(1):  # unbind, not xw[:, t]: indexing makes backward O(T^2)
            h = self._step(h, torch.baddbmm(xw_t, h, r_t))
            hs.append(h)
        return torch.stack(hs, 1), None
