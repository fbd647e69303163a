"""The GRU (Cho et al. 2014; Chung et al. 2014), in torch.nn.GRU's parameter layout.

    r = s(W_r x + b_ir + U_r h' + b_hr)
    u = s(W_u x + b_iu + U_u h' + b_hu)                     update gate ("z" in PyTorch's docs)
    n = tanh(W_n x + b_in + r * (U_n h' + b_hn))            reset_after=True (cuDNN, torch.nn.GRU)
    n = tanh(W_n x + b_in + U_n (r * h') + b_hn)            reset_after=False (Chung et al. 2014)
    h = (1 - u) * n + u * h'
Parameters `W (3N, M)`, `R (3N, N)`, `b_ih (3N)`, `b_hh (3N)`, gate order r, u, n as in PyTorch.
"""

from __future__ import annotations

import torch
from torch import nn

from variants.lstm_cell import INIT_STD
from variants.spec import GRUSpec


class GRUCell(nn.Module):
    def __init__(self, spec: GRUSpec, input_size: int, hidden_size: int):
        super().__init__()
        self.spec, self.input_size, self.hidden_size = spec, input_size, hidden_size
        n = hidden_size
        self.W = nn.Parameter(torch.empty(3 * n, input_size))
        self.R = nn.Parameter(torch.empty(3 * n, n))
        self.b_ih = nn.Parameter(torch.empty(3 * n))
        self.b_hh = nn.Parameter(torch.empty(3 * n))
        for param in self.parameters():
            nn.init.normal_(param, 0.0, INIT_STD)

    def step(self, xw: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        n = self.hidden_size
        xr, xu, xn = xw.split(n, dim=1)
        if self.spec.reset_after:
            hr, hu, hn = torch.addmm(self.b_hh, h, self.R.t()).split(n, dim=1)
            r, u = torch.sigmoid(xr + hr), torch.sigmoid(xu + hu)
            cand = torch.tanh(xn + r * hn)
        else:
            b_r, b_u, b_n = self.b_hh.split(n)
            r_w, u_w, n_w = self.R.split(n, dim=0)
            r = torch.sigmoid(xr + h @ r_w.t() + b_r)
            u = torch.sigmoid(xu + h @ u_w.t() + b_u)
            cand = torch.tanh(xn + (r * h) @ n_w.t() + b_n)
        return (1.0 - u) * cand + u * h

    def scan(self, x: torch.Tensor, need_cells: bool = True) -> tuple[torch.Tensor, None]:
        """`x (T, B, M)` -> outputs `(T, B, N)` through the fast path (`variants.fast`;
        `ODYSSEY_CELLS=reference` forces `scan_reference`); a GRU has no separate cell state."""
        from variants import fast

        return fast.gru_scan(self, x)

    def scan_reference(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Reference time loop: `x (T, B, M)` -> outputs `(T, B, N)`."""
        t_len, batch, _ = x.shape
        xw = torch.addmm(self.b_ih, x.reshape(t_len * batch, -1), self.W.t()).view(t_len, batch, -1)
        h = x.new_zeros(batch, self.hidden_size)
        hs = []
        for xw_t in xw.unbind(0):
            h = self.step(xw_t, h)
            hs.append(h)
        return torch.stack(hs), None
