"""What the Triton step kernels (`triton_lstm`, `triton_gru`) share: the lazy import of Triton,
the launcher that counts launches, and the tile sizes.

Triton is optional: this module imports without it, and `require()` says in one line what to
install when the Triton path is asked for. On CPU tensors the kernels run only under Triton's
interpreter (`TRITON_INTERPRET=1` set before the kernel modules are imported), which is how the
tests check them without a GPU.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections import Counter

import torch

INSTALL_HINT = "the triton cell path needs Triton: pip install 'lstm-odyssey[gpu]' (or triton>=3.2)"
# the design: kernel launches per time step for a whole pack (benchmarks.roofline projects with
# it; tests/test_triton.py counts them)
LAUNCHES_PER_STEP = {"forward": 1, "backward": 1}
LAUNCHES: Counter[str] = Counter()  # kernel name -> launches since the last clear (tests, bench)


def available() -> bool:
    """Whether Triton can be imported (without importing it)."""
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """Whether Triton's interpreter runs the kernels (`TRITON_INTERPRET=1`)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def require(x: torch.Tensor) -> None:
    """Raise a one-line error when the Triton kernels cannot run on `x`."""
    if not available():
        raise RuntimeError(INSTALL_HINT)
    if x.device.type == "cpu" and not interpreting():
        raise RuntimeError(
            "the triton cell path runs on CUDA tensors, or on CPU tensors under Triton's "
            "interpreter only (set TRITON_INTERPRET=1 before starting Python)"
        )
    if x.device.type not in ("cpu", "cuda"):
        raise RuntimeError(
            f"the triton cell path runs on CUDA (or interpreted CPU), not {x.device}"
        )
    if x.dtype not in (torch.float32, torch.float64):
        raise RuntimeError(f"the triton cell path runs float32 or float64, not {x.dtype}")


def kernels(name: str):
    """The kernel module `variants.fast.<name>` ("triton_lstm", "triton_gru"), imported on first
    use, and imported again when `TRITON_INTERPRET` changed since (Triton decides between
    compiling and interpreting when a kernel is defined)."""
    full = f"{__package__}.{name}"
    module = sys.modules.get(full)
    if module is None:
        module = importlib.import_module(full)
    elif getattr(module, "INTERPRETED", None) != interpreting():
        module = importlib.reload(module)
    module.INTERPRETED = interpreting()
    return module


def launch(kernel, grid: tuple[int, ...], *args, **meta) -> None:
    """Launch `kernel[grid](*args, **meta)` and count it (one count per launch)."""
    LAUNCHES[getattr(kernel, "__name__", None) or kernel.fn.__name__] += 1
    kernel[grid](*args, **meta)


def tiles(batch: int, n: int) -> dict[str, int]:
    """Tile sizes of a step kernel: rows of the batch, hidden units, and the chunk of the
    reduction; masks cut what lies past B or N. Fixed (16 is the smallest a GPU matrix product
    takes, and batch-1 training fills one row of it), so that a kernel compiles once per variant
    and dtype, whatever the shapes."""
    return {"BB": 16, "BN": 32, "BK": 32}


def precision(dtype: torch.dtype) -> str:
    """Exact float32 products (no TF32), as the reference loop computes them."""
    return "ieee"
