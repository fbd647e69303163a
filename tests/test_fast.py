"""Fast cell paths (variants.fast) against the reference time loop, for every variant.

The reference (`scan_reference`, per-step autograd) is the independent truth; the compiled kernels
(`cells.cpp`) and their pure-PyTorch twins (`pykernel`) must match it on outputs, final states and
the gradients of every parameter and of the input, in float64 to 1e-10 and float32 to ~1e-5.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch

import variants
from variants import VARIANTS, fast
from variants.fast import build, pykernel
from variants.fast.functions import lstm_flags
from variants.lstm_cell import LSTMCell

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


@pytest.mark.parametrize("name", VARIANTS)
@BOTH
@pytest.mark.parametrize("path", ["fast", "python"])
def test_fast_paths_equal_reference_float64(name, bidirectional, path, compiled):
    torch.manual_seed(1)
    module = variants.build(name, 5, 7, bidirectional=bidirectional).double()
    x, lengths = data()
    cell = module.cells[0]
    with fast.use(path):
        chosen = fast.lstm_path(cell, x) if isinstance(cell, LSTMCell) else fast.gru_path(cell, x)
    assert chosen == {"fast": "compiled", "python": "python"}[path]
    want = run_all(module, x, lengths, "reference")
    assert_all_close(run_all(module, x, lengths, path), want, atol=1e-10, rtol=1e-9)


@pytest.mark.parametrize("name", VARIANTS)
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
LSTM_SPECS = {n: s for n, s in VARIANTS.items() if s.kind == "lstm"} | OFF_REGISTRY


@pytest.mark.parametrize("name", LSTM_SPECS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("given", ["dy+dc", "dy", "dc"])
def test_compiled_kernel_equals_pytorch_twin(name, dtype, given, compiled):
    """The raw kernels on the same inputs: every returned tensor, forward and backward (an
    output gradient left out, as autograd does for an unused output, is an empty tensor)."""
    cell = LSTMCell(LSTM_SPECS[name], 4, 6).to(dtype)
    flags = lstm_flags(cell.spec)
    g = torch.Generator().manual_seed(3)
    xw = torch.randn(5, 3, cell.W.shape[0], generator=g, dtype=dtype)
    empty = xw.new_empty(0)
    with torch.no_grad():
        r = cell.R.detach()
        rg = cell.Rg.detach() if cell.Rg is not None else empty
        p = cell.p.detach() if cell.p is not None else empty
    b = torch.randn(cell.W.shape[0], generator=g, dtype=dtype)
    fw_c = compiled.lstm_forward(xw, b, r, rg, p, flags)
    fw_p = pykernel.lstm_forward(xw, b, r, rg, p, flags)
    tol = {"atol": 1e-6, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-12, "rtol": 0}
    assert_all_close(list(fw_c), fw_p, **tol)
    dy, dc = torch.randn(2, 5, 3, 6, generator=g, dtype=dtype)
    dy = dy if "dy" in given else empty
    dc = dc if "dc" in given else empty
    bw_c = compiled.lstm_backward(dy, dc, r, rg, p, *fw_p, flags)
    bw_p = pykernel.lstm_backward(dy, dc, r, rg, p, *fw_p, flags)
    assert_all_close(list(bw_c), bw_p, **tol)


@pytest.mark.parametrize("name", OFF_REGISTRY)
@pytest.mark.parametrize("path", ["fast", "python"])
def test_off_registry_flag_sets_equal_reference_float64(name, path, compiled):
    torch.manual_seed(5)
    module = variants.build_spec(OFF_REGISTRY[name], 5, 7, bidirectional=True).double()
    x, lengths = data()
    want = run_all(module, x, lengths, "reference")
    assert_all_close(run_all(module, x, lengths, path), want, atol=1e-10, rtol=1e-9)


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
def test_np_runs_in_torch_lstm_when_cells_are_not_needed(bidirectional):
    module = variants.build("NP", 5, 7, bidirectional=bidirectional)
    x, lengths = data(dtype=torch.float32)
    assert fast.lstm_path(module.cells[0], x, need_cells=False) == "torch.lstm"
    want = run_all(module, x, lengths, "reference", need_state=False)
    assert_all_close(
        run_all(module, x, lengths, "fast", need_state=False), want, atol=1e-5, rtol=1e-5
    )


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
            assert fast.lstm_path(module.cells[0], x) == "python"
            got = run_all(module, x, lengths, "fast")
            run_all(module, x, lengths, "fast")
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "simulated: no compiler" in warnings[0].getMessage()
        assert "pure-PyTorch" in warnings[0].getMessage()
        assert build.status()["loaded"] is False
        assert_all_close(got, run_all(module, x, lengths, "reference"), atol=1e-10, rtol=1e-9)
    finally:
        build.reset()


def test_mode_from_environment_and_errors(monkeypatch):
    cell = variants.build("V", 3, 4).cells[0]
    x = torch.zeros(2, 1, 3)
    monkeypatch.setenv(fast.ENV, "reference")
    assert fast.mode() == "reference" and fast.lstm_path(cell, x) == "reference"
    with fast.use("python"):  # an explicit use() wins over the environment
        assert fast.lstm_path(cell, x) == "python"
    monkeypatch.setenv(fast.ENV, "turbo")
    with pytest.raises(ValueError, match="ODYSSEY_CELLS must be one of fast, python, reference"):
        fast.mode()
    with pytest.raises(ValueError, match="unknown cell path 'turbo'; known: fast, python"):
        with fast.use("turbo"):
            pass


def test_chung_gru_form_uses_the_reference_loop():
    module = variants.build_spec(variants.gru(reset_after=False), 3, 4)
    assert fast.gru_path(module.cells[0], torch.zeros(2, 1, 3)) == "reference"


def test_bench_cells_cli_json(capsys, compiled):
    from study.cli import main

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
        assert r["gflops"] == pytest.approx(r["gflop"] / r["ms"] * 1e3, rel=1e-2)
        assert r["peak_gflops"] > 0
        at_peak = r["gflop"] * 1e3 / r["peak_gflops"] / base_ms
        assert r["ratio_at_peak"] == pytest.approx(at_peak, rel=1e-2)
    assert all(r["ms"] > 0 and r["shape"] == "jsb32" for r in rows.values())
    assert out["env"]["threads"] == 1


@pytest.mark.parametrize("name", VARIANTS)
@BOTH
def test_off_cpu_paths_create_nothing_on_the_cpu(name, bidirectional):
    """What a CUDA device would run (python kernels, torch.gru), on the meta device: a tensor
    made on the CPU inside the path and mixed with the input fails here as it would on CUDA."""
    module = variants.build(name, 5, 7, bidirectional=bidirectional).to("meta")
    x = torch.randn(6, 3, 5, device="meta")
    cell = module.cells[0]
    path = fast.lstm_path(cell, x) if isinstance(cell, LSTMCell) else fast.gru_path(cell, x)
    assert path in ("python", "torch.gru")
    for mode in ("fast", "python", "reference"):
        with fast.use(mode):
            out, (h, c) = module(x, torch.tensor([6, 4, 2]), return_state=True)
            (out.sum() + h.sum()).backward()
        assert out.device.type == "meta" and out.shape == (6, 3, 14 if bidirectional else 7)
        assert all(p.grad is not None and p.grad.device.type == "meta" for p in module.parameters())
        module.zero_grad(set_to_none=True)


@pytest.mark.gpu
@pytest.mark.parametrize("name", VARIANTS)
@BOTH
def test_cuda_fast_path_equals_reference(name, bidirectional):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    torch.manual_seed(4)
    module = variants.build(name, 5, 7, bidirectional=bidirectional).double().cuda()
    x, lengths = data()
    x = x.cuda()
    cell = module.cells[0]
    path = fast.lstm_path(cell, x) if isinstance(cell, LSTMCell) else fast.gru_path(cell, x)
    assert path in ("python", "torch.gru")  # never the CPU-only compiled kernels
    want = run_all(module, x, lengths, "reference")
    assert_all_close(run_all(module, x, lengths, "fast"), want, atol=1e-10, rtol=1e-9)
