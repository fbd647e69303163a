"""Builds and loads the compiled CPU kernels (`cells.cpp`) once per user and machine.

The extension is JIT-compiled on first use with `torch.utils.cpp_extension.load` (gcc, ninja,
`-O3 -fopenmp`) into a cache folder keyed by a hash of the source, the torch and Python versions
and the flags, under a file lock, so that concurrent processes (Ray workers) build it once and
every later process only loads the shared library (no compiler, no ninja needed then).

Cache folder: `$ODYSSEY_EXT_DIR`, else `$XDG_CACHE_HOME/lstm-odyssey/ext`, else
`~/.cache/lstm-odyssey/ext`. If anything fails, `load()` logs one warning naming the cause and
returns None; callers then use the pure-PyTorch kernels (`variants.fast.pykernel`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sys
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)

NAME = "odyssey_cells"
SOURCE = Path(__file__).with_name("cells.cpp")
CFLAGS = [
    "-O3",
    "-march=native",
    "-mprefer-vector-width=512",  # the fused gate loops: 16 floats a vector where AVX-512 is
    "-fopenmp",
    "-fno-math-errno",
    "-fno-trapping-math",
]
LDFLAGS = ["-fopenmp"]

_state: dict[str, object] = {"tried": False, "ops": None, "error": None, "seconds": None}


def cache_dir() -> Path:
    """The folder holding one build per (source, torch, Python, flags) hash."""
    if os.environ.get("ODYSSEY_EXT_DIR"):
        return Path(os.environ["ODYSSEY_EXT_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "lstm-odyssey" / "ext"


def build_tag() -> str:
    h = hashlib.sha256(SOURCE.read_bytes())
    for part in (torch.__version__, sys.version, platform.machine(), _cpu(), *CFLAGS, *LDFLAGS):
        h.update(part.encode())
    return h.hexdigest()[:16]


def _cpu() -> str:
    """The CPU model and flags: -march=native builds must not be shared across CPU kinds."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    keep = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))]
    return "\n".join(keep[:2])


def _library(folder: Path) -> Path:
    return folder / f"{NAME}.so"


def _compile(folder: Path) -> None:
    """Compile into `folder` while holding an exclusive lock beside it."""
    import fcntl  # POSIX; an ImportError elsewhere becomes the fallback's warning

    from torch.utils import cpp_extension

    folder.mkdir(parents=True, exist_ok=True)
    try:  # ninja from PyPI lives in the venv's bin, which need not be on PATH
        import ninja

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    except ImportError:
        pass
    with open(folder.parent / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # others wait here, then find the library built
        if _library(folder).exists():
            return
        log.info("compiling the fast LSTM kernels into %s (once per machine; 10-30 s)", folder)
        cpp_extension.load(
            name=NAME,
            sources=[str(SOURCE)],
            extra_cflags=list(CFLAGS),
            extra_ldflags=list(LDFLAGS),
            build_directory=str(folder),
            is_python_module=False,
            verbose=False,
        )
        # load() above already loaded it into this process


def load() -> object | None:
    """`torch.ops.odyssey_cells`, building it first if needed; None (with one warning) on failure."""
    if _state["tried"]:
        return _state["ops"]
    _state["tried"] = True
    if os.environ.get("ODYSSEY_NO_BUILD"):
        _state["error"] = "ODYSSEY_NO_BUILD is set"
        log.info("fast LSTM kernels: compiled extension disabled (ODYSSEY_NO_BUILD); using PyTorch")
        return None
    start = time.perf_counter()
    try:
        folder = cache_dir() / build_tag()
        if not _library(folder).exists():
            _compile(folder)
        if not hasattr(torch.ops, NAME) or not hasattr(getattr(torch.ops, NAME), "lstm_forward"):
            torch.ops.load_library(str(_library(folder)))
        ops = getattr(torch.ops, NAME)
        ops.lstm_forward  # noqa: B018 - fails here, not in the first training step
    except Exception as e:  # noqa: BLE001 - any failure means: use the fallback, and say why
        _state["error"] = f"{type(e).__name__}: {e}"
        log.warning(
            "fast LSTM kernels could not be built or loaded (%s); using the pure-PyTorch "
            "kernels instead (correct, 2-4x slower on CPU). Set ODYSSEY_NO_BUILD=1 to "
            "silence this.",
            _state["error"].splitlines()[0][:300],
        )
        return None
    _state["ops"], _state["seconds"] = ops, time.perf_counter() - start
    log.debug("fast LSTM kernels ready in %.1f s", _state["seconds"])
    return ops


def status() -> dict[str, object]:
    """Whether the compiled kernels are loaded, the load/build seconds, or the error."""
    return {
        "loaded": _state["ops"] is not None,
        "tried": _state["tried"],
        "seconds": _state["seconds"],
        "error": _state["error"],
        "cache": str(cache_dir() / build_tag()),
    }


def reset() -> None:
    """Forget the outcome of `load()` (for tests); a loaded library stays loaded."""
    _state.update(tried=False, ops=None, error=None, seconds=None)
