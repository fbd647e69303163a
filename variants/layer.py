"""A recurrent layer: one cell per direction, padding, and per-sequence reversal.

The forward direction runs over the padded batch as is (a step never looks ahead, so padding after
a sequence cannot change its outputs). The backward direction reverses every sequence within its own
length, runs forward, and reverses back, so padding never changes a sequence's result. Outputs at
padded steps are zero.
"""

from __future__ import annotations

import torch
from torch import nn

from variants.spec import LSTMSpec


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of `x (T, B, ...)` within its own length; padding stays in place.
    A pack `x (K, T, B, ...)` with `lengths (K, B)` is reversed along its dimension 1."""
    packed = lengths.dim() == 2
    t_len = x.shape[1] if packed else x.shape[0]
    lens = lengths.to(x.device, non_blocking=True).unsqueeze(-2)  # (1, B) or (K, 1, B)
    steps = torch.arange(t_len, device=x.device).unsqueeze(1)  # (T, 1)
    index = torch.where(steps < lens, lens - 1 - steps, steps)  # (T, B) or (K, T, B)
    lead = index.dim()
    index = index.view(*index.shape, *([1] * (x.dim() - lead))).expand_as(x)
    return x.gather(1 if packed else 0, index)


class Recurrent(nn.Module):
    """One recurrent layer of a variant for K trials (a single model is K = 1)."""

    def __init__(
        self,
        spec,
        input_size: int,
        hidden_size: int,
        bidirectional: bool = False,
        forget_bias: float = 0.0,
        name: str = "",
        trials: int = 1,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.spec, self.name, self.trials = spec, name, trials
        self.input_size, self.hidden_size, self.bidirectional = (
            input_size,
            hidden_size,
            bidirectional,
        )
        from variants.registry import cell_kind

        kind = cell_kind(spec)  # the cell class comes from the registry of kinds
        extra = {}
        if forget_bias:
            if kind.name != "lstm":
                raise ValueError(
                    f"forget_bias applies to LSTM variants with a forget gate, not {kind.name}"
                )
            extra["forget_bias"] = forget_bias
        n_dir = 2 if bidirectional else 1
        self.cells = nn.ModuleList(
            kind.cell(spec, input_size, hidden_size, trials=trials, generator=generator, **extra)
            for _ in range(n_dir)
        )

    @property
    def directions(self) -> int:
        return len(self.cells)

    def paper_weights(self, direction: int = 0, trial: int = 0) -> dict[str, torch.Tensor]:
        """Views in the paper's notation (`W_z`, `R_i`, `p_f`, `R_io`, ...) for LSTM variants."""
        if not isinstance(self.spec, LSTMSpec):
            raise TypeError(
                f"paper_weights is defined for the LSTM variants, not {self.name or self.spec.kind}"
            )
        if direction not in range(self.directions):
            raise ValueError(f"direction must be in 0..{self.directions - 1}, got {direction}")
        if trial not in range(self.trials):
            raise ValueError(f"trial must be in 0..{self.trials - 1}, got {trial}")
        return self.cells[direction].paper_weights(trial)

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor, return_state: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor | None]]:
        """`x (T, B, M)`, `lengths (B,)` -> `(T, B, N * directions)` (a layer of one trial).

        With `return_state`, also `(h_n, c_n)`, each `(directions, B, N)`, taken at each sequence's
        last step (`c_n` is None for the GRU), as torch.nn.LSTM / GRU return them.
        """
        if self.trials != 1:
            raise ValueError(f"a pack of {self.trials} trials runs through forward_packed")
        if x.dim() != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"expected x of shape (T, B, {self.input_size}), got {tuple(x.shape)}")
        lengths = torch.as_tensor(lengths, dtype=torch.int64)
        if lengths.shape != (x.shape[1],):
            raise ValueError(f"lengths must be (B,) = ({x.shape[1]},), got {tuple(lengths.shape)}")
        out = self.forward_packed(x.unsqueeze(0), lengths.unsqueeze(0), return_state)
        if not return_state:
            return out[0]
        out, (h_n, c_n) = out
        return out[0], (h_n[:, 0], c_n[:, 0] if c_n is not None else None)

    def forward_packed(
        self,
        x: torch.Tensor,
        lengths: torch.Tensor,
        return_state: bool = False,
        active: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor | None]]:
        """A pack: `x (K, T, B, M)`, `lengths (K, B)` -> `(K, T, B, N * directions)`; trial k
        runs on `x[k]` with its own weights. `return_state` adds `(h_n, c_n)`, each
        `(directions, K, B, N)`. `active (K,)` bool: the compiled kernels skip the inactive
        trials' time loops (their outputs are then unspecified; a pack ignores them)."""
        k_, t_len = self.trials, x.shape[1]
        if x.dim() != 4 or x.shape[0] != k_ or x.shape[3] != self.input_size:
            raise ValueError(
                f"expected x of shape ({k_}, T, B, {self.input_size}), got {tuple(x.shape)}"
            )
        lengths = torch.as_tensor(lengths, dtype=torch.int64)
        if (
            lengths.shape != x.shape[:1] + x.shape[2:3]
            or int(lengths.min()) < 1
            or int(lengths.max()) > t_len
        ):
            raise ValueError(
                f"lengths must be (K, B) = ({k_}, {x.shape[2]}) with values in 1..{t_len}"
            )
        steps = lengths.max(dim=1).values  # (K,): a trial's steps past these are padding
        if active is not None:
            steps = torch.where(active.cpu(), steps, 0)
        outs, h_n, c_n = [], [], []
        dev_lengths = lengths.to(x.device, non_blocking=True)  # from the host: no wait
        last = (dev_lengths - 1).unsqueeze(1)  # (K, 1, B)
        for d, cell in enumerate(self.cells):
            xd = x if d == 0 else reverse_padded(x, lengths)
            y, c = cell.scan(xd, steps, need_cells=return_state)  # (K, T, B, N)
            if return_state:
                idx = last.unsqueeze(-1).expand(-1, -1, -1, y.shape[-1])  # (K, 1, B, N)
                h_n.append(y.gather(1, idx)[:, 0])
                if c is not None:
                    c_n.append(c.gather(1, idx)[:, 0])
            outs.append(y if d == 0 else reverse_padded(y, lengths))
        mask = torch.arange(t_len, device=x.device).view(1, -1, 1) < dev_lengths.unsqueeze(1)
        # where, not a product: whatever a padded step computed (even inf or NaN) becomes 0
        out = torch.where(mask.unsqueeze(3), torch.cat(outs, dim=3), 0.0)  # (K, T, B, N * dirs)
        if not return_state:
            return out
        return out, (torch.stack(h_n), torch.stack(c_n) if c_n else None)

    def extra_repr(self) -> str:
        return (
            f"{self.name}: input_size={self.input_size}, hidden_size={self.hidden_size}, "
            f"bidirectional={self.bidirectional}, trials={self.trials}"
        )
