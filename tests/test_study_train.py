"""The training loop without Ray: pylstm's Nesterov step by hand, its equivalence with torch's
SGD(nesterov) up to the look-ahead reparametrisation, learning on tiny data, early stopping,
the test metric taken at the best validation epoch, divergence recorded as failure."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tasks
from study.config import TrainConfig
from study.optim import NesterovStep
from study.train import evaluate, train

JSB = tasks.get("jsb_chorales")


def _quadratic_steps(opt_step, p, steps):
    """Run steps on L = 0.5 * a * p^2 (gradient a * p) and return p after each."""
    out = []
    for _ in range(steps):
        opt_step()
        out.append(p.detach().clone())
    return out


def test_nesterov_step_by_hand():
    # L = 0.5 * 2 * p^2, grad = 2p; lr = 0.1, mu = 0.5 -> eps = 0.05
    p = torch.nn.Parameter(torch.tensor([1.0]))
    opt = NesterovStep([p], lr=0.1, momentum=0.5)

    def step():
        opt.look_ahead()
        opt.zero_grad()
        (p**2).sum().backward()
        opt.step()

    got = _quadratic_steps(step, p, 2)
    # step 1: v=0, look-ahead p=1, g=2, dv=0.1 -> v=-0.1, p=0.9
    # step 2: v=-0.05, look-ahead p=0.85, g=1.7, dv=0.085 -> v=-0.135, p=0.765
    assert got[0].item() == pytest.approx(0.9) and got[1].item() == pytest.approx(0.765)
    assert opt.velocity[0].item() == pytest.approx(-0.135)


def test_equivalent_to_torch_nesterov_in_look_ahead_coordinates():
    torch.manual_seed(0)
    a = torch.randn(5, 5)
    A = a @ a.T + torch.eye(5)  # a positive definite quadratic
    x0 = torch.randn(5)
    lr, mu = 0.05, 0.8

    p = torch.nn.Parameter(x0.clone())
    ours = NesterovStep([p], lr, mu)
    q = torch.nn.Parameter(x0.clone())
    ref = torch.optim.SGD([q], lr=lr * (1 - mu), momentum=mu, nesterov=True)
    for _ in range(20):
        ours.look_ahead()
        ours.zero_grad()
        (0.5 * p @ A @ p).backward()
        ours.step()
        ref.zero_grad()
        (0.5 * q @ A @ q).backward()
        ref.step()
        # torch holds phi = theta + mu * v, the point where the next gradient is taken
        torch.testing.assert_close(q.detach(), p.detach() + mu * ours.velocity[0])


def _tiny(seed=0):
    return JSB.tiny(np.random.default_rng(seed))


HP = {"hidden_size": 16, "learning_rate": 0.05, "momentum": 0.9, "input_noise": 0.0}


def test_loss_goes_down_and_test_metric_is_at_best_validation_epoch():
    hist = []
    r = train(
        JSB,
        "V",
        HP,
        _tiny(),
        TrainConfig(batch_size=2, max_epochs=12, patience=12),
        3,
        report=hist.append,
    )
    assert r["status"] == "complete" and r["epochs"] == len(hist) == 12
    losses = [h["train/loss"] for h in hist]
    assert losses[-1] < 0.3 * losses[0]
    vals = [h["val/nll"] for h in hist]
    best = int(np.argmin(vals)) + 1
    assert r["best_epoch"] == best and r["val_metric"] == vals[best - 1]
    assert r["test_metric"] == hist[best - 1]["test/nll"] and r["train_loss"] == losses[best - 1]
    assert r["val_metric"] < 61.0  # better than 0.5 everywhere (88 ln 2 = 61.0)
    assert set(hist[0]) == {"epoch", "train/loss", "val/nll", "test/nll", "time_s"}


def test_same_seed_same_trial_other_seed_other_trial():
    cfg = TrainConfig(batch_size=2, max_epochs=2, patience=2)
    hp = {**HP, "input_noise": 0.3}
    a, b, c = (train(JSB, "NP", hp, _tiny(), cfg, s) for s in (5, 5, 6))
    assert a["val_metric"] == b["val_metric"] and a["val_metric"] != c["val_metric"]


def test_early_stopping_after_patience_epochs_without_improvement():
    # a learning rate of 1e-30 leaves the weights unchanged: the validation NLL never
    # improves after epoch 1, so training stops after 1 + patience epochs
    hp = {**HP, "learning_rate": 1e-30}
    hist = []
    r = train(
        JSB,
        "V",
        hp,
        _tiny(),
        TrainConfig(batch_size=4, max_epochs=50, patience=4),
        0,
        report=hist.append,
    )
    assert r["status"] == "complete" and r["best_epoch"] == 1 and r["epochs"] == 5
    assert len({h["val/nll"] for h in hist}) == 1


def test_evaluate_is_corpus_level():
    # sum of per-sequence errors / total frames, whatever the batch size
    data = _tiny()["valid"]
    gen = torch.Generator().manual_seed(0)
    from study.model import build_model

    model = build_model(JSB, "V", 8, gen)
    one = evaluate(model, JSB, data, 1, torch.device("cpu"))["nll"]
    big = evaluate(model, JSB, data, 64, torch.device("cpu"))["nll"]
    sums = []
    for i in range(len(data)):
        batch = JSB.collate([(data.inputs[i], data.targets[i])])
        with torch.no_grad():
            sums.append(tuple(map(float, JSB.errors(model(batch.x, batch.lengths), batch)["nll"])))
    ref = sum(s for s, _ in sums) / sum(c for _, c in sums)
    assert one == pytest.approx(ref, rel=1e-5) and big == pytest.approx(ref, rel=1e-5)


def test_divergence_is_a_failed_trial_with_its_reason():
    r = train(
        JSB,
        "V",
        {**HP, "learning_rate": math.inf},
        _tiny(),
        TrainConfig(batch_size=2, max_epochs=3, patience=3),
        0,
    )
    assert r["status"] == "failed" and math.isnan(r["test_metric"])
    assert "training loss became nan in epoch 1" in r["error"]  # step 1 made the weights inf


def test_divergence_after_a_good_epoch_keeps_the_best_epoch():
    import dataclasses

    calls = {"n": 0}
    n_train = len(_tiny()["train"])

    def nan_in_epoch_3(logits, batch):  # finite for two epochs, then NaN
        calls["n"] += 1
        loss, count = JSB.loss(logits, batch)
        return (loss * math.nan if calls["n"] > 2 * math.ceil(n_train / 2) else loss), count

    task = dataclasses.replace(JSB, loss=nan_in_epoch_3)
    r = train(task, "V", HP, _tiny(), TrainConfig(batch_size=2, max_epochs=5, patience=5), 0)
    assert r["status"] == "complete" and r["best_epoch"] in (1, 2) and r["epochs"] == 3
    assert math.isfinite(r["test_metric"])
    assert "became nan in epoch 3; kept the best epoch" in r["error"]


def test_nan_loss_is_a_failed_trial(monkeypatch):
    import dataclasses

    def nan_loss(logits, batch):
        return logits.sum() * math.nan, batch.size

    task = dataclasses.replace(JSB, loss=nan_loss)
    r = train(task, "V", HP, _tiny(), TrainConfig(batch_size=2, max_epochs=3, patience=3), 0)
    assert r["status"] == "failed" and "training loss became nan in epoch 1" in r["error"]
    assert r["epochs"] == 1


def test_bidirectional_total_hidden_size_is_split():
    timit = tasks.get("timit")
    data = timit.tiny(np.random.default_rng(0))
    r = train(
        timit,
        "NP",
        {**HP, "hidden_size": 12},
        data,
        TrainConfig(batch_size=4, max_epochs=1, patience=1),
        0,
        hidden_size_meaning="total",
    )
    assert r["status"] == "complete" and r["hidden_per_direction"] == 6
    assert (
        r["n_params"]
        == 2 * (4 * 6 * timit.input_size + 4 * 6 * 6 + 4 * 6)
        + 12 * timit.output_size
        + timit.output_size
    )


def _plain_loop(task, variant, hp, splits, settings, seed):
    """The protocol written out for one trial, independent of the engine (study.pack): the
    model's plain forward through the reference cells, `NesterovStep`, the task's loss, and
    validation and test one sequence at a time. Per epoch: (train loss, val, test)."""
    from study.model import build_model
    from variants import fast

    gen = torch.Generator().manual_seed(seed)
    model = build_model(task, variant, hp["hidden_size"], gen)
    opt = NesterovStep(model.parameters(), hp["learning_rate"], hp["momentum"])
    data, n, out = splits["train"], len(splits["train"]), []
    with fast.use("reference"):
        for _ in range(settings.max_epochs):
            order = torch.randperm(n, generator=gen).tolist()
            total, seqs = 0.0, 0
            for start in range(0, n, settings.batch_size):
                idx = order[start : start + settings.batch_size]
                batch = task.collate([(data.inputs[i], data.targets[i]) for i in idx])
                batch.x = batch.x + hp["input_noise"] * torch.randn(batch.x.shape, generator=gen)
                opt.look_ahead()
                loss_sum, count = task.loss(model(batch.x, batch.lengths), batch)
                opt.zero_grad()
                (loss_sum / count).backward()
                opt.step()
                total, seqs = total + float(loss_sum.detach()), seqs + count
            metrics = []
            for split in ("valid", "test"):
                errors, frames = 0.0, 0
                for x, y in zip(splits[split].inputs, splits[split].targets, strict=True):
                    batch = task.collate([(x, y)])
                    with torch.no_grad():
                        e, c = task.errors(model(batch.x, batch.lengths), batch)[task.metric]
                    errors, frames = errors + float(e), frames + float(c)
                metrics.append(errors / frames)
            out.append((total / seqs, *metrics))
    return out


@pytest.mark.parametrize("variant", ["V", "GRU"])
def test_the_engine_follows_the_protocol_written_out(variant):
    """`train` (a pack of one through the engine, the compiled kernels) against the plain loop
    above, every epoch, within float32 rounding."""
    hp = {**HP, "hidden_size": 8, "input_noise": 0.2}
    settings = TrainConfig(batch_size=2, max_epochs=4, patience=4, eval_batch_size=3)
    hist = []
    r = train(JSB, variant, hp, _tiny(), settings, 4, report=hist.append)
    want = _plain_loop(JSB, variant, hp, _tiny(), settings, 4)
    got = [(h["train/loss"], h["val/nll"], h["test/nll"]) for h in hist]
    assert r["numerics"] == "cpu-compiled" and len(got) == len(want) == 4
    for g, w in zip(got, want, strict=True):
        assert g == pytest.approx(w, rel=1e-4)
