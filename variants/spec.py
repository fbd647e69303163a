"""Variant specs as data: one frozen set of flags per variant (Greff et al. 2017, section III).

Each flag removes or changes exactly one piece of the vanilla LSTM; the generic cell in
`variants.lstm` reads the flags and allocates only the weights the resulting equations use.
A spec's class attribute `kind` names the cell that runs it (`variants.registry.CELLS`): "lstm",
"gru", and the ungated baselines "rnn" and "leaky".
"""

from __future__ import annotations

from dataclasses import dataclass

# The one flag table of the fast kernels (variants/fast): bit k of a spec's flag word is field k.
# The compiled kernel receives these bits (and the registry's flag words) from a header generated
# from this table; a spec with a field not listed here runs in the reference loop instead.
KERNEL_FLAGS = (
    "input_gate",
    "forget_gate",
    "output_gate",
    "input_activation",
    "output_activation",
    "peepholes",
    "coupled_input_forget",
    "full_gate_recurrence",
)


@dataclass(frozen=True)
class LSTMSpec:
    input_gate: bool = True  # NIG: i = 1
    forget_gate: bool = True  # NFG: f = 1
    output_gate: bool = True  # NOG: o = 1
    input_activation: bool = True  # NIAF: g(x) = x
    output_activation: bool = True  # NOAF: h(x) = x
    peepholes: bool = True  # NP: no p_i, p_f, p_o
    coupled_input_forget: bool = False  # CIFG: f = 1 - i, no forget-gate weights
    full_gate_recurrence: bool = False  # FGR: every gate sees i, f, o of t-1 through R_ab
    change: str = ""  # the equation this variant changes, for tables

    kind = "lstm"

    def __post_init__(self) -> None:
        if self.coupled_input_forget and not (self.input_gate and self.forget_gate):
            raise ValueError(
                "coupled_input_forget needs both an input gate and a forget gate to couple"
            )
        if self.full_gate_recurrence and not (
            self.input_gate
            and self.forget_gate
            and self.output_gate
            and not self.coupled_input_forget
        ):
            raise ValueError("full_gate_recurrence needs the three independent gates i, f, o")

    @property
    def weighted_gates(self) -> tuple[str, ...]:
        """Blocks with their own W, R, b, in storage order (PyTorch's i, f, g, o; z is g)."""
        gates = []
        if self.input_gate:
            gates.append("i")
        if self.forget_gate and not self.coupled_input_forget:
            gates.append("f")
        gates.append("z")
        if self.output_gate:
            gates.append("o")
        return tuple(gates)

    @property
    def peephole_gates(self) -> tuple[str, ...]:
        if not self.peepholes:
            return ()
        return tuple(g for g in self.weighted_gates if g != "z")

    @property
    def recurrent_gates(self) -> tuple[str, ...]:
        """Gates whose activations at t-1 feed every gate at t (FGR), in order i, f, o."""
        return ("i", "f", "o") if self.full_gate_recurrence else ()


@dataclass(frozen=True)
class GRUSpec:
    """Gated recurrent unit. `reset_after=True` is the cuDNN / torch.nn.GRU form
    n = tanh(W_n x + b_in + r * (U_n h + b_hn)); False is Chung et al. 2014's
    n = tanh(W_n x + U_n (r * h) + b_n)."""

    reset_after: bool = True
    change: str = ""

    kind = "gru"


@dataclass(frozen=True)
class CellSpec:
    """A variant of a cell kind that has no spec class of its own (a plug-in cell): the kind
    (the cell class's import path, e.g. `mylab.cells:MGU`, or a registered kind name) and the
    flags a study file set for it, as sorted `(name, value)` pairs (hashable; `flags()` gives
    them as a dict with the cell's defaults filled in by `variants.registry`)."""

    kind: str
    options: tuple[tuple[str, bool], ...] = ()
    change: str = ""

    def flag(self, name: str, default: bool = False) -> bool:
        return dict(self.options).get(name, default)


@dataclass(frozen=True)
class RNNSpec:
    """The plain tanh RNN (Elman 1990), torch.nn.RNN's form: h = tanh(W x + b_ih + R h' + b_hh).
    No flags: the baseline that asks what gating buys at all."""

    change: str = ""

    kind = "rnn"


@dataclass(frozen=True)
class LeakySpec:
    """Leaky-integrator units with learned per-unit time constants (`variants.leaky_cell`):
    h = (1 - a) * h' + a * tanh(W x + R h' + b), a = sigmoid(tau). No flags."""

    change: str = ""

    kind = "leaky"


def lstm(change: str = "", **flags: bool) -> LSTMSpec:
    return LSTMSpec(change=change, **flags)


def gru(change: str = "", **flags: bool) -> GRUSpec:
    return GRUSpec(change=change, **flags)


def rnn(change: str = "") -> RNNSpec:
    return RNNSpec(change=change)


def leaky(change: str = "") -> LeakySpec:
    return LeakySpec(change=change)
