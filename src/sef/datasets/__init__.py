"""Datasets: the four fine-grained benchmarks as they unpack, users' own data, and demo data.

``load(name, root, split)`` returns an :class:`ImageList` (a torch Dataset of (image, label) with
``classes`` and ``samples``). Splits are ``trainval`` (official training set), ``test`` (official
test set), and ``train``/``val``: official for FGVC-Aircraft (and folder data that has a val
folder), elsewhere a seeded per-class hold-out of ``val_fraction`` of trainval (see
:mod:`sef.datasets.splits`).
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sef.choices import BAD_IMAGE_POLICIES
from sef.errors import ConfigError, DataError
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

# name -> module that defines ``read(root, split, *, seed, val_fraction, **options)``
READERS = {
    "cub": "sef.datasets.cub",
    "cars": "sef.datasets.cars",
    "dogs": "sef.datasets.dogs",
    "aircraft": "sef.datasets.aircraft",
    "folder": "sef.datasets.folder",
    "csv": "sef.datasets.csvlist",
    "demo": "sef.datasets.demo",
    "birds32": "sef.datasets.birds32",
    "birds32b": "sef.datasets.birds32b",
}
NAMES = tuple(READERS)
GENERATED = ("demo", "birds32", "birds32b")  # drawn on first use into a cache: no root needed
FILE_ROOTS = ("csv",)  # the readers whose root may be a file; every other reads a folder


def reader(name: str) -> Callable[..., ImageList]:
    """The ``read`` function of dataset ``name``."""
    if name not in READERS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(NAMES)}")
    return importlib.import_module(READERS[name]).read


def options(name: str) -> dict[str, Any]:
    """The reader options of dataset ``name`` with their defaults (beyond seed, val_fraction)."""
    parameters = inspect.signature(reader(name)).parameters.values()
    return {
        p.name: p.default
        for p in parameters
        if p.kind is p.KEYWORD_ONLY and p.name not in ("seed", "val_fraction")
    }


def load(
    name: str,
    root: str | os.PathLike | None,
    split: str,
    *,
    transform: Callable | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    **reader_options: Any,
) -> ImageList:
    """Read ``split`` of dataset ``name`` from ``root`` (the folder as unpacked).

    ``root`` may be None only for the generated sets (``GENERATED``: they then live in the
    default cache). Extra keyword
    options go to the dataset's reader; :func:`options` lists them.
    """
    read = reader(name)
    unknown = sorted(set(reader_options) - set(options(name)))
    if unknown:
        known = ", ".join(options(name)) or "none"
        raise ConfigError(f"dataset {name!r} has no option {unknown[0]!r}; its options: {known}")
    if root is None and name not in GENERATED:
        raise ConfigError(f"dataset {name!r} needs a root folder (data.root / ROOT)")
    if root is not None and name not in FILE_ROOTS and os.path.isfile(os.path.expanduser(root)):
        hint = "; a CSV list of images is read by dataset csv" if str(root).endswith(".csv") else ""
        raise DataError(
            f"data root {root} is a file, not a folder; dataset {name} reads a folder{hint}"
        )
    dataset = read(root, split, seed=seed, val_fraction=val_fraction, **reader_options)
    dataset.transform = transform
    return dataset


__all__ = [
    "BAD_IMAGE_POLICIES",
    "GENERATED",
    "ImageList",
    "NAMES",
    "SPLITS",
    "apply_bad_image_policy",
    "find_bad_images",
    "load",
    "options",
]
