"""The search space (paper section IV-A): FixedTrial mapping, bounds and distribution shapes
against the closed-form CDFs, and per-trial reproducibility from (seed, task, variant, trial)."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import optuna
import pytest

from study.config import SpaceConfig
from study.model import hidden_per_direction
from study.space import (
    HYPERPARAMETERS,
    hyperparameters,
    make_sampler,
    search_space,
    stable_seed,
    suggest,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = search_space(SpaceConfig())


def test_fixed_trial_maps_to_the_four_hyperparameters():
    raw = suggest(
        optuna.trial.FixedTrial(
            {
                "hidden_size": 57,
                "learning_rate": 3e-4,
                "one_minus_momentum": 0.1,
                "input_noise": 0.25,
            }
        ),
        SPACE,
    )
    hp = hyperparameters(raw)
    assert tuple(hp) == HYPERPARAMETERS
    assert hp == {
        "hidden_size": 57,
        "learning_rate": 3e-4,
        "momentum": pytest.approx(0.9),
        "input_noise": 0.25,
    }


def test_space_is_the_papers():
    d = SPACE
    assert (d["hidden_size"].low, d["hidden_size"].high, d["hidden_size"].log) == (20, 200, True)
    assert (d["learning_rate"].low, d["learning_rate"].high, d["learning_rate"].log) == (
        1e-6,
        1e-2,
        True,
    )
    assert (d["one_minus_momentum"].low, d["one_minus_momentum"].high) == (0.01, 1.0)
    assert d["one_minus_momentum"].log and not d["input_noise"].log
    assert (d["input_noise"].low, d["input_noise"].high) == (0.0, 1.0)


def _sample(seed: int, task: str, variant: str, n: int) -> list[dict]:
    s = optuna.create_study(sampler=make_sampler("random", seed, task, variant))
    return [hyperparameters(s.ask(SPACE).params) for _ in range(n)]


def test_parameters_reproducible_from_seed_task_variant_trial():
    a = _sample(0, "timit", "V", 6)
    b = _sample(0, "timit", "V", 6)
    assert a == b
    # another pair or seed gives other values; trial k does not depend on the dicts' order
    assert _sample(0, "timit", "NP", 6) != a and _sample(1, "timit", "V", 6) != a
    s = optuna.create_study(sampler=make_sampler("random", 0, "timit", "V"))
    reordered = {k: SPACE[k] for k in reversed(SPACE)}
    assert [hyperparameters(s.ask(reordered).params) for _ in range(6)] == a
    assert len({r["learning_rate"] for r in a}) == 6  # different trials differ


def test_stable_seed_is_a_fixed_function():
    # sha256-based, so equal in every process and Python version (unlike hash())
    digest = hashlib.sha256(b"0\x1ftimit/V\x1f3\x1flr").digest()
    assert stable_seed(0, "timit/V", 3, "lr") == int.from_bytes(digest[:8], "little") >> 1
    assert stable_seed("a", "b") != stable_seed("ab")
    assert 0 <= stable_seed(1) < 2**63


def test_marginals_follow_the_papers_distributions():
    s = optuna.create_study(sampler=make_sampler("random", 7, "jsb_chorales", "V"))
    hp = [hyperparameters(s.ask(SPACE).params) for _ in range(600)]
    lr = np.array([h["learning_rate"] for h in hp])
    mu = np.array([h["momentum"] for h in hp])
    hs = np.array([h["hidden_size"] for h in hp])
    noise = np.array([h["input_noise"] for h in hp])
    assert lr.min() >= 1e-6 and lr.max() <= 1e-2 and hs.min() >= 20 and hs.max() <= 200
    assert mu.min() >= 0.0 and mu.max() <= 0.99 + 1e-12
    # log-uniform: P(lr < 1e-4) = 1/2, P(1 - mu < 0.1) = 1/2, P(hidden <= 63) ~ ln(63.5/19.5)/ln(200.5/19.5)
    se = 0.5 / math.sqrt(len(hp))  # one standard error of a proportion near 1/2
    assert abs((lr < 1e-4).mean() - 0.5) < 4 * se
    assert abs(((1 - mu) < 0.1).mean() - 0.5) < 4 * se
    p_small = math.log(63.5 / 19.5) / math.log(200.5 / 19.5)
    assert abs((hs <= 63).mean() - p_small) < 4 * se
    assert abs((noise < 0.5).mean() - 0.5) < 4 * se


def test_hidden_size_meaning():
    assert hidden_per_direction(100, "per_direction", True) == 100
    assert hidden_per_direction(100, "total", True) == 50
    assert hidden_per_direction(101, "total", False) == 101  # one direction: total = per direction
    with pytest.raises(ValueError, match="per_direction, total"):
        hidden_per_direction(10, "sum", True)


def test_tpe_is_an_option():
    s = optuna.create_study(sampler=make_sampler("tpe", 0, "timit", "V"))
    assert isinstance(s.sampler, optuna.samplers.TPESampler)
    with pytest.raises(ValueError, match="random, tpe"):
        make_sampler("grid", 0, "timit", "V")
