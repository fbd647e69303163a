"""Turning a TIMIT corpus (the LDC original or our generated stand-in) into normalised splits.

Each utterance becomes `(T, 39)` float32 features and `(T,)` int64 labels (61 classes, see
`features.py` for the frame rule). Every dimension is normalised with the training set's mean and
standard deviation (computed on train only, applied to all splits, stored in the metadata).
Feature extraction runs on a pool of worker processes with a progress bar.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
from tqdm import tqdm

from tasks.base import SPLITS, DataError, SequenceSet, Splits
from tasks.timit.audio import read_audio
from tasks.timit.corpus import Utterance, list_utterances, read_phn
from tasks.timit.features import SAMPLE_RATE, features, frame_labels
from tasks.timit.phones import PHONE_INDEX, PHONES

T = TypeVar("T")
R = TypeVar("R")


def parallel_map(
    fn: Callable[[T], R], items: list[T], workers: int, desc: str, progress: bool
) -> Iterator[R]:
    """`map(fn, items)` in order, on `workers` forked processes when worth it, with a tqdm bar."""
    bar = tqdm(total=len(items), desc=desc, unit="utt", disable=not progress, smoothing=0.1)
    if workers <= 1 or len(items) < 64:
        for item in items:
            yield fn(item)
            bar.update()
    else:
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        # close + join when every result is in, so that the workers leave on their own: a
        # pool's terminate() (what `with Pool` does) SIGTERMs them, and a worker caught blocked
        # on the task queue's lock could miss it and hang the join (seen once in 2 demo runs)
        pool = ctx.Pool(workers)
        try:
            for out in pool.imap(fn, items, chunksize=16):
                yield out
                bar.update()
            pool.close()
        except BaseException:
            pool.terminate()
            raise
        finally:
            pool.join()
    bar.close()


def featurise(utt: Utterance) -> tuple[np.ndarray, np.ndarray]:
    """Features `(T, 39)` (not normalised) and frame labels `(T,)` of one utterance."""
    audio, rate = read_audio(utt.audio)
    if rate != SAMPLE_RATE:
        raise DataError(f"{utt.audio}: sample rate {rate} Hz; TIMIT audio is {SAMPLE_RATE} Hz")
    starts, _, labels = read_phn(utt.phn)
    x = features(audio)
    y = frame_labels(starts, np.array([PHONE_INDEX[p] for p in labels]), len(x))
    return x, y


def select(
    utts: list[Utterance], size: int | None, sizes: Callable[[int | None], dict]
) -> list[Utterance]:
    """The first `sizes(size)[split]` utterances of each split (all of them when size is None)."""
    if size is None:
        return utts
    want = sizes(size)
    return [u for s in SPLITS for u in [v for v in utts if v.split == s][: want[s]]]


def load_corpus(
    path: Path,
    progress: bool = True,
    workers: int = 2,
    size: int | None = None,
    sizes: Callable[[int | None], dict] | None = None,
) -> tuple[Splits, dict]:
    """Read, featurise and normalise a corpus in TIMIT's layout; return splits and statistics."""
    utts = list_utterances(path)
    if sizes is not None:
        utts = select(utts, size, sizes)
    results = list(parallel_map(featurise, utts, workers, "TIMIT features", progress))
    train = np.concatenate(
        [x for (x, _), u in zip(results, utts, strict=True) if u.split == "train"]
    )
    mean = train.mean(axis=0, dtype=np.float64)
    std = np.maximum(train.std(axis=0, dtype=np.float64), 1e-8)
    splits: Splits = {}
    for split in SPLITS:
        pick = [(r, u) for r, u in zip(results, utts, strict=True) if u.split == split]
        splits[split] = SequenceSet(
            [((x - mean) / std).astype(np.float32) for (x, _), _ in pick],
            [y for (_, y), _ in pick],
            [u.id for _, u in pick],
        )
    return splits, statistics(splits, utts, mean, std)


def statistics(
    splits: Splits, utts: Iterable[Utterance], mean: np.ndarray, std: np.ndarray
) -> dict:
    utts = list(utts)
    counts = Counter(int(c) for c in np.concatenate(splits["train"].targets))
    return {
        "speakers": {s: len({u.speaker for u in utts if u.split == s}) for s in SPLITS},
        "mean_frames": {s: round(splits[s].frames / max(1, len(splits[s])), 1) for s in SPLITS},
        "train_frames_per_phone": {PHONES[i]: counts.get(i, 0) for i in range(len(PHONES))},
        "phones_seen_in_train": sum(1 for i in range(len(PHONES)) if counts.get(i, 0)),
        "feature_mean": [round(float(v), 6) for v in mean],
        "feature_std": [round(float(v), 6) for v in std],
        "features": "12 MFCC + log energy, delta, delta-delta (25 ms Hamming, 10 ms hop, "
        "pre-emphasis 0.97, 40 mel bands, lifter 22), z-normalised with train stats",
        "frame_label_rule": "majority phone of each 400-sample window (ties: the phone under its centre sample)",
    }
