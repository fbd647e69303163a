"""Variant registry: shapes, gradients, parameter counts, padding, the paper's equations, and the
PyTorch oracles (NP == nn.LSTM, GRU == nn.GRU with copied weights). Parametrised over the registry,
so a new variant is tested without new test code (its count formula aside)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import variants
from variants import VARIANTS, LSTMSpec

LSTMS = [n for n, s in VARIANTS.items() if isinstance(s, LSTMSpec)]
BOTH = pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])


def batch(m=5, t=7, lengths=(7, 4, 1), seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(t, len(lengths), m, generator=g, dtype=dtype), torch.tensor(lengths)


def expected_params(name: str, m: int, n: int) -> int:
    """Independent formulas, one direction: V 4N(M+N) + 4N biases + 3N peepholes; one gate
    fewer 3N(M+N) + 3N + 2N; NP without the peepholes; FGR V + 9 N x N."""
    return {
        "V": 4 * n * (m + n) + 4 * n + 3 * n,
        "NIAF": 4 * n * (m + n) + 4 * n + 3 * n,
        "NOAF": 4 * n * (m + n) + 4 * n + 3 * n,
        "NP": 4 * n * (m + n) + 4 * n,
        "NIG": 3 * n * (m + n) + 3 * n + 2 * n,
        "NFG": 3 * n * (m + n) + 3 * n + 2 * n,
        "NOG": 3 * n * (m + n) + 3 * n + 2 * n,
        "CIFG": 3 * n * (m + n) + 3 * n + 2 * n,
        "FGR": 4 * n * (m + n) + 4 * n + 3 * n + 9 * n * n,
        "GRU": 3 * n * (m + n) + 6 * n,  # torch.nn.GRU: two bias vectors
        "RNN": n * (m + n) + 2 * n,  # torch.nn.RNN: two bias vectors
        "LEAKY": n * (m + n) + n + n,  # one bias, one time constant per unit
    }[name]


def test_registry_order_and_errors():
    paper = ["V", "NIG", "NFG", "NOG", "NIAF", "NOAF", "NP", "CIFG", "FGR", "GRU"]
    assert list(VARIANTS) == [*paper, "RNN", "LEAKY"]
    with pytest.raises(ValueError, match=r"unknown variant 'CIFx'; known: V, NIG, .*GRU"):
        variants.build("CIFx", 3, 4)


@pytest.mark.parametrize("name", VARIANTS)
@BOTH
def test_shape_no_nan_every_parameter_gets_gradient(name, bidirectional):
    module = variants.build(name, 5, 6, bidirectional=bidirectional)
    x, lengths = batch()
    out = module(x, lengths)
    assert out.shape == (7, 3, 6 * (2 if bidirectional else 1))
    assert torch.isfinite(out).all()
    assert (out[4:, 1] == 0).all() and (out[1:, 2] == 0).all()  # padding is zero
    out.pow(2).sum().backward()
    for pname, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: {pname} gets no gradient"


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("m,n", [(39, 100), (88, 20), (4, 7)])
def test_parameter_count(name, m, n):
    for bidirectional, dirs in ((False, 1), (True, 2)):
        module = variants.build(name, m, n, bidirectional=bidirectional)
        assert sum(p.numel() for p in module.parameters()) == dirs * expected_params(name, m, n)


@pytest.mark.parametrize("name", VARIANTS)
@BOTH
def test_padding_never_changes_a_sequence(name, bidirectional):
    module = variants.build(name, 5, 6, bidirectional=bidirectional)
    x, lengths = batch(lengths=(7, 4, 1))
    x_dirty = x.clone()
    for b, length in enumerate(lengths):
        x_dirty[length:, b] = 1e3  # garbage in the padding
    together = module(x_dirty, lengths)
    for b, length in enumerate(lengths.tolist()):
        alone = module(x[:length, b : b + 1], torch.tensor([length]))
        torch.testing.assert_close(together[:length, b : b + 1], alone, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", VARIANTS)
@BOTH
def test_gradcheck_float64(name, bidirectional):
    torch.manual_seed(0)
    module = variants.build(name, 3, 4, bidirectional=bidirectional).double()
    x, lengths = batch(m=3, t=4, lengths=(4, 2), dtype=torch.float64)
    x.requires_grad_(True)
    params = list(module.parameters())

    def f(x, *ps):
        with torch.nn.utils.stateless._reparametrize_module(
            module, dict(zip([n for n, _ in module.named_parameters()], ps, strict=True))
        ):
            return module(x, lengths)

    assert torch.autograd.gradcheck(f, (x, *[p.detach().requires_grad_(True) for p in params]))


# ---------------------------------------------------------------------- the paper's equations


def paper_lstm(w: dict, spec: LSTMSpec, x: torch.Tensor) -> torch.Tensor:
    """Greff et al. 2017, eqs. for one sequence, written straight from the paper (the vanilla
    LSTM's block input, gates, cell and output), independent of the module's code:
    x (T, M) -> y (T, N)."""
    n = w["W_z"].shape[0]
    sig = torch.sigmoid
    g = torch.tanh if spec.input_activation else (lambda v: v)
    h = torch.tanh if spec.output_activation else (lambda v: v)
    y, c = torch.zeros(n, dtype=x.dtype), torch.zeros(n, dtype=x.dtype)
    i = f = o = torch.zeros(n, dtype=x.dtype)
    ys = []
    for xt in x:

        def pre(k, peep_c, xt=xt, y=y, i=i, f=f, o=o):  # y, i, f, o of t-1
            a = w[f"W_{k}"] @ xt + w[f"R_{k}"] @ y + w[f"b_{k}"]
            if spec.peepholes:
                a = a + w[f"p_{k}"] * peep_c
            if spec.full_gate_recurrence:
                a = a + w[f"R_i{k}"] @ i + w[f"R_f{k}"] @ f + w[f"R_o{k}"] @ o
            return a

        z = g(w["W_z"] @ xt + w["R_z"] @ y + w["b_z"])
        i_new = sig(pre("i", c)) if spec.input_gate else torch.ones(n, dtype=x.dtype)
        if spec.coupled_input_forget:
            f_new = 1 - i_new
        else:
            f_new = sig(pre("f", c)) if spec.forget_gate else torch.ones(n, dtype=x.dtype)
        c = z * i_new + c * f_new
        o_new = sig(pre("o", c)) if spec.output_gate else torch.ones(n, dtype=x.dtype)
        y = h(c) * o_new
        i, f, o = i_new, f_new, o_new
        ys.append(y)
    return torch.stack(ys)


@pytest.mark.parametrize("name", LSTMS)
@BOTH
def test_module_is_the_papers_equations(name, bidirectional):
    module = variants.build(name, 5, 6, bidirectional=bidirectional).double()
    x, lengths = batch(dtype=torch.float64)
    out = module(x, lengths)
    for b, length in enumerate(lengths.tolist()):
        seq = x[:length, b]
        fwd = paper_lstm(module.paper_weights(0), VARIANTS[name], seq)
        torch.testing.assert_close(out[:length, b, :6], fwd, atol=1e-12, rtol=1e-10)
        if bidirectional:
            bwd = paper_lstm(module.paper_weights(1), VARIANTS[name], seq.flip(0)).flip(0)
            torch.testing.assert_close(out[:length, b, 6:], bwd, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("name", LSTMS)
def test_paper_weights_are_exactly_the_variants_weights(name):
    module = variants.build(name, 5, 6)
    w = module.paper_weights()
    spec = VARIANTS[name]
    assert sum(t.numel() for t in w.values()) == sum(p.numel() for p in module.parameters())
    assert ("W_i" in w) == spec.input_gate
    assert ("W_f" in w) == (spec.forget_gate and not spec.coupled_input_forget)
    assert ("W_o" in w) == spec.output_gate
    assert any(k.startswith("p_") for k in w) == spec.peepholes
    assert sum(
        k in w for k in ("R_ii", "R_fi", "R_oi", "R_if", "R_ff", "R_of", "R_io", "R_fo", "R_oo")
    ) == (9 if spec.full_gate_recurrence else 0)
    for t in w.values():  # views: writing through them changes the module
        t.data.fill_(0.25)
    assert all((p == 0.25).all() for p in module.parameters())


def _copy_shared(src: nn.Module, dst: nn.Module) -> None:
    ws, wd = src.paper_weights(), dst.paper_weights()
    with torch.no_grad():
        for k in wd:
            if k in ws:
                wd[k].copy_(ws[k])


@pytest.mark.parametrize("name,gate", [("NIG", "i"), ("NFG", "f"), ("NOG", "o")])
def test_removed_gate_equals_a_saturated_gate_of_v(name, gate):
    """NIG i == 1, NFG f == 1, NOG o == 1: V with that gate forced open gives the same output."""
    ablated = variants.build(name, 5, 6).double()
    vanilla = variants.build("V", 5, 6).double()
    _copy_shared(ablated, vanilla)
    w = vanilla.paper_weights()
    with torch.no_grad():
        for k in (f"W_{gate}", f"R_{gate}", f"p_{gate}"):
            w[k].zero_()
        w[f"b_{gate}"].fill_(60.0)  # sigmoid(60) == 1 in float64
    x, lengths = batch(dtype=torch.float64)
    torch.testing.assert_close(ablated(x, lengths), vanilla(x, lengths), atol=1e-12, rtol=0)


def test_cifg_forget_gate_is_one_minus_input_gate():
    """Record the gates inside CIFG's step: f must be exactly 1 - i."""
    module = variants.build("CIFG", 5, 6).double()
    cell = module.cells[0]
    seen = []
    original = torch.sigmoid

    def spy(t):
        out = original(t)
        seen.append(out)
        return out

    x, lengths = batch(dtype=torch.float64)
    torch.sigmoid = spy
    try:
        y0 = cell.scan_reference(x[:1].unsqueeze(0))[0][0]  # the per-step loop (no fused sigmoid)
    finally:
        torch.sigmoid = original
    i, o = (t[0] for t in seen)  # one step: CIFG computes exactly two sigmoids, i and o
    w = cell.paper_weights()
    z = torch.tanh(x[0] @ w["W_z"].t() + w["b_z"])
    c = z * i + 0 * (1 - i)  # c' = 0 at the first step, f = 1 - i
    torch.testing.assert_close(y0[0], torch.tanh(c) * o)
    # second step, non-zero c': the module's c equals z*i + c'*(1 - i)
    ys, cs = (t[0] for t in cell.scan(x[:2].unsqueeze(0)))
    a = x[1] @ w["W_i"].t() + ys[0] @ w["R_i"].t() + w["b_i"] + w["p_i"] * cs[0]
    i1 = torch.sigmoid(a)
    z1 = torch.tanh(x[1] @ w["W_z"].t() + ys[0] @ w["R_z"].t() + w["b_z"])
    torch.testing.assert_close(cs[1], z1 * i1 + cs[0] * (1 - i1))


@pytest.mark.parametrize(
    "name,zero",
    [
        ("NP", ("p_i", "p_f", "p_o")),
        ("FGR", ("R_ii", "R_fi", "R_oi", "R_if", "R_ff", "R_of", "R_io", "R_fo", "R_oo")),
    ],
)
def test_extra_weights_at_zero_reduce_to_the_other_variant(name, zero):
    """V with peepholes zeroed equals NP; FGR with all R_ab zeroed equals V."""
    small, big = (
        (variants.build("NP", 5, 6), variants.build("V", 5, 6))
        if name == "NP"
        else (variants.build("V", 5, 6), variants.build("FGR", 5, 6))
    )
    small, big = small.double(), big.double()
    _copy_shared(small, big)
    with torch.no_grad():
        for k in zero:
            big.paper_weights()[k].zero_()
    x, lengths = batch(dtype=torch.float64)
    torch.testing.assert_close(small(x, lengths), big(x, lengths), atol=1e-12, rtol=0)


def test_forget_bias_option():
    module = variants.build("V", 5, 6, forget_bias=1.0)
    assert 0.5 < module.paper_weights()["b_f"].mean() < 1.5
    with pytest.raises(ValueError, match="forget gate"):
        variants.build("CIFG", 5, 6, forget_bias=1.0)


# --------------------------------------------------------------------------- PyTorch oracles


def _run_torch(rnn: nn.Module, x: torch.Tensor, lengths: torch.Tensor):
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    out, state = rnn(packed)
    out, _ = nn.utils.rnn.pad_packed_sequence(out, total_length=x.shape[0])
    return out, state


@BOTH
def test_np_equals_torch_lstm(bidirectional):
    ours = variants.build("NP", 5, 6, bidirectional=bidirectional)
    ref = nn.LSTM(5, 6, bidirectional=bidirectional)
    with torch.no_grad():
        for d in range(ours.directions):
            sfx = "_reverse" if d else ""
            cell = ours.cells[d]
            getattr(ref, f"weight_ih_l0{sfx}").copy_(cell.W[0])  # both in gate order i, f, g, o
            getattr(ref, f"weight_hh_l0{sfx}").copy_(cell.R[0])
            getattr(ref, f"bias_ih_l0{sfx}").copy_(cell.b[0])
            getattr(ref, f"bias_hh_l0{sfx}").zero_()
    x, lengths = batch()
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out, (h, c) = ours(x1, lengths, return_state=True)
    ref_out, (ref_h, ref_c) = _run_torch(ref, x2, lengths)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h, ref_h, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c, ref_c, atol=1e-5, rtol=1e-5)
    (out.sin().sum() + h.sum() + c.sum()).backward()
    (ref_out.sin().sum() + ref_h.sum() + ref_c.sum()).backward()
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-5, rtol=1e-5)
    for d in range(ours.directions):
        sfx = "_reverse" if d else ""
        cell = ours.cells[d]
        torch.testing.assert_close(
            cell.W.grad[0], getattr(ref, f"weight_ih_l0{sfx}").grad, atol=1e-5, rtol=1e-5
        )
        torch.testing.assert_close(
            cell.R.grad[0], getattr(ref, f"weight_hh_l0{sfx}").grad, atol=1e-5, rtol=1e-5
        )
        torch.testing.assert_close(
            cell.b.grad[0], getattr(ref, f"bias_ih_l0{sfx}").grad, atol=1e-5, rtol=1e-5
        )


@BOTH
def test_gru_equals_torch_gru(bidirectional):
    ours = variants.build("GRU", 5, 6, bidirectional=bidirectional)
    assert_equals_torch_rnn(ours, nn.GRU(5, 6, bidirectional=bidirectional))


def assert_equals_torch_rnn(ours: nn.Module, ref: nn.Module) -> None:
    """`ours` (a GRU or RNN of one layer, one trial) equals torch's `ref` with its weights
    copied in: outputs, final state, and the gradients of the input and of every weight."""
    names = {"W": "weight_ih", "R": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh"}

    def theirs(d: int, name: str) -> torch.Tensor:
        return getattr(ref, f"{names[name]}_l0{'_reverse' if d else ''}")

    with torch.no_grad():
        for d in range(ours.directions):
            for name in names:
                theirs(d, name).copy_(getattr(ours.cells[d], name)[0])
    x, lengths = batch()
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out, (h, c) = ours(x1, lengths, return_state=True)
    assert c is None
    ref_out, ref_h = _run_torch(ref, x2, lengths)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h, ref_h, atol=1e-5, rtol=1e-5)
    (out.sin().sum() + h.sum()).backward()
    (ref_out.sin().sum() + ref_h.sum()).backward()
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-5, rtol=1e-5)
    for d in range(ours.directions):
        for name in names:
            grad = getattr(ours.cells[d], name).grad[0]
            torch.testing.assert_close(grad, theirs(d, name).grad, atol=1e-5, rtol=1e-5)


def test_chung_gru_form_differs_only_in_the_reset_placement():
    """reset_after=False is Chung et al.'s n = tanh(W x + U (r * h) + b): check one step by hand."""
    spec = variants.gru(reset_after=False)
    module = variants.build_spec(spec, 3, 4).double()
    cell = module.cells[0]
    x = torch.randn(2, 1, 3, dtype=torch.float64)
    y = module(x, torch.tensor([2]))
    h = torch.zeros(4, dtype=torch.float64)
    for t in range(2):
        w_r, w_u, w_n = cell.W[0].split(4)
        u_r, u_u, u_n = cell.R[0].split(4)
        bi_r, bi_u, bi_n = cell.b_ih[0].split(4)
        bh_r, bh_u, bh_n = cell.b_hh[0].split(4)
        r = torch.sigmoid(w_r @ x[t, 0] + bi_r + u_r @ h + bh_r)
        u = torch.sigmoid(w_u @ x[t, 0] + bi_u + u_u @ h + bh_u)
        n = torch.tanh(w_n @ x[t, 0] + bi_n + u_n @ (r * h) + bh_n)
        h = (1 - u) * n + u * h
        torch.testing.assert_close(y[t, 0], h)


def test_bad_input_is_named():
    module = variants.build("V", 5, 6)
    with pytest.raises(ValueError, match=r"expected x of shape \(T, B, 5\)"):
        module(torch.zeros(3, 2, 4), torch.tensor([3, 3]))
    with pytest.raises(ValueError, match="lengths"):
        module(torch.zeros(3, 2, 5), torch.tensor([4, 3]))


@pytest.mark.parametrize("name", ["V", "GRU"])
def test_padded_steps_give_zero_outputs_even_from_non_finite_input(name):
    torch.manual_seed(0)
    module = variants.build(name, 3, 4, bidirectional=True)
    x = torch.randn(5, 2, 3)
    clean = module(x, torch.tensor([5, 3]))
    x[3:, 1] = float("inf")  # padding of the second sequence
    out = module(x, torch.tensor([5, 3]))
    assert torch.isfinite(out).all() and (out[3:, 1] == 0).all()
    torch.testing.assert_close(out, clean)
