"""A thin ctypes binding to eSpeak NG (the `espeakng-loader` wheel bundles the library and voices).

Synthesis is synchronous (AUDIO_OUTPUT_SYNCHRONOUS): `espeak_Synth` returns once the callback has
received all audio, together with the events we asked for: word events (text position) and, with
espeakINITIALIZE_PHONEME_EVENTS, one event per phoneme whose `sample` field is the sample-exact
position of that phoneme in the output (22050 Hz). One engine per process: eSpeak keeps global
state, so a multiprocessing worker initialises its own on first use (`engine()`).

Determinism: eSpeak's output depends slightly on what it synthesised before (wave generator
state such as pitch phase and flutter carries over between calls, moving samples and phoneme
boundaries by a few samples), and re-initialising does not reset it. `synthesize_fresh` therefore
speaks each text in a forked child of an engine that was initialised but never used, so an
utterance depends only on its text and settings, whichever worker or order produced it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import pickle
from dataclasses import dataclass

import numpy as np

from tasks.base import DataError

log = logging.getLogger(__name__)

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_EVENT_LIST_TERMINATED, _EVENT_WORD, _EVENT_PHONEME = 0, 1, 7
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
PARAM = {"rate": 1, "volume": 2, "pitch": 3, "range": 4, "wordgap": 7}


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_Callback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass(frozen=True)
class Synthesis:
    audio: np.ndarray  # (n,) int16 at `rate`
    rate: int
    phonemes: list[tuple[int, str]]  # (sample, eSpeak mnemonic incl. stress marks), in order
    words: list[tuple[int, int, int]]  # (sample, text position (1-based), length in characters)


class Engine:
    """eSpeak NG initialised once in this process, with phoneme events enabled."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as e:  # pragma: no cover - a declared dependency
            raise DataError("the synthetic TIMIT corpus needs the espeakng-loader package") from e
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self.rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS,
            0,
            espeakng_loader.get_data_path().encode(),
            _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT,
        )
        if self.rate <= 0:
            raise DataError(
                f"eSpeak NG failed to initialise (espeak_Initialize returned {self.rate})"
            )
        self._lib = lib
        self._chunks: list[np.ndarray] = []
        self._phonemes: list[tuple[int, str]] = []
        self._words: list[tuple[int, int, int]] = []
        self._callback = _Callback(self._on_audio)  # keep a reference: eSpeak holds the pointer
        lib.espeak_SetSynthCallback(self._callback)

    def _on_audio(self, wav, n, events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_PHONEME:
                self._phonemes.append((ev.sample, ev.id.string.decode("utf-8", "replace")))
            elif ev.type == _EVENT_WORD:
                self._words.append((ev.sample, ev.text_position, ev.length))
            i += 1
        return 0  # 0 = continue synthesis

    def seed(self, value: int) -> None:
        """Seed the random generators eSpeak uses for noise (its own, where present, and libc's)."""
        if hasattr(self._lib, "espeak_ng_SetRandSeed"):
            self._lib.espeak_ng_SetRandSeed(ctypes.c_long(value))
        ctypes.CDLL(None).srand(ctypes.c_uint(value))

    def synthesize(self, text: str, voice: str, **params: int) -> Synthesis:
        """Speak `text` with `voice` (e.g. "en-us+f3") and parameters such as rate=170, pitch=40."""
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise DataError(f"eSpeak NG has no voice {voice!r}")
        for name, value in params.items():
            if name not in PARAM:
                raise ValueError(f"unknown eSpeak parameter {name!r}; valid: {', '.join(PARAM)}")
            self._lib.espeak_SetParameter(PARAM[name], int(value), 0)
        self._chunks, self._phonemes, self._words = [], [], []
        data = text.encode("utf-8")
        err = self._lib.espeak_Synth(
            data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
        )
        if err != 0:
            raise DataError(f"eSpeak NG failed on {text!r} (error {err})")
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return Synthesis(audio.astype(np.int16), self.rate, self._phonemes, self._words)


_ENGINE: Engine | None = None


def engine() -> Engine:
    """This process's engine (created on first use; a forked child reuses its parent's copy)."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = Engine()
    return _ENGINE


def synthesize_fresh(text: str, voice: str, **params: int) -> Synthesis:
    """`Engine.synthesize` in a forked child of this process's unused engine (module doc)."""
    eng = engine()  # initialised here, in the parent, which itself never synthesises
    if not hasattr(os, "fork"):  # pragma: no cover - Windows
        log.warning("no os.fork: eSpeak output may vary slightly with synthesis order")
        return eng.synthesize(text, voice, **params)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: synthesise, send the result (or the error) back, exit at once
        os.close(read_fd)
        code = 0
        try:
            eng.seed(0)
            try:
                payload = pickle.dumps(("ok", eng.synthesize(text, voice, **params)))
            except Exception as e:  # noqa: BLE001 - the parent re-raises it
                payload, code = pickle.dumps(("error", DataError(str(e)))), 1
            with os.fdopen(write_fd, "wb") as f:
                f.write(payload)
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    if not data:
        raise DataError(f"eSpeak NG child process died while speaking {text!r}")
    status, result = pickle.loads(data)
    if status == "error":
        raise result
    return result
