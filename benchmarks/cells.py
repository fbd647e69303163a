"""Cell speed against torch.nn.LSTM: forward + backward milliseconds per training step.

For every variant and shape, one training step (forward of the whole padded batch, `out.sum()`,
backward into every parameter) is timed after a warm-up; all modules of a shape are timed in
turn within each repeat (so that load from other processes hits all alike), and the reported
`ms` is the median over repeats. `ratio` = ms / ms of torch.nn.LSTM of the same shape in the same
run. `impl`: the implementation that ran, as recorded during a step (`variants.fast` chooses per
call, by device and by what the layer needs). `gflop`: the matrix-product work of the step
(`benchmarks.flops`); `work` = gflop / gflop of nn.LSTM, the ratio a kernel as efficient as
nn.LSTM's would reach; `gflops` = gflop per second achieved; `peak_gflops` = a reference rate,
the best of several matrix-product shapes timed at the start of the run (`flops.peak_gflops`),
and `ratio_at_peak` = the ratio if every matrix product of the step ran at that rate and nothing
else took time. The reference rate is not a bound: a fused kernel keeping its weights in cache,
or a quieter moment on a shared machine, can beat it (`above_peak` says so per row).
`peak_mem_mb`: on CUDA, torch.cuda.max_memory_allocated over one step minus what was allocated
before it; on CPU, the peak of live tensor bytes during one step from the torch profiler's memory
timeline (inputs, parameters, activations, gradients; allocator caches and BLAS scratch buffers
are not counted).
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import variants
from benchmarks.flops import peak_gflops, step_flops
from variants import fast


@dataclass(frozen=True)
class Shape:
    name: str
    input_size: int
    hidden_size: int
    batch: int
    steps: int
    bidirectional: bool


SHAPES = {
    s.name: s
    for s in (
        Shape("timit32", 39, 32, 16, 300, True),
        Shape("timit128", 39, 128, 16, 300, True),
        Shape("timit256", 39, 256, 16, 300, True),
        Shape("jsb32", 88, 32, 16, 120, False),
        Shape("jsb128", 88, 128, 16, 120, False),
    )
}
BASELINE = "nn.LSTM"
PATHS = ("fast", "reference")


def _step_fn(
    module: torch.nn.Module, x: torch.Tensor, lengths: torch.Tensor | None
) -> Callable[[], None]:
    params = list(module.parameters())

    def step() -> None:
        for p in params:
            p.grad = None
        out = module(x)[0] if lengths is None else module(x, lengths)
        out.sum().backward()

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# what torch's profiler writes to the process's stderr on every start and stop (from C++, so
# Python's warning filters can't stop it): dropped; any other line written meanwhile is kept
_PROFILER_NOISE = re.compile(
    r"^USDT:.*SyncActivityProfilerHandler.*profiler_st(art|op)"
    r"|Memory block of unknown size was allocated before the profiling started"
)


@contextmanager
def _without_profiler_noise() -> Iterator[None]:
    """Capture file descriptor 2 for the block, then write back what is not profiler noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines(keepends=True):
                if not _PROFILER_NOISE.search(line):
                    sys.stderr.write(line)
            sys.stderr.flush()


def peak_memory_mb(step: Callable[[], None], device: torch.device) -> float | None:
    """Peak tensor memory of one step (see the module docstring for how); None if unmeasurable."""
    if device.type == "cuda":
        _sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    from torch.profiler import ProfilerActivity, profile

    try:
        with warnings.catch_warnings(), _without_profiler_noise():
            warnings.simplefilter("ignore")
            with profile(
                activities=[ProfilerActivity.CPU],
                profile_memory=True,
                record_shapes=True,
                with_stack=True,
            ) as prof:
                step()
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "memory.json"
                prof.export_memory_timeline(str(path), device="cpu")
                _, sizes = json.loads(path.read_text())
        return max(sum(s) for s in sizes) / 2**20 if sizes else None
    except Exception:  # noqa: BLE001 - the profiler's memory timeline is optional and fragile
        return None


def _time(
    steps: dict[str, Callable[[], None]],
    device: torch.device,
    repeats: int,
    min_sample_s: float = 0.05,
) -> dict[str, float]:
    """Median milliseconds per step for each entry, timed in turn within each repeat."""
    inner = {}
    for key, step in steps.items():  # warm-up; also sizes each sample to >= min_sample_s
        for _ in range(2):
            step()
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        inner[key] = max(1, math.ceil(min_sample_s / max(time.perf_counter() - start, 1e-6)))
    samples: dict[str, list[float]] = {key: [] for key in steps}
    for _ in range(repeats):
        for key, step in steps.items():
            _sync(device)
            start = time.perf_counter()
            for _ in range(inner[key]):
                step()
            _sync(device)
            samples[key].append((time.perf_counter() - start) * 1e3 / inner[key])
    return {key: statistics.median(v) for key, v in samples.items()}


def run(
    names: Iterable[str] = tuple(variants.VARIANTS),
    shapes: Iterable[str] = tuple(SHAPES),
    paths: Iterable[str] = ("fast",),
    repeats: int = 5,
    device: str = "cpu",
    memory: bool = True,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Rows `{variant, shape, path, impl, ms, ratio, gflop, work, gflops, ratio_at_peak,
    peak_gflops, peak_mem_mb}`; the baseline row has variant "nn.LSTM". Paths: "fast" (the default cell path) and/or "reference" (`scan_reference`)."""
    names, paths = list(names), list(paths)
    for name in names:
        variants.get_spec(name)  # raises with the valid choices
    for p in paths:
        if p not in PATHS:
            raise ValueError(f"unknown path {p!r}; known: {', '.join(PATHS)}")
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    peak = peak_gflops(dev)
    for shape_name in shapes:
        if shape_name not in SHAPES:
            raise ValueError(f"unknown shape {shape_name!r}; known: {', '.join(SHAPES)}")
        s = SHAPES[shape_name]
        if progress:
            progress(shape_name)
        x = torch.randn(s.steps, s.batch, s.input_size, generator=gen).to(dev)
        lengths = torch.full((s.batch,), s.steps, dtype=torch.int64)
        torch.manual_seed(seed)
        base = torch.nn.LSTM(s.input_size, s.hidden_size, bidirectional=s.bidirectional).to(dev)
        steps = {(BASELINE, "torch"): _step_fn(base, x, None)}
        impls = {(BASELINE, "torch"): "torch.nn.LSTM"}
        flop = {BASELINE: step_flops(base, s.steps, s.batch)}
        modules = {}
        for name in names:
            modules[name] = variants.build(name, s.input_size, s.hidden_size, s.bidirectional).to(
                dev
            )
            flop[name] = step_flops(modules[name], s.steps, s.batch)
            for p in paths:
                steps[(name, p)] = _wrap(_step_fn(modules[name], x, lengths), p)
                impls[(name, p)] = impl_of(steps[(name, p)])
        ms = _time(steps, dev, repeats)
        for (name, p), value in ms.items():
            mem = peak_memory_mb(steps[(name, p)], dev) if memory else None
            rows.append(
                {
                    "variant": name,
                    "shape": shape_name,
                    "path": p,
                    "impl": impls[(name, p)],
                    "ms": round(value, 3),
                    "ratio": round(value / ms[(BASELINE, "torch")], 3),
                    "gflop": round(flop[name] / 1e9, 4),
                    "work": round(flop[name] / flop[BASELINE], 3),
                    "gflops": round(flop[name] / value / 1e6, 1),
                    "ratio_at_peak": round(flop[name] / peak / 1e6 / ms[(BASELINE, "torch")], 3),
                    "peak_gflops": round(peak, 1),
                    "above_peak": flop[name] / value / 1e6 > peak,
                    "peak_mem_mb": None if mem is None else round(mem, 2),
                    **{f"shape_{k}": v for k, v in asdict(s).items() if k != "name"},
                }
            )
    return rows


@contextmanager
def recording_paths() -> Iterator[list[str]]:
    """The implementations the cell scans of the block chose (`variants.fast`'s own answer at
    each call, recorded as it is made)."""
    seen: list[str] = []
    originals = fast.lstm_path, fast.gru_path

    def recorded(choose: Callable[..., str]) -> Callable[..., str]:
        def wrapper(*args, **kwargs) -> str:
            seen.append(choose(*args, **kwargs))
            return seen[-1]

        return wrapper

    fast.lstm_path, fast.gru_path = (recorded(f) for f in originals)
    try:
        yield seen
    finally:
        fast.lstm_path, fast.gru_path = originals


def impl_of(step: Callable[[], None]) -> str:
    """What one call of `step` ran: e.g. "compiled", "torch.lstm"; "+"-joined if its scans
    differed; "unknown" if it made no cell scan through `variants.fast`."""
    with recording_paths() as seen:
        step()
    return "+".join(dict.fromkeys(seen)) or "unknown"


def _wrap(step: Callable[[], None], path: str) -> Callable[[], None]:
    def run_in_path() -> None:
        with fast.use(path):
            step()

    return run_in_path
