"""Autograd functions running a whole sequence through a kernel with a hand-written backward.

`kernel` is either the compiled `torch.ops.odyssey_cells` or `variants.fast.pykernel`; both take
and return the same tensors. The input projection `W x + b` stays outside (one GEMM for all
steps, differentiated by autograd); these functions cover the time loop.
"""

from __future__ import annotations

import torch

from variants.fast.pykernel import FGR, Layout
from variants.spec import GRUSpec, LSTMSpec


def lstm_flags(spec: LSTMSpec) -> int:
    """The kernel's flag bits for a spec (bit values in `variants.fast.pykernel`)."""
    bits = (
        spec.input_gate,
        spec.forget_gate,
        spec.output_gate,
        spec.input_activation,
        spec.output_activation,
        spec.peepholes,
        spec.coupled_input_forget,
        spec.full_gate_recurrence,
    )
    return sum(1 << k for k, on in enumerate(bits) if on)


def combine_recurrent(R: torch.Tensor, Rg: torch.Tensor, flags: int) -> torch.Tensor:
    """FGR: [R | Rg spread over the i, f, o row blocks] (4N, 4N), so that a = S Rc^T with
    S = [y', i', f', o'] is one matrix product per step."""
    n = R.shape[1]
    lay = Layout(flags, n)
    rc = R.new_zeros(R.shape[0], 4 * n)
    rc[:, :n] = R
    for k, gate in enumerate(("i", "f", "o")):
        rc[lay.cols[gate], n:] = Rg[k * n : (k + 1) * n]
    return rc


def split_recurrent(drc: torch.Tensor, flags: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = drc.shape[1] // 4
    lay = Layout(flags, n)
    return drc[:, :n], torch.cat([drc[lay.cols[g], n:] for g in ("i", "f", "o")])


class LSTMSequence(torch.autograd.Function):
    """(xw (T, B, G*N), R, p | None, Rg | None) -> (y (T, B, N), c (T, B, N))."""

    @staticmethod
    def forward(ctx, xw, R, p, Rg, flags: int, kernel):  # noqa: D102
        with torch.no_grad():
            rc = combine_recurrent(R, Rg, flags) if flags & FGR else R
            pt = p if p is not None else xw.new_empty(0)
            s, c, act, hc = kernel.lstm_forward(xw.contiguous(), rc.contiguous(), pt, flags)
        ctx.save_for_backward(rc, pt, s, c, act, hc)
        ctx.flags, ctx.kernel, ctx.has_p = flags, kernel, p is not None
        n = hc.shape[2]
        return s[1:, :, :n], c[1:]

    @staticmethod
    def backward(ctx, dy, dc):  # noqa: D102
        rc, pt, s, c, act, hc = ctx.saved_tensors
        dxw, drc, dp = ctx.kernel.lstm_backward(
            dy.contiguous(), dc.contiguous(), rc, pt, s, c, act, hc, ctx.flags
        )
        if ctx.flags & FGR:
            dR, dRg = split_recurrent(drc, ctx.flags)
        else:
            dR, dRg = drc, None
        return dxw, dR, dp if ctx.has_p else None, dRg, None, None


class GRUSequence(torch.autograd.Function):
    """(xw (T, B, 3N) = W x + b_ih, R (3N, N), b_hh (3N)) -> h (T, B, N)."""

    @staticmethod
    def forward(ctx, xw, R, b_hh, kernel):  # noqa: D102
        with torch.no_grad():
            h, act = kernel.gru_forward(xw.contiguous(), R.contiguous(), b_hh.contiguous())
        ctx.save_for_backward(R, h, act)
        ctx.kernel = kernel
        return h[1:]

    @staticmethod
    def backward(ctx, dh):  # noqa: D102
        R, h, act = ctx.saved_tensors
        dxw, dR, db = ctx.kernel.gru_backward(dh.contiguous(), R.contiguous(), h, act)
        return dxw, dR, db, None


def is_torch_lstm(spec: LSTMSpec) -> bool:
    """NP: exactly torch.nn.LSTM's equations (gate order i, f, g, o, no peepholes)."""
    return spec == LSTMSpec(peepholes=False, change=spec.change)


def is_torch_gru(spec: GRUSpec) -> bool:
    return spec.reset_after
