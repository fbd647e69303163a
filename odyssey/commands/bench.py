"""`odyssey bench cells|study`: cell speed against torch.nn.LSTM, and trials per hour
(`--protocol paper`: paper-protocol training speed by pack size, `benchmarks.packs`).

Both run in this process with one torch thread by default (how trials run) and apply glibc's
malloc settings with mallopt unless the MALLOC_*_ variables were set before start
(`benchmarks.runtime`). Code in `benchmarks/`; columns documented in `benchmarks/README.md`.
"""

from __future__ import annotations

import argparse
import json
import sys

DEFAULT_SHAPES = ("timit32", "timit128", "timit256", "jsb32", "jsb128")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="speed benchmarks: cells vs torch.nn.LSTM, trials per hour")
    bsub = p.add_subparsers(dest="bench_command", metavar="WHAT", required=True)

    c = bsub.add_parser("cells", help="forward+backward ms per step of every variant vs nn.LSTM")
    c.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    c.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is shown")
    c.add_argument(
        "--variants",
        type=_csv,
        default=None,
        metavar="V,NP,...",
        help="comma-separated variants (default: all)",
    )
    c.add_argument(
        "--shapes",
        type=_csv,
        default=list(DEFAULT_SHAPES),
        metavar="S,...",
        help=f"comma-separated shapes (default: {','.join(DEFAULT_SHAPES)})",
    )
    c.add_argument(
        "--paths",
        type=_csv,
        default=["fast"],
        metavar="fast,reference",
        help="cell paths to time: fast (default) and/or reference",
    )
    c.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as trials)")
    c.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    c.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    c.set_defaults(func=run_cells)

    s = bsub.add_parser(
        "study",
        help="trials per hour of a small fixed grid and time shares, or (--protocol paper) "
        "paper-protocol speed by pack size",
    )
    s.add_argument("--json", action="store_true", help="print JSON instead of tables")
    s.add_argument(
        "--protocol",
        choices=("grid", "paper"),
        default="grid",
        help="grid (default): a small fixed grid with time shares; paper: batch-1 paper-protocol "
        "trials by pack size, with the standard mix and the projected grid cost",
    )
    s.add_argument(
        "--tasks",
        type=_csv,
        default=["jsb_chorales"],
        metavar="T,...",
        help="--protocol paper: tasks (default jsb_chorales)",
    )
    s.add_argument(
        "--packs",
        type=lambda t: [int(v) for v in _csv(t)],
        default=[1, 4, 8, 16],
        metavar="P,...",
        help="--protocol paper: pack sizes (default 1,4,8,16; 1 is always measured)",
    )
    s.add_argument(
        "--trials",
        type=int,
        default=None,
        help="--protocol paper: trials per task (default: the largest pack)",
    )
    s.add_argument(
        "--single-trials",
        type=int,
        default=None,
        help="--protocol paper: trials of pack 1, spread over the hidden sizes (default: all; "
        "on a GPU a few, since one trial at a time is launch-bound)",
    )
    s.add_argument("--no-mix", action="store_true", help="--protocol paper: skip the standard mix")
    s.add_argument(
        "--projection",
        action="store_true",
        help="--protocol paper: only the GPU roofline projection of the fused loop (no training)",
    )
    s.add_argument("--device", default="cpu", help="--protocol paper: cpu (default) or cuda")
    s.add_argument("--task", default="jsb_chorales", help="task (default jsb_chorales)")
    s.add_argument(
        "--variants",
        type=_csv,
        default=None,
        metavar="V,NP,...",
        help="comma-separated variants (default: all)",
    )
    s.add_argument(
        "--hidden",
        type=lambda t: [int(v) for v in _csv(t)],
        default=[32, 128],
        metavar="N,...",
        help="hidden sizes per direction (default 32,128)",
    )
    s.add_argument("--size", type=int, default=None, help="training sequences (default: all)")
    s.add_argument(
        "--epochs", type=int, default=None, help="epochs per trial (default 3; paper protocol 1)"
    )
    s.add_argument("--batch-size", type=int, default=4, help="minibatch size (default 4)")
    s.add_argument(
        "--path",
        default="fast",
        choices=("fast", "reference"),
        help="cell path (default fast)",
    )
    s.set_defaults(func=run_study)


def _setup(threads: int) -> dict:
    import torch

    from benchmarks import runtime

    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    return runtime.describe(threads)


def run_cells(args: argparse.Namespace) -> int:
    import variants
    from benchmarks import cells
    from benchmarks.flops import RATE_SHAPES
    from variants.fast import build

    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    env = _setup(args.threads)
    names = args.variants or list(variants.VARIANTS)
    if args.json:
        rows = cells.run(
            names, args.shapes, args.paths, args.repeats, args.device, memory=not args.no_memory
        )
        print(json.dumps({"env": {**env, "extension": build.status()}, "rows": rows}, indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 140)  # no wrapping in files
    with console.status("timing") as status:
        rows = cells.run(
            names,
            args.shapes,
            args.paths,
            args.repeats,
            args.device,
            memory=not args.no_memory,
            progress=lambda shape: status.update(f"timing {shape}"),
        )
    ext = build.status()
    t = Table(
        title=f"forward+backward ms per step (median of {args.repeats}), ratio to "
        f"nn.LSTM; threads={env['threads']}, malloc: {env['malloc']}, compiled kernels: "
        f"{'loaded' if ext['loaded'] else 'not loaded (' + str(ext['error']) + ')'}",
        caption="per cell: time and its ratio to nn.LSTM; work: matrix-product operations over "
        "nn.LSTM's (the ratio a kernel as efficient as nn.LSTM's would reach); operations per "
        "second achieved; at ref.: the ratio if all matrix products ran at the reference rate "
        f"({rows[0]['peak_gflops'] if rows else 0:.0f} GFLOP/s, the best of "
        f"{len(RATE_SHAPES['cuda' if args.device.startswith('cuda') else 'cpu'])} matrix-product "
        "shapes timed at the start) and nothing else took time. The reference rate is not a bound: "
        "a fused kernel can beat it (marked *); peak tensor memory of a step",
        show_lines=True,
    )
    t.add_column("variant")
    t.add_column("path")
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    for shape in shapes:
        t.add_column(shape, justify="right")
    keys = list(dict.fromkeys((r["variant"], r["path"]) for r in rows))
    by = {(r["variant"], r["path"], r["shape"]): r for r in rows}
    for variant, path in keys:
        cells_ = []
        for shape in shapes:
            r = by.get((variant, path, shape))
            if r is None:
                cells_.append("")
                continue
            mem = f"\n{r['peak_mem_mb']:.0f} MB" if r["peak_mem_mb"] is not None else ""
            cells_.append(
                f"{r['ms']:.1f} ms [bold]{r['ratio']:.2f}x[/]\nwork {r['work']:.2f}x"
                f"\n{r['gflops']:.0f} GFLOP/s{'*' if r['above_peak'] else ''}"
                f"\nat ref. {r['ratio_at_peak']:.2f}x{mem}"
            )
        impls = dict.fromkeys(
            by[(variant, path, s)]["impl"] for s in shapes if (variant, path, s) in by
        )
        t.add_row(variant, path if variant == cells.BASELINE else describe(path, impls), *cells_)
    console.print(t)
    return 0


IMPLS = {
    "compiled": "our C++ kernel",
    "python": "our PyTorch kernel",
    "reference": "per-step autograd loop",
    "torch.lstm": "PyTorch's fused LSTM",
    "torch.gru": "PyTorch's fused GRU",
    "triton": "our fused Triton step kernels",
}


def describe(path: str, impls: dict[str, None]) -> str:
    """A row's label: the cell path asked for and what its steps ran (recorded, per shape)."""
    ran = " / ".join(IMPLS.get(i, i) for i in impls)
    return f"{path}: {ran}"


def run_study(args: argparse.Namespace) -> int:
    import variants
    from benchmarks import study

    if args.protocol == "paper":
        return run_paper(args)
    args.epochs = args.epochs or 3
    env = _setup(1)
    names = args.variants or list(variants.VARIANTS)
    if args.json:
        out = study.run(
            args.task, names, args.hidden, args.size, args.epochs, args.batch_size, path=args.path
        )
        print(json.dumps({"env": env, **out}, indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 140)  # no wrapping in files
    with console.status("training") as status:
        out = study.run(
            args.task,
            names,
            args.hidden,
            args.size,
            args.epochs,
            args.batch_size,
            path=args.path,
            progress=lambda what: status.update(f"training {what}"),
        )
    t = Table(
        title=f"{args.task}: {args.epochs} epochs per trial, batch {args.batch_size}, "
        f"path {args.path}"
    )
    for col in ("variant", "N", "status", "wall s", "data", "loop", "eval", "other"):
        t.add_column(col, justify="left" if col in ("variant", "status") else "right")
    for r in out["trials"]:
        w = r["wall_s"] or 1.0
        t.add_row(
            r["variant"],
            str(r["hidden"]),
            r["status"],
            f"{r['wall_s']:.2f}",
            *(f"{100 * r[k] / w:.0f}%" for k in ("data_s", "loop_s", "eval_s", "other_s")),
        )
    console.print(t)
    s = out["summary"]
    console.print(
        f"{s['trials']} trials in {s['wall_s']:.1f} s: {s['trials_per_hour_one_worker']:.0f} "
        f"trials/hour per worker; time shares: data {100 * s['share_data']:.0f}%, time loop "
        f"(fwd+bwd) {100 * s['share_loop']:.0f}%, evaluation {100 * s['share_eval']:.0f}%, "
        f"other {100 * s['share_other']:.0f}%  (threads=1, malloc: {env['malloc']})"
    )
    return 0


def _print_projection(rows: list[dict], as_json: bool, console=None) -> int:
    """The GPU roofline projection of the fused loop (`benchmarks.roofline`), labelled as such."""
    if as_json:
        print(json.dumps({"gpu_projection": rows}, indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=None if sys.stdout.isatty() else 140)
    t = Table(
        title=f"GPU projection, NOT measured: fused Triton loop, JSB-like V, batch 1, float32, "
        f"{rows[0]['device_model'] if rows else ''}",
        caption="roofline of the recurrent loop only (per launch: the longer of the launch cost "
        "and bytes / HBM bandwidth); trials: the paper sample cut as on CUDA (width buckets); "
        "pad waste: padded units' share of the recurrent arithmetic",
    )
    for col in ("pack", "trials", "packs", "pad waste", "MB/step (largest)", "launches/step"):
        t.add_column(col, justify="right")
    t.add_column("projected us/trial-frame", justify="right")
    for r in rows:
        t.add_row(
            str(r["pack"]),
            str(r["trials"]),
            str(r["packs"]),
            f"{r['pad_waste']:.0%}",
            f"{r['largest_pack_bytes_per_step'] / 1e6:.2f}",
            str(r["launches_per_step"]),
            f"{r['projected_us_per_trial_frame']:.3f}",
        )
    console.print(t)
    return 0


def run_paper(args: argparse.Namespace) -> int:
    import tasks
    from benchmarks import packs

    for name in args.tasks:
        tasks.get(name)  # raises with the valid choices
    if any(p < 1 for p in args.packs):
        raise ValueError(f"--packs must be integers >= 1, got {args.packs}")
    if args.projection:
        return _print_projection(packs.projection(args.packs, args.trials), args.json)
    env = _setup(1)
    kwargs = {
        "packs": args.packs,
        "trials": args.trials,
        "epochs": args.epochs or 1,
        "size": args.size,
        "device": args.device,
        "mix": not args.no_mix,
        "single_trials": args.single_trials,
    }
    if args.json:
        print(json.dumps({"env": env, **packs.run(args.tasks, **kwargs)}, indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 140)
    with console.status("training") as status:
        out = packs.run(args.tasks, **kwargs, progress=lambda w: status.update(f"training {w}"))
    t = Table(
        title=f"paper protocol (batch 1), {kwargs['epochs']} epoch(s) per trial, one thread, "
        f"{args.device}; malloc: {env['malloc']}",
        caption="us/trial-frame: wall time per trial and training frame (evaluations included); "
        "speedup: against pack 1 (one trial at a time) in this run; grid: the paper's 2000 "
        "trials per task at this speed, over the task's full corpus",
    )
    gpu = args.device.startswith("cuda")
    hours = "GPU-h" if gpu else "core-h"
    columns = ("task", "pack", "trials", "pad waste", "us/trial-frame")
    columns += ("projected us (loop)",) if gpu else ()
    for col in (*columns, "speedup", f"trial-epochs/{hours}", f"grid {hours}"):
        t.add_column(col, justify="left" if col == "task" else "right")
    for r in out["rows"]:
        if r.get("mix"):
            continue
        cells = [r["task"], str(r["pack"]), str(r["trials"]), f"{r['pad_waste']:.0%}"]
        cells.append(f"{r['us_per_trial_frame']:.1f}")
        if gpu:  # the roofline of the recurrent loop beside the measured whole trial
            cells.append(f"{r['projected_gpu_us_per_trial_frame']:.2f}")
        t.add_row(
            *cells,
            f"{r['speedup']:.2f}x",
            f"{r['trial_epochs_per_core_hour']:.0f}",
            f"{r['projected_grid_core_hours']:.0f} ({r['mean_epochs']:.0f} ep., "
            f"{r['mean_epochs_from']})",
        )
    console.print(t)
    if not gpu:
        _print_projection(packs.projection(args.packs, args.trials), False, console)
    mix = [r for r in out["rows"] if r.get("mix")]
    if mix:
        m = Table(title="standard mix: JSB Chorales, V, N = 20, 64, 100, 200 (mean us/trial-frame)")
        for col in ("pack", "us/trial-frame", "speedup", "floor", "x floor", "per N"):
            m.add_column(col, justify="right")
        for r in mix:
            m.add_row(
                str(r["pack"]),
                f"{r['us_per_trial_frame']:.1f}",
                f"{r['speedup']:.2f}x",
                f"{r['floor_us_per_trial_frame']:.1f}",
                f"{r['us_per_trial_frame'] / r['floor_us_per_trial_frame']:.1f}x",
                " ".join(f"{n}:{v:.0f}" for n, v in r["per_hidden"].items()),
            )
        console.print(m)
    return 0
