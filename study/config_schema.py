"""The study config's schema: frozen pydantic models whose defaults are the paper's protocol
(Greff et al. 2017, sections III-IV). `study.config` reads settings
into them and turns a validation failure into one `ConfigError` line.

Every model forbids unknown keys and is strict: a YAML `"4"` is not an integer, `no` is not a
boolean. Choices are `Literal`s, bounds are `Field` constraints, and validators hold the rules
that need a registry (task and variant names, a task's data sources, declared variants).

The part of the config that gives trials their meaning (search space, sampler, training protocol,
seed, data) is its *fingerprint*: an existing study refuses to continue under a different one.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    field_validator,
    model_validator,
)

from study.declared import (
    ConfigError,
    Expected,
    declare,
    declare_task,
    declared,
    offered_task,
    offered_variant,
)
from study.declared import offered as offered_plugins
from study.results import MLFLOW_DB, OPTUNA_DB

Device = Literal["cpu", "cuda", "auto"]
Sampler = Literal["random", "tpe"]
HiddenMeaning = Literal["per_direction", "total"]
DEVICES, SAMPLERS, HIDDEN_MEANINGS = (typing.get_args(t) for t in (Device, Sampler, HiddenMeaning))
NOT_BLANK = r"\S"  # a text setting holds more than white space


def _range(lowest: float, highest: float, integer: bool = False) -> Any:
    """A search-space range: a `[low, high]` pair with lowest <= low <= high <= highest."""

    def check(value: Any) -> tuple:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise Expected("be a [low, high] pair")
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value) or (
            integer and not all(math.isfinite(v) and v == int(v) for v in value)
        ):
            raise Expected(f"hold two {'integers' if integer else 'numbers'}")
        a, b = (int(v) if integer else float(v) for v in value)
        if not (all(math.isfinite(v) for v in (a, b)) and lowest <= a <= b <= highest):
            raise Expected(f"satisfy {lowest} <= low <= high <= {highest}")
        return (a, b)

    return Annotated[tuple[int, int] if integer else tuple[float, float], BeforeValidator(check)]


def _folder(value: Any) -> str:
    """A folder path as the OS gave it: kept as is, undecodable bytes included (pydantic's own
    string check refuses those lone surrogates; `study.stores.check_results_dir` says which
    byte is not UTF-8, where the path is used)."""
    if not isinstance(value, str) or not value.strip():
        raise Expected("be a folder path")
    return value


FolderPath = Annotated[str, PlainValidator(_folder)]

HiddenSizes = _range(2, 100_000, integer=True)
LearningRates = _range(1e-12, 1e3)
OneMinusMomenta = _range(1e-6, 1.0)
NoiseLevels = _range(0.0, 100.0)


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


RESERVED = {"hidden_size", "learning_rate", "momentum", "one_minus_momentum", "input_noise"}


class Dimension(_Settings):
    """A search dimension of the study's own (`space.extra`), as an Optuna distribution."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[str | int | float | bool, ...] | None = None

    @field_validator("choices", mode="before")
    @classmethod
    def _listed(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, (list, tuple)):
            raise Expected("be a list of choices")
        return None if value is None else tuple(value)

    @model_validator(mode="after")
    def _consistent(self) -> Dimension:
        if self.type == "categorical":
            if not self.choices or self.low is not None or self.high is not None:
                raise Expected("list its choices (and no low/high) for type categorical")
            return self
        if self.low is None or self.high is None or self.choices is not None:
            raise Expected(f"give low and high (and no choices) for type {self.type}")
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low <= self.high):
            raise Expected("have finite low <= high")
        if self.log and self.low <= 0:
            raise Expected("have low > 0 on a log scale")
        if self.type == "int" and not (self.low == int(self.low) and self.high == int(self.high)):
            raise Expected("have integer low and high for type int")
        return self


class SpaceConfig(_Settings):
    """Ranges of the paper's random search; bounds are inclusive."""

    hidden_size: HiddenSizes = (20, 200)  # log-uniform integer
    hidden_size_meaning: HiddenMeaning = "per_direction"  # or "total": split over both directions
    learning_rate: LearningRates = (1e-6, 1e-2)  # log-uniform
    one_minus_momentum: OneMinusMomenta = (0.01, 1.0)  # log-uniform; momentum = 1 - this
    input_noise: NoiseLevels = (0.0, 1.0)  # uniform std of additive Gaussian noise
    # the study's own dimensions: name -> distribution (they reach the optimizer, the cells
    # that ask for them, the results table's hp_extra, fANOVA and the report)
    extra: dict[str, Dimension] = {}

    @field_validator("extra")
    @classmethod
    def _names(cls, value: dict[str, Dimension]) -> dict[str, Dimension]:
        for name in value:
            if name in RESERVED or not name.isidentifier():
                raise ConfigError(
                    f"space.extra: {name!r} is not a new dimension's name (an identifier, not "
                    f"one of {', '.join(sorted(RESERVED))})",
                    f"space.extra.{name}",
                )
        return value


class TrainConfig(_Settings):
    """The training protocol (the paper's: online SGD, at most 150 epochs, patience 15)."""

    batch_size: int = Field(1, ge=1)
    max_epochs: int = Field(150, ge=1)
    patience: int = Field(15, ge=1)  # stop after this many epochs without a validation improvement
    eval_batch_size: int = Field(64, ge=1)  # evaluation only; does not change any metric
    threads: int = Field(1, ge=1)  # torch threads per trial
    # trials of one (task, variant) trained together in one process (study/pack.py); None: chosen
    # per device by measurement. Execution only: a packed trial equals the same trial alone.
    pack: int | None = Field(None, ge=1)
    # `nesterov` (the paper's), `adam`, or a plug-in's import path (study/optimizers.py)
    optimizer: str = Field("nesterov", pattern=NOT_BLANK)
    layers: int = Field(1, ge=1, le=3)  # stacked recurrent layers; 1 is the paper's network
    residual: bool = False  # each layer above the first adds its input to its output

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, value: str) -> str:
        from study import optimizers

        try:
            optimizers.get(value)
        except ValueError as e:
            raise ConfigError(str(e), "training.optimizer") from None
        return value

    @model_validator(mode="after")
    def _residual_needs_layers(self) -> TrainConfig:
        if self.residual and self.layers < 2:
            raise ConfigError(
                "training.residual joins stacked layers; set training.layers to 2 or 3, or "
                "residual to false",
                "training.residual",
            )
        return self


class DataConfig(_Settings):
    """Which prepared data a task trains on (see `tasks.prepare`)."""

    source: str | None = Field(None, pattern=NOT_BLANK)  # None: the task's default source
    size: int | None = Field(None, ge=1)  # number of training sequences (None: the full corpus)
    path: FolderPath | None = None  # for `real`
    seed: int = Field(0, ge=0)  # seed of a generated corpus


class StudyConfig(_Settings):
    """One study: what it compares (tasks x variants, trials per pair), how (search space,
    training protocol, data, seed, sampler) and where it runs and records."""

    name: str
    tasks: tuple[str, ...] = Field((), validate_default=True)  # required: () is an error
    variants: tuple[str, ...] = ()
    trials: int = Field(200, ge=1)  # per (task, variant)
    workers: int | None = Field(None, ge=1)  # trials in parallel; None: the CPUs of the Ray cluster
    seed: int = Field(0, ge=0)
    device: Device = "cpu"
    sampler: Sampler = "random"
    report: bool = False  # build the report when the study is complete
    ray_address: str | None = Field(
        None, pattern=NOT_BLANK, description="an address like host:6379"
    )
    # on cuda, the fraction of a GPU each job holds: a job is one trial, or a pack of up to
    # `training.pack` trials (256 by default on cuda) trained together in one process
    gpus_per_job: float = Field(0.25, gt=0, le=1)
    storage: str | None = Field(  # Optuna RDB URL; None: sqlite in the study folder
        None, pattern=NOT_BLANK, description="a database URL like sqlite:///optuna.db"
    )
    tracking_uri: str | None = Field(  # MLflow; None: sqlite in the study folder
        None, pattern=NOT_BLANK, description="a URI like sqlite:///mlflow.db"
    )
    results: FolderPath = "results"
    data_dir: FolderPath | None = None
    space: SpaceConfig = SpaceConfig()
    training: TrainConfig = TrainConfig()
    data: dict[str, DataConfig] = {}
    # variants declared in the study file: name -> flags (`variants.spec_from_dict`); a plug-in
    # cell's `kind` is its import path (`{name: MGU, cell: "mylab.cells:MGU"}` in `variants`)
    custom_variants: dict[str, dict[str, Any]] = {}
    # tasks declared in the study file: name -> import path (`{name: adding, task: "m:ADDING"}`)
    custom_tasks: dict[str, str] = {}
    # modules whose VARIANTS / TASKS dicts offer plug-ins by name (`plugins: [mylab]`)
    plugins: tuple[str, ...] = ()
    # folders plug-ins are imported from besides the installed packages (the study file's own)
    plugin_dirs: tuple[FolderPath, ...] = ()
    # import path -> identity (distribution, version, source hash) of every plug-in the study
    # uses, taken when it was first resolved: part of the fingerprint
    plugin_identity: dict[str, dict[str, Any]] = {}

    @property
    def study_dir(self) -> Path:
        return Path(self.results).expanduser() / self.name

    @property
    def optuna_storage(self) -> str:
        return self.storage or f"sqlite:///{(self.study_dir / OPTUNA_DB).resolve()}"

    @property
    def mlflow_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{(self.study_dir / MLFLOW_DB).resolve()}"

    def data_for(self, task: str) -> DataConfig:
        return self.data.get(task, DataConfig())

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, not tuples), as saved in `config.yaml`."""
        return self.model_dump(mode="json")

    def fingerprint(self) -> dict[str, Any]:
        """What gives a trial its meaning; two configs with equal fingerprints can share a study."""
        d = self.to_dict()
        execution_only = ("eval_batch_size", "threads", "pack")
        out = {
            "seed": d["seed"],
            "sampler": d["sampler"],
            "space": d["space"],
            "training": {k: v for k, v in d["training"].items() if k not in execution_only},
            "data": d["data"],
        }
        if d["custom_variants"]:  # what a declared variant's name means
            out["custom_variants"] = d["custom_variants"]
        if d["custom_tasks"]:
            out["custom_tasks"] = d["custom_tasks"]
        if d["plugin_identity"]:  # a changed plug-in's source changes what its trials mean
            out["plugins"] = {
                path: {k: v for k, v in ident.items() if k in ("version", "sha256")}
                for path, ident in d["plugin_identity"].items()
            }
        return out

    def declared_plugins(self) -> dict[str, dict[str, Any]]:
        """What a worker registers (`study.plugins.activate`): plug-in cells by variant (their
        flags, `kind` = import path) and plug-in tasks by name (their import path)."""
        cells = {n: f for n, f in self.custom_variants.items() if ":" in str(f.get("kind", ""))}
        return {"cells": cells, "tasks": dict(self.custom_tasks)}

    # ------------------------------------------------------------------------- validators

    @model_validator(mode="before")
    @classmethod
    def _declared_variants(cls, raw: Any) -> Any:
        """An item of `variants` may declare a variant, `{name: CIFG-NP, coupled_input_forget:
        true, peepholes: false}`, or a plug-in cell, `{name: MGU, cell: "mylab.cells:MGU"}`; an
        item of `tasks` a plug-in task, `{name: adding, task: "mylab.tasks:ADDING"}`; a name may
        be a plug-in offered by a module in `plugins` or an installed entry point. Plug-ins are
        registered (imported) here; a saved config.yaml lists names and keeps the declarations
        under `custom_variants` / `custom_tasks`."""
        if not isinstance(raw, Mapping) or set(raw) - set(cls.model_fields):
            return raw  # unknown keys: reported first, as a misspelt key explains the rest
        import variants
        from study import plugins as plug

        identity: dict[str, dict[str, Any]] = {}
        plug.add_search_path(raw.get("plugin_dirs") or ())
        offered = offered_plugins(raw.get("plugins"))
        custom = {
            str(name): declared(str(name), _mapping(f"custom_variants.{name}", flags), identity)
            for name, flags in _mapping("custom_variants", raw.get("custom_variants")).items()
        }
        task_paths = {
            str(k): str(v) for k, v in _mapping("custom_tasks", raw.get("custom_tasks")).items()
        }
        items = raw.get("variants")
        if isinstance(items, (list, tuple)):
            items = [
                declare(item, custom, identity)
                if isinstance(item, Mapping)
                else offered_variant(item, offered, custom, identity)
                for item in items
            ]
        names = _names(items, "variants", {**variants.VARIANTS, **custom})
        task_items = raw.get("tasks")
        if isinstance(task_items, (list, tuple)):
            task_items = [
                declare_task(item, task_paths)
                if isinstance(item, Mapping)
                else offered_task(item, offered, task_paths)
                for item in task_items
            ]
        for name, path in task_paths.items():
            try:
                identity[path] = plug.register_task(name, path).identity()
            except plug.PluginError as e:
                raise ConfigError(str(e), "tasks") from None
        saved = raw.get("plugin_identity")
        return {
            **raw,
            "variants": names,
            "tasks": task_items if task_items is not None else raw.get("tasks"),
            "custom_variants": {n: custom[n] for n in names if n in custom},
            "custom_tasks": task_paths,
            "plugins": tuple(raw.get("plugins") or ()),
            "plugin_dirs": tuple(raw.get("plugin_dirs") or ()),
            # a saved config keeps the identity its plug-ins had when the study began
            "plugin_identity": dict(saved) if saved else identity,
        }

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, raw: Any) -> Any:
        """Runs before `_declared_variants` (pydantic runs "before" validators last-defined
        first). `gpus_per_trial` (a fraction of a GPU per job all along) is read as
        `gpus_per_job`, silently: a saved config.yaml may hold it (`study.config.resolve` warns
        where a user wrote it)."""
        if isinstance(raw, Mapping) and "gpus_per_trial" in raw:
            raw = dict(raw)
            old = raw.pop("gpus_per_trial")
            raw.setdefault("gpus_per_job", old)
        return raw

    @field_validator("name", mode="before")
    @classmethod
    def _folder_name(cls, value: Any) -> str:
        name = str(value or "").strip()
        if not name or "/" in name or name.startswith("."):
            raise Expected(
                "be a study name: a non-empty folder name without '/' (not starting with '.')"
            )
        return name

    @field_validator("tasks", mode="before")
    @classmethod
    def _task_names(cls, value: Any) -> tuple[str, ...]:
        import tasks

        return _names(value, "tasks", tasks.TASKS)

    @field_validator("space", "training", mode="before")
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        return {} if value is None else value  # `training:` with nothing under it

    @field_validator("data", mode="before")
    @classmethod
    def _data_tasks(cls, value: Any) -> Any:
        import tasks

        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise Expected("map task names to settings")
        for task in value:
            if task not in tasks.TASKS:
                raise ConfigError(
                    f"data: unknown task {task!r}; known: {', '.join(tasks.TASKS)}", f"data.{task}"
                )
        return {task: {} if s is None else s for task, s in value.items()}

    @field_validator("data")
    @classmethod
    def _data_sources(cls, value: dict[str, DataConfig]) -> dict[str, DataConfig]:
        import tasks

        for task, d in value.items():
            sources = tasks.TASKS[task].sources
            if d.source is not None and d.source not in sources:
                raise ConfigError(
                    f"unknown data.{task}.source {d.source!r}; valid: {', '.join(sources)}",
                    f"data.{task}.source",
                )
        return value


def _mapping(key: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a mapping of settings, got {value!r}", key)
    return value


def _names(value: Any, kind: str, registry: Mapping[str, Any]) -> tuple[str, ...]:
    """Names from a list or a comma-separated string, each known to `registry` ('all': all)."""
    known = ", ".join(registry)
    if value is not None and not isinstance(value, (str, list, tuple)):
        raise ConfigError(
            f"{kind} must be a list or a comma-separated string, got {value!r}; known: {known}",
            kind,
        )
    items = value.split(",") if isinstance(value, str) else list(value or [])
    items = [str(i).strip() for i in items if str(i).strip()]
    if items == ["all"]:
        return tuple(registry)
    if not items:
        raise ConfigError(f"no {kind} given; known: {known}", kind)
    bad = [i for i in items if i not in registry]
    if bad:
        raise ConfigError(f"unknown {kind[:-1]} {bad[0]!r}; known: {known}", kind)
    return tuple(dict.fromkeys(items))  # dedupe, keep order
