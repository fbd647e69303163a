"""The study config, resolved from preset -> YAML file -> CLI flags into one frozen, validated
`StudyConfig` (its schema and defaults: `study.config_schema`).

A preset is a YAML file shipped in `study/presets/` (demo, smoke, paper); a user file may name a
preset to start from (`preset: demo`) and override any key. An error names the bad key, the value,
what is valid, and where the value came from (a flag, a file, a preset).
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from study.config_schema import (
    DEVICES,
    HIDDEN_MEANINGS,
    SAMPLERS,
    ConfigError,
    DataConfig,
    SpaceConfig,
    StudyConfig,
    TrainConfig,
    from_dict,
)

__all__ = [
    "DEVICES",
    "HIDDEN_MEANINGS",
    "PRESETS",
    "SAMPLERS",
    "ConfigError",
    "DataConfig",
    "SpaceConfig",
    "StudyConfig",
    "TrainConfig",
    "dump",
    "fingerprint_diff",
    "flatten",
    "from_dict",
    "load_saved",
    "resolve",
    "saved_study",
]

PRESETS = ("demo", "smoke", "paper")


# ----------------------------------------------------------------------------- loading


def preset_text(name: str) -> str:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return (resources.files("study") / "presets" / f"{name}.yaml").read_text()


def read_text(path: Path) -> str:
    """A settings file's text; one that is not UTF-8 is an error naming the file and the byte."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path}: byte 0x{data[e.start]:02x} at position {e.start} is not UTF-8; "
            f"save the file as UTF-8"
        ) from None


def _read_yaml(text: str, origin: str) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{origin}: not valid YAML ({e})") from e
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"{origin}: expected a mapping of settings, found {type(raw).__name__}")
    return raw


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Recursive merge for the nested sections; lists and scalars are replaced."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def layers(spec: str) -> tuple[list[tuple[str, dict[str, Any]]], str]:
    """The settings of a preset name or a YAML file (which may name a `preset`), as layers
    `(where, settings)` in the order they apply, and the default study name (the preset or file
    stem)."""
    if spec in PRESETS:
        return [(f"preset {spec}", _read_yaml(preset_text(spec), f"preset {spec}"))], spec
    path = Path(spec).expanduser()
    if path.suffix.lower() not in (".yaml", ".yml") or not path.is_file():
        raise ValueError(
            f"{spec!r} is neither a preset ({', '.join(PRESETS)}) nor an existing .yaml file"
        )
    raw = _read_yaml(read_text(path), str(path))
    base = raw.pop("preset", None)
    out = []
    if base is not None:
        out.append((f"preset {base}", _read_yaml(preset_text(str(base)), f"preset {base}")))
    return out + [(str(path), raw)], path.stem


def raw_config(spec: str) -> tuple[dict[str, Any], str]:
    """The merged settings of a preset name or a YAML file and the default study name."""
    found, name = layers(spec)
    raw: dict[str, Any] = {}
    for _, settings in found:
        raw = _merge(raw, settings)
    return raw, name


def flag_name(key: str) -> str:
    """The `odyssey run` flag that sets a dotted setting: training.max_epochs -> --max-epochs."""
    return "--study" if key == "name" else "--" + key.split(".")[-1].replace("_", "-")


def _unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, v in flat.items():
        *parents, last = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = v
    return out


def _where(key: str, found: list[tuple[str, dict[str, Any]]]) -> str:
    """Where the value of `key` came from: the last layer that sets it (or a part of it)."""
    for origin, settings in reversed(found):
        for k in flatten(settings):
            if k == key or k.startswith(key + ".") or key.startswith(k + "."):
                if origin == "flags":
                    return f"from {flag_name(k)}"
                return f"from {origin}" if origin.startswith("preset ") else f"in {origin}, key {k}"
    return "the default"


def resolve(spec: str, overrides: Mapping[str, Any] | None = None) -> StudyConfig:
    """preset -> file -> flags; `overrides` holds CLI values by (dotted) setting name, None
    meaning 'not given'. An error names where the bad value came from."""
    found, default_name = layers(spec)
    flags = _unflatten({k: v for k, v in (overrides or {}).items() if v is not None})
    found = [("default", {"name": default_name}), *found, ("flags", flags)]
    raw: dict[str, Any] = {}
    for _, settings in found:
        raw = _merge(raw, settings)
    try:
        cfg = from_dict(raw)
        for task in cfg.tasks:
            path = cfg.data_for(task).path
            if path is not None and not Path(path).expanduser().exists():
                raise ConfigError(f"data.{task}.path {path} does not exist", f"data.{task}.path")
    except ConfigError as e:
        where = _where(e.key, found[1:])
        raise ConfigError(f"{e} ({where})", e.key) from None
    return cfg


def dump(cfg: StudyConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def saved_study(results: str | Path, name: str) -> tuple[Path, StudyConfig]:
    """The folder and saved config of study `name` under `results`; an error naming the studies
    that are there when it is not one."""
    sdir = Path(results).expanduser() / name
    if not (sdir / "config.yaml").is_file():
        known = sorted(p.parent.name for p in sdir.parent.glob("*/config.yaml"))
        raise ValueError(f"no study {name!r} in {sdir.parent}; known: {', '.join(known) or 'none'}")
    return sdir, load_saved(sdir / "config.yaml")


def load_saved(path: Path) -> StudyConfig:
    """A study's saved `config.yaml` (validated again)."""
    return from_dict(_read_yaml(read_text(path), str(path)))


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys: {"space": {"seed": 1}} -> {"space.seed": 1}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def fingerprint_diff(old: StudyConfig, new: StudyConfig) -> list[str]:
    """Dotted keys whose values differ between the two fingerprints."""
    fa, fb = old.fingerprint(), new.fingerprint()
    # data settings matter only for tasks both configs run (adding a task is fine)
    common = sorted(set(old.tasks) & set(new.tasks))
    fa["data"] = {t: old.data_for(t).model_dump() for t in common}
    fb["data"] = {t: new.data_for(t).model_dump() for t in common}
    a, b = flatten(fa), flatten(fb)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
