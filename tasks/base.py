"""The task contract shared by TIMIT, IAM-OnDB and JSB Chorales.

A task is a frozen spec plus plain functions: where its data comes from (`prepare`),
how sequences become a time-major batch (`collate`), the loss as a *sum* over frames of each
sequence together with the number of sequences (AlgoPerf style), and its errors as
`(sum, count)` pairs so that split metrics are corpus-level ratios, never means of batch means
(numbers or 0-d tensors: a tensor stays on the device until the trainer reads the split's sums in
one go).
A metric that is not a ratio names its way of combining the batches' pairs in `Task.aggregate`
(`AGGREGATES`; `split_metrics` applies them).

Prepared data (what `odyssey data prepare` writes and all that training reads) lives in
`<data_dir>/<task>/<key>/` as one `.npz` per split (no pickles) plus `meta.json`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

SPLITS = ("train", "valid", "test")
# how a split metric combines its batches' (value, count) pairs (`aggregate`)
AGGREGATES = ("ratio", "min", "max", "prefix")
SOURCES = ("synthetic", "real")


class DataError(ValueError):
    """Bad or missing input data; the message names the file and what is wrong with it."""


@dataclass(frozen=True)
class SequenceSet:
    """A split: ragged inputs `(T_i, M)` float32 and targets whose shape the task defines.

    Frame-labelled tasks: targets `(T_i,)` int64. JSB: `(T_i, 88)` float32. CTC: `(L_i,)` int64.
    """

    inputs: list[np.ndarray]
    targets: list[np.ndarray]
    ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.inputs) != len(self.targets):
            raise ValueError(f"{len(self.inputs)} inputs but {len(self.targets)} targets")
        if self.ids and len(self.ids) != len(self.inputs):
            raise ValueError(f"{len(self.ids)} ids for {len(self.inputs)} sequences")

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def frames(self) -> int:
        return int(sum(len(x) for x in self.inputs))

    def subset(self, index: Sequence[int]) -> SequenceSet:
        return SequenceSet(
            [self.inputs[i] for i in index],
            [self.targets[i] for i in index],
            [self.ids[i] for i in index] if self.ids else [],
        )

    def save(self, path: Path) -> None:
        """Write as one npz of concatenated arrays plus offsets (readable without pickle)."""
        in_off = np.cumsum([0] + [len(x) for x in self.inputs])
        tg_off = np.cumsum([0] + [len(y) for y in self.targets])
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(
            tmp,
            inputs=np.concatenate(self.inputs) if self.inputs else np.zeros((0, 0), np.float32),
            input_offsets=in_off,
            targets=np.concatenate(self.targets) if self.targets else np.zeros((0,), np.int64),
            target_offsets=tg_off,
            ids=np.array(self.ids, dtype=np.str_),
        )
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> SequenceSet:
        with np.load(path, allow_pickle=False) as z:
            x, xo, y, yo = z["inputs"], z["input_offsets"], z["targets"], z["target_offsets"]
            ids = [str(s) for s in z["ids"]]
        return cls(
            [x[a:b] for a, b in zip(xo[:-1], xo[1:], strict=True)],
            [y[a:b] for a, b in zip(yo[:-1], yo[1:], strict=True)],
            ids,
        )


Splits = dict[str, SequenceSet]


@dataclass
class Batch:
    """A time-major minibatch. `targets` layout is the task's (see its `collate`)."""

    x: torch.Tensor  # (T, B, M) float32, zero-padded
    lengths: torch.Tensor  # (B,) int64, on the CPU (used for masking and packing)
    targets: torch.Tensor
    target_lengths: torch.Tensor | None = None  # (B,) for CTC

    def to(self, device: torch.device | str) -> Batch:
        tl = self.target_lengths
        return Batch(self.x.to(device), self.lengths, self.targets.to(device), tl)

    @property
    def size(self) -> int:
        return int(self.lengths.numel())


# prepare(work_dir, source, path, size, seed, progress) -> (splits, extra metadata).
# work_dir is the task's prepared folder; a generated corpus is written below it (work_dir/"corpus").
PrepareFn = Callable[[Path, str, Path | None, int | None, int, bool], tuple[Splits, dict]]


@dataclass(frozen=True)
class Task:
    name: str
    title: str
    input_size: int
    output_size: int
    bidirectional: bool
    metric: str  # primary metric key in `errors(...)`, e.g. "frame_error"
    metric_direction: str  # "minimize" for all three tasks of the paper
    loss_name: str
    sources: tuple[str, ...]  # data sources this task can prepare
    default_source: str
    stand_in: tuple[str, ...]  # sources whose corpora are generated stand-ins, not the real corpus
    description: str
    prepare: PrepareFn
    collate: Callable[[list[tuple[np.ndarray, np.ndarray]]], Batch]
    loss: Callable[[torch.Tensor, Batch], tuple[torch.Tensor, int]]  # (summed loss, n sequences)
    # the loss of each sequence `(B,)` (its sum is `loss`): packs of trials (`study.pack`) take
    # each trial's share of a batch that holds the sequences of all of them
    sequence_loss: Callable[[torch.Tensor, Batch], torch.Tensor]
    # metric -> (sum, count), each a number or a 0-d tensor (left on the device: the trainer
    # reads a split's tensors in one go)
    errors: Callable[
        [torch.Tensor, Batch], dict[str, tuple[float | torch.Tensor, int | torch.Tensor]]
    ]
    tiny: Callable[[np.random.Generator], Splits]  # small generated dataset for tests
    # bumped whenever prepare's output changes for the same arguments (a new generator, new
    # features): prepared data of another version is stale and is prepared again
    data_version: int = 1
    # what a reader of results must know about the prepared data: lines dropped, scoring
    # conventions (one sentence each, from the data's meta); reports print them
    data_notes: Callable[[dict], list[str]] = lambda meta: []
    # metric -> how its batches' pairs combine (`AGGREGATES`); a metric not named is a ratio
    aggregate: Mapping[str, str] = field(default_factory=dict, hash=False)  # tasks stay hashable
    # validation and test deliberately repeat training sequences (counting scores every n up to
    # the largest handled, the trained ones included); the contract's disjointness check is off
    overlapping_splits: bool = False

    def __post_init__(self) -> None:
        bad = {m: k for m, k in self.aggregate.items() if k not in AGGREGATES}
        if bad:
            raise ValueError(f"task {self.name}: unknown aggregate {bad}; valid: {AGGREGATES}")


# ----------------------------------------------------------------------------- split metrics


def aggregate(kind: str, pairs: Sequence[tuple[float, float]]) -> float:
    """A split metric from its batches' `(value, count)` pairs: "ratio" sum(values) / sum(counts)
    (a corpus-level rate); "min" / "max" the smallest / largest value; "prefix" min(smallest
    value, largest count), for a score that is the longest run of correct cases from the first:
    each batch gives (its first failing case - 1, or inf when none fails; its last case). NaN for
    no pairs or no counts."""
    if not pairs:
        return math.nan
    values = [float(v) for v, _ in pairs]
    counts = [float(c) for _, c in pairs]
    if kind == "ratio":
        total = sum(counts)
        return sum(values) / total if total else math.nan
    if kind == "min":
        return min(values)
    if kind == "max":
        return max(values)
    if kind == "prefix":
        return min(min(values), max(counts))
    raise ValueError(f"unknown aggregate {kind!r}; valid: {', '.join(AGGREGATES)}")


def split_metrics(
    task: Task, pairs: Mapping[str, Sequence[tuple[float, float]]]
) -> dict[str, float]:
    """Every metric of a split from its batches' pairs (metric -> [(value, count), ...])."""
    return {name: aggregate(task.aggregate.get(name, "ratio"), p) for name, p in pairs.items()}


# ----------------------------------------------------------------------------- collation helpers


def summed(
    sequence_loss: Callable[[torch.Tensor, Batch], torch.Tensor],
) -> Callable[[torch.Tensor, Batch], tuple[torch.Tensor, int]]:
    """A task's `loss` from its `sequence_loss`: the sum over the batch and the batch size."""

    def loss(logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, int]:
        return sequence_loss(logits, batch).sum(), batch.size

    return loss


def pad_time_major(
    seqs: Sequence[np.ndarray], fill: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ragged `(T_i, ...)` arrays into `(T_max, B, ...)` and return it with lengths `(B,)`."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
    t_max = int(lengths.max()) if len(seqs) else 0
    first = np.asarray(seqs[0])
    out = np.full((t_max, len(seqs), *first.shape[1:]), fill, dtype=first.dtype)
    for b, s in enumerate(seqs):
        out[: len(s), b] = s
    return torch.from_numpy(out), lengths


def time_mask(
    lengths: torch.Tensor, t_max: int, device: torch.device | None = None
) -> torch.Tensor:
    """`(T, B)` bool mask, True where t < length."""
    steps = torch.arange(t_max, device=device).unsqueeze(1)
    # lengths live on the host and are never written after collation: the copy need not wait
    return steps < lengths.to(device, non_blocking=True).unsqueeze(0)


# ------------------------------------------------------------------------ prepared data on disk


def default_data_dir() -> Path:
    """Per-user cache folder; `ODYSSEY_DATA_DIR` overrides it."""
    env = os.environ.get("ODYSSEY_DATA_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lstm-odyssey" / "data"


def dataset_key(source: str, size: int | None = None, seed: int = 0) -> str:
    """Folder name of one prepared dataset, e.g. `synthetic`, `synthetic-n200-seed3`, `real`."""
    key = source
    if size is not None:
        key += f"-n{size}"
    if source != "real" and seed != 0:
        key += f"-seed{seed}"
    return key


def prepared_dir(data_dir: Path, task: str, key: str) -> Path:
    return Path(data_dir) / task / key


def save_prepared(out_dir: Path, splits: Splits, meta: dict) -> dict:
    """Write the splits and `meta.json` (written last: its presence marks a complete dataset)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        splits[split].save(out_dir / f"{split}.npz")
    meta = dict(meta)
    meta["splits"] = {s: {"sequences": len(splits[s]), "frames": splits[s].frames} for s in SPLITS}
    meta["created_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    tmp = out_dir / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, out_dir / "meta.json")
    return meta


def read_meta(out_dir: Path) -> dict:
    path = out_dir / "meta.json"
    if not path.is_file():
        raise DataError(
            f"no prepared data in {out_dir} (missing meta.json); run `odyssey data prepare`"
        )
    return json.loads(path.read_text())


def load_prepared(out_dir: Path) -> tuple[Splits, dict]:
    meta = read_meta(out_dir)
    return {s: SequenceSet.load(out_dir / f"{s}.npz") for s in SPLITS}, meta


def list_prepared(data_dir: Path, task: str) -> list[Path]:
    """Complete prepared datasets of a task, newest first."""
    root = Path(data_dir) / task
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if (p / "meta.json").is_file()]
    return sorted(found, key=lambda p: (p / "meta.json").stat().st_mtime, reverse=True)


def remove_prepared(out_dir: Path) -> None:
    if out_dir.exists():
        shutil.rmtree(out_dir)
