"""Each trial's Gaussian input noise in a pack (`study.pack`): fresh at every presentation,
training only, from the trial's own randomness.

On the CPU a slot's noise is drawn as it always was, with `torch.randn` from the trial's own
generator on its batch (`study.step`), so a trial's numbers are bitwise those of any earlier run.
On a GPU the whole pack's noise is one launch per step (`variants.fast.triton_noise`): a trial
draws one seed from its generator when it takes its slot, and its Philox counter advances on the
host by the numbers it drew (T_s * B * M a step), so its noise depends on its seed, draws and
shape only, never on its slot, its neighbours or the pack's padded length. Without Triton each
slot draws from a CUDA generator of its own (K launches a step; logged once).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from variants.fast import triton_launch

# where noise is drawn: None chooses by device (the host on the CPU, the device elsewhere); tests
# force it. Not a training setting: on the CPU it is always the host.
ON_DEVICE: bool | None = None
SEED_LIMIT = 2**62  # a trial's Philox seed is drawn below this from its generator
log = logging.getLogger(__name__)
_warned: set[str] = set()


class PackNoise:
    """The noise state of a pack's K slots on `device`: per slot a seed and a counter (host
    integers) and its std."""

    def __init__(self, k: int, device: torch.device) -> None:
        self.k, self.device = k, device
        self.on_device = device.type != "cpu" if ON_DEVICE is None else ON_DEVICE
        self.seed = [0] * k
        self.offset = [0] * k
        self.std = [0.0] * k
        self.kernel = self.on_device and triton_launch.available()
        if self.on_device and device.type == "cpu" and not triton_launch.interpreting():
            self.kernel = False  # Triton runs CPU tensors only under its interpreter
        self.gens: dict[int, torch.Generator] = {}
        if self.on_device and not self.kernel and "generators" not in _warned:
            _warned.add("generators")
            log.warning(
                "%s; input noise is drawn per slot meanwhile (one launch per trial and step)",
                triton_launch.INSTALL_HINT,
            )

    def take(self, s: int, gen: torch.Generator, hparams: dict[str, Any]) -> None:
        """A trial takes slot `s`: its std and, on the device, its seed (from its generator)."""
        self.std[s] = float(hparams["input_noise"])
        self.offset[s] = 0
        if not self.on_device or self.std[s] <= 0:
            return  # the host draws from `gen` itself, as it always did
        self.seed[s] = int(torch.randint(0, SEED_LIMIT, (), generator=gen))
        if not self.kernel:
            self.gens[s] = torch.Generator(self.device).manual_seed(self.seed[s])

    def add(self, x: torch.Tensor, steps: dict[int, int]) -> None:
        """Add each slot's noise to `x (K, T, B, M)` (on the device) in place: slot s (a key
        of `steps`, its own length T_s) on its first T_s steps."""
        _, _, b, m = x.shape
        drawn = {s: t * b * m for s, t in steps.items() if self.std[s] > 0}
        if not drawn:
            return
        if self.kernel:
            meta = torch.zeros(self.k, 3, dtype=torch.int64, pin_memory=x.is_cuda)  # (K, 3)
            std = torch.zeros(self.k, dtype=x.dtype, pin_memory=x.is_cuda)  # (K,)
            for s, n in drawn.items():
                meta[s, 0], meta[s, 1], meta[s, 2] = self.seed[s], self.offset[s], n
                std[s] = self.std[s]
            nb = x.is_cuda
            triton_launch.kernels("triton_noise").add_noise(
                x, meta.to(x.device, non_blocking=nb), std.to(x.device, non_blocking=nb)
            )
        else:
            for s in drawn:
                z = torch.randn((steps[s], b, m), generator=self.gens[s], device=x.device)
                x[s, : steps[s]] += self.std[s] * z
        for s, n in drawn.items():
            self.offset[s] += n
