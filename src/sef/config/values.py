"""Plain values <-> a checked :class:`~sef.config.schema.Config`: the types and words YAML gives,
``section.key=value`` overrides, flattening, merging and comparing configs.

Every value is checked against its field's type (with the words YAML reads as booleans or null,
see ``_coerce``) and the whole config against ``schema.validate``, so a typo or a wrong value
fails in one line that names the key and what to do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import types
import typing
from typing import Any

import yaml

from sef.config.schema import (
    CHOICES,
    FLAG_KEYS,
    LIST_CHOICES,
    NESTED_KEYS,
    OPEN_CHOICES,
    Config,
    check_word_list,
    validate,
)
from sef.datasets import names_of
from sef.errors import ConfigError, for_reader, to_command

NULL_WORDS = ("none", "null")  # what an optional field (X or null) also reads as null
BOOL_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


class DuplicateKey(yaml.constructor.ConstructorError):
    """A key given twice in one YAML mapping."""


class _UniqueKeys:
    """A YAML loader's mixin refusing a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # << merges: later keys may override
                continue
            key = self.construct_object(key_node, deep=deep)
            with contextlib.suppress(TypeError):  # an unhashable key: the base class says so
                if key in first:
                    raise DuplicateKey(
                        "while constructing a mapping",
                        node.start_mark,
                        f"duplicate key {key!r} (first on line {first[key].line + 1})",
                        key_node.start_mark,
                    )
                first[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


class UniqueKeyLoader(_UniqueKeys, yaml.SafeLoader):
    """YAML's safe loader in pure Python, with unique keys: its errors' words are sef's."""


# libyaml's parser where PyYAML has one: faster than PyYAML's own, which every `sef train` and
# `sef presets` spent reading the preset fragments and the config file
if hasattr(yaml, "CSafeLoader"):

    class FastUniqueKeyLoader(_UniqueKeys, yaml.CSafeLoader):
        """YAML's safe loader on libyaml's parser, with unique keys."""

else:  # PyYAML built without libyaml
    FastUniqueKeyLoader = UniqueKeyLoader


def load_yaml(text: str) -> Any:
    """The values of a YAML text, as ``yaml.safe_load`` reads them but with unique keys. Read
    by libyaml where PyYAML has it; a text it refuses, or cannot encode (a --set value with a
    folder name's bytes that are not UTF-8, held as surrogates), is read again by PyYAML's own
    parser, whose error (its words and marks, unlike libyaml's) is the one raised."""
    try:
        return yaml.load(text, Loader=FastUniqueKeyLoader)
    except (yaml.YAMLError, UnicodeEncodeError):
        return yaml.load(text, Loader=UniqueKeyLoader)


def _type_name(kind: Any) -> str:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(k) for k in typing.get_args(kind))
    return "null" if kind is type(None) else kind.__name__


def _words(where: str) -> tuple[str, ...]:
    """The words field ``where`` (or each item of it, for a list) takes, if it has a fixed set."""
    return CHOICES.get(where) or LIST_CHOICES.get(where, ())


def _yaml_word(value: Any, where: str) -> str | None:
    """The one word of field ``where`` that YAML reads as ``value`` (True, False or None); else,
    for false or null, the word none where the field has it (``amp: off`` is none)."""
    choices = _words(where) or OPEN_CHOICES.get(where, ())
    words = [w for w in choices if yaml.safe_load(w) is value]
    if not words and value in (False, None) and "none" in choices:
        return "none"
    return words[0] if len(words) == 1 else None


def _coerce(value: Any, kind: Any, where: str) -> Any:
    """``value`` as type ``kind``, else ConfigError. Besides int -> float and '1e-3' -> float:

    - YAML reads an unquoted yes/no/on/off as a boolean: a string field with a fixed set of words
      (``CHOICES``, ``OPEN_CHOICES``) takes its word that YAML read that way (``bad_images: off``
      is "off"), else false or null is its word none if it has one (``amp: off`` is "none");
    - an optional field (X or null) reads the words none and null, in any case, as null;
    - a bool field reads the words true/yes/on and false/no/off, in any case;
    - a list field reads one value as a list of it (``--set run.loggers=wandb``), and one whose
      words include none reads false, null and [] as [none] (``loggers: off``).
    """
    if typing.get_origin(kind) is list:
        items = [_coerce(item, typing.get_args(kind)[0], where) for item in _as_list(value, where)]
        if where in LIST_CHOICES:  # checked here, where the value as written is known
            check_word_list(where, items, value)
        return items
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
    boolean_or_null = value is None or isinstance(value, bool)
    if not ok and boolean_or_null and _words(where):  # none of the field's words to quote
        raise ConfigError(
            f"config value {where} must be one of {', '.join(_words(where))}, got {value!r} "
            f"(YAML reads an unquoted yes, no, on, off, true, false or null that way); fix it "
            + _fixed_in(where, f"pass {_override(f'{where}=VALUE')}")
        )
    if not ok and boolean_or_null and kind is str:
        quoted = f"\"{where}='WORD'\""
        raise ConfigError(
            f"config value {where} must be {_type_name(kind)}, got {value!r}: YAML reads an "
            f"unquoted yes, no, on, off, true, false or null that way; quote the word, "
            + _fixed_in(where, f"as {_override(quoted)}")
        )
    if not ok:
        raise ConfigError(
            f"config value {where} must be {_type_name(kind)}, got {value!r}; fix it "
            + _fixed_in(where, f"pass {_override(f'{where}=VALUE')}")
        )
    return float(value) if kind is float else value


def _as_list(value: Any, where: str) -> list:
    """``value`` as the list field ``where`` reads it: one word is a list of it; false, null or
    [] is [none] where the field's words include none; else ConfigError naming its words."""
    words = _words(where)
    if "none" in words and (value is None or value is False or value == []):
        return ["none"]
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        return [value]
    rule = f"one of {', '.join(words)}, or a list of them" if words else "a list"
    raise ConfigError(
        f"config value {where} must be {rule}, got {value!r}; fix it "
        + _fixed_in(where, f"pass {_override(f'{where}=[A,B]')}")
    )


def _fixed_in(where: str, override: str) -> str:
    """Where a bad value is fixed: the YAML file, or ``override`` for a section's key (the
    top-level ``name`` has no --set)."""
    return f"in the YAML file or {override}" if "." in where else "in the YAML file"


def _override(text: str) -> str:
    """The override ``text`` (``KEY=VALUE``) as its reader gives it: the `sef` command's user
    with --set, Python code in the overrides it passes (resolve_config's, apply_overrides')."""
    return for_reader(f"--set {text}", f"{text} in the overrides")


def _section_of(key: str) -> str | None:
    """The section that has a key ``key``, if one has."""
    sections = typing.get_type_hints(Config).items()
    having = (name for name, kind in sections
              if dataclasses.is_dataclass(kind) and key in typing.get_type_hints(kind))  # fmt: skip
    return next(having, None)


def _unknown_key(key: str, known: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    section = _section_of(key)
    hint = f"did you mean {close[0]!r}? " if close else ""
    hint = f"it is a key of section {section!r} ({section}.{key}); " if section else hint
    place = f"in section {where!r}" if where else "at the top level"
    return ConfigError(f"unknown config key {key!r} {place}; {hint}valid keys: {', '.join(known)}")


def _build(cls: type, values: Any, where: str) -> Any:
    values = {} if values is None and where else values  # a section whose keys are all commented
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


def stored_values(values: dict) -> dict:
    """``values`` of a stored config (a checkpoint's, a run's config.yaml) with what a key added
    since meant when it was saved, where that is not the key's default: an own-data run saved
    before ``data.holdout`` existed held out by rank, and evaluates and resumes so (a config a
    user writes takes the default, stable; the other datasets ignore the key)."""
    data = values.get("data")
    if isinstance(data, dict) and data.get("dataset") in names_of("own") and "holdout" not in data:
        return {**values, "data": {**data, "holdout": "ranked"}}
    return values


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


def config_changes(
    saved: dict, config: Config, allowed: tuple[str, ...] = ()
) -> list[tuple[str, Any, Any]]:
    """``(section.key, saved value, value in config)`` for every key where ``config`` differs from
    ``saved`` (a config as a checkpoint holds it), sorted by key, leaving out the ``allowed`` keys.
    ``saved`` is read through today's schema first: keys added since it was saved take what they
    meant then (:func:`stored_values`), else their defaults, so an old run compares equal to a
    new one that does not set them."""
    before = flatten(config_to_dict(config_from_dict(stored_values(saved))))
    now = flatten(config_to_dict(config))
    return [
        (key, before.get(key), now.get(key))
        for key in sorted(set(now) | set(before))
        if key not in allowed and now.get(key) != before.get(key)
    ]


def deep_merge(base: dict, update: dict, prefix: str = "") -> dict:
    """``base`` with ``update``'s values, section by section (a NESTED_KEYS mapping is replaced
    whole): how a config file lands on its base preset, and preset fragments on each other."""
    merged = dict(base)
    for key, value in update.items():
        path = f"{prefix}{key}"
        if value is None and _is_section(path, merged.get(key)):
            continue  # a section left empty (its keys commented out) changes nothing
        if _is_section(path, value) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value, f"{path}.")
        else:
            merged[key] = value
    return merged


def _full_key(key: str) -> str:
    """How a key given without its section is spelled: a section's keys one by one, or the
    section a key is in; else nothing."""
    if dataclasses.is_dataclass(typing.get_type_hints(Config).get(key)):
        return f"; set the keys of section {key} one by one: {key}.KEY=VALUE"
    section = _section_of(key)
    return f" ({section}.{key})" if section else ""


def apply_values(config: Config, values: dict[str, Any]) -> Config:
    """A new config with ``{"section.key": value}`` replaced (checked like a YAML file)."""
    tree = config_to_dict(config)
    for key, value in values.items():
        path = key.split(".")
        if len(path) < 2 or not all(path):
            raise ConfigError(f"config key {key!r} must look like section.key{_full_key(key)}")
        if len(path) > 2 and ".".join(path[:2]) not in NESTED_KEYS:
            raise ConfigError(
                f"config key {key!r} is too deep; only {' and '.join(NESTED_KEYS)} nest"
            )
        if len(path) > 3:
            nested = ".".join(path[:3])
            raise ConfigError(
                f"config key {key!r} is too deep; give {nested} a mapping: "
                + _override(f"{nested}={{{path[3]}: ...}}")
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
    """``{"section.key": value}`` from ``section.key=value`` texts (values parsed as YAML); one
    text alone is taken as a list of one."""
    overrides = [overrides] if isinstance(overrides, str) else overrides
    values = {}
    for text in overrides:
        key, sep, raw = text.partition("=")
        if not sep:
            raise ConfigError(f"override {text!r} must look like section.key=value")
        try:
            values[key.strip()] = load_yaml(raw) if raw.strip() else None
        except DuplicateKey as error:  # YAML all right, but a key twice: not a plain string
            raise ConfigError(f"override {text!r}: {error.problem}") from None
        except yaml.YAMLError:
            values[key.strip()] = raw
    return values


def value_word(value: Any) -> str:
    """``value`` as the VALUE of a KEY=VALUE word that reads it back: a string as it is, anything
    else as JSON (which YAML reads)."""
    return value if isinstance(value, str) else json.dumps(value)


def setting_said(key: str, value: Any = None) -> str:
    """Config ``key`` (set to ``value``) as advice names it to its reader: to the `sef` command's
    user its option (``--accumulate 2``, ``--set run.eval_batch_size=8``), to Python code the key
    (``optim.accumulate=2``); without ``value``, the option or the key alone."""
    flag = {key: f"--{name.replace('_', '-')}" for name, key in FLAG_KEYS.items()}.get(key)
    if value is None:
        return flag if flag and to_command() else key
    if not to_command():
        return f"{key}={value_word(value)}"
    return f"{flag} {value_word(value)}" if flag else f"--set {key}={value_word(value)}"


def apply_overrides(config: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """A new config with ``section.key=value`` overrides applied (values parsed as YAML)."""
    return apply_values(config, parse_overrides(overrides))
