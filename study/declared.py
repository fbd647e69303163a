"""What a study file declares beyond the registries' names: variants as flags of a cell kind,
plug-in cells and tasks by import path, plug-in modules (`plugins`), installed entry points.
Each declaration is checked and registered (`study.plugins`) while the config validates, so the
names it gives are known to the rest of the validation; errors are `ConfigError`s naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ConfigError(ValueError):
    """A bad setting; `key` is its dotted name (`training.batch_size`), so that `resolve` can say
    where the value came from (a flag, a file, a preset)."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


class Expected(ValueError):
    """Raised by a validator that does not know its key: the error reads
    `<key> must <what>, got <value>`."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def offered(modules: Any) -> dict[str, dict[str, str]]:
    """Plug-ins offered by name: installed entry points, then the `plugins` modules."""
    from study import plugins as plug

    if modules is not None and not isinstance(modules, (list, tuple)):
        raise ConfigError(f"plugins must be a list of module names, got {modules!r}", "plugins")
    found = plug.entry_points()
    for module in modules or ():
        try:
            more = plug.from_module(str(module))
        except plug.PluginError as e:
            raise ConfigError(str(e), "plugins") from None
        found["cells"].update(more["cells"])
        found["tasks"].update(more["tasks"])
    return found


def offered_variant(
    item: Any, offered: dict, custom: dict[str, dict[str, Any]], identity: dict
) -> Any:
    import variants

    name = str(item).strip()
    builtin = variants.ORIGINS.get(name) == "built-in"
    if name in offered["cells"] and not builtin and name not in custom:
        custom[name] = declared(name, {"kind": offered["cells"][name]}, identity)
    return item


def offered_task(item: Any, offered: dict, task_paths: dict[str, str]) -> Any:
    import tasks

    name = str(item).strip()
    if name in offered["tasks"] and tasks.ORIGINS.get(name) != "built-in":
        task_paths.setdefault(name, offered["tasks"][name])
    return item


def declare_task(item: Mapping[str, Any], task_paths: dict[str, str]) -> str:
    """A plug-in task declared in `tasks`: `{name: adding, task: "mylab.tasks:ADDING"}`."""
    import tasks

    extra = set(item) - {"name", "task"}
    name, path = item.get("name"), item.get("task")
    if extra or not isinstance(name, str) or not isinstance(path, str) or not name.strip():
        raise ConfigError(
            f"a declared task needs a name and an import path, e.g. {{name: adding, task: "
            f'"mylab.tasks:ADDING"}}; got {dict(item)!r}',
            "tasks",
        )
    name = name.strip()
    if tasks.ORIGINS.get(name) == "built-in":
        raise ConfigError(
            f"task name {name!r} is a built-in task's; name your own task differently", "tasks"
        )
    task_paths[name] = path.strip()
    return name


def declare(item: Mapping[str, Any], custom: dict[str, dict[str, Any]], identity: dict) -> str:
    """A variant declared in `variants`: its flags into `custom`; returns its name."""
    flags = dict(item)
    name = flags.pop("name", None)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(
            f"a declared variant needs a name, e.g. {{name: CIFG-NP, coupled_input_forget: "
            f'true, peepholes: false}} or {{name: MGU, cell: "mylab.cells:MGU"}}; '
            f"got {dict(item)!r}",
            "variants",
        )
    name = name.strip()
    if "cell" in flags:
        path = str(flags.pop("cell"))
        if ":" not in path:
            raise ConfigError(
                f"variant {name!r}: cell {path!r}: expected an import path like "
                f"mylab.cells:MGU or path/to/cells.py:MGU",
                "variants",
            )
        flags["kind"] = path
    custom[name] = declared(name, flags, identity)
    return name


def declared(name: str, flags: Mapping[str, Any], identity: dict | None = None) -> dict[str, Any]:
    """A declared variant's flags, checked (`variants.spec_from_dict`) and normalised; a
    plug-in cell (`kind` an import path) is registered first and its identity noted."""
    import variants
    from study import plugins as plug

    if variants.ORIGINS.get(name) == "built-in":
        raise ConfigError(
            f"variant name {name!r} is the registry's; name your own variant differently "
            f"(registry: {', '.join(n for n, o in variants.ORIGINS.items() if o == 'built-in')})",
            "variants",
        )
    if any(c in name for c in "/,") or name.startswith("."):
        raise ConfigError(
            f"variant name {name!r} may not hold '/' or ',' or start with '.'", "variants"
        )
    kind = str(flags.get("kind", ""))
    if ":" in kind:  # a plug-in cell by import path
        rest = {k: v for k, v in flags.items() if k != "kind"}
        try:
            spec, plugin = plug.register_cell(name, kind, rest)
        except plug.PluginError as e:
            raise ConfigError(str(e), "variants") from None
        if identity is not None:
            identity[plugin.path] = plugin.identity()
        return variants.spec_to_dict(spec)
    try:
        return variants.spec_to_dict(variants.spec_from_dict(flags))
    except ValueError as e:
        raise ConfigError(f"variant {name!r}: {e}", "variants") from None
