"""Datasets: the four fine-grained benchmarks as they unpack, users' own data, and demo data.

``load(name, root, split)`` returns an :class:`ImageList` (a torch Dataset of (image, label) with
``classes`` and ``samples``). Splits are ``trainval`` (official training set), ``test`` (official
test set), and ``train``/``val``: official for FGVC-Aircraft (and folder data that has a val
folder), elsewhere a seeded per-class hold-out of ``val_fraction`` of trainval (see
:mod:`sef.datasets.splits`: own data's as ``holdout`` says, stable or ranked; the others' ranked).
``RECORDS`` says what else sef knows of each dataset (its reader, kind, presets,
downloadability); ``read_split`` reads a split as a config's ``data`` section names.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sef.choices import BAD_IMAGE_POLICIES
from sef.errors import ConfigError, DataError, for_reader
from sef.lazy import lazy_attributes

if TYPE_CHECKING:
    from sef.datasets.imagelist import ImageList

# The readers, the image list and the checks import torch and PIL: loaded on first use.
__getattr__ = lazy_attributes(
    __name__,
    {
        "ImageList": "sef.datasets.imagelist",
        "SPLITS": "sef.datasets.splits",
        "apply_bad_image_policy": "sef.datasets.checking",
        "find_bad_images": "sef.datasets.checking",
    },
)

KINDS = (
    "paper",  # the paper's four benchmarks, read as their archives unpack
    "own",  # users' own images (a run is named after their folder)
    "generated",  # drawn on first use into a cache: no root needed
)
PAPER_BACKBONES = ("resnet50", "resnet18")  # the paper's presets, also for own data


@dataclass(frozen=True)
class DatasetRecord:
    """What sef knows of a dataset besides its images: the one place the readers, the config's
    presets and the download code look it up.

    reader: the module that defines ``read(root, split, *, seed, val_fraction, **options)`` (own
    data's also takes ``holdout``, see :mod:`sef.datasets.splits`);
    kind: one of ``KINDS``; backbones: its presets are ``<name>-<backbone>[-<method>]`` for each
    (the demo's are ``demo[-<method>]``, see ``sef.config``); no_download: why `sef data download`
    cannot fetch it ("": its archives are listed in ``sef.datasets.download.ARCHIVES``).
    """

    reader: str
    kind: str
    backbones: tuple[str, ...] = ()
    no_download: str = ""


RECORDS = {
    "cub": DatasetRecord("sef.datasets.cub", "paper", PAPER_BACKBONES),
    "cars": DatasetRecord(
        "sef.datasets.cars", "paper", PAPER_BACKBONES,
        "Stanford Cars is no longer served by its authors; get cars_train.tgz, cars_test.tgz, "
        "car_devkit.tgz and cars_test_annos_withlabels.mat from a mirror you trust and unpack "
        "them into ROOT",
    ),
    "dogs": DatasetRecord("sef.datasets.dogs", "paper", PAPER_BACKBONES),
    "aircraft": DatasetRecord("sef.datasets.aircraft", "paper", PAPER_BACKBONES),
    "folder": DatasetRecord(
        "sef.datasets.folder", "own", PAPER_BACKBONES,
        "folder data is your own; there is nothing to download",
    ),
    "csv": DatasetRecord(
        "sef.datasets.csvlist", "own", PAPER_BACKBONES,
        "CSV data is your own; there is nothing to download",
    ),
    "demo": DatasetRecord(
        "sef.datasets.demo", "generated", (),
        "the demo set is generated on first use; just run `sef data check demo`",
    ),
    "birds32": DatasetRecord(
        "sef.datasets.birds32", "generated", ("mobilenet_v2",),
        "birds32 is generated on first use; just run `sef data check birds32`",
    ),
    "birds32b": DatasetRecord(
        "sef.datasets.birds32b", "generated", ("mobilenet_v2",),
        "birds32b is generated on first use; just run `sef data check birds32b`",
    ),
}  # fmt: skip
NAMES = tuple(RECORDS)
FILE_ROOTS = ("csv",)  # the readers whose root may be a file; every other reads a folder
# What a reader takes from the run's config, not from data.options, and the key that sets it
# (holdout: own data's readers only).
RUN_SETTINGS = {"seed": "run.seed", "val_fraction": "data.val_fraction", "holdout": "data.holdout"}


def names_of(kind: str) -> tuple[str, ...]:
    """The datasets of one kind (see ``KINDS``), in ``RECORDS`` order."""
    return tuple(name for name, record in RECORDS.items() if record.kind == kind)


GENERATED = names_of("generated")
DOWNLOADABLE = tuple(name for name, record in RECORDS.items() if not record.no_download)


def record(name: str) -> DatasetRecord:
    """The record of dataset ``name``; ConfigError naming the choices for an unknown one."""
    if name not in RECORDS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(NAMES)}")
    return RECORDS[name]


def reader(name: str) -> Callable[..., ImageList]:
    """The ``read`` function of dataset ``name``."""
    return importlib.import_module(record(name).reader).read


def options(name: str) -> dict[str, Any]:
    """The reader options of dataset ``name`` with their defaults (beyond ``RUN_SETTINGS``)."""
    parameters = inspect.signature(reader(name)).parameters.values()
    return {
        p.name: p.default
        for p in parameters
        if p.kind is p.KEYWORD_ONLY and p.name not in RUN_SETTINGS
    }


# What an option takes, by the type of its default (a reader checks options defaulting to None).
_TAKES = (
    (bool, (bool,), "true or false"),
    (int, (int,), "a whole number"),
    (float, (int, float), "a number"),
    (str, (str,), "text"),
)


def _check_option(name: str, key: str, value: Any, default: Any) -> None:
    """ConfigError unless ``value`` is of the kind of the option's default."""
    for kind, accepted, takes in _TAKES:
        if isinstance(default, kind):
            if not isinstance(value, accepted) or (isinstance(value, bool) and kind is not bool):
                raise ConfigError(f"dataset {name!r} option {key} takes {takes}, got {value!r}")
            return


def load(
    name: str,
    root: str | os.PathLike | None,
    split: str,
    *,
    transform: Callable | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    holdout: str = "stable",
    **reader_options: Any,
) -> ImageList:
    """Read ``split`` of dataset ``name`` from ``root`` (the folder as unpacked).

    ``root`` may be None only for the generated sets (``GENERATED``: they then live in the
    default cache). ``holdout`` (stable or ranked) is how own data without declared splits hold
    out val and test; the other datasets hold theirs out by rank whatever it says, so that their
    splits stay those of every published run. Extra keyword
    options go to the dataset's reader; :func:`options` lists them.
    """
    from sef.datasets.splits import check_holdout

    check_holdout(holdout)
    read = reader(name)
    unknown = sorted(set(reader_options) - set(options(name)))
    if unknown:
        known = ", ".join(options(name)) or "none"
        raise ConfigError(f"dataset {name!r} has no option {unknown[0]!r}; its options: {known}")
    for key, value in reader_options.items():
        _check_option(name, key, value, options(name)[key])
    check_root(name, root)
    if root is not None and name not in FILE_ROOTS and os.path.isfile(os.path.expanduser(root)):
        from sef.datasets.layout import ARCHIVE_EXTENSIONS

        hint = "; a CSV list of images is read by dataset csv" if str(root).endswith(".csv") else ""
        if os.path.splitext(str(root))[1].lower() in ARCHIVE_EXTENSIONS:
            hint = "; unpack the archive and pass the folder it unpacks to"
        raise DataError(
            f"data root {root} is a file, not a folder; dataset {name} reads a folder{hint}"
        )
    if "holdout" in inspect.signature(read).parameters:
        reader_options["holdout"] = holdout
    try:
        dataset = read(root, split, seed=seed, val_fraction=val_fraction, **reader_options)
    except DataError as error:
        hint = _another_benchmark(name, root)
        if not hint:
            raise
        raise DataError(f"{error}{hint}") from None
    dataset.transform = transform
    return dataset


def _another_benchmark(name: str, root: str | os.PathLike | None) -> str:
    """What to say where ``root``, not read as benchmark ``name``, holds another benchmark (a
    cars preset given CUB's folder): "; <its marker> exists: ..."; else ""."""
    from sef.datasets.layout import benchmark_in

    if root is None or record(name).kind != "paper":
        return ""
    found = benchmark_in(Path(root).expanduser(), but=name)
    if found is None:
        return ""
    other, marker = found
    return f"; {marker} exists: is ROOT dataset {other}? then read it as {other}"


# Why a split held out of another (sef.datasets.splits) lacks a class, or holds no image.
HELD_OUT = "a held-out split takes images only from classes with two or more"


def nothing_to_evaluate(split: str, source: str, dataset: str) -> DataError:
    """The error for a ``split`` of ``source`` (a root, or a generated set's name) of
    ``dataset`` that holds no images: why, as the split is listed by a benchmark's own files
    (CUB's train_test_split.txt marking every image 1) or held out."""
    listed = record(dataset).kind == "paper" and (split == "test" or dataset == "aircraft")
    why = f"{dataset}'s own split files list no {split} image: check them" if listed else HELD_OUT
    return DataError(
        f"the {split} split of {source} holds no images: there is nothing to evaluate on; {why}"
    )


class DataSection(Protocol):
    """What :func:`read_split` reads of a config's ``data`` section (``sef.config.DataConfig``)."""

    dataset: str
    root: str | None
    val_fraction: float
    holdout: str
    options: dict


def check_root(name: str, root: str | os.PathLike | None) -> None:
    """ConfigError for dataset ``name`` given no root folder, unless it is a generated set;
    before the reader's import (torch), so that `sef train` says so at once."""
    if root is None and name not in GENERATED:
        how = for_reader(
            "pass --data-root DIR (data.root in a config)", "set data.root (load's root)"
        )
        raise ConfigError(f"dataset {name!r} needs a root folder: {how}")


def read_split(
    data: DataSection,
    split: str,
    *,
    seed: int,
    root: str | os.PathLike | None = None,
    transform: Callable | None = None,
    progress: bool | None = None,
) -> ImageList:
    """``split`` of the dataset a config's ``data`` section names (from ``root`` instead of
    ``data.root`` if given), with the run's ``seed``, its val fraction, hold-out and reader
    options: the one place they are assembled. ``progress`` shows a generated set being drawn on
    first use."""
    options = dict(data.options)
    if data.dataset in GENERATED:
        options.setdefault("progress", progress)
    return load(
        data.dataset, data.root if root is None else root, split, transform=transform,
        seed=seed, val_fraction=data.val_fraction, holdout=data.holdout, **options,
    )  # fmt: skip


__all__ = [
    "BAD_IMAGE_POLICIES",
    "DOWNLOADABLE",
    "GENERATED",
    "KINDS",
    "PAPER_BACKBONES",
    "RECORDS",
    "DatasetRecord",
    "ImageList",
    "NAMES",
    "SPLITS",
    "apply_bad_image_policy",
    "check_root",
    "find_bad_images",
    "load",
    "names_of",
    "options",
    "read_split",
    "record",
]
