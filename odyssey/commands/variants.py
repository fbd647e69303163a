"""`odyssey variants [--json]`: the registry as a table (name, change, parameters at M=39, N=100),
with installed plug-ins (entry points) beside the built-ins, their origin, and the flags a study
file may set for a variant of each kind."""

from __future__ import annotations

import argparse
import json

PAPER_M, PAPER_N = 39, 100  # TIMIT inputs, a mid-range block count


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("variants", help="list the variants (built-in and installed plug-ins)")
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    p.set_defaults(func=run)


def installed_plugins() -> list[str]:
    """Register the installed entry-point plug-ins; one line per plug-in that failed to load."""
    from study.plugins import register_installed

    return register_installed()[1]


def rows() -> list[dict]:
    import variants

    out = []
    for name, spec in variants.VARIANTS.items():
        module = variants.build(name, PAPER_M, PAPER_N)
        kind = variants.cell_kind(spec)
        out.append(
            {
                "name": name,
                "kind": spec.kind,
                "change": spec.change or (kind.cell.__doc__ or "").strip().split("\n")[0],
                "params": sum(p.numel() for p in module.parameters()),
                "origin": variants.ORIGINS.get(name, "built-in"),
                "packable": kind.packable,
                # what `{name: NEW, kind: ..., flag: value}` in a study file may set
                "flags": kind.flags(),
                "set": variants.spec_to_dict(spec),
            }
        )
    return out


def run(args: argparse.Namespace) -> int:
    broken = installed_plugins()
    table = rows()
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Variants (parameters of one direction at M={PAPER_M}, N={PAPER_N})")
    for col, kw in (
        ("variant", {}),
        ("change", {}),
        ("parameters", {"justify": "right"}),
        ("origin", {}),
    ):
        t.add_column(col, **kw)
    for r in table:
        t.add_row(r["name"], r["change"], f"{r['params']:,}", r["origin"])
    Console().print(t)
    kinds: dict[str, list[str]] = {}
    for r in table:
        kinds.setdefault(r["kind"], list(r["flags"]))
    print(
        "Declare your own variant in a study file, e.g. {name: CIFG-NP, coupled_input_forget: true,"
    )
    print("peepholes: false}; the flags each kind takes (kind: lstm unless given):")
    for kind, flags in kinds.items():
        print(f"  {kind}: {', '.join(flags) or '(none)'}")
    for line in broken:
        print(f"plug-in not loaded: {line}")
    return 0
