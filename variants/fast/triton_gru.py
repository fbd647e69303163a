"""The GRU's time loop (torch.nn.GRU's reset-after form) as one fused Triton kernel launch per
time step for a whole pack; the layout and the skipping of padded steps and empty slots as in
`triton_lstm`. The equations are those of `variants.gru_cell`, whose reference loop these kernels
are held to:

    [hr, hu, hn] = h' R^T + b_hh,  r = s(xr + hr),  u = s(xu + hu),  n = tanh(xn + r hn),
    h = (1 - u) n + u h'          (xw = W x + b_ih for all steps, one batched product outside)

Backward per step: the gradient reaching h_t (from outside, through u from step t+1, and dhh_{t+1}
R), then the gate gradients in registers; dR = sum_t dhh_t^T h_{t-1} once per sequence.

This module imports Triton: `variants.fast` imports it only when the Triton path runs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from variants.fast.triton_launch import launch, precision, tiles
from variants.fast.triton_lstm import _program_tile, _rows_t, _sigmoid, _tanh, _tile


@triton.jit(do_not_specialize=["t"])  # one compiled kernel for every step
def _gru_forward_step(
    xw, R, b_hh, steps, h, act, t, T, B, N,
    BB: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    k = tl.program_id(0).to(tl.int64)
    if t >= tl.load(steps + k):
        return
    ob, oj, mb, mj, m2 = _program_tile(B, N, BB, BN)
    dt = h.dtype.element_ty
    acc_r = tl.zeros((BB, BN), dt)
    acc_u = tl.zeros((BB, BN), dt)
    acc_n = tl.zeros((BB, BN), dt)
    h_prev = h + (k * (T + 1) + t) * B * N
    r_k = R + k * 3 * N * N
    for m0 in range(0, N, BK):
        om = m0 + tl.arange(0, BK)
        mm = om < N
        hv = _tile(h_prev, ob, om, N, mb, mm)  # (BB, BK)
        acc_r += tl.dot(hv, _rows_t(r_k, oj, om, N, mj, mm), input_precision=PREC)
        acc_u += tl.dot(hv, _rows_t(r_k, N + oj, om, N, mj, mm), input_precision=PREC)
        acc_n += tl.dot(hv, _rows_t(r_k, 2 * N + oj, om, N, mj, mm), input_precision=PREC)
    b_k = b_hh + k * 3 * N
    hr = acc_r + tl.load(b_k + oj, mask=mj, other=0.0)[None, :]
    hu = acc_u + tl.load(b_k + N + oj, mask=mj, other=0.0)[None, :]
    hn = acc_n + tl.load(b_k + 2 * N + oj, mask=mj, other=0.0)[None, :]
    x_t = xw + (k * T + t) * B * 3 * N + ob[:, None] * 3 * N + oj[None, :]
    r = _sigmoid(tl.load(x_t, mask=m2, other=0.0) + hr)
    u = _sigmoid(tl.load(x_t + N, mask=m2, other=0.0) + hu)
    n = _tanh(tl.load(x_t + 2 * N, mask=m2, other=0.0) + r * hn)
    unit = ob[:, None] * N + oj[None, :]
    hp = tl.load(h_prev + unit, mask=m2, other=0.0)
    tl.store(h + (k * (T + 1) + t + 1) * B * N + unit, (1.0 - u) * n + u * hp, mask=m2)
    a_t = act + (k * T + t) * B * 4 * N + ob[:, None] * 4 * N + oj[None, :]
    tl.store(a_t, r, mask=m2)
    tl.store(a_t + N, u, mask=m2)
    tl.store(a_t + 2 * N, n, mask=m2)
    tl.store(a_t + 3 * N, hn, mask=m2)


@triton.jit(do_not_specialize=["t"])  # one compiled kernel for every step
def _gru_backward_step(
    dh, R, steps, h, act, dx, dhh, carry, t, T, B, N,
    BB: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    k = tl.program_id(0).to(tl.int64)
    if t >= tl.load(steps + k):
        return
    ob, oj, mb, mj, m2 = _program_tile(B, N, BB, BN)
    unit = ob[:, None] * N + oj[None, :]
    # the gradient reaching h_t: from outside, through u h_t at t+1 (carry), and dhh_{t+1} R
    d = tl.load(dh + (k * T + t) * B * N + unit, mask=m2, other=0.0) + tl.load(
        carry + k * B * N + unit, mask=m2, other=0.0
    )
    dhh_next = dhh + (k * (T + 1) + t + 1) * B * 3 * N  # plane T stays zero
    r_k = R + k * 3 * N * N
    for r0 in range(0, 3 * N, BK):
        orow = r0 + tl.arange(0, BK)
        mr = orow < 3 * N
        d += tl.dot(
            _tile(dhh_next, ob, orow, 3 * N, mb, mr), _tile(r_k, orow, oj, N, mr, mj),
            input_precision=PREC,
        )  # fmt: skip
    a_t = act + (k * T + t) * B * 4 * N + ob[:, None] * 4 * N + oj[None, :]
    r = tl.load(a_t, mask=m2, other=0.0)
    u = tl.load(a_t + N, mask=m2, other=0.0)
    n = tl.load(a_t + 2 * N, mask=m2, other=0.0)
    hn = tl.load(a_t + 3 * N, mask=m2, other=0.0)
    hp = tl.load(h + (k * (T + 1) + t) * B * N + unit, mask=m2, other=0.0)
    dan = d * (1.0 - u) * (1.0 - n * n)
    dau = d * (hp - n) * u * (1.0 - u)
    dar = dan * hn * r * (1.0 - r)
    x_t = dx + (k * T + t) * B * 3 * N + ob[:, None] * 3 * N + oj[None, :]
    tl.store(x_t, dar, mask=m2)
    tl.store(x_t + N, dau, mask=m2)
    tl.store(x_t + 2 * N, dan, mask=m2)
    q_t = dhh + (k * (T + 1) + t) * B * 3 * N + ob[:, None] * 3 * N + oj[None, :]
    tl.store(q_t, dar, mask=m2)
    tl.store(q_t + N, dau, mask=m2)
    tl.store(q_t + 2 * N, dan * r, mask=m2)
    tl.store(carry + k * B * N + unit, d * u, mask=m2)


class GRUTriton(torch.autograd.Function):
    """(xw (K, T, B, 3N) = W x + b_ih, R (K, 3N, N), b_hh (K, 3N), steps (K,) on the device,
    t_max = max(steps)) -> h (K, T, B, N)."""

    @staticmethod
    def forward(ctx, xw, R, b_hh, steps, t_max: int):  # noqa: D102
        trials, t_len, batch, _ = xw.shape
        n = R.shape[2]
        with torch.no_grad():
            xw, R, b_hh = xw.contiguous(), R.contiguous(), b_hh.contiguous()
            h = xw.new_zeros(trials, t_len + 1, batch, n)
            act = xw.new_zeros(trials, t_len, batch, 4 * n)  # r, u, n, hn
            tile = tiles(batch, n)
            grid = (trials, triton.cdiv(batch, tile["BB"]), triton.cdiv(n, tile["BN"]))
            prec = precision(xw.dtype)
            for t in range(t_max):
                launch(
                    _gru_forward_step, grid, xw, R, b_hh, steps, h, act, t, t_len, batch, n,
                    **tile, PREC=prec,
                )  # fmt: skip
        ctx.save_for_backward(R, h, act, steps)
        ctx.t_max = t_max
        return h[:, 1:]

    @staticmethod
    def backward(ctx, dh):  # noqa: D102
        R, h, act, steps = ctx.saved_tensors
        trials, t_len, batch, _ = act.shape
        n = R.shape[2]
        dh = dh.contiguous()
        dx = act.new_zeros(trials, t_len, batch, 3 * n)
        dhh = act.new_zeros(trials, t_len + 1, batch, 3 * n)
        carry = act.new_zeros(trials, batch, n)
        tile = tiles(batch, n)
        grid = (trials, triton.cdiv(batch, tile["BB"]), triton.cdiv(n, tile["BN"]))
        prec = precision(act.dtype)
        for t in reversed(range(ctx.t_max)):
            launch(
                _gru_backward_step, grid, dh, R, steps, h, act, dx, dhh, carry, t, t_len,
                batch, n, **tile, PREC=prec,
            )  # fmt: skip
        dhh = dhh[:, :t_len].reshape(trials, t_len * batch, 3 * n)
        # the weight gradient once per sequence: one batched product over all steps
        dR = torch.bmm(dhh.transpose(1, 2), h[:, :t_len].reshape(trials, t_len * batch, n))
        return dx, dR, dhh.sum(1), None, None


def scan(cell, x: torch.Tensor, steps: torch.Tensor) -> tuple[torch.Tensor, None]:
    """`variants.fast.gru_scan` through the step kernels: `x (K, T, B, M)`, `steps (K,)` on the
    CPU -> `(h (K, T, B, N), None)`."""
    trials, t_len, batch, m = x.shape
    xw = torch.baddbmm(
        cell.b_ih.unsqueeze(1), x.reshape(trials, t_len * batch, m), cell.W.transpose(1, 2)
    ).view(trials, t_len, batch, -1)  # (K, T, B, 3N)
    t_max = int(steps.max()) if trials else 0
    dev_steps = steps.to(x.device, torch.int32, non_blocking=True)  # host steps: no wait
    h = GRUTriton.apply(xw, cell.R, cell.b_hh, dev_steps, t_max)
    return h, None
