"""TIMIT: framewise phone classification (Greff et al. 2017, section II/IV-A).

A bidirectional network reads 39 MFCC-based features per 10 ms frame and a softmax over TIMIT's 61
phone labels classifies every frame. Loss: cross-entropy summed over the frames of a sequence.
Metric `frame_error`: wrong frames / all frames over a whole split (61 classes, as in the paper).
Also reported: `frame_error_39`, the same after folding predicted and true labels to the 39
classes of Lee & Hon (1989); frames whose *true* label is `q` (the glottal stop, which the folding
drops) are left out of that count, and a `q` prediction on any other frame counts as wrong.

Sources: `real` reads the LDC corpus (LDC93S1) from `--path` in its original layout and formats;
`synthetic` (the default, a stand-in) writes an eSpeak NG corpus in the same layout and formats
under `<prepared dir>/corpus` and reads it back with the same loader (`synth.py`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tasks.base import (
    Batch,
    DataError,
    SequenceSet,
    Splits,
    Task,
    pad_time_major,
    summed,
    time_mask,
)
from tasks.timit.features import FEATURE_SIZE
from tasks.timit.loader import load_corpus
from tasks.timit.phones import PHONE_INDEX, PHONES, fold_39_index
from tasks.timit.synth import generate, split_sizes

IGNORE = -100  # target value of padded frames
_FOLD = torch.from_numpy(fold_39_index())  # (61,) -> 39-class id, -1 for q


def prepare(
    work_dir: Path, source: str, path: Path | None, size: int | None, seed: int, progress: bool
) -> tuple[Splits, dict]:
    if source == "real":
        if path is None:
            raise DataError(
                "timit: the real corpus (LDC93S1) cannot ship with the project; give "
                "--path to your copy (the folder holding TRAIN/ and TEST/)"
            )
        splits, stats = load_corpus(Path(path), progress, size=size, sizes=split_sizes)
        return splits, {"origin": str(path), **stats}
    if source != "synthetic":
        raise ValueError(f"timit: unknown source {source!r}; valid: synthetic, real")
    if path is not None:
        raise ValueError(
            "timit: --path is only for --source real (the synthetic corpus is generated)"
        )
    corpus = Path(work_dir) / "corpus"
    if corpus.exists():
        shutil.rmtree(corpus)
    gen = generate(corpus, size, seed, progress)
    splits, stats = load_corpus(corpus, progress)
    return splits, {"origin": "generated (eSpeak NG stand-in for TIMIT)", **gen, **stats}


def collate(items: list[tuple[np.ndarray, np.ndarray]]) -> Batch:
    x, lengths = pad_time_major([i[0] for i in items])  # (T, B, 39)
    y, _ = pad_time_major([i[1] for i in items], fill=IGNORE)  # (T, B) int64
    return Batch(x, lengths, y)


def sequence_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Cross-entropy of each sequence `(B,)`, summed over its frames; padded frames (-100) are
    ignored."""
    t_len, b, k = logits.shape
    ce = F.cross_entropy(
        logits.reshape(-1, k),
        batch.targets.reshape(-1).to(logits.device),
        ignore_index=IGNORE,
        reduction="none",
    )
    return ce.view(t_len, b).sum(0)


loss = summed(sequence_loss)  # (summed loss, batch size)


def errors(logits: torch.Tensor, batch: Batch) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """`frame_error` (61 classes) and `frame_error_39` (folded; true-`q` frames left out): (wrong
    frames, scored frames) as 0-d tensors on the logits' device (read by the trainer once per
    split)."""
    t = logits.shape[0]
    mask = time_mask(batch.lengths, t, logits.device)  # (T, B)
    truth = batch.targets.to(logits.device)
    mask = mask & (truth != IGNORE)
    pred = logits.argmax(dim=-1)  # (T, B)
    wrong61 = (pred != truth) & mask
    fold = _FOLD.to(logits.device)
    t39, p39 = fold[truth.clamp(min=0)], fold[pred]
    scored39 = mask & (t39 >= 0)
    wrong39 = (p39 != t39) & scored39
    return {
        "frame_error": (wrong61.sum(), mask.sum()),
        "frame_error_39": (wrong39.sum(), scored39.sum()),
    }


def tiny(rng: np.random.Generator) -> Splits:
    """Feature sequences (no audio) whose frames carry a phone-dependent mean: easy to overfit."""
    classes = np.array([PHONE_INDEX[p] for p in ("h#", "aa", "ao", "s", "sh", "iy", "n", "tcl")])
    protos = rng.normal(0.0, 1.5, (len(classes), FEATURE_SIZE)).astype(np.float32)

    def sequence() -> tuple[np.ndarray, np.ndarray]:
        durations = rng.integers(2, 6, int(rng.integers(4, 9)))
        which = rng.integers(0, len(classes), len(durations))
        k = np.repeat(which, durations)
        x = protos[k] + rng.normal(0.0, 0.3, (len(k), FEATURE_SIZE)).astype(np.float32)
        return x.astype(np.float32), classes[k].astype(np.int64)

    def split(n: int, name: str) -> SequenceSet:
        pairs = [sequence() for _ in range(n)]
        return SequenceSet(
            [p[0] for p in pairs], [p[1] for p in pairs], [f"{name}-{i}" for i in range(n)]
        )

    return {"train": split(12, "train"), "valid": split(4, "valid"), "test": split(4, "test")}


TASK = Task(
    name="timit",
    title="TIMIT (framewise phone classification, 61 classes)",
    input_size=FEATURE_SIZE,
    output_size=len(PHONES),
    bidirectional=True,
    metric="frame_error",
    metric_direction="minimize",
    loss_name="cross-entropy summed over frames",
    sources=("synthetic", "real"),
    default_source="synthetic",
    stand_in=("synthetic",),
    description="3696/400/192 utterances (Halberstadt dev + core test), 39 MFCC features, 61 phones; "
    "real = LDC93S1 from --path, synthetic = eSpeak NG corpus in the same layout",
    prepare=prepare,
    collate=collate,
    loss=loss,
    sequence_loss=sequence_loss,
    errors=errors,
    tiny=tiny,
    data_version=3,  # 2: degraded speech (tasks/timit/augment.py); 3: majority frame labels
    data_notes=lambda meta: [
        f"frame labels: {meta.get('frame_label_rule', 'unknown rule')}",
        "frame error over all frames of the set, 61 classes (39-class score without q frames)",
    ],
)
