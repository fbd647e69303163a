"""TIMIT's 61 phone labels, the Lee & Hon (1989) folding to 39 classes, and the split speaker lists.

The standard 61 -> 48 -> 39 folding of most TIMIT recipes. The tables ship as data files in `tasks/data/`:
`timit_phones.txt` (61 -> 48 -> 39, `q` dropped), `timit_dev_speakers.txt` (Halberstadt's 50
development speakers: the validation set) and `timit_core_test_speakers.txt` (the 24-speaker core
test set). Class indices follow the line order of `timit_phones.txt` (alphabetical, as in TIMIT's
documentation), so index 0 is `aa` and index 60 is `zh`.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import numpy as np


def _data_lines(name: str) -> list[str]:
    text = (resources.files("tasks") / "data" / name).read_text()
    # Only lines *starting* with '#' are comments: `h#` is a phone label.
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


@cache
def _table() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    rows = [ln.split() for ln in _data_lines("timit_phones.txt")]
    assert len(rows) == 61 and all(len(r) == 3 for r in rows), "timit_phones.txt is damaged"
    return tuple(r[0] for r in rows), tuple(r[1] for r in rows), tuple(r[2] for r in rows)


PHONES: tuple[str, ...] = _table()[0]
PHONE_INDEX: dict[str, int] = {p: i for i, p in enumerate(PHONES)}
FOLD_48: dict[str, str] = {p: f for p, f in zip(PHONES, _table()[1], strict=True) if f != "-"}
FOLD_39: dict[str, str] = {p: f for p, f in zip(PHONES, _table()[2], strict=True) if f != "-"}
PHONES_39: tuple[str, ...] = tuple(sorted(set(FOLD_39.values())))
DROPPED_IN_39 = tuple(p for p in PHONES if p not in FOLD_39)  # ("q",)


def fold_39_index() -> np.ndarray:
    """`(61,)` int64: 61-class index -> 39-class index, -1 for `q` (dropped by the folding)."""
    idx39 = {p: i for i, p in enumerate(PHONES_39)}
    return np.array([idx39[FOLD_39[p]] if p in FOLD_39 else -1 for p in PHONES], dtype=np.int64)


@cache
def dev_speakers() -> frozenset[str]:
    """Halberstadt's 50 development speakers (lower-case TIMIT ids such as `faks0`)."""
    return frozenset(_data_lines("timit_dev_speakers.txt"))


@cache
def core_test_speakers() -> tuple[str, ...]:
    """The 24 core-test speakers, in dialect-region order (three per region, DR1 first)."""
    return tuple(_data_lines("timit_core_test_speakers.txt"))
