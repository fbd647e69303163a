"""The random-search space of Greff et al. 2017 (section IV-A) as plain data.

    hidden_size         log-uniform integer in [20, 200]     (blocks; per direction or total)
    learning_rate       log-uniform in [1e-6, 1e-2]
    momentum            1 - log-uniform in [0.01, 1]         (so momentum in [0, 0.99])
    input_noise         uniform in [0, 1]                    (std of additive Gaussian noise)

Optuna cannot express "1 - log-uniform" as one distribution, so the Optuna parameter behind
momentum is `one_minus_momentum` (log-uniform); everything outside Optuna (the training loop,
MLflow params, results columns `hp_*`) sees the four names above. `one_minus_momentum` is also
the scale the authors analysed (log10(1 - momentum)).

A study may add its own dimensions (`space.extra`: name -> {type: float | int | categorical,
low, high, log, choices}); they are sampled the same way, reach the training loop's
hyperparameters under their names, and are recorded in the results table's `hp_extra` (JSON).
A range with low = high fixes a hyperparameter (e.g. `input_noise: [0, 0]`: no noise).

Every trial's parameters are a function of (seed, task, variant, trial number, parameter name):
`TrialSeededSampler` draws each value from a RandomSampler seeded by a stable hash of those, so
resuming, reordering or running pairs on other machines never changes what trial k samples.
"""

from __future__ import annotations

import hashlib
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import FrozenTrial

from study.config import SpaceConfig

HYPERPARAMETERS = ("hidden_size", "learning_rate", "momentum", "input_noise")


def search_space(cfg: SpaceConfig) -> dict[str, BaseDistribution]:
    """The Optuna distributions of one study (plain data; what `study.ask` takes)."""
    out: dict[str, BaseDistribution] = {
        "hidden_size": IntDistribution(*cfg.hidden_size, log=True),
        "learning_rate": FloatDistribution(*cfg.learning_rate, log=True),
        "one_minus_momentum": FloatDistribution(*cfg.one_minus_momentum, log=True),
        "input_noise": FloatDistribution(*cfg.input_noise),
    }
    for name, dim in cfg.extra.items():
        if dim.type == "categorical":
            out[name] = CategoricalDistribution(list(dim.choices or ()))
        elif dim.type == "int":
            out[name] = IntDistribution(int(dim.low), int(dim.high), log=dim.log)
        else:
            out[name] = FloatDistribution(float(dim.low), float(dim.high), log=dim.log)
    return out


def suggest(trial: optuna.trial.BaseTrial, space: dict[str, BaseDistribution]) -> dict[str, Any]:
    """Draw the raw Optuna parameters through the public suggest API (works with FixedTrial)."""
    raw: dict[str, Any] = {}
    for name, dist in space.items():
        if isinstance(dist, IntDistribution):
            raw[name] = trial.suggest_int(name, dist.low, dist.high, log=dist.log)
        elif isinstance(dist, FloatDistribution):
            raw[name] = trial.suggest_float(name, dist.low, dist.high, log=dist.log)
        elif isinstance(dist, CategoricalDistribution):
            raw[name] = trial.suggest_categorical(name, dist.choices)
        else:  # pragma: no cover - the space above only holds these three kinds
            raise TypeError(f"unsupported distribution {dist!r} for {name}")
    return raw


def hyperparameters(raw: dict[str, Any]) -> dict[str, Any]:
    """Raw Optuna parameters -> the four named hyperparameters the rest of the study uses."""
    missing = [
        k
        for k in ("hidden_size", "learning_rate", "one_minus_momentum", "input_noise")
        if k not in raw
    ]
    if missing:
        raise ValueError(f"trial parameters lack {', '.join(missing)}; got {sorted(raw)}")
    own = ("hidden_size", "learning_rate", "one_minus_momentum", "input_noise")
    return {
        "hidden_size": int(raw["hidden_size"]),
        "learning_rate": float(raw["learning_rate"]),
        "momentum": 1.0 - float(raw["one_minus_momentum"]),
        "input_noise": float(raw["input_noise"]),
        # the study's own dimensions (`space.extra`), under their own names
        **{k: v for k, v in raw.items() if k not in own},
    }


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from the parts' text, equal across processes and machines (unlike hash())."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class TrialSeededSampler(BaseSampler):
    """Independent random sampling, each value seeded by (seed, key, trial number, parameter)."""

    def __init__(self, seed: int, key: str) -> None:
        self.seed, self.key = seed, key

    def infer_relative_search_space(self, study, trial):  # noqa: D102 - BaseSampler API
        return {}

    def sample_relative(self, study, trial, search_space):  # noqa: D102
        return {}

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        rng = RandomSampler(seed=stable_seed(self.seed, self.key, trial.number, param_name) % 2**32)
        return rng.sample_independent(study, trial, param_name, param_distribution)


def make_sampler(kind: str, seed: int, task: str, variant: str) -> BaseSampler:
    """`random` (the paper's; reproducible per trial) or `tpe` (seeded per pair, not per trial)."""
    key = f"{task}/{variant}"
    if kind == "random":
        return TrialSeededSampler(seed, key)
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=stable_seed(seed, key) % 2**32)
    raise ValueError(f"unknown sampler {kind!r}; valid: random, tpe")
