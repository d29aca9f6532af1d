"""Training configuration: nested dataclasses that round-trip through YAML.

A config comes from a named preset (YAML shipped in ``sef/presets``), a user's YAML file (which
may name a preset as its ``base``), and ``section.key=value`` overrides, in that order. Every key
and type is checked, so a typo or a wrong value fails in one line before any work starts.

- :mod:`~sef.config.schema`: the sections, the words their fields take, ``validate``
- :mod:`~sef.config.values`: plain values and overrides <-> a checked Config; flatten, compare
- :mod:`~sef.config.presets`: presets, config files, ``resolve_config``, run names

Torch-free, like everything ``sef --help`` and ``sef presets`` load.
"""

from sef.config.presets import (
    DEFAULT_METHOD,
    DEFAULT_PRESET,
    dataset_preset,
    describe_preset,
    load_config_file,
    load_preset,
    preset_name,
    preset_names,
    resolve_config,
    run_name,
    save_config,
    uses_method,
)
from sef.config.schema import (
    AMP_MODES,
    CHOICES,
    FLAG_KEYS,
    NESTED_KEYS,
    OPEN_CHOICES,
    OPTIMIZERS,
    SCHEDULERS,
    SECTIONS,
    Config,
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    validate,
)
from sef.config.values import (
    apply_overrides,
    apply_values,
    config_changes,
    config_from_dict,
    config_to_dict,
    flatten,
    parse_overrides,
    setting_said,
    stored_values,
)
from sef.errors import ConfigError

__all__ = [
    "AMP_MODES",
    "CHOICES",
    "DEFAULT_METHOD",
    "DEFAULT_PRESET",
    "FLAG_KEYS",
    "NESTED_KEYS",
    "OPEN_CHOICES",
    "OPTIMIZERS",
    "SCHEDULERS",
    "SECTIONS",
    "Config",
    "ConfigError",
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "apply_overrides",
    "apply_values",
    "config_changes",
    "config_from_dict",
    "config_to_dict",
    "dataset_preset",
    "describe_preset",
    "flatten",
    "load_config_file",
    "load_preset",
    "parse_overrides",
    "preset_name",
    "preset_names",
    "resolve_config",
    "run_name",
    "save_config",
    "setting_said",
    "stored_values",
    "uses_method",
    "validate",
]
