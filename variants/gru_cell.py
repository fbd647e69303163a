"""The GRU (Cho et al. 2014; Chung et al. 2014), in torch.nn.GRU's parameter layout.

    r = s(W_r x + b_ir + U_r h' + b_hr)
    u = s(W_u x + b_iu + U_u h' + b_hu)                     update gate ("z" in PyTorch's docs)
    n = tanh(W_n x + b_in + r * (U_n h' + b_hn))            reset_after=True (cuDNN, torch.nn.GRU)
    n = tanh(W_n x + b_in + U_n (r * h') + b_hn)            reset_after=False (Chung et al. 2014)
    h = (1 - u) * n + u * h'
Parameters, with a leading trial dimension K as in `variants.lstm_cell` (a single model is K = 1):
`W (K, 3N, M)`, `R (K, 3N, N)`, `b_ih (K, 3N)`, `b_hh (K, 3N)`, gate order r, u, n as in PyTorch.
"""

from __future__ import annotations

import torch
from torch import nn

from variants.lstm_cell import init_normal_
from variants.spec import GRUSpec


class GRUCell(nn.Module):
    input_blocks: int | None = None  # see LSTMCell.input_blocks

    def __init__(
        self,
        spec: GRUSpec,
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
        self.W = nn.Parameter(torch.empty(k, 3 * n, input_size))
        self.R = nn.Parameter(torch.empty(k, 3 * n, n))
        self.b_ih = nn.Parameter(torch.empty(k, 3 * n))
        self.b_hh = nn.Parameter(torch.empty(k, 3 * n))
        # each trial's real hidden units; a pack (study.pack) lowers a smaller trial's, whose
        # extra units are zero padding that the compiled kernels skip
        self.units = torch.full((k,), n, dtype=torch.int64)
        init_normal_(self, generator)

    def hidden_blocks(self) -> dict[str, tuple[int | None, ...]]:
        """As `LSTMCell.hidden_blocks`: blocks of N units per dimension of each parameter."""
        return {"W": (3, self.input_blocks), "R": (3, 1), "b_ih": (3,), "b_hh": (3,)}

    def step(self, xw: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """`xw = W x + b_ih (K, B, 3N)`, `h' (K, B, N)` -> `h (K, B, N)`."""
        n = self.hidden_size
        xr, xu, xn = xw.split(n, dim=-1)
        if self.spec.reset_after:
            hh = torch.baddbmm(self.b_hh.unsqueeze(1), h, self.R.transpose(1, 2))
            hr, hu, hn = hh.split(n, dim=-1)
            r, u = torch.sigmoid(xr + hr), torch.sigmoid(xu + hu)
            cand = torch.tanh(xn + r * hn)
        else:
            b_r, b_u, b_n = (b.unsqueeze(1) for b in self.b_hh.split(n, dim=-1))
            r_w, u_w, n_w = (w.transpose(1, 2) for w in self.R.split(n, dim=1))
            r = torch.sigmoid(xr + torch.bmm(h, r_w) + b_r)
            u = torch.sigmoid(xu + torch.bmm(h, u_w) + b_u)
            cand = torch.tanh(xn + torch.bmm(r * h, n_w) + b_n)
        return (1.0 - u) * cand + u * h

    def scan(
        self, x: torch.Tensor, steps: torch.Tensor | None = None, need_cells: bool = True
    ) -> tuple[torch.Tensor, None]:
        """`x (K, T, B, M)` -> outputs `(K, T, B, N)` through the fast path (`variants.fast`;
        `ODYSSEY_CELLS=reference` forces `scan_reference`); a GRU has no separate cell state.
        `steps (K,)` as in `LSTMCell.scan`."""
        from variants import fast

        return fast.gru_scan(self, x, steps)

    def scan_reference(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Reference time loop: `x (K, T, B, M)` -> outputs `(K, T, B, N)`."""
        trials, t_len, batch, m = x.shape
        xw = torch.baddbmm(
            self.b_ih.unsqueeze(1), x.reshape(trials, t_len * batch, m), self.W.transpose(1, 2)
        ).view(trials, t_len, batch, -1)
        h = x.new_zeros(trials, batch, self.hidden_size)
        hs = []
        for xw_t in xw.unbind(1):
            h = self.step(xw_t, h)
            hs.append(h)
        return torch.stack(hs, 1), None
