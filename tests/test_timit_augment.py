"""Tests for tasks/timit/augment.py: exact boundary scaling, noise colours, filters, room, level."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from scipy.signal import freqz, resample_poly, sosfreqz

from tasks.timit.augment import (
    Channel,
    _peaking_sos,
    degrade,
    draw_channel,
    noise,
    resample_ratio,
    reverb,
    scale_sample,
)


@pytest.mark.parametrize("warp", [0.85, 0.93, 1.0, 1.07, 1.15])
def test_resample_ratio_is_exact_and_short(warp):
    r = resample_ratio(22050, warp)
    assert r.denominator <= 441
    assert abs(float(r) - 16000 / 22050 / warp) < 2e-3
    if warp == 1.0:
        assert r == Fraction(320, 441)


def test_scale_sample_rounds_half_up_exactly():
    r = Fraction(3, 2)
    assert [scale_sample(p, r) for p in (0, 1, 2, 3)] == [0, 2, 3, 5]  # 0, 1.5, 3, 4.5
    r = Fraction(320, 441)
    assert all(scale_sample(p, r) == int(p * 320 / 441 + 0.5) for p in range(0, 5000, 7))


@pytest.mark.parametrize("warp", [0.86, 1.0, 1.14])
def test_boundaries_follow_the_resampled_audio(warp):
    # a click at a known 22050 Hz sample lands where scale_sample puts that boundary
    r = resample_ratio(22050, warp)
    x = np.zeros(22050)
    for p in (3000, 11025, 19000):
        x[p] = 1.0
    y = resample_poly(x, r.numerator, r.denominator)
    assert abs(len(y) - scale_sample(len(x), r)) <= 1
    for p in (3000, 11025, 19000):
        q = scale_sample(p, r)
        assert abs(int(np.argmax(np.abs(y[q - 50 : q + 50]))) - 50) <= 1


def test_noise_colours_and_variance():
    rng = np.random.default_rng(0)
    n = 2**16
    f = np.fft.rfftfreq(n, 1 / 16000)

    def band_ratio(x):  # power in 100-200 Hz over power in 1000-2000 Hz
        p = np.abs(np.fft.rfft(x)) ** 2
        return p[(f >= 100) & (f < 200)].sum() / p[(f >= 1000) & (f < 2000)].sum()

    white, pink = noise(n, "white", np.ones(10), rng), noise(n, "pink", np.ones(10), rng)
    assert white.std() == pytest.approx(1.0) and pink.std() == pytest.approx(1.0)
    assert band_ratio(white) == pytest.approx(0.1, rel=0.15)  # power ~ bandwidth
    assert band_ratio(pink) == pytest.approx(1.0, rel=0.15)  # equal power per octave
    with pytest.raises(ValueError, match="valid: white"):
        noise(10, "purple", np.ones(10), rng)


def test_peaking_filter_gain_at_centre():
    sos = _peaking_sos(1000.0, 6.0, 1.5)[0]
    _, h = freqz(sos[:3], sos[3:], worN=[1000.0], fs=16000)
    assert 20 * np.log10(abs(h[0])) == pytest.approx(6.0, abs=1e-6)
    _, h = sosfreqz(_peaking_sos(1000.0, -6.0, 1.5), worN=[30.0, 7900.0], fs=16000)
    assert np.allclose(np.abs(h), 1.0, atol=0.02)  # unity far from the centre


def test_reverb_is_causal_and_keeps_energy():
    x = np.zeros(16000)
    x[2000] = 1.0
    y = reverb(x, 0.3, np.random.default_rng(1))
    assert np.abs(y[:2000]).max() < 1e-12 and np.sum(y**2) == pytest.approx(1.0)
    assert np.sum(y[2000 + 4000 :] ** 2) > 0  # a tail 0.25 s after the click ...
    assert np.sum(y[2000 + int(0.3 * 16000) :] ** 2) < 1e-4  # ... gone (-60 dB) after rt60


def test_degrade_deterministic_bounded_and_noisy_everywhere():
    rng = np.random.default_rng(5)
    speech = np.sin(np.arange(8000) * 0.3) * 3000
    ch = draw_channel(np.random.default_rng(2))
    bank = np.random.default_rng(3).normal(size=5000)
    a = degrade(speech, 1600, 2000, ch, bank, np.random.default_rng(7))
    b = degrade(speech, 1600, 2000, ch, bank, np.random.default_rng(7))
    assert a.dtype == np.int16 and len(a) == 1600 + 8000 + 2000 and np.array_equal(a, b)
    assert 0.2 * 32767 - 1 <= np.abs(a.astype(int)).max() <= 0.9 * 32767 + 1
    assert np.abs(a[:1500]).max() > 0  # lead-in silence carries background noise
    dry = Channel(1.0, 0.0, (), 50.0, 0.0, 0.0, 30.0)
    out = degrade(speech, 0, 0, dry, bank, rng).astype(float)
    assert np.corrcoef(out[800:], speech[800:])[0, 1] > 0.99  # 27-33 dB SNR: mostly speech
