"""What is compared: recurrent layers only. Imports torch and nothing else of ours.

`VARIANTS` lists the LSTM variants of Greff et al., "LSTM: A Search Space Odyssey" (2017) in the
paper's order, the GRU, and the ungated baselines RNN and LEAKY; `build(name, input_size, hidden_size, bidirectional)` makes a layer.
`CELLS` is the registry of cell kinds (`register_cell`), through which a user's own cell becomes a
variant (`register_variant`) exactly as the built-in kinds are; `variants.contract` states (and
checks) what a cell must do.
"""

from variants.registry import (
    CELLS,
    ORIGINS,
    VARIANTS,
    CellKind,
    build,
    build_spec,
    cell_kind,
    get_spec,
    register_cell,
    register_variant,
    spec_from_dict,
    spec_to_dict,
)
from variants.spec import CellSpec, GRUSpec, LeakySpec, LSTMSpec, RNNSpec, gru, leaky, lstm, rnn

__all__ = [
    "CELLS",
    "ORIGINS",
    "VARIANTS",
    "CellKind",
    "CellSpec",
    "GRUSpec",
    "LSTMSpec",
    "LeakySpec",
    "RNNSpec",
    "build",
    "cell_kind",
    "register_cell",
    "register_variant",
    "build_spec",
    "get_spec",
    "gru",
    "leaky",
    "lstm",
    "rnn",
    "spec_from_dict",
    "spec_to_dict",
]
