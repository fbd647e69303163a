"""Autograd functions running whole sequences of a pack through the compiled kernels, whose
backward is written by hand (`cells.cpp`), and the flag words they take.

The input projection `W x` stays outside (one batched GEMM for all steps and trials,
differentiated by autograd); these functions cover the time loop. Tensors carry the trial
dimension first: `xw (K, T, B, G*N)`, `R (K, G*N, N)`, ...; `steps (K,)` bounds each trial's loop.
"""

from __future__ import annotations

import dataclasses

import torch

from variants.spec import KERNEL_FLAGS, GRUSpec, LSTMSpec

FGR = 1 << KERNEL_FLAGS.index("full_gate_recurrence")


def supports(spec: LSTMSpec | GRUSpec) -> bool:
    """Whether the compiled kernels implement `spec`: every equation-changing field of an LSTM
    spec is in the flag table (a field added later runs in the reference loop until the kernel
    learns it); the GRU in its torch.nn.GRU (reset-after) form; no other kind (RNN, LEAKY and
    cells added later run their reference loops)."""
    if spec.kind not in ("lstm", "gru"):
        return False
    if isinstance(spec, GRUSpec):
        return spec.reset_after and {f.name for f in dataclasses.fields(spec)} == {
            "reset_after",
            "change",
        }
    fields = {f.name for f in dataclasses.fields(spec)} - {"change"}
    return fields <= set(KERNEL_FLAGS)


def lstm_flags(spec: LSTMSpec) -> int:
    """The kernel's flag word for a spec: bit k is `KERNEL_FLAGS[k]`."""
    if not supports(spec):
        unknown = sorted({f.name for f in dataclasses.fields(spec)} - {"change", *KERNEL_FLAGS})
        raise ValueError(
            f"the compiled kernels do not know the spec field(s) {', '.join(unknown)}; "
            f"known: {', '.join(KERNEL_FLAGS)}"
        )
    return sum(1 << k for k, name in enumerate(KERNEL_FLAGS) if getattr(spec, name))


class LSTMSequence(torch.autograd.Function):
    """(xw (K, T, B, G*N) = W x, b (K, G*N), R (K, G*N, N), p | None, Rg (K, 3N, 3N) | None,
    steps (K,)) -> (y (K, T, B, N), c (K, T, B, N)). The bias is added, and its gradient summed,
    in the step loops (no broadcast copy, no extra pass over dxw).

    For FGR, R and Rg stay two matrices (13 N^2 multiply-adds per row and step: y' R^T over all
    gate blocks, g' Rg^T over the i, f, o blocks), not one 4N x 4N matrix with a zero block.
    """

    @staticmethod
    def forward(ctx, xw, b, R, p, Rg, steps, flags: int, kernel):  # noqa: D102
        ctx.set_materialize_grads(False)  # an unused output (c, mostly) costs no zero tensor
        with torch.no_grad():
            empty = xw.new_empty(0)
            rg = Rg.contiguous() if flags & FGR else empty
            pt = p.contiguous() if p is not None else empty
            y, g, c, act, hc = kernel.lstm_forward(
                xw.contiguous(), b.contiguous(), R.contiguous(), rg, pt, steps, flags
            )
        ctx.save_for_backward(R, rg, pt, y, g, c, act, hc, steps)
        ctx.flags, ctx.kernel, ctx.has_p = flags, kernel, p is not None
        return y[:, 1:], c[:, 1:]

    @staticmethod
    def backward(ctx, dy, dc):  # noqa: D102
        R, rg, pt, y, g, c, act, hc, steps = ctx.saved_tensors
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
            steps,
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
            None,
        )


class GRUSequence(torch.autograd.Function):
    """(xw (K, T, B, 3N) = W x + b_ih, R (K, 3N, N), b_hh (K, 3N), steps (K,)) -> h (K, T, B, N)."""

    @staticmethod
    def forward(ctx, xw, R, b_hh, steps, kernel):  # noqa: D102
        with torch.no_grad():
            h, act = kernel.gru_forward(xw.contiguous(), R.contiguous(), b_hh.contiguous(), steps)
        ctx.save_for_backward(R, h, act, steps)
        ctx.kernel = kernel
        return h[:, 1:]

    @staticmethod
    def backward(ctx, dh):  # noqa: D102
        R, h, act, steps = ctx.saved_tensors
        dxw, dR, db = ctx.kernel.gru_backward(dh.contiguous(), R.contiguous(), h, act, steps)
        return dxw, dR, db, None, None


def is_torch_lstm(spec: LSTMSpec) -> bool:
    """NP: exactly torch.nn.LSTM's equations (gate order i, f, g, o, no peepholes)."""
    return spec == LSTMSpec(peepholes=False, change=spec.change)


def is_torch_gru(spec: GRUSpec) -> bool:
    return spec.reset_after
