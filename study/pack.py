"""Packed training: many trials of one (task, variant) trained in lockstep in one process.

Random search draws every trial's hyperparameters up front, so the trials of a (task, variant)
can share one process: the layer and the output layer carry a trial dimension (`K` slots, see
`variants.lstm_cell`), and every training step runs the next minibatch of every trial through
one batched forward and backward pass and one fused (`foreach`) optimizer step. Nothing of a
trial is shared with another; each keeps
- its initial weights: drawn exactly as `study.train` draws them, from its own generator, into a
  model of its own size, then copied into its slot;
- its hidden size: the pack's layer has the largest size of its queue; a smaller trial's extra
  units have zero weights whose gradients are masked to zero, so they output exactly 0 and add
  nothing to any real unit (FGR's gate recurrence and the output layer included);
- its learning rate, momentum, input noise, data order (its own shuffle and noise draws from its
  own generator), early stopping and divergence (a NaN in one trial never reaches another: the
  trials' arithmetic is separate, and a non-finite loss leaves the pack's summed loss).
So a trial in a pack gives the result it gives alone (`study.train.train`), up to float rounding
(tests/test_pack.py compares them epoch by epoch).

Slots: a trial that stops (early stopping, max epochs, divergence) is yielded at once (with the
dict `study.train.train` returns) and frees its slot; the next trial of the queue takes it at
the start of the next pack epoch. Every trial's epoch has the same number of steps, so the trials stay in phase and one
evaluation pass serves all of them. Empty slots are skipped by the compiled kernels.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import torch

from study.config import TrainConfig
from study.model import SequenceModel, build_model, count_parameters, hidden_per_direction
from study.train import _better, epoch_metrics, trial_result
from tasks.base import Splits, Task, split_metrics


@dataclass(frozen=True)
class PackTrial:
    """One trial of a pack: an opaque `key` (given back to the callbacks), its hyperparameters
    (hidden_size, learning_rate, momentum, input_noise) and its torch seed."""

    key: Any
    hparams: dict[str, Any]
    seed: int


@dataclass
class _Slot:
    trial: PackTrial
    hidden: int
    gen: torch.Generator
    n_params: int
    share_s: float = 0.0  # its share of the pack's time (each epoch's time / trials in it)
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    epoch: int = 0
    best: dict[str, Any] = field(
        default_factory=lambda: {"epoch": 0, "val": math.nan, "test": {}, "train_loss": math.nan}
    )
    loss_total: float = 0.0
    seqs: int = 0
    order: list[int] = field(default_factory=list)


OnEpoch = Callable[[Any, dict[str, Any]], None]
EVAL_ELEMENTS = 2**26  # off the CPU: the largest evaluation activation of a pack, in elements


def pack_hidden(trials: list[PackTrial], meaning: str, bidirectional: bool) -> int:
    """The hidden size of a pack's layer: the largest of its trials'."""
    return max(
        hidden_per_direction(int(t.hparams["hidden_size"]), meaning, bidirectional) for t in trials
    )


class _Pack:
    """The model of K slots, its masks and velocities, and the per-slot optimizer settings."""

    def __init__(
        self,
        task: Task,
        variant: str,
        hidden: int,
        slots: int,
        device: torch.device,
        layers: int = 1,
        residual: bool = False,
    ):
        self.task, self.hidden, self.k, self.device = task, hidden, slots, device
        self.model: SequenceModel = build_model(
            task, variant, hidden, torch.Generator().manual_seed(0), slots, layers, residual
        ).to(device)
        self.params = list(self.model.parameters())
        self.blocks = _param_blocks(self.model)
        with torch.no_grad():
            for p in self.params:
                p.zero_()
        self.velocity = [torch.zeros_like(p) for p in self.params]
        self.masks: list[torch.Tensor] | None = None  # made when a smaller trial enters
        self.mu = torch.zeros(slots, device=device)
        self.eps = torch.zeros(slots, device=device)  # (1 - mu) lr, pylstm's scaled rate
        self.mu_v = [self.mu.view(-1, *[1] * (p.dim() - 1)) for p in self.params]
        self.eps_v = [self.eps.view(-1, *[1] * (p.dim() - 1)) for p in self.params]

    @torch.no_grad()
    def place(self, s: int, single: SequenceModel, hidden: int, lr: float, mu: float) -> None:
        """Put a single trial's model into slot `s` (padded with zero units)."""
        if hidden < self.hidden and self.masks is None:
            self.masks = [torch.ones_like(p) for p in self.params]
        params = zip(self.params, self.velocity, single.parameters(), strict=True)
        for k, (p, v, src) in enumerate(params):
            p[s].zero_()
            v[s].zero_()
            index = _unit_index(self.blocks[k], hidden)
            _split(p[s], self.blocks[k])[index] = _split(src[0], self.blocks[k])
            if self.masks is not None:
                self.masks[k][s].zero_()
                _split(self.masks[k][s], self.blocks[k])[index] = 1.0
        self.mu[s] = mu
        self.eps[s] = (1.0 - mu) * lr

    @torch.no_grad()
    def clear(self, s: int) -> None:
        for p, v in zip(self.params, self.velocity, strict=True):
            p[s].zero_()
            v[s].zero_()
        self.mu[s] = 0.0
        self.eps[s] = 0.0

    @torch.no_grad()
    def look_ahead(self) -> None:
        """pylstm's Nesterov look-ahead for every slot: v <- mu v; theta <- theta + v."""
        torch._foreach_mul_(self.velocity, self.mu_v)
        torch._foreach_add_(self.params, self.velocity)

    @torch.no_grad()
    def step(self) -> None:
        """dv = eps g; v <- v - dv; theta <- theta - dv (padded units' gradients masked to 0)."""
        grads = [p.grad for p in self.params]
        if self.masks is not None:
            torch._foreach_mul_(grads, self.masks)
        dv = torch._foreach_mul(grads, self.eps_v)
        torch._foreach_sub_(self.velocity, dv)
        torch._foreach_sub_(self.params, dv)

    @torch.no_grad()
    def finite(self) -> torch.Tensor:
        """(K,) bool: slot k's parameters are all finite."""
        ok = torch.ones(self.k, dtype=torch.bool, device=self.device)
        for p in self.params:
            ok &= torch.isfinite(p).flatten(1).all(1)
        return ok.cpu()


def _param_blocks(model: SequenceModel) -> list[tuple[int | None, ...]]:
    """Per parameter of `model` (in order): how many blocks of units each dimension holds."""
    by_name: dict[str, tuple[int | None, ...]] = {}
    for prefix, module in model.named_modules():
        if hasattr(module, "hidden_blocks") and module is not model.out:
            for name, blocks in module.hidden_blocks().items():
                by_name[f"{prefix}.{name}"] = blocks
    for name, blocks in model.out.hidden_blocks(model.rnn.directions).items():
        by_name[f"out.{name}"] = blocks
    return [by_name[name] for name, _ in model.named_parameters()]


def _split(t: torch.Tensor, blocks: tuple[int | None, ...]) -> torch.Tensor:
    """View one trial's tensor with every dimension made of `b` unit blocks split into (b, units)."""
    shape: list[int] = []
    for size, b in zip(t.shape, blocks, strict=True):
        shape += [size] if b is None else [b, size // b]
    return t.view(shape)


def _unit_index(blocks: tuple[int | None, ...], units: int) -> tuple[slice, ...]:
    """Index of the first `units` units of every block (in a `_split` view)."""
    index: list[slice] = []
    for b in blocks:
        index += [slice(None)] if b is None else [slice(None), slice(0, units)]
    return tuple(index)


def eval_rows(device_type: str, trials: int, batch_size: int, longest: int, width: int) -> int:
    """Sequences per evaluation batch of a pack of `trials`: on the CPU the kernels run trial by
    trial, so a few rows each stay in cache (`batch_size` shared out); elsewhere one launch per
    operation and step serves all trials, so as many rows as keep the largest activation
    (trials x rows x `longest` steps x `width`) under EVAL_ELEMENTS, at most `batch_size`."""
    if device_type == "cpu":
        return max(1, batch_size // trials)
    return max(1, min(batch_size, EVAL_ELEMENTS // (trials * longest * width)))


@torch.no_grad()
def evaluate_pack(
    pack: _Pack, data, batch_size: int, active: torch.Tensor
) -> list[dict[str, float]]:
    """Corpus-level metrics of a split for every slot, in one pass over the split (all trials
    see the same sequences): sum of errors / sum of counts (or the task's `aggregate`), as
    `study.train.evaluate`."""
    task, k = pack.task, pack.k
    pack.model.eval()
    order = sorted(range(len(data)), key=lambda i: len(data.inputs[i]))  # less padding
    longest = max(len(x) for x in data.inputs)
    width = 4 * pack.hidden * pack.model.rnn.directions
    rows = eval_rows(pack.device.type, k, batch_size, longest, width)
    pairs: list[dict[str, list[tuple[float, float]]]] = [{} for _ in range(k)]
    for start in range(0, len(order), rows):
        idx = order[start : start + rows]
        batch = task.collate([(data.inputs[i], data.targets[i]) for i in idx]).to(pack.device)
        x = batch.x.unsqueeze(0).expand(k, *batch.x.shape)  # (K, T, B, M)
        lengths = batch.lengths.unsqueeze(0).expand(k, -1)
        logits = pack.model.forward_packed(x, lengths, active=active)  # (K, T, B, O)
        for s in torch.nonzero(active).flatten().tolist():
            for name, (e, c) in task.errors(logits[s], batch).items():
                pairs[s].setdefault(name, []).append((float(e), float(c)))
    return [split_metrics(task, d) for d in pairs]


def train_pack(
    task: Task,
    variant: str,
    trials: list[PackTrial],
    splits: Splits,
    settings: TrainConfig,
    slots: int,
    on_epoch: OnEpoch | None = None,
    device: str | torch.device = "cpu",
    hidden_size_meaning: str = "per_direction",
) -> Iterator[tuple[Any, dict[str, Any]]]:
    """Train `trials` with at most `slots` of them at a time; yields `(key, result)` for each
    trial as soon as it finishes (`result`: the dict `study.train.train` returns, plus
    `started_at`, when the trial took its slot); per-epoch metrics go to `on_epoch(key, m)`."""
    if not trials:
        return
    torch.set_num_threads(settings.threads)
    device = torch.device(device)
    k = max(1, min(slots, len(trials)))
    hidden = pack_hidden(trials, hidden_size_meaning, task.bidirectional)
    pack = _Pack(task, variant, hidden, k, device, settings.layers, settings.residual)
    queue = deque(trials)
    slot: list[_Slot | None] = [None] * k
    train_set = splits["train"]
    n, bs = len(train_set), settings.batch_size
    metric, direction = task.metric, task.metric_direction
    ready: list[tuple[Any, dict[str, Any]]] = []  # finished, not yet yielded

    def finish(s: int, error: str | None) -> None:
        st = slot[s]
        assert st is not None
        wall = st.share_s  # so that summed wall_s is core time, as for single trials
        result = trial_result(
            st.best, error, st.epoch, st.n_params, wall, str(device), st.hidden, metric
        )
        result["started_at"] = st.started_at
        slot[s] = None
        pack.clear(s)
        ready.append((st.trial.key, result))

    while True:
        for s in range(k):  # refill at the pack's epoch boundary: the trials stay in phase
            if slot[s] is None and queue:
                trial = queue.popleft()
                h = hidden_per_direction(
                    int(trial.hparams["hidden_size"]), hidden_size_meaning, task.bidirectional
                )
                gen = torch.Generator().manual_seed(int(trial.seed))
                single = build_model(  # exactly the single trial's init
                    task, variant, h, gen, layers=settings.layers, residual=settings.residual
                )
                pack.place(s, single, h, trial.hparams["learning_rate"], trial.hparams["momentum"])
                slot[s] = _Slot(trial, h, gen, count_parameters(single))
        live = [s for s in range(k) if slot[s] is not None]
        if not live:
            return
        t_epoch = time.perf_counter()
        for s in live:
            st = slot[s]
            st.epoch += 1
            st.loss_total, st.seqs = 0.0, 0
            st.order = torch.randperm(n, generator=st.gen).tolist()
        pack.model.train()
        for start in range(0, n, bs):
            live = [s for s in range(k) if slot[s] is not None]
            if not live:
                break
            _train_step(pack, task, train_set, slot, live, start, bs, finish)
            yield from ready
            ready.clear()
        finite = pack.finite()
        for s in [s for s in range(k) if slot[s] is not None]:
            if not bool(finite[s]):
                finish(s, f"parameters became NaN/inf in epoch {slot[s].epoch}")
        yield from ready
        ready.clear()
        live = [s for s in range(k) if slot[s] is not None]
        if not live:
            continue
        active = torch.zeros(k, dtype=torch.bool)
        active[live] = True
        val = evaluate_pack(pack, splits["valid"], settings.eval_batch_size, active)
        test = evaluate_pack(pack, splits["test"], settings.eval_batch_size, active)
        seconds = (time.perf_counter() - t_epoch) / len(live)
        for s in live:
            st = slot[s]
            st.share_s += seconds
            train_loss = st.loss_total / max(st.seqs, 1)
            if not math.isfinite(val[s][metric]):
                finish(s, f"validation {metric} became {val[s][metric]} in epoch {st.epoch}")
                continue
            if st.best["epoch"] == 0 or _better(val[s][metric], st.best["val"], direction):
                st.best = {"epoch": st.epoch, "val": val[s][metric], "test": test[s]}
                st.best["train_loss"] = train_loss
            if on_epoch is not None:  # the pack's epoch time, shared by its trials
                on_epoch(
                    st.trial.key, epoch_metrics(st.epoch, train_loss, val[s], test[s], seconds)
                )
            if st.epoch - st.best["epoch"] >= settings.patience or st.epoch >= settings.max_epochs:
                finish(s, None)
        yield from ready
        ready.clear()


def _train_step(pack: _Pack, task: Task, data, slot, live, start, bs, finish) -> None:
    """One minibatch of every live slot: its own sequences and noise, one forward and backward
    pass for the pack, one optimizer step. A slot whose loss is not finite is finished before
    the update (as `study.train` stops), without touching the others."""
    k = pack.k
    items, lengths_k = [], []
    for s in range(k):  # an empty slot repeats a live slot's sequences; its trial is skipped
        st = slot[s] if slot[s] is not None else slot[live[0]]
        idx = st.order[start : start + bs]
        items += [(data.inputs[i], data.targets[i]) for i in idx]
        lengths_k.append(max(len(data.inputs[i]) for i in idx))
    b = len(items) // k
    batch = task.collate(items)  # (T, K*B, ...): the slots' sequences side by side
    for s in live:  # fresh noise at every presentation, training only, from the trial's own draws
        noise = slot[s].trial.hparams["input_noise"]
        if noise > 0:
            t_s = lengths_k[s]
            batch.x[:t_s, s * b : (s + 1) * b] += noise * torch.randn(
                (t_s, b, batch.x.shape[2]), generator=slot[s].gen
            )
    batch = batch.to(pack.device)
    t_len = batch.x.shape[0]
    x = batch.x.view(t_len, k, b, -1).transpose(0, 1)  # (K, T, B, M)
    lengths = batch.lengths.view(k, b)
    active = torch.zeros(k, dtype=torch.bool)
    active[live] = True
    pack.look_ahead()
    logits = pack.model.forward_packed(x, lengths, active=active)  # (K, T, B, O)
    flat = logits.transpose(0, 1).reshape(t_len, k * b, -1)
    per_trial = task.sequence_loss(flat, batch).view(k, b).sum(1)  # (K,)
    ok = torch.isfinite(per_trial).cpu() & active
    values = per_trial.detach().cpu().tolist()
    # summed over the trials, each averaged over its sequences: trial k's gradient is its own
    loss = torch.where(ok.to(per_trial.device), per_trial, 0.0).sum() / b
    for p in pack.params:
        p.grad = None
    loss.backward()
    pack.step()
    for s in live:
        if not ok[s]:
            finish(s, f"training loss became {values[s] / b} in epoch {slot[s].epoch}")
        else:
            slot[s].loss_total += values[s]
            slot[s].seqs += b
