"""Fast time loops for the variant cells, and the choice between them (the cells' `scan`).

Paths, chosen per call by `ODYSSEY_CELLS` (or `use(...)`), the spec and the tensors' device:
- `reference`: the cells' readable per-step loop under autograd (`LSTMCell.scan_reference`),
  batched over the trials of a pack. Every other path is tested against it.
- `fast` (default): on CPU the compiled kernels of `cells.cpp` (built once per machine, see
  `build`), forward and hand-written backward over whole sequences, trial by trial, each trial on
  a compact copy of its own units and steps (`cell.units`), so that its numbers do not depend on
  its pack; a spec the kernels do not know (`supports`) or a failed build (one warning) falls
  back to `reference`. On CUDA, single models and packs alike run the `triton` path when Triton
  is installed (else the reference loop batched over the pack, with one warning); no shortcut to
  PyTorch's fused LSTM / GRU (cuDNN), so that a trial takes the same path alone and packed.
- `triton`: fused Triton step kernels for all K trials of a pack (`triton_lstm`, `triton_gru`):
  one launch per time step forward and one backward, the recurrent-weight gradients as one
  batched product per sequence. Chosen on CUDA by `fast`; on CPU tensors only when asked for
  (`ODYSSEY_CELLS=triton` or `use("triton")`) under Triton's interpreter (`TRITON_INTERPRET=1`).
In every path the input projection of all steps is one (batched) matrix product outside the time
loop (in the compiled kernels, one per trial).
`numerics(spec, device)` names the implementation a layer trains with (recorded per trial).
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
    "reference", "triton" or "compiled"."""
    m = mode()
    if m == "reference" or not supports(cell.spec):
        return "reference"
    if m == "triton" or _triton_on_cuda(x):
        return "triton"
    return "compiled" if _compiled(x) is not None else "reference"


def numerics(spec, device: str | torch.device) -> str:
    """The implementation a layer of `spec` runs on `device`, as recorded with each trial:
    "cpu-compiled" (the compiled kernels: a trial's numbers are bitwise the same in any pack),
    else "<device type>-reference" (the reference loop)."""
    kind = torch.device(device).type
    if kind == "cpu" and mode() == "fast" and supports(spec) and build.load() is not None:
        return "cpu-compiled"
    if supports(spec) and (
        mode() == "triton" or (kind == "cuda" and mode() == "fast" and triton_launch.available())
    ):
        return f"{kind}-triton"
    return f"{kind}-reference"


def _units(cell, trials: int) -> torch.Tensor:
    """Each trial's real hidden units (`cell.units`, set by a pack; all of them by default)."""
    units = getattr(cell, "units", None)
    if units is None:
        return torch.full((trials,), cell.hidden_size, dtype=torch.int64)
    return units.to("cpu", torch.int64)


def lstm_scan(
    cell, x: torch.Tensor, steps: torch.Tensor | None = None, need_cells: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`x (K, T, B, M)` -> `(y (K, T, B, N), c (K, T, B, N))` for an `LSTMCell`; `c` may be None
    when `need_cells` is False. `steps (K,)`: the kernels skip a trial's steps past it."""
    path = lstm_path(cell, x, need_cells)
    if path == "reference":
        return cell.scan_reference(x)
    if path == "triton":
        triton_launch.require(x)
        return triton_launch.kernels("triton_lstm").scan(
            cell, x, _steps(steps, *x.shape[:2]), need_cells
        )
    trials, t_len = x.shape[:2]
    steps, units = _steps(steps, trials, t_len), _units(cell, trials)
    return LSTMSequence.apply(
        x,
        cell.W,
        cell.b,
        cell.R,
        cell.p,
        cell.Rg,
        steps,
        units,
        lstm_flags(cell.spec),
        _compiled(x),
    )


def gru_path(cell, x: torch.Tensor) -> str:
    """As `lstm_path` for a `GRUCell`: "reference", "triton" or "compiled"."""
    m = mode()
    if m == "reference" or not supports(cell.spec):
        return "reference"  # the kernels implement the reset-after (torch.nn.GRU) form only
    if m == "triton" or _triton_on_cuda(x):
        return "triton"
    return "compiled" if _compiled(x) is not None else "reference"


def gru_scan(cell, x: torch.Tensor, steps: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
    """`x (K, T, B, M)` -> `(h (K, T, B, N), None)` for a `GRUCell`."""
    path = gru_path(cell, x)
    if path == "reference":
        return cell.scan_reference(x)
    if path == "triton":
        triton_launch.require(x)
        return triton_launch.kernels("triton_gru").scan(cell, x, _steps(steps, *x.shape[:2]))
    trials, t_len = x.shape[:2]
    steps, units = _steps(steps, trials, t_len), _units(cell, trials)
    h = GRUSequence.apply(x, cell.W, cell.b_ih, cell.R, cell.b_hh, steps, units, _compiled(x))
    return h, None


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
    "numerics",
    "supports",
    "use",
]
