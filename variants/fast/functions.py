"""Autograd functions running whole sequences of a pack through the compiled kernels, whose
backward is written by hand (`cells.cpp`), and the flag words they take.

The kernels take the inputs and every weight of the layer (the input projection `W x` is one GEMM
per trial in them). Tensors carry the trial dimension first: `x (K, T, B, M)`, `R (K, G*N, N)`,
...; `steps (K,)` bounds each trial's loop and `units (K,)` its hidden units (a smaller trial's
padded units are skipped, so a trial computes exactly what it computes alone).
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
    """(x (K, T, B, M), W (K, G*N, M), b (K, G*N), R (K, G*N, N), p | None, Rg (K, 3N, 3N) | None,
    steps (K,), units (K,)) -> (y (K, T, B, N), c (K, T, B, N)). The input projection W x and the
    bias are computed, and their gradients summed, in the kernels, each trial over its own
    `steps[k]` steps and `units[k]` units (`cells.cpp`).

    For FGR, R and Rg stay two matrices (13 N^2 multiply-adds per row and step: y' R^T over all
    gate blocks, g' Rg^T over the i, f, o blocks), not one 4N x 4N matrix with a zero block.
    """

    @staticmethod
    def forward(ctx, x, W, b, R, p, Rg, steps, units, flags: int, kernel):  # noqa: D102
        ctx.set_materialize_grads(False)  # an unused output (c, mostly) costs no zero tensor
        with torch.no_grad():
            empty = x.new_empty(0)
            rg = Rg.contiguous() if flags & FGR else empty
            pt = p.contiguous() if p is not None else empty
            y, g, c, act, hc = kernel.lstm_forward(
                x.contiguous(),
                W.contiguous(),
                b.contiguous(),
                R.contiguous(),
                rg,
                pt,
                steps,
                units,
                flags,
            )
        ctx.save_for_backward(x, W, R, rg, pt, y, g, c, act, hc, steps, units)
        ctx.flags, ctx.kernel, ctx.has_p = flags, kernel, p is not None
        return y[:, 1:], c[:, 1:]

    @staticmethod
    def backward(ctx, dy, dc):  # noqa: D102
        x, W, R, rg, pt, y, g, c, act, hc, steps, units = ctx.saved_tensors
        empty = act.new_empty(0)
        dx, dW, db, dR, dRg, dp = ctx.kernel.lstm_backward(
            empty if dy is None else dy.contiguous(),
            empty if dc is None else dc.contiguous(),
            x,
            W.contiguous(),
            R.contiguous(),
            rg,
            pt,
            y,
            g,
            c,
            act,
            hc,
            steps,
            units,
            ctx.flags,
            ctx.needs_input_grad[0],
        )
        return (
            dx if ctx.needs_input_grad[0] else None,
            dW,
            db,
            dR,
            dp if ctx.has_p else None,
            dRg if ctx.flags & FGR else None,
            None,
            None,
            None,
            None,
        )


class GRUSequence(torch.autograd.Function):
    """(x (K, T, B, M), W (K, 3N, M), b_ih (K, 3N), R (K, 3N, N), b_hh (K, 3N), steps (K,),
    units (K,)) -> h (K, T, B, N), the input projection included, as `LSTMSequence`."""

    @staticmethod
    def forward(ctx, x, W, b_ih, R, b_hh, steps, units, kernel):  # noqa: D102
        with torch.no_grad():
            h, act = kernel.gru_forward(
                x.contiguous(),
                W.contiguous(),
                b_ih.contiguous(),
                R.contiguous(),
                b_hh.contiguous(),
                steps,
                units,
            )
        ctx.save_for_backward(x, W, R, h, act, steps, units)
        ctx.kernel = kernel
        return h[:, 1:]

    @staticmethod
    def backward(ctx, dh):  # noqa: D102
        x, W, R, h, act, steps, units = ctx.saved_tensors
        need_dx = ctx.needs_input_grad[0]
        dx, dW, db_ih, dR, db_hh = ctx.kernel.gru_backward(
            dh.contiguous(), x, W.contiguous(), R.contiguous(), h, act, steps, units, need_dx
        )
        return dx if need_dx else None, dW, db_ih, dR, db_hh, None, None, None
