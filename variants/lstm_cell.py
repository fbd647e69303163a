"""The generic LSTM cell of Greff et al. 2017 (section II), driven by an `LSTMSpec`.

    z = g(W_z x + R_z y' + b_z)                           block input
    i = s(W_i x + R_i y' + p_i * c' + b_i)                input gate   (NIG: i = 1)
    f = s(W_f x + R_f y' + p_f * c' + b_f)                forget gate  (NFG: f = 1; CIFG: f = 1 - i)
    c = z * i + c' * f                                    cell
    o = s(W_o x + R_o y' + p_o * c + b_o)                 output gate  (NOG: o = 1); sees the new c
    y = h(c) * o                                          block output
with ' = time t-1, s = logistic sigmoid, g = h = tanh (NIAF: g(x) = x, NOAF: h(x) = x), no
peepholes in NP, and in FGR every gate b also gets sum_a R_ab a' over a in {i, f, o}
(post-sigmoid activations of t-1). Initial state c = y = 0 (and zero gate activations for FGR).

A cell holds K independent trials (a *pack*, `study.pack`): every parameter has a leading trial
dimension, stored in PyTorch's gate order (i, f, z, o) restricted to the gates the spec has:
`W (K, G*N, M)`, `R (K, G*N, N)`, `b (K, G*N)`, `p (K, P, N)`, and for FGR `Rg (K, 3N, 3N)` with
`Rg[k, b-block, a-block] = R_ab`. A single model is K = 1. `paper_weights(trial)` returns named
views in the paper's notation.
"""

from __future__ import annotations

import torch
from torch import nn

from variants.spec import LSTMSpec

INIT_STD = 0.1  # the paper: every weight N(0, 0.1^2)


def init_normal_(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """Draw every parameter from N(0, INIT_STD^2) in registration order (the paper's init)."""
    with torch.no_grad():
        for param in module.parameters():
            param.normal_(0.0, INIT_STD, generator=generator)


class LSTMCell(nn.Module):
    """One direction of an LSTM variant for K trials; `scan` runs it over a whole oriented batch."""

    # how many blocks of units the input features are (None: a task's features, not units); a
    # layer stacked on another sets it (`study.model.build_model`) so a pack can pad W's columns
    input_blocks: int | None = None

    def __init__(
        self,
        spec: LSTMSpec,
        input_size: int,
        hidden_size: int,
        trials: int = 1,
        generator: torch.Generator | None = None,
        forget_bias: float = 0.0,
    ):
        super().__init__()
        self.spec, self.input_size, self.hidden_size, self.trials = (
            spec,
            input_size,
            hidden_size,
            trials,
        )
        self.gates = spec.weighted_gates
        k, n, g = trials, hidden_size, len(self.gates)
        self.W = nn.Parameter(torch.empty(k, g * n, input_size))
        self.R = nn.Parameter(torch.empty(k, g * n, n))
        self.b = nn.Parameter(torch.empty(k, g * n))
        self.p = (
            nn.Parameter(torch.empty(k, len(spec.peephole_gates), n)) if spec.peepholes else None
        )
        r = len(spec.recurrent_gates)
        self.Rg = nn.Parameter(torch.empty(k, r * n, r * n)) if r else None
        # each trial's real hidden units; a pack (study.pack) lowers a smaller trial's, whose
        # extra units are zero padding that the compiled kernels skip
        self.units = torch.full((k,), n, dtype=torch.int64)
        init_normal_(self, generator)
        if forget_bias:
            if "f" not in self.gates:
                raise ValueError(
                    f"forget_bias needs a forget gate with its own bias; {spec.change!r} has none"
                )
            with torch.no_grad():
                self.b[:, self._block("f")].add_(forget_bias)

    def _block(self, gate: str) -> slice:
        k, n = self.gates.index(gate), self.hidden_size
        return slice(k * n, (k + 1) * n)

    def hidden_blocks(self) -> dict[str, tuple[int | None, ...]]:
        """Per parameter (after the trial dimension): how many blocks of N units each dimension
        holds (None: a dimension not made of units). `study.pack` pads and masks by it."""
        g = len(self.gates)
        out: dict[str, tuple[int | None, ...]] = {
            "W": (g, self.input_blocks),
            "R": (g, 1),
            "b": (g,),
        }
        if self.p is not None:
            out["p"] = (None, 1)
        if self.Rg is not None:
            out["Rg"] = (3, 3)
        return out

    def paper_weights(self, trial: int = 0) -> dict[str, torch.Tensor]:
        """Views into trial `trial`'s parameters named as in the paper; copying into them sets
        the weights."""
        out: dict[str, torch.Tensor] = {}
        for gate in ("z", "i", "f", "o"):
            if gate in self.gates:
                rows = self._block(gate)
                out[f"W_{gate}"], out[f"R_{gate}"], out[f"b_{gate}"] = (
                    self.W[trial, rows],
                    self.R[trial, rows],
                    self.b[trial, rows],
                )
        if self.p is not None:
            for k, gate in enumerate(self.spec.peephole_gates):
                out[f"p_{gate}"] = self.p[trial, k]
        if self.Rg is not None:
            gates, n = self.spec.recurrent_gates, self.hidden_size
            for a_k, a in enumerate(gates):  # source gate a (t-1)
                for b_k, b in enumerate(gates):  # target gate b (t)
                    out[f"R_{a}{b}"] = self.Rg[
                        trial, b_k * n : (b_k + 1) * n, a_k * n : (a_k + 1) * n
                    ]
        return out

    def step(
        self, a: torch.Tensor, c: torch.Tensor, prev_gates: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One time step from the pre-activations `a = W x + R y' + b` `(K, B, G*N)` and
        `c' (K, B, N)`. Returns `(y, c, gates)` where `gates` holds i, f, o `(K, B, 3N)` for FGR
        (else None)."""
        spec, n = self.spec, self.hidden_size
        if self.Rg is not None:
            # FGR: add sum_a R_ab a' to gate b; Rg rows (targets) are ordered i, f, o.
            extra = torch.bmm(prev_gates, self.Rg.transpose(1, 2))  # (K, B, 3N)
            a = a.clone()
            for b_k, gate in enumerate(spec.recurrent_gates):
                a[..., self._block(gate)] += extra[..., b_k * n : (b_k + 1) * n]
        peep = (
            {g: self.p[:, k].unsqueeze(1) for k, g in enumerate(spec.peephole_gates)}
            if self.p is not None
            else {}
        )  # (K, 1, N) each

        z = a[..., self._block("z")]
        z = torch.tanh(z) if spec.input_activation else z
        if spec.input_gate:
            ai = a[..., self._block("i")]
            i = torch.sigmoid(ai + peep["i"] * c if "i" in peep else ai)
        else:
            i = None  # i = 1
        if spec.coupled_input_forget:
            f = 1.0 - i
        elif spec.forget_gate:
            af = a[..., self._block("f")]
            f = torch.sigmoid(af + peep["f"] * c if "f" in peep else af)
        else:
            f = None  # f = 1
        zi = z * i if i is not None else z
        c = zi + (c * f if f is not None else c)
        hc = torch.tanh(c) if spec.output_activation else c
        if spec.output_gate:
            ao = a[..., self._block("o")]
            o = torch.sigmoid(ao + peep["o"] * c if "o" in peep else ao)
            y = hc * o
        else:
            o, y = None, hc
        gates = torch.cat([i, f, o], dim=-1) if self.Rg is not None else None
        return y, c, gates

    def scan(
        self, x: torch.Tensor, steps: torch.Tensor | None = None, need_cells: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`x (K, T, B, M)` -> outputs `y (K, T, B, N)` and cells `c (K, T, B, N)` through the
        fast path (`variants.fast`; `ODYSSEY_CELLS=reference` forces `scan_reference`).
        `steps (K,)`: trial k's steps past `steps[k]` are padding that the fast kernels skip (their
        outputs are unspecified; the layer masks them). With `need_cells=False`, `c` may be None."""
        from variants import fast

        return fast.lstm_scan(self, x, steps, need_cells)

    def scan_reference(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference time loop: `x (K, T, B, M)` -> `y (K, T, B, N)` and `c (K, T, B, N)`."""
        trials, t_len, batch, m = x.shape
        n = self.hidden_size
        # the input projection of all steps in one (batched) matrix product, outside the loop
        xw = torch.baddbmm(
            self.b.unsqueeze(1), x.reshape(trials, t_len * batch, m), self.W.transpose(1, 2)
        ).view(trials, t_len, batch, -1)
        y = x.new_zeros(trials, batch, n)
        c = x.new_zeros(trials, batch, n)
        gates = x.new_zeros(trials, batch, 3 * n) if self.Rg is not None else None
        ys, cs = [], []
        r_t = self.R.transpose(1, 2)
        for xw_t in xw.unbind(1):  # unbind, not xw[:, t]: indexing makes backward O(T^2)
            y, c, gates = self.step(torch.baddbmm(xw_t, y, r_t), c, gates)
            ys.append(y)
            cs.append(c)
        return torch.stack(ys, 1), torch.stack(cs, 1)
