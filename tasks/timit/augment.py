"""Acoustic variability for the eSpeak TIMIT stand-in: speaker warp, room, noise and channel.

Why: eSpeak NG is far more regular than people reading TIMIT prompts (every speaker of a voice
sounds alike, no room, no microphone, no background), so a small bidirectional LSTM classifies
its frames almost perfectly. This module degrades the clean synthesis the way real recordings
differ, with NumPy/SciPy only and every random choice drawn from generators the caller seeds:

- warp (per speaker): the synthesis is resampled by a factor 0.85-1.15 on its way to 16 kHz, a
  speed perturbation that scales formants (a vocal-tract-length change), pitch and durations
  together; `resample_ratio` returns the exact rational factor so phone boundaries scale with it.
- room (per speaker, some speakers only): reverberation with a synthetic impulse response,
  a direct path plus exponentially decaying Gaussian noise (RT60 0.1-0.4 s); causal, so it
  smears energy into later phones without moving any boundary.
- noise (per utterance): white, pink (1/f), brown (1/f^2) or babble (a mixture of other eSpeak
  utterances, `babble_bank`), added over the whole file at an SNR of 15-35 dB against the speech.
- channel (per speaker, i.e. per recording session): a spectral tilt (first-order pre-emphasis
  or de-emphasis), two random peaking-EQ biquads (+-6 dB), a high-pass at 50-250 Hz and, for
  some speakers, a telephone-like low-pass at 3.4-7.5 kHz; applied after the noise, as a
  microphone would.
- level (per utterance): the result is scaled to a random peak of 20-90 % of 16-bit full scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

RATE = 16000
NOISE_KINDS = ("white", "pink", "brown", "babble")
NOISE_WEIGHTS = (0.2, 0.3, 0.15, 0.35)
SNR_DB = (15.0, 35.0)


@dataclass(frozen=True)
class Channel:
    """One speaker's recording conditions (plain data: it travels to worker processes)."""

    warp: float  # speed/vocal-tract factor; > 1: shorter, higher formants
    tilt: float  # first-order filter 1 - tilt z^-1 (> 0 brightens, < 0 darkens)
    peaks: tuple[tuple[float, float, float], ...]  # peaking EQs: (centre Hz, gain dB, Q)
    highpass: float  # Hz
    lowpass: float  # Hz; 0 = none
    rt60: float  # reverberation time in s; 0 = dry
    snr_db: float  # the speaker's typical SNR (each utterance varies around it)


def draw_channel(rng: np.random.Generator) -> Channel:
    """A random speaker/session channel (module doc for the ranges)."""
    peaks = tuple(
        (
            float(np.exp(rng.uniform(np.log(200.0), np.log(5000.0)))),
            float(rng.uniform(-6.0, 6.0)),
            float(rng.uniform(0.7, 3.0)),
        )
        for _ in range(2)
    )
    return Channel(
        warp=float(rng.uniform(0.85, 1.15)),
        tilt=float(rng.uniform(-0.6, 0.9)),
        peaks=peaks,
        highpass=float(rng.uniform(50.0, 250.0)),
        lowpass=float(rng.uniform(3400.0, 7500.0)) if rng.random() < 0.25 else 0.0,
        rt60=float(rng.uniform(0.1, 0.4)) if rng.random() < 0.25 else 0.0,
        snr_db=float(rng.uniform(*SNR_DB)),
    )


def resample_ratio(source_rate: int, warp: float) -> Fraction:
    """Exact `up/down` taking `source_rate` audio to 16 kHz and speeding it up by `warp`.

    The denominator is kept small (<= 441) so `resample_poly`'s filter stays short.
    """
    return (Fraction(RATE, source_rate) / Fraction(warp).limit_denominator(1000)).limit_denominator(
        441
    )


def scale_sample(position: int, ratio: Fraction) -> int:
    """A sample position after resampling by `ratio`, rounded half up in exact integer arithmetic."""
    return (2 * position * ratio.numerator + ratio.denominator) // (2 * ratio.denominator)


def reverb(speech: np.ndarray, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """`speech` in a synthetic room: direct path + exponentially decaying noise tail, same length."""
    from scipy.signal import fftconvolve

    n = int(rt60 * RATE)
    t = np.arange(n) / RATE
    tail = rng.normal(0.0, 1.0, n) * np.exp(-6.9 * t / rt60)  # -60 dB after rt60
    tail[: int(rng.uniform(0.001, 0.005) * RATE)] = 0.0  # first reflections arrive after 1-5 ms
    direct_to_reverb = 10 ** (rng.uniform(-3.0, 10.0) / 10)
    tail *= np.sqrt(1.0 / (direct_to_reverb * np.sum(tail**2) + 1e-12))
    ir = tail
    ir[0] = 1.0
    out = fftconvolve(speech, ir)[: len(speech)]
    return out * np.sqrt(np.sum(speech**2) / (np.sum(out**2) + 1e-12))


def _coloured(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with power spectrum 1/f**exponent (0 white, 1 pink, 2 brown), unit variance."""
    spec = np.fft.rfft(rng.normal(0.0, 1.0, n))
    f = np.fft.rfftfreq(n, 1.0 / RATE)
    f[0] = f[1] if n > 1 else 1.0
    noise = np.fft.irfft(spec / f ** (exponent / 2), n)
    return noise / (noise.std() + 1e-12)


def _babble(n: int, bank: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """3-7 talkers: random stretches of `bank` (looped) summed with random gains, unit variance."""
    out = np.zeros(n)
    idx = np.arange(n)
    for _ in range(int(rng.integers(3, 8))):
        start = int(rng.integers(len(bank)))
        out += rng.uniform(0.5, 1.0) * bank[(start + idx) % len(bank)]
    return out / (out.std() + 1e-12)


def noise(n: int, kind: str, bank: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`n` samples of unit-variance noise of `kind` (one of NOISE_KINDS)."""
    if kind == "babble":
        return _babble(n, bank, rng)
    exponents = {"white": 0.0, "pink": 1.0, "brown": 2.0}
    if kind not in exponents:
        raise ValueError(f"unknown noise kind {kind!r}; valid: {', '.join(NOISE_KINDS)}")
    return _coloured(n, exponents[kind], rng)


def _peaking_sos(centre: float, gain_db: float, q: float) -> np.ndarray:
    """RBJ audio-EQ-cookbook peaking filter as one second-order section."""
    a = 10 ** (gain_db / 40)
    w = 2 * np.pi * min(centre, 0.45 * RATE) / RATE
    alpha = np.sin(w) / (2 * q)
    b = np.array([1 + alpha * a, -2 * np.cos(w), 1 - alpha * a])
    den = np.array([1 + alpha / a, -2 * np.cos(w), 1 - alpha / a])
    return np.concatenate([b / den[0], den / den[0]])[None, :]


def apply_channel(audio: np.ndarray, ch: Channel) -> np.ndarray:
    """Tilt, peaking EQs, high-pass and optional low-pass of `ch`, in that order."""
    from scipy.signal import butter, lfilter, sosfilt

    out = lfilter([1.0, -ch.tilt], [1.0], audio)
    sos = [_peaking_sos(*p) for p in ch.peaks]
    sos.append(butter(2, ch.highpass, "highpass", fs=RATE, output="sos"))
    if ch.lowpass:
        sos.append(butter(4, ch.lowpass, "lowpass", fs=RATE, output="sos"))
    return sosfilt(np.concatenate(sos), out)


def degrade(
    speech: np.ndarray,
    lead: int,
    trail: int,
    ch: Channel,
    bank: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """The recorded file: `speech` (16 kHz, float) padded by `lead`/`trail` samples, in `ch`'s
    room with noise at about its SNR, through its channel, scaled to a random level, as int16."""
    if ch.rt60:
        speech = reverb(speech, ch.rt60, rng)
    n = lead + len(speech) + trail
    clean = np.zeros(n)
    clean[lead : lead + len(speech)] = speech
    kind = str(rng.choice(NOISE_KINDS, p=NOISE_WEIGHTS))
    snr = float(np.clip(ch.snr_db + rng.uniform(-3.0, 3.0), *SNR_DB))
    power = np.mean(speech**2) if len(speech) else 0.0
    audio = clean + noise(n, kind, bank, rng) * np.sqrt(power / 10 ** (snr / 10))
    audio = apply_channel(audio, ch)
    peak = np.max(np.abs(audio)) if n else 0.0
    level = rng.uniform(0.2, 0.9) * 32767 / peak if peak > 0 else 0.0
    return np.clip(np.round(audio * level), -32768, 32767).astype(np.int16)
