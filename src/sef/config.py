"""Training configuration: nested dataclasses that round-trip through YAML.

A config comes from a named preset (YAML shipped in ``sef/presets``), a user's YAML file (which
may name a preset as its ``base``), and ``section.key=value`` overrides, in that order. Every key
and type is checked, so a typo or a wrong value fails in one line before any work starts.

Preset names are composed, so the 4 datasets x 2 backbones x 6 methods of the paper need no
copy-pasted files: ``<dataset>-<backbone>[-<method>]`` (e.g. ``cub-resnet50``,
``dogs-resnet18-plain``) merges ``paper.yaml``, ``<dataset>.yaml`` and ``method-<method>.yaml``;
own data, ``folder-<backbone>[-<method>]`` and ``csv-...``, also merge ``own.yaml``;
``demo[-<method>]`` merges ``demo.yaml`` and the method; the built-in ``birds32`` set has
``birds32-mobilenet_v2[-<method>]`` (paper.yaml, then birds32.yaml, then the method), and
``birds32b`` the same presets (birds32b.yaml names birds32.yaml as its ``base``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from sef import filekinds
from sef.choices import BAD_IMAGE_POLICIES, GROUP_LOSS_VARIANTS, POOLS, RECIPES
from sef.datasets import NAMES
from sef.errors import ConfigError
from sef.outputs import write_text

PAPER_DATASETS = ("cub", "cars", "dogs", "aircraft")
OWN_DATASETS = ("folder", "csv")  # users' own images, named after their folder
PAPER_BACKBONES = ("resnet50", "resnet18")
BUILT_IN_SETS = {  # generated sets, with the backbones they are sized for
    "birds32": ("mobilenet_v2",),
    "birds32b": ("mobilenet_v2",),
}
OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("step", "cosine", "none")
AMP_MODES = ("none", "bf16", "fp16")
DEFAULT_PRESET = "demo"
DEFAULT_METHOD = "sef"
# Fields that take one of a fixed set of words (see _coerce for words YAML reads as booleans).
CHOICES = {
    "loss.group_variant": GROUP_LOSS_VARIANTS,
    "data.dataset": NAMES,
    "data.recipe": RECIPES,
    "data.bad_images": BAD_IMAGE_POLICIES,
    "optim.optimizer": OPTIMIZERS,
    "optim.scheduler": SCHEDULERS,
    "run.amp": AMP_MODES,
}
NULL_WORDS = ("none", "null")  # what an optional field (X or null) also reads as null
BOOL_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}
# Mappings that are one value of their section, not sections: --set may reach their keys, while
# merges (a config file on its base preset) replace them whole and flatten keeps them whole.
NESTED_KEYS = ("data.options", "model.backbone_args")


@dataclass
class ModelConfig:
    """The network: a backbone name, its initial weights, and the number of channel groups G.

    pool: how token backbones pool for the heads (null: as the model's own head; avg; token);
    backbone_args: keyword arguments of timm.create_model for timm:<model> backbones.
    """

    backbone: str = "resnet50"
    weights: str | None = "IMAGENET1K_V1"
    groups: int = 4
    pool: str | None = None
    backbone_args: dict = field(default_factory=dict)
    output_stride: int | None = None  # 16: a last map twice as large (mobilenet_v2)


@dataclass
class LossConfig:
    """Weights of Eq. 8: lam (max entropy), gamma (distillation), phi (group loss); lam_warmup
    ramps lam up from 0 over that many epochs (0: off, the paper's behaviour)."""

    lam: float = 1.0
    gamma: float = 0.05
    phi: float = 1.0
    group_variant: str = "reference"
    detach_teacher: bool = False
    lam_warmup: float = 0.0


@dataclass
class DataConfig:
    """Which dataset, where, which splits, and how images are prepared."""

    dataset: str = "demo"
    root: str | None = None
    train_split: str = "trainval"
    eval_split: str = "test"
    image_size: int = 448
    recipe: str = "resize_crop"
    workers: int = 4
    bad_images: str = "stop"
    val_fraction: float = 0.1
    options: dict = field(default_factory=dict)


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule (the paper: SGD 0.9, StepLR x0.1 every 20 of 50)."""

    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 32
    epochs: int = 50
    scheduler: str = "step"
    step_size: int = 20
    lr_decay: float = 0.1


@dataclass
class RunConfig:
    """How and where a run executes: seed, device, precision, output folder, logging."""

    seed: int = 0
    device: str = "auto"
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False
    out: str | None = None
    eval_batch_size: int | None = None
    tensorboard: bool = True


@dataclass
class Config:
    """A whole training run. ``name`` is the preset it came from (see ``run_name``)."""

    name: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


# ---------------------------------------------------------------- dict <-> dataclass, with checks


def _type_name(kind: Any) -> str:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(k) for k in typing.get_args(kind))
    return "null" if kind is type(None) else kind.__name__


def _yaml_word(value: Any, where: str) -> str | None:
    """The one word of field ``where`` that YAML reads as ``value`` (True, False or None)."""
    words = [w for w in CHOICES.get(where, ()) if yaml.safe_load(w) is value]
    return words[0] if len(words) == 1 else None


def _coerce(value: Any, kind: Any, where: str) -> Any:
    """``value`` as type ``kind``, else ConfigError. Besides int -> float and '1e-3' -> float:

    - YAML reads an unquoted yes/no/on/off as a boolean: a string field with a fixed set of words
      (``CHOICES``) takes its word that YAML read that way (``bad_images: off`` is "off");
    - an optional field (X or null) reads the words none and null, in any case, as null;
    - a bool field reads the words true/yes/on and false/no/off, in any case.
    """
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if type(None) in options and (
            value is None or (isinstance(value, str) and value.strip().lower() in NULL_WORDS)
        ):
            return None
        return _coerce(value, next(k for k in options if k is not type(None)), where)
    if kind is str and (value is None or isinstance(value, bool)):
        value = _yaml_word(value, where) or value
    if kind is bool and isinstance(value, str):
        value = BOOL_WORDS.get(value.strip().lower(), value)
    if kind is float and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        dict: isinstance(value, dict),
    }[kind]
    if not ok and kind is str and (value is None or isinstance(value, bool)):
        raise ConfigError(
            f"config value {where} must be {_type_name(kind)}, got {value!r}: YAML reads an "
            f"unquoted yes, no, on, off, true, false or null that way; quote the word, in the YAML "
            f"file or as --set \"{where}='WORD'\""
        )
    if not ok:
        raise ConfigError(
            f"config value {where} must be {_type_name(kind)}, got {value!r}; fix it in the YAML "
            f"file or pass --set {where}=VALUE"
        )
    return float(value) if kind is float else value


def _unknown_key(key: str, known: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    place = f"in section {where!r}" if where else "at the top level"
    return ConfigError(f"unknown config key {key!r} {place}; {hint}valid keys: {', '.join(known)}")


def _build(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"config section {where or 'root'} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            raise _unknown_key(str(key), names, where)
        path = f"{where}.{key}" if where else key
        if dataclasses.is_dataclass(hints[key]):
            kwargs[key] = _build(hints[key], value, path)
        else:
            kwargs[key] = _coerce(value, hints[key], path)
    return cls(**kwargs)


def config_from_dict(values: dict) -> Config:
    """A checked :class:`Config` from nested plain values; missing keys take their defaults."""
    config = _build(Config, values, "")
    validate(config)
    return config


def config_to_dict(config: Config) -> dict:
    """Nested plain values (YAML- and checkpoint-safe)."""
    return dataclasses.asdict(config)


def _is_section(path: str, value: Any) -> bool:
    """Whether the value at dotted ``path`` is a section of keys (not a NESTED_KEYS mapping)."""
    return isinstance(value, dict) and path not in NESTED_KEYS


def flatten(values: dict, prefix: str = "") -> dict[str, Any]:
    """``{"section.key": value}`` from nested config values (a NESTED_KEYS mapping is a value)."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if _is_section(path, value):
            flat |= flatten(value, f"{path}.")
        else:
            flat[path] = value
    return flat


def _deep_merge(base: dict, update: dict, prefix: str = "") -> dict:
    merged = dict(base)
    for key, value in update.items():
        path = f"{prefix}{key}"
        if _is_section(path, value) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value, f"{path}.")
        else:
            merged[key] = value
    return merged


# ---------------------------------------------------------------------------------- validation


def _require(condition: bool, key: str, value: Any, rule: str) -> None:
    if not condition:
        raise ConfigError(f"config value {key}={value!r} is invalid: it must be {rule}")


def _one_of(key: str, value: Any, options: tuple) -> None:
    _require(value in options, key, value, f"one of {', '.join(map(str, options))}")


def validate(config: Config) -> None:
    """Raise ConfigError naming the first value that cannot work (types are already checked)."""
    m, loss, d, o, r = config.model, config.loss, config.data, config.optim, config.run
    _require(m.groups >= 1, "model.groups", m.groups, "a positive integer")
    if m.pool is not None:
        _one_of("model.pool", m.pool, POOLS)
    for key in ("lam", "gamma", "phi", "lam_warmup"):
        value = getattr(loss, key)
        _require(math.isfinite(value) and value >= 0, f"loss.{key}", value, "a number >= 0")
    for key, words in CHOICES.items():
        section, name = key.split(".")
        _one_of(key, getattr(getattr(config, section), name), words)
    _require(d.image_size >= 16, "data.image_size", d.image_size, "an integer >= 16")
    _require(d.workers >= 0, "data.workers", d.workers, "an integer >= 0")
    _require(0 < d.val_fraction < 1, "data.val_fraction", d.val_fraction, "between 0 and 1")
    _require(math.isfinite(o.lr) and o.lr > 0, "optim.lr", o.lr, "a number > 0")
    _require(0 <= o.momentum < 1, "optim.momentum", o.momentum, "in [0, 1)")
    _require(o.weight_decay >= 0, "optim.weight_decay", o.weight_decay, "a number >= 0")
    _require(o.batch_size >= 1, "optim.batch_size", o.batch_size, "a positive integer")
    _require(o.epochs >= 1, "optim.epochs", o.epochs, "a positive integer")
    _require(o.step_size >= 1, "optim.step_size", o.step_size, "a positive integer")
    _require(0 < o.lr_decay <= 1, "optim.lr_decay", o.lr_decay, "in (0, 1]")
    _require(
        r.device in ("auto", "cpu", "cuda") or r.device.startswith("cuda:"),
        "run.device",
        r.device,
        "auto, cpu, cuda or cuda:N",
    )
    if r.eval_batch_size is not None:
        _require(r.eval_batch_size >= 1, "run.eval_batch_size", r.eval_batch_size, "positive")


# -------------------------------------------------------------------------------------- presets


def _preset_file(stem: str) -> dict:
    """A fragment's values; one that names a ``base`` fragment is merged onto it."""
    text = resources.files("sef").joinpath("presets", f"{stem}.yaml").read_text(encoding="utf-8")
    values = yaml.safe_load(text) or {}
    base = values.pop("base", None)
    return values if base is None else _deep_merge(_preset_file(base), values)


def _methods() -> list[str]:
    """Method fragment names other than the implicit default, SEF itself."""
    folder = resources.files("sef").joinpath("presets")
    stems = (Path(item.name).stem for item in folder.iterdir() if item.name.endswith(".yaml"))
    methods = (s[len("method-") :] for s in stems if s.startswith("method-"))
    return sorted(m for m in methods if m != DEFAULT_METHOD)


def preset_names() -> list[str]:
    """Every preset name: the demo, then dataset x backbone x method for the paper's datasets and
    for own data (folder, csv)."""
    methods = ["", *(f"-{m}" for m in _methods())]
    names = [f"{DEFAULT_PRESET}{m}" for m in methods]
    sets = {
        **{d: PAPER_BACKBONES for d in (*PAPER_DATASETS, *OWN_DATASETS)},
        **BUILT_IN_SETS,
    }
    for dataset, backbones in sets.items():
        for backbone in backbones:
            names += [f"{dataset}-{backbone}{m}" for m in methods]
    return names


def _parts(name: str) -> tuple[list[str], dict]:
    """The fragment files a preset merges, and the values its name itself sets."""
    if name not in preset_names():
        close = difflib.get_close_matches(name, preset_names(), n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError(f"unknown preset {name!r}; {hint}run `sef presets` to list them all")
    dataset, _, rest = name.partition("-")
    if dataset == DEFAULT_PRESET:
        return ["demo", f"method-{rest or DEFAULT_METHOD}"], {}
    backbone, _, method = rest.partition("-")
    data = ["own", dataset] if dataset in OWN_DATASETS else [dataset]
    return ["paper", *data, f"method-{method or DEFAULT_METHOD}"], {"model": {"backbone": backbone}}


def _merge_fragments(files: list[str], extra: dict) -> tuple[dict, list[str]]:
    """Deep-merge the fragments in order, then ``extra``; also return their titles."""
    values: dict = {}
    titles = []
    for stem in files:
        fragment = _preset_file(stem)
        if "title" in fragment:
            titles.append(fragment.pop("title"))
        values = _deep_merge(values, fragment)
    return _deep_merge(values, extra), titles


def load_preset(name: str) -> Config:
    """The config of a named preset (see ``preset_names()``)."""
    files, extra = _parts(name)
    values, _ = _merge_fragments(files, extra)
    return config_from_dict({**values, "name": name})


def describe_preset(name: str) -> str:
    """One line: what the preset trains and with which key hyper-parameters."""
    files, extra = _parts(name)
    values, titles = _merge_fragments(files, extra)
    c = config_from_dict({**values, "name": name})
    what = ", ".join(titles)
    weights = "ImageNet" if c.model.weights else "scratch"
    loss = f"{c.loss.lam:g}/{c.loss.gamma:g}/{c.loss.phi:g}"
    return (
        f"{what}: {c.model.backbone} ({weights}), G={c.model.groups}, lam/gamma/phi={loss}, "
        f"lr {c.optim.lr:g}, {c.optim.epochs} epochs, {c.data.image_size}px"
    )


def run_name(config: Config) -> str:
    """What a run is called (its default folder is runs/<name>): the preset's name, with its
    data part naming the data actually read: own data by its folder (a CSV file's folder), so
    ``folder-resnet50`` on ~/data/birds is ``birds-resnet50`` and the demo preset on a folder
    is ``birds``. A name that does not start with a dataset (a config file's own) stays."""
    first, dash, rest = config.name.partition("-")
    if first not in (DEFAULT_PRESET, *PAPER_DATASETS, *OWN_DATASETS):
        return config.name
    data, root = config.data.dataset, config.data.root
    if data in OWN_DATASETS and root:
        folder = Path(os.path.abspath(Path(root).expanduser()))
        data = (folder.parent if folder.suffix.lower() == ".csv" else folder).name or data
    return f"{data}{dash}{rest}"


# ----------------------------------------------------------------------- files and overrides


def _yaml_problem(error: yaml.YAMLError) -> str:
    """Where and what a YAML error is, on one line: "line 3, column 7: mapping values are not
    allowed here"."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).split("\n")[0]
    if mark is None:
        return problem
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def load_config_file(path: str | Path) -> Config:
    """A config from a YAML file; ``base: PRESET`` starts it from that preset."""
    path = Path(path)
    try:
        text = filekinds.read_text(path)
    except ValueError as problem:
        raise ConfigError(f"config file {path} {problem}; pass a YAML file") from None
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(error)}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, not {values!r}")
    base = values.pop("base", None)
    if base is not None:
        start = config_to_dict(load_preset(str(base)))
        values = _deep_merge(start, {"name": str(base), **values})
    return config_from_dict(values)


def apply_values(config: Config, values: dict[str, Any]) -> Config:
    """A new config with ``{"section.key": value}`` replaced (checked like a YAML file)."""
    tree = config_to_dict(config)
    for key, value in values.items():
        path = key.split(".")
        if len(path) < 2 or not all(path):
            raise ConfigError(f"config key {key!r} must look like section.key")
        if len(path) > 2 and ".".join(path[:2]) not in NESTED_KEYS:
            raise ConfigError(
                f"config key {key!r} is too deep; only {' and '.join(NESTED_KEYS)} nest"
            )
        section = tree.get(path[0])
        if not isinstance(section, dict):
            raise _unknown_key(path[0], [k for k, v in tree.items() if isinstance(v, dict)], "")
        if len(path) == 2 and path[1] not in section:
            raise _unknown_key(path[1], list(section), path[0])
        if len(path) == 3:
            section = section[path[1]]
        section[path[-1]] = value
    return config_from_dict(tree)


def parse_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``{"section.key": value}`` from ``section.key=value`` texts (values parsed as YAML)."""
    values = {}
    for text in overrides:
        key, sep, raw = text.partition("=")
        if not sep:
            raise ConfigError(f"override {text!r} must look like section.key=value")
        try:
            values[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            values[key.strip()] = raw
    return values


def apply_overrides(config: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """A new config with ``section.key=value`` overrides applied (values parsed as YAML)."""
    return apply_values(config, parse_overrides(overrides))


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (readable, and loadable by ``load_config_file``)."""
    write_text(path, yaml.safe_dump(config_to_dict(config), sort_keys=False))


def resolve_config(
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> Config:
    """Preset (default ``demo``) or YAML file, then overrides: the config a run will use."""
    if preset is not None and config_file is not None:
        raise ConfigError("pass either a preset or a config file, not both")
    if config_file is not None:
        config = load_config_file(config_file)
    else:
        config = load_preset(preset or DEFAULT_PRESET)
    return apply_overrides(config, overrides)
