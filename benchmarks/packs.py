"""Paper-protocol training speed by pack size: what packing trials (`study.pack`) buys.

Trains a few epochs of paper-protocol trials (batch size 1, online Nesterov SGD, the paper's
search space; no early stopping inside the measured epochs) in this process with one torch
thread, for each pack size, on the same trials, and reports per (task, pack size):
- `us_per_trial_frame`: wall time over trials x epochs x training frames, in microseconds; it
  includes everything a trial costs per epoch (both evaluations, data, optimizer);
- `trial_epochs_per_core_hour`, and `speedup` against pack size 1 (the single-trial loop,
  `study.train`) of the same task in the same run;
- `projected_grid_core_hours`: the paper's grid (2000 trials per task) at this speed, with the
  mean epochs of a measured paper-protocol sample (the shipped reference study's table for JSB
  Chorales, when present) or a stated assumption (100), over the task's full default corpus
  (a run on `size` training sequences scales its frames by `FULL_TRAIN_SEQUENCES` / size); on a
  GPU, GPU-hours.
Pack 1 (the single-trial loop) runs on `single_trials` of the sample (default: all), spread
evenly over its hidden sizes: on a GPU a batch-1 trial is launch-bound, and the same trials one
by one would outlast a pack of hundreds by far.
The trials of a task row are a seeded sample of the paper's space (hidden sizes log-uniform in
[20, 200]), sorted by hidden size and cut into packs of `pack` trials with one slot each (the
study engine also takes rounds by trial number and refills freed slots: `study.plan`); on CUDA
first into width buckets (`study.plan.width_buckets`), as the study engine cuts them there.
`pad_waste` is the share of the packs' recurrent arithmetic spent on padded units.

GPU projection (`benchmarks.roofline`, an H100 roofline of the fused Triton loop, not a
measurement): per task row, the recurrent loop's microseconds per trial-frame for the sample cut
as on CUDA, beside the measured time when the run is on CUDA; `projection` gives the same rows
without training (what `odyssey bench study --protocol paper --projection` prints).

The *standard mix* (JSB Chorales, V, hidden sizes 20, 64, 100 and 200) is reported per pack size
as the mean microseconds per trial-frame over the four sizes, beside its arithmetic floor: the
matrix-product operations of a trial-frame (training forward and backward, and the two
evaluation forward passes per training frame; `benchmarks.flops`) over this core's reference
matrix-product rate (`benchmarks.flops.peak_gflops`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

GRID_TRIALS = 2000  # the paper: 200 trials x 10 networks per task
ASSUMED_EPOCHS = 100.0
MIX_HIDDEN = (20, 64, 100, 200)
# training sequences of each task's full default corpus (README, "Measured here")
FULL_TRAIN_SEQUENCES = {"jsb_chorales": 229, "timit": 3696, "iam_online": 5355}
REFERENCE = Path(__file__).resolve().parent.parent / "results" / "reference-jsb"


def paper_sample(n: int, seed: int) -> list[dict[str, Any]]:
    """`n` hyperparameter sets from the paper's search space (Greff et al. 2017)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        out.append(
            {
                "hidden_size": int(round(math.exp(rng.uniform(math.log(20), math.log(200))))),
                "learning_rate": float(math.exp(rng.uniform(math.log(1e-6), math.log(1e-2)))),
                "momentum": 1.0 - float(math.exp(rng.uniform(math.log(0.01), 0.0))),
                "input_noise": float(rng.uniform(0.0, 1.0)),
            }
        )
    return out


def mean_epochs(task: str) -> tuple[float, str]:
    """Mean epochs per trial for the projection, and where the number comes from."""
    from study import results

    if task == "jsb_chorales" and (REFERENCE / results.TRIALS_FILE).is_file():
        df = results.read_trials(REFERENCE)
        done = df[df["status"] == "complete"]
        if len(done) >= 10:
            return float(done["epochs"].mean()), f"mean of {len(done)} reference-jsb trials"
    return ASSUMED_EPOCHS, "assumed"


def spread(sample: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """`n` of `sample`'s trials at evenly spaced ranks of hidden size (all when n >= its size)."""
    if n >= len(sample):
        return sample
    ranked = sorted(sample, key=lambda h: h["hidden_size"])
    return [ranked[round(i * (len(ranked) - 1) / max(1, n - 1))] for i in range(n)]


def cut(widths: list[int], pack: int, device: str) -> list[list[int]]:
    """Indices of `widths` in packs of at most `pack`, narrowest first: sorted by width and cut
    (CPU), or width buckets of `study.plan` cut to `pack` (CUDA)."""
    from study import plan

    if device.startswith("cuda"):
        buckets = plan.width_buckets(widths, plan.MAX_PAD_WASTE, most=pack)
        return [sorted(b, key=lambda k: (widths[k], k)) for b in buckets[::-1]]
    order = sorted(range(len(widths)), key=lambda k: (widths[k], k))
    return [order[i : i + pack] for i in range(0, len(order), pack)]


def cut_waste(packs: list[list[int]]) -> float:
    """Padded units' share of the recurrent arithmetic of `packs` (lists of widths), together."""
    used = sum(n * n for p in packs for n in p)
    paid = sum(len(p) * max(p) ** 2 for p in packs if p)
    return 1.0 - used / paid if paid else 0.0


def _train(task, variant, hparams, splits, epochs: int, pack: int, device: str) -> float:
    """Wall seconds to train `hparams` for `epochs` epochs in packs of `pack` (1: one by one)."""
    from study.config import TrainConfig
    from study.pack import PackTrial, train_pack
    from study.train import train

    settings = TrainConfig(batch_size=1, max_epochs=epochs, patience=epochs + 1, threads=1)
    start = time.perf_counter()
    for group in cut([h["hidden_size"] for h in hparams], pack, device):
        if pack == 1:
            train(task, variant, hparams[group[0]], splits, settings, group[0], device)
            continue
        trials = [PackTrial(k, hparams[k], k) for k in group]
        for _ in train_pack(task, variant, trials, splits, settings, len(group), None, device):
            pass
    return time.perf_counter() - start


def projection(
    packs: Iterable[int] = (1, 4, 8, 16), trials: int | None = None, seed: int = 0
) -> list[dict[str, Any]]:
    """The GPU projection of the fused loop (`benchmarks.roofline`, H100) for the paper sample
    cut as on CUDA, per pack size; V, batch 1, float32. No training, no device needed."""
    from benchmarks import roofline
    from variants import VARIANTS
    from variants.fast.triton_launch import LAUNCHES_PER_STEP

    packs = sorted(set(int(p) for p in packs) | {1})
    widths = [h["hidden_size"] for h in paper_sample(trials or max(packs), seed)]
    rows = []
    for pack in packs:
        groups = [[widths[k] for k in g] for g in cut(widths, pack, "cuda")]
        widest = max(groups, key=lambda g: len(g) * max(g) ** 2)
        moved = roofline.step_bytes(VARIANTS["V"], max(widest))
        rows.append(
            {
                "pack": pack,
                "trials": len(widths),
                "packs": len(groups),
                "pad_waste": round(cut_waste(groups), 3),
                "largest_pack_bytes_per_step": len(widest) * sum(moved.values()),
                "launches_per_step": sum(LAUNCHES_PER_STEP.values()),
                "projected_us_per_trial_frame": round(
                    roofline.trial_frame_us(VARIANTS["V"], groups), 3
                ),
                "device_model": roofline.H100.name,
            }
        )
    return rows


def _frames(split) -> int:
    return int(sum(len(x) for x in split.inputs))


def floor_us(task, splits, hidden: int, peak: float) -> float:
    """Arithmetic floor of one trial-frame (see the module docstring), in microseconds."""
    from benchmarks.flops import _KINDS, step_flops
    from study.model import build_model

    model = build_model(task, "V", hidden, torch.Generator().manual_seed(0))
    train_f = _frames(splits["train"])
    steps = max(1, round(train_f / len(splits["train"])))  # a mean-length sequence
    train_flop = step_flops(model.rnn, steps, 1) / steps  # forward + backward, per frame
    out = model.out.weight[0].numel()
    train_flop += 3 * 2 * out  # output layer: forward, weight and input gradients
    fwd = sum(
        2 * p[0].numel()
        for n, p in model.rnn.named_parameters()
        if _KINDS.get(n.split(".")[-1]) in ("input", "recurrent")  # forward: one product each
    )
    eval_ratio = (_frames(splits["valid"]) + _frames(splits["test"])) / train_f
    total = train_flop + eval_ratio * (fwd + 2 * out)
    return total / (peak * 1e9) * 1e6


def run(
    task_names: Iterable[str] = ("jsb_chorales",),
    packs: Iterable[int] = (1, 4, 8, 16),
    trials: int | None = None,
    epochs: int = 1,
    seed: int = 0,
    size: int | None = None,
    device: str = "cpu",
    mix: bool = True,
    single_trials: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """`{"rows": [...], "mix": [...]}` (see the module docstring)."""
    import tasks
    from benchmarks import roofline
    from benchmarks.flops import peak_gflops
    from tasks.base import load_prepared
    from variants import VARIANTS

    packs = sorted(set(int(p) for p in packs) | {1})
    if packs[0] < 1 or epochs < 1:
        raise ValueError(f"pack sizes and epochs must be >= 1, got {packs} and {epochs}")
    torch.set_num_threads(1)
    n_trials = trials or max(packs)
    rows, mix_rows = [], []
    for name in task_names:
        task = tasks.get(name)
        directions = 2 if task.bidirectional else 1
        folder, _ = tasks.prepare(name, size=size, seed=seed, progress=False)
        splits, _ = load_prepared(folder)
        frames = _frames(splits["train"])
        n_train = len(splits["train"].inputs)
        full = FULL_TRAIN_SEQUENCES.get(name, n_train) if size else n_train
        sample = paper_sample(n_trials, seed)
        epochs_mean, epochs_from = mean_epochs(name)
        base = None
        for pack in packs:
            hps = sample if pack > 1 else spread(sample, single_trials or n_trials)
            if progress:
                progress(f"{name}: {len(hps)} trials in packs of {pack}")
            wall = _train(task, "V", hps, splits, epochs, pack, device)
            us = wall / (len(hps) * epochs * frames) * 1e6
            base = base or us
            widths = [h["hidden_size"] for h in hps]
            ran = [[widths[k] for k in g] for g in cut(widths, pack, device)]
            gpu = [[widths[k] for k in g] for g in cut(widths, pack, "cuda")]
            rows.append(
                {
                    "task": name,
                    "pack": pack,
                    "trials": len(hps),
                    "pad_waste": round(cut_waste(ran), 3),
                    "projected_gpu_us_per_trial_frame": round(
                        roofline.trial_frame_us(VARIANTS["V"], gpu, directions), 3
                    ),
                    "epochs": epochs,
                    "train_frames": frames,
                    "wall_s": round(wall, 2),
                    "us_per_trial_frame": round(us, 2),
                    "trial_epochs_per_core_hour": round(len(hps) * epochs / wall * 3600, 1),
                    "speedup": round(base / us, 2),
                    "projected_grid_core_hours": round(
                        GRID_TRIALS * epochs_mean * frames * full / n_train * us / 3.6e9, 1
                    ),
                    "projected_over": f"{full} training sequences"
                    + (f" (measured on {n_train})" if full != n_train else ""),
                    "mean_epochs": round(epochs_mean, 1),
                    "mean_epochs_from": epochs_from,
                }
            )
    if mix:
        name = "jsb_chorales"
        task = tasks.get(name)
        folder, _ = tasks.prepare(name, seed=seed, progress=False)
        splits, _ = load_prepared(folder)
        frames = _frames(splits["train"])
        peak = peak_gflops(device)
        floors = {n: floor_us(task, splits, n, peak) for n in MIX_HIDDEN}
        for pack in packs:
            per_n = {}
            for n in MIX_HIDDEN:
                if progress:
                    progress(f"standard mix: N={n}, pack {pack}")
                hps = [
                    {
                        "hidden_size": n,
                        "learning_rate": 1e-3 * (1 + k % 4),
                        "momentum": 0.9,
                        "input_noise": 0.1 * (k % 3),
                    }
                    for k in range(pack)
                ]
                wall = _train(task, "V", hps, splits, epochs, pack, device)
                per_n[n] = wall / (pack * epochs * frames) * 1e6
            mix_rows.append(
                {
                    "task": name,
                    "mix": "standard",
                    "pack": pack,
                    "us_per_trial_frame": round(float(np.mean(list(per_n.values()))), 2),
                    "floor_us_per_trial_frame": round(float(np.mean(list(floors.values()))), 2),
                    "per_hidden": {str(n): round(v, 2) for n, v in per_n.items()},
                    "floor_per_hidden": {str(n): round(v, 2) for n, v in floors.items()},
                    "peak_gflops": round(peak, 1),
                }
            )
        base = mix_rows[0]["us_per_trial_frame"]
        for r in mix_rows:
            r["speedup"] = round(base / r["us_per_trial_frame"], 2)
    return {"rows": rows + mix_rows}
