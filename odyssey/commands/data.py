"""`odyssey tasks`, `odyssey data prepare TASK`, `odyssey data info TASK`."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tasks", help="list the tasks: sizes, metric, data sources")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=list_tasks)

    data = sub.add_parser("data", help="prepare task data or show what is prepared")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    prep = dsub.add_parser("prepare", help="generate or read a task's corpus and extract features")
    prep.add_argument("task")
    prep.add_argument(
        "--source", help="synthetic (generated stand-in corpus) or real (the original corpus)"
    )
    prep.add_argument(
        "--path", type=Path, help="the original corpus (folder or file) for --source real"
    )
    prep.add_argument("--size", type=int, help="number of training sequences (smaller corpus)")
    prep.add_argument("--seed", type=int, default=0)
    prep.add_argument(
        "--data-dir", type=Path, help="default: $ODYSSEY_DATA_DIR or ~/.cache/lstm-odyssey/data"
    )
    prep.add_argument("--force", action="store_true", help="prepare again even if already prepared")
    prep.set_defaults(func=prepare)

    info = dsub.add_parser("info", help="splits with sequence and frame counts of prepared data")
    info.add_argument("task")
    info.add_argument("--source")
    info.add_argument("--size", type=int)
    info.add_argument("--seed", type=int, default=0)
    info.add_argument("--data-dir", type=Path)
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=show_info)


def list_tasks(args: argparse.Namespace) -> int:
    import tasks
    from odyssey.commands.variants import installed_plugins

    broken = installed_plugins()
    rows = [
        {
            "name": t.name,
            "origin": tasks.ORIGINS.get(t.name, "built-in"),
            "title": t.title,
            "input_size": t.input_size,
            "output_size": t.output_size,
            "bidirectional": t.bidirectional,
            "metric": t.metric,
            "metric_direction": t.metric_direction,
            "loss": t.loss_name,
            "sources": list(t.sources),
            "default_source": t.default_source,
            "stand_in_sources": list(t.stand_in),
            "description": t.description,
        }
        for t in tasks.TASKS.values()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Tasks")
    for col in ("task", "in", "out", "direction", "metric", "loss", "sources (default first)"):
        table.add_column(col)
    table.add_column("origin")
    for r in rows:
        sources = [r["default_source"]] + [s for s in r["sources"] if s != r["default_source"]]
        marked = [s + (" (stand-in)" if s in r["stand_in_sources"] else "") for s in sources]
        table.add_row(
            r["name"],
            str(r["input_size"]),
            str(r["output_size"]),
            "bi" if r["bidirectional"] else "uni",
            r["metric"],
            r["loss"],
            ", ".join(marked),
            r["origin"],
        )
    Console().print(table)
    for line in broken:
        print(f"plug-in not loaded: {line}")
    return 0


def prepare(args: argparse.Namespace) -> int:
    import tasks

    start = time.perf_counter()
    out, meta = tasks.prepare(
        args.task,
        source=args.source,
        path=args.path,
        size=args.size,
        seed=args.seed,
        data_dir=args.data_dir,
        force=args.force,
    )
    took = time.perf_counter() - start
    _print_info({**meta, "dir": str(out)})
    print(f"prepared in {took:.1f} s -> {out}")
    return 0


def show_info(args: argparse.Namespace) -> int:
    import tasks

    info = tasks.info(
        args.task, source=args.source, size=args.size, seed=args.seed, data_dir=args.data_dir
    )
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        _print_info(info)
    return 0


def _print_info(info: dict) -> None:
    stand_in = " (generated stand-in, not the real corpus)" if info.get("stand_in") else ""
    print(
        f"{info['task']}: source {info['source']}{stand_in}; inputs {info['input_size']}, "
        f"outputs {info['output_size']}; {info['dir']}"
    )
    for split, s in info["splits"].items():
        mean = s["frames"] / max(s["sequences"], 1)
        print(
            f"  {split:5s} {s['sequences']:6d} sequences {s['frames']:9d} frames (mean {mean:.1f})"
        )
