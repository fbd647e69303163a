"""A roofline projection of the fused GPU time loop (`variants/fast/triton_*.py`), simple enough
to check by hand. Not a measurement: no GPU timing of this path has been made yet.

Per time step the fused path makes `LAUNCHES_PER_STEP` kernel launches for the whole pack (one
forward, one backward), and each must move at least the bytes below, per trial, for batch rows B,
width N (the pack's layer width, padding included) and `itemsize` bytes per number; every tensor
element is counted once (tiles re-reading y_{t-1} are assumed to hit L2), and the recurrent
weights are read from HBM at every step (a pack's weights outgrow the 50 MB L2 of an H100 from a
few dozen trials of N = 200 on).

LSTM variant with G gate blocks, P peephole rows, F = 1 for FGR (else 0):
- forward: weights G N^2 + 9 F N^2, bias and peepholes (G + P) N; per row, read xw_t (G N),
  y_{t-1} and c_{t-1} (2 N), g_{t-1} (3 F N); write the gate activations (G N), c_t, y_t, h(c_t)
  (3 N), g_t (3 F N);
- backward: weights G N^2 + 9 F N^2, peepholes P N; per row, read da_{t+1} (G N), dga_{t+1}
  (3 F N), dy_t, c_{t-1}, h(c_t), the carried cell gradient (4 N), the activations (G N); write
  da_t (G N), dga_t (3 F N), the carry (N); and the share of the per-sequence weight-gradient
  products, which read da_t and y_{t-1} (G N + N) and for FGR dga_t and g_{t-1} (6 F N).
GRU (3 gate blocks): forward weights 3 N^2, b_hh 3 N; per row read xw_t (3 N), h_{t-1} (N), write
h_t (N), the activations r, u, n, hn (4 N). Backward weights 3 N^2; per row read dh_t, the carry,
h_{t-1} (3 N), dhh_{t+1} (3 N), the activations (4 N); write dxw_t and dhh_t (6 N), the carry
(N); weight-gradient share dhh_t and h_{t-1} (4 N).

Time per step: each launch takes the longer of the launch cost and its bytes over the HBM
bandwidth (K trials' bytes together); a trial-frame (batch 1: one step of one trial) costs the
step over K. Only the recurrent loop is projected (not the input projection, the output layer,
the loss, the optimizer or the evaluations): a floor under a measured time, not a forecast of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from variants.fast.triton_launch import LAUNCHES_PER_STEP
from variants.spec import GRUSpec, LSTMSpec


@dataclass(frozen=True)
class Device:
    name: str
    hbm_bytes_per_s: float
    launch_s: float


H100 = Device("H100 (3.35 TB/s HBM3, 4 us per launch)", 3.35e12, 4e-6)


def step_bytes(spec: LSTMSpec | GRUSpec, n: int, batch: int = 1, itemsize: int = 4) -> dict:
    """Bytes one trial's forward and backward step must move (see the module docstring):
    `{"forward": bytes, "backward": bytes}`."""
    b = batch
    if isinstance(spec, GRUSpec):
        fwd = 3 * n * n + 3 * n + b * (3 * n + n + n + 4 * n)
        bwd = 3 * n * n + b * (3 * n + 3 * n + 4 * n + 6 * n + n + 4 * n)
    else:
        g, p = len(spec.weighted_gates), len(spec.peephole_gates)
        f = 1 if spec.full_gate_recurrence else 0
        weights = g * n * n + 9 * f * n * n
        fwd = weights + (g + p) * n + b * (g * n + 2 * n + 3 * f * n + g * n + 3 * n + 3 * f * n)
        per_row = (g * n + 3 * f * n + 4 * n + g * n) + (g * n + 3 * f * n + n)
        bwd = weights + p * n + b * (per_row + g * n + n + 6 * f * n)
    return {"forward": fwd * itemsize, "backward": bwd * itemsize}


def step_seconds(
    spec: LSTMSpec | GRUSpec,
    n: int,
    trials: int,
    batch: int = 1,
    itemsize: int = 4,
    device: Device = H100,
) -> float:
    """Projected seconds of one time step (forward and backward) of a pack of `trials` trials
    of width `n`: per launch, the longer of the launch cost and the bytes over the bandwidth."""
    moved = step_bytes(spec, n, batch, itemsize)
    total = 0.0
    for phase, launches in LAUNCHES_PER_STEP.items():
        per_launch = trials * moved[phase] / launches
        total += launches * max(device.launch_s, per_launch / device.hbm_bytes_per_s)
    return total


def trial_frame_us(
    spec: LSTMSpec | GRUSpec,
    packs: Sequence[Sequence[int]],
    directions: int = 1,
    batch: int = 1,
    itemsize: int = 4,
    device: Device = H100,
) -> float:
    """Projected microseconds per trial and training frame (batch 1) of trials run as `packs`
    (each a list of widths; a pack runs at its widest): the packs' step times over the trials,
    times the layer's directions (each runs its own loop)."""
    trials = sum(len(p) for p in packs)
    if not trials:
        return 0.0
    total = sum(step_seconds(spec, max(p), len(p), batch, itemsize, device) for p in packs if p)
    return directions * total / trials * 1e6
