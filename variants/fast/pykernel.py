"""Pure-PyTorch twins of the compiled kernels in `cells.cpp`: same arguments, same results.

They run on any device and dtype; they are the fallback when the extension cannot be built and
the path for CUDA tensors, and the tests check the compiled kernels against them. The equations
and the saved tensors are documented in `cells.cpp`; the flag bits are defined below.
"""

from __future__ import annotations

import torch

INPUT_GATE, FORGET_GATE, OUTPUT_GATE, TANH_IN, TANH_OUT, PEEPHOLES, COUPLED, FGR = (
    1,
    2,
    4,
    8,
    16,
    32,
    64,
    128,
)


class Layout:
    """Column offsets of the gate blocks (order i, f, z, o) and peephole rows for a flag set."""

    def __init__(self, flags: int, n: int):
        self.n, self.coupled = n, bool(flags & COUPLED)
        self.tanh_in, self.tanh_out, self.fgr = (
            bool(flags & TANH_IN),
            bool(flags & TANH_OUT),
            bool(flags & FGR),
        )
        peep, col, row = bool(flags & PEEPHOLES), 0, 0
        self.cols: dict[str, slice] = {}
        self.peep: dict[str, int] = {}
        for gate, present in (
            ("i", flags & INPUT_GATE),
            ("f", flags & FORGET_GATE and not self.coupled),
            ("z", True),
            ("o", flags & OUTPUT_GATE),
        ):
            if present:
                self.cols[gate] = slice(col * n, (col + 1) * n)
                col += 1
                if peep and gate != "z":
                    self.peep[gate] = row
                    row += 1
        self.g = col


def lstm_forward(
    xw: torch.Tensor,
    b: torch.Tensor,
    r: torch.Tensor,
    rg: torch.Tensor,
    p: torch.Tensor,
    flags: int,
) -> list[torch.Tensor]:
    """xw (T, B, G*N) = W x, b (G*N), r (G*N, N), rg (3N, 3N) for FGR (else empty), p (P, N) ->
    [y (T+1, B, N), g (T+1, B, 3N) for FGR (else empty), c (T+1, B, N), act (T, B, G*N),
    hc (T, B, N)]."""
    t_len, batch, _ = xw.shape
    n = r.shape[1]
    lay = Layout(flags, n)
    y = xw.new_zeros(t_len + 1, batch, n)
    g = xw.new_zeros(t_len + 1, batch, 3 * n) if lay.fgr else xw.new_empty(0)
    c = xw.new_zeros(t_len + 1, batch, n)
    act = torch.empty_like(xw)
    hc = xw.new_empty(t_len, batch, n)
    cols, pp = lay.cols, {k: p[row] for k, row in lay.peep.items()}
    one = xw.new_ones(())
    for t in range(t_len):
        a = torch.addmm(xw[t] + b, y[t], r.t()) if t else xw[t] + b  # (B, G*N)
        if lay.fgr and t:
            qg = g[t] @ rg.t()  # (B, 3N): i, f, o of t-1 into the i, f, o blocks
            for k, gate in enumerate("ifo"):
                a[:, cols[gate]] += qg[:, k * n : (k + 1) * n]
        c0 = c[t]
        i = f = o = one
        if "i" in cols:
            i = torch.sigmoid(a[:, cols["i"]] + pp["i"] * c0 if "i" in pp else a[:, cols["i"]])
            a[:, cols["i"]] = i
        if "f" in cols:
            f = torch.sigmoid(a[:, cols["f"]] + pp["f"] * c0 if "f" in pp else a[:, cols["f"]])
            a[:, cols["f"]] = f
        elif lay.coupled:
            f = 1 - i
        z = torch.tanh(a[:, cols["z"]]) if lay.tanh_in else a[:, cols["z"]]
        a[:, cols["z"]] = z
        c1 = z * i + c0 * f
        h = torch.tanh(c1) if lay.tanh_out else c1
        if "o" in cols:
            o = torch.sigmoid(a[:, cols["o"]] + pp["o"] * c1 if "o" in pp else a[:, cols["o"]])
            a[:, cols["o"]] = o
        c[t + 1], hc[t], act[t] = c1, h, a
        y[t + 1] = h * o
        if lay.fgr:
            g[t + 1] = torch.cat([i, f, o], dim=1)
    return [y, g, c, act, hc]


def lstm_backward(
    dy: torch.Tensor,
    dc: torch.Tensor,
    r: torch.Tensor,
    rg: torch.Tensor,
    p: torch.Tensor,
    y: torch.Tensor,
    g: torch.Tensor,
    c: torch.Tensor,
    act: torch.Tensor,
    hc: torch.Tensor,
    flags: int,
) -> list[torch.Tensor]:
    """Gradients of `lstm_forward` given dy, dc (T, B, N) (either may be empty: zero) ->
    [dxw (T, B, G*N), db (G*N), dr (G*N, N), drg (3N, 3N) for FGR (else empty), dp (P, N)]."""
    t_len, batch, _ = act.shape
    n = hc.shape[2]
    lay = Layout(flags, n)
    cols, pp = lay.cols, {k: p[row] for k, row in lay.peep.items()}
    da = torch.empty_like(act)
    dga = act.new_empty(t_len, batch, 3 * n) if lay.fgr else act.new_empty(0)
    dp = torch.zeros_like(p)
    dyn = dgn = None  # gradients of y_t and g_t from step t+1
    carry = act.new_zeros(batch, n)
    zero = act.new_zeros(batch, n)
    for t in range(t_len - 1, -1, -1):
        a, c0, c1, h = act[t], c[t], c[t + 1], hc[t]
        dyt = dy[t] if dy.numel() else zero
        if dyn is not None:
            dyt = dyt + dyn
        d = da[t]
        dhc, dao = dyt, None
        if "o" in cols:
            o = a[:, cols["o"]]
            do = dyt * h + dgn[:, 2 * n :] if dgn is not None else dyt * h
            dao = do * o * (1 - o)
            d[:, cols["o"]] = dao
            dhc = dyt * o
        dct = carry + dhc * (1 - h * h) if lay.tanh_out else carry + dhc
        if dc.numel():
            dct = dct + dc[t]
        if "o" in pp:
            dct = dct + dao * pp["o"]
            dp[lay.peep["o"]] += (dao * c1).sum(0)
        z = a[:, cols["z"]]
        i = a[:, cols["i"]] if "i" in cols else None
        dz = dct * i if i is not None else dct
        d[:, cols["z"]] = dz * (1 - z * z) if lay.tanh_in else dz
        fe = None
        new_carry = None
        dai = daf = None
        if i is not None:
            di = dct * z
            if dgn is not None:
                di = di + dgn[:, :n]
            if lay.coupled:
                di = di - dct * c0
                fe = 1 - i
            dai = di * i * (1 - i)
            d[:, cols["i"]] = dai
            if "i" in pp:
                new_carry = dai * pp["i"]
                dp[lay.peep["i"]] += (dai * c0).sum(0)
        if "f" in cols:
            f = a[:, cols["f"]]
            df = dct * c0
            if dgn is not None:
                df = df + dgn[:, n : 2 * n]
            daf = df * f * (1 - f)
            d[:, cols["f"]] = daf
            fe = f
            if "f" in pp:
                new_carry = daf * pp["f"] if new_carry is None else new_carry + daf * pp["f"]
                dp[lay.peep["f"]] += (daf * c0).sum(0)
        carry = dct * fe if fe is not None else dct
        if new_carry is not None:
            carry = carry + new_carry
        if lay.fgr:
            dga[t] = torch.cat([dai, daf, dao], dim=1)
        if t:
            dyn = d @ r  # (B, N)
            if lay.fgr:
                dgn = dga[t] @ rg  # (B, 3N)
    dr = da.reshape(t_len * batch, -1).t() @ y[:t_len].reshape(t_len * batch, -1)
    drg = act.new_empty(0)
    if lay.fgr:
        drg = dga.reshape(t_len * batch, -1).t() @ g[:t_len].reshape(t_len * batch, -1)
    return [da, da.sum((0, 1)), dr, drg, dp]


def gru_forward(xw: torch.Tensor, r: torch.Tensor, bhh: torch.Tensor) -> list[torch.Tensor]:
    """xw (T, B, 3N) = W x + b_ih, r (3N, N), bhh (3N) -> [h (T+1, B, N), act (T, B, 4N)]."""
    t_len, batch, _ = xw.shape
    n = r.shape[1]
    h = xw.new_zeros(t_len + 1, batch, n)
    act = xw.new_empty(t_len, batch, 4 * n)
    for t in range(t_len):
        q = torch.addmm(bhh, h[t], r.t()) if t else bhh.expand(batch, 3 * n)
        xr, xu, xn = xw[t].split(n, dim=1)
        hr, hu, hn = q.split(n, dim=1)
        rr, u = torch.sigmoid(xr + hr), torch.sigmoid(xu + hu)
        nn_ = torch.tanh(xn + rr * hn)
        act[t] = torch.cat([rr, u, nn_, hn], dim=1)
        h[t + 1] = (1 - u) * nn_ + u * h[t]
    return [h, act]


def gru_backward(
    dh: torch.Tensor, r: torch.Tensor, h: torch.Tensor, act: torch.Tensor
) -> list[torch.Tensor]:
    """Gradients of `gru_forward` given dh (T, B, N) -> [dxw (T, B, 3N), dr (3N, N), dbhh (3N)]."""
    t_len, batch, _ = act.shape
    n = r.shape[1]
    dx = dh.new_empty(t_len, batch, 3 * n)
    dq = dh.new_empty(t_len, batch, 3 * n)
    carry = dh.new_zeros(batch, n)
    for t in range(t_len - 1, -1, -1):
        rr, u, nn_, hn = act[t].split(n, dim=1)
        d = dh[t] + carry
        dan = d * (1 - u) * (1 - nn_ * nn_)
        dau = d * (h[t] - nn_) * u * (1 - u)
        dar = dan * hn * rr * (1 - rr)
        dx[t] = torch.cat([dar, dau, dan], dim=1)
        dq[t] = torch.cat([dar, dau, dan * rr], dim=1)
        carry = d * u + dq[t] @ r if t else carry
    dr = dq.reshape(t_len * batch, -1).t() @ h[:t_len].reshape(t_len * batch, -1)
    return [dx, dr, dq.sum((0, 1))]
