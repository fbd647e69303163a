"""Writes the generated IAM-OnDB stand-in corpus in the database's own layout and formats.

    corpus/lineStrokes/s01/s01-000/s01-000a-01.xml   one <WhiteboardCaptureSession> per line
    corpus/ascii/s01/s01-000/s01-000a.txt            OCR and CSR blocks, one CSR line per file
    corpus/trainset.txt testset_v.txt testset_t.txt testset_f.txt

so that `corpus.read_corpus` reads it exactly like the real database. Texts come from
`sentences` (our own), pen trajectories from `handwriting` (Hershey fonts, per-writer style).
Each writer writes 6-10 boards (forms) of 5-9 lines, like IAM-OnDB's ~7 lines per board, and
belongs to one split only. Default size mirrors the paper's 5355 / 2956 / 3859 lines; with
`size=N` the training split has N lines and the others are proportional. Everything is derived
from the seed through `numpy.random.SeedSequence`, so the corpus is the same whatever the number
of worker processes.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from tasks.iam_online.corpus import form_folder
from tasks.iam_online.handwriting import WriterStyle, draw_style, write_line
from tasks.iam_online.sentences import paragraph, wrap

PAPER_LINES = {"train": 5355, "valid": 2956, "test": 3859}
_SPLIT_INDEX = {"train": 0, "valid": 1, "test": 2}
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def split_sizes(size: int | None) -> dict[str, int]:
    """Lines per split: the paper's, or `size` training lines and proportional others (>= 1)."""
    if size is None:
        return dict(PAPER_LINES)
    return {s: max(1, round(size * n / PAPER_LINES["train"])) for s, n in PAPER_LINES.items()}


@dataclass(frozen=True)
class FormJob:
    form: str
    writer: int
    style: WriterStyle
    lines: tuple[str, ...]
    ocr: str
    seed: int
    t0: float


def plan(seed: int, size: int | None) -> dict[str, list[FormJob]]:
    """Writers, boards and their texts for every split (cheap; no trajectories yet)."""
    out: dict[str, list[FormJob]] = {}
    n_form = 0
    n_writer = 0
    for split, n_lines in split_sizes(size).items():
        jobs: list[FormJob] = []
        remaining = n_lines
        k = 0
        while remaining > 0:
            rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_INDEX[split], k]))
            style = draw_style(rng)
            t = float(rng.uniform(1e6, 2e7))
            for _ in range(int(rng.integers(6, 11))):
                if remaining <= 0:
                    break
                want = min(int(rng.integers(5, 10)), remaining)
                text = paragraph(rng, want * style.line_width)
                lines = tuple(wrap(text, style.line_width)[:want])
                used = " ".join(lines)
                form = f"s{1 + n_form // 100:02d}-{n_form % 100:03d}{_LETTERS[n_writer % 26]}"
                jobs.append(
                    FormJob(
                        form,
                        n_writer,
                        style,
                        lines,
                        "\n".join(wrap(used, 60)),
                        int(rng.integers(2**63)),
                        t,
                    )
                )
                t += 600.0 + 40.0 * len(lines)
                remaining -= len(lines)
                n_form += 1
            k += 1
            n_writer += 1
        out[split] = jobs
    return out


def _stroke_xml(line: list[np.ndarray]) -> str:
    allp = np.vstack(line)
    x0, y0 = allp[:, :2].min(axis=0).astype(int)
    x1, y1 = allp[:, :2].max(axis=0).astype(int)
    parts = [
        '<?xml version="1.0" encoding="ISO-8859-1"?>\n<WhiteboardCaptureSession>\n'
        "  <WhiteboardDescription>\n"
        '    <SensorLocation corner="top_left"/>\n'
        f'    <DiagonallyOppositeCoords x="{x1}" y="{y1}"/>\n'
        f'    <VerticallyOppositeCoords x="{x0}" y="{y1}"/>\n'
        f'    <HorizontallyOppositeCoords x="{x1}" y="{y0}"/>\n'
        "  </WhiteboardDescription>\n  <StrokeSet>\n"
    ]
    for s in line:
        parts.append(
            f'    <Stroke colour="black" start_time="{s[0, 2]:.3f}" end_time="{s[-1, 2]:.3f}">\n'
        )
        parts.extend(f'      <Point x="{int(x)}" y="{int(y)}" time="{t:.3f}"/>\n' for x, y, t in s)
        parts.append("    </Stroke>\n")
    parts.append("  </StrokeSet>\n</WhiteboardCaptureSession>\n")
    return "".join(parts)


def write_form(root: Path, job: FormJob) -> list[int]:
    """Render and write one board; returns the number of points of each line."""
    rng = np.random.default_rng(job.seed)
    folder = form_folder(job.form)
    strokes_dir = root / "lineStrokes" / folder
    strokes_dir.mkdir(parents=True, exist_ok=True)
    left = float(rng.uniform(600, 1400))
    height = 21.0 * job.style.scale
    t = job.t0
    counts = []
    for i, text in enumerate(job.lines):
        origin = (
            left + rng.normal(0, 0.3 * height),
            900 + (i + 1) * height * rng.uniform(1.6, 2.0),
        )
        line, t = write_line(text, job.style, rng, origin, t)
        t += float(rng.uniform(0.8, 3.0))
        (strokes_dir / f"{job.form}-{i + 1:02d}.xml").write_text(
            _stroke_xml(line), encoding="latin-1"
        )
        counts.append(int(sum(len(s) for s in line)))
    ascii_dir = root / "ascii" / folder
    ascii_dir.mkdir(parents=True, exist_ok=True)
    (ascii_dir / f"{job.form}.txt").write_text(
        f"OCR:\n\n{job.ocr}\n\nCSR:\n\n" + "\n".join(job.lines) + "\n", encoding="latin-1"
    )
    return counts


def _write_form_star(args: tuple[Path, FormJob]) -> list[int]:
    return write_form(*args)


def generate_corpus(
    root: Path,
    seed: int = 0,
    size: int | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> dict:
    """Write the whole corpus under `root`; returns its statistics for the prepared meta."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    jobs = plan(seed, size)
    names = {
        "train": ["trainset.txt"],
        "valid": ["testset_v.txt", "testset_t.txt"],
        "test": ["testset_f.txt"],
    }
    for split, files in names.items():
        forms = [j.form for j in jobs[split]]
        cut = (len(forms) + 1) // 2 if len(files) == 2 else len(forms)
        chunks = [forms[:cut], forms[cut:]] if len(files) == 2 else [forms]
        for name, chunk in zip(files, chunks, strict=True):
            (root / name).write_text("".join(f"{f}\n" for f in chunk))
    flat = [(root, j) for split in jobs for j in jobs[split]]
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    with tqdm(
        total=len(flat),
        desc="writing synthetic IAM-OnDB boards",
        unit="board",
        disable=not progress,
    ) as bar:
        if workers > 1 and len(flat) > 20:
            with ProcessPoolExecutor(workers) as pool:
                counts = []
                for c in pool.map(_write_form_star, flat, chunksize=8):
                    counts.append(c)
                    bar.update()
        else:
            counts = []
            for item in flat:
                counts.append(_write_form_star(item))
                bar.update()
    per_form = iter(counts)
    stats: dict = {"generator": "Hershey single-stroke fonts, per-writer style (tasks.iam_online)"}
    for split in jobs:
        pts = [n for _ in jobs[split] for n in next(per_form)]
        lines = [t for j in jobs[split] for t in j.lines]
        stats[split] = {
            "writers": len({j.writer for j in jobs[split]}),
            "boards": len(jobs[split]),
            "lines": len(lines),
            "mean_points_per_line": float(np.mean(pts)),
            "mean_chars_per_line": float(np.mean([len(t) for t in lines])),
            "script_font_writers": len(
                {j.writer for j in jobs[split] if j.style.font == "scripts"}
            ),
        }
    return stats
