"""The LSTM variants' time loop as one fused Triton kernel launch per time step for a whole pack.

Forward: for step t, one launch over the grid (trial k, tile of batch rows, tile of hidden units
j); a program computes every gate of its units, a_t = xw_t + b + y_{t-1} R^T (for FGR, plus
g_{t-1} Rg^T on the i, f, o blocks, g = [i, f, o]), then the gates, the cell and the output in
registers (the equations of `variants.lstm_cell`, whose reference loop these kernels are held to),
and stores what backward needs: y, c, h(c), the gate activations. A trial past its `steps[k]`
(padding, or an empty slot of a pack: steps 0) returns at once and its outputs stay zero.

Backward: for step t (last to first), one launch over the same grid: the gradient reaching y_t
from step t+1 (da_{t+1} R, and dga_{t+1} Rg for FGR) and the gate gradients of step t in
registers; the cell gradient is carried per unit in a (K, B, N) buffer. The weight gradients are
computed once per sequence, not per step: dR = sum_t da_t^T y_{t-1} as one batched product over
all steps (likewise dRg), db and dp as sums over steps.

This module imports Triton: `variants.fast` imports it only when the Triton path runs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from variants.fast.triton_launch import launch, precision, tiles
from variants.spec import LSTMSpec


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _tanh(x):
    # 1 - 2 / (exp(2x) + 1): exp overflowing to inf gives 1, underflowing to 0 gives -1
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


@triton.jit
def _program_tile(B, N, BB: tl.constexpr, BN: tl.constexpr):
    """This program's batch rows `ob` (axis 1) and units `oj` (axis 2) of a (B, N) plane, their
    masks, and the (BB, BN) mask of the tile they span."""
    ob = tl.program_id(1) * BB + tl.arange(0, BB)
    oj = tl.program_id(2) * BN + tl.arange(0, BN)
    mb, mj = ob < B, oj < N
    return ob, oj, mb, mj, mb[:, None] & mj[None, :]


@triton.jit
def _tile(base, rows, cols, ld, mrows, mcols):
    """Load base[rows, cols] (row stride ld) as a (len(rows), len(cols)) tile, zero outside."""
    return tl.load(
        base + rows[:, None] * ld + cols[None, :], mask=mrows[:, None] & mcols[None, :], other=0.0
    )


@triton.jit
def _rows_t(base, rows, cols, ld, mrows, mcols):
    """Load base[rows, cols]^T as a (len(cols), len(rows)) tile: a weight block ready for
    `activations @ tile`."""
    return tl.load(
        base + rows[None, :] * ld + cols[:, None], mask=mcols[:, None] & mrows[None, :], other=0.0
    )


@triton.jit(do_not_specialize=["t"])  # one compiled kernel for every step
def _lstm_forward_step(
    xw, bias, R, Rg, P, steps, y, c, g, act, hc,
    t, T, B, N,
    IX_I: tl.constexpr, IX_F: tl.constexpr, IX_Z: tl.constexpr, IX_O: tl.constexpr,
    G: tl.constexpr, PI: tl.constexpr, PF: tl.constexpr, PO: tl.constexpr, NP: tl.constexpr,
    COUPLED: tl.constexpr, TANH_IN: tl.constexpr, TANH_OUT: tl.constexpr, FGR: tl.constexpr,
    BB: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    k = tl.program_id(0).to(tl.int64)
    if t >= tl.load(steps + k):
        return
    ob, oj, mb, mj, m2 = _program_tile(B, N, BB, BN)
    gn = G * N
    dt = y.dtype.element_ty
    acc_i = tl.zeros((BB, BN), dt)
    acc_f = tl.zeros((BB, BN), dt)
    acc_z = tl.zeros((BB, BN), dt)
    acc_o = tl.zeros((BB, BN), dt)
    # y_{t-1} R^T for the units oj of every gate block
    y_prev = y + (k * (T + 1) + t) * B * N
    r_k = R + k * gn * N
    for m0 in range(0, N, BK):
        om = m0 + tl.arange(0, BK)
        mm = om < N
        yv = _tile(y_prev, ob, om, N, mb, mm)  # (BB, BK)
        acc_z += tl.dot(yv, _rows_t(r_k, IX_Z * N + oj, om, N, mj, mm), input_precision=PREC)
        if IX_I >= 0:
            acc_i += tl.dot(yv, _rows_t(r_k, IX_I * N + oj, om, N, mj, mm), input_precision=PREC)
        if IX_F >= 0:
            acc_f += tl.dot(yv, _rows_t(r_k, IX_F * N + oj, om, N, mj, mm), input_precision=PREC)
        if IX_O >= 0:
            acc_o += tl.dot(yv, _rows_t(r_k, IX_O * N + oj, om, N, mj, mm), input_precision=PREC)
    if FGR:  # g_{t-1} Rg^T: Rg rows are the target gates i, f, o, columns the sources
        g_prev = g + (k * (T + 1) + t) * B * 3 * N
        rg_k = Rg + k * 9 * N * N
        for m0 in range(0, 3 * N, BK):
            om = m0 + tl.arange(0, BK)
            mm = om < 3 * N
            gv = _tile(g_prev, ob, om, 3 * N, mb, mm)  # (BB, BK)
            acc_i += tl.dot(gv, _rows_t(rg_k, oj, om, 3 * N, mj, mm), input_precision=PREC)
            acc_f += tl.dot(gv, _rows_t(rg_k, N + oj, om, 3 * N, mj, mm), input_precision=PREC)
            acc_o += tl.dot(gv, _rows_t(rg_k, 2 * N + oj, om, 3 * N, mj, mm), input_precision=PREC)
    x_t = xw + (k * T + t) * B * gn
    b_k = bias + k * gn
    p_k = P + k * NP * N
    rows = ob[:, None] * gn
    c_prev = _tile(c + (k * (T + 1) + t) * B * N, ob, oj, N, mb, mj)
    a_t = act + (k * T + t) * B * gn
    z = (
        acc_z
        + tl.load(x_t + rows + IX_Z * N + oj[None, :], mask=m2, other=0.0)
        + tl.load(b_k + IX_Z * N + oj, mask=mj, other=0.0)[None, :]
    )
    if TANH_IN:
        z = _tanh(z)
    tl.store(a_t + rows + IX_Z * N + oj[None, :], z, mask=m2)
    cn = z
    i = z  # placeholder of the right type; 1 when there is no input gate
    if IX_I >= 0:
        v = (
            acc_i
            + tl.load(x_t + rows + IX_I * N + oj[None, :], mask=m2, other=0.0)
            + tl.load(b_k + IX_I * N + oj, mask=mj, other=0.0)[None, :]
        )
        if PI >= 0:
            v += tl.load(p_k + PI * N + oj, mask=mj, other=0.0)[None, :] * c_prev
        i = _sigmoid(v)
        tl.store(a_t + rows + IX_I * N + oj[None, :], i, mask=m2)
        cn = z * i
    f = c_prev
    if IX_F >= 0:
        v = (
            acc_f
            + tl.load(x_t + rows + IX_F * N + oj[None, :], mask=m2, other=0.0)
            + tl.load(b_k + IX_F * N + oj, mask=mj, other=0.0)[None, :]
        )
        if PF >= 0:
            v += tl.load(p_k + PF * N + oj, mask=mj, other=0.0)[None, :] * c_prev
        f = _sigmoid(v)
        tl.store(a_t + rows + IX_F * N + oj[None, :], f, mask=m2)
        cn += c_prev * f
    elif COUPLED:
        f = 1.0 - i
        cn += c_prev * f
    else:
        cn += c_prev  # f = 1
    h = cn
    if TANH_OUT:
        h = _tanh(cn)
    out = h
    o = h
    if IX_O >= 0:
        v = (
            acc_o
            + tl.load(x_t + rows + IX_O * N + oj[None, :], mask=m2, other=0.0)
            + tl.load(b_k + IX_O * N + oj, mask=mj, other=0.0)[None, :]
        )
        if PO >= 0:
            v += tl.load(p_k + PO * N + oj, mask=mj, other=0.0)[None, :] * cn
        o = _sigmoid(v)
        tl.store(a_t + rows + IX_O * N + oj[None, :], o, mask=m2)
        out = h * o
    state = (k * (T + 1) + t + 1) * B * N + ob[:, None] * N + oj[None, :]
    tl.store(c + state, cn, mask=m2)
    tl.store(y + state, out, mask=m2)
    tl.store(hc + (k * T + t) * B * N + ob[:, None] * N + oj[None, :], h, mask=m2)
    if FGR:
        g_t = g + (k * (T + 1) + t + 1) * B * 3 * N + ob[:, None] * 3 * N + oj[None, :]
        tl.store(g_t, i, mask=m2)
        tl.store(g_t + N, f, mask=m2)
        tl.store(g_t + 2 * N, o, mask=m2)


@triton.jit(do_not_specialize=["t"])  # one compiled kernel for every step
def _lstm_backward_step(
    dy_ext, dc_ext, R, Rg, P, steps, c, act, hc, da, dga, carry,
    t, T, B, N,
    IX_I: tl.constexpr, IX_F: tl.constexpr, IX_Z: tl.constexpr, IX_O: tl.constexpr,
    G: tl.constexpr, PI: tl.constexpr, PF: tl.constexpr, PO: tl.constexpr, NP: tl.constexpr,
    COUPLED: tl.constexpr, TANH_IN: tl.constexpr, TANH_OUT: tl.constexpr, FGR: tl.constexpr,
    HAS_DY: tl.constexpr, HAS_DC: tl.constexpr,
    BB: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    k = tl.program_id(0).to(tl.int64)
    if t >= tl.load(steps + k):
        return
    ob, oj, mb, mj, m2 = _program_tile(B, N, BB, BN)
    gn = G * N
    dt = c.dtype.element_ty
    unit = ob[:, None] * N + oj[None, :]  # (BB, BN) offsets in a (B, N) plane
    # the gradient reaching y_t from step t+1: da_{t+1} R (da has a zero plane at T)
    dy = tl.zeros((BB, BN), dt)
    if HAS_DY:
        dy += tl.load(dy_ext + (k * T + t) * B * N + unit, mask=m2, other=0.0)
    da_next = da + (k * (T + 1) + t + 1) * B * gn
    r_k = R + k * gn * N
    for r0 in range(0, gn, BK):
        orow = r0 + tl.arange(0, BK)
        mr = orow < gn
        dy += tl.dot(
            _tile(da_next, ob, orow, gn, mb, mr), _tile(r_k, orow, oj, N, mr, mj),
            input_precision=PREC,
        )  # fmt: skip
    dgi = tl.zeros((BB, BN), dt)
    dgf = tl.zeros((BB, BN), dt)
    dgo = tl.zeros((BB, BN), dt)
    if FGR:  # the gradient reaching g_t = [i, f, o] from step t+1: dga_{t+1} Rg
        dga_next = dga + (k * (T + 1) + t + 1) * B * 3 * N
        rg_k = Rg + k * 9 * N * N
        for r0 in range(0, 3 * N, BK):
            orow = r0 + tl.arange(0, BK)
            mr = orow < 3 * N
            dv = _tile(dga_next, ob, orow, 3 * N, mb, mr)
            dgi += tl.dot(dv, _tile(rg_k, orow, oj, 3 * N, mr, mj), input_precision=PREC)
            dgf += tl.dot(dv, _tile(rg_k, orow, N + oj, 3 * N, mr, mj), input_precision=PREC)
            dgo += tl.dot(dv, _tile(rg_k, orow, 2 * N + oj, 3 * N, mr, mj), input_precision=PREC)
    a_t = act + (k * T + t) * B * gn + ob[:, None] * gn + oj[None, :]
    c_prev = tl.load(c + (k * (T + 1) + t) * B * N + unit, mask=m2, other=0.0)
    h = tl.load(hc + (k * T + t) * B * N + unit, mask=m2, other=0.0)
    z = tl.load(a_t + IX_Z * N, mask=m2, other=0.0)
    p_k = P + k * NP * N
    da_t = da + (k * (T + 1) + t) * B * gn + ob[:, None] * gn + oj[None, :]
    dc = tl.load(carry + k * B * N + unit, mask=m2, other=0.0)
    if HAS_DC:
        dc += tl.load(dc_ext + (k * T + t) * B * N + unit, mask=m2, other=0.0)
    dao = tl.zeros((BB, BN), dt)
    dhc = dy
    if IX_O >= 0:
        o = tl.load(a_t + IX_O * N, mask=m2, other=0.0)
        dao = (dy * h + dgo) * o * (1.0 - o)
        tl.store(da_t + IX_O * N, dao, mask=m2)
        dhc = dy * o
    if TANH_OUT:
        dc += dhc * (1.0 - h * h)
    else:
        dc += dhc
    if PO >= 0:
        dc += dao * tl.load(p_k + PO * N + oj, mask=mj, other=0.0)[None, :]
    i = tl.full((BB, BN), 1.0, dt)
    if IX_I >= 0:
        i = tl.load(a_t + IX_I * N, mask=m2, other=0.0)
    daz = dc * i
    if TANH_IN:
        daz = daz * (1.0 - z * z)
    tl.store(da_t + IX_Z * N, daz, mask=m2)
    dai = tl.zeros((BB, BN), dt)
    daf = tl.zeros((BB, BN), dt)
    carry_t = dc
    if IX_I >= 0:
        di = dc * z + dgi
        if COUPLED:
            di -= dc * c_prev
            carry_t = dc * (1.0 - i)
        dai = di * i * (1.0 - i)
        tl.store(da_t + IX_I * N, dai, mask=m2)
    if IX_F >= 0:
        f = tl.load(a_t + IX_F * N, mask=m2, other=0.0)
        daf = (dc * c_prev + dgf) * f * (1.0 - f)
        tl.store(da_t + IX_F * N, daf, mask=m2)
        carry_t = dc * f
    if PI >= 0:
        carry_t += dai * tl.load(p_k + PI * N + oj, mask=mj, other=0.0)[None, :]
    if PF >= 0:
        carry_t += daf * tl.load(p_k + PF * N + oj, mask=mj, other=0.0)[None, :]
    tl.store(carry + k * B * N + unit, carry_t, mask=m2)
    if FGR:
        dg_t = dga + (k * (T + 1) + t) * B * 3 * N + ob[:, None] * 3 * N + oj[None, :]
        tl.store(dg_t, dai, mask=m2)
        tl.store(dg_t + N, daf, mask=m2)
        tl.store(dg_t + 2 * N, dao, mask=m2)


def _meta(spec: LSTMSpec) -> dict:
    """The compile-time constants of a spec: gate block indices (-1: absent), peephole rows."""
    gates, peeps = spec.weighted_gates, spec.peephole_gates
    return {
        **{f"IX_{g.upper()}": gates.index(g) if g in gates else -1 for g in "ifzo"},
        "G": len(gates),
        **{f"P{g.upper()}": peeps.index(g) if g in peeps else -1 for g in "ifo"},
        "NP": len(peeps),
        "COUPLED": spec.coupled_input_forget,
        "TANH_IN": spec.input_activation,
        "TANH_OUT": spec.output_activation,
        "FGR": spec.full_gate_recurrence,
    }


class LSTMTriton(torch.autograd.Function):
    """(xw (K, T, B, G*N) = W x, b (K, G*N), R (K, G*N, N), p (K, P, N) | None, Rg (K, 3N, 3N) |
    None, steps (K,) on the device, t_max = max(steps), spec) -> (y (K, T, B, N), c (K, T, B, N))."""

    @staticmethod
    def forward(ctx, xw, b, R, p, Rg, steps, t_max: int, spec: LSTMSpec):  # noqa: D102
        ctx.set_materialize_grads(False)  # an unused output (c, mostly) costs no zero tensor
        meta = _meta(spec)
        trials, t_len, batch, gn = xw.shape
        n = R.shape[2]
        with torch.no_grad():
            xw, b, R = xw.contiguous(), b.contiguous(), R.contiguous()
            pt = p.contiguous() if p is not None else xw  # never read without peepholes
            rg = Rg.contiguous() if Rg is not None else xw
            y = xw.new_zeros(trials, t_len + 1, batch, n)
            c = xw.new_zeros(trials, t_len + 1, batch, n)
            g = xw.new_zeros(trials, t_len + 1, batch, 3 * n) if meta["FGR"] else y
            act = xw.new_zeros(trials, t_len, batch, gn)
            hc = xw.new_zeros(trials, t_len, batch, n)
            tile = tiles(batch, n)
            grid = (trials, triton.cdiv(batch, tile["BB"]), triton.cdiv(n, tile["BN"]))
            prec = precision(xw.dtype)
            for t in range(t_max):
                launch(
                    _lstm_forward_step, grid, xw, b, R, rg, pt, steps, y, c, g, act, hc,
                    t, t_len, batch, n, **meta, **tile, PREC=prec,
                )  # fmt: skip
        ctx.save_for_backward(R, rg, pt, y, g, c, act, hc, steps)
        ctx.meta, ctx.t_max, ctx.has_p = meta, t_max, p is not None
        return y[:, 1:], c[:, 1:]

    @staticmethod
    def backward(ctx, dy, dc):  # noqa: D102
        R, rg, pt, y, g, c, act, hc, steps = ctx.saved_tensors
        meta = ctx.meta
        trials, t_len, batch, gn = act.shape
        n = R.shape[2]
        fgr = meta["FGR"]
        da = act.new_zeros(trials, t_len + 1, batch, gn)  # plane T stays zero: no step T+1
        dga = act.new_zeros(trials, t_len + 1, batch, 3 * n) if fgr else da
        carry = act.new_zeros(trials, batch, n)  # the gradient of c_t from step t+1
        dy_c = dy.contiguous() if dy is not None else act
        dc_c = dc.contiguous() if dc is not None else act
        tile = tiles(batch, n)
        grid = (trials, triton.cdiv(batch, tile["BB"]), triton.cdiv(n, tile["BN"]))
        prec = precision(act.dtype)
        for t in reversed(range(ctx.t_max)):
            launch(
                _lstm_backward_step, grid, dy_c, dc_c, R, rg, pt, steps, c, act, hc, da, dga,
                carry, t, t_len, batch, n, **meta, HAS_DY=dy is not None, HAS_DC=dc is not None,
                **tile, PREC=prec,
            )  # fmt: skip
        da = da[:, :t_len]  # (K, T, B, G*N): zero past each trial's steps
        rows = t_len * batch
        # the weight gradients once per sequence: one batched product over all steps
        dR = torch.bmm(
            da.reshape(trials, rows, gn).transpose(1, 2), y[:, :t_len].reshape(trials, rows, n)
        )
        db = da.sum((1, 2))
        dRg = dp = None
        if fgr:
            dga = dga[:, :t_len].reshape(trials, rows, 3 * n)
            dRg = torch.bmm(dga.transpose(1, 2), g[:, :t_len].reshape(trials, rows, 3 * n))
        if ctx.has_p:
            dp = pt.new_zeros(pt.shape)  # (K, P, N)
            for gate, cells in (("I", c[:, :t_len]), ("F", c[:, :t_len]), ("O", c[:, 1:])):
                if meta[f"P{gate}"] >= 0:
                    block = da[..., meta[f"IX_{gate}"] * n : (meta[f"IX_{gate}"] + 1) * n]
                    dp[:, meta[f"P{gate}"]] = (block * cells).sum((1, 2))
        return da, db, dR, dp, dRg, None, None, None


def scan(cell, x: torch.Tensor, steps: torch.Tensor, need_cells: bool) -> tuple:
    """`variants.fast.lstm_scan` through the step kernels: `x (K, T, B, M)`, `steps (K,)` on the
    CPU -> `(y (K, T, B, N), c (K, T, B, N) or None)`."""
    trials, t_len, batch, m = x.shape
    xw = torch.bmm(x.reshape(trials, t_len * batch, m), cell.W.transpose(1, 2))
    xw = xw.view(trials, t_len, batch, -1)  # (K, T, B, G*N)
    t_max = int(steps.max()) if trials else 0
    dev_steps = steps.to(x.device, torch.int32, non_blocking=True)  # host steps: no wait
    y, c = LSTMTriton.apply(xw, cell.b, cell.R, cell.p, cell.Rg, dev_steps, t_max, cell.spec)
    return y, (c if need_cells else None)
