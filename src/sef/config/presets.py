"""Where a config comes from: a named preset, a YAML file (which may start from one), then
overrides (``resolve_config``); and what a run of it is called (``run_name``).

Preset names are composed, so the 4 datasets x 2 backbones x 6 methods of the paper need no
copy-pasted files: ``<dataset>-<backbone>[-<method>]`` (e.g. ``cub-resnet50``,
``dogs-resnet18-plain``) merges ``paper.yaml``, ``<dataset>.yaml`` and ``method-<method>.yaml``;
own data, ``folder-<backbone>[-<method>]`` and ``csv-...``, also merge ``own.yaml``;
``demo[-<method>]`` merges ``demo.yaml`` and the method; a generated set with presets (its
record's backbones, ``sef.datasets.RECORDS``), e.g. ``birds32-mobilenet_v2[-<method>]``, merges
paper.yaml, then its own fragment, then the method. Last, ``<dataset>-<method>.yaml`` where
there is one: what a method changes on one dataset (birds32's longer schedule for ``finetune``).
"""

from __future__ import annotations

import copy
import difflib
import functools
import os
import re
from importlib import resources
from pathlib import Path

import yaml

from sef import filekinds
from sef.config.schema import Config
from sef.config.values import (
    apply_overrides,
    config_from_dict,
    config_to_dict,
    deep_merge,
    load_yaml,
    setting_said,
    stored_values,
)
from sef.datasets import RECORDS
from sef.errors import ConfigError, for_reader
from sef.loss_config import LossConfig
from sef.outputs import NAME_MAX, fitted, write_text
from sef.text import shown

DEFAULT_PRESET = "demo"
DEFAULT_METHOD = "sef"


def _fragment(stem: str):
    """``presets/<stem>.yaml`` inside the package (it may not exist)."""
    return resources.files("sef").joinpath("presets", f"{stem}.yaml")


@functools.cache
def _fragment_values(stem: str) -> dict:
    """A fragment file's values, read once: `sef presets` merged the same few files into each of
    its 105 presets, reading one 346 times (0.5 s)."""
    return load_yaml(_fragment(stem).read_text(encoding="utf-8")) or {}


def _preset_file(stem: str) -> dict:
    """A fragment's values (a copy, for the caller to change); one that names a ``base``
    fragment is merged onto it."""
    values = copy.deepcopy(_fragment_values(stem))
    base = values.pop("base", None)
    return values if base is None else deep_merge(_preset_file(base), values)


def _methods() -> list[str]:
    """Method fragment names other than the implicit default, SEF itself."""
    folder = resources.files("sef").joinpath("presets")
    stems = (Path(item.name).stem for item in folder.iterdir() if item.name.endswith(".yaml"))
    methods = (s[len("method-") :] for s in stems if s.startswith("method-"))
    return sorted(m for m in methods if m != DEFAULT_METHOD)


def preset_name(dataset: str, backbone: str | None = None, method: str = DEFAULT_METHOD) -> str:
    """The preset that trains ``method`` on ``dataset`` with ``backbone``: ``<dataset>-<backbone>``
    then ``-<method>`` unless the method is SEF itself; the demo's have no backbone."""
    parts = [dataset, *([backbone] if backbone else [])]
    return "-".join(parts + ([] if method == DEFAULT_METHOD else [method]))


def _presets() -> dict[str, tuple[str, str | None, str]]:
    """Every preset name -> (dataset, backbone, method): the demo, then each dataset's backbones
    (its record's) x the methods."""
    methods = [DEFAULT_METHOD, *_methods()]
    presets = {preset_name(DEFAULT_PRESET, None, m): (DEFAULT_PRESET, None, m) for m in methods}
    for dataset, record in RECORDS.items():
        for backbone in record.backbones:
            for method in methods:
                presets[preset_name(dataset, backbone, method)] = (dataset, backbone, method)
    return presets


def preset_names() -> list[str]:
    """Every preset name: the demo, then dataset x backbone x method for the paper's datasets,
    own data (folder, csv) and the built-in sets that have presets."""
    return list(_presets())


def _other_backbone(name: str) -> tuple[str, str, str] | None:
    """(dataset, backbone, method) of a name shaped like a preset whose backbone is one that
    other presets name but its dataset's do not (``folder-mobilenet_v2-finetune``), else None."""
    dataset, _, rest = name.partition("-")
    if dataset not in RECORDS or not RECORDS[dataset].backbones:
        return None
    method = next((m for m in _methods() if rest.endswith(f"-{m}")), DEFAULT_METHOD)
    backbone = rest.removesuffix(f"-{method}")
    named = {b for record in RECORDS.values() for b in record.backbones}
    if backbone in named - set(RECORDS[dataset].backbones):
        return dataset, backbone, method
    return None


def _dataset_presets(dataset: str, presets: dict[str, tuple[str, str | None, str]]) -> list[str]:
    """The presets that train SEF itself on ``dataset`` (none where it names no dataset): what
    `--preset cub` meant, since a preset names the backbone too."""
    return [name for name, (d, _, m) in presets.items() if (d, m) == (dataset, DEFAULT_METHOD)]


def _parts(name: str) -> tuple[list[str], dict]:
    """The fragment files a preset merges, and the values its name itself sets."""
    presets = _presets()
    if name not in presets and (other := _other_backbone(name)):
        dataset, backbone, method = other
        known = " or ".join(RECORDS[dataset].backbones)
        preset = preset_name(dataset, RECORDS[dataset].backbones[0], method)
        with_preset = for_reader(f"--preset {preset}", f"the preset {preset} and")
        raise ConfigError(
            f"unknown preset {name!r}: the {dataset} presets name {known}; train {backbone} "
            f"with {with_preset} {setting_said('model.backbone', backbone)}"
        )
    if name not in presets:
        close = _dataset_presets(name.lower(), presets) or difflib.get_close_matches(
            name.lower(), list(presets), n=3
        )  # names: lower case
        hint = f"did you mean {', '.join(close)}? " if close else ""
        listed = for_reader("run `sef presets`", "call sef.config.preset_names()")
        raise ConfigError(f"unknown preset {name!r}; {hint}{listed} to list them all")
    dataset, backbone, method = presets[name]
    if dataset == DEFAULT_PRESET:
        return ["demo", f"method-{method}"], {}
    data = ["own", dataset] if RECORDS[dataset].kind == "own" else [dataset]
    specific = f"{dataset}-{method}"  # what a method changes on this dataset, if anything
    optional = [specific] if _fragment(specific).is_file() else []
    return ["paper", *data, f"method-{method}", *optional], {"model": {"backbone": backbone}}


def _merge_fragments(files: list[str], extra: dict) -> tuple[dict, list[str]]:
    """Deep-merge the fragments in order, then ``extra``; also return their titles."""
    values: dict = {}
    titles = []
    for stem in files:
        fragment = _preset_file(stem)
        if "title" in fragment:
            titles.append(fragment.pop("title"))
        values = deep_merge(values, fragment)
    return deep_merge(values, extra), titles


def uses_method(config: Config, method: str) -> bool:
    """Whether ``config``'s loss is ``method``'s: every value its fragment's ``loss`` sets."""
    loss = _preset_file(f"method-{method}").get("loss", {})
    return all(getattr(config.loss, key) == value for key, value in loss.items())


def dataset_preset(dataset: str) -> str:
    """The preset that trains ``dataset`` with its recipe (the first backbone of its presets)."""
    if dataset == DEFAULT_PRESET:
        return DEFAULT_PRESET
    return preset_name(dataset, RECORDS[dataset].backbones[0])


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
    named, defaults = ("group_variant", "norm_floor"), LossConfig()  # said where not default
    unusual = [f"{k}={getattr(c.loss, k)}" for k in named
               if getattr(c.loss, k) != getattr(defaults, k)]  # fmt: skip
    loss += f" ({', '.join(unusual)})" if unusual else ""
    return (
        f"{what}: {c.model.backbone} ({weights}), G={c.model.groups}, lam/gamma/phi={loss}, "
        f"lr {c.optim.lr:g}, {c.optim.epochs} epochs, {c.data.image_size}px"
    )


def _folder_safe(text: str) -> str:
    """``text`` with each run of characters other than letters, digits, ``_``, ``.`` and ``-``
    as one ``-``: ``timm:hf-hub:timm/vit`` is ``timm-hf-hub-timm-vit``."""
    return re.sub(r"[^\w.-]+", "-", text)


def _with_backbone(config: Config) -> str:
    """The preset's name with its backbone part naming the backbone ``config`` trains where that
    is not the preset's: ``cub-resnet50`` on resnet18 is ``cub-resnet18``, ``demo-plain`` on
    resnet18 ``demo-resnet18-plain``. Other names (a config file's own) stay."""
    presets, trained = _presets(), config.model.backbone
    if config.name not in presets or trained == load_preset(config.name).model.backbone:
        return config.name
    dataset, _, method = presets[config.name]
    return preset_name(dataset, _folder_safe(trained), method)


def run_name(config: Config) -> str:
    """What a run is called (its default folder is runs/<name>): the preset's name, naming the
    backbone actually trained (``_with_backbone``), with its data part naming the data actually
    read: own data by its folder (a CSV file's folder), so ``folder-resnet50`` on ~/data/birds
    is ``birds-resnet50`` and the demo preset on a folder is ``birds`` (a folder name's bytes that
    are not UTF-8 become U+FFFD, and one too long for a file name is cut to fit). A name that does
    not start with a dataset (a config file's own) stays."""
    name = _with_backbone(config)
    first, dash, rest = name.partition("-")
    kind = RECORDS[first].kind if first in RECORDS else None
    if first != DEFAULT_PRESET and kind not in ("paper", "own"):
        return name
    data, root = config.data.dataset, config.data.root
    if data in RECORDS and RECORDS[data].kind == "own" and root:
        folder = Path(os.path.abspath(Path(root).expanduser()))
        data = (folder.parent if folder.suffix.lower() == ".csv" else folder).name or data
        # bytes that are not UTF-8 as U+FFFD (TensorBoard refused the folder: "surrogates not
        # allowed"), a long name cut to fit (the file system refused: "file name too long")
        data = fitted(shown(data), NAME_MAX - len(f"{dash}{rest}".encode()))
    return f"{data}{dash}{rest}"


def _yaml_problem(error: yaml.YAMLError) -> str:
    """Where and what a YAML error is, on one line: "line 3, column 7: mapping values are not
    allowed here"."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).split("\n")[0]
    if "'\\t'" in problem:  # PyYAML: "found character '\t' that cannot start any token"
        problem += "; YAML takes no tabs there: use spaces"
    if mark is None:
        return problem
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _is_presets_list(text: str) -> bool:
    """Whether ``text`` is what `sef presets` prints without a NAME, a preset and what it trains a
    line (``sef presets > my.yaml``), which YAML reads as one unknown key a line."""
    name, gap, described = text.lstrip().partition("\n")[0].partition("  ")
    return bool(gap and described.strip()) and name in _presets()


def _presets_list_error(path: Path) -> ConfigError:
    """The one line for a config file that holds the list of presets: how to get one's config."""
    edit = f"`sef presets NAME > {path}` writes one preset's config to edit"
    as_it_is = for_reader("--preset NAME", "resolve_config(NAME)")
    return ConfigError(
        f"config file {path} is the list of presets `sef presets` prints, not a config; {edit}, "
        f"or train a preset as it is with {as_it_is}"
    )


def _file_values(path: Path, bases_of: tuple[Path, ...] = ()) -> dict:
    """A config file's values merged onto its ``base``: a preset, or a name ending in .yaml or
    .yml, another config file (relative to this one's folder); ``bases_of``: the files that
    named this one as their base, so a cycle stops in one line."""
    try:
        text = filekinds.read_text(path)
    except ValueError as problem:
        fix = f"fix the base: line of {bases_of[-1]}" if bases_of else "pass a YAML file"
        raise ConfigError(f"config file {path} {problem}; {fix}") from None
    if _is_presets_list(text):
        raise _presets_list_error(path)
    try:
        values = load_yaml(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(error)}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, not {values!r}")
    base = values.pop("base", None)
    if base is None:
        return values
    if str(base).endswith((".yaml", ".yml")):
        start = path.parent / Path(str(base)).expanduser()
        chain = (*bases_of, path)
        if any(start.resolve() == file.resolve() for file in chain):
            raise ConfigError(
                f"config file {path} names {base} as its base, a cycle: "
                f"{' -> '.join(map(str, (*chain, start)))}; remove one of these base: lines"
            )
        return deep_merge(_file_values(start, chain), values)
    return deep_merge(config_to_dict(load_preset(str(base))), {"name": str(base), **values})


def load_config_file(path: str | Path, *, stored: bool = False) -> Config:
    """A config from a YAML file; ``base: PRESET`` starts it from that preset, ``base: FILE.yaml``
    from that config file. ``stored``: the file is a run's own config.yaml, read as it was saved
    (:func:`~sef.config.values.stored_values`)."""
    values = _file_values(Path(path))
    return config_from_dict(stored_values(values) if stored else values)


def save_config(config: Config, path: str | Path) -> None:
    """Write the resolved config as YAML (readable, and loadable by ``load_config_file``)."""
    write_text(path, config.to_yaml())


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
