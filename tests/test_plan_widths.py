"""Packs by width on CUDA (`study.plan`): the padding-waste arithmetic on hand-computed cases, and
that CPU packing is unchanged."""

from __future__ import annotations

from collections import deque

import pytest

from study import plan
from study.record import Pending


def test_padding_waste_by_hand():
    # widths 100 and 50 in a layer of 100: (100^2 + 50^2) / (2 * 100^2) = 0.625 used
    assert plan.padding_waste([100, 50]) == pytest.approx(0.375)
    assert plan.padding_waste([200, 200]) == 0.0
    assert plan.padding_waste([]) == 0.0


def test_width_buckets_by_hand():
    widths = [20, 200, 190, 180, 100, 25]
    # 200, 190, 180: waste 1 - 108500 / 120000 = 0.096; adding 100 would make it 0.259 > 0.25;
    # 100 with 25: 0.469; 25 with 20: 1 - 1025 / 1250 = 0.18
    assert plan.width_buckets(widths, 0.25) == [[1, 2, 3], [4], [5, 0]]
    assert plan.width_buckets(widths, 0.25, most=2) == [[1, 2], [3], [4], [5, 0]]
    assert plan.width_buckets(widths, 1.0) == [[1, 2, 3, 4, 5, 0]]
    assert plan.width_buckets([], 0.25) == []
    for bucket in plan.width_buckets(widths, 0.1):
        assert plan.padding_waste([widths[k] for k in bucket]) <= 0.1


def _trials(sizes, variant="V"):
    return [Pending("jsb_chorales", variant, k, {"hidden_size": h}) for k, h in enumerate(sizes)]


def test_cuda_cuts_rounds_into_width_buckets_and_cpu_does_not():
    trials = _trials([20, 200, 190, 180, 100, 25])
    sizes = [
        [p.params["hidden_size"] for p in job]
        for job in plan.cut_into_packs(trials, 4, "per_direction", False, "cuda")
    ]
    assert sizes == [[20, 25], [100], [180, 190, 200]]
    cpu = plan.cut_into_packs(trials, 4, "per_direction", False)
    assert [[p.params["hidden_size"] for p in job] for job in cpu] == [[20, 25, 100, 180, 190, 200]]
    # a bucket larger than a job (PACK_QUEUE x pack trials) is cut into jobs
    many = plan.cut_into_packs(_trials([100] * 5), 1, "per_direction", False, "cuda")
    assert [len(j) for j in many] == [2, 2, 1]


def test_repack_on_cuda_takes_only_retried_trials_of_similar_width():
    first, near, narrow, wide = _trials([100, 95, 20, 200])
    other = _trials([100], variant="NP")[0]
    queue = deque([narrow, other, wide, near])
    width = plan.width_of("per_direction", False)
    assert plan.repack(first, queue, width) == [first, near]
    assert list(queue) == [narrow, other, wide]
    assert plan.repack(first, deque([narrow, other, near])) == [first, narrow, near]  # CPU
