"""A recurrent layer: one cell per direction, padding, and per-sequence reversal.

The forward direction runs over the padded batch as is (a step never looks ahead, so padding after
a sequence cannot change its outputs). The backward direction reverses every sequence within its own
length, runs forward, and reverses back, so padding never changes a sequence's result. Outputs at
padded steps are zero.
"""

from __future__ import annotations

import torch
from torch import nn

from variants.gru_cell import GRUCell
from variants.lstm_cell import LSTMCell
from variants.spec import GRUSpec, LSTMSpec


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of `x (T, B, ...)` within its own length; padding stays in place."""
    t_len, batch = x.shape[:2]
    steps = torch.arange(t_len, device=x.device).unsqueeze(1)  # (T, 1)
    lens = lengths.to(x.device).unsqueeze(0)  # (1, B)
    index = torch.where(steps < lens, lens - 1 - steps, steps)  # (T, B)
    index = index.view(t_len, batch, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(0, index)


class Recurrent(nn.Module):
    def __init__(
        self,
        spec: LSTMSpec | GRUSpec,
        input_size: int,
        hidden_size: int,
        bidirectional: bool = False,
        forget_bias: float = 0.0,
        name: str = "",
    ):
        super().__init__()
        self.spec, self.name = spec, name
        self.input_size, self.hidden_size, self.bidirectional = (
            input_size,
            hidden_size,
            bidirectional,
        )
        n_dir = 2 if bidirectional else 1
        if isinstance(spec, LSTMSpec):
            cells = [LSTMCell(spec, input_size, hidden_size, forget_bias) for _ in range(n_dir)]
        else:
            if forget_bias:
                raise ValueError(
                    "forget_bias applies to LSTM variants with a forget gate, not the GRU"
                )
            cells = [GRUCell(spec, input_size, hidden_size) for _ in range(n_dir)]
        self.cells = nn.ModuleList(cells)

    @property
    def directions(self) -> int:
        return len(self.cells)

    def paper_weights(self, direction: int = 0) -> dict[str, torch.Tensor]:
        """Views in the paper's notation (`W_z`, `R_i`, `p_f`, `R_io`, ...) for LSTM variants."""
        if not isinstance(self.spec, LSTMSpec):
            raise TypeError(
                f"paper_weights is defined for the LSTM variants, not {self.name or 'GRU'}"
            )
        if direction not in range(self.directions):
            raise ValueError(f"direction must be in 0..{self.directions - 1}, got {direction}")
        return self.cells[direction].paper_weights()

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor, return_state: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor | None]]:
        """`x (T, B, M)`, `lengths (B,)` -> `(T, B, N * directions)`.

        With `return_state`, also `(h_n, c_n)`, each `(directions, B, N)`, taken at each sequence's
        last step (`c_n` is None for the GRU), as torch.nn.LSTM / GRU return them.
        """
        if x.dim() != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"expected x of shape (T, B, {self.input_size}), got {tuple(x.shape)}")
        lengths = torch.as_tensor(lengths, dtype=torch.int64)
        if (
            lengths.shape != (x.shape[1],)
            or int(lengths.min()) < 1
            or int(lengths.max()) > x.shape[0]
        ):
            raise ValueError(
                f"lengths must be (B,) = ({x.shape[1]},) with values in 1..{x.shape[0]}"
            )
        outs, h_n, c_n = [], [], []
        last = (lengths - 1).to(x.device)  # (B,)
        batch_idx = torch.arange(x.shape[1], device=x.device)
        for d, cell in enumerate(self.cells):
            xd = x if d == 0 else reverse_padded(x, lengths)
            y, c = cell.scan(xd, need_cells=return_state)  # (T, B, N); c only if needed
            h_n.append(y[last, batch_idx])
            if c is not None:
                c_n.append(c[last, batch_idx])
            outs.append(y if d == 0 else reverse_padded(y, lengths))
        mask = torch.arange(x.shape[0], device=x.device).unsqueeze(1) < lengths.to(x.device)
        # where, not a product: whatever a padded step computed (even inf or NaN) becomes 0
        out = torch.where(mask.unsqueeze(2), torch.cat(outs, dim=2), 0.0)  # (T, B, N * dirs)
        if not return_state:
            return out
        return out, (torch.stack(h_n), torch.stack(c_n) if c_n else None)

    def extra_repr(self) -> str:
        return (
            f"{self.name}: input_size={self.input_size}, hidden_size={self.hidden_size}, "
            f"bidirectional={self.bidirectional}"
        )
