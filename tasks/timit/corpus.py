"""The LDC TIMIT layout: finding utterances, reading `.PHN` alignments, assigning the paper's split.

Layout: `TRAIN|TEST/DR1..DR8/<speaker>/<utterance>.{WAV,PHN,WRD,TXT}`; folder and file names may
be in any letter case (LDC discs are upper case, many copies lower case), and converted copies may
hold `SI1027.WAV.wav` next to or instead of the SPHERE `SI1027.WAV`. SA1/SA2 (the two dialect
sentences every speaker read) are excluded. Split (Greff et al. 2017, section II; Halberstadt 1998):
train = every TRAIN speaker's SI and SX utterances (3696), valid = the 50 development speakers
from TEST (400), test = the 24 core-test speakers (192). Other TEST speakers are not used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.base import DataError
from tasks.timit.phones import PHONE_INDEX, core_test_speakers, dev_speakers

EXPECTED = (
    "expected TRAIN/ and TEST/ folders (any letter case) holding "
    "DR1..DR8/<speaker>/<utterance>.WAV + .PHN"
)
_REGION = re.compile(r"^dr[1-8]$")


@dataclass(frozen=True)
class Utterance:
    split: str  # "train" | "valid" | "test"
    region: str  # "dr1" .. "dr8"
    speaker: str  # lower-case TIMIT id, e.g. "fcjf0"
    name: str  # lower-case utterance name, e.g. "si1027"
    audio: Path
    phn: Path

    @property
    def id(self) -> str:
        return f"{self.speaker}_{self.name}"


def _children(folder: Path) -> dict[str, Path]:
    """Sub-folders by lower-case name."""
    return {p.name.lower(): p for p in folder.iterdir() if p.is_dir()}


def find_root(path: Path) -> Path:
    """The folder that holds TRAIN/ and TEST/: `path` itself or a folder up to two levels below."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"TIMIT: {path} is not a folder; {EXPECTED}")
    frontier = [path]
    for _ in range(3):
        nxt = []
        for folder in frontier:
            kids = _children(folder)
            if "train" in kids and "test" in kids:
                return folder
            nxt.extend(sorted(kids.values()))
        frontier = nxt
    raise DataError(f"TIMIT: no TRAIN/ and TEST/ folders in or below {path}; {EXPECTED}")


def read_phn(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """`.PHN` lines `start end label` (samples) -> starts `(n,)`, ends `(n,)`, labels (61-phone set)."""
    starts, ends, labels = [], [], []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3:
            raise DataError(f"{path}:{lineno}: expected 'start end label', got {line.strip()!r}")
        try:
            a, b = int(parts[0]), int(parts[1])
        except ValueError:
            raise DataError(
                f"{path}:{lineno}: start/end are not sample numbers: {line.strip()!r}"
            ) from None
        if a < 0 or b < a:
            raise DataError(f"{path}:{lineno}: bad segment {a}..{b}")
        if parts[2] not in PHONE_INDEX:
            raise DataError(
                f"{path}:{lineno}: unknown phone label {parts[2]!r}; TIMIT's 61 labels are "
                + " ".join(PHONE_INDEX)
            )
        starts.append(a)
        ends.append(b)
        labels.append(parts[2])
    if not labels:
        raise DataError(f"{path}: empty phone alignment")
    return np.array(starts, np.int64), np.array(ends, np.int64), labels


def _speaker_utterances(folder: Path, split: str, region: str) -> list[Utterance]:
    files: dict[str, Path] = {p.name.lower(): p for p in folder.iterdir() if p.is_file()}
    out = []
    for lower, phn in sorted(files.items()):
        if not lower.endswith(".phn"):
            continue
        stem = lower[: -len(".phn")]
        if stem.startswith("sa"):
            continue  # dialect sentences: read by every speaker, excluded by convention
        audio = files.get(stem + ".wav") or files.get(stem + ".wav.wav")
        if audio is None:
            raise DataError(f"TIMIT: {phn} has no audio file {stem.upper()}.WAV next to it")
        out.append(Utterance(split, region, folder.name.lower(), stem, audio, phn))
    return out


def list_utterances(path: Path) -> list[Utterance]:
    """Every utterance of the paper's three splits, sorted by split, speaker and name."""
    root = find_root(path)
    parts = _children(root)
    dev, core = dev_speakers(), set(core_test_speakers())
    found: list[Utterance] = []
    for part in ("train", "test"):
        # lists, not dicts: a copy may hold both DR1/ and dr1/ on a case-sensitive disk
        regions = sorted(
            (p.name.lower(), p)
            for p in parts[part].iterdir()
            if p.is_dir() and _REGION.match(p.name.lower())
        )
        if not regions:
            raise DataError(f"TIMIT: {parts[part]} has no DR1..DR8 folders; {EXPECTED}")
        for region, rdir in regions:
            for spk, sdir in sorted((p.name.lower(), p) for p in rdir.iterdir() if p.is_dir()):
                if part == "train":
                    split = "train"
                elif spk in dev:
                    split = "valid"
                elif spk in core:
                    split = "test"
                else:
                    continue
                found.extend(_speaker_utterances(sdir, split, region))
    for split, source in (
        ("train", "TRAIN"),
        ("valid", "TEST (development speakers)"),
        ("test", "TEST (core-test speakers)"),
    ):
        if not any(u.split == split for u in found):
            raise DataError(
                f"TIMIT: no {split} utterances found under {root} in {source}; {EXPECTED}"
            )
    order = {"train": 0, "valid": 1, "test": 2}
    return sorted(found, key=lambda u: (order[u.split], u.speaker, u.name))
