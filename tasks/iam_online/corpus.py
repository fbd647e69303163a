"""Reader for the IAM On-Line Handwriting Database in its original layout (paper section IV-B).

    DIR/lineStrokes/a01/a01-000/a01-000u-01.xml   one text line: <WhiteboardCaptureSession> with
                                                  <WhiteboardDescription> and a <StrokeSet> of
                                                  <Stroke ...><Point x= y= time=/></Stroke>
    DIR/ascii/a01/a01-000/a01-000u.txt            the form's text; after the `CSR:` line, one
                                                  line of text per stroke file (-01 is the first)
    DIR/trainset.txt testset_v.txt testset_t.txt testset_f.txt   form ids, one per line
                                                  (also accepted in DIR/task1/)

Task split as in the paper: train = trainset, validation = testset_v + testset_t, test =
testset_f (5355 / 2956 / 3859 lines once board a08-551z is removed). Stroke file `-NN.xml` is
paired with the NN-th non-empty line after `CSR:`. Transcriptions are normalised with
`alphabet.normalise`; a line holding a character outside the 81-symbol alphabet is rejected
(left out) and reported in the returned info, never silently mapped to something else.
The XML is parsed with the standard library's expat-based parser, which (Python >= 3.7.1 with
expat >= 2.4.1) refuses entity-expansion bombs.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from tasks.base import DataError
from tasks.iam_online.alphabet import normalise, unknown_chars

# split -> list files read for it, in order (paper: the two validation sets are merged)
SPLIT_FILES = {
    "train": ("trainset.txt",),
    "valid": ("testset_v.txt", "testset_t.txt"),
    "test": ("testset_f.txt",),
}
# Removed by the paper: it contains untranscribed '%' characters.
EXCLUDED_FORMS = ("a08-551z",)

_FORM_RE = re.compile(r"^(([A-Za-z0-9]+)-\d+)[A-Za-z]?$")


@dataclass(frozen=True)
class RawLine:
    """One handwritten text line: its points in board units and seconds, and its text."""

    id: str  # e.g. "a01-000u-01"
    text: str  # normalised transcription
    points: np.ndarray  # (P, 3) float64: x, y, time
    stroke: np.ndarray  # (P,) int32: index of the stroke each point belongs to (0, 1, ...)


def form_folder(form: str) -> Path:
    """`a01-000u` -> `a01/a01-000` (the folder under lineStrokes/ and ascii/)."""
    m = _FORM_RE.match(form)
    if not m:
        raise DataError(f"{form!r} is not an IAM-OnDB form id (expected e.g. 'a01-000u')")
    return Path(m.group(2)) / m.group(1)


def find_split_files(root: Path) -> dict[str, list[Path]]:
    """The split list files, in `root` or `root/task1`; names every missing one."""
    wanted = [name for names in SPLIT_FILES.values() for name in names]
    for base in (root, root / "task1"):
        if all((base / name).is_file() for name in wanted):
            return {s: [base / n for n in names] for s, names in SPLIT_FILES.items()}
    missing = [n for n in wanted if not (root / n).is_file()]
    raise DataError(
        f"{root}: missing split list file(s) {', '.join(missing)} "
        f"(looked in {root} and {root / 'task1'}; expected {', '.join(wanted)})"
    )


def read_split_lists(root: Path) -> dict[str, list[str]]:
    """split -> form ids, in file order; a form listed twice is an error."""
    out: dict[str, list[str]] = {}
    seen: dict[str, Path] = {}
    for split, paths in find_split_files(root).items():
        forms = []
        for path in paths:
            for raw in path.read_text(encoding="latin-1").splitlines():
                form = raw.strip()
                if not form:
                    continue
                form_folder(form)  # validates the id
                if form in seen:
                    raise DataError(f"{path}: form {form} is also listed in {seen[form]}")
                seen[form] = path
                forms.append(form)
        out[split] = forms
    return out


def read_transcription(path: Path) -> list[str]:
    """The non-empty lines after the `CSR:` line (raw, not yet normalised)."""
    if not path.is_file():
        raise DataError(f"{path}: transcription file not found")
    lines = path.read_text(encoding="latin-1").splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "CSR:":
            return [t.strip() for t in lines[i + 1 :] if t.strip()]
    raise DataError(f"{path}: no 'CSR:' line; cannot find the line transcriptions")


def read_strokes(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Points `(P, 3)` (x, y, time) and their stroke index `(P,)` from one lineStrokes XML file."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise DataError(f"{path}: unreadable stroke XML ({e})") from e
    stroke_set = root.find("StrokeSet")
    if root.tag != "WhiteboardCaptureSession" or stroke_set is None:
        raise DataError(
            f"{path}: not an IAM-OnDB stroke file (expected "
            f"<WhiteboardCaptureSession> with a <StrokeSet>, found <{root.tag}>)"
        )
    rows: list[tuple[float, float, float]] = []
    stroke_of: list[int] = []
    n_stroke = 0
    for stroke in stroke_set.iter("Stroke"):
        pts = stroke.findall("Point")
        if not pts:
            continue
        try:
            rows.extend(
                (float(p.attrib["x"]), float(p.attrib["y"]), float(p.attrib["time"])) for p in pts
            )
        except (KeyError, ValueError) as e:
            raise DataError(
                f"{path}: stroke {n_stroke + 1} has a <Point> without a numeric "
                f"x, y or time ({type(e).__name__}: {e})"
            ) from None
        stroke_of.extend([n_stroke] * len(pts))
        n_stroke += 1
    if not rows:
        raise DataError(f"{path}: the <StrokeSet> holds no points")
    return np.asarray(rows, dtype=np.float64), np.asarray(stroke_of, dtype=np.int32)


def read_form(root: Path, form: str) -> tuple[list[RawLine], list[str]]:
    """All lines of one form, paired with their transcriptions; also returns the raw texts."""
    folder = root / "lineStrokes" / form_folder(form)
    pattern = re.compile(rf"^{re.escape(form)}-(\d+)\.xml$")
    found = folder.glob(f"{form}-*.xml") if folder.is_dir() else []
    numbered = sorted((int(m[1]), f) for f in found if (m := pattern.match(f.name)))
    if not numbered:
        raise DataError(
            f"form {form} is in a split list but has no stroke files "
            f"({folder / (form + '-NN.xml')} not found)"
        )
    ascii_path = root / "ascii" / form_folder(form) / f"{form}.txt"
    texts = read_transcription(ascii_path)
    lines, raw = [], []
    for n, f in numbered:
        if not 1 <= n <= len(texts):
            raise DataError(
                f"{f}: stroke file of line {n} has no transcription line "
                f"({ascii_path} has {len(texts)} line(s) after 'CSR:')"
            )
        points, stroke = read_strokes(f)
        lines.append(RawLine(f.stem, normalise(texts[n - 1]), points, stroke))
        raw.append(texts[n - 1])
    return lines, raw


def read_corpus(root: Path, progress: bool = True) -> tuple[dict[str, list[RawLine]], dict]:
    """Read the three task splits from an IAM-OnDB folder; info reports what was left out."""
    root = Path(root)
    for sub in ("lineStrokes", "ascii"):
        if not (root / sub).is_dir():
            raise DataError(
                f"{root}: missing folder {sub}/ (an IAM-OnDB folder holds "
                "lineStrokes/, ascii/ and the split lists trainset.txt, "
                "testset_v.txt, testset_t.txt, testset_f.txt)"
            )
    lists = read_split_lists(root)
    excluded = [f for forms in lists.values() for f in forms if f in EXCLUDED_FORMS]
    unknown: Counter[str] = Counter()
    rejected: list[str] = []
    mapped = 0
    out: dict[str, list[RawLine]] = {}
    total = sum(len(v) for v in lists.values())
    with tqdm(total=total, desc="reading IAM-OnDB forms", unit="form", disable=not progress) as bar:
        for split, forms in lists.items():
            kept: list[RawLine] = []
            for form in forms:
                bar.update()
                if form in EXCLUDED_FORMS:
                    continue
                lines, raw = read_form(root, form)
                for line, text in zip(lines, raw, strict=True):
                    bad = unknown_chars(line.text)
                    if bad:
                        unknown.update(c for c in line.text if c in bad)
                        rejected.append(line.id)
                        continue
                    mapped += line.text != " ".join(text.split())
                    kept.append(line)
            out[split] = kept
    info = {
        "excluded_forms": excluded,
        "rejected_lines": len(rejected),
        "rejected_line_ids": rejected[:50],
        "unknown_characters": dict(unknown.most_common()),
        "lines_with_mapped_characters": int(mapped),
        "character_policy": "typographic quotes/backquote -> ASCII quotes; lines with any other "
        "character outside the 81-symbol alphabet are rejected",
    }
    return out, info
