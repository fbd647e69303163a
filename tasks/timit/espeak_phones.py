"""From eSpeak NG's phoneme events to a TIMIT `.PHN` alignment (61-label set).

eSpeak marks where each phoneme starts (sample-exact); a phoneme lasts until the next one starts.
Its en-us mnemonics map to TIMIT labels through `ESPEAK_TO_TIMIT`; a diphthong with r (`A@`) or
a vowel sequence (`aI@`) becomes two TIMIT phones that share its span equally.

Stops and affricates get TIMIT's closure + release pair (`pcl p`, `tcl ch`, ...). Where to cut:
eSpeak renders a voiceless stop's closure as silence at the end of the *previous* phoneme, so a
silent run (>= 10 ms) ending where the stop starts becomes the closure; otherwise (voiced stops,
whose closure carries a voice bar) the release starts at the largest rise in short-time energy
inside the stop (2 ms frames, rise >= 1.5x), falling back to the stop's midpoint.

Pauses (`_`, `_:`, `_!`) are `pau`; leading and trailing silence is `h#`. Mnemonics the table
lacks are reduced (stress marks, then trailing modifiers such as `#`, `:`, digits, removed) and
looked up again; failing that a vowel-like mnemonic becomes `ax` and anything else `pau`. The
generator counts such fallbacks in the corpus statistics.
"""

from __future__ import annotations

import numpy as np

from tasks.timit.phones import PHONE_INDEX

PAUSES = {"_", "_:", "_!", "_!_", "_^_"}
# fmt: off
STOPS: dict[str, tuple[str, str]] = {
    "p": ("pcl", "p"), "b": ("bcl", "b"), "t": ("tcl", "t"), "t2": ("tcl", "t"),
    "d": ("dcl", "d"), "k": ("kcl", "k"), "g": ("gcl", "g"), "x": ("kcl", "k"),
    "tS": ("tcl", "ch"), "dZ": ("dcl", "jh"),
}
ESPEAK_TO_TIMIT: dict[str, tuple[str, ...]] = {
    # consonants
    "m": ("m",), "n": ("n",), "N": ("ng",), "n-": ("en",), "m-": ("em",), "l": ("l",),
    "@L": ("el",), "l/": ("l",), "r": ("r",), "r-": ("r",), "w": ("w",), "j": ("y",),
    "f": ("f",), "v": ("v",), "T": ("th",), "D": ("dh",), "s": ("s",), "z": ("z",),
    "S": ("sh",), "Z": ("zh",), "h": ("hh",), "t#": ("dx",), "d#": ("dx",), "?": ("q",),
    ";": ("y",),  # eSpeak's linking glide in "the evening" (dh iy y iy ...)
    # vowels (General American)
    "i": ("iy",), "i:": ("iy",), "I": ("ih",), "I2": ("ix",), "I#": ("ix",), "E": ("eh",),
    "a": ("ae",), "aa": ("ae",), "a#": ("ax",), "A:": ("aa",), "0": ("aa",), "02": ("aa",),
    "O:": ("ao",), "O2": ("ao",), "V": ("ah",), "U": ("uh",), "u:": ("uw",), "@": ("ax",),
    "@2": ("ax",), "@5": ("ax",), "@-": ("ax",), "3": ("axr",), "3:": ("er",),
    "eI": ("ey",), "aI": ("ay",), "aU": ("aw",), "OI": ("oy",), "oU": ("ow",),
    # vowels with r and vowel sequences: two TIMIT phones sharing the span
    "A@": ("aa", "r"), "O@": ("ao", "r"), "o@": ("ao", "r"), "e@": ("eh", "r"),
    "i@": ("iy", "ax"), "i@3": ("ih", "r"), "U@": ("uh", "r"), "aI@": ("ay", "ax"),
    "aI3": ("ay", "axr"), "aU@": ("aw", "axr"), "VR": ("ah", "r"), "IR": ("ih", "r"),
}
# fmt: on
_VOWELISH = set("aeiouAEIOUV03@")
_FRAME = 44  # 2 ms at 22050 Hz


def timit_labels(mnemonic: str) -> tuple[tuple[str, ...], bool]:
    """TIMIT labels for one eSpeak phoneme and whether the table knew it (module doc)."""
    name = mnemonic.lstrip("',%=")
    if name in PAUSES:
        return ("pau",), True
    if name in STOPS:
        return STOPS[name], True
    if name in ESPEAK_TO_TIMIT:
        return ESPEAK_TO_TIMIT[name], True
    reduced = name.rstrip("#:-/0123456789")
    if reduced in STOPS:
        return STOPS[reduced], False
    if reduced in ESPEAK_TO_TIMIT:
        return ESPEAK_TO_TIMIT[reduced], False
    return (("ax",) if name[:1] in _VOWELISH else ("pau",)), False


def _rms(audio: np.ndarray, a: int, b: int) -> np.ndarray:
    """Short-time RMS of audio[a:b] in 2 ms frames (a partial last frame is dropped)."""
    n = (b - a) // _FRAME
    seg = audio[a : a + n * _FRAME].astype(np.float64).reshape(n, _FRAME)
    return np.sqrt((seg**2).mean(axis=1))


def _silent_tail(audio: np.ndarray, a: int, b: int, floor: float) -> int:
    """Start of the run of silent frames that ends at b, within [a, b) (b if none)."""
    r = _rms(audio, b - ((b - a) // _FRAME) * _FRAME, b)
    loud = np.flatnonzero(r >= floor)
    first_silent = loud[-1] + 1 if len(loud) else 0
    return b - (len(r) - first_silent) * _FRAME


def _release(audio: np.ndarray, a: int, b: int) -> int:
    """Where a stop's release (burst) starts inside [a, b): largest energy rise, else midpoint."""
    r = _rms(audio, a, b)
    lo, hi = max(1, int(0.2 * len(r))), int(0.9 * len(r))
    if hi > lo:
        rise = r[lo:hi] / (r[lo - 1 : hi - 1] + 1.0)
        i = int(np.argmax(rise))
        if rise[i] >= 1.5:
            return a + (lo + i) * _FRAME
    return a + (b - a) // 2


def align(
    audio: np.ndarray, phonemes: list[tuple[int, str]]
) -> tuple[list[tuple[int, int, str]], list[str]]:
    """Segments `(start, end, label)` covering the whole of `audio` and the unknown mnemonics."""
    n = len(audio)
    marks = [(min(max(s, 0), n), p) for s, p in phonemes]
    floor = 0.05 * float(np.percentile(_rms(audio, 0, n), 95)) if n >= _FRAME else 0.0
    segs: list[list] = [[0, marks[0][0] if marks else n, "h#"]]
    unknown: list[str] = []
    for i, (start, name) in enumerate(marks):
        end = marks[i + 1][0] if i + 1 < len(marks) else n
        if end <= start:
            continue
        labels, known = timit_labels(name)
        if not known:
            unknown.append(name)
        if len(labels) == 2 and labels[0].endswith("cl"):  # a stop: closure + release
            prev = segs[-1]
            cut = (
                _silent_tail(audio, prev[0], start, floor)
                if prev[2] not in ("pau", "h#")
                else start
            )
            if start - cut >= 5 * _FRAME and cut - prev[0] >= 5 * _FRAME:
                prev[1] = cut
                segs += [[cut, start, labels[0]], [start, end, labels[1]]]
            else:
                mid = _release(audio, start, end)
                segs += [[start, mid, labels[0]], [mid, end, labels[1]]]
            continue
        bounds = np.linspace(start, end, len(labels) + 1).round().astype(int)
        segs += [[int(bounds[k]), int(bounds[k + 1]), lab] for k, lab in enumerate(labels)]
    # trailing pauses are the closing silence
    k = len(segs)
    while k > 1 and segs[k - 1][2] in ("pau", "h#"):
        k -= 1
    segs = segs[:k] + [[segs[k][0], n, "h#"]] if k < len(segs) else segs + [[n, n, "h#"]]
    merged: list[list] = []
    for s in segs:
        if s[1] <= s[0]:
            continue
        if merged and merged[-1][2] == s[2]:
            merged[-1][1] = s[1]
        else:
            merged.append(list(s))
    for a, b in zip(merged[:-1], merged[1:], strict=False):
        assert a[1] == b[0], "alignment must be contiguous"
    assert all(s[2] in PHONE_INDEX for s in merged)
    return [(int(a), int(b), str(lab)) for a, b, lab in merged], unknown
