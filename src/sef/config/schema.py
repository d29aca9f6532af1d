"""The config's sections as dataclasses, the words their fields accept, and the rules a whole
config must meet (``validate``): what a config is, apart from where its values come from.

The ``loss`` section is :class:`sef.loss_config.LossConfig`, which the loss itself reads too.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

import yaml

from sef.choices import (
    BAD_IMAGE_POLICIES,
    CACHE_MODES,
    DEVICE_WORDS,
    HOLDOUTS,
    LOGGERS,
    MAX_SEED,
    POOLS,
    RECIPES,
    is_device,
)
from sef.datasets import NAMES, RUN_SETTINGS
from sef.errors import ConfigError
from sef.loss_config import LossConfig

OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("step", "cosine", "none")
AMP_MODES = ("none", "bf16", "fp16")
# Fields that take one of a fixed set of words (see values._coerce for words YAML reads as
# booleans).
CHOICES = {
    "data.dataset": NAMES,
    "data.recipe": RECIPES,
    "data.bad_images": BAD_IMAGE_POLICIES,
    "data.holdout": HOLDOUTS,
    "optim.optimizer": OPTIMIZERS,
    "optim.scheduler": SCHEDULERS,
    "run.amp": AMP_MODES,
}
# Text fields that take one of these words or any other text (a folder): see values._yaml_word.
OPEN_CHOICES = {"data.cache": CACHE_MODES}
# List fields whose items are these words; false, null or an empty list is [none] (values._as_list).
LIST_CHOICES = {"run.loggers": LOGGERS}
# `sef train`'s options (argparse's names) -> the config keys they set; unset, the preset's
# value stands (any other key: --set KEY=VALUE)
FLAG_KEYS = {
    "data_root": "data.root",
    "out": "run.out",
    "epochs": "optim.epochs",
    "batch_size": "optim.batch_size",
    "accumulate": "optim.accumulate",
    "lr": "optim.lr",
    "image_size": "data.image_size",
    "workers": "data.workers",
    "backbone": "model.backbone",
    "weights": "model.weights",
    "groups": "model.groups",
    "seed": "run.seed",
    "amp": "run.amp",
    "device": "run.device",
    "cache": "data.cache",
    "log": "run.loggers",
}
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
    # own data without declared splits: held out image by image (stable), or by rank in each
    # class (ranked: runs saved before this key, see values.stored_values); sef.datasets.splits
    holdout: str = "stable"
    options: dict = field(default_factory=dict)
    cache: str = "off"  # off, auto or a folder: a decoded-image cache (sef.datasets.cache)


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule (the paper: SGD 0.9, StepLR x0.1 every 20 of 50)."""

    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9  # SGD's; AdamW keeps its default betas
    weight_decay: float = 0.0
    batch_size: int = 32  # the global batch of one optimizer step
    accumulate: int = 1  # the micro-batches each step sums gradients over (batch_size in parts)
    epochs: int = 50
    scheduler: str = "step"
    step_size: int = 20
    lr_decay: float = 0.1

    def process_batch(self, processes: int = 1) -> int:
        """The images each process takes in one optimizer step: the batch split over the
        processes."""
        return split_batch(self.batch_size, processes)

    def micro_batch(self, processes: int = 1) -> int:
        """The images each process takes in one forward pass: the batch split over the
        processes and the micro-batches of a step."""
        return split_batch(self.batch_size, processes, self.accumulate)


def split_batch(batch_size: int, processes: int = 1, accumulate: int = 1) -> int:
    """The images of one forward pass in each process: a global batch split over the processes
    and the ``accumulate`` micro-batches of a step (``validate`` and the launch check that they
    divide it). The one spelling of that split, for callers that hold no OptimConfig."""
    return batch_size // processes // accumulate


@dataclass
class RunConfig:
    """How and where a run executes: seed, device, precision, output folder, logging.

    loggers: where the epochs are logged besides metrics.jsonl (sef.choices.LOGGERS; none, false
    or []: only there); tensorboard: false turns TensorBoard off whatever loggers names (older
    configs' switch).
    """

    seed: int = 0
    device: str = "auto"
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False
    out: str | None = None
    eval_batch_size: int | None = None
    tensorboard: bool = True
    loggers: list[str] = field(default_factory=lambda: ["tensorboard"])


# libyaml's emitter where PyYAML has one: a config's YAML in about a fifth of PyYAML's own time
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def dump_yaml(values: dict) -> str:
    """``values`` as ``yaml.safe_dump`` writes them, keys in order: by libyaml, else (for text it
    cannot encode, a folder name's bytes that are not UTF-8, held as surrogates) by PyYAML's own
    emitter, which writes such a character as an escape."""
    try:
        return yaml.dump(values, Dumper=_DUMPER, sort_keys=False)
    except UnicodeEncodeError:
        return yaml.safe_dump(values, sort_keys=False)


@dataclass
class Config:
    """A whole training run. ``name`` is the preset it came from (see ``run_name``)."""

    name: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_yaml(self) -> str:
        """The config as YAML: what a run's config.yaml holds and `sef presets NAME` prints."""
        return dump_yaml(asdict(self))

    def __str__(self) -> str:
        """The YAML, for print(config); repr stays the dataclass's, all on one line."""
        return self.to_yaml().rstrip("\n")

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython's and Jupyter's display of a config: the YAML, one key a line, where the
        dataclass's repr was one line of some 1,000 characters."""
        printer.text(str(self))


# The sections of a config, each a dataclass: what every config sef stores (a checkpoint's, a
# run's config.yaml) holds, since the first sef.
SECTIONS = tuple(f.name for f in fields(Config) if is_dataclass(f.default_factory))


def _invalid(key: str, value: Any, rule: str) -> ConfigError:
    return ConfigError(f"config value {key}={value!r} is invalid: it must be {rule}")


def _require(condition: bool, key: str, value: Any, rule: str) -> None:
    if not condition:
        raise _invalid(key, value, rule)


def _one_of(key: str, value: Any, options: tuple) -> None:
    _require(value in options, key, value, f"one of {', '.join(map(str, options))}")


def check_word_list(key: str, items: list[str], written: Any) -> None:
    """ConfigError unless the words ``items`` of list field ``key`` (LIST_CHOICES) are known,
    each once, and none alone; the message quotes ``written``, the value as the user gave it
    (``[wandb, off]`` is read as ['wandb', False], which the field takes as [wandb, none])."""
    words = LIST_CHOICES[key]
    for item in items:
        _one_of(key, item, words)
    if len(set(items)) == len(items) and ("none" not in items or len(items) == 1):
        return
    rule = f"none alone, or some of {', '.join(w for w in words if w != 'none')}, each once"
    if isinstance(written, list) and any(item is None or item is False for item in written):
        rule += " (an unquoted off, no, false or null in it means none)"
    raise _invalid(key, written, rule)


def validate(config: Config) -> None:
    """Raise ConfigError naming the first value that cannot work (types are already checked)."""
    m, loss, d, o, r = config.model, config.loss, config.data, config.optim, config.run
    _require(m.groups >= 1, "model.groups", m.groups, "a positive integer")
    if m.pool is not None:
        _one_of("model.pool", m.pool, POOLS)
    problem = loss.invalid()  # the loss's own rules (sef.loss_config), as SEFLoss checks them
    if problem is not None:
        name, value, rule = problem
        raise _invalid(f"loss.{name}", value, rule)
    for key, words in CHOICES.items():
        section, name = key.split(".")
        _one_of(key, getattr(getattr(config, section), name), words)
    _require(d.image_size >= 16, "data.image_size", d.image_size, "an integer >= 16")
    _require(d.workers >= 0, "data.workers", d.workers, "an integer >= 0")
    _require(0 < d.val_fraction < 1, "data.val_fraction", d.val_fraction, "between 0 and 1")
    settings = sorted(set(d.options) & set(RUN_SETTINGS))  # read_split passes them itself
    if settings:
        key = settings[0]
        rule = f"set as {RUN_SETTINGS[key]}, not as a reader option"
        raise _invalid(f"data.options.{key}", d.options[key], rule)
    _require(bool(d.cache.strip()), "data.cache", d.cache, "off, auto or a folder")
    _require(math.isfinite(o.lr) and o.lr > 0, "optim.lr", o.lr, "a number > 0")
    _require(0 <= o.momentum < 1, "optim.momentum", o.momentum, "in [0, 1)")
    decay = o.weight_decay
    _require(math.isfinite(decay) and decay >= 0, "optim.weight_decay", decay, "a number >= 0")
    _require(o.batch_size >= 1, "optim.batch_size", o.batch_size, "a positive integer")
    _require(o.accumulate >= 1, "optim.accumulate", o.accumulate, "a positive integer")
    _require(
        o.batch_size % o.accumulate == 0,
        "optim.accumulate",
        o.accumulate,
        f"a divisor of optim.batch_size={o.batch_size}, which each step takes in that many "
        f"equal micro-batches",
    )
    _require(o.epochs >= 1, "optim.epochs", o.epochs, "a positive integer")
    _require(o.step_size >= 1, "optim.step_size", o.step_size, "a positive integer")
    _require(0 < o.lr_decay <= 1, "optim.lr_decay", o.lr_decay, "in (0, 1]")
    _require(0 <= r.seed <= MAX_SEED, "run.seed", r.seed, f"an integer from 0 to {MAX_SEED}")
    _require(is_device(r.device), "run.device", r.device, DEVICE_WORDS)
    if r.eval_batch_size is not None:
        _require(r.eval_batch_size >= 1, "run.eval_batch_size", r.eval_batch_size, "positive")
    for key in LIST_CHOICES:
        section, name = key.split(".")
        items = getattr(getattr(config, section), name)
        check_word_list(key, items, items)
