"""Fast time loops for the variant cells, and the choice between them (the cells' `scan`).

Paths, chosen per call by `ODYSSEY_CELLS` (or `use(...)`) and the tensors' device:
- `reference`: the cells' readable per-step loop under autograd (`LSTMCell.scan_reference`).
- `python`: the whole sequence in `pykernel` (pure PyTorch, any device) with a hand-written
  backward: no autograd graph per step.
- `fast` (default): as `python`, but on CPU the compiled kernels of `cells.cpp` (built once per
  machine, see `build`; if the build fails, one warning and the `python` kernels); variants whose
  equations are exactly PyTorch's run in PyTorch's fused kernels (NP -> torch.lstm when the cell
  states are not needed, the GRU -> torch.gru on CUDA, where cuDNN beats any loop of ours).
In every path the input projection of all steps is one matrix product outside the time loop
(for the LSTM variants without the bias, which the kernels add in their step loop).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from variants.fast import build, pykernel
from variants.fast.functions import (
    GRUSequence,
    LSTMSequence,
    is_torch_gru,
    is_torch_lstm,
    lstm_flags,
)

MODES = ("fast", "python", "reference")
ENV = "ODYSSEY_CELLS"
_override: list[str] = []


def mode() -> str:
    """The active path: the innermost `use(...)`, else `$ODYSSEY_CELLS`, else "fast"."""
    m = _override[-1] if _override else os.environ.get(ENV, "fast") or "fast"
    if m not in MODES:
        raise ValueError(f"{ENV} must be one of {', '.join(MODES)}; got {m!r}")
    return m


@contextmanager
def use(m: str) -> Iterator[None]:
    """Run the block with path `m` ("fast", "python" or "reference")."""
    if m not in MODES:
        raise ValueError(f"unknown cell path {m!r}; known: {', '.join(MODES)}")
    _override.append(m)
    try:
        yield
    finally:
        _override.pop()


def _kernel(x: torch.Tensor, m: str):
    if m == "fast" and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        ops = build.load()
        if ops is not None:
            return ops
    return pykernel


def lstm_path(cell, x: torch.Tensor, need_cells: bool = True) -> str:
    """Which implementation `lstm_scan` uses for this cell and input (for logs and benchmarks)."""
    m = mode()
    if m == "reference":
        return "reference"
    if m == "fast" and not need_cells and is_torch_lstm(cell.spec):
        return "torch.lstm"
    return "compiled" if _kernel(x, m) is not pykernel else "python"


def lstm_scan(
    cell, x: torch.Tensor, need_cells: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`x (T, B, M)` -> `(y (T, B, N), c (T, B, N))` for an `LSTMCell`; `c` may be None when
    `need_cells` is False."""
    path = lstm_path(cell, x, need_cells)
    if path == "reference":
        return cell.scan_reference(x)
    if path == "torch.lstm":
        h0 = x.new_zeros(1, x.shape[1], cell.hidden_size)
        params = [cell.W, cell.R, cell.b, torch.zeros_like(cell.b)]
        y = torch.lstm(x, (h0, h0), params, True, 1, 0.0, torch.is_grad_enabled(), False, False)[0]
        return y, None
    t_len, batch, _ = x.shape
    xw = torch.mm(x.reshape(t_len * batch, -1), cell.W.t()).view(t_len, batch, -1)
    return LSTMSequence.apply(
        xw, cell.b, cell.R, cell.p, cell.Rg, lstm_flags(cell.spec), _kernel(x, mode())
    )


def gru_path(cell, x: torch.Tensor) -> str:
    m = mode()
    if m == "reference" or not is_torch_gru(cell.spec):
        return "reference"  # the kernels implement the reset-after (torch.nn.GRU) form only
    if m == "fast" and x.device.type != "cpu":
        return "torch.gru"
    return "compiled" if _kernel(x, m) is not pykernel else "python"


def gru_scan(cell, x: torch.Tensor) -> tuple[torch.Tensor, None]:
    """`x (T, B, M)` -> `(h (T, B, N), None)` for a `GRUCell`."""
    path = gru_path(cell, x)
    if path == "reference":
        return cell.scan_reference(x)
    if path == "torch.gru":
        h0 = x.new_zeros(1, x.shape[1], cell.hidden_size)
        params = [cell.W, cell.R, cell.b_ih, cell.b_hh]
        return torch.gru(x, h0, params, True, 1, 0.0, torch.is_grad_enabled(), False, False)[
            0
        ], None
    t_len, batch, _ = x.shape
    xw = torch.addmm(cell.b_ih, x.reshape(t_len * batch, -1), cell.W.t()).view(t_len, batch, -1)
    return GRUSequence.apply(xw, cell.R, cell.b_hh, _kernel(x, mode())), None


__all__ = ["ENV", "MODES", "build", "gru_path", "gru_scan", "lstm_path", "lstm_scan", "mode", "use"]
