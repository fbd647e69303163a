"""`odyssey check cell PATH [--flag NAME=true|false]` and `odyssey check task PATH`: the contract's
conformance checks on a plug-in before any compute is spent on it (`variants.contract`,
`tasks.contract`). PATH is an import path (`mylab.cells:MGU`) or a file (`mylab/cells.py:MGU`).
Exit status 1 when a check fails, each failure one line naming the plug-in, the check and the
number that failed."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="check a plug-in cell or task against the contract")
    csub = p.add_subparsers(dest="check_what", metavar="cell|task", required=True)
    cell = csub.add_parser("cell", help="a cell class: shapes, packs, gradients, padding, ...")
    cell.add_argument("path", help="import path (mylab.cells:MGU) or file (mylab/cells.py:MGU)")
    cell.add_argument(
        "--flag",
        action="append",
        default=[],
        metavar="NAME=BOOL",
        help="a flag of the cell to check with (repeatable)",
    )
    cell.add_argument("--quick", action="store_true", help="only the checks `odyssey run` runs")
    cell.set_defaults(func=check_cell)
    task = csub.add_parser("task", help="a Task: splits, collate, loss a sum, errors (sum, count)")
    task.add_argument("path", help="import path (mylab.tasks:ADDING) or file")
    task.set_defaults(func=check_task)


def _flags(items: list[str]) -> dict[str, bool]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or value.lower() not in ("true", "false"):
            raise ValueError(f"--flag takes NAME=true or NAME=false, got {item!r}")
        out[name.strip()] = value.lower() == "true"
    return out


def _report(what: str, results: list[tuple[str, bool, str]]) -> int:
    failed = [r for r in results if not r[1]]
    for name, ok, detail in results:
        mark = "ok  " if ok else "FAIL"
        print(f"{mark} {name}" + (f": {detail}" if detail else ""))
    if failed:
        for name, _, detail in failed:
            print(f"{what}: check {name!r} failed: {detail}")
        return 1
    print(f"{what}: all {len(results)} checks passed")
    return 0


def check_cell(args: argparse.Namespace) -> int:
    import variants
    from study import plugins
    from variants.contract import check_cell as run_checks

    kind_path = plugins.load(args.path)[2]
    name = f"check:{kind_path}"
    spec, _ = plugins.register_cell(name, args.path, _flags(args.flag))
    try:
        found = run_checks(spec, quick=args.quick)
    finally:
        variants.VARIANTS.pop(name, None)
        variants.ORIGINS.pop(name, None)
    return _report(f"cell {kind_path}", [(f.check, f.ok, f.detail) for f in found])


def check_task(args: argparse.Namespace) -> int:
    from study import plugins
    from tasks.contract import check_task as run_checks

    task, _, path = plugins.load(args.path)
    import tasks

    if not isinstance(task, tasks.Task):
        raise ValueError(f"plug-in {path}: expected a tasks.Task, got {type(task).__name__}")
    return _report(f"task {path}", run_checks(task))
