"""The network of every trial (Greff et al. 2017, section III).

One recurrent layer from the variant registry (bidirectional for TIMIT and IAM: a forward and a
backward layer whose outputs are concatenated) feeding one linear output layer; the task's loss
applies the softmax / sigmoids. Every parameter, biases included, is drawn from N(0, 0.1^2) with
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


class SequenceModel(nn.Module):
    """`(T, B, M)` inputs and `(B,)` lengths -> `(T, B, K)` logits; a pack maps
    `(K, T, B, M)` and `(K, B)` -> `(K, T, B, O)` through `forward_packed`."""

    def __init__(self, rnn: nn.Module, rnn_out: int, output_size: int) -> None:
        super().__init__()
        self.rnn = rnn
        self.out = PackedLinear(rnn.trials, rnn_out, output_size)

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


def build_model(
    task: Task,
    variant: str,
    hidden_per_direction: int,
    generator: torch.Generator,
    trials: int = 1,
) -> SequenceModel:
    rnn = variants.build(
        variant,
        task.input_size,
        hidden_per_direction,
        bidirectional=task.bidirectional,
        trials=trials,
        generator=generator,
    )
    directions = 2 if task.bidirectional else 1
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
