"""Pen trajectories of text lines in a writer's style, from Hershey single-stroke fonts.

The generated IAM-OnDB stand-in draws each character's Hershey glyph (PyPI `Hershey-Fonts`, MIT)
as pen-down strokes, then applies the writer's style: slant, size, letter and word spacing,
baseline slope and waviness, per-letter size and position wobble, joined strokes within a word
for the script font, i-dots and other tiny strokes written after the word, hand tremor, pen
speed (varying along each stroke, slower at its ends) and sampling rate. Points are placed at
equal time steps of 1/rate, so point density follows pen speed as on a real whiteboard tracker.

Coordinates follow IAM-OnDB: board units, x to the right, y downwards; times in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

# Single-stroke Hershey fonts that draw all 81 symbols ('rowmans' and 'cursive' duplicate these).
FONTS = ("futural", "scripts")
CAP, BASE = -12.0, 9.0  # Hershey cap line and baseline (font units, y down)


@dataclass(frozen=True)
class Glyph:
    strokes: tuple[np.ndarray, ...]  # each (n, 2) float64, x from the glyph's left side
    advance: float


@cache
def glyphs(font: str) -> dict[str, Glyph]:
    """char -> Glyph for the printable ASCII characters of a Hershey font."""
    from HersheyFonts import HersheyFonts

    if font not in FONTS:
        raise ValueError(f"unknown handwriting font {font!r}; valid: {', '.join(FONTS)}")
    hf = HersheyFonts()
    hf.load_default_font(font)
    out = {}
    for code in range(32, 127):
        c = chr(code)
        (g,) = list(hf.glyphs_for_text(c))
        strokes = tuple(np.asarray(s, dtype=np.float64) - [g.left_offset, 0.0] for s in g.strokes)
        out[c] = Glyph(tuple(s for s in strokes if len(s)), float(g.char_width))
    return out


@dataclass(frozen=True)
class WriterStyle:
    """How one synthetic writer writes; drawn once per writer by `draw_style`."""

    font: str
    scale: float  # board units per font unit (cap height = 21 font units)
    slant: float  # x shift per unit of height above the baseline
    letter_spacing: float  # multiplies glyph advances
    word_spacing: float  # multiplies the space advance
    slope: float  # baseline rise per unit of x (radians, small)
    wave_amp: float  # baseline waviness amplitude (font units)
    wave_period: float  # font units
    wobble: float  # per-letter relative size and position noise
    point_spacing: float  # mean distance between samples along a stroke (font units)
    rate: float  # samples per second
    tremor: float  # board units, std of smooth positional noise
    join_gap: float  # script: strokes within a word whose ends are closer than this are joined
    delay_dots: bool  # tiny strokes (i dots, ...) written after the word
    line_width: int  # characters per line before wrapping
    pause: float  # mean seconds between words


def draw_style(rng: np.random.Generator) -> WriterStyle:
    font = FONTS[int(rng.integers(len(FONTS)))]
    return WriterStyle(
        font=font,
        scale=float(rng.uniform(5.0, 9.0)),
        slant=float(rng.normal(0.18, 0.12)),
        letter_spacing=float(rng.uniform(0.85, 1.2)),
        word_spacing=float(rng.uniform(0.8, 1.6)),
        slope=float(rng.normal(0.0, 0.015)),
        wave_amp=float(rng.uniform(0.0, 2.0)),
        wave_period=float(rng.uniform(150, 500)),
        wobble=float(rng.uniform(0.02, 0.08)),
        point_spacing=float(rng.uniform(2.6, 4.2)),
        rate=float(rng.uniform(60, 130)),
        tremor=float(rng.uniform(0.5, 3.0)),
        join_gap=float(rng.uniform(2.0, 6.0)) if font == "scripts" else 0.0,
        delay_dots=bool(rng.random() < 0.6),
        line_width=int(rng.integers(30, 48)),
        pause=float(rng.uniform(0.1, 0.4)),
    )


def _layout(text: str, style: WriterStyle, rng: np.random.Generator) -> list[list[np.ndarray]]:
    """Strokes in font units, grouped by word, with spacing, wobble, slant and baseline applied."""
    table = glyphs(style.font)
    words: list[list[np.ndarray]] = [[]]
    pen_x = 0.0
    for c in text:
        g = table[c]
        if c == " ":
            pen_x += g.advance * style.word_spacing * (1 + 0.15 * rng.standard_normal())
            words.append([])
            continue
        size = 1 + style.wobble * rng.standard_normal()
        dy = 1.5 * style.wobble * 10 * rng.standard_normal()
        for s in g.strokes:
            pts = s.copy()
            pts[:, 0] = pen_x + pts[:, 0] * size
            pts[:, 1] = BASE + (pts[:, 1] - BASE) * size + dy
            words[-1].append(pts)
        pen_x += g.advance * size * style.letter_spacing
    for strokes in words:
        for pts in strokes:
            height = BASE - pts[:, 1]
            pts[:, 0] += style.slant * height
            x = pts[:, 0]
            pts[:, 1] -= style.slope * x + style.wave_amp * np.sin(
                2 * np.pi * x / style.wave_period
            )
    return [w for w in words if w]


def _order(words: list[list[np.ndarray]], style: WriterStyle) -> list[np.ndarray]:
    """Join script strokes within a word; optionally move tiny strokes to the end of the word."""
    out: list[np.ndarray] = []
    for strokes in words:
        joined: list[np.ndarray] = []
        for s in strokes:
            if joined and style.join_gap and np.linalg.norm(joined[-1][-1] - s[0]) < style.join_gap:
                joined[-1] = np.vstack([joined[-1], s])
            else:
                joined.append(s)
        if style.delay_dots and len(joined) > 1:
            tiny = [np.ptp(s, axis=0).max() < 3.5 for s in joined]
            joined = [s for s, t in zip(joined, tiny, strict=True) if not t] + [
                s for s, t in zip(joined, tiny, strict=True) if t
            ]
        out.extend(joined)
    return out


def _sample(stroke: np.ndarray, spacing: float, rng: np.random.Generator) -> np.ndarray:
    """Resample a polyline at equal time steps; the pen is slower near both ends of the stroke."""
    seg = np.linalg.norm(np.diff(stroke, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    length = arc[-1]
    n = max(2, int(np.ceil(length / (spacing * rng.uniform(0.8, 1.25)))) + 1)
    tau = np.linspace(0.0, 1.0, n)
    s = length * (tau - 0.6 * np.sin(2 * np.pi * tau) / (2 * np.pi))  # ease in and out
    if length == 0:
        return np.repeat(stroke[:1], n, axis=0)
    return np.column_stack([np.interp(s, arc, stroke[:, 0]), np.interp(s, arc, stroke[:, 1])])


def _smooth_noise(n: int, std: float, rng: np.random.Generator) -> np.ndarray:
    """`(n, 2)` low-pass noise with standard deviation about `std` (hand tremor and drift)."""
    white = rng.standard_normal((n + 4, 2))
    kernel = np.array([1, 2, 3, 2, 1], dtype=np.float64) / np.sqrt(19.0)
    return std * np.column_stack([np.convolve(white[:, k], kernel, mode="valid") for k in (0, 1)])


def write_line(
    text: str, style: WriterStyle, rng: np.random.Generator, origin: tuple[float, float], t0: float
) -> tuple[list[np.ndarray], float]:
    """Strokes of one line as `(n, 3)` arrays of x, y (board units) and time; also the end time.

    `origin` is where the line's baseline starts on the board, `t0` the time the pen first
    touches it.
    """
    if not text.strip():
        raise ValueError("cannot write an empty line")
    strokes = _order(_layout(text, style, rng), style)
    out: list[np.ndarray] = []
    t = t0
    prev_end: np.ndarray | None = None
    for s in strokes:
        pts = _sample(s, style.point_spacing, rng) * style.scale
        pts[:, 1] += origin[1] - BASE * style.scale
        pts[:, 0] += origin[0]
        pts += _smooth_noise(len(pts), style.tremor, rng)
        if prev_end is not None:  # pen up: travel time plus a pause, longer across wide gaps
            jump = np.linalg.norm(pts[0] - prev_end) / style.scale  # font units
            t += 0.04 + jump / 120.0 + rng.exponential(style.pause * min(1.0, jump / 16.0) + 1e-3)
        times = t + np.arange(len(pts)) / style.rate
        out.append(np.column_stack([np.round(pts), times]))
        t = times[-1]
        prev_end = pts[-1]
    return out, t
