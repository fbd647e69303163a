"""The benchmarks' bookkeeping: the matrix-work count and the profiler's stderr filter.

The work count (`benchmarks.flops`) is checked against torch's own FlopCounterMode on the
reference loops, which run every matrix product as a separate, counted aten op.
"""

from __future__ import annotations

import os

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import variants
from benchmarks.cells import _without_profiler_noise
from benchmarks.flops import step_flops
from variants import VARIANTS, fast


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_step_flops_equal_torch_flop_counter_on_the_reference_loop(name, bidirectional):
    module = variants.build(name, 5, 7, bidirectional=bidirectional)
    t_len, batch = 6, 3
    x = torch.randn(t_len, batch, 5)
    with fast.use("reference"), FlopCounterMode(display=False) as counter:
        module(x, torch.full((batch,), t_len)).sum().backward()
    assert step_flops(module, t_len, batch) == counter.get_total_flops() > 0


def test_torch_modules_count_as_the_variants_with_their_equations():
    m, n, t_len, batch = 11, 9, 20, 4
    for bidirectional in (False, True):
        assert step_flops(torch.nn.LSTM(m, n, bidirectional=bidirectional), t_len, batch) == (
            step_flops(variants.build("NP", m, n, bidirectional=bidirectional), t_len, batch)
        )
        assert step_flops(torch.nn.GRU(m, n, bidirectional=bidirectional), t_len, batch) == (
            step_flops(variants.build("GRU", m, n, bidirectional=bidirectional), t_len, batch)
        )


def test_fgr_work_by_hand():
    # jsb128: M 88, N 128, B 16, T 120, one direction. nn.LSTM: W 4N x M, R 4N x N.
    # FGR adds the nine N x N gate-to-gate matrices.
    m, n, b, t = 88, 128, 16, 120
    lstm = 2 * b * (2 * t * 4 * n * m + (3 * t - 1) * 4 * n * n)
    fgr = lstm + 2 * b * (3 * t - 1) * 9 * n * n
    assert step_flops(torch.nn.LSTM(m, n), t, b) == lstm
    assert step_flops(variants.build("FGR", m, n), t, b) == fgr
    assert round(fgr / lstm, 3) == 2.542  # FGR cannot run below ~2.5x at equal efficiency


def test_step_flops_refuses_what_it_cannot_count():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.U = torch.nn.Parameter(torch.zeros(3, 3))

    with pytest.raises(ValueError, match=r"don't know how 'U' \(3, 3\) is used; known matrices"):
        step_flops(Odd(), 5, 2)
    with pytest.raises(ValueError, match="steps and batch must be >= 1"):
        step_flops(torch.nn.LSTM(2, 3), 0, 2)


def test_profiler_noise_is_dropped_and_other_stderr_kept(capfd):
    with _without_profiler_noise():
        os.write(
            2,
            b"USDT:2026-11-25 12:50:04 536:536 SyncActivityProfilerHandler.cpp:52] "
            b"profiler_start\n",
        )
        os.write(
            2,
            b"[W1125 CPUAllocator.cpp:245] Memory block of unknown size was allocated "
            b"before the profiling started, profiler results will not include it\n",
        )
        os.write(2, b"a real error\n")
        os.write(
            2,
            b"USDT:2026-11-25 12:50:04 536:536 SyncActivityProfilerHandler.cpp:59] profiler_stop\n",
        )
    err = capfd.readouterr().err
    assert err == "a real error\n"


@pytest.mark.parametrize("path", ["fast", "reference"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_bench_labels_name_the_implementation_that_ran(monkeypatch, path, bidirectional):
    """`bench cells` labels each row with what its step ran; checked against spies on every
    implementation (PyTorch's fused kernels, our kernels through their autograd functions, the
    reference loops), for every variant."""
    from benchmarks.cells import _step_fn, _wrap, impl_of
    from variants.gru_cell import GRUCell
    from variants.lstm_cell import LSTMCell

    ran: list[str] = []

    def spy(label, fn):
        def wrapper(*args, **kwargs):
            ran.append(label(args) if callable(label) else label)
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(torch, "lstm", spy("torch.lstm", torch.lstm))
    monkeypatch.setattr(torch, "gru", spy("torch.gru", torch.gru))
    for cls in (fast.LSTMSequence, fast.GRUSequence):
        monkeypatch.setattr(cls, "apply", spy("compiled", cls.apply))
    for cls in (LSTMCell, GRUCell):
        monkeypatch.setattr(cls, "scan_reference", spy("reference", cls.scan_reference))
    t_len, batch = 5, 2
    x = torch.randn(t_len, batch, 3)
    lengths = torch.full((batch,), t_len)
    for name in [n for n, s in VARIANTS.items() if s.kind in ("lstm", "gru")]:
        module = variants.build(name, 3, 4, bidirectional=bidirectional)
        step = _wrap(_step_fn(module, x, lengths), path)
        ran.clear()
        label = impl_of(step)
        assert label == "+".join(dict.fromkeys(ran)), name
        assert len(ran) == (2 if bidirectional else 1)
    if path == "fast":  # on CPU: NP and the GRU in our kernels, not torch's fused ones
        for name, want in (("NP", "compiled"), ("GRU", "compiled")):
            step = _wrap(_step_fn(variants.build(name, 3, 4), x, lengths), path)
            if want == "compiled" and fast.build.load() is None:
                want = "reference"  # the extension could not be built here
            assert impl_of(step) == want


@pytest.mark.parametrize(("rate", "above"), [(1e-3, True), (1e9, False)])
def test_rows_say_when_they_beat_the_reference_rate(monkeypatch, rate, above):
    from benchmarks import cells

    monkeypatch.setattr(cells, "peak_gflops", lambda device: rate)
    rows = cells.run(["NP"], ["jsb32"], repeats=1, memory=False)
    assert [r["variant"] for r in rows] == ["nn.LSTM", "NP"]
    assert all(r["above_peak"] is above and r["peak_gflops"] == round(rate, 1) for r in rows)
    assert rows[1]["impl"] == ("compiled" if fast.build.load() is not None else "reference")


def test_reference_rate_is_the_best_of_its_shapes(monkeypatch):
    from benchmarks import flops

    rates = flops.gemm_rates("cpu", shapes=((64, 64, 64), (16, 32, 128)), repeats=1)
    assert set(rates) == {(64, 64, 64), (16, 32, 128)} and all(r > 0 for r in rates.values())
    monkeypatch.setattr(
        flops, "gemm_rates", lambda device, repeats: {(1, 1, 1): 3.0, (2, 2, 2): 7.0}
    )
    assert flops.peak_gflops("cpu") == 7.0


def test_the_single_trial_baseline_spreads_over_the_hidden_sizes():
    from benchmarks.packs import paper_sample, spread

    sample = paper_sample(41, seed=0)
    sizes = sorted(h["hidden_size"] for h in sample)
    assert [h["hidden_size"] for h in spread(sample, 3)] == [sizes[0], sizes[20], sizes[40]]
    assert spread(sample, 80) is sample and len(spread(sample, 1)) == 1
