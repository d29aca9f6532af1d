"""FGVC-Aircraft 2013b as its archive unpacks, read by torchvision's ``FGVCAircraft``.

fgvc-aircraft-2013b/data/ holds images/<id>.jpg, the class lists (variants.txt, families.txt,
manufacturers.txt) and ``images_<level>_<split>.txt`` lines ``<id> <name>`` whose names contain
spaces and '/'. All four splits are official. Every image carries a 20-pixel copyright banner at
the bottom; ``crop_banner=True`` removes it. ``root`` may be fgvc-aircraft-2013b, its data/
folder, or the folder that holds it.
"""

from __future__ import annotations

import os
from pathlib import Path

from torchvision.datasets import FGVCAircraft

from sef.datasets.imagelist import ImageList
from sef.datasets.layout import require
from sef.datasets.splits import check_split
from sef.errors import ConfigError, DataError

FOLDER = "fgvc-aircraft-2013b"  # torchvision reads <root>/fgvc-aircraft-2013b/data
LAYOUT = (
    f"{FOLDER}/data/{{images/<id>.jpg, variants.txt, images_variant_<split>.txt, ...}} "
    f"(fgvc-aircraft-2013b.tar.gz unpacked, folder name kept)"
)
LEVELS = {"variant": "variants.txt", "family": "families.txt", "manufacturer": "manufacturers.txt"}
BANNER_PIXELS = 20


def _torchvision_root(root: Path) -> Path:
    """The folder that holds fgvc-aircraft-2013b, from any of the accepted ``root`` forms."""
    root = root.expanduser().absolute()
    for candidate, parent in (
        (root / FOLDER, root),
        (root, root.parent),
        (root.parent, root.parent.parent),
    ):
        if candidate.name == FOLDER and (candidate / "data").is_dir():
            return parent
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist; point ROOT at {LAYOUT}")
    raise DataError(
        f"no {FOLDER}/data folder at {root}; the dataset should be laid out as {LAYOUT}"
    )


def read(
    root: str | os.PathLike,
    split: str,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    level: str = "variant",
    crop_banner: bool = False,
) -> ImageList:
    """FGVC-Aircraft ``split`` at annotation ``level`` (variant, family or manufacturer).

    ``seed`` and ``val_fraction`` are unused: Aircraft has an official val split.
    """
    check_split(split)
    if level not in LEVELS:
        raise ConfigError(f"unknown Aircraft level {level!r}; choose one of {', '.join(LEVELS)}")
    parent = _torchvision_root(Path(root))
    data = parent / FOLDER / "data"
    require(data / LEVELS[level], LAYOUT)
    require(data / f"images_{level}_{split}.txt", LAYOUT)
    require(data / "images", LAYOUT)
    try:  # the identity loader makes ds[i] return (path, label) without opening the image
        listing = FGVCAircraft(parent, split=split, annotation_level=level, loader=str)
    except KeyError as error:
        raise DataError(
            f"{data / f'images_{level}_{split}.txt'} names class {error} that is not in "
            f"{LEVELS[level]}; the lists do not belong together"
        ) from None
    samples = [listing[i] for i in range(len(listing))]
    return ImageList(samples, listing.classes, trim_bottom=BANNER_PIXELS if crop_banner else 0)
