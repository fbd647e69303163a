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
