"""Gaussian input noise for every slot of a pack in one Triton launch (counter-based Philox,
`tl.randn(seed, offset)`).

Slot k of `x (K, T, B, M)` gets `x + std_k * z` on its first `n_k = T_k * B * M` elements (its own
steps, t < T_k), with z the standard normals of Philox at `(seed_k, offset_k + e)` for its element
e of its own `(T_k, B, M)` layout. A trial's noise therefore depends only on its seed, on how many
numbers it drew before (`offset_k`, advanced by the caller) and on its own shape: never on its
slot, its neighbours or the pack's padded T. Slots with `n_k = 0` are left as they are.

This module imports Triton: `study.noise` imports it (through `triton_launch.kernels`) only when
noise is drawn on the device.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from variants.fast.triton_launch import launch

BLOCK = 1024  # elements per program


@triton.jit
def _add_noise(x, meta, std, per_slot, BLOCK: tl.constexpr):
    k = tl.program_id(0).to(tl.int64)
    seed = tl.load(meta + 3 * k)  # int64: seed, first offset, elements to draw
    offset = tl.load(meta + 3 * k + 1)
    n = tl.load(meta + 3 * k + 2)
    e = tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    if tl.program_id(1).to(tl.int64) * BLOCK >= n:
        return
    mask = e < n
    z = tl.randn(seed, offset + e)
    s = tl.load(std + k)
    ptr = x + k * per_slot + e
    v = tl.load(ptr, mask=mask, other=0.0)
    tl.store(ptr, v + s * z, mask=mask)


def add_noise(x: torch.Tensor, meta: torch.Tensor, std: torch.Tensor) -> None:
    """In place: `x (K, T, B, M)` float32, contiguous; `meta (K, 3)` int64 (seed, offset, n) and
    `std (K,)` float32 on x's device."""
    if not x.is_contiguous():
        raise ValueError("add_noise needs a contiguous x")
    k = x.shape[0]
    per_slot = x[0].numel() if k else 0
    if per_slot == 0:
        return
    grid = (k, triton.cdiv(per_slot, BLOCK))
    launch(_add_noise, grid, x, meta, std, per_slot, BLOCK=BLOCK)
