"""Users' own images in class folders: ROOT/<split>/<class>/<image> or ROOT/<class>/<image>.

Split folders are named trainval, train, val or test; the classes are the sorted union of the
class folder names in all of them, so labels agree between splits. Without split folders, test
and val are seeded per-class hold-outs (see :func:`sef.datasets.splits.from_declared`). Listing
uses torchvision's ``find_classes``/``make_dataset`` and its image extensions.
"""

from __future__ import annotations

import os
from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from sef.datasets.imagelist import ImageList
from sef.datasets.splits import SPLITS, from_declared
from sef.errors import DataError

LAYOUT = (
    "ROOT/<split>/<class>/<image> with split in trainval, train, val, test, or ROOT/<class>/<image>"
)


def _classes(folders: list[Path]) -> list[str]:
    names: set[str] = set()
    for folder in folders:
        try:
            names.update(find_classes(folder)[0])
        except FileNotFoundError:  # a split folder without class folders
            continue
    return sorted(names)


def read(
    root: str | os.PathLike,
    split: str,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> ImageList:
    """``split`` of the class-folder dataset at ``root``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist; lay it out as {LAYOUT}")
    split_folders = [root / name for name in SPLITS if (root / name).is_dir()]
    classes = _classes(split_folders or [root])
    if not classes:
        raise DataError(f"no class folders in {root}; lay it out as {LAYOUT}")
    class_to_idx = {name: i for i, name in enumerate(classes)}
    samples, tags = [], []
    for folder in split_folders or [root]:
        found = make_dataset(str(folder), class_to_idx, IMG_EXTENSIONS, allow_empty=True)
        samples += found
        tags += [folder.name if split_folders else None] * len(found)
    if not samples:
        raise DataError(
            f"no images ({', '.join(IMG_EXTENSIONS)}) under {root}; lay it out as {LAYOUT}"
        )
    return from_declared(
        ImageList(samples, classes), tags, split, seed, val_fraction, test_fraction, str(root)
    )
