"""CTC loss, best-path decoding and character errors for IAM-OnDB (paper section IV-B).

Loss: `torch.nn.functional.ctc_loss` on log-softmax outputs, blank 0, summed over the sequences
of a batch (each sequence's loss is already a sum over its frames), returned with the number of
sequences. Metric: best-path decoding (argmax per frame, merge repeats, drop blanks), no
dictionary or language model; `char_error` = total Levenshtein edits / total reference characters.
Edit distance comes from `rapidfuzz.distance.Levenshtein` (maintained, C++ and fast on whole
corpora, compares sequences of label ids directly) rather than a hand-written dynamic program.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from rapidfuzz.distance import Levenshtein

from tasks.base import Batch, pad_time_major, summed
from tasks.iam_online.alphabet import BLANK


def collate(items: list[tuple[np.ndarray, np.ndarray]]) -> Batch:
    """Inputs padded to `(T, B, 4)`; targets concatenated `(sum L_i,)` int64 with lengths `(B,)`."""
    x, lengths = pad_time_major([i[0] for i in items])
    ys = [np.asarray(i[1], dtype=np.int64) for i in items]
    targets = torch.from_numpy(np.concatenate(ys)) if ys else torch.zeros(0, dtype=torch.int64)
    return Batch(x, lengths, targets, torch.tensor([len(y) for y in ys], dtype=torch.int64))


def sequence_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """CTC loss of each sequence `(B,)` (`logits (T, B, 82)`)."""
    log_probs = F.log_softmax(logits, dim=-1)  # (T, B, 82)
    return F.ctc_loss(
        log_probs,
        batch.targets,
        batch.lengths,
        batch.target_lengths,
        blank=BLANK,
        reduction="none",
        zero_infinity=False,
    )


loss = summed(sequence_loss)  # (summed CTC loss, batch size)


def best_path(frame_ids: np.ndarray | list[int]) -> list[int]:
    """Merge repeated labels, then drop blanks: [a, a, -, a] -> [a, a]."""
    out: list[int] = []
    prev = None
    for k in frame_ids:
        k = int(k)
        if k != prev and k != BLANK:
            out.append(k)
        prev = k
    return out


def decode_batch(logits: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Best-path label sequences of each batch element, within its own length."""
    arg = logits.detach().argmax(dim=-1).cpu().numpy()  # (T, B)
    return [best_path(arg[: int(n), b]) for b, n in enumerate(lengths.tolist())]


def split_targets(batch: Batch) -> list[list[int]]:
    ends = np.cumsum(batch.target_lengths.tolist())
    flat = batch.targets.cpu().tolist()
    return [flat[a:b] for a, b in zip(np.concatenate([[0], ends[:-1]]), ends, strict=True)]


def edit_errors(hyps: list[list[int]], refs: list[list[int]]) -> tuple[int, int]:
    """(total Levenshtein distance, total reference length) over paired sequences."""
    edits = sum(Levenshtein.distance(h, r) for h, r in zip(hyps, refs, strict=True))
    return int(edits), int(sum(len(r) for r in refs))


def errors(logits: torch.Tensor, batch: Batch) -> dict[str, tuple[float, int]]:
    edits, count = edit_errors(decode_batch(logits, batch.lengths), split_targets(batch))
    return {"char_error": (float(edits), count)}
