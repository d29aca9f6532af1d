"""Split names and the seeded, per-class hold-out that carves val (or test) out of a larger set.

Datasets without an official val split get one from their official training set ("trainval"):
in every class with n >= 2 images, ``held_out_count(n, fraction)`` = max(1, round(fraction * n))
images (at most n - 1) chosen by a generator seeded with (seed, purpose, class) go to val, the
rest to train. Every class with two or more images is therefore in both parts, and the choice
depends only on the seed, the fraction and each class's sorted image paths.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from sef.datasets.imagelist import ImageList
from sef.errors import ConfigError, DataError


class NoSuchSplit(DataError):
    """Own data that declares its splits and not this one (no test folder or rows)."""


SPLITS = ("trainval", "train", "val", "test")
VAL_NAMES = ("valid", "validation")  # val as Kaggle's and Roboflow's exports name it
# Distinct purposes draw independent hold-outs from the same seed.
VAL_PURPOSE = 0
TEST_PURPOSE = 1


def check_split(split: str) -> None:
    """Raise ConfigError unless ``split`` is one of SPLITS."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


def share_images(split: str, other: str) -> bool:
    """Whether two splits of one dataset hold some of the same images: trainval is train and val
    together, test is apart from all three."""
    return split == other or {split, other} in ({"trainval", "train"}, {"trainval", "val"})


def split_named(name: str) -> str | None:
    """The split of SPLITS a folder or a CSV's split cell names, in any case (Train, TEST), val
    also as one of VAL_NAMES; None for any other name."""
    lowered = name.lower()
    split = "val" if lowered in VAL_NAMES else lowered
    return split if split in SPLITS else None


def check_fraction(name: str, fraction: float) -> None:
    """Raise ConfigError unless 0 < fraction < 1."""
    if not 0.0 < float(fraction) < 1.0:
        raise ConfigError(f"{name} must be between 0 and 1 (exclusive), got {fraction!r}")


def held_out_count(n: int, fraction: float) -> int:
    """How many of a class's n images are held out: max(1, round(fraction*n)), at most n-1."""
    if n < 2:
        return 0
    return min(n - 1, max(1, math.floor(fraction * n + 0.5)))


def holdout(
    samples: Sequence[tuple[str, int]], fraction: float, seed: int, purpose: int = VAL_PURPOSE
) -> tuple[list[int], list[int]]:
    """Indices (kept, held_out) of a seeded per-class hold-out; both keep the input order."""
    by_class: dict[int, list[int]] = defaultdict(list)
    for index, (_, label) in enumerate(samples):
        by_class[label].append(index)
    held: set[int] = set()
    for label, indices in by_class.items():
        indices = sorted(indices, key=lambda i: samples[i][0])
        rng = np.random.default_rng([seed, purpose, label])
        chosen = rng.permutation(len(indices))[: held_out_count(len(indices), fraction)]
        held.update(indices[c] for c in chosen)
    kept = [i for i in range(len(samples)) if i not in held]
    return kept, sorted(held)


def carve_val(trainval: ImageList, split: str, seed: int, val_fraction: float) -> ImageList:
    """``trainval`` itself, or its train or val part from the seeded per-class hold-out."""
    check_split(split)
    if split == "trainval":
        return trainval
    if split == "test":
        raise ValueError("carve_val cannot make the test split; read it from the dataset")
    check_fraction("val_fraction", val_fraction)
    train, val = holdout(trainval.samples, val_fraction, seed, VAL_PURPOSE)
    return trainval.select(train if split == "train" else val)


def from_declared(
    dataset: ImageList,
    tags: Sequence[str | None],
    split: str,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    source: str,
) -> ImageList:
    """``split`` of users' own data whose samples are tagged with the split they declare.

    Tags are trainval/train/val/test, or None for data without split information, which is then
    split seeded and per class: ``test_fraction`` to test, and val carved from the rest. Declared
    train and val are used as they are; without a declared val, it is carved from trainval.
    """
    check_split(split)
    if all(tag is None for tag in tags):
        check_fraction("test_fraction", test_fraction)
        trainval_indices, test_indices = holdout(dataset.samples, test_fraction, seed, TEST_PURPOSE)
        if split == "test":
            return dataset.select(test_indices)
        return carve_val(dataset.select(trainval_indices), split, seed, val_fraction)
    unknown = sorted({str(t) for t in tags if t not in SPLITS})
    if unknown:
        raise DataError(f"{source}: unknown split {unknown[0]!r}; use {', '.join(SPLITS)}")
    indices = {name: [i for i, t in enumerate(tags) if t == name] for name in SPLITS}
    if split == "test" and not indices["test"]:
        raise NoSuchSplit(f"{source} declares no test images; add them or leave out every split")
    if split == "test":
        return dataset.select(indices["test"])
    official_val = indices["train"] and indices["val"] and not indices["trainval"]
    if split in ("train", "val") and official_val:
        return dataset.select(indices[split])
    trainval = sorted(indices["trainval"] + indices["train"] + indices["val"])
    if not trainval:
        raise NoSuchSplit(f"{source} declares no training images (trainval, train or val)")
    return carve_val(dataset.select(trainval), split, seed, val_fraction)
