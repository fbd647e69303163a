"""TIMIT input features and frame labels (Greff et al. 2017, section II; pylstm's TIMIT settings).

Per 25 ms Hamming window (400 samples at 16 kHz) every 10 ms (160 samples), after pre-emphasis
0.97: 12 MFCCs (c1..c12 of a type-II orthonormal DCT of 40 log mel-filterbank energies, 512-point
FFT, cepstral lifter 22) plus the log frame energy in place of c0 = 13 coefficients, then first
and second derivatives (regression over +-2 frames, edges repeated) = 39 dimensions.

The recipe is the classic one of `python_speech_features` (HTK-like; mel filters on FFT bin
edges, log of the total power-spectrum energy), written here with NumPy (`np.hamming`, the
symmetric window) and SciPy (`scipy.fft.dct`, imported on first use to keep `import tasks` fast)
so the package needs no extra audio library (librosa is not installed here and pulls in numba);
the test suite checks it against `python_speech_features`.

Frame labelling rule, as pylstm's TIMIT code (the paper's own library): frame t covers samples
[160 t, 160 t + 400); its label is the majority phone of that window, the phone covering the most
of its 400 samples (a phone's segments in the window are added up). Segment k covers
[start_k, start_k+1), the last one everything after its start (frames running past the end of the
`.PHN` take its last phone, normally `h#`). A tie goes to the phone under the centre sample
160 t + 200 when it is among the tied, otherwise to the lowest phone index.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

SAMPLE_RATE = 16000
WIN, HOP, NFFT = 400, 160, 512  # 25 ms, 10 ms at 16 kHz
PREEMPHASIS = 0.97
N_MELS, N_CEPS, LIFTER, DELTA_WIDTH = 40, 13, 22, 2
FEATURE_SIZE = 3 * N_CEPS  # 39


def frame_count(n_samples: int, win: int = WIN, hop: int = HOP) -> int:
    """Frames of a signal; the last, partial window is zero-padded (python_speech_features' rule)."""
    return 1 if n_samples <= win else 1 + math.ceil((n_samples - win) / hop)


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@cache
def mel_filterbank(n_mels: int = N_MELS, nfft: int = NFFT, rate: int = SAMPLE_RATE) -> np.ndarray:
    """`(n_mels, nfft // 2 + 1)` triangular filters, equally spaced in mel, edges on FFT bins."""
    mels = np.linspace(0.0, _hz_to_mel(rate / 2), n_mels + 2)
    edges = np.floor((nfft + 1) * _mel_to_hz(mels) / rate)  # (n_mels + 2,)
    k = np.arange(nfft // 2 + 1)[None, :]
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        rise = np.where((k >= lo) & (k < mid), (k - lo) / (mid - lo), 0.0)
        fall = np.where((k >= mid) & (k < hi), (hi - k) / (hi - mid), 0.0)
    return rise + fall


def frames(signal: np.ndarray, win: int = WIN, hop: int = HOP) -> np.ndarray:
    """`(T, win)` overlapping frames of a 1-D signal, zero-padded at the end."""
    n = frame_count(len(signal), win, hop)
    padded = np.zeros((n - 1) * hop + win)
    padded[: len(signal)] = signal
    return np.lib.stride_tricks.sliding_window_view(padded, win)[::hop]


def mfcc(signal: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
    """`(T, 13)`: log energy and c1..c12 of a 1-D signal (any scale; int16 values as read)."""
    from scipy.fft import dct  # here, not at the top: importing scipy.fft costs ~0.1 s

    x = np.asarray(signal, dtype=np.float64)
    x = np.append(x[:1], x[1:] - PREEMPHASIS * x[:-1])
    win = round(0.025 * rate), round(0.010 * rate)
    fr = frames(x, *win) * np.hamming(win[0])  # (T, 400)
    power = np.abs(np.fft.rfft(fr, NFFT)) ** 2 / NFFT  # (T, 257)
    tiny = np.finfo(float).eps
    energy = np.maximum(power.sum(axis=1), tiny)  # (T,)
    mel = np.maximum(power @ mel_filterbank(N_MELS, NFFT, rate).T, tiny)  # (T, 40)
    ceps = dct(np.log(mel), type=2, axis=1, norm="ortho")[:, :N_CEPS]  # (T, 13)
    ceps *= 1.0 + (LIFTER / 2.0) * np.sin(np.pi * np.arange(N_CEPS) / LIFTER)
    ceps[:, 0] = np.log(energy)
    return ceps


def deltas(feat: np.ndarray, width: int = DELTA_WIDTH) -> np.ndarray:
    """Regression derivative `sum_n n (c[t+n] - c[t-n]) / (2 sum_n n^2)`, n = 1..width."""
    padded = np.pad(feat, ((width, width), (0, 0)), mode="edge")
    t = len(feat)
    num = sum(
        n * (padded[width + n : width + n + t] - padded[width - n : width - n + t])
        for n in range(1, width + 1)
    )
    return num / (2 * sum(n * n for n in range(1, width + 1)))


def features(signal: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
    """`(T, 39)` float32: MFCC+energy, deltas, delta-deltas (not yet normalised)."""
    c = mfcc(signal, rate)
    d = deltas(c)
    return np.concatenate([c, d, deltas(d)], axis=1).astype(np.float32)


def frame_labels(
    starts: np.ndarray, labels: np.ndarray, n_frames: int, win: int = WIN, hop: int = HOP
) -> np.ndarray:
    """`(T,)` int64: the majority label of each window (module doc). `starts` (ascending sample
    offsets) and `labels` (non-negative ints) give the segments, one each."""
    starts = np.asarray(starts, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    if starts.ndim != 1 or starts.shape != labels.shape or len(starts) == 0:
        raise ValueError(
            f"need one start per label and at least one segment; got {starts.shape} starts, "
            f"{labels.shape} labels"
        )
    lo = np.arange(n_frames, dtype=np.int64)[:, None] * hop  # window [lo, lo + win)
    seg_lo = starts.copy()
    seg_lo[0] = np.iinfo(np.int64).min // 2  # samples before the first start: first segment
    seg_hi = np.append(starts[1:], np.iinfo(np.int64).max // 2)
    overlap = np.clip(np.minimum(seg_hi, lo + win) - np.maximum(seg_lo, lo), 0, None)  # (T, S)
    votes = np.zeros((n_frames, int(labels.max()) + 1), dtype=np.int64)
    np.add.at(votes, (slice(None), labels), overlap)  # per label, summed over its segments
    centre = np.searchsorted(starts, lo[:, 0] + win // 2, side="right") - 1
    centre_label = labels[np.clip(centre, 0, len(labels) - 1)]
    votes *= 2  # the centre label wins a tie, and only a tie
    votes[np.arange(n_frames), centre_label] += 1
    return votes.argmax(axis=1)
