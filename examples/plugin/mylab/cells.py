"""The minimal gated unit (Zhou, Wu, Zhang and Zhou 2016), as an lstm-odyssey cell plug-in.

    f = s(W_f x + U_f h' + b_f)                  the one gate (forget and input at once)
    n = tanh(W_n x + U_n (f * h') + b_n)         candidate, from the gated previous state
    h = (1 - f) * h' + f * n

The cell contract (what lstm-odyssey's packs and checks need): every parameter has a leading
trial dimension K; `scan(x (K, T, B, M), steps, need_cells) -> (y (K, T, B, N), None)` from a zero
initial state; `hidden_blocks()` says how many blocks of N units each parameter dimension holds.
"""

from __future__ import annotations

import torch
from torch import nn


class MGU(nn.Module):
    packable = True  # K trials in one module: a pack of K equals K single trials
    input_blocks = None  # set by a stack above its first layer: the input is made of units

    def __init__(self, spec, input_size, hidden_size, trials=1, generator=None):
        super().__init__()
        k, n, m = trials, hidden_size, input_size
        self.hidden_size = n
        self.W = nn.Parameter(torch.empty(k, 2 * n, m))  # rows: f, then n
        self.U = nn.Parameter(torch.empty(k, 2 * n, n))
        self.b = nn.Parameter(torch.empty(k, 2 * n))
        with torch.no_grad():  # the paper's protocol: every weight from N(0, 0.1^2)
            for p in self.parameters():
                p.normal_(0.0, 0.1, generator=generator)

    @staticmethod
    def parameter_count(input_size: int, hidden_size: int) -> int:
        n = hidden_size
        return 2 * n * input_size + 2 * n * n + 2 * n

    def hidden_blocks(self):
        return {"W": (2, self.input_blocks), "U": (2, 1), "b": (2,)}

    def scan(self, x, steps=None, need_cells=True):
        k, t_len, batch, m = x.shape
        n = self.hidden_size
        xw = torch.baddbmm(
            self.b.unsqueeze(1), x.reshape(k, t_len * batch, m), self.W.transpose(1, 2)
        ).view(k, t_len, batch, 2 * n)  # (K, T, B, 2N)
        u_f, u_n = self.U[:, :n], self.U[:, n:]  # (K, N, N) each
        h = x.new_zeros(k, batch, n)
        out = []
        for xw_t in xw.unbind(1):
            f = torch.sigmoid(xw_t[..., :n] + torch.bmm(h, u_f.transpose(1, 2)))
            cand = torch.tanh(xw_t[..., n:] + torch.bmm(f * h, u_n.transpose(1, 2)))
            h = (1 - f) * h + f * cand
            out.append(h)
        return torch.stack(out, 1), None  # (K, T, B, N)
