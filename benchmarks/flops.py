"""The matrix-product work of one training step, counted from a module's weight matrices.

Why: a variant's speed against torch.nn.LSTM has a floor set by arithmetic, not by code. FGR's
nine gate-to-gate matrices make its recurrent work 13 N^2 multiply-adds per row and step against
nn.LSTM's 4 N^2; no kernel can run it at nn.LSTM's time unless it runs faster per operation.
`bench cells` reports this work next to the time, as `work` (this count over nn.LSTM's) and
`gflops` (this count over the measured time), so that a ratio can be read against its floor.

The count, for a training step as `bench cells` times it (forward of all T steps, backward into
every parameter, no gradient for the input), per direction and batch row B:
- an input matrix W (rows x M): its product with the inputs of all steps and the product giving
  its gradient, 2 x (2 T rows M) floating-point operations;
- a recurrent matrix R (rows x cols): T forward products, T weight-gradient products and T - 1
  products carrying the gradient back to the previous step (none reaches the zero initial
  state), (3 T - 1) x 2 rows cols.
These are exactly the matrix products of the reference loops (`scan_reference`), which the tests
check with torch's FlopCounterMode. Elementwise gate work (O(N) per row and step) is not counted.
"""

from __future__ import annotations

import torch

# parameter name (last dotted part) -> kind; a matrix of any other name is an error, so that a
# new weight matrix cannot go uncounted. Our cells' parameters carry a leading trial dimension
# (all trials of a pack count); torch's have none.
_KINDS = {
    "W": "input",  # our cells
    "R": "recurrent",
    "Rg": "recurrent",  # FGR's nine gate-to-gate matrices, as one (3N, 3N) block
    "p": "elementwise",  # the peephole weights, one row per gate: O(N) work
    "b": "elementwise",
    "b_ih": "elementwise",
    "b_hh": "elementwise",
    "tau": "elementwise",  # LEAKY's time constants, one per unit
    "weight_ih_l0": "input",  # torch.nn.LSTM / nn.GRU, one layer
    "weight_ih_l0_reverse": "input",
    "weight_hh_l0": "recurrent",
    "weight_hh_l0_reverse": "recurrent",
}


def step_flops(module: torch.nn.Module, steps: int, batch: int) -> int:
    """Floating-point operations of the matrix products of one training step of `module` over
    `steps` time steps and `batch` rows (see the module docstring)."""
    if steps < 1 or batch < 1:
        raise ValueError(f"steps and batch must be >= 1, got steps={steps}, batch={batch}")
    total = 0
    for name, p in module.named_parameters():
        if p.dim() < 2 or name.startswith("bias") or ".bias" in name:
            continue  # biases: elementwise work
        kind = _KINDS.get(name.rsplit(".", 1)[-1])
        if kind is None:
            raise ValueError(
                f"don't know how {name!r} {tuple(p.shape)} is used; known matrices: "
                f"{', '.join(_KINDS)}"
            )
        if kind == "elementwise":
            continue
        products = 2 * steps if kind == "input" else 3 * steps - 1
        total += products * 2 * batch * p.numel()
    return total


# (m, k, n) of the products timed for the reference rate: squares, and the shapes of the cells'
# own products (per-step recurrent rows x N x 4N, the input projection and the weight gradients
# over all T x B rows); on CPU one thread, on CUDA larger squares
RATE_SHAPES = {
    "cpu": (
        (128, 128, 128),
        (256, 256, 256),
        (512, 512, 512),
        (1024, 1024, 1024),
        (16, 128, 512),
        (16, 256, 1024),
        (4800, 39, 1024),
        (4800, 256, 1024),
        (1024, 4800, 256),
    ),
    "cuda": ((4096, 4096, 4096), (8192, 8192, 8192), (16, 1024, 4096), (4800, 1024, 4096)),
}


def gemm_rates(
    device: torch.device | str = "cpu",
    shapes: tuple[tuple[int, int, int], ...] | None = None,
    repeats: int = 5,
    min_sample_s: float = 0.02,
) -> dict[tuple[int, int, int], float]:
    """float32 GFLOP/s of `a @ b` for each (m, k, n), with the threads torch has now: the best of
    `repeats` samples, each at least `min_sample_s` long, after a warm-up."""
    import time

    dev = torch.device(device)
    out = {}
    for m, k, n in shapes or RATE_SHAPES["cuda" if dev.type == "cuda" else "cpu"]:
        a = torch.randn(m, k, device=dev)
        b = torch.randn(k, n, device=dev)

        def timed(times: int, a=a, b=b) -> float:
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            start = time.perf_counter()
            for _ in range(times):
                a @ b
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            return time.perf_counter() - start

        inner = max(1, round(min_sample_s / max(timed(1), 1e-7)))  # also the warm-up
        best = min(timed(inner) / inner for _ in range(repeats))
        out[(m, k, n)] = 2 * m * k * n / best / 1e9
    return out


def peak_gflops(device: torch.device | str = "cpu", repeats: int = 5) -> float:
    """A reference matrix-product rate for this machine: the best of `gemm_rates` over
    `RATE_SHAPES`. Not a hard bound: a fused kernel whose weights stay in cache, or a quieter
    moment on a shared machine, can run faster."""
    return max(gemm_rates(device, repeats=repeats).values())
