"""The training engine: K trials of one (task, variant) trained in lockstep in one process; a
single trial (`study.train.train`) is a pack of one through the same code.

The protocol (Greff et al. 2017, section III), per trial: minibatches of
`batch_size` sequences (1 in the paper), reshuffled every epoch with the trial's generator; fresh
Gaussian input noise (std `input_noise`) at every presentation during training only; loss = the
task's summed loss / number of sequences in the minibatch; pylstm's Nesterov step with the
learning rate scaled by (1 - momentum) (`study.optim`); validation and test evaluated after every
epoch as corpus-level metrics; early stopping after `patience` epochs without a validation
improvement, at most `max_epochs`; the reported test metric is the one at the best validation
epoch. A NaN / inf loss or parameter ends the trial; it is failed (with the reason) unless an
earlier epoch gave a finite validation metric, whose result it then keeps (status complete, the
divergence noted in `error`).

A pack: the layer and the output layer carry a trial dimension (`K` slots, see
`variants.lstm_cell`); every training step runs the next minibatch of every trial through one
forward and backward pass and one fused (`foreach`) optimizer step. Nothing of a trial is shared:
- its initial weights are drawn from its own generator into a model of its own size, then copied
  into its slot; the pack's layer has the largest size of its queue, and a smaller trial's extra
  units are zero padding (`cell.units` tells the kernels where its real units end);
- its learning rate, momentum, input noise, data order, early stopping and divergence (a NaN in
  one trial never reaches another).
On the CPU (numerics "cpu-compiled", `variants.fast.numerics`) a trial computes on its own units
and steps only: the compiled kernels copy each trial's real part into compact buffers, the output
layer and the loss run per trial on fresh copies of its own units, evaluation batches are the same
whatever the pack, so a trial's every number is bitwise what it is alone (tests/test_engine.py).
Where a spec runs in the reference loop on the CPU, trials run one at a time, each at its own
size, which keeps that true. On CUDA the pack is batched over its padded width (one launch per
operation and step for all trials, TF32 off): equal to alone within float rounding only.

Slots: a trial that stops is yielded as soon as the host knows (below) and frees its slot; the
next trial of the queue takes it at the start of the next pack epoch, so the trials stay in phase
(every trial's epoch has the same number of steps) and one evaluation pass serves all of them.

What the host reads, and when (`study.step`: every read goes through `study.step.read`): each
slot's loss is checked on the device; a slot whose loss is not finite gets a zero gradient and is
frozen (the optimizer leaves it as it is) until the host reads the flags: in every step, as soon
as its losses are known, on the CPU (a diverged trial stops at once; a step without one skips the
freezing); once at the end of the epoch elsewhere (one read of every slot's flags, its
parameters' finiteness and its summed training loss). Evaluation reads each split's error sums
once (`study.evaluation`). A trial's numbers do not depend on when the flags are read. On CUDA a
step's inputs are copied from pinned memory without waiting, and its input noise is drawn on the
device (`study.noise`).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import torch

import variants
from study import optimizers, step
from study.config import TrainConfig
from study.evaluation import evaluate_pack
from study.model import SequenceModel, build_model, count_parameters, hidden_per_direction
from study.noise import PackNoise
from study.slots import copy_into_slot, param_blocks, take_from_slot
from tasks.base import Splits, Task
from variants import fast


@dataclass(frozen=True)
class PackTrial:
    """One trial of a pack: an opaque `key` (given back to the callbacks), its hyperparameters
    (hidden_size, learning_rate, momentum, input_noise) and its torch seed (or generator)."""

    key: Any
    hparams: dict[str, Any]
    seed: int | torch.Generator


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
    seqs: int = 0  # sequences trained this epoch (its summed loss is on the device)
    order: list[int] = field(default_factory=list)


OnEpoch = Callable[[Any, dict[str, Any]], None]
OnFinish = Callable[[Any, dict[str, torch.Tensor]], None]


def better(a: float, b: float, direction: str) -> bool:
    """Whether metric `a` beats `b` in `direction` ("minimize" or "maximize")."""
    return a < b if direction == "minimize" else a > b


def pack_hidden(trials: list[PackTrial], meaning: str, bidirectional: bool) -> int:
    """The hidden size of a pack's layer: the largest of its trials'."""
    return max(
        hidden_per_direction(int(t.hparams["hidden_size"]), meaning, bidirectional) for t in trials
    )


class _Pack:
    """The model of K slots, its optimizer, and (off the compiled path) the padding masks."""

    def __init__(
        self,
        task: Task,
        variant: Any,
        hidden: int,
        slots: int,
        device: torch.device,
        own: bool,
        settings: TrainConfig | None = None,
    ):
        settings = settings or TrainConfig()
        self.task, self.hidden, self.k, self.device = task, hidden, slots, device
        self.own_units = own  # each trial computes on its own units (the compiled kernels)
        self.layers = {"layers": settings.layers, "residual": settings.residual}
        self.model: SequenceModel = build_model(
            task, variant, hidden, torch.Generator().manual_seed(0), trials=slots, **self.layers
        ).to(device)
        self.params = list(self.model.parameters())
        self.blocks = param_blocks(self.model)
        with torch.no_grad():
            for p in self.params:
                p.zero_()
        self.opt = optimizers.get(settings.optimizer).for_trials(self.params, slots)
        # where a trial computes over the padded width (the reference loops), its padded units'
        # gradients are masked to zero; on its own units (compiled) they are zero already
        self.masks: list[torch.Tensor] | None = None

    @torch.no_grad()
    def place(self, s: int, single: SequenceModel, hidden: int, hparams: dict[str, Any]) -> None:
        """Put a single trial's model into slot `s` (padded with zero units); its optimizer and
        any module that asks for the trial's hyperparameters (`set_hyperparameters(slot,
        hparams)`, e.g. a plug-in cell reading a dimension of `space.extra`) get them."""
        if hidden < self.hidden and self.masks is None and not self.own_units:
            self.masks = [torch.ones_like(p) for p in self.params]
        for k, (p, src) in enumerate(zip(self.params, single.parameters(), strict=True)):
            mask = self.masks[k][s] if self.masks is not None else None
            copy_into_slot(p[s], src[0], self.blocks[k], hidden, mask)
        for module in self.model.modules():
            if isinstance(getattr(module, "units", None), torch.Tensor):  # the compiled cells
                module.units[s] = hidden
            if hasattr(module, "set_hyperparameters"):
                module.set_hyperparameters(s, hparams)
        self.opt.set_hparams(s, hparams)

    def weights(self, s: int, hidden: int) -> dict[str, torch.Tensor]:
        """Slot `s`'s parameters as its trial's own model holds them (without the trial dim)."""
        names = [name for name, _ in self.model.named_parameters()]
        return {
            name: take_from_slot(p[s], blocks, hidden)
            for name, p, blocks in zip(names, self.params, self.blocks, strict=True)
        }

    @torch.no_grad()
    def clear(self, s: int) -> None:
        for p in self.params:
            p[s].zero_()
        self.opt.clear_trial(s)

    @torch.no_grad()
    def finite(self) -> torch.Tensor:
        """(K,) bool on the device: slot k's parameters are all finite."""
        ok = torch.ones(self.k, dtype=torch.bool, device=self.device)
        for p in self.params:
            ok &= torch.isfinite(p).flatten(1).all(1)
        return ok


@contextmanager
def _no_tf32(device: torch.device) -> Iterator[None]:
    """TF32 off on CUDA while training: a trial's float32 numbers must not depend on which
    matrix products its pack makes TF32-eligible."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def train_pack(
    task: Task,
    variant: Any,
    trials: list[PackTrial],
    splits: Splits,
    settings: TrainConfig,
    slots: int,
    on_epoch: OnEpoch | None = None,
    device: str | torch.device = "cpu",
    hidden_size_meaning: str = "per_direction",
    on_finish: OnFinish | None = None,
) -> Iterator[tuple[Any, dict[str, Any]]]:
    """Train `trials` with at most `slots` of them at a time; yields `(key, result)` for each
    trial as soon as it finishes; per-epoch metrics go to `on_epoch(key, m)`. `result`: `status`
    ('complete' | 'failed'), `error`, `n_params`, `epochs`, `best_epoch`, `val_metric`,
    `test_metric`, `train_loss` (all at the best validation epoch), `test_extra` (other test
    metrics at that epoch), `wall_s`, `device`, `numerics`, `hidden_per_direction`,
    `started_at` (when the trial took its slot). `on_finish(key, weights)` gets a finished
    trial's final parameters (named as in its own model, `study.model.build_model`)."""
    if not trials:
        return
    torch.set_num_threads(settings.threads)
    device = torch.device(device)
    spec = variants.get_spec(variant) if isinstance(variant, str) else variant
    numerics = fast.numerics(spec, device)
    own = numerics == "cpu-compiled" and settings.layers == 1
    k = max(1, min(slots, len(trials)))
    if device.type == "cpu" and not own:
        # the reference loops, and a stack's upper layers (whose inputs are the padded outputs
        # below), compute over a pack's padded width: one trial at a time
        k = 1
    # one slot: each trial in a pack of its own size (nothing padded, whatever the path)
    queues = [[t] for t in trials] if k == 1 else [trials]
    with _no_tf32(device):
        for queue in queues:
            yield from _run(
                task, variant, queue, splits, settings, k, on_epoch, device,
                hidden_size_meaning, numerics, on_finish,
            )  # fmt: skip


def _run(
    task, variant, trials, splits, settings, k, on_epoch, device, meaning, numerics, on_finish
) -> Iterator[tuple[Any, dict[str, Any]]]:
    """The loop of one pack of `k` slots over the queue `trials`."""
    hidden = pack_hidden(trials, meaning, task.bidirectional)
    own = numerics == "cpu-compiled" and settings.layers == 1
    pack = _Pack(task, variant, hidden, k, device, own, settings)
    state, noise = step.DeviceSlots(k, device), PackNoise(k, device)
    every_step = step.policy(device) == "step"
    queue = deque(trials)
    slot: list[_Slot | None] = [None] * k
    train_set = splits["train"]
    n, bs = len(train_set), settings.batch_size
    metric, direction = task.metric, task.metric_direction
    ready: list[tuple[Any, dict[str, Any]]] = []  # finished, not yet yielded

    def finish(s: int, error: str | None) -> None:
        st = slot[s]
        assert st is not None
        wall = st.share_s  # so that summed wall_s is core time
        result = trial_result(
            st.best, error, st.epoch, st.n_params, wall, str(device), st.hidden, metric
        )
        result.update(numerics=numerics, started_at=st.started_at)
        if on_finish is not None:
            on_finish(st.trial.key, pack.weights(s, st.hidden))
        slot[s] = None
        pack.clear(s)
        ready.append((st.trial.key, result))

    def live() -> list[int]:
        return [s for s in range(k) if slot[s] is not None]

    def check(finite: torch.Tensor) -> dict[int, float]:
        """One read of the live slots' flags at an epoch's end: a bad loss not read yet, then
        bad weights finish a trial. Returns the others' summed training losses."""
        totals = {}
        for s, (bad, value, ok, total) in state.flags(live(), finite).items():
            if bad:
                finish(s, f"training loss became {value} in epoch {slot[s].epoch}")
            elif not ok:
                finish(s, f"parameters became NaN/inf in epoch {slot[s].epoch}")
            else:
                totals[s] = total
        return totals

    while True:
        for s in range(k):  # refill at the pack's epoch boundary: the trials stay in phase
            if slot[s] is None and queue:
                trial = queue.popleft()
                h = hidden_per_direction(
                    int(trial.hparams["hidden_size"]), meaning, task.bidirectional
                )
                gen = trial.seed
                if not isinstance(gen, torch.Generator):
                    gen = torch.Generator().manual_seed(int(gen))
                single = build_model(task, variant, h, gen, **pack.layers)  # its own init
                pack.place(s, single, h, trial.hparams)
                noise.take(s, gen, trial.hparams)
                slot[s] = _Slot(trial, h, gen, count_parameters(single))
        if not live():
            return
        t_epoch = time.perf_counter()
        state.start_epoch()
        for s in live():
            st = slot[s]
            st.epoch += 1
            st.seqs = 0
            st.order = torch.randperm(n, generator=st.gen).tolist()
        pack.model.train()
        for start in range(0, n, bs):
            if not live():
                break
            flags = step.train_step(
                pack, task, train_set, slot, live(), start, bs, state, noise, every_step
            )
            for s, (bad, value, _, _) in (flags or {}).items():
                if bad:
                    finish(s, f"training loss became {value} in epoch {slot[s].epoch}")
            if flags is not None:
                yield from ready
                ready.clear()
        totals = check(pack.finite())  # a bad loss not read yet, then the parameters
        yield from ready
        ready.clear()
        if not live():
            continue
        val = evaluate_pack(pack, splits["valid"], settings.eval_batch_size, live())
        test = evaluate_pack(pack, splits["test"], settings.eval_batch_size, live())
        seconds = (time.perf_counter() - t_epoch) / len(live())
        for s in live():
            st = slot[s]
            st.share_s += seconds
            train_loss = totals[s] / max(st.seqs, 1)
            if not math.isfinite(val[s][metric]):
                finish(s, f"validation {metric} became {val[s][metric]} in epoch {st.epoch}")
                continue
            if st.best["epoch"] == 0 or better(val[s][metric], st.best["val"], direction):
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


def epoch_metrics(
    epoch: int, train_loss: float, val: dict, test: dict, seconds: float
) -> dict[str, Any]:
    """One epoch's flat metrics dict, as the `on_epoch` / `report` callbacks get it."""
    return {
        "epoch": epoch,
        "train/loss": train_loss,
        **{f"val/{k}": v for k, v in val.items()},
        **{f"test/{k}": v for k, v in test.items()},
        "time_s": seconds,
    }


def trial_result(
    best: dict[str, Any],
    error: str | None,
    epochs: int,
    n_params: int,
    wall_s: float,
    device: str,
    hidden: int,
    metric: str,
) -> dict[str, Any]:
    """A finished trial's result from its best epoch (`epoch`, `val`, `test` metrics,
    `train_loss`) and the error that ended it, if any. Diverging after a good epoch keeps that
    epoch's result (as early stopping on validation would); a trial fails only when no epoch
    produced a finite validation metric."""
    failed = error is not None and best["epoch"] == 0
    if error is not None and not failed:
        error = f"{error}; kept the best epoch {best['epoch']}"
    return {
        "status": "failed" if failed else "complete",
        "error": error,
        "n_params": n_params,
        "epochs": epochs,
        "best_epoch": best["epoch"],
        "val_metric": math.nan if failed else best["val"],
        "test_metric": math.nan if failed else best["test"].get(metric, math.nan),
        "train_loss": math.nan if failed else best["train_loss"],
        "test_extra": {} if failed else {k: v for k, v in best["test"].items() if k != metric},
        "wall_s": wall_s,
        "device": device,
        "hidden_per_direction": hidden,
    }
