"""FGVC-Aircraft 2013b as its archive unpacks: fgvc-aircraft-2013b/data/.

data/ holds images/<id>.jpg, the class lists (variants.txt, families.txt, manufacturers.txt, one
name a line) and ``images_<level>_<split>.txt`` lines ``<id> <name>`` whose names contain
spaces and '/' (read as torchvision's ``FGVCAircraft`` reads them). All four splits are
official. Every image carries a 20-pixel copyright banner at the bottom; ``crop_banner=True``
removes it. ``root`` may be fgvc-aircraft-2013b, its data/
folder, or the folder that holds it.
"""

from __future__ import annotations

import os
from pathlib import Path

from sef.datasets.imagelist import ImageList
from sef.datasets.layout import class_names, nearby_hint, read_pairs, require
from sef.datasets.splits import check_split
from sef.errors import ConfigError, DataError
from sef.text import counted

FOLDER = "fgvc-aircraft-2013b"
LAYOUT = (
    f"{FOLDER}/data/{{images/<id>.jpg, variants.txt, images_variant_<split>.txt, ...}} "
    f"(fgvc-aircraft-2013b.tar.gz unpacked, folder name kept)"
)
LEVELS = {"variant": "variants.txt", "family": "families.txt", "manufacturer": "manufacturers.txt"}
BANNER_PIXELS = 20


def _data_folder(root: Path) -> Path:
    """fgvc-aircraft-2013b/data, from any of the accepted ``root`` forms, each also through a
    symbolic link named otherwise (``~/data/aircraft -> /mnt/fgvc-aircraft-2013b``)."""
    root = root.expanduser().absolute()
    for base in dict.fromkeys((root, root.resolve())):
        for candidate in (base / FOLDER, base, base.parent):
            if candidate.resolve().name == FOLDER and (candidate / "data").is_dir():
                return candidate / "data"
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist; point ROOT at {LAYOUT}")
    raise DataError(
        f"no {FOLDER}/data folder at {root}; the dataset should be laid out as {LAYOUT}"
        f"{_renamed_hint(root) or nearby_hint(root, f'{FOLDER}/data')}"
    )


def _renamed_hint(root: Path) -> str:
    """What to say where ``root`` (or the folder above it, ``root`` being its data/) is the
    dataset's folder under another name: "; <folder> holds ...: rename ..."; else ""."""
    for folder in (root, root.parent):
        if (folder / "data" / LEVELS["variant"]).is_file():
            return f"; {folder} holds the dataset's data/: rename {folder.name} to {FOLDER}"
    return ""


def _check_test_apart(data: Path, level: str, split: str, pairs: list[tuple[str, str]]) -> None:
    """DataError where the test list shares an image with trainval (or with ``split``'s
    ``pairs``, train or val): the test accuracy would score images trained on."""
    lists = {
        name: pairs if name == split else read_pairs(data / f"images_{level}_{name}.txt", LAYOUT)
        for name in dict.fromkeys(("test", "trainval", split))
    }
    test = {image_id for image_id, _ in lists.pop("test")}
    for name, listed in lists.items():
        shared = test.intersection(image_id for image_id, _ in listed)
        if shared:
            are = "is" if len(shared) == 1 else "are"
            raise DataError(
                f"{counted(len(shared), 'image')} of {data} {are} in both "
                f"images_{level}_{name}.txt and images_{level}_test.txt, e.g. {min(shared)}; the "
                f"lists are not the official ones: unpack fgvc-aircraft-2013b.tar.gz again"
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
    data = _data_folder(Path(root))
    classes = class_names(data / LEVELS[level], LAYOUT)
    listing = data / f"images_{level}_{split}.txt"
    pairs = read_pairs(listing, LAYOUT)
    _check_test_apart(data, level, split, pairs)
    images = require(data / "images", LAYOUT)
    index = {name: label for label, name in enumerate(classes)}
    unknown = [name for _, name in pairs if name not in index]
    if unknown:
        raise DataError(
            f"{listing} names class {unknown[0]!r} that is not in {LEVELS[level]}; the lists do "
            f"not belong together"
        )
    samples = [(str(images / f"{image_id}.jpg"), index[name]) for image_id, name in pairs]
    trim = BANNER_PIXELS if crop_banner else 0
    return ImageList(samples, classes, trim_bottom=trim, upright=False)  # the paper's pixels
