"""Fast cell paths (variants.fast) against the reference time loop, for every variant.

The reference (`scan_reference`, per-step autograd) is the independent truth; the compiled kernels
(`cells.cpp`) must match it on outputs, final states and the gradients of every parameter and of the
input, in float64 to 1e-10 and float32 to ~1e-5, for single models and for packs of trials.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch

import variants
from variants import VARIANTS, fast
from variants.fast import build, supports
from variants.lstm_cell import LSTMCell

# the variants the compiled kernels implement (the RNN and LEAKY baselines run reference loops)
COMPILED = [n for n, s in VARIANTS.items() if supports(s)]

BOTH = pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])


@pytest.fixture(scope="session")
def compiled():
    """The compiled kernels, built once per session (about 15 s on 2 cores when not cached)."""
    ops = build.load()
    if ops is None:
        pytest.fail(f"the compiled kernels did not build: {build.status()['error']}")
    return ops


def run_all(module, x, lengths, path, need_state=True):
    """Outputs, final states and gradients (input first, then parameters) under one path."""
    x = x.clone().requires_grad_(True)
    with fast.use(path):
        if need_state:
            out, (h, c) = module(x, lengths, return_state=True)
            loss = out.sin().sum() + h.cos().sum() + (c.pow(2).sum() if c is not None else 0)
            results = [out, h] + ([c] if c is not None else [])
        else:
            out = module(x, lengths)
            loss, results = out.sin().sum(), [out]
        grads = torch.autograd.grad(loss, [x, *module.parameters()])
    return results + list(grads)


def assert_all_close(got, want, **tol):
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        torch.testing.assert_close(g, w, **tol, msg=lambda m, k=k: f"tensor {k}: {m}")


def data(m=5, lengths=(9, 6, 1, 9), dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(max(lengths), len(lengths), m, generator=g, dtype=dtype), torch.tensor(
        lengths
    )


@pytest.mark.parametrize("name", COMPILED)
@BOTH
def test_fast_path_equals_reference_float64(name, bidirectional, compiled):
    torch.manual_seed(1)
    module = variants.build(name, 5, 7, bidirectional=bidirectional).double()
    x, lengths = data()
    cell = module.cells[0]
    chosen = fast.lstm_path(cell, x) if isinstance(cell, LSTMCell) else fast.gru_path(cell, x)
    assert chosen == "compiled"
    want = run_all(module, x, lengths, "reference")
    assert_all_close(run_all(module, x, lengths, "fast"), want, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("name", COMPILED)
@BOTH
def test_compiled_equals_reference_float32(name, bidirectional, compiled):
    torch.manual_seed(2)
    module = variants.build(name, 6, 33, bidirectional=bidirectional)  # N not a multiple of 8
    x, lengths = data(m=6, lengths=(20, 13, 2), dtype=torch.float32)
    want = run_all(module, x, lengths, "reference")
    assert_all_close(run_all(module, x, lengths, "fast"), want, atol=2e-5, rtol=1e-4)


# flag sets outside the registry run the kernels' generic (branchy) loop, not a specialised one
OFF_REGISTRY = {
    "NIG+NOAF": variants.lstm(input_gate=False, output_activation=False),
    "CIFG+NP+NIAF": variants.lstm(
        coupled_input_forget=True, peepholes=False, input_activation=False
    ),
    "FGR+NP": variants.lstm(full_gate_recurrence=True, peepholes=False),
    "no gates": variants.lstm(
        input_gate=False, forget_gate=False, output_gate=False, peepholes=False
    ),
}


@pytest.mark.parametrize("name", OFF_REGISTRY)
def test_off_registry_flag_sets_equal_reference_float64(name, compiled):
    torch.manual_seed(5)
    module = variants.build_spec(OFF_REGISTRY[name], 5, 7, bidirectional=True).double()
    x, lengths = data()
    assert fast.lstm_path(module.cells[0], x) == "compiled"
    want = run_all(module, x, lengths, "reference")
    assert_all_close(run_all(module, x, lengths, "fast"), want, atol=1e-10, rtol=1e-9)


def run_pack(module, x, lengths, path):
    """`run_all` for a pack: outputs, final states and gradients of `forward_packed`."""
    x = x.clone().requires_grad_(True)
    with fast.use(path):
        out, (h, c) = module.forward_packed(x, lengths, return_state=True)
        loss = out.sin().sum() + h.cos().sum() + (c.pow(2).sum() if c is not None else 0)
        grads = torch.autograd.grad(loss, [x, *module.parameters()])
    return [out, h] + ([c] if c is not None else []) + list(grads)


@pytest.mark.parametrize("name", COMPILED)
@BOTH
def test_pack_fast_path_equals_reference_float64(name, bidirectional, compiled):
    """A pack of 3 trials with ragged lengths: the kernels skip each trial's padding (`steps`)
    and still match the batched reference loop everywhere, gradients included."""
    torch.manual_seed(7)
    module = variants.build(name, 5, 4, bidirectional=bidirectional, trials=3).double()
    x = torch.randn(3, 8, 2, 5, dtype=torch.float64)
    lengths = torch.tensor([[8, 3], [2, 2], [5, 6]])
    want = run_pack(module, x, lengths, "reference")
    assert_all_close(run_pack(module, x, lengths, "fast"), want, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("path", ["fast", "reference"])
def test_pack_trial_equals_the_same_model_alone(name, path, compiled):
    """Trial k of a pack computes exactly what a single model with trial k's weights computes
    on trial k's data, for both paths: the trial dimension never mixes trials."""
    torch.manual_seed(8)
    pack = variants.build(name, 5, 6, bidirectional=True, trials=3).double()
    x = torch.randn(3, 9, 2, 5, dtype=torch.float64)
    lengths = torch.tensor([[9, 4], [3, 1], [6, 6]])
    got = run_pack(pack, x, lengths, path)
    for k in range(3):
        alone = variants.build(name, 5, 6, bidirectional=True).double()
        with torch.no_grad():
            for p_alone, p_pack in zip(alone.parameters(), pack.parameters(), strict=True):
                p_alone.copy_(p_pack[k : k + 1])
        want = run_all(alone, x[k], lengths[k], path)
        n_out = len(want) - 1 - len(list(alone.parameters()))
        for g, w in zip(got[:n_out], want[:n_out], strict=True):  # out (K, ...), h / c (D, K, ...)
            torch.testing.assert_close(g[k] if g.shape[0] == 3 else g[:, k], w, atol=1e-12, rtol=0)
        torch.testing.assert_close(got[n_out][k], want[n_out], atol=1e-12, rtol=0)  # dx
        for g, w in zip(got[n_out + 1 :], want[n_out + 1 :], strict=True):
            torch.testing.assert_close(g[k : k + 1], w, atol=1e-12, rtol=0)


def test_nan_in_one_trial_never_reaches_another(compiled):
    """A trial whose weights are NaN leaves every other trial's outputs and gradients finite."""
    torch.manual_seed(9)
    for name in ("V", "FGR", "GRU"):
        pack = variants.build(name, 4, 5, trials=3)
        with torch.no_grad():
            pack.cells[0].R[1].fill_(float("nan"))
        x = torch.randn(3, 6, 2, 4)
        lengths = torch.full((3, 2), 6)
        out = run_pack(pack, x, lengths, "fast")
        for t in out:
            bad = t[1] if t.shape[0] == 3 else t[:, 1]
            good = torch.cat([t[0].flatten(), t[2].flatten()]) if t.shape[0] == 3 else t[:, ::2]
            assert torch.isfinite(good).all(), name
            assert not torch.isfinite(bad).all(), name


def test_spec_field_the_kernels_do_not_know_runs_in_the_reference_loop():
    """A spec with an equation-changing field outside the flag table (a variant added later)
    is never handed to the kernels, which would silently ignore it."""
    import dataclasses

    from variants.fast.functions import lstm_flags, supports

    @dataclasses.dataclass(frozen=True)
    class Future(variants.LSTMSpec):
        tied_gates: bool = True

    cell = variants.build_spec(Future(), 3, 4).cells[0]
    assert not supports(cell.spec)
    assert fast.lstm_path(cell, torch.zeros(1, 2, 1, 3)) == "reference"
    with pytest.raises(ValueError, match="do not know the spec field"):
        lstm_flags(cell.spec)
    assert supports(VARIANTS["FGR"]) and lstm_flags(VARIANTS["V"]) == 63


def test_kernel_header_comes_from_the_flag_table():
    from variants.spec import KERNEL_FLAGS

    header = build.flags_header()
    for k, name in enumerate(KERNEL_FLAGS):
        assert f"#define ODYSSEY_BIT_{name} {1 << k}\n" in header
    assert "X(63)" in header and "X(191)" in header  # V and FGR are specialised


def test_unused_cell_output_needs_no_cell_gradient(compiled):
    """Only y used (as in training): the kernels get no dc and the gradients still match."""
    torch.manual_seed(6)
    module = variants.build("V", 5, 7).double()
    x, lengths = data()
    want = run_all(module, x, lengths, "reference", need_state=False)
    assert_all_close(
        run_all(module, x, lengths, "fast", need_state=False), want, atol=1e-10, rtol=1e-9
    )


@BOTH
def test_np_runs_in_our_kernel_even_without_cells(bidirectional, compiled):
    """No shortcut to torch.lstm for a single NP model: one code path alone and packed."""
    module = variants.build("NP", 5, 7, bidirectional=bidirectional)
    x, lengths = data(dtype=torch.float32)
    assert fast.lstm_path(module.cells[0], x, need_cells=False) == "compiled"
    want = run_all(module, x, lengths, "reference", need_state=False)
    assert_all_close(
        run_all(module, x, lengths, "fast", need_state=False), want, atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("rows", [1, 20], ids=["plain-loop", "blas"])
@pytest.mark.parametrize("name", COMPILED)
def test_a_narrower_trial_of_a_pack_is_bitwise_the_trial_alone(name, rows, compiled):
    """Slot 1 holds a 4-unit trial in a 9-unit pack (its other units zero, `units` = 4) with
    shorter sequences than its neighbours: its outputs and every gradient (input and weights)
    are bitwise those of the same trial as a model of its own size, float32, through the plain
    loops (1 row) and BLAS (20 rows); its padding gets exactly zero gradients."""
    from study.slots import copy_into_slot

    torch.manual_seed(12)
    pack = variants.build(name, 5, 9, bidirectional=True, trials=3)
    alone = variants.build(name, 5, 4, bidirectional=True)
    blocks = [b for cell in pack.cells for b in cell.hidden_blocks().values()]
    with torch.no_grad():
        for p, src, blk in zip(pack.parameters(), alone.parameters(), blocks, strict=True):
            copy_into_slot(p[1], src[0], blk, 4)
    for cell in pack.cells:
        cell.units[1] = 4
    x = torch.randn(3, 11, rows, 5)
    lengths = torch.full((3, rows), 11)
    lengths[1] = torch.randint(1, 8, (rows,))
    t1 = int(lengths[1].max())
    got = run_pack(pack, x, lengths, "fast")
    want = run_all(alone, x[1, :t1], lengths[1], "fast")
    real = torch.cat([torch.arange(4), torch.arange(9, 13)])
    assert torch.equal(got[0][1, :t1][..., real], want[0])  # outputs
    assert torch.equal(got[0][1, t1:], torch.zeros_like(got[0][1, t1:]))
    n_state = len(want) - 1 - len(list(alone.parameters()))
    assert torch.equal(got[n_state][1, :t1], want[n_state])  # dx
    grads = got[n_state + 1 :]
    for g, w, blk in zip(grads, want[n_state + 1 :], blocks, strict=True):
        mine = torch.zeros_like(g[1])
        copy_into_slot(mine, w[0], blk, 4)
        assert torch.equal(g[1], mine), name


def test_gradcheck_compiled_fgr_and_gru(compiled):
    """Finite differences through the compiled kernels (the variants with the most structure)."""
    for name in ("FGR", "CIFG", "GRU"):
        module = variants.build(name, 3, 4, bidirectional=True).double()
        x, lengths = data(m=3, lengths=(5, 3))
        params = dict(module.named_parameters())

        def f(x, *ps, module=module, params=params, lengths=lengths):
            with torch.nn.utils.stateless._reparametrize_module(
                module, dict(zip(params, ps, strict=True))
            ):
                return module(x, lengths, return_state=True)[0]

        inputs = (
            x.requires_grad_(True),
            *[p.detach().requires_grad_(True) for p in params.values()],
        )
        with fast.use("fast"):
            assert torch.autograd.gradcheck(f, inputs)


def test_build_failure_falls_back_with_one_warning(monkeypatch, tmp_path, caplog):
    def broken(folder):
        raise RuntimeError("simulated: no compiler")

    monkeypatch.setenv("ODYSSEY_EXT_DIR", str(tmp_path))  # an empty cache: a build is needed
    monkeypatch.setattr(build, "_compile", broken)
    build.reset()
    try:
        module = variants.build("V", 5, 7).double()
        x, lengths = data()
        with caplog.at_level(logging.WARNING, logger="variants.fast.build"):
            assert fast.lstm_path(module.cells[0], x) == "reference"
            got = run_all(module, x, lengths, "fast")
            run_all(module, x, lengths, "fast")
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "simulated: no compiler" in warnings[0].getMessage()
        assert "reference loops" in warnings[0].getMessage()
        assert build.status()["loaded"] is False
        assert_all_close(got, run_all(module, x, lengths, "reference"), atol=1e-10, rtol=1e-9)
    finally:
        build.reset()


def test_mode_from_environment_and_errors(monkeypatch):
    cell = variants.build("V", 3, 4).cells[0]
    x = torch.zeros(1, 2, 1, 3)
    monkeypatch.setenv(fast.ENV, "reference")
    assert fast.mode() == "reference" and fast.lstm_path(cell, x) == "reference"
    with fast.use("fast"):  # an explicit use() wins over the environment
        assert fast.lstm_path(cell, x) == "compiled"
    monkeypatch.setenv(fast.ENV, "turbo")
    with pytest.raises(ValueError, match="ODYSSEY_CELLS must be one of fast, reference"):
        fast.mode()
    with pytest.raises(ValueError, match="unknown cell path 'turbo'; known: fast, reference"):
        with fast.use("turbo"):
            pass


def test_chung_gru_form_uses_the_reference_loop():
    module = variants.build_spec(variants.gru(reset_after=False), 3, 4)
    assert fast.gru_path(module.cells[0], torch.zeros(1, 2, 1, 3)) == "reference"


def test_bench_cells_cli_json(capsys, compiled):
    from odyssey.cli import main

    assert (
        main(
            [
                "bench",
                "cells",
                "--json",
                "--shapes",
                "jsb32",
                "--variants",
                "NP,GRU",
                "--repeats",
                "1",
                "--no-memory",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    rows = {r["variant"]: r for r in out["rows"]}
    assert set(rows) == {"nn.LSTM", "NP", "GRU"}
    assert rows["nn.LSTM"]["ratio"] == 1.0 and rows["GRU"]["impl"] == "compiled"
    assert rows["nn.LSTM"]["work"] == rows["NP"]["work"] == 1.0 and rows["GRU"]["work"] < 1
    base_ms = rows["nn.LSTM"]["ms"]
    for r in rows.values():
        # the printed numbers are rounded (gflops to 0.1, gflop to 1e-4, ms to 1e-3): compare
        # within what rounding allows, whatever the machine's load made them
        gflops = r["gflop"] / r["ms"] * 1e3
        slack = gflops * (0.5e-4 / r["gflop"] + 0.5e-3 / r["ms"]) + 0.05
        assert abs(r["gflops"] - gflops) <= slack + 1e-9
        assert r["peak_gflops"] > 0
        at_peak = r["gflop"] * 1e3 / r["peak_gflops"] / base_ms
        assert r["ratio_at_peak"] == pytest.approx(at_peak, rel=2e-2, abs=2e-3)
    assert all(r["ms"] > 0 and r["shape"] == "jsb32" for r in rows.values())
    assert out["env"]["threads"] == 1


@pytest.mark.parametrize("name", COMPILED)
@BOTH
def test_off_cpu_paths_create_nothing_on_the_cpu(name, bidirectional):
    """What a CUDA device would run (the reference loops), on the meta
    device: a tensor made on the CPU inside the path and mixed with the input fails here as it
    would on CUDA. Packs too."""
    module = variants.build(name, 5, 7, bidirectional=bidirectional).to("meta")
    x = torch.randn(6, 3, 5, device="meta")
    cell = module.cells[0]
    xk = x.unsqueeze(0)
    path = fast.lstm_path(cell, xk) if isinstance(cell, LSTMCell) else fast.gru_path(cell, xk)
    assert path == "reference"
    pack = variants.build(name, 5, 7, bidirectional=bidirectional, trials=2).to("meta")
    out = pack.forward_packed(torch.randn(2, 6, 3, 5, device="meta"), torch.tensor([[6, 4, 2]] * 2))
    out.sum().backward()
    assert out.shape == (2, 6, 3, 14 if bidirectional else 7)
    assert all(p.grad is not None and p.grad.device.type == "meta" for p in pack.parameters())
    for mode in ("fast", "reference"):
        with fast.use(mode):
            out, (h, c) = module(x, torch.tensor([6, 4, 2]), return_state=True)
            (out.sum() + h.sum()).backward()
        assert out.device.type == "meta" and out.shape == (6, 3, 14 if bidirectional else 7)
        assert all(p.grad is not None and p.grad.device.type == "meta" for p in module.parameters())
        module.zero_grad(set_to_none=True)


@pytest.mark.gpu
@pytest.mark.parametrize("name", COMPILED)
@BOTH
def test_cuda_fast_path_equals_reference(name, bidirectional):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    torch.manual_seed(4)
    module = variants.build(name, 5, 7, bidirectional=bidirectional).double().cuda()
    x, lengths = data()
    x = x.cuda()
    cell = module.cells[0]
    xk = x.unsqueeze(0)
    path = fast.lstm_path(cell, xk) if isinstance(cell, LSTMCell) else fast.gru_path(cell, xk)
    assert path in ("reference", "triton")  # never the CPU-only compiled kernels, nor cuDNN
    want = run_all(module, x, lengths, "reference")
    assert_all_close(run_all(module, x, lengths, "fast"), want, atol=1e-10, rtol=1e-9)


@pytest.mark.gpu
@pytest.mark.parametrize("name", VARIANTS)
def test_cuda_pack_equals_cpu_pack(name):
    """A pack on CUDA (the Triton kernels, or the batched reference loop without Triton) against
    the same pack on the CPU kernels."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    torch.manual_seed(10)
    pack = variants.build(name, 5, 6, bidirectional=True, trials=4).double()
    x = torch.randn(4, 9, 2, 5, dtype=torch.float64)
    lengths = torch.tensor([[9, 4], [3, 1], [6, 6], [2, 9]])
    want = run_pack(pack, x, lengths, "fast")
    got = run_pack(pack.cuda(), x.cuda(), lengths, "fast")
    assert_all_close([g.cpu() for g in got], want, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("name", ["V", "FGR", "GRU"])
def test_kernels_blas_path_equals_reference(name, compiled):
    """Rows against a large recurrent matrix go through BLAS (MKL's packed GEMM where present),
    not the plain loop the small shapes above take: both paths are held to the reference."""
    torch.manual_seed(11)
    pack = variants.build(name, 5, 80, trials=2).double()  # 320 x 80: past the small-matrix loop
    x = torch.randn(2, 6, 20, 5, dtype=torch.float64)  # 20 rows: past the few-rows loop
    lengths = torch.tensor([[6] * 20, [4] * 20])
    want = run_pack(pack, x, lengths, "reference")
    assert_all_close(run_pack(pack, x, lengths, "fast"), want, atol=1e-10, rtol=1e-9)
