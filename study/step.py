"""One training step of a pack (`study.pack`) and the per-slot state it keeps on the device.

Each live slot's loss is tested for finiteness on the device: `DeviceSlots.bad` marks a slot
whose loss was not finite (now or earlier this epoch), `bad_value` holds its first non-finite
loss, `loss_total` its summed training loss (float64: the same additions as Python's floats).
Backward runs on every live slot's loss, with gradient 1 for a good slot and 0 for a bad one, and
the optimizer leaves a bad slot exactly as it was (frozen: its parameters and state untouched, so
nothing of it reaches another slot and its weights are those of the step it diverged in). The host
learns of a bad slot when it reads the flags (`read`, the engine's one door for host reads): in
every step, once its losses are known, on the CPU, where a read costs nothing and a diverged trial
stops at once (and a step without one skips the freezing); once per epoch elsewhere, where a read
stalls the launch queue, so that a step reads nothing (`POLICY`). Either way a trial's numbers
are the same (tests/test_engine_reads.py).

On CUDA the step's inputs go to the device from pinned memory without blocking, and its input
noise is drawn there in one launch for the pack (`study.noise`).
"""

from __future__ import annotations

from typing import Any

import torch

from study.noise import PackNoise
from tasks.base import Batch, Task

POLICIES = ("step", "epoch")
# when the engine reads the slots' flags: None chooses by device ("step" on the CPU, "epoch"
# elsewhere); tests force one. Not a training setting: it changes no number of any trial.
POLICY: str | None = None
reads = 0  # host reads through `read` since the process started (tests count them)


def policy(device: torch.device) -> str:
    """When flags are read: "step" (in every step) or "epoch" (once, at the epoch's end)."""
    chosen = POLICY or ("step" if device.type == "cpu" else "epoch")
    if chosen not in POLICIES:
        raise ValueError(f"read policy {chosen!r}; valid: {', '.join(POLICIES)}")
    return chosen


def read(values: torch.Tensor) -> list:
    """The engine's host reads, all through here: `values` on the host, as a (nested) list."""
    global reads
    reads += 1
    return values.cpu().tolist()


def host_tensor(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A zeroed host tensor to fill and send to `device`: pinned when that is CUDA (the caching
    host allocator reuses the memory once the copy that used it is done)."""
    return torch.zeros(shape, dtype=dtype, pin_memory=device.type == "cuda")


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`t` on `device`; from a CUDA host, without waiting (pinned memory, or pageable memory,
    which the driver stages before the call returns)."""
    return t.to(device, non_blocking=device.type == "cuda")


def batch_to(batch: Batch, device: torch.device, x: torch.Tensor | None = None) -> Batch:
    """`batch` on `device` (its lengths stay on the host), copied without waiting from pinned
    memory on CUDA; `x`: its inputs there already."""

    def move(t: torch.Tensor) -> torch.Tensor:
        return to_device(t.pin_memory() if device.type == "cuda" else t, device)

    x = move(batch.x) if x is None else x
    return Batch(x, batch.lengths, move(batch.targets), batch.target_lengths)


class DeviceSlots:
    """Per slot, on the device: `bad` (K,) bool, `bad_value` (K,) float64 (its first non-finite
    loss), `loss_total` (K,) float64 (summed losses of its good steps this epoch)."""

    def __init__(self, k: int, device: torch.device) -> None:
        self.bad = torch.zeros(k, dtype=torch.bool, device=device)
        self.bad_value = torch.zeros(k, dtype=torch.float64, device=device)
        self.loss_total = torch.zeros(k, dtype=torch.float64, device=device)
        self.device = device
        self._index: dict[tuple[int, ...], torch.Tensor] = {}

    def start_epoch(self) -> None:
        self.bad.zero_()
        self.bad_value.zero_()
        self.loss_total.zero_()

    def index(self, live: list[int]) -> torch.Tensor:
        """`live` as a device index (made once per set of live slots: it changes only when a
        trial finishes)."""
        key = tuple(live)
        if key not in self._index:
            self._index = {key: to_device(torch.tensor(live, dtype=torch.int64), self.device)}
        return self._index[key]

    def record(
        self, live: list[int], losses: list[torch.Tensor], sums: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        """Note the live slots' step: `losses` (per sequence) and `sums` (summed), 0-d each.
        Returns the gradient weights of `losses`: 1 for a good slot, 0 for a bad one."""
        idx = self.index(live)  # (L,)
        values = torch.stack([loss.detach() for loss in losses])  # (L,)
        was = self.bad.index_select(0, idx)
        now = ~torch.isfinite(values)
        first = torch.where(now & ~was, values.double(), self.bad_value.index_select(0, idx))
        self.bad_value.index_copy_(0, idx, first)
        bad = was | now
        self.bad.index_copy_(0, idx, bad)
        summed = torch.stack([s.detach() for s in sums]).double()  # (L,), as float(loss_sum)
        self.loss_total.index_add_(0, idx, torch.where(bad, 0.0, summed))
        return list((~bad).to(values.dtype).unbind(0))

    def flags(
        self, live: list[int], finite: torch.Tensor | None = None
    ) -> dict[int, tuple[bool, float, bool, float]]:
        """One read: {slot: (bad, its first bad loss, parameters finite, summed loss this
        epoch)} of the `live` slots; `finite` (K,) bool on the device, or None (not checked)."""
        if not live:
            return {}
        ok = torch.ones_like(self.bad) if finite is None else finite
        rows = [self.bad.double(), self.bad_value, ok.double(), self.loss_total]
        got = read(torch.stack(rows).index_select(1, self.index(live)))  # (4, L)
        cols = zip(*got, strict=True)
        return {s: (bool(c[0]), c[1], bool(c[2]), c[3]) for s, c in zip(live, cols, strict=True)}


def _batches(task: Task, data, slot, live, start, bs, noise: PackNoise) -> dict[int, Batch]:
    """Each live slot's minibatch (its own sequences), with its input noise where drawn on the
    host (the CPU: from the trial's own generator, at every presentation)."""
    batches = {}
    for s in live:
        st = slot[s]
        idx = st.order[start : start + bs]
        batch = task.collate([(data.inputs[i], data.targets[i]) for i in idx])  # (T_s, B, ...)
        std = st.trial.hparams["input_noise"]
        if std > 0 and not noise.on_device:
            batch.x = batch.x + std * torch.randn(batch.x.shape, generator=st.gen)
        batches[s] = batch
    return batches


def train_step(pack: Any, task: Task, data, slot, live, start, bs, state: DeviceSlots,
               noise: PackNoise, every_step: bool) -> dict[int, tuple] | None:  # fmt: skip
    """One minibatch of every live slot: its own sequences and noise, one forward and backward
    pass for the pack, one optimizer step with the bad slots frozen. `every_step` (policy "step"):
    the flags are read as soon as the losses are known (returned, `DeviceSlots.flags`), so a step
    without a bad slot skips the freezing; no live slot is bad when such a step starts. An
    optimizer that cannot freeze a slot (no `set_frozen`) gets a zero gradient for a bad slot
    (as if left out of backward), and where bad slots train on (policy "epoch") their parameters
    are put back after its step."""
    batches = _batches(task, data, slot, live, start, bs, noise)
    first = batches[live[0]]
    b, m = first.x.shape[1], first.x.shape[2]
    t_len = max(batch.x.shape[0] for batch in batches.values())
    x = host_tensor((pack.k, t_len, b, m), torch.get_default_dtype(), pack.device)  # (K, T, B, M)
    lengths = torch.ones(pack.k, b, dtype=torch.int64)  # (K, B), read by the model on the host
    for s, batch in batches.items():
        x[s, : batch.x.shape[0]] = batch.x
        lengths[s] = batch.lengths
    x = to_device(x, pack.device)
    if noise.on_device:  # every slot's noise in one launch, each from its own seed and counter
        noise.add(x, {s: batches[s].x.shape[0] for s in live})
    for s, batch in batches.items():  # the loss's view of its batch: x as the model saw it
        batches[s] = batch_to(batch, pack.device, x[s, : batch.x.shape[0]])
    can_freeze = callable(getattr(pack.opt, "set_frozen", None))
    restore = not can_freeze and not every_step
    was = state.bad.clone() if restore else None
    saved = [p.detach().clone() for p in pack.params] if restore else None
    if can_freeze:  # under "step" no live slot is bad yet (empty slots have zero rates)
        pack.opt.set_frozen(None if every_step else state.bad)
    pack.opt.look_ahead()
    logits = pack.model.forward_trials(x, lengths, live, pack.own_units)
    sums = [task.loss(out, batches[s]) for s, out in zip(live, logits, strict=True)]
    losses = [loss_sum / count for loss_sum, count in sums]  # summed over frames, per sequence
    weights = state.record(live, losses, [loss_sum for loss_sum, _ in sums])
    flags = state.flags(live) if every_step else None
    any_bad = flags is None or any(f[0] for f in flags.values())
    pack.opt.zero_grad()
    # each trial's gradient is its own loss's (nothing sums across trials); a bad one's is 0
    torch.autograd.backward(losses, grad_tensors=weights)
    if any_bad and can_freeze:
        pack.opt.set_frozen(state.bad)
    elif any_bad:
        with torch.no_grad():
            for p in pack.params:
                if p.grad is not None:
                    p.grad.copy_(torch.where(_rows(state.bad, p), 0.0, p.grad))
    pack.opt.step(pack.masks)
    if was is not None and saved is not None:
        with torch.no_grad():
            for p, before in zip(pack.params, saved, strict=True):
                p.copy_(torch.where(_rows(was, p), before, p))
    for s, (_, count) in zip(live, sums, strict=True):
        slot[s].seqs += count
    return flags


def _rows(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(K,) -> (K, 1, ..., 1), broadcasting over a parameter of `like`'s shape."""
    return mask.view(-1, *[1] * (like.dim() - 1))
