"""JSB Chorales: next-step prediction of a polyphonic piano roll (Greff et al. 2017, section IV-C).

88 binary inputs and outputs for MIDI pitches 21-108; the network sees frame t and predicts frame
t+1 through 88 independent sigmoids. Loss: Bernoulli negative log-likelihood summed over keys and
frames of a sequence. Metric: NLL per predicted time step (summed over the 88 keys), averaged over
all predicted steps of a split; predicting 0.5 everywhere scores 88 ln 2 = 61.0.

Data: the Boulanger-Lewandowski et al. (2012) split, shipped in `tasks/data/jsb_chorales.npz`
(converted from the standard pickle; see the README). `--path` reads a user's own
`JSB Chorales.pickle` (through a restricted unpickler) or its JSON equivalent.
"""

from __future__ import annotations

import io
import json
import pickle
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tasks.base import (
    SPLITS,
    Batch,
    DataError,
    SequenceSet,
    Splits,
    Task,
    pad_time_major,
    summed,
    time_mask,
)

LOWEST, KEYS = 21, 88  # MIDI 21 (A0) .. 108 (C8)


# ----------------------------------------------------------------------------- safe reading


class _RestrictedUnpickler(pickle.Unpickler):
    """Allows only the globals the standard JSB pickle needs: NumPy scalars and dtypes.

    Anything else (os.system, builtins.eval, ...) is refused before it can be called.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def safe_unpickle(data: bytes, origin: str = "pickle") -> object:
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as e:
        raise DataError(
            f"{origin}: not a plain JSB Chorales pickle ({e}); refused to load it"
        ) from e
    except Exception as e:  # truncated or garbled files raise all sorts of errors
        raise DataError(f"{origin}: unreadable pickle ({type(e).__name__}: {e})") from e


def _validate(raw: object, origin: str) -> dict[str, list[list[list[int]]]]:
    """Check the dict-of-splits structure and turn every pitch into a Python int."""
    if not isinstance(raw, dict) or not all(s in raw for s in SPLITS):
        keys = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise DataError(f"{origin}: expected a dict with keys train, valid, test; found {keys}")
    out: dict[str, list[list[list[int]]]] = {}
    for split in SPLITS:
        seqs = []
        for i, seq in enumerate(raw[split]):
            frames = []
            for frame in seq:
                try:
                    pitches = sorted(int(p) for p in frame)
                except (TypeError, ValueError):
                    raise DataError(
                        f"{origin}: {split}[{i}] has a frame that is not a list of pitches"
                    ) from None
                bad = [p for p in pitches if not LOWEST <= p < LOWEST + KEYS]
                if bad:
                    raise DataError(f"{origin}: {split}[{i}] has pitches {bad} outside MIDI 21-108")
                frames.append(pitches)
            if len(frames) < 2:
                raise DataError(f"{origin}: {split}[{i}] has {len(frames)} frames; need at least 2")
            seqs.append(frames)
        out[split] = seqs
    return out


def read_file(path: Path) -> dict[str, list[list[list[int]]]]:
    """A user's `JSB Chorales.pickle` or `.json`: {split: [sequence: [frame: [pitch, ...]]]}."""
    if path.is_dir():
        found = sorted(
            p for p in path.iterdir() if p.suffix.lower() in (".pickle", ".pkl", ".json")
        )
        if not found:
            raise DataError(f"{path}: no .pickle or .json file with JSB Chorales in this folder")
        path = found[0]
    data = path.read_bytes()
    if path.suffix.lower() == ".json":
        try:
            raw = json.loads(data)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e})") from e
    else:
        raw = safe_unpickle(data, str(path))
    return _validate(raw, str(path))


def bundled() -> dict[str, list[list[list[int]]]]:
    """The shipped copy of the standard split."""
    ref = resources.files("tasks") / "data" / "jsb_chorales.npz"
    with resources.as_file(ref) as p, np.load(p, allow_pickle=False) as z:
        out = {}
        for split in SPLITS:
            pitches = z[f"{split}_pitches"].astype(int).tolist()
            sizes = np.cumsum([0, *z[f"{split}_frame_sizes"].tolist()])
            frames = [pitches[a:b] for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
            ends = np.cumsum([0, *z[f"{split}_lengths"].tolist()])
            out[split] = [frames[a:b] for a, b in zip(ends[:-1], ends[1:], strict=True)]
    return out


# ----------------------------------------------------------------------------- the task


def piano_roll(frames: list[list[int]]) -> np.ndarray:
    roll = np.zeros((len(frames), KEYS), dtype=np.float32)
    for t, pitches in enumerate(frames):
        roll[t, [p - LOWEST for p in pitches]] = 1.0
    return roll


def to_sequences(chorales: list[list[list[int]]], prefix: str) -> SequenceSet:
    """Input frame t, target frame t+1: a chorale of L frames gives L-1 predicted steps."""
    rolls = [piano_roll(c) for c in chorales]
    return SequenceSet(
        [r[:-1] for r in rolls],
        [r[1:] for r in rolls],
        [f"{prefix}{i:03d}" for i in range(len(rolls))],
    )


def prepare(
    work_dir: Path, source: str, path: Path | None, size: int | None, seed: int, progress: bool
) -> tuple[Splits, dict]:
    raw = read_file(path) if path is not None else bundled()
    if size is not None:  # a smaller study: the first `size` training chorales, proportional others
        raw = {s: raw[s][: max(1, size if s == "train" else size // 3)] for s in SPLITS}
    splits = {s: to_sequences(raw[s], f"{s}-") for s in SPLITS}
    return splits, {"origin": str(path) if path else "bundled Boulanger-Lewandowski 2012 split"}


def collate(items: list[tuple[np.ndarray, np.ndarray]]) -> Batch:
    x, lengths = pad_time_major([i[0] for i in items])
    y, _ = pad_time_major([i[1] for i in items])
    return Batch(x, lengths, y)  # targets: (T, B, 88)


def _nll(logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked elementwise NLL `(T, B, 88)` and the `(T, B)` mask."""
    mask = time_mask(batch.lengths, logits.shape[0], logits.device)
    nll = F.binary_cross_entropy_with_logits(logits, batch.targets, reduction="none")
    return torch.where(mask.unsqueeze(-1), nll, 0.0), mask  # padding adds 0, even if not finite


def sequence_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """NLL of each sequence `(B,)`, summed over its keys and frames."""
    nll, _ = _nll(logits, batch)
    return nll.sum(dim=(0, 2))


loss = summed(sequence_loss)  # (summed loss, batch size)


def errors(logits: torch.Tensor, batch: Batch) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """`nll`: (summed NLL, predicted frames) as 0-d tensors on the logits' device (read by the
    trainer once per split)."""
    nll, mask = _nll(logits, batch)
    return {"nll": (nll.sum(), mask.sum())}


def tiny(rng: np.random.Generator) -> Splits:
    """Short repeating chord patterns: learnable, so a small LSTM can overfit them."""

    def chorale() -> list[list[int]]:
        root = int(rng.integers(48, 60))
        chords = [
            [root, root + 4, root + 7],
            [root + 5, root + 9, root + 12],
            [root + 7, root + 11, root + 14],
        ]
        return [chords[t % 3] for t in range(int(rng.integers(8, 16)))]

    return {
        s: to_sequences([chorale() for _ in range(n)], f"{s}-")
        for s, n in (("train", 12), ("valid", 4), ("test", 4))
    }


TASK = Task(
    name="jsb_chorales",
    title="JSB Chorales (polyphonic music, next-step NLL)",
    input_size=KEYS,
    output_size=KEYS,
    bidirectional=False,
    metric="nll",
    metric_direction="minimize",
    loss_name="Bernoulli NLL summed over keys and frames",
    sources=("real",),
    default_source="real",
    stand_in=(),
    description="229/76/77 Bach chorales, 88 keys; the real data ships with the package",
    prepare=prepare,
    collate=collate,
    loss=loss,
    sequence_loss=sequence_loss,
    errors=errors,
    tiny=tiny,
    data_notes=lambda meta: [
        "NLL summed over the 88 keys per predicted frame; a chorale of L frames gives L - 1 "
        "predictions (its first frame is never scored)"
    ],
)
