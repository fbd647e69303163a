"""The packed optimizers: each slot follows its single-trial oracle (pylstm's Nesterov step as
study.optim writes it out; torch.optim.Adam), and a slot's update never depends on its
neighbours."""

from __future__ import annotations

import pytest
import torch

from study import config, optimizers
from study.optim import NesterovStep

SHAPES = [(3, 4, 5), (3, 4)]  # (K, ...) parameters of a pack of 3


def _grads(step: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + step)
    return [torch.randn(s, generator=gen) for s in SHAPES]


def _pack(cls, hps):
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=gen) for s in SHAPES]
    opt = cls(params, len(hps))
    for k, hp in enumerate(hps):
        opt.place(k, hp)
    return params, opt


HPS = [
    {"learning_rate": 1e-2, "momentum": 0.9},
    {"learning_rate": 3e-3, "momentum": 0.0, "beta1": 0.5, "beta2": 0.99},
    {"learning_rate": 5e-2, "momentum": 0.5, "weight_decay": 0.1},
]


def test_nesterov_slots_follow_the_single_trial_step():
    params, opt = _pack(optimizers.Nesterov, HPS)
    singles = []
    for k, hp in enumerate(HPS):
        ps = [torch.nn.Parameter(p[k].clone()) for p in params]
        singles.append((ps, NesterovStep(ps, hp["learning_rate"], hp["momentum"])))
    for step in range(5):
        opt.look_ahead()
        for _, o in singles:
            o.look_ahead()
        grads = _grads(step)
        opt.step(grads)
        for k, (ps, o) in enumerate(singles):
            for p, g in zip(ps, grads, strict=True):
                p.grad = g[k].clone()
            o.step()
    for k, (ps, _) in enumerate(singles):
        for p, q in zip(params, ps, strict=True):
            torch.testing.assert_close(p[k], q.detach(), rtol=1e-6, atol=1e-7)


def test_adam_slots_follow_torch_adam():
    params, opt = _pack(optimizers.Adam, HPS)
    singles = []
    for k, hp in enumerate(HPS):
        ps = [torch.nn.Parameter(p[k].clone()) for p in params]
        betas = (hp.get("beta1", 0.9), hp.get("beta2", 0.999))
        wd = hp.get("weight_decay", 0.0)
        singles.append(
            (ps, torch.optim.Adam(ps, lr=hp["learning_rate"], betas=betas, weight_decay=wd))
        )
    for step in range(6):
        grads = _grads(step)
        opt.step(grads)
        for k, (ps, o) in enumerate(singles):
            for p, g in zip(ps, grads, strict=True):
                p.grad = g[k].clone()
            o.step()
    for k, (ps, _) in enumerate(singles):
        for p, q in zip(params, ps, strict=True):
            torch.testing.assert_close(p[k], q.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", [optimizers.Nesterov, optimizers.Adam])
def test_a_slot_is_bitwise_independent_of_its_neighbours(cls):
    a, opt_a = _pack(cls, HPS)
    b, opt_b = _pack(cls, [HPS[0], {"learning_rate": 0.3, "momentum": 0.2}, HPS[1]])
    opt_b.clear(2)
    for step in range(4):
        opt_a.look_ahead()
        opt_b.look_ahead()
        grads = _grads(step)
        other = [g.clone() for g in grads]
        for g in other:
            g[1:] = torch.randn(g[1:].shape)  # other neighbours, other gradients
        opt_a.step(grads)
        opt_b.step(other)
    for p, q in zip(a, b, strict=True):
        assert torch.equal(p[0], q[0])


def test_the_optimizer_is_a_training_setting_with_named_choices():
    cfg = config.from_dict(
        {
            "name": "x",
            "tasks": ["jsb_chorales"],
            "variants": ["V"],
            "training": {"optimizer": "adam"},
        }
    )
    assert cfg.fingerprint()["training"]["optimizer"] == "adam"
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'; known: nesterov, adam"):
        config.from_dict(
            {
                "name": "x",
                "tasks": ["jsb_chorales"],
                "variants": ["V"],
                "training": {"optimizer": "sgd"},
            }
        )
