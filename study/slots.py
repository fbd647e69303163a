"""Placing one trial's parameters into a slot of a pack whose layer is wider than the trial.

Every parameter of a cell or of the output layer is made of blocks of hidden units along some of
its dimensions (`hidden_blocks()`: e.g. the LSTM's R `(G*N, N)` holds G blocks of N rows and one
block of N columns). A trial of n < N units takes the first n units of every block; the rest of
the slot is zero (padding).
"""

from __future__ import annotations

import torch

from study.model import SequenceModel
from variants.contract import split_units, unit_index


def param_blocks(model: SequenceModel) -> list[tuple[int | None, ...]]:
    """Per parameter of `model` (in order): how many blocks of units each dimension holds."""
    by_name: dict[str, tuple[int | None, ...]] = {}
    for prefix, module in model.named_modules():
        if hasattr(module, "hidden_blocks") and module is not model.out:
            for name, blocks in module.hidden_blocks().items():
                by_name[f"{prefix}.{name}"] = blocks
    for name, blocks in model.out.hidden_blocks(model.rnn.directions).items():
        by_name[f"out.{name}"] = blocks
    return [by_name[name] for name, _ in model.named_parameters()]


@torch.no_grad()
def copy_into_slot(
    slot: torch.Tensor,
    trial: torch.Tensor,
    blocks: tuple[int | None, ...],
    units: int,
    mask: torch.Tensor | None = None,
) -> None:
    """Copy one trial's parameter (`units` units per block) into its slot, zero the rest; set
    `mask` (the slot's) to 1 on the trial's entries and 0 on the padding."""
    index = unit_index(blocks, units)
    slot.zero_()
    split_units(slot, blocks)[index] = split_units(trial, blocks)
    if mask is not None:
        mask.zero_()
        split_units(mask, blocks)[index] = 1.0


@torch.no_grad()
def take_from_slot(slot: torch.Tensor, blocks: tuple[int | None, ...], units: int) -> torch.Tensor:
    """The trial's own parameter (`units` units per block) out of its slot, as a copy."""
    shape = [size if b is None else b * units for size, b in zip(slot.shape, blocks, strict=True)]
    return split_units(slot, blocks)[unit_index(blocks, units)].reshape(shape).clone()
