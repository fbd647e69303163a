"""What is compared: recurrent layers only. Imports torch and nothing else of ours.

`VARIANTS` lists the LSTM variants of Greff et al., "LSTM: A Search Space Odyssey" (2017) in the
paper's order, the GRU, and the ungated baselines RNN and LEAKY; `build(name, input_size,
hidden_size, bidirectional)` makes a layer.
"""

from variants.registry import VARIANTS, build, build_spec, get_spec, spec_from_dict, spec_to_dict
from variants.spec import GRUSpec, LeakySpec, LSTMSpec, RNNSpec, gru, leaky, lstm, rnn

__all__ = [
    "VARIANTS",
    "GRUSpec",
    "LSTMSpec",
    "LeakySpec",
    "RNNSpec",
    "build",
    "build_spec",
    "get_spec",
    "gru",
    "leaky",
    "lstm",
    "rnn",
    "spec_from_dict",
    "spec_to_dict",
]
