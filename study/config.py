"""The study config, resolved from preset -> YAML file -> CLI flags into one frozen, validated
`StudyConfig` (its schema and defaults: `study.config_schema`).

A preset is a YAML file shipped in `study/presets/` (demo, smoke, paper); a user file may name a
preset to start from (`preset: demo`) and override any key. An error names the bad key, the value,
what is valid, and where the value came from (a flag, a file, a preset).
"""

from __future__ import annotations

import logging
import types
import typing
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from study.config_schema import (
    DEVICES,
    HIDDEN_MEANINGS,
    SAMPLERS,
    ConfigError,
    DataConfig,
    Expected,
    SpaceConfig,
    StudyConfig,
    TrainConfig,
)
from study.results import CONFIG_FILE

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
    if _declares_plugins(raw):  # import paths are found beside the study file, too
        raw.setdefault("plugin_dirs", [str(path.parent.resolve())])
    base = raw.pop("preset", None)
    out = []
    if base is not None:
        out.append((f"preset {base}", _read_yaml(preset_text(str(base)), f"preset {base}")))
    return out + [(str(path), raw)], path.stem


def _declares_plugins(raw: Mapping[str, Any]) -> bool:
    items = [*(raw.get("variants") or []), *(raw.get("tasks") or [])]
    if isinstance(raw.get("variants"), str) or isinstance(raw.get("tasks"), str):
        items = []
    return bool(raw.get("plugins")) or any(
        isinstance(i, Mapping) and ("cell" in i or "task" in i) for i in items
    )


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
    if "gpus_per_trial" in raw:  # read as gpus_per_job (config_schema), a saved config silently
        logging.getLogger(__name__).warning(
            "config key gpus_per_trial is deprecated: it is the GPU fraction of a job (one "
            "trial or a pack of trials); read as gpus_per_job, the key to use"
        )
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
    if not (sdir / CONFIG_FILE).is_file():
        known = sorted(p.parent.name for p in sdir.parent.glob(f"*/{CONFIG_FILE}"))
        raise ValueError(f"no study {name!r} in {sdir.parent}; known: {', '.join(known) or 'none'}")
    return sdir, load_saved(sdir / CONFIG_FILE)


def load_saved(path: Path) -> StudyConfig:
    """A study's saved `config.yaml` (validated again)."""
    return from_dict(_read_yaml(read_text(path), str(path)))


# ----------------------------------------------------------------------------- validation errors


def from_dict(raw: Mapping[str, Any]) -> StudyConfig:
    """Validate plain settings (as read from YAML) into a `StudyConfig`; a bad one raises
    `ConfigError` naming the key, the value and what is valid."""
    try:
        return StudyConfig.model_validate(dict(raw))
    except ValidationError as e:
        raise config_error(e) from None


def config_error(error: ValidationError) -> ConfigError:
    """Pydantic's report as one line of ours about its first problem (unknown keys first: a
    misspelt key explains the rest)."""
    errors = error.errors(include_url=False)
    extra = [e for e in errors if e["type"] == "extra_forbidden"]
    if extra:
        parent = min((e["loc"][:-1] for e in extra), key=len)
        bad = [str(e["loc"][-1]) for e in extra if e["loc"][:-1] == parent]
        model, _ = _field_at(error.title, parent)
        prefix = ".".join(map(str, parent))
        return ConfigError(
            f"unknown {prefix or 'study'} setting(s) {', '.join(map(repr, bad))}; "
            f"valid: {', '.join(model.model_fields)}",
            ".".join(filter(None, (prefix, bad[0]))),
        )
    e = errors[0]
    key = ".".join(map(str, e["loc"]))
    cause = (e.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigError):
        return cause
    if isinstance(cause, Expected):
        return ConfigError(f"{key} must {cause.what}, got {e['input']!r}", key)
    if cause is not None:
        return ConfigError(f"{key}: {cause}", key)
    if e["type"] == "missing":
        return ConfigError(f"{key} is missing", key)
    tp, field = _field_at(error.title, e["loc"])
    if e["type"] == "literal_error":
        valid = ", ".join(typing.get_args(tp))
        return ConfigError(f"unknown {key} {e['input']!r}; valid: {valid}", key)
    return ConfigError(f"{key} must be {_expected(tp, field)}, got {e['input']!r}", key)


_MODELS = {m.__name__: m for m in (StudyConfig, SpaceConfig, TrainConfig, DataConfig)}


def _field_at(model_name: str, loc: tuple) -> tuple[Any, FieldInfo | None]:
    """The type at `loc` in the model named `model_name`, and the field that declares it."""
    tp: Any = _MODELS.get(model_name, StudyConfig)
    field = None
    for part in loc:
        tp = _optional_inner(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields[str(part)]
            tp = field.annotation
        elif typing.get_origin(tp) is dict:
            field, tp = None, typing.get_args(tp)[1]
    return _optional_inner(tp), field


def _optional_inner(tp: Any) -> Any:
    """`int | None` -> int (the type a value of the setting must have when given)."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return inner[0] if len(inner) == 1 else tp
    return tp


def _expected(tp: Any, field: FieldInfo | None) -> str:
    """What a setting must be, in words: 'an integer >= 1', 'a number in (0, 1]'."""
    if field is not None and field.description:
        return field.description
    if isinstance(tp, type) and issubclass(tp, BaseModel) or typing.get_origin(tp) is dict:
        return "a mapping of settings"
    if tp is bool:
        return "true or false"
    metadata = field.metadata if field is not None else []
    bounds = {k: getattr(m, k) for m in metadata for k in ("ge", "gt", "le", "lt") if hasattr(m, k)}
    if tp is int:
        return "an integer" + (f" >= {bounds['ge']}" if "ge" in bounds else "")
    if tp is float:
        if len(bounds) < 2:
            return "a number"
        low = f"({bounds['gt']}" if "gt" in bounds else f"[{bounds.get('ge')}"
        high = f"{bounds['lt']})" if "lt" in bounds else f"{bounds.get('le')}]"
        return f"a number in {low}, {high}"
    return "a string"


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
