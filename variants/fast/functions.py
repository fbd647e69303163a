"""Autograd functions running a whole sequence through a kernel with a hand-written backward.

`kernel` is either the compiled `torch.ops.odyssey_cells` or `variants.fast.pykernel`; both take
and return the same tensors. The input projection `W x + b` stays outside (one GEMM for all
steps, differentiated by autograd); these functions cover the time loop.
"""

from __future__ import annotations

import torch

from variants.fast.pykernel import FGR
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


class LSTMSequence(torch.autograd.Function):
    """(xw (T, B, G*N) = W x, b (G*N), R (G*N, N), p | None, Rg (3N, 3N) | None) ->
    (y (T, B, N), c (T, B, N)). The bias is added, and its gradient summed, in the step loops
    (no broadcast copy, no extra pass over dxw).

    For FGR, R and Rg stay two matrices (13 N^2 multiply-adds per row and step: y' R^T over all
    gate blocks, g' Rg^T over the i, f, o blocks), not one 4N x 4N matrix with a zero block.
    """

    @staticmethod
    def forward(ctx, xw, b, R, p, Rg, flags: int, kernel):  # noqa: D102
        ctx.set_materialize_grads(False)  # an unused output (c, mostly) costs no zero tensor
        with torch.no_grad():
            empty = xw.new_empty(0)
            rg = Rg.contiguous() if flags & FGR else empty
            pt = p.contiguous() if p is not None else empty
            y, g, c, act, hc = kernel.lstm_forward(
                xw.contiguous(), b.contiguous(), R.contiguous(), rg, pt, flags
            )
        ctx.save_for_backward(R, rg, pt, y, g, c, act, hc)
        ctx.flags, ctx.kernel, ctx.has_p = flags, kernel, p is not None
        return y[1:], c[1:]

    @staticmethod
    def backward(ctx, dy, dc):  # noqa: D102
        R, rg, pt, y, g, c, act, hc = ctx.saved_tensors
        empty = act.new_empty(0)
        dxw, db, dR, dRg, dp = ctx.kernel.lstm_backward(
            empty if dy is None else dy.contiguous(),
            empty if dc is None else dc.contiguous(),
            R.contiguous(),
            rg,
            pt,
            y,
            g,
            c,
            act,
            hc,
            ctx.flags,
        )
        return (
            dxw,
            db,
            dR,
            dp if ctx.has_p else None,
            dRg if ctx.flags & FGR else None,
            None,
            None,
        )


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
