"""Process settings that change CPU timings by 1.3-1.9x (measured on 2-core test machines): glibc malloc
trimming and the torch thread count. The benchmarks apply and report them; study workers can too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

import torch

# glibc keeps freed multi-MB buffers instead of returning them to the OS after every step
MALLOC_ENV = {
    "MALLOC_TRIM_THRESHOLD_": "17179869184",
    "MALLOC_TOP_PAD_": "1073741824",
    "MALLOC_MMAP_THRESHOLD_": "17179869184",
}
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_applied: list[str] = []


def malloc_env_set() -> bool:
    """True when all three malloc variables were in the environment (set before Python started)."""
    return all(os.environ.get(k) == v for k, v in MALLOC_ENV.items())


def tune_malloc() -> str:
    """Apply the same malloc settings at run time with `mallopt` (glibc only); says what happened.

    mallopt takes an int, so the thresholds are 2 GiB instead of 16 GiB: the same for our sizes.
    """
    if malloc_env_set():
        return "malloc env vars set before start"
    if _applied:
        return _applied[0]
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = (
            libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
            and libc.mallopt(_M_TOP_PAD, 1 << 30) == 1
            and libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1
        )
        result = "mallopt applied at start-up" if ok else "mallopt refused; malloc untuned"
    except (OSError, AttributeError):
        result = "not glibc; malloc untuned"
    _applied.append(result)
    return result


def describe(threads: int) -> dict[str, object]:
    """What a benchmark ran under, for its header and JSON."""
    return {
        "torch": torch.__version__,
        "threads": threads,
        "malloc": tune_malloc(),
        "cpus": os.cpu_count(),
        "mkldnn": torch.backends.mkldnn.is_available(),
    }
