"""The registries: cell kinds, and variants (the paper's in its order, the GRU, and two ungated
baselines, the tanh RNN and leaky-integrator units).

A *cell kind* is a cell class following the cell contract (`variants.contract`) together with the
spec class whose flags select its equations: `lstm` (Greff et al. 2017's generic cell, flags in
`LSTMSpec`) and `gru` (`GRUSpec`) are registered here exactly as a plug-in's cell is, by
`register_cell`; the layer (`variants.layer`) takes its cell class from this registry, never from
an if/else. A *variant* is a name for one spec of one kind (`VARIANTS`; plug-ins add theirs with
`register_variant`). `ORIGINS` says where each variant came from: "built-in", or the plug-in's
import path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from variants.gru_cell import GRUCell
from variants.leaky_cell import LeakyCell
from variants.lstm_cell import LSTMCell
from variants.rnn_cell import RNNCell
from variants.spec import CellSpec, GRUSpec, LeakySpec, LSTMSpec, RNNSpec, gru, leaky, lstm, rnn

Spec = Any  # a frozen dataclass of flags with a `kind` (LSTMSpec, GRUSpec, CellSpec, ...)


@dataclass(frozen=True)
class CellKind:
    """A registered cell kind: its cell class, the spec class of its flags (None: a plug-in cell
    whose flags are its class attribute `flags`, carried by a `CellSpec`) and where it came from."""

    name: str
    cell: type[nn.Module]
    spec: type | None = None
    origin: str = "built-in"

    @property
    def packable(self) -> bool:
        return bool(getattr(self.cell, "packable", True))

    def flags(self) -> dict[str, bool]:
        """The flags a study file may set for a variant of this kind, with their defaults."""
        if self.spec is not None:
            base = self.spec()
            return {
                f.name: getattr(base, f.name)
                for f in dataclasses.fields(base)
                if f.name != "change"
            }
        return dict(getattr(self.cell, "flags", {}) or {})


CELLS: dict[str, CellKind] = {}


def register_cell(
    name: str, cell: type[nn.Module], spec: type | None = None, origin: str = "built-in"
) -> CellKind:
    """Register cell class `cell` as kind `name` (the same name again replaces it: a reloaded
    plug-in). Its variants are specs whose `kind` is `name`."""
    for method in ("scan", "hidden_blocks"):
        if not callable(getattr(cell, method, None)):
            raise TypeError(f"cell kind {name!r}: {cell.__name__} has no method {method}()")
    CELLS[name] = CellKind(name, cell, spec, origin)
    return CELLS[name]


def cell_kind(spec_or_kind: Spec | str) -> CellKind:
    """The registered kind of a spec (or of a kind name)."""
    name = spec_or_kind if isinstance(spec_or_kind, str) else spec_or_kind.kind
    try:
        return CELLS[name]
    except KeyError:
        raise ValueError(f"unknown cell kind {name!r}; known: {', '.join(CELLS)}") from None


register_cell("lstm", LSTMCell, LSTMSpec)
register_cell("gru", GRUCell, GRUSpec)
register_cell("rnn", RNNCell, RNNSpec)
register_cell("leaky", LeakyCell, LeakySpec)

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
ORIGINS: dict[str, str] = dict.fromkeys(VARIANTS, "built-in")


def register_variant(name: str, spec: Spec, origin: str) -> None:
    """Add variant `name` (a plug-in's); its kind must be registered. Registering the same spec
    under the same name again is a no-op; another spec under a taken name is refused."""
    cell_kind(spec)
    if name in VARIANTS and VARIANTS[name] != spec:
        raise ValueError(
            f"variant name {name!r} is taken ({ORIGINS.get(name, 'built-in')}); "
            f"name the variant from {origin} differently"
        )
    VARIANTS[name] = spec
    ORIGINS[name] = origin


def get_spec(name: str) -> Spec:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}") from None


def spec_from_dict(settings: Mapping[str, Any]) -> Spec:
    """A variant declared as data, e.g. `{"coupled_input_forget": True, "peepholes": False}`
    (an LSTM; `kind: gru` for a GRU form, `kind: mylab.cells:MGU` for a registered plug-in
    cell): the kind's flags, checked."""
    settings = dict(settings)
    kind = cell_kind(settings.pop("kind", "lstm"))
    change = settings.pop("change", "")
    flags = kind.flags()
    unknown = [k for k in settings if k not in flags]
    if unknown:
        raise ValueError(
            f"unknown {kind.name} flag(s) {', '.join(map(repr, unknown))}; "
            f"valid: {', '.join(flags) or 'none'}"
        )
    bad = {k: v for k, v in settings.items() if not isinstance(v, bool)}
    if bad:
        k, v = next(iter(bad.items()))
        raise ValueError(f"variant flag {k} must be true or false, got {v!r}")
    if kind.spec is not None:
        return kind.spec(change=change, **settings)
    options = tuple(sorted((k, v) for k, v in settings.items() if v != flags[k]))
    return CellSpec(kind.name, options, change)


def spec_to_dict(spec: Spec) -> dict[str, Any]:
    """The flags of `spec` that differ from its kind's defaults (inverse of `spec_from_dict`)."""
    out: dict[str, Any] = {"kind": spec.kind} if spec.kind != "lstm" else {}
    if isinstance(spec, CellSpec):
        return {**out, **dict(spec.options)}
    base = type(spec)()
    for f in dataclasses.fields(spec):
        if f.name != "change" and getattr(spec, f.name) != getattr(base, f.name):
            out[f.name] = getattr(spec, f.name)
    return out


def build(
    name: str | Spec,
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
    spec: Spec,
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
