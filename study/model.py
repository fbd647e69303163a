"""The network of every trial (Greff et al. 2017, section III).

One recurrent layer from the variant registry (bidirectional for TIMIT and IAM: a forward and a
backward layer whose outputs are concatenated) feeding one linear output layer; the task's loss
applies the softmax / sigmoids. The paper's network has one layer; the `layers` setting stacks
up to three (`Stack`: each layer reads the concatenated directions of the one below, and with
`residual` each layer above the first adds its input to its output). Every parameter, biases included, is drawn from N(0, 0.1^2) with
the trial's generator, in registration order, so a trial's initial weights are reproducible from
its seed.

A model holds K trials (a pack, `study.pack`): the layer's and the output layer's parameters
carry a leading trial dimension; a single trial is K = 1.
"""

from __future__ import annotations

import torch
from torch import nn

import variants
from tasks.base import Task

INIT_STD = 0.1


class PackedLinear(nn.Module):
    """K independent linear layers: `(K, R, D)` -> `(K, R, O)`."""

    def __init__(self, trials: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(trials, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(trials, out_features))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), h, self.weight.transpose(1, 2))

    def hidden_blocks(self, directions: int) -> dict[str, tuple[int | None, ...]]:
        """As the cells' `hidden_blocks`: the input features are `directions` blocks of units."""
        return {"weight": (None, directions), "bias": (None,)}


class Stack(nn.Module):
    """Recurrent layers on top of each other, for K trials: layer l + 1 reads layer l's output
    (its directions concatenated). With `residual`, a layer above the first outputs its own
    output plus its input (equal widths: both are N * directions); padded steps stay zero."""

    def __init__(self, layers: list[nn.Module], residual: bool = False) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.residual = residual
        self.trials, self.directions = layers[0].trials, layers[-1].directions

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """`x (T, B, M)`, `lengths (B,)` -> `(T, B, N * directions)` (one trial)."""
        if self.trials != 1:
            raise ValueError(f"a pack of {self.trials} trials runs through forward_packed")
        lengths = torch.as_tensor(lengths, dtype=torch.int64)
        return self.forward_packed(x.unsqueeze(0), lengths.unsqueeze(0))[0]

    def forward_packed(
        self, x: torch.Tensor, lengths: torch.Tensor, active: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`x (K, T, B, M)`, `lengths (K, B)` -> `(K, T, B, N * directions)`."""
        h = x
        for k, layer in enumerate(self.layers):
            out = layer.forward_packed(h, lengths, active=active)  # (K, T, B, N * directions)
            h = out + h if self.residual and k > 0 else out
        return h


class SequenceModel(nn.Module):
    """`(T, B, M)` inputs and `(B,)` lengths -> `(T, B, K)` logits; a pack maps
    `(K, T, B, M)` and `(K, B)` -> `(K, T, B, O)` through `forward_packed`."""

    def __init__(self, rnn: nn.Module, rnn_out: int, output_size: int) -> None:
        super().__init__()
        self.rnn = rnn
        self.out = PackedLinear(rnn.trials, rnn_out, output_size)
        self._unit_index: dict[tuple[int, str], torch.Tensor] = {}

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.rnn(x, lengths)  # (T, B, N * directions)
        t_len, batch, d = h.shape
        return self.out(h.reshape(1, t_len * batch, d)).view(t_len, batch, -1)  # (T, B, K)

    def forward_packed(
        self, x: torch.Tensor, lengths: torch.Tensor, active: torch.Tensor | None = None
    ) -> torch.Tensor:
        h = self.rnn.forward_packed(x, lengths, active=active)  # (K, T, B, N * directions)
        k, t_len, batch, d = h.shape
        return self.out(h.reshape(k, t_len * batch, d)).view(k, t_len, batch, -1)

    def forward_trials(
        self, x: torch.Tensor, lengths: torch.Tensor, trials: list[int], own_units: bool
    ) -> list[torch.Tensor]:
        """The logits `(T_k, B, O)` of each of `trials` (slots of the pack), `T_k` its longest
        sequence, from `x (K, T, B, M)` and `lengths (K, B)`. With `own_units` each trial's output
        layer is its own matrix product over its own units (`units`), on fresh (aligned) copies:
        with the compiled kernels a trial then computes exactly what it computes alone. Else one
        batched product over the padded pack (CUDA: one launch for all trials)."""
        active = torch.zeros(self.rnn.trials, dtype=torch.bool)
        active[trials] = True
        h = self.rnn.forward_packed(x, lengths, active=active)  # (K, T, B, N * directions)
        steps = lengths.max(dim=1).values.tolist()
        if not own_units:
            k, t_len, batch, d = h.shape
            logits = self.out(h.reshape(k, t_len * batch, d)).view(k, t_len, batch, -1)
            return [logits[s, : steps[s]] for s in trials]
        hs, ws, bs = h.unbind(0), self.out.weight.unbind(0), self.out.bias.unbind(0)
        out = []
        for s in trials:
            index = self.unit_index(s, h.device)  # (D_k,)
            h_s = hs[s][: steps[s]].index_select(2, index)  # (T_k, B, D_k), a fresh copy
            t_len, batch, d = h_s.shape
            w = ws[s].index_select(1, index)  # (O, D_k)
            out.append(torch.addmm(bs[s], h_s.view(t_len * batch, d), w.t()).view(t_len, batch, -1))
        return out

    def units(self, s: int) -> int:
        """Slot `s`'s real hidden units per direction."""
        return int(self.rnn.cells[0].units[s])

    def unit_index(self, s: int, device: torch.device) -> torch.Tensor:
        """The output layer's input features of slot `s`'s real units (each direction's first)."""
        n, units = self.rnn.hidden_size, self.units(s)
        key = (units, str(device))
        if key not in self._unit_index:  # made once per width: this runs every step
            index = [torch.arange(units) + d * n for d in range(self.rnn.directions)]
            self._unit_index[key] = torch.cat(index).to(device)
        return self._unit_index[key]


def build_model(
    task: Task,
    variant: str,
    hidden_per_direction: int,
    generator: torch.Generator,
    trials: int = 1,
    layers: int = 1,
    residual: bool = False,
) -> SequenceModel:
    """The model of a trial (or a pack of `trials`): `layers` recurrent layers of the variant
    (one is the paper's network; more make a `Stack`), then the output layer. The layers draw
    their weights in order from `generator`, then the output layer."""
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
        raise ValueError(f"layers must be an integer >= 1, got {layers!r}")
    if residual and layers < 2:
        raise ValueError("residual connections join stacked layers; they need layers >= 2")
    directions = 2 if task.bidirectional else 1
    stack = []
    for k in range(layers):
        layer = variants.build(
            variant,
            task.input_size if k == 0 else hidden_per_direction * directions,
            hidden_per_direction,
            bidirectional=task.bidirectional,
            trials=trials,
            generator=generator,
        )
        if k > 0:  # its input is the units of the layer below: a pack pads W's columns by unit
            for cell in layer.cells:
                cell.input_blocks = directions
        stack.append(layer)
    rnn = stack[0] if layers == 1 else Stack(stack, residual)  # one layer: the paper's model
    model = SequenceModel(rnn, hidden_per_direction * directions, task.output_size)
    with torch.no_grad():  # the output layer; the layer drew its own weights from `generator`
        for p in model.out.parameters():
            p.normal_(0.0, INIT_STD, generator=generator)
    return model


def hidden_per_direction(hidden_size: int, meaning: str, bidirectional: bool) -> int:
    """Blocks per direction: "total" splits the sampled size over both directions."""
    if meaning == "per_direction" or not bidirectional:
        return hidden_size
    if meaning == "total":
        return max(1, hidden_size // 2)
    raise ValueError(f"unknown hidden_size_meaning {meaning!r}; valid: per_direction, total")


def count_parameters(model: nn.Module) -> int:
    """Parameters of one trial (a pack's are divided by its trials)."""
    return sum(p.numel() for p in model.parameters()) // model.rnn.trials
