"""Fast time loops for the variant cells, and the choice between them (the cells' `scan`).

Paths, chosen per call by `ODYSSEY_CELLS` (or `use(...)`), the spec and the tensors' device:
- `reference`: the cells' readable per-step loop under autograd (`LSTMCell.scan_reference`),
  batched over the trials of a pack. Every other path is tested against it.
- `fast` (default): on CPU the compiled kernels of `cells.cpp` (built once per machine, see
  `build`), forward and hand-written backward over whole sequences, trial by trial; a spec the
  kernels do not know (`supports`) or a failed build (one warning) falls back to `reference`.
  Variants whose equations are exactly PyTorch's run in PyTorch's fused kernels for a single
  model (K = 1): NP -> torch.lstm when the cell states are not needed, the GRU -> torch.gru on
  CUDA, where cuDNN beats any loop of ours. On CUDA everything else runs the `triton` path when
  Triton is installed (else the reference loop batched over the pack, with one warning).
- `triton`: fused Triton step kernels for all K trials of a pack (`triton_lstm`, `triton_gru`):
  one launch per time step forward and one backward, the recurrent-weight gradients as one
  batched product per sequence. Chosen on CUDA by `fast`; on CPU tensors only when asked for
  (`ODYSSEY_CELLS=triton` or `use("triton")`) under Triton's interpreter (`TRITON_INTERPRET=1`).
In every path the input projection of all steps is one (batched) matrix product outside the time
loop (for the LSTM variants without the bias, which the kernels add in their step loop).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from variants.fast import build, triton_launch
from variants.fast.functions import (
    GRUSequence,
    LSTMSequence,
    is_torch_gru,
    is_torch_lstm,
    lstm_flags,
    supports,
)

MODES = ("fast", "reference", "triton")
ENV = "ODYSSEY_CELLS"
_override: list[str] = []
log = logging.getLogger(__name__)
_warned: set[str] = set()


def mode() -> str:
    """The active path: the innermost `use(...)`, else `$ODYSSEY_CELLS`, else "fast"."""
    m = _override[-1] if _override else os.environ.get(ENV, "fast") or "fast"
    if m not in MODES:
        raise ValueError(f"{ENV} must be one of {', '.join(MODES)}; got {m!r}")
    return m


@contextmanager
def use(m: str) -> Iterator[None]:
    """Run the block with path `m` ("fast", "reference" or "triton")."""
    if m not in MODES:
        raise ValueError(f"unknown cell path {m!r}; known: {', '.join(MODES)}")
    _override.append(m)
    try:
        yield
    finally:
        _override.pop()


def _compiled(x: torch.Tensor):
    """The compiled kernels when they apply to `x` (CPU, float32/64, built), else None."""
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        return build.load()
    return None


def _triton_on_cuda(x: torch.Tensor) -> bool:
    """The `fast` path's choice on CUDA: the Triton kernels (float32 and float64) when Triton is
    installed."""
    if x.device.type != "cuda" or x.dtype not in (torch.float32, torch.float64):
        return False
    if triton_launch.available():
        return True
    if "triton" not in _warned:
        _warned.add("triton")
        log.warning("%s; CUDA runs the reference loops meanwhile", triton_launch.INSTALL_HINT)
    return False


def lstm_path(cell, x: torch.Tensor, need_cells: bool = True) -> str:
    """Which implementation `lstm_scan` uses for this cell and input (for logs and benchmarks):
    "reference", "torch.lstm", "triton" or "compiled"."""
    m = mode()
    if m == "reference" or not supports(cell.spec):
        return "reference"
    if m == "triton":
        return "triton"
    if not need_cells and cell.trials == 1 and is_torch_lstm(cell.spec):
        return "torch.lstm"
    if _triton_on_cuda(x):
        return "triton"
    return "compiled" if _compiled(x) is not None else "reference"


def lstm_scan(
    cell, x: torch.Tensor, steps: torch.Tensor | None = None, need_cells: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`x (K, T, B, M)` -> `(y (K, T, B, N), c (K, T, B, N))` for an `LSTMCell`; `c` may be None
    when `need_cells` is False. `steps (K,)`: the kernels skip a trial's steps past it."""
    path = lstm_path(cell, x, need_cells)
    if path == "reference":
        return cell.scan_reference(x)
    if path == "torch.lstm":
        h0 = x.new_zeros(1, x.shape[2], cell.hidden_size)
        params = [cell.W[0], cell.R[0], cell.b[0], torch.zeros_like(cell.b[0])]
        y = torch.lstm(x[0], (h0, h0), params, True, 1, 0.0, torch.is_grad_enabled(), False, False)
        return y[0].unsqueeze(0), None
    if path == "triton":
        triton_launch.require(x)
        return triton_launch.kernels("triton_lstm").scan(
            cell, x, _steps(steps, *x.shape[:2]), need_cells
        )
    trials, t_len, batch, m = x.shape
    xw = torch.bmm(x.reshape(trials, t_len * batch, m), cell.W.transpose(1, 2))
    xw = xw.view(trials, t_len, batch, -1)  # (K, T, B, G*N)
    steps = _steps(steps, trials, t_len)
    return LSTMSequence.apply(
        xw, cell.b, cell.R, cell.p, cell.Rg, steps, lstm_flags(cell.spec), _compiled(x)
    )


def gru_path(cell, x: torch.Tensor) -> str:
    """As `lstm_path` for a `GRUCell`: "reference", "torch.gru", "triton" or "compiled"."""
    m = mode()
    if m == "reference" or not supports(cell.spec):
        return "reference"  # the kernels implement the reset-after (torch.nn.GRU) form only
    if m == "triton":
        return "triton"
    if x.device.type != "cpu":
        if cell.trials == 1 and is_torch_gru(cell.spec):
            return "torch.gru"
        return "triton" if _triton_on_cuda(x) else "reference"
    return "compiled" if _compiled(x) is not None else "reference"


def gru_scan(cell, x: torch.Tensor, steps: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
    """`x (K, T, B, M)` -> `(h (K, T, B, N), None)` for a `GRUCell`."""
    path = gru_path(cell, x)
    if path == "reference":
        return cell.scan_reference(x)
    if path == "torch.gru":
        h0 = x.new_zeros(1, x.shape[2], cell.hidden_size)
        params = [cell.W[0], cell.R[0], cell.b_ih[0], cell.b_hh[0]]
        h = torch.gru(x[0], h0, params, True, 1, 0.0, torch.is_grad_enabled(), False, False)
        return h[0].unsqueeze(0), None
    if path == "triton":
        triton_launch.require(x)
        return triton_launch.kernels("triton_gru").scan(cell, x, _steps(steps, *x.shape[:2]))
    trials, t_len, batch, m = x.shape
    xw = torch.baddbmm(
        cell.b_ih.unsqueeze(1), x.reshape(trials, t_len * batch, m), cell.W.transpose(1, 2)
    ).view(trials, t_len, batch, -1)
    steps = _steps(steps, trials, t_len)
    return GRUSequence.apply(xw, cell.R, cell.b_hh, steps, _compiled(x)), None


def _steps(steps: torch.Tensor | None, trials: int, t_len: int) -> torch.Tensor:
    if steps is None:
        return torch.full((trials,), t_len, dtype=torch.int64)
    return steps.to("cpu", torch.int64)


__all__ = [
    "ENV",
    "MODES",
    "build",
    "gru_path",
    "gru_scan",
    "lstm_path",
    "lstm_scan",
    "mode",
    "supports",
    "use",
]
