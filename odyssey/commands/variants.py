"""`odyssey variants [--json]`: the registry as a table (name, change, parameters at M=39, N=100)."""

from __future__ import annotations

import argparse
import json

PAPER_M, PAPER_N = 39, 100  # TIMIT inputs, a mid-range block count


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("variants", help="list the LSTM variants and what each changes")
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    p.set_defaults(func=run)


def rows() -> list[dict]:
    import variants

    out = []
    for name, spec in variants.VARIANTS.items():
        module = variants.build(name, PAPER_M, PAPER_N)
        out.append(
            {
                "name": name,
                "kind": spec.kind,
                "change": spec.change,
                "params": sum(p.numel() for p in module.parameters()),
            }
        )
    return out


def run(args: argparse.Namespace) -> int:
    table = rows()
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Variants (parameters of one direction at M={PAPER_M}, N={PAPER_N})")
    for col, kw in (("variant", {}), ("change", {}), ("parameters", {"justify": "right"})):
        t.add_column(col, **kw)
    for r in table:
        t.add_row(r["name"], r["change"], f"{r['params']:,}")
    Console().print(t)
    return 0
