"""The network of every trial (Greff et al. 2017, section III; reference section 3).

One recurrent layer from the variant registry (bidirectional for TIMIT and IAM: a forward and a
backward layer whose outputs are concatenated) feeding one linear output layer; the task's loss
applies the softmax / sigmoids. Every parameter, biases included, is drawn from N(0, 0.1^2) with
the trial's generator, so a trial's initial weights are reproducible from its seed.
"""

from __future__ import annotations

import torch
from torch import nn

import variants
from tasks.base import Task

INIT_STD = 0.1


class SequenceModel(nn.Module):
    """`(T, B, M)` inputs and `(B,)` lengths -> `(T, B, K)` logits."""

    def __init__(self, rnn: nn.Module, rnn_out: int, output_size: int) -> None:
        super().__init__()
        self.rnn = rnn
        self.out = nn.Linear(rnn_out, output_size)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.rnn(x, lengths)  # (T, B, N * directions)
        return self.out(h)  # (T, B, K)


def build_model(
    task: Task, variant: str, hidden_per_direction: int, generator: torch.Generator
) -> SequenceModel:
    rnn = variants.build(
        variant, task.input_size, hidden_per_direction, bidirectional=task.bidirectional
    )
    directions = 2 if task.bidirectional else 1
    model = SequenceModel(rnn, hidden_per_direction * directions, task.output_size)
    with torch.no_grad():
        for p in model.parameters():  # in place, so views such as paper_weights() stay valid
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
    return sum(p.numel() for p in model.parameters())
