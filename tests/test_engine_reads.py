"""The engine reads the device only where its read policy says (`study.step`), and its numbers are
those it always gave.

- Every result field, every epoch's metrics and the final weights of short trials (input noise,
  divergence in epoch 1 and mid-epoch 2, a queue refilling slots, a stack, Adam) equal, bitwise,
  the numbers main's engine gave at commit 11b1a75 (tests/data/engine_reference.json, written by
  tests/engine_reference.py), reading after every step ("step", the CPU's policy) and once an
  epoch ("epoch", the GPU's).
- A bad slot is frozen: the optimizers leave its rows exactly as they are while the others' update
  is unchanged, even with NaN gradients in its rows; trained on past its divergence (policy
  "epoch"), it ends with the weights of the step it diverged in and its neighbour equals its
  single run.
- The number of host reads of an epoch does not grow with its steps under "epoch".
- On CUDA (`gpu`), training steps make no synchronizing call at all.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from engine_reference import CASES, FIXTURE, run_case

import tasks
from study import noise, step
from study.config import TrainConfig
from study.optim import NesterovStep
from study.optimizers import Adam
from study.pack import PackTrial, train_pack
from tasks.base import SequenceSet

JSB = tasks.get("jsb_chorales")
HP = {"hidden_size": 5, "learning_rate": 0.05, "momentum": 0.9, "input_noise": 0.2}


@pytest.mark.parametrize("policy", ["step", "epoch"])
@pytest.mark.parametrize("case", list(CASES))
def test_the_numbers_are_mains_bitwise(monkeypatch, case, policy):
    """One exception, by design: an Adam trial whose loss diverges. Main gave its slot one more
    Adam update with a zero gradient (its moments kept moving it) before finishing it; a bad slot
    is now frozen, so its final weights (which no study records) are those it diverged with."""
    monkeypatch.setattr(step, "POLICY", policy)
    want = json.loads(FIXTURE.read_text())[case]
    got = run_case(case)
    assert set(got) == set(want)
    for key, w in want.items():
        assert got[key]["result"] == w["result"], (key, "result")
        assert got[key]["history"] == w["history"], (key, "history")
        diverged_adam = case == "adam" and "training loss" in str(w["result"]["error"])
        if not diverged_adam:
            assert got[key]["weights"] == w["weights"], (key, "weights")


def _poisoned(call: int):
    """JSB whose `call`-th loss (0-based, counting every slot's) is NaN."""
    seen = {"n": 0}

    def loss(logits, batch):
        loss_sum, count = JSB.loss(logits, batch)
        seen["n"] += 1
        if seen["n"] - 1 == call:
            loss_sum = loss_sum * float("nan")
        return loss_sum, count

    return dataclasses.replace(JSB, loss=loss)


def _train(task, hparams, slots, splits, settings):
    """{key: (result, history without times, final weights)}."""
    histories, weights, done = {}, {}, {}
    trials = [PackTrial(k, hp, 30 + k) for k, hp in enumerate(hparams)]
    run = train_pack(
        task, "V", trials, splits, settings, slots,
        lambda key, m: histories.setdefault(key, []).append(m), "cpu",
        on_finish=lambda key, w: weights.__setitem__(key, w),
    )  # fmt: skip
    for key, result in run:
        history = [{k: v for k, v in m.items() if k != "time_s"} for m in histories.get(key, [])]
        done[key] = (result, history, weights[key])
    return done


def _tiny():
    splits = JSB.tiny(np.random.default_rng(0))
    return {"train": splits["train"].subset(range(6)), **{s: splits[s] for s in ("valid", "test")}}


def _same(a, b):
    (ra, ha, wa), (rb, hb, wb) = a, b
    drop = ("wall_s", "started_at")
    assert {k: v for k, v in ra.items() if k not in drop} == {
        k: v for k, v in rb.items() if k not in drop
    }
    assert ha == hb
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def test_a_slot_diverging_mid_epoch_is_frozen_and_its_neighbour_untouched(monkeypatch):
    """Slot 1's loss is NaN at its third step of epoch 2 (its gradients then NaN): read once an
    epoch, it trains on to the epoch's end frozen, is failed-after-its-best as when read at once,
    with the same final weights; slot 0 equals its single run bitwise."""
    settings = TrainConfig(batch_size=1, max_epochs=3, patience=3, eval_batch_size=2)
    hparams = [HP, {**HP, "hidden_size": 4, "learning_rate": 0.1}]
    call = 2 * 6 + 2 * 2 + 1  # epoch 2 (6 steps of 2 slots an epoch), step 3, slot 1
    runs = {}
    for policy in ("step", "epoch"):
        monkeypatch.setattr(step, "POLICY", policy)
        runs[policy] = _train(_poisoned(call), hparams, 2, _tiny(), settings)
    alone = _train(JSB, hparams[:1], 1, _tiny(), settings)[0]
    for policy, done in runs.items():
        result = done[1][0]
        assert result["status"] == "complete" and result["best_epoch"] == 1, policy
        assert result["error"].startswith("training loss became nan in epoch 2"), policy
        _same(done[0], alone)
    _same(runs["step"][1], runs["epoch"][1])


def test_an_optimizer_that_cannot_freeze_is_guarded_by_the_engine(monkeypatch):
    """A plug-in optimizer without `set_frozen`: the engine zeroes a bad slot's gradient and puts
    its parameters back after each later step, with the same outcome under both policies."""
    from study import optimizers

    class NoFreeze(NesterovStep):
        set_frozen = None  # as a plug-in that does not offer it

    monkeypatch.setattr(optimizers, "get", lambda name: NoFreeze)
    test_a_slot_diverging_mid_epoch_is_frozen_and_its_neighbour_untouched(monkeypatch)


@pytest.mark.parametrize("opt", ["nesterov", "adam"])
def test_a_frozen_trial_keeps_its_rows_and_the_others_update_as_without_it(opt):
    """NaN gradients in the frozen trial's rows: its parameters and state stay bitwise, the
    other trials' updates equal those of an optimizer without a frozen trial (and zero gradient
    in that row)."""
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(3, 4, 5, generator=gen), torch.randn(3, 6, generator=gen)]
    grads = [torch.randn(3, 4, 5, generator=gen), torch.randn(3, 6, generator=gen)]

    def make():
        params = [torch.nn.Parameter(p.clone()) for p in start]
        o = (NesterovStep if opt == "nesterov" else Adam).for_trials(params, 3)
        for k in range(3):
            o.set_hparams(k, {"learning_rate": 0.1 * (k + 1), "momentum": 0.5 + 0.1 * k})
        return params, o

    def steps(params, o, bad_grad):
        for _ in range(3):
            o.look_ahead()
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
                if bad_grad is not None:
                    p.grad[1] = bad_grad
            o.step()

    free, o_free = make()
    frozen, o_frozen = make()
    steps(free, o_free, None)
    steps(frozen, o_frozen, None)  # some state (velocity, moments) first
    o_frozen.set_frozen(torch.tensor([False, True, False]))
    before = [p.detach().clone() for p in frozen]
    steps(free, o_free, 0.0)
    steps(frozen, o_frozen, float("nan"))
    for p, f, b in zip(free, frozen, before, strict=True):
        assert torch.equal(f[1], b[1])  # frozen: bitwise as it was, no NaN
        for k in (0, 2):
            assert torch.equal(f[k], p[k])
        assert not torch.equal(p[1], b[1])  # without freezing the row would have moved


def test_epoch_reads_do_not_grow_with_steps(monkeypatch):
    """Policy "epoch": two epochs of 8 and of 16 training sequences read the device the same
    number of times (the epoch's flags, the two splits' evaluation sums); policy "step" reads
    more with more steps (so the count sees the step's reads)."""
    settings = TrainConfig(batch_size=1, max_epochs=2, patience=2, eval_batch_size=4)
    full = JSB.tiny(np.random.default_rng(3))
    more = JSB.tiny(np.random.default_rng(4))["train"]
    train16 = SequenceSet(
        full["train"].inputs + more.inputs[:4], full["train"].targets + more.targets[:4]
    )

    def reads(policy, train):
        monkeypatch.setattr(step, "POLICY", policy)
        splits = {"train": train, "valid": full["valid"], "test": full["test"]}
        before = step.reads
        _train(JSB, [HP, {**HP, "hidden_size": 3}], 2, splits, settings)
        return step.reads - before

    eight, sixteen = full["train"].subset(range(8)), train16
    assert len(eight) == 8 and len(sixteen) == 16
    assert reads("epoch", eight) == reads("epoch", sixteen) == 2 * 3
    assert reads("step", sixteen) > reads("step", eight)


def test_noise_falls_back_to_a_generator_per_slot(monkeypatch, caplog):
    """Noise on the device without Triton: each slot draws from a generator of its own seeded
    from the trial's (logged once), so a trial's noise is the same in any slot."""
    from variants.fast import triton_launch

    monkeypatch.setattr(triton_launch, "available", lambda: False)
    monkeypatch.setattr(noise, "ON_DEVICE", True)
    monkeypatch.setattr(noise, "_warned", set())
    drawn = []
    for k, s in ((1, 0), (3, 2)):
        pack = noise.PackNoise(k, torch.device("cpu"))
        pack.take(s, torch.Generator().manual_seed(9), {"input_noise": 0.5})
        x = torch.zeros(k, 7, 2, 3)
        pack.add(x, {s: 5})
        assert torch.equal(x[s, 5:], torch.zeros(2, 2, 3))
        drawn.append(x[s, :5])
    assert torch.equal(drawn[0], drawn[1]) and drawn[0].abs().sum() > 0
    assert sum("one launch per trial" in r.message for r in caplog.records) == 1


@pytest.mark.gpu
def test_cuda_training_steps_never_synchronize(monkeypatch):
    """A pack on CUDA (policy "epoch", noise on the device, a trial diverging): every training
    step runs under `torch.cuda.set_sync_debug_mode("error")`, which raises at any call that
    waits for the GPU (a read, a blocking copy)."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    inner, calls = step.train_step, []

    def strict(*args, **kwargs):
        torch.cuda.set_sync_debug_mode("error")
        try:
            return inner(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")
            calls.append(1)

    monkeypatch.setattr(step, "train_step", strict)
    settings = TrainConfig(batch_size=2, max_epochs=2, patience=2, eval_batch_size=3)
    hparams = [HP, {**HP, "hidden_size": 3, "learning_rate": 1e38}, {**HP, "input_noise": 0.0}]
    trials = [PackTrial(k, hp, 40 + k) for k, hp in enumerate(hparams)]
    done = dict(train_pack(JSB, "V", trials, _tiny(), settings, 3, None, "cuda"))
    assert len(calls) == 2 * 3  # 2 epochs of 3 steps
    assert done[1]["status"] == "failed" and "training loss became" in done[1]["error"]
    for k in (0, 2):
        assert done[k]["status"] == "complete" and math.isfinite(done[k]["val_metric"])
