"""CUB-200-2011 as its archive unpacks: CUB_200_2011/ with images/ and the text lists.

images.txt maps image ids to paths, image_class_labels.txt ids to 1-based classes (named in
classes.txt), train_test_split.txt ids to 1 (train) or 0 (test), bounding_boxes.txt ids to
``x y width height``. ``root`` may be CUB_200_2011 or the folder that holds it.
"""

from __future__ import annotations

import os
from pathlib import Path

from sef.datasets.imagelist import Box, ImageList
from sef.datasets.layout import (
    box_with_area,
    find_root,
    listed_once,
    one_based_label,
    read_pairs,
)
from sef.datasets.splits import carve_val, check_split
from sef.errors import DataError
from sef.text import counted

LAYOUT = (
    "CUB_200_2011/{images/<class>/<file>.jpg, images.txt, image_class_labels.txt, "
    "train_test_split.txt, classes.txt, bounding_boxes.txt} (the CUB_200_2011.tgz archive "
    "unpacked)"
)


def _by_id(path: Path, ids: list[str]) -> list[str]:
    """The value of every id in ``ids`` from the ``<id> <value>`` list at ``path``, which lists
    those ids and no other (an images.txt cut short, or emptied, read as fewer images)."""
    table = dict(read_pairs(path, LAYOUT))
    missing = [i for i in ids if i not in table]
    if missing:
        raise DataError(f"{path} has no line for image id {missing[0]} (listed in images.txt)")
    listed = set(ids)
    unlisted = [i for i in table if i not in listed]
    if unlisted:
        raise DataError(
            f"{path} lists {counted(len(unlisted), 'image id')} that images.txt does not, e.g. "
            f"{unlisted[0]}; the lists do not belong together: unpack CUB_200_2011.tgz again"
        )
    return [table[i] for i in ids]


def _classes(path: Path) -> list[str]:
    """The class names by their ids 1..K (a list sorted as text, 1, 10, 100, ..., reads right)."""
    names = dict(read_pairs(path, LAYOUT))
    expected = [str(k) for k in range(1, len(names) + 1)]
    unknown = [i for i in names if i not in expected]
    if unknown:
        raise DataError(f"{path}: class id {unknown[0]} is not one of 1..{len(names)}")
    return [names[i] for i in expected]


def _is_train(flag: str, where: str) -> bool:
    """A train_test_split.txt value: 1 is train, 0 is test, anything else a DataError."""
    if flag not in ("0", "1"):
        raise DataError(f"{where}: split {flag!r} is neither 1 (train) nor 0 (test)")
    return flag == "1"


def _box(value: str, where: str) -> Box:
    try:
        x, y, width, height = (float(v) for v in value.split())
    except ValueError:
        raise DataError(f"{where}: expected 'x y width height', got {value!r}") from None
    return box_with_area((x, y, x + width, y + height), where)


def read(
    root: str | os.PathLike,
    split: str,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    bbox_crop: bool = False,
) -> ImageList:
    """CUB ``split``; ``bbox_crop`` crops every image to its annotated bird box."""
    check_split(split)
    folder = find_root(root, "images.txt", ["CUB_200_2011"], LAYOUT)
    classes = _classes(folder / "classes.txt")
    images = read_pairs(folder / "images.txt", LAYOUT)
    ids = [image_id for image_id, _ in images]
    labels_file = folder / "image_class_labels.txt"
    labels = [
        one_based_label(value, len(classes), f"{labels_file} (image id {image_id})")
        for image_id, value in zip(ids, _by_id(labels_file, ids), strict=True)
    ]
    split_file = folder / "train_test_split.txt"
    is_train = [
        _is_train(flag, f"{split_file} (image id {image_id})")
        for image_id, flag in zip(ids, _by_id(split_file, ids), strict=True)
    ]
    boxes = None
    if bbox_crop:
        boxes_file = folder / "bounding_boxes.txt"
        boxes = [
            _box(value, f"{boxes_file} (image id {image_id})")
            for image_id, value in zip(ids, _by_id(boxes_file, ids), strict=True)
        ]
    listed_once([path for _, path in images], folder / "images.txt")
    paths = [str(folder / "images" / path) for _, path in images]
    samples = list(zip(paths, labels, strict=True))
    # as stored: the boxes are in the stored pixels' coordinates, as the paper read them
    dataset = ImageList(samples, classes, boxes=boxes, upright=False)
    wanted = [i for i, train in enumerate(is_train) if train == (split != "test")]
    dataset = dataset.select(wanted)
    return dataset if split == "test" else carve_val(dataset, split, seed, val_fraction)
