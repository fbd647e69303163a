"""Plug-ins: a user's cell or task in the registries the built-ins use, and its identity.

A plug-in is named by an import path, `package.module:Attribute` (a cell class, a `tasks.Task`, or
a dict entry of either: `mylab:TASKS.adding`), or by a file, `path/to/cells.py:MGU`. It is found
on the installed packages, the current folder and the folders given (a study file's own folder),
or through the entry points `lstm_odyssey.variants` (name = variant, value = cell class) and
`lstm_odyssey.tasks` (name = task, value = Task) of an installed distribution.

Each plug-in has an identity, its import path, the distribution and version that installed it
(if any) and a SHA-256 of its package's source files, which enters the study's fingerprint: a
changed plug-in cannot silently mix its results with the old one's. Workers (on this machine or a
Ray cluster) get the plug-in's folder (`Plugin.root`) and register it again by its import path
(`activate`), so nothing depends on what the driver registered in its own memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.metadata
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ENTRY_GROUPS = {"cell": "lstm_odyssey.variants", "task": "lstm_odyssey.tasks"}


class PluginError(ValueError):
    """A plug-in that cannot be loaded or registered; the message names it."""


@dataclass(frozen=True)
class Plugin:
    kind: str  # "cell" or "task"
    name: str  # the variant's or task's name in studies
    path: str  # import path, e.g. "mylab.cells:MGU"
    distribution: str | None  # the installed distribution providing it, if any
    version: str | None
    sha256: str  # of its package's (or module's) .py files
    root: str  # the folder of its top-level package, or its module file (shipped to workers)
    origin: str = "import path"  # or "entry point"

    def identity(self) -> dict[str, Any]:
        """What a study records of it (config.yaml, data.json, the fingerprint)."""
        return {
            "kind": self.kind,
            "path": self.path,
            "distribution": self.distribution,
            "version": self.version,
            "sha256": self.sha256,
        }


def add_search_path(folders: Iterable[str | Path]) -> None:
    """Make modules in `folders` importable (a study file's folder, a saved study's plug-in
    folders), first come first."""
    for folder in folders:
        folder = str(Path(folder).resolve())
        if folder not in sys.path:
            sys.path.insert(0, folder)


def _module_from_file(file: Path) -> str:
    """The dotted name of `file` with its package root put on sys.path (walks up while a folder
    holds an __init__.py)."""
    file = file.resolve()
    parts, folder = [file.stem], file.parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    add_search_path([folder])
    return ".".join(parts)


def _resolve(obj: Any, attrs: str, path: str) -> Any:
    for attr in attrs.split("."):
        if isinstance(obj, Mapping):
            if attr not in obj:
                raise PluginError(f"{path}: no entry {attr!r}; it holds {', '.join(map(str, obj))}")
            obj = obj[attr]
        elif hasattr(obj, attr):
            obj = getattr(obj, attr)
        else:
            raise PluginError(f"{path}: {type(obj).__name__} has no attribute {attr!r}")
    return obj


def load(path: str) -> tuple[Any, ModuleType, str]:
    """The object at import path `path` (`pkg.mod:Attr` or `file.py:Attr`), its module, and the
    path normalised to the dotted form (what workers import)."""
    module_part, sep, attrs = str(path).rpartition(":")
    if not sep or not module_part or not attrs:
        raise PluginError(
            f"plug-in {path!r}: expected an import path like mylab.cells:MGU or "
            f"path/to/cells.py:MGU"
        )
    if module_part.endswith(".py"):
        file = Path(module_part).expanduser()
        if not file.is_file():
            raise PluginError(f"plug-in {path!r}: no file {file}")
        module_part = _module_from_file(file)
    try:
        module = importlib.import_module(module_part)
    except Exception as e:  # anything the user's module raises on import
        raise PluginError(
            f"plug-in {path!r}: cannot import {module_part} ({type(e).__name__}: {e}); is it "
            f"installed, or beside the study file?"
        ) from None
    return _resolve(module, attrs, path), module, f"{module_part}:{attrs}"


def _root(module: ModuleType) -> Path:
    """The top-level package folder of `module` (or its file, for a top-level module)."""
    top = sys.modules[module.__name__.split(".")[0]]
    if getattr(top, "__path__", None):
        return Path(list(top.__path__)[0]).resolve()
    return Path(top.__file__).resolve()


def source_hash(root: Path) -> str:
    """SHA-256 over the .py files under `root` (names and bytes, in sorted order)."""
    digest = hashlib.sha256()
    files = sorted(root.rglob("*.py")) if root.is_dir() else [root]
    for file in files:
        if "__pycache__" in file.parts:
            continue
        digest.update(str(file.relative_to(root) if root.is_dir() else file.name).encode())
        digest.update(b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def _distribution(module: ModuleType) -> tuple[str | None, str | None]:
    top = module.__name__.split(".")[0]
    names = importlib.metadata.packages_distributions().get(top) or []
    for name in names:
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None, getattr(sys.modules.get(top), "__version__", None)


def _plugin(kind: str, name: str, path: str, module: ModuleType, origin: str) -> Plugin:
    root = _root(module)
    dist, version = _distribution(module)
    return Plugin(kind, name, path, dist, version, source_hash(root), str(root), origin)


def register_cell(
    name: str, path: str, flags: Mapping[str, Any] | None = None, origin: str = "import path"
) -> tuple[Any, Plugin]:
    """Register the cell class at `path` as a kind (named by its import path) and variant
    `name` of it with `flags`; returns the variant's spec and the plug-in."""
    import variants

    cls, module, path = load(path)
    if not isinstance(cls, type):
        raise PluginError(f"plug-in {path}: expected a cell class, got {type(cls).__name__}")
    try:
        variants.register_cell(path, cls, origin=path)
        spec = variants.spec_from_dict({"kind": path, **dict(flags or {})})
        variants.register_variant(name, spec, path)
    except (TypeError, ValueError) as e:
        raise PluginError(f"variant {name!r} ({path}): {e}") from None
    return spec, _plugin("cell", name, path, module, origin)


def register_task(name: str, path: str, origin: str = "import path") -> Plugin:
    """Register the `tasks.Task` at `path` as task `name`."""
    import tasks

    task, module, path = load(path)
    if not isinstance(task, tasks.Task):
        raise PluginError(f"plug-in {path}: expected a tasks.Task, got {type(task).__name__}")
    if task.name != name:
        task = dataclasses.replace(task, name=name)
    try:
        tasks.register(task, path)
    except (TypeError, ValueError) as e:
        raise PluginError(f"task {name!r} ({path}): {e}") from None
    return _plugin("task", name, path, module, origin)


def from_module(module_name: str) -> dict[str, dict[str, str]]:
    """`plugins: [mylab]`: the import paths of what module `mylab` offers in its `VARIANTS`
    (name -> cell class) and `TASKS` (name -> Task) dicts: {"cells": {...}, "tasks": {...}}."""
    _, module, _ = load(f"{module_name}:__name__")
    found: dict[str, dict[str, str]] = {"cells": {}, "tasks": {}}
    for key, attr in (("cells", "VARIANTS"), ("tasks", "TASKS")):
        for name in getattr(module, attr, {}) or {}:
            found[key][str(name)] = f"{module_name}:{attr}.{name}"
    if not found["cells"] and not found["tasks"]:
        raise PluginError(
            f"plug-in module {module_name!r} offers nothing: define VARIANTS (name -> cell "
            f"class) or TASKS (name -> tasks.Task) in it"
        )
    return found


def entry_points() -> dict[str, dict[str, str]]:
    """Installed plug-ins: {"cells": {variant: import path}, "tasks": {task: import path}}."""
    found: dict[str, dict[str, str]] = {"cells": {}, "tasks": {}}
    for kind, group in ENTRY_GROUPS.items():
        for ep in importlib.metadata.entry_points(group=group):
            found["cells" if kind == "cell" else "tasks"][ep.name] = ep.value.replace(" ", "")
    return found


def register_installed() -> tuple[list[Plugin], list[str]]:
    """Register every installed entry-point plug-in; returns them and one line per plug-in that
    failed to load (listed, never fatal: a broken plug-in must not stop the built-ins)."""
    plugins, errors = [], []
    found = entry_points()
    for name, path in found["cells"].items():
        try:
            plugins.append(register_cell(name, path, origin="entry point")[1])
        except PluginError as e:
            errors.append(str(e))
    for name, path in found["tasks"].items():
        try:
            plugins.append(register_task(name, path, origin="entry point"))
        except PluginError as e:
            errors.append(str(e))
    return plugins, errors


def roots(paths: Iterable[str]) -> list[str]:
    """The folders (or module files) of the plug-ins at these import paths, each once: what a
    study ships to its workers."""
    out: list[str] = []
    for path in paths:
        module = load(path)[1]
        root = str(_root(module))
        if root not in out:
            out.append(root)
    return out


def activate(declared: Mapping[str, Any], folders: Sequence[str] = ()) -> None:
    """In a worker (or a later command): register the plug-ins a study declared, from
    `{"cells": {variant: {"kind": path, **flags}}, "tasks": {task: path}}`."""
    add_search_path(folders)
    for name, flags in (declared.get("cells") or {}).items():
        flags = dict(flags)
        register_cell(name, flags.pop("kind"), flags)
    for name, path in (declared.get("tasks") or {}).items():
        register_task(name, path)


_CHECKED: set[str] = set()  # plug-in identities (source hashes) that passed in this process


def check_declared(cfg: Any) -> None:
    """The quick contract checks (`variants.contract`, `tasks.contract`) on every plug-in a study
    uses (once per process and source); the first failure raises one line naming the plug-in,
    the check and what failed."""
    key = repr(sorted((p, i.get("sha256")) for p, i in cfg.plugin_identity.items()))
    key += repr(sorted(cfg.custom_variants.items()))
    if key in _CHECKED:
        return
    _check(cfg)
    _CHECKED.add(key)


def _check(cfg: Any) -> None:
    import tasks
    import variants
    from tasks.contract import check_task
    from variants.contract import check_cell

    for name, flags in cfg.declared_plugins()["cells"].items():
        if name not in cfg.variants:
            continue
        for f in check_cell(variants.get_spec(name), quick=True):
            if not f.ok:
                raise PluginError(
                    f"plug-in {flags['kind']} (variant {name}) fails the cell contract: "
                    f"{f.check}: {f.detail}; `odyssey check cell {flags['kind']}` runs every check"
                )
    for name, path in cfg.declared_plugins()["tasks"].items():
        if name not in cfg.tasks:
            continue
        for check, ok, detail in check_task(tasks.get(name)):
            if not ok:
                raise PluginError(
                    f"plug-in {path} (task {name}) fails the task contract: {check}: {detail}; "
                    f"`odyssey check task {path}` runs every check"
                )
