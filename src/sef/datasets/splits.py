"""Split names and the seeded, per-class hold-outs that carve val (or test) out of a larger set.

Two hold-outs, each seeded with (seed, purpose: val or test) and per class, so that every class
with two images or more is in both parts and a class of one image keeps it for training:

- ranked (:func:`ranked_holdout`): the benchmarks and the generated sets, whose image lists never
  change, and own data of runs saved before ``data.holdout`` existed. In every class of n >= 2
  images, ``held_out_count(n, fraction)`` = max(1, round(fraction * n)) images (at most n - 1)
  chosen by a generator seeded with (seed, purpose, class) from the class's sorted paths are held
  out. The counts are exact, but one image added to or removed from a class draws its hold-out
  anew: images held out before may then be trained on.
- stable (:func:`stable_holdout`, ``data.holdout: stable``, own data's default): each image is
  held out when a number in [0, 1) that (seed, purpose, its name) alone decide is below the
  fraction (:func:`draw`; its name is its path relative to the data's root,
  :meth:`ImageList.names`, so moving that folder changes nothing), as TensorFlow's
  speech-commands ``which_set`` does. Adding or removing images changes no other image's part,
  except in a class that then falls into, or out of, one of two fallbacks: a class of two images
  or more none of which is held out holds out the one of smallest number; a class all of whose
  images are (one image alone too) keeps the one of largest number for training. The counts per
  class are binomial (fraction * n on average), not exactly round(fraction * n).
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from sef.choices import HOLDOUTS
from sef.datasets.imagelist import ImageList
from sef.errors import ConfigError, DataError


class NoSuchSplit(DataError):
    """Own data that declares its splits and not this one (no test folder or rows)."""


SPLITS = ("trainval", "train", "val", "test")
VAL_NAMES = ("valid", "validation")  # val as Kaggle's and Roboflow's exports name it
# A checkpoint's record of its run's training images (training_record).
TRAINING_RECORD = ("train_images", "train_fingerprint")
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


def _by_class(samples: Sequence[tuple[str, int]]) -> dict[int, list[int]]:
    """The indices of ``samples`` by label."""
    by_class: dict[int, list[int]] = defaultdict(list)
    for index, (_, label) in enumerate(samples):
        by_class[label].append(index)
    return by_class


def _parts(count: int, held: set[int]) -> tuple[list[int], list[int]]:
    """(kept, held_out) of ``count`` indices, each in order."""
    return [i for i in range(count) if i not in held], sorted(held)


def ranked_holdout(
    samples: Sequence[tuple[str, int]], fraction: float, seed: int, purpose: int = VAL_PURPOSE
) -> tuple[list[int], list[int]]:
    """Indices (kept, held_out) of the ranked per-class hold-out; both keep the input order."""
    held: set[int] = set()
    for label, indices in _by_class(samples).items():
        indices = sorted(indices, key=lambda i: samples[i][0])
        rng = np.random.default_rng([seed, purpose, label])
        chosen = rng.permutation(len(indices))[: held_out_count(len(indices), fraction)]
        held.update(indices[c] for c in chosen)
    return _parts(len(samples), held)


def draw(seed: int, purpose: int, name: str) -> float:
    """A number in [0, 1) that (seed, purpose, name) alone decide, the same on every machine and
    in every Python (the first 8 bytes of a BLAKE2b hash; Python's hash() of text is salted)."""
    text = f"{seed}\0{purpose}\0{name}".encode("utf-8", "surrogateescape")  # undecoded bytes too
    digest = hashlib.blake2b(text, digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def stable_holdout(
    images: ImageList, fraction: float, seed: int, purpose: int = VAL_PURPOSE
) -> tuple[list[int], list[int]]:
    """Indices (kept, held_out) of the stable per-class hold-out (see the module's docstring):
    whether an image is held out depends on its name alone, but in a class where none or all
    would be; both keep the input order."""
    names = images.names()
    held: set[int] = set()
    for indices in _by_class(images.samples).values():
        number = {i: draw(seed, purpose, names[i]) for i in indices}
        chosen = {i for i in indices if number[i] < fraction}
        if len(chosen) == len(indices):
            chosen.discard(max(indices, key=number.__getitem__))
        elif not chosen and len(indices) > 1:
            chosen.add(min(indices, key=number.__getitem__))
        held |= chosen
    return _parts(len(images), held)


def training_record(images: Any) -> dict[str, Any]:
    """What a checkpoint records of the images its run trains on, to tell when they change: their
    number and a fingerprint of their names (:meth:`ImageList.names`, in any order), keyed as
    ``TRAINING_RECORD``; {} for any data but own data's (an ImageList with a root)."""
    if not isinstance(images, ImageList) or images.root is None:
        return {}
    names = "\0".join(sorted(images.names())).encode("utf-8", "surrogateescape")
    fingerprint = hashlib.blake2b(names, digest_size=8).hexdigest()
    return dict(zip(TRAINING_RECORD, (len(images), fingerprint), strict=True))


def recorded_training(state: dict) -> dict[str, Any]:
    """The record of :func:`training_record` that a checkpoint's ``state`` holds; {} in one
    saved before it was kept, or of data other than own."""
    return {key: state[key] for key in TRAINING_RECORD if key in state}


def check_holdout(holdout: str) -> None:
    """Raise ConfigError unless ``holdout`` is one of HOLDOUTS."""
    if holdout not in HOLDOUTS:
        raise ConfigError(f"unknown hold-out {holdout!r}; choose one of {', '.join(HOLDOUTS)}")


def _held_out(
    images: ImageList, fraction: float, seed: int, purpose: int, holdout: str
) -> tuple[list[int], list[int]]:
    """Indices (kept, held_out) of ``images`` by the hold-out named ``holdout``."""
    if holdout == "stable":
        return stable_holdout(images, fraction, seed, purpose)
    return ranked_holdout(images.samples, fraction, seed, purpose)


def carve_val(
    trainval: ImageList, split: str, seed: int, val_fraction: float, holdout: str = "ranked"
) -> ImageList:
    """``trainval`` itself, or its train or val part from the seeded per-class hold-out named
    ``holdout`` (the benchmarks' and generated sets': ranked)."""
    check_split(split)
    if split == "trainval":
        return trainval
    if split == "test":
        raise ValueError("carve_val cannot make the test split; read it from the dataset")
    check_fraction("val_fraction", val_fraction)
    train, val = _held_out(trainval, val_fraction, seed, VAL_PURPOSE, holdout)
    return trainval.select(train if split == "train" else val)


def from_declared(
    dataset: ImageList,
    tags: Sequence[str | None],
    split: str,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    source: str,
    *,
    holdout: str,
) -> ImageList:
    """``split`` of users' own data whose samples are tagged with the split they declare.

    Tags are trainval/train/val/test, or None for data without split information, which is then
    split seeded and per class by the hold-out named ``holdout`` (stable or ranked, see the
    module's docstring): ``test_fraction`` to test, and val carved from the rest. A declared val
    is used as it is, train being the other training images (declared train or trainval);
    without a declared val, val is carved from trainval.
    """
    check_split(split)
    check_holdout(holdout)
    if all(tag is None for tag in tags):
        check_fraction("test_fraction", test_fraction)
        kept, tested = _held_out(dataset, test_fraction, seed, TEST_PURPOSE, holdout)
        if split == "test":
            return dataset.select(tested)
        return carve_val(dataset.select(kept), split, seed, val_fraction, holdout)
    unknown = sorted({str(t) for t in tags if t not in SPLITS})
    if unknown:
        raise DataError(f"{source}: unknown split {unknown[0]!r}; use {', '.join(SPLITS)}")
    indices = {name: [i for i, t in enumerate(tags) if t == name] for name in SPLITS}
    if split == "test" and not indices["test"]:
        raise NoSuchSplit(f"{source} declares no test images; add them or leave out every split")
    if split == "test":
        return dataset.select(indices["test"])
    trained = sorted(indices["trainval"] + indices["train"])  # trainval/ beside val/: train
    if split in ("train", "val") and trained and indices["val"]:
        return dataset.select(trained if split == "train" else indices["val"])
    trainval = sorted(indices["trainval"] + indices["train"] + indices["val"])
    if not trainval:
        raise NoSuchSplit(f"{source} declares no training images (trainval, train or val)")
    return carve_val(dataset.select(trainval), split, seed, val_fraction, holdout)
