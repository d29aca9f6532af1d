"""``birds32``: a built-in fine-grained set with CUB's proportions, for fine-tuning pretrained nets.

The demo's birds (:mod:`sef.datasets.demo`) with five two-way parts -- head, wing, tail, breast,
feet -- so 32 classes that differ only in small parts, on cluttered backgrounds, with every
image's part centres in ``ds.parts``. Default size: 30 training and 25 test images per class
(960 / 800; CUB has about 30 / 29) at 128 px. Generated on first use into
``$SEF_CACHE/birds32`` (or ``~/.cache/sef/birds32``), like the demo set.
"""

from __future__ import annotations

import os

from sef.datasets.demo import BIRDS32, read_set
from sef.datasets.imagelist import ImageList

CLASSES = BIRDS32.classes


def read(
    root: str | os.PathLike | None,
    split: str,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    per_class: int = 30,
    test_per_class: int = 25,
    resolution: int = 128,
    generation_seed: int = 0,
    progress: bool = True,
) -> ImageList:
    """``split`` of birds32; trainval/test are generated, train/val carved from trainval."""
    return read_set(BIRDS32, root, split, seed, val_fraction, progress, **{
        "per_class": per_class, "test_per_class": test_per_class,
        "resolution": resolution, "generation_seed": generation_seed,
    })  # fmt: skip
