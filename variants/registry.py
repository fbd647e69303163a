"""The variants of Greff et al. 2017 in the paper's order, plus the GRU (Chung et al. 2014) and
two ungated baselines: the tanh RNN and leaky-integrator units."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from variants.spec import GRUSpec, LSTMSpec, gru, leaky, lstm, rnn

# fmt: off
VARIANTS: dict[str, LSTMSpec | GRUSpec] = {
    "V":    lstm("vanilla: peepholes, forget gate, g = h = tanh"),
    "NIG":  lstm("i = 1 (no input gate)", input_gate=False),
    "NFG":  lstm("f = 1 (no forget gate)", forget_gate=False),
    "NOG":  lstm("o = 1 (no output gate)", output_gate=False),
    "NIAF": lstm("g(x) = x (no input activation)", input_activation=False),
    "NOAF": lstm("h(x) = x (no output activation)", output_activation=False),
    "NP":   lstm("no peepholes p_i, p_f, p_o", peepholes=False),
    "CIFG": lstm("f = 1 - i (coupled input and forget gate)", coupled_input_forget=True),
    "FGR":  lstm("gates see i, f, o of t-1 (+9 N x N matrices R_ab)", full_gate_recurrence=True),
    "GRU":  gru("GRU (torch.nn.GRU / cuDNN form of Chung et al. 2014)"),
    "RNN":  rnn("no gates: h = tanh(W x + R h' + b) (torch.nn.RNN)"),
    "LEAKY": leaky("leaky RNN: h = (1 - a) h' + a tanh(W x + R h' + b), learned a"),
}
# fmt: on


def get_spec(name: str) -> LSTMSpec | GRUSpec:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}") from None


def spec_from_dict(settings: Mapping[str, Any]) -> LSTMSpec | GRUSpec:
    """A variant declared as data, e.g. `{"coupled_input_forget": True, "peepholes": False}`
    (an LSTM; `kind: gru` for a GRU form): the flags of `LSTMSpec` / `GRUSpec`, checked."""
    settings = dict(settings)
    kind = settings.pop("kind", "lstm")
    cls = {"lstm": LSTMSpec, "gru": GRUSpec}.get(kind)
    if cls is None:
        raise ValueError(f"unknown variant kind {kind!r}; valid: lstm, gru")
    flags = [f.name for f in dataclasses.fields(cls) if f.name != "change"]
    unknown = [k for k in settings if k not in flags and k != "change"]
    if unknown:
        raise ValueError(
            f"unknown {kind} flag(s) {', '.join(map(repr, unknown))}; valid: {', '.join(flags)}"
        )
    bad = {k: v for k, v in settings.items() if k != "change" and not isinstance(v, bool)}
    if bad:
        k, v = next(iter(bad.items()))
        raise ValueError(f"variant flag {k} must be true or false, got {v!r}")
    return cls(**settings)


def spec_to_dict(spec: LSTMSpec | GRUSpec) -> dict[str, Any]:
    """The flags of `spec` that differ from the vanilla LSTM / GRU (inverse of `spec_from_dict`)."""
    base = type(spec)()
    out: dict[str, Any] = {"kind": spec.kind} if spec.kind != "lstm" else {}
    for f in dataclasses.fields(spec):
        if f.name != "change" and getattr(spec, f.name) != getattr(base, f.name):
            out[f.name] = getattr(spec, f.name)
    return out


def build(
    name: str | LSTMSpec | GRUSpec,
    input_size: int,
    hidden_size: int,
    bidirectional: bool = False,
    forget_bias: float = 0.0,
    trials: int = 1,
    generator: torch.Generator | None = None,
) -> nn.Module:
    """A recurrent layer `module(x (T, B, M), lengths (B,)) -> (T, B, hidden_size * directions)`;
    with `trials=K`, a pack of K independent layers run by `module.forward_packed`.

    Every weight and bias is drawn from N(0, 0.1^2) (the paper's initialisation), from
    `generator` when given; `forget_bias` is added to b_f for users who want Jozefowicz et al.'s
    +1 (not the paper's protocol).
    """
    if not isinstance(name, str):  # a spec object (a variant outside the registry)
        return build_spec(
            name, input_size, hidden_size, bidirectional, forget_bias, trials, generator
        )
    return build_spec(
        get_spec(name), input_size, hidden_size, bidirectional, forget_bias, trials, generator, name
    )


def build_spec(
    spec: LSTMSpec | GRUSpec,
    input_size: int,
    hidden_size: int,
    bidirectional: bool = False,
    forget_bias: float = 0.0,
    trials: int = 1,
    generator: torch.Generator | None = None,
    name: str = "custom",
) -> nn.Module:
    """Like `build` for a spec outside the registry (new variants, ablations of ablations)."""
    from variants.layer import Recurrent

    for what, value in (
        ("input_size", input_size),
        ("hidden_size", hidden_size),
        ("trials", trials),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{what} must be an integer >= 1, got {value!r}")
    return Recurrent(
        spec, input_size, hidden_size, bidirectional, forget_bias, name, trials, generator
    )
