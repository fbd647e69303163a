"""From an IAM-OnDB folder (real or generated) to the prepared splits training reads.

`prepare` writes the generated corpus first when the source is "synthetic", then both sources
go through the same reader (`corpus.read_corpus`), features (`features.point_features`, z-normalised
with training statistics) and label encoding (`alphabet.encode`). `tiny` makes a small in-memory
dataset for tests.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from tasks.base import SPLITS, DataError, SequenceSet, Splits
from tasks.iam_online.alphabet import ALPHABET, encode
from tasks.iam_online.corpus import RawLine, read_corpus
from tasks.iam_online.features import FEATURES, apply_normaliser, fit_normaliser, point_features
from tasks.iam_online.generate import generate_corpus, split_sizes
from tasks.iam_online.handwriting import WriterStyle, write_line

log = logging.getLogger(__name__)


def ctc_min_frames(labels: np.ndarray) -> int:
    """Fewest frames CTC needs for a label sequence: its length plus one blank per repeat."""
    return int(len(labels) + np.count_nonzero(labels[1:] == labels[:-1]))


def to_splits(raw: dict[str, list[RawLine]]) -> tuple[Splits, dict]:
    """Features, training-set normalisation and targets; lines too short for CTC are dropped."""
    feats = {s: [point_features(r.points, r.stroke) for r in raw[s]] for s in SPLITS}
    if not feats["train"]:
        raise DataError("iam_online: the training split has no lines")
    mean, std = fit_normaliser(feats["train"])
    splits: Splits = {}
    too_short: list[str] = []
    for s in SPLITS:
        xs, ys, ids = [], [], []
        for r, f in zip(raw[s], feats[s], strict=True):
            y = encode(r.text)
            if len(y) == 0 or len(f) < ctc_min_frames(y):
                too_short.append(r.id)
                continue
            xs.append(apply_normaliser(f, mean, std))
            ys.append(y)
            ids.append(r.id)
        if not xs:
            raise DataError(f"iam_online: the {s} split has no usable lines")
        splits[s] = SequenceSet(xs, ys, ids)
    info = {
        "features": list(FEATURES),
        "feature_mean": mean.tolist(),
        "feature_std": std.tolist(),
        "alphabet": ALPHABET,
        "dropped_too_short_for_ctc": too_short[:50],
        "dropped_too_short_for_ctc_count": len(too_short),
        "mean_points_per_line": {
            s: float(np.mean([len(x) for x in splits[s].inputs])) for s in SPLITS
        },
        "mean_chars_per_line": {
            s: float(np.mean([len(y) for y in splits[s].targets])) for s in SPLITS
        },
    }
    return splits, info


def prepare(
    work_dir: Path, source: str, path: Path | None, size: int | None, seed: int, progress: bool
) -> tuple[Splits, dict]:
    if source == "synthetic":
        if path is not None:
            raise ValueError(
                "iam_online: --path is only for --source real (the synthetic corpus "
                "is generated under the prepared folder)"
            )
        root = Path(work_dir) / "corpus"
        stats = generate_corpus(root, seed=seed, size=size, progress=progress)
        origin = {"origin": f"generated IAM-OnDB-format corpus in {root}", "corpus": stats}
    elif source == "real":
        if path is None:
            raise DataError(
                "iam_online: --source real needs --path DIR, an IAM-OnDB folder with "
                "lineStrokes/, ascii/ and trainset.txt, testset_v.txt, testset_t.txt, "
                "testset_f.txt"
            )
        root = Path(path)
        origin = {"origin": f"IAM-OnDB at {root}"}
    else:
        raise ValueError(f"iam_online has no data source {source!r}; valid: synthetic, real")
    raw, read_info = read_corpus(root, progress)
    if source == "real" and size is not None:  # a smaller study on the real corpus
        raw = {s: raw[s][:n] for s, n in split_sizes(size).items()}
    splits, info = to_splits(raw)
    log.info("iam_online: %s lines (train/valid/test)", [len(splits[s]) for s in SPLITS])
    return splits, {**origin, **read_info, **info}


_TINY_STYLE = WriterStyle(
    font="futural",
    scale=6.0,
    slant=0.1,
    letter_spacing=1.0,
    word_spacing=1.0,
    slope=0.0,
    wave_amp=0.0,
    wave_period=300.0,
    wobble=0.03,
    point_spacing=5.0,
    rate=80.0,
    tremor=0.5,
    join_gap=0.0,
    delay_dots=False,
    line_width=10,
    pause=0.1,
)


def tiny(rng: np.random.Generator) -> Splits:
    """Lines of 1-3 characters from 'l', 'o', 'v', 'x' (about 5-25 points each): learnable."""
    chars = "lovx"

    def lines(n: int) -> list[RawLine]:
        out = []
        for i in range(n):
            text = "".join(
                chars[int(k)] for k in rng.integers(len(chars), size=int(rng.integers(1, 4)))
            )
            strokes, _ = write_line(text, _TINY_STYLE, rng, (0.0, 0.0), 0.0)
            pts = np.vstack(strokes)
            stroke = np.repeat(np.arange(len(strokes)), [len(s) for s in strokes]).astype(np.int32)
            out.append(RawLine(f"tiny-{i:03d}", text, pts, stroke))
        return out

    splits, _ = to_splits({"train": lines(24), "valid": lines(8), "test": lines(8)})
    return splits
