"""TIMIT task: audio readers, corpus layout and split, features, frame labels, metrics, generator."""

from __future__ import annotations

import json
import struct
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

import tasks
from tasks.base import Batch, DataError
from tasks.timit import TASK, collate, errors, loss
from tasks.timit.audio import parse_sphere_header, read_audio, read_sphere, write_sphere
from tasks.timit.corpus import list_utterances, read_phn
from tasks.timit.espeak_phones import ESPEAK_TO_TIMIT, STOPS, timit_labels
from tasks.timit.features import deltas, features, frame_count, frame_labels, mfcc
from tasks.timit.phones import (
    FOLD_39,
    PHONE_INDEX,
    PHONES,
    PHONES_39,
    core_test_speakers,
    dev_speakers,
)

SAMPLES = [1, -2, 300, -32768, 32767]


def sphere_bytes(samples, byte_format="01", coding="pcm") -> bytes:
    head = (
        (
            "NIST_1A\n   1024\n"
            f"sample_count -i {len(samples)}\nsample_rate -i 16000\nchannel_count -i 1\n"
            f"sample_n_bytes -i 2\nsample_byte_format -s2 {byte_format}\n"
            f"sample_coding -s{len(coding)} {coding}\nend_head\n"
        )
        .encode()
        .ljust(1024, b" ")
    )
    fmt = ("<" if byte_format == "01" else ">") + f"{len(samples)}h"
    return head + struct.pack(fmt, *samples)


# ----------------------------------------------------------------------------- phone tables


def test_phone_tables_match_the_paper_notes():
    assert len(PHONES) == 61 and PHONES[0] == "aa" and PHONES[-1] == "zh"
    assert len(PHONES_39) == 39 and set(PHONES) - set(FOLD_39) == {"q"}
    assert FOLD_39["ao"] == "aa" and FOLD_39["zh"] == "sh" and FOLD_39["pcl"] == "sil"
    assert FOLD_39["ix"] == "ih" and FOLD_39["hv"] == "hh" and FOLD_39["axr"] == "er"
    assert len(dev_speakers()) == 50 and "faks0" in dev_speakers()
    assert core_test_speakers() == tuple(
        "mdab0 mwbt0 felc0 mtas1 mwew0 fpas0 mjmp0 mlnt0 fpkt0 mlll0 mtls0 fjlm0 mbpm0 mklt0 "
        "fnlp0 mcmj0 mjdh0 fmgd0 mgrt0 mnjm0 fdhc0 mjln0 mpam0 fmld0".split()
    )
    assert not dev_speakers() & set(core_test_speakers())


# ----------------------------------------------------------------------------- audio


@pytest.mark.parametrize("byte_format", ["01", "10"])
def test_sphere_both_byte_orders(tmp_path, byte_format):
    path = tmp_path / "X.WAV"
    path.write_bytes(sphere_bytes(SAMPLES, byte_format))
    fields, size = parse_sphere_header(path.read_bytes())
    assert (
        size == 1024
        and fields["sample_rate"] == 16000
        and fields["sample_byte_format"] == byte_format
    )
    audio, rate = read_sphere(path)
    assert rate == 16000 and audio.dtype == np.int16 and audio.tolist() == SAMPLES


def test_sphere_writer_round_trip(tmp_path):
    x = np.array([0, 5, -7, 1200], np.int16)
    write_sphere(tmp_path / "a.wav", x, 16000, "abc0_si1")
    raw = (tmp_path / "a.wav").read_bytes()
    assert raw.startswith(b"NIST_1A\n   1024\n") and len(raw) == 1024 + 8
    assert raw[1024:] == struct.pack("<4h", 0, 5, -7, 1200)
    assert read_audio(tmp_path / "a.wav")[0].tolist() == x.tolist()


@pytest.mark.parametrize("coding", ["pcm,embedded-shorten-v2.00", "shorten", "wavpack"])
def test_compressed_sphere_refused(tmp_path, coding):
    path = tmp_path / "SX3.WAV"
    path.write_bytes(sphere_bytes(SAMPLES, coding=coding))
    with pytest.raises(DataError, match=r"SX3\.WAV.*compressed.*sph2pipe"):
        read_sphere(path)


def test_riff_wav_read(tmp_path):
    path = tmp_path / "SI1.WAV.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(struct.pack("<5h", *SAMPLES))
    audio, rate = read_audio(path)
    assert rate == 16000 and audio.tolist() == SAMPLES


def test_unknown_audio_format(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"OggS" + bytes(40))
    with pytest.raises(DataError, match="neither NIST SPHERE"):
        read_audio(tmp_path / "x.wav")


# ----------------------------------------------------------------------------- PHN and layout


def test_phn_parsing_and_validation(tmp_path):
    good = tmp_path / "a.PHN"
    good.write_text("0 2400 h#\n2400 3000 sh\n3000 4100 ax-h\n")
    starts, ends, labels = read_phn(good)
    assert starts.tolist() == [0, 2400, 3000] and ends.tolist() == [2400, 3000, 4100]
    assert labels == ["h#", "sh", "ax-h"]
    bad = tmp_path / "b.PHN"
    bad.write_text("0 2400 h#\n2400 3000 xx\n")
    with pytest.raises(DataError, match=r"b\.PHN:2: unknown phone label 'xx'"):
        read_phn(bad)
    (tmp_path / "c.PHN").write_text("0 ten h#\n")
    with pytest.raises(DataError, match=r"c\.PHN:1"):
        read_phn(tmp_path / "c.PHN")


def _utt(folder: Path, name: str, riff: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if riff:
        with wave.open(str(folder / f"{name}.WAV.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(np.zeros(800, np.int16).tobytes())
    else:
        write_sphere(folder / f"{name}.WAV", np.zeros(800, np.int16), 16000)
    ext = ".phn" if name.islower() else ".PHN"
    (folder / f"{name}{ext}").write_text("0 400 h#\n400 800 s\n")


def fake_corpus(root: Path) -> Path:
    """Mixed-case TIMIT layout: one train speaker, one dev, one core-test, one unused speaker."""
    _utt(root / "timit" / "TRAIN" / "dr1" / "FCJF0", "SI1027")
    _utt(root / "timit" / "TRAIN" / "dr1" / "FCJF0", "sx127", riff=True)
    _utt(root / "timit" / "TRAIN" / "dr1" / "FCJF0", "SA1")
    _utt(root / "timit" / "test" / "DR1" / "faks0", "si943")
    _utt(root / "timit" / "test" / "DR1" / "faks0", "SA2")
    _utt(root / "timit" / "test" / "Dr1" / "MDAB0", "SX139")
    _utt(root / "timit" / "test" / "DR2" / "MABC0", "SI1")  # in neither list: unused
    return root


def test_layout_any_case_split_and_sa_excluded(tmp_path):
    utts = list_utterances(fake_corpus(tmp_path))
    got = [(u.split, u.id) for u in utts]
    assert got == [
        ("train", "fcjf0_si1027"),
        ("train", "fcjf0_sx127"),
        ("valid", "faks0_si943"),
        ("test", "mdab0_sx139"),
    ]
    assert utts[1].audio.name == "sx127.WAV.wav" and utts[0].region == "dr1"


def test_layout_errors(tmp_path):
    with pytest.raises(DataError, match="expected TRAIN/ and TEST/"):
        list_utterances(tmp_path)
    (tmp_path / "TRAIN" / "speakers").mkdir(parents=True)
    (tmp_path / "TEST").mkdir()
    with pytest.raises(DataError, match="no DR1..DR8 folders"):
        list_utterances(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        tasks.prepare("timit", source="real", path=tmp_path / "nowhere", data_dir=tmp_path)
    with pytest.raises(DataError, match="--path"):
        TASK.prepare(tmp_path, "real", None, None, 0, False)


def test_missing_audio_named(tmp_path):
    folder = tmp_path / "TRAIN" / "DR1" / "FCJF0"
    folder.mkdir(parents=True)
    (folder / "SI1027.PHN").write_text("0 10 h#\n")
    (tmp_path / "TEST").mkdir()
    with pytest.raises(DataError, match=r"SI1027\.PHN has no audio"):
        list_utterances(tmp_path)


# ----------------------------------------------------------------------------- features


def test_mfcc_matches_python_speech_features():
    psf = pytest.importorskip("python_speech_features")
    rng = np.random.default_rng(0)
    t = np.arange(16000 + 123) / 16000
    x = 3000 * np.sin(2 * np.pi * (200 + 900 * t) * t) + rng.normal(0, 300, len(t))
    x = x.astype(np.int16)
    ours = mfcc(x)
    ref = psf.mfcc(
        x,
        16000,
        winlen=0.025,
        winstep=0.01,
        numcep=13,
        nfilt=40,
        nfft=512,
        lowfreq=0,
        highfreq=None,
        preemph=0.97,
        ceplifter=22,
        appendEnergy=True,
        winfunc=np.hamming,
    )
    assert ours.shape == ref.shape == (frame_count(len(x)), 13) == (100, 13)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(deltas(ours), psf.delta(ref, 2), rtol=0, atol=1e-6)
    full = features(x)
    assert full.shape == (100, 39) and full.dtype == np.float32
    np.testing.assert_allclose(full[:, 26:], psf.delta(psf.delta(ref, 2), 2), rtol=1e-5, atol=1e-3)


def test_delta_by_hand():
    c = np.array([[0.0], [1.0], [4.0], [9.0], [16.0]])
    # t=2: (1*(9-1) + 2*(16-0)) / 10 = 4.0 ; t=0 (edges repeated): (1*(1-0) + 2*(4-0)) / 10 = 0.9
    d = deltas(c)
    assert d[2, 0] == pytest.approx(4.0) and d[0, 0] == pytest.approx(0.9)


def _labels(segments: list[tuple[int, str]], n_frames: int) -> list[str]:
    starts = np.array([s for s, _ in segments])
    labels = np.array([PHONE_INDEX[p] for _, p in segments])
    return [PHONES[i] for i in frame_labels(starts, labels, n_frames)]


def test_frame_label_rule_majority_of_the_window():
    # h# 0-300, s 300-520, iy 520-; windows [0, 400), [160, 560), [320, 720), ...
    # frame 0: h# 300 / s 100; frame 1: h# 140 / s 220 / iy 40; frame 2: s 200 / iy 200, a tie
    # won by iy, under the centre sample 520; then iy only
    assert _labels([(0, "h#"), (300, "s"), (520, "iy")], 6) == ["h#", "s", "iy", "iy", "iy", "iy"]
    # a short phone under the centre sample does not win: a 180, b 50 (holds sample 200), c 170
    assert _labels([(0, "aa"), (180, "b"), (230, "k")], 1) == ["aa"]
    # one phone's segments add up: t 0-190 and 210-400 (380 samples) against the centre's ix 20
    assert _labels([(0, "t"), (190, "ix"), (210, "t")], 1) == ["t"]
    # past the end of the transcription: the last phone
    assert _labels([(0, "h#")], 3) == ["h#", "h#", "h#"]
    assert frame_count(400) == 1 and frame_count(401) == 2 and frame_count(560) == 2


def test_frame_labels_refuse_malformed_segments():
    with pytest.raises(ValueError, match="one start per label"):
        frame_labels(np.array([0, 10]), np.array([1]), 2)


# ----------------------------------------------------------------------------- loss and metrics


def _batch_and_logits() -> tuple[Batch, torch.Tensor, list]:
    truth = [["aa", "q", "s"], ["h#", "pau"]]
    pred = [["ao", "aa", "s"], ["pau", "q"]]
    items = [
        (np.zeros((len(t), 39), np.float32), np.array([PHONE_INDEX[p] for p in t])) for t in truth
    ]
    batch = collate(items)
    logits = torch.zeros(3, 2, 61)
    for b, seq in enumerate(pred):
        for t, p in enumerate(seq):
            logits[t, b, PHONE_INDEX[p]] = 5.0
    logits[2, 1, PHONE_INDEX["zh"]] = 9.0  # a padded frame: must not count
    return batch, logits, truth


def test_collate_pads_targets():
    batch, _, _ = _batch_and_logits()
    assert batch.x.shape == (3, 2, 39) and batch.lengths.tolist() == [3, 2]
    assert batch.targets.dtype == torch.int64 and batch.targets[2, 1] == -100


def test_frame_errors_by_hand():
    batch, logits, _ = _batch_and_logits()
    got = errors(logits, batch)
    # 61 classes: aa/ao, q/aa wrong, s right; h#/pau wrong, pau/q wrong -> 4 of 5
    assert got["frame_error"] == (4.0, 5)
    # 39 classes: ao->aa right, true q dropped, s right; h#,pau->sil right, q (dropped) wrong -> 1 of 4
    assert got["frame_error_39"] == (1.0, 4)


def test_loss_is_summed_cross_entropy():
    batch, logits, truth = _batch_and_logits()
    total, n = loss(logits, batch)
    logp = torch.log_softmax(logits, dim=-1)
    expected = -sum(
        float(logp[t, b, PHONE_INDEX[p]]) for b, seq in enumerate(truth) for t, p in enumerate(seq)
    )
    assert n == 2 and float(total) == pytest.approx(expected, rel=1e-6)


def test_tiny_dataset():
    splits = TASK.tiny(np.random.default_rng(0))
    x, y = splits["train"].inputs[0], splits["train"].targets[0]
    assert x.shape[1] == TASK.input_size == 39 and x.dtype == np.float32 and y.dtype == np.int64
    assert len(x) == len(y) and 0 <= y.min() and y.max() < TASK.output_size
    assert len(splits["train"]) == 12 and len(splits["valid"]) == 4


# ----------------------------------------------------------------------------- generated corpus


def test_espeak_table_targets_timit_labels():
    for labels in [*ESPEAK_TO_TIMIT.values(), *STOPS.values()]:
        assert all(lab in PHONE_INDEX for lab in labels)
    assert timit_labels("'aI") == (("ay",), True)
    assert timit_labels("k") == (("kcl", "k"), True)
    assert timit_labels("_:") == (("pau",), True)
    assert timit_labels("n2") == (("n",), False)  # reduced to a known mnemonic
    assert timit_labels("Y") == (("pau",), False) and timit_labels("e#") == (("ax",), False)


def _corpus_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_generated_corpus_round_trip(tmp_path):
    from tasks.timit.synth import generate

    stats = generate(tmp_path / "c", size=8, seed=3, progress=False)
    utts = list_utterances(tmp_path / "c")
    per = {s: [u for u in utts if u.split == s] for s in ("train", "valid", "test")}
    assert [len(per[s]) for s in per] == [8, 4, 4] and stats["distinct_speakers"] == 3
    assert all(u.speaker in dev_speakers() for u in per["valid"])
    assert all(u.speaker in core_test_speakers() for u in per["test"])
    assert not stats["unmapped_espeak_phonemes"]
    for u in utts:
        audio, rate = read_audio(u.audio)
        starts, ends, labels = read_phn(u.phn)
        assert rate == 16000 and starts[0] == 0 and ends[-1] == len(audio)
        assert (starts[1:] == ends[:-1]).all() and labels[0] == labels[-1] == "h#"
        assert {u.name[:2] for u in utts} <= {"si", "sx"}
    # deterministic given the seed
    generate(tmp_path / "d", size=8, seed=3, progress=False)
    assert _corpus_files(tmp_path / "c") == _corpus_files(tmp_path / "d")


def test_prepare_synthetic_and_info(tmp_path):
    out, meta = tasks.prepare("timit", size=8, seed=1, data_dir=tmp_path, progress=False)
    info = json.loads(
        json.dumps(tasks.info("timit", source="synthetic", size=8, seed=1, data_dir=tmp_path))
    )
    assert info["stand_in"] is True and info["input_size"] == 39 and info["output_size"] == 61
    assert {s: info["splits"][s]["sequences"] for s in ("train", "valid", "test")} == {
        "train": 8,
        "valid": 4,
        "test": 4,
    }
    assert info["speakers"] == {"train": 1, "valid": 1, "test": 1}
    assert (out / "corpus" / "TRAIN").is_dir() and len(info["feature_mean"]) == 39
    splits, _ = tasks.load("timit", source="synthetic", size=8, seed=1, data_dir=tmp_path)
    train = np.concatenate(splits["train"].inputs)
    assert train.shape == (info["splits"]["train"]["frames"], 39)
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(train.std(0), 1, atol=1e-3)
    assert info["splits"]["train"]["frames"] == sum(info["train_frames_per_phone"].values())


def test_prepare_real_from_a_fake_corpus(tmp_path):
    root = fake_corpus(tmp_path / "copy")
    out, meta = tasks.prepare(
        "timit", source="real", path=root, data_dir=tmp_path / "data", progress=False
    )
    assert meta["stand_in"] is False and meta["speakers"] == {"train": 1, "valid": 1, "test": 1}
    assert {s: meta["splits"][s]["sequences"] for s in ("train", "valid", "test")} == {
        "train": 2,
        "valid": 1,
        "test": 1,
    }
    splits, _ = tasks.load("timit", source="real", data_dir=tmp_path / "data")
    assert splits["valid"].ids == ["faks0_si943"]
    # 800 samples -> 4 frames, h# 0-400, s 400-800: windows [0, 400) h#, [160, 560) h# 240 / s 160,
    # [320, 720) h# 80 / s 320, [480, 880) s -> h#, h#, s, s
    assert [PHONES[i] for i in splits["test"].targets[0]] == ["h#", "h#", "s", "s"]
