"""Reading and writing TIMIT's audio: NIST SPHERE (the LDC original) and RIFF WAV (converted copies).

SPHERE: an ASCII header that starts `NIST_1A\\n`, gives its own size on the second line (1024 bytes
in TIMIT), then `name -type value` fields up to `end_head`; the samples follow. We read
uncompressed 16-bit PCM in either byte order (`sample_byte_format` 01 = little-endian, 10 =
big-endian). Compressed SPHERE (shorten, wavpack, ...) is refused: decompress it with sph2pipe.
RIFF WAV: 16-bit PCM mono through the standard library's `wave` module.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from tasks.base import DataError

SPHERE_MAGIC = b"NIST_1A"
_COMPRESSED = ("shorten", "wavpack", "shortpack", "embedded")


def parse_sphere_header(
    raw: bytes, origin: str = "<bytes>"
) -> tuple[dict[str, str | int | float], int]:
    """Return the header fields and the header size in bytes (where the samples begin)."""
    if not raw.startswith(SPHERE_MAGIC):
        raise DataError(f"{origin}: not a NIST SPHERE file (no NIST_1A header)")
    lines = raw[:1024].split(b"\n")
    try:
        size = int(lines[1].strip())
    except (IndexError, ValueError):
        raise DataError(f"{origin}: SPHERE header has no size on its second line") from None
    fields: dict[str, str | int | float] = {}
    text = raw[:size].decode("ascii", errors="replace")
    for line in text.split("\n")[2:]:
        line = line.strip()
        if line == "end_head":
            return fields, size
        parts = line.split(None, 2)
        if len(parts) < 3 or not parts[1].startswith("-"):
            continue  # comments and padding
        name, kind, value = parts
        if kind == "-i":
            fields[name] = int(value)
        elif kind == "-r":
            fields[name] = float(value)
        else:  # -sN: a string of N characters
            fields[name] = value
    raise DataError(f"{origin}: SPHERE header has no end_head within its {size} bytes")


def read_sphere(path: Path) -> tuple[np.ndarray, int]:
    """`(samples int16 (n,), sample_rate)` from an uncompressed 16-bit PCM SPHERE file."""
    raw = Path(path).read_bytes()
    fields, size = parse_sphere_header(raw, str(path))
    coding = str(fields.get("sample_coding", "pcm")).lower()
    if any(c in coding for c in _COMPRESSED):
        raise DataError(
            f"{path}: compressed SPHERE (sample_coding {coding!r}) is not supported; decompress the "
            "corpus first, e.g. `sph2pipe -f sph IN OUT` (or `-f wav` for RIFF WAV)"
        )
    if coding != "pcm":
        raise DataError(f"{path}: unsupported SPHERE sample_coding {coding!r}; only 'pcm' is read")
    width = int(fields.get("sample_n_bytes", 2))
    channels = int(fields.get("channel_count", 1))
    if width != 2 or channels != 1:
        raise DataError(
            f"{path}: need 16-bit mono PCM, got {width}-byte samples, {channels} channels"
        )
    order = str(fields.get("sample_byte_format", "01"))
    if order not in ("01", "10"):
        raise DataError(f"{path}: unsupported sample_byte_format {order!r}; valid: 01, 10")
    if "sample_rate" not in fields:
        raise DataError(f"{path}: SPHERE header has no sample_rate")
    body = raw[size:]
    n = int(fields.get("sample_count", len(body) // 2))
    if len(body) < 2 * n:
        raise DataError(f"{path}: header says {n} samples but the file holds {len(body) // 2}")
    samples = np.frombuffer(body[: 2 * n], dtype="<i2" if order == "01" else ">i2")
    return samples.astype(np.int16), int(fields["sample_rate"])


def write_sphere(
    path: Path, samples: np.ndarray, rate: int, utterance_id: str = "", byte_format: str = "01"
) -> None:
    """Write 16-bit PCM mono with a 1024-byte TIMIT-style header."""
    samples = np.asarray(samples, dtype=np.int16)
    fields = [
        ("database_id", "s5", "TIMIT"),
        ("database_version", "s3", "1.0"),
        ("utterance_id", f"s{len(utterance_id)}", utterance_id),
        ("channel_count", "i", "1"),
        ("sample_count", "i", str(len(samples))),
        ("sample_rate", "i", str(rate)),
        ("sample_min", "i", str(int(samples.min()) if len(samples) else 0)),
        ("sample_max", "i", str(int(samples.max()) if len(samples) else 0)),
        ("sample_n_bytes", "i", "2"),
        ("sample_byte_format", "s2", byte_format),
        ("sample_sig_bits", "i", "16"),
        ("sample_coding", "s3", "pcm"),
    ]
    head = "NIST_1A\n   1024\n" + "".join(f"{n} -{k} {v}\n" for n, k, v in fields) + "end_head\n"
    header = head.encode("ascii").ljust(1024, b" ")
    assert len(header) == 1024
    body = samples.astype("<i2" if byte_format == "01" else ">i2").tobytes()
    Path(path).write_bytes(header + body)


def read_riff(path: Path) -> tuple[np.ndarray, int]:
    """`(samples int16 (n,), sample_rate)` from a 16-bit PCM mono RIFF WAV file."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2 or w.getnchannels() != 1:
                raise DataError(
                    f"{path}: need 16-bit mono PCM WAV, got {8 * w.getsampwidth()}-bit, "
                    f"{w.getnchannels()} channels"
                )
            data, rate = w.readframes(w.getnframes()), w.getframerate()
    except wave.Error as e:
        raise DataError(f"{path}: unreadable RIFF WAV ({e}); only 16-bit PCM is supported") from e
    return np.frombuffer(data, dtype="<i2").astype(np.int16), rate


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """Read SPHERE or RIFF, whatever the file extension says (TIMIT copies mix both)."""
    with open(path, "rb") as f:
        magic = f.read(8)
    if magic.startswith(SPHERE_MAGIC):
        return read_sphere(path)
    if magic.startswith(b"RIFF"):
        return read_riff(path)
    raise DataError(f"{path}: neither NIST SPHERE (NIST_1A) nor RIFF WAV; cannot read its audio")
