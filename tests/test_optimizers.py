"""The packed optimizers of the registry: each trial of a pack follows its single-trial oracle
(torch.optim.Adam; the paper's Nesterov step as study.optim writes it out for one model), a
trial's update never depends on its neighbours, and the optimizer is a training setting."""

from __future__ import annotations

import pytest
import torch

from study import config, optimizers
from study.optim import NesterovStep

SHAPES = [(3, 4, 5), (3, 4)]  # (K, ...) parameters of a pack of 3
HPS = [
    {"learning_rate": 1e-2, "momentum": 0.9},
    {"learning_rate": 3e-3, "momentum": 0.0, "beta1": 0.5, "beta2": 0.99},
    {"learning_rate": 5e-2, "momentum": 0.5, "weight_decay": 0.1},
]


def _grads(step: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + step)
    return [torch.randn(s, generator=gen) for s in SHAPES]


def _pack(cls, hps):
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in SHAPES]
    opt = cls.for_trials(params, len(hps))
    for k, hp in enumerate(hps):
        opt.set_hparams(k, hp)
    return params, opt


def _step(opt, params, grads) -> None:
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    opt.step()


def test_adam_trials_follow_torch_adam():
    params, opt = _pack(optimizers.Adam, HPS)
    singles = []
    for k, hp in enumerate(HPS):
        ps = [torch.nn.Parameter(p[k].detach().clone()) for p in params]
        betas = (hp.get("beta1", 0.9), hp.get("beta2", 0.999))
        oracle = torch.optim.Adam(
            ps, lr=hp["learning_rate"], betas=betas, weight_decay=hp.get("weight_decay", 0.0)
        )
        singles.append((ps, oracle))
    for step in range(6):
        grads = _grads(step)
        _step(opt, params, grads)
        for k, (ps, oracle) in enumerate(singles):
            for p, g in zip(ps, grads, strict=True):
                p.grad = g[k].clone()
            oracle.step()
    for k, (ps, _) in enumerate(singles):
        for p, q in zip(params, ps, strict=True):
            torch.testing.assert_close(p[k].detach(), q.detach(), rtol=1e-5, atol=1e-6)


def test_nesterov_trials_follow_the_single_model_step():
    params, opt = _pack(optimizers.get("nesterov"), HPS)
    singles = []
    for k, hp in enumerate(HPS):
        ps = [torch.nn.Parameter(p[k].detach().clone()) for p in params]
        singles.append((ps, NesterovStep(ps, hp["learning_rate"], hp["momentum"])))
    for step in range(5):
        opt.look_ahead()
        for _, o in singles:
            o.look_ahead()
        grads = _grads(step)
        _step(opt, params, grads)
        for k, (ps, o) in enumerate(singles):
            for p, g in zip(ps, grads, strict=True):
                p.grad = g[k].clone()
            o.step()
    for k, (ps, _) in enumerate(singles):
        for p, q in zip(params, ps, strict=True):
            assert torch.equal(p[k].detach(), q.detach())


@pytest.mark.parametrize("name", ["nesterov", "adam"])
def test_a_trial_is_bitwise_independent_of_its_neighbours(name):
    cls = optimizers.get(name)
    a, opt_a = _pack(cls, HPS)
    b, opt_b = _pack(cls, [HPS[0], {"learning_rate": 0.3, "momentum": 0.2}, HPS[1]])
    opt_b.clear_trial(2)
    for step in range(4):
        opt_a.look_ahead()
        opt_b.look_ahead()
        grads = _grads(step)
        other = [g.clone() for g in grads]
        for g in other:
            g[1:] = torch.randn(g[1:].shape)  # other neighbours, other gradients
        _step(opt_a, a, grads)
        _step(opt_b, b, other)
    for p, q in zip(a, b, strict=True):
        assert torch.equal(p[0], q[0])


def test_the_optimizer_is_a_training_setting_with_named_choices():
    base = {"name": "x", "tasks": ["jsb_chorales"], "variants": ["V"]}
    cfg = config.from_dict({**base, "training": {"optimizer": "adam"}})
    assert cfg.fingerprint()["training"]["optimizer"] == "adam"
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'; known: nesterov, adam"):
        config.from_dict({**base, "training": {"optimizer": "sgd"}})
    with pytest.raises(ValueError, match="has no for_trials"):
        config.from_dict({**base, "training": {"optimizer": "study.space:stable_seed"}})


def test_adam_trains_a_trial_through_the_engine():
    import math

    import numpy as np

    import tasks
    from study.config import TrainConfig
    from study.train import train

    task = tasks.get("jsb_chorales")
    splits = task.tiny(np.random.default_rng(0))
    hp = {"hidden_size": 8, "learning_rate": 1e-2, "momentum": 0.0, "input_noise": 0.0}
    settings = TrainConfig(max_epochs=3, patience=3, batch_size=4, optimizer="adam")
    result = train(task, "V", hp, splits, settings, seed=0)
    nesterov = train(
        task, "V", hp, splits, settings.model_copy(update={"optimizer": "nesterov"}), 0
    )
    assert result["status"] == "complete" and math.isfinite(result["val_metric"])
    assert result["val_metric"] != nesterov["val_metric"]  # the setting reached the engine
