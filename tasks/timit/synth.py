"""The offline TIMIT stand-in: an eSpeak NG corpus written in the LDC layout and formats.

What it mirrors (Garofolo et al. 1993; Greff et al. 2017 section II): `TRAIN|TEST/DRn/<speaker>/`
folders, 8 utterances per speaker (SI and SX names; 5 SX prompts shared between speakers of a
split, 3 SI prompts unique to a speaker; no SA), 16 kHz 16-bit NIST SPHERE audio with TIMIT's
header fields, `.PHN` in samples with the 61 labels, `.WRD` and `.TXT`. The default size is the
paper's split: 462 training speakers (3696 utterances), 50 development speakers (400) and 24
core-test speakers (192). Validation and test speakers carry the ids of TIMIT's development and
core-test lists, so the real-corpus loader assigns the split exactly as for TIMIT; training
speakers get new TIMIT-like ids (sex letter, initials, digit).

A speaker is an eSpeak voice variant of the speaker's sex plus pitch, pitch range, speaking rate,
word gap and recording conditions (`augment.Channel`: vocal-tract warp, room, channel filter,
typical SNR), all drawn from the seed; no two speakers share voice settings. Each utterance
varies the speaker's rate (+-15 %), pitch and pitch range and gets its own noise (white, pink,
brown or babble of other eSpeak utterances) and level; see `augment.py` for why and how.
Prompts come from `sentences.py` (our own word lists). eSpeak's 22050 Hz output is resampled to
16 kHz times the speaker's warp (`scipy.signal.resample_poly` with the exact rational factor of
`augment.resample_ratio`) and its phoneme boundaries are scaled by that same factor; see
`espeak_phones.py` for the mapping to TIMIT labels.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path

import numpy as np

from tasks.timit import espeak
from tasks.timit.audio import write_sphere
from tasks.timit.augment import Channel, degrade, draw_channel, resample_ratio, scale_sample
from tasks.timit.espeak_phones import align
from tasks.timit.phones import core_test_speakers, dev_speakers
from tasks.timit.sentences import unique_sentences

RATE = 16000
PAPER_SIZES = {"train": 3696, "valid": 400, "test": 192}
PER_SPEAKER = 8
KINDS = ("si", "sx", "sx", "si", "sx", "sx", "si", "sx")  # 3 SI + 5 SX, as in TIMIT (SA left out)
VOICES = {
    "m": (
        "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "klatt", "klatt2", "klatt3", "Andy",
        "Denis", "Hugo", "Lee", "Marco", "antonio", "michel", "miguel", "travis", "victor",
        "david", "edward", "iven", "john", "max", "paul", "robert",
    ),
    "f": (
        "f1", "f2", "f3", "f4", "f5", "linda", "steph", "steph2", "steph3", "aunty", "Alicia",
        "Andrea", "Annie", "anika", "belinda",
    ),
}  # fmt: skip
BABBLE_TALKERS = ("m1", "m3", "m7", "f2", "f4", "linda", "Andy", "belinda")
# TIMIT's training speakers per dialect region (DR1..DR8), used as region weights.
REGION_WEIGHTS = np.array([38, 76, 76, 68, 70, 35, 77, 22], dtype=float)


@dataclass(frozen=True)
class Speaker:
    id: str
    split: str
    region: int
    voice: str  # eSpeak voice name, e.g. "en-us+f3"
    pitch: int
    pitch_range: int
    rate: int  # words per minute
    wordgap: int  # extra pause between words, in units of 10 ms (0: eSpeak's own pauses only)
    channel: Channel  # recording conditions: warp, room, filter, typical SNR (augment.py)


@dataclass(frozen=True)
class Job:
    """One utterance to synthesise and write (plain data, sent to a worker process)."""

    speaker: Speaker
    name: str  # e.g. "si1027"
    text: str
    folder: Path
    seed: int
    rate: int  # this utterance's eSpeak settings: the speaker's, varied
    pitch: int
    pitch_range: int


def split_sizes(size: int | None) -> dict[str, int]:
    """Utterances per split: the paper's, or `size` training ones and proportional others (>= 4)."""
    if size is None:
        return dict(PAPER_SIZES)
    scale = size / PAPER_SIZES["train"]
    return {
        "train": size,
        **{
            s: min(PAPER_SIZES[s], max(4, round(scale * PAPER_SIZES[s]))) for s in ("valid", "test")
        },
    }


def _train_ids(n: int, rng: np.random.Generator, taken: set[str]) -> list[tuple[str, str]]:
    letters = "abcdefghijklmnoprstvwy"
    out = []
    while len(out) < n:
        sex = "m" if rng.random() < 0.7 else "f"  # TIMIT is about 70 % male
        sid = sex + "".join(rng.choice(list(letters), 3)) + str(int(rng.integers(0, 3)))
        if sid not in taken:
            taken.add(sid)
            out.append((sid, sex))
    return out


def make_speakers(sizes: dict[str, int], rng: np.random.Generator) -> list[Speaker]:
    """Speakers of every split with distinct voice settings (module doc)."""
    dev, core = sorted(dev_speakers()), list(core_test_speakers())
    n_spk = {s: math.ceil(n / PER_SPEAKER) for s, n in sizes.items()}
    valid_ids = sorted(rng.choice(dev, n_spk["valid"], replace=False).tolist())
    test_pos = sorted(rng.choice(len(core), n_spk["test"], replace=False).tolist())
    ids = {
        "train": _train_ids(n_spk["train"], rng, set(dev) | set(core)),
        "valid": [(s, s[0]) for s in valid_ids],
        "test": [(core[i], core[i][0]) for i in test_pos],
    }
    regions = {
        "train": rng.choice(8, n_spk["train"], p=REGION_WEIGHTS / REGION_WEIGHTS.sum()),
        "valid": [dev.index(s) % 8 for s in valid_ids],  # the real regions are not in our lists
        "test": [i // 3 for i in test_pos],  # the core list is ordered by region, 3 per region
    }
    used: set[tuple] = set()
    speakers = []
    for split in ("train", "valid", "test"):
        for (sid, sex), region in zip(ids[split], regions[split], strict=True):
            while True:
                key = (
                    str(rng.choice(VOICES[sex])),
                    int(rng.integers(20, 81)),
                    int(rng.integers(20, 81)),
                    int(rng.integers(145, 211)),
                )
                if key not in used:
                    used.add(key)
                    break
            speakers.append(
                Speaker(
                    sid,
                    split,
                    int(region) + 1,
                    f"en-us+{key[0]}",
                    key[1],
                    key[2],
                    key[3],
                    int(rng.integers(0, 3)),
                    draw_channel(rng),
                )
            )
    return speakers


def plan(root: Path, size: int | None, seed: int) -> list[Job]:
    """Every utterance of the corpus: speaker, file name, prompt and its own noise seed."""
    rng = np.random.default_rng(seed)
    sizes = split_sizes(size)
    speakers = make_speakers(sizes, rng)
    prompts: set[str] = set()
    jobs: list[Job] = []
    sx_next, si_next = 3, 648  # TIMIT numbers SX prompts from 3 and SI prompts from 648 on
    for split in ("train", "valid", "test"):
        spk = [s for s in speakers if s.split == split]
        counts = [PER_SPEAKER] * len(spk)
        counts[-1] = sizes[split] - PER_SPEAKER * (len(spk) - 1)
        n_sx = sum(KINDS[:c].count("sx") for c in counts)
        # each SX prompt is read by about 7 speakers; a speaker's (up to 5) SX prompts are distinct
        pool = max(min(5, n_sx), math.ceil(n_sx / 7), 1)
        sx_text = unique_sentences(pool, rng, prompts)
        sx_ids = list(range(sx_next, sx_next + pool))
        sx_next += pool
        k = 0
        for s, c in zip(spk, counts, strict=True):
            part = "TRAIN" if split == "train" else "TEST"
            folder = root / part / f"DR{s.region}" / s.id.upper()
            for kind in KINDS[:c]:
                if kind == "sx":
                    j = k % pool
                    k += 1
                    name, text = f"sx{sx_ids[j]}", sx_text[j]
                else:
                    name, text = f"si{si_next}", unique_sentences(1, rng, prompts)[0]
                    si_next += 1
                jobs.append(_job(s, name, text, folder, rng))
    return jobs


def _job(sp: Speaker, name: str, text: str, folder: Path, rng: np.random.Generator) -> Job:
    """One utterance of `sp` with its own noise seed and varied rate, pitch and pitch range."""
    return Job(
        sp,
        name,
        text,
        folder,
        int(rng.integers(2**31)),
        int(np.clip(round(sp.rate * rng.uniform(0.85, 1.15)), 80, 450)),
        int(np.clip(sp.pitch + rng.integers(-10, 11), 0, 99)),
        int(np.clip(sp.pitch_range + rng.integers(-15, 16), 0, 99)),
    )


@cache
def babble_bank() -> np.ndarray:
    """About 20 s of speech (8 eSpeak talkers, fixed prompts) at 16 kHz, unit variance: the
    source of babble noise. Built once per process; identical everywhere (`synthesize_fresh`)."""
    from scipy.signal import resample_poly

    texts = unique_sentences(len(BABBLE_TALKERS), np.random.default_rng(1989))
    parts = []
    for voice, text in zip(BABBLE_TALKERS, texts, strict=True):
        syn = espeak.synthesize_fresh(text, f"en-us+{voice}", rate=175)
        parts.append(resample_poly(syn.audio.astype(np.float64), 320, 441))
    bank = np.concatenate(parts)
    return bank / bank.std()


def _words(
    text: str,
    words: list[tuple[int, int, int]],
    ratio: Fraction,
    lead: int,
    speech: tuple[int, int],
) -> list[tuple[int, int, str]]:
    """`.WRD` rows: each word from its eSpeak word event to the next (inside the speech span)."""
    out = []
    starts = [max(speech[0], lead + scale_sample(s, ratio)) for s, _, _ in words] + [speech[1]]
    for i, (_, pos, length) in enumerate(words):
        word = re.sub(r"[^a-z'-]", "", text[pos - 1 : pos - 1 + length].lower())
        a, b = starts[i], max(starts[i], min(starts[i + 1], speech[1]))
        if word and b > a:
            out.append((a, b, word))
    return out


def synthesize(job: Job) -> dict:
    """Synthesise one utterance, write its WAV/PHN/WRD/TXT; return its statistics."""
    from scipy.signal import resample_poly  # here: importing scipy.signal costs ~0.4 s

    sp = job.speaker
    syn = espeak.synthesize_fresh(
        job.text,
        sp.voice,
        rate=job.rate,
        pitch=job.pitch,
        range=job.pitch_range,
        wordgap=sp.wordgap,
    )
    segs, unknown = align(syn.audio, syn.phonemes)
    rng = np.random.default_rng(job.seed)
    ratio = resample_ratio(syn.rate, sp.channel.warp)
    speech = resample_poly(syn.audio.astype(np.float64), ratio.numerator, ratio.denominator)
    lead, trail = int(rng.integers(1600, 4000)), int(rng.integers(1600, 4000))  # 0.10-0.25 s
    n = lead + len(speech) + trail
    audio = degrade(speech, lead, trail, sp.channel, babble_bank(), rng)
    # boundaries: scale by the resampling factor, shift by the lead-in; h# absorbs the silence
    bounds = [lead + scale_sample(a, ratio) for a, _, _ in segs] + [n]
    bounds[0] = 0
    rows = [(bounds[i], bounds[i + 1], lab) for i, (_, _, lab) in enumerate(segs)]
    if rows[0][2] != "h#":
        rows = [(0, lead, "h#"), (lead, rows[0][1], rows[0][2]), *rows[1:]]
    if rows[-1][2] != "h#":
        rows = [*rows[:-1], (rows[-1][0], n - trail, rows[-1][2]), (n - trail, n, "h#")]
    rows = [r for r in rows if r[1] > r[0]]
    speech_span = (rows[0][1], rows[-1][0])
    job.folder.mkdir(parents=True, exist_ok=True)
    base = job.folder / job.name.upper()
    write_sphere(base.with_suffix(".WAV"), audio, RATE, f"{sp.id}_{job.name}")
    base.with_suffix(".PHN").write_text("".join(f"{a} {b} {lab}\n" for a, b, lab in rows))
    wrd = _words(job.text, syn.words, ratio, lead, speech_span)
    base.with_suffix(".WRD").write_text("".join(f"{a} {b} {w}\n" for a, b, w in wrd))
    base.with_suffix(".TXT").write_text(f"0 {n} {job.text}\n")
    return {
        "split": sp.split,
        "samples": n,
        "phones": Counter(lab for _, _, lab in rows),
        "unknown": Counter(unknown),
    }


def generate(
    root: Path, size: int | None = None, seed: int = 0, progress: bool = True, workers: int = 2
) -> dict:
    """Write the whole corpus under `root` (emptied first by the caller); return its statistics."""
    from tasks.timit.loader import parallel_map  # the loader owns the pool + progress helper

    jobs = plan(root, size, seed)
    phones: Counter = Counter()
    unknown: Counter = Counter()
    samples = Counter()
    for out in parallel_map(synthesize, jobs, workers, "TIMIT synthesis", progress):
        phones.update(out["phones"])
        unknown.update(out["unknown"])
        samples[out["split"]] += out["samples"]
    speakers = {s.id: s for s in (j.speaker for j in jobs)}
    return {
        "generator": "eSpeak NG (espeakng-loader) voices in TIMIT's LDC layout; see tasks/timit/synth.py",
        "corpus_dir": str(root),
        "corpus_hours": {s: round(samples[s] / RATE / 3600, 3) for s in ("train", "valid", "test")},
        "distinct_speakers": len(speakers),
        "voices_used": sorted({s.voice for s in speakers.values()}),
        "phone_segments": dict(sorted(phones.items())),
        "unmapped_espeak_phonemes": dict(unknown),
    }
