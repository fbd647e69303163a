"""The study config: one frozen, validated dataclass resolved from preset -> YAML file -> CLI flags.

A preset is a YAML file shipped in `study/presets/` (demo, smoke, paper); a user file may name a
preset to start from (`preset: demo`) and override any key. Defaults of the dataclasses are the
paper's protocol (Greff et al. 2017, sections III-IV; reference sections 3 and 4).

The part of the config that gives trials their meaning (search space, sampler, training protocol,
seed, data) is its *fingerprint*: an existing study refuses to continue under a different one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

PRESETS = ("demo", "smoke", "paper")
DEVICES = ("cpu", "cuda", "auto")
SAMPLERS = ("random", "tpe")
HIDDEN_MEANINGS = ("per_direction", "total")


class ConfigError(ValueError):
    """A bad setting; `key` is its dotted name (`training.batch_size`), so that `resolve` can say
    where the value came from (a flag, a file, a preset)."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class SpaceConfig:
    """Ranges of the random search (reference section 4); bounds are inclusive."""

    hidden_size: tuple[int, int] = (20, 200)  # log-uniform integer
    hidden_size_meaning: str = "per_direction"  # or "total": split over both directions
    learning_rate: tuple[float, float] = (1e-6, 1e-2)  # log-uniform
    one_minus_momentum: tuple[float, float] = (0.01, 1.0)  # log-uniform; momentum = 1 - this
    input_noise: tuple[float, float] = (0.0, 1.0)  # uniform std of additive Gaussian noise


@dataclass(frozen=True)
class TrainConfig:
    """The training protocol (reference section 3)."""

    batch_size: int = 1
    max_epochs: int = 150
    patience: int = 15  # stop after this many epochs without a validation improvement
    eval_batch_size: int = 64  # evaluation only; does not change any metric
    threads: int = 1  # torch threads per trial
    # trials of one (task, variant) trained together in one process (study/pack.py); None: chosen
    # per device by measurement. Execution only: a packed trial equals the same trial alone.
    pack: int | None = None


@dataclass(frozen=True)
class DataConfig:
    """Which prepared data a task trains on (see `tasks.prepare`)."""

    source: str | None = None  # None: the task's default source
    size: int | None = None  # number of training sequences (None: the full corpus)
    path: str | None = None  # the original corpus for source `real`
    seed: int = 0  # seed of a generated corpus


@dataclass(frozen=True)
class StudyConfig:
    name: str
    tasks: tuple[str, ...]
    variants: tuple[str, ...]
    trials: int = 200  # per (task, variant)
    workers: int | None = None  # trials in parallel; None: the CPUs of the Ray cluster
    seed: int = 0
    device: str = "cpu"
    sampler: str = "random"
    report: bool = False  # build the report when the study is complete
    ray_address: str | None = None
    gpus_per_trial: float = 0.25  # fraction of a GPU per trial when device is cuda
    storage: str | None = None  # Optuna RDB URL; None: sqlite in the study folder
    tracking_uri: str | None = None  # MLflow; None: sqlite in the study folder
    results: str = "results"
    data_dir: str | None = None
    space: SpaceConfig = field(default_factory=SpaceConfig)
    training: TrainConfig = field(default_factory=TrainConfig)
    data: Mapping[str, DataConfig] = field(default_factory=dict)
    # variants declared in the study file: name -> flags (`variants.spec_from_dict`)
    custom_variants: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def study_dir(self) -> Path:
        return Path(self.results).expanduser() / self.name

    @property
    def optuna_storage(self) -> str:
        return self.storage or f"sqlite:///{(self.study_dir / 'optuna.db').resolve()}"

    @property
    def mlflow_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{(self.study_dir / 'mlflow.db').resolve()}"

    def data_for(self, task: str) -> DataConfig:
        return self.data.get(task, DataConfig())

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["tasks"], out["variants"] = list(self.tasks), list(self.variants)
        out["space"] = {k: list(v) if isinstance(v, tuple) else v for k, v in out["space"].items()}
        out["data"] = {t: dataclasses.asdict(d) for t, d in self.data.items()}
        out["custom_variants"] = {n: dict(f) for n, f in self.custom_variants.items()}
        return out

    def fingerprint(self) -> dict[str, Any]:
        """What gives a trial its meaning; two configs with equal fingerprints can share a study."""
        d = self.to_dict()
        training = {
            k: v
            for k, v in d["training"].items()
            if k not in ("eval_batch_size", "threads", "pack")
        }
        out = {
            "seed": d["seed"],
            "sampler": d["sampler"],
            "space": d["space"],
            "training": training,
            "data": d["data"],
        }
        if d["custom_variants"]:  # what a declared variant's name means
            out["custom_variants"] = d["custom_variants"]
        return out


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


# ----------------------------------------------------------------------------- validation


def _known(kind: str, got: Mapping[str, Any], cls: type) -> None:
    valid = [f.name for f in dataclasses.fields(cls)]
    bad = [k for k in got if k not in valid]
    if bad:
        prefix = "" if kind == "study" else f"{kind}."
        raise ConfigError(
            f"unknown {kind} setting(s) {', '.join(map(repr, bad))}; valid: {', '.join(valid)}",
            prefix + bad[0],
        )


def _mapping(name: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name} must be a mapping of settings, got {value!r}", name)
    return value


def _text(name: str, value: Any, what: str = "a string") -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} must be {what}, got {value!r}", name)
    return value


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}", name)
    return value


def _names(value: Any, kind: str, registry: Mapping[str, Any]) -> tuple[str, ...]:
    if value is not None and not isinstance(value, (str, list, tuple)):
        raise ConfigError(
            f"{kind} must be a list or a comma-separated string, got {value!r}; "
            f"known: {', '.join(registry)}",
            kind,
        )
    items = value.split(",") if isinstance(value, str) else list(value or [])
    items = [str(i).strip() for i in items if str(i).strip()]
    if items == ["all"]:
        return tuple(registry)
    if not items:
        raise ConfigError(f"no {kind} given; known: {', '.join(registry)}", kind)
    bad = [i for i in items if i not in registry]
    if bad:
        raise ConfigError(f"unknown {kind[:-1]} {bad[0]!r}; known: {', '.join(registry)}", kind)
    return tuple(dict.fromkeys(items))  # dedupe, keep order


def _range(name: str, value: Any, lo: float, hi: float, integer: bool = False) -> tuple:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(
            f"space.{name} must be a [low, high] pair, got {value!r}", f"space.{name}"
        )
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value) or (
        integer and any(float(v) != int(v) for v in value if math.isfinite(v))
    ):
        kind = "integers" if integer else "numbers"
        raise ConfigError(f"space.{name} must hold two {kind}, got {value!r}", f"space.{name}")
    a, b = (int(v) if integer else float(v) for v in value)
    if not (lo <= a <= b <= hi) or not all(math.isfinite(v) for v in (a, b)):
        raise ConfigError(
            f"space.{name} = [{a}, {b}] must satisfy {lo} <= low <= high <= {hi}", f"space.{name}"
        )
    return (a, b)


def _space(raw: Any) -> SpaceConfig:
    raw = _mapping("space", raw)
    _known("space", raw, SpaceConfig)
    d = SpaceConfig()
    meaning = raw.get("hidden_size_meaning", d.hidden_size_meaning)
    if meaning not in HIDDEN_MEANINGS:
        raise ConfigError(
            f"space.hidden_size_meaning {meaning!r}; valid: {', '.join(HIDDEN_MEANINGS)}",
            "space.hidden_size_meaning",
        )
    return SpaceConfig(
        hidden_size=_range("hidden_size", raw.get("hidden_size", d.hidden_size), 2, 100_000, True),
        hidden_size_meaning=meaning,
        learning_rate=_range(
            "learning_rate", raw.get("learning_rate", d.learning_rate), 1e-12, 1e3
        ),
        one_minus_momentum=_range(
            "one_minus_momentum", raw.get("one_minus_momentum", d.one_minus_momentum), 1e-6, 1.0
        ),
        input_noise=_range("input_noise", raw.get("input_noise", d.input_noise), 0.0, 100.0),
    )


def _positive_int(section: str, name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(
            f"{section}{name} must be an integer >= {minimum}, got {value!r}", f"{section}{name}"
        )
    return value


def _training(raw: Any) -> TrainConfig:
    raw = _mapping("training", raw)
    _known("training", raw, TrainConfig)
    d = dataclasses.asdict(TrainConfig())
    d.update(raw)
    for k in ("batch_size", "max_epochs", "eval_batch_size", "threads"):
        _positive_int("training.", k, d[k])
    if d["pack"] is not None:
        _positive_int("training.", "pack", d["pack"])
    _positive_int("training.", "patience", d["patience"])
    return TrainConfig(**d)


def _data(raw: Mapping[str, Any], task_names: tuple[str, ...], registry: Mapping[str, Any]) -> dict:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"data must map task names to settings, got {raw!r}", "data")
    out = {}
    for task, settings in raw.items():
        if task not in registry:
            raise ConfigError(
                f"data: unknown task {task!r}; known: {', '.join(registry)}", f"data.{task}"
            )
        settings = dict(_mapping(f"data.{task}", settings))
        _known(f"data.{task}", settings, DataConfig)
        dc = DataConfig(**settings)
        _text(f"data.{task}.source", dc.source)
        _text(f"data.{task}.path", dc.path, "a folder path")
        _positive_int(f"data.{task}.", "seed", dc.seed, minimum=0)
        spec = registry[task]
        if dc.source is not None and dc.source not in spec.sources:
            raise ConfigError(
                f"data.{task}.source {dc.source!r}; valid: {', '.join(spec.sources)}",
                f"data.{task}.source",
            )
        if dc.size is not None:
            _positive_int(f"data.{task}.", "size", dc.size)
        out[task] = dc
    return out


def from_dict(raw: Mapping[str, Any]) -> StudyConfig:
    """Validate plain settings (as read from YAML) into a `StudyConfig`."""
    import tasks

    raw = dict(raw)
    _known("study", raw, StudyConfig)
    name = str(raw.get("name") or "").strip()
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(
            f"study name {name!r} must be a non-empty folder name without '/'", "name"
        )
    task_names = _names(raw.get("tasks"), "tasks", tasks.TASKS)
    variant_names, custom = _variants(raw.get("variants"), raw.get("custom_variants"))
    trials = _positive_int("", "trials", raw.get("trials", 200))
    workers = raw.get("workers")
    if workers is not None:
        workers = _positive_int("", "workers", workers)
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}", "seed")
    device = raw.get("device", "cpu")
    if device not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; valid: {', '.join(DEVICES)}", "device")
    sampler = raw.get("sampler", "random")
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {sampler!r}; valid: {', '.join(SAMPLERS)}", "sampler")
    gpus = raw.get("gpus_per_trial", 0.25)
    if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or not 0 < gpus <= 1:
        raise ConfigError(
            f"gpus_per_trial must be a number in (0, 1], got {gpus!r}", "gpus_per_trial"
        )
    return StudyConfig(
        name=name,
        tasks=task_names,
        variants=variant_names,
        trials=trials,
        workers=workers,
        seed=seed,
        device=device,
        sampler=sampler,
        report=_flag("report", raw.get("report", False)),
        ray_address=_text("ray_address", raw.get("ray_address"), "an address like host:6379"),
        gpus_per_trial=float(gpus),
        storage=_text("storage", raw.get("storage"), "a database URL like sqlite:///optuna.db"),
        tracking_uri=_text(
            "tracking_uri", raw.get("tracking_uri"), "a URI like sqlite:///mlflow.db"
        ),
        results=_text("results", raw.get("results"), "a folder path") or "results",
        data_dir=_text("data_dir", raw.get("data_dir"), "a folder path"),
        space=_space(raw.get("space")),
        training=_training(raw.get("training")),
        data=_data(raw.get("data") or {}, task_names, tasks.TASKS),
        custom_variants=custom,
    )


def _variants(value: Any, declared: Any) -> tuple[tuple[str, ...], dict[str, dict[str, Any]]]:
    """Variant names, and the flags of those declared in the file: an item of `variants` may be
    a mapping `{name: CIFG-NP, coupled_input_forget: true, peepholes: false}` (a saved
    config.yaml lists names and keeps the flags under `custom_variants`)."""
    import variants

    custom: dict[str, dict[str, Any]] = {}
    for name, flags in _mapping("custom_variants", declared).items():
        custom[str(name)] = _declared(str(name), _mapping(f"custom_variants.{name}", flags))
    items = value
    if isinstance(value, (list, tuple)):
        items = []
        for item in value:
            if isinstance(item, Mapping):
                flags = dict(item)
                name = flags.pop("name", None)
                if not isinstance(name, str) or not name.strip():
                    raise ConfigError(
                        f"a declared variant needs a name, e.g. {{name: CIFG-NP, "
                        f"coupled_input_forget: true, peepholes: false}}; got {dict(item)!r}",
                        "variants",
                    )
                name = name.strip()
                custom[name] = _declared(name, flags)
                item = name
            items.append(item)
    names = _names(items, "variants", {**variants.VARIANTS, **custom})
    return names, {n: custom[n] for n in names if n in custom}


def _declared(name: str, flags: Mapping[str, Any]) -> dict[str, Any]:
    import variants

    if name in variants.VARIANTS:
        raise ConfigError(
            f"variant name {name!r} is the registry's; name your own variant differently "
            f"(registry: {', '.join(variants.VARIANTS)})",
            "variants",
        )
    if any(c in name for c in "/,") or name.startswith("."):
        raise ConfigError(
            f"variant name {name!r} may not hold '/' or ',' or start with '.'", "variants"
        )
    try:
        return variants.spec_to_dict(variants.spec_from_dict(flags))
    except ValueError as e:
        raise ConfigError(f"variant {name!r}: {e}", "variants") from None


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
    common = set(old.tasks) & set(new.tasks)
    fa["data"] = {t: dataclasses.asdict(old.data_for(t)) for t in sorted(common)}
    fb["data"] = {t: dataclasses.asdict(new.data_for(t)) for t in sorted(common)}
    a, b = flatten(fa), flatten(fb)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
