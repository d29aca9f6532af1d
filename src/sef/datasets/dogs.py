"""Stanford Dogs as its archives unpack: Images/<synset-name>/<file>.jpg plus the split lists.

train_list.mat and test_list.mat (at the top level or in lists/, from lists.tar) hold
``file_list`` (paths relative to Images/) and 1-based ``labels``. Class k is the synset folder of
the images labelled k (e.g. ``n02085620-Chihuahua``), so names and order are the dataset's own.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sef.datasets.imagelist import ImageList
from sef.datasets.layout import find_root, listed_once, read_mat
from sef.datasets.splits import carve_val, check_split
from sef.errors import DataError
from sef.text import counted, some

LAYOUT = (
    "ROOT/{Images/<synset-name>/<file>.jpg, train_list.mat, test_list.mat} with the lists at the "
    "top level or in ROOT/lists/ (images.tar and lists.tar unpacked into ROOT)"
)


def _read_list(path: Path) -> list[tuple[str, int]]:
    """(relative path, 1-based label) pairs of a Dogs split list."""
    content = read_mat(path, ["file_list", "labels"], LAYOUT)
    files = [str(f) for f in content["file_list"]]
    labels = content["labels"]
    if len(files) != len(labels) or not np.all(labels == np.round(labels)):
        raise DataError(f"{path}: file_list and labels do not match one integer label per file")
    listed_once(files, path)
    return list(zip(files, labels.astype(int).tolist(), strict=True))


def _class_names(pairs: list[tuple[str, int]], lists: Path) -> list[str]:
    """The synset folder of each label, in label order: labels 1..K and folders must pair up."""
    folders: dict[int, set[str]] = {}
    for relative, label in pairs:
        folders.setdefault(label, set()).add(Path(relative).parts[0])
    labels = sorted(folders)
    if labels[0] < 1:  # 0-based lists of one's own: label 0 would be class -1
        raise DataError(
            f"the labels in {lists} start at {labels[0]}; Stanford Dogs' lists number the classes "
            f"from 1: number them so, or unpack the official lists.tar again"
        )
    skipped = sorted(set(range(1, labels[-1] + 1)) - set(labels))
    if skipped:  # a class without images: the model would learn it from nothing
        label = "label" if len(skipped) == 1 else "labels"
        raise DataError(
            f"the labels in {lists} run from 1 to {labels[-1]} but no image has {label} "
            f"{some([str(k) for k in skipped])}; number the classes 1..K without gaps, or unpack "
            f"the official lists.tar again"
        )
    names = [sorted(folders[label]) for label in labels]
    for label, found in zip(labels, names, strict=True):
        if len(found) != 1:
            raise DataError(f"label {label} in {lists} covers several folders: {found}")
    if len({found[0] for found in names}) != len(names):
        raise DataError(f"{lists} gives one Images/ folder two labels; the lists are inconsistent")
    return [found[0] for found in names]


def read(
    root: str | os.PathLike, split: str, *, seed: int = 0, val_fraction: float = 0.1
) -> ImageList:
    """Stanford Dogs ``split``."""
    check_split(split)
    folder = find_root(root, "Images", [], LAYOUT)
    lists = folder if (folder / "train_list.mat").exists() else folder / "lists"
    train = _read_list(lists / "train_list.mat")
    test = _read_list(lists / "test_list.mat")
    classes = _class_names(train + test, lists)
    shared = {f for f, _ in train} & {f for f, _ in test}
    if shared:  # the test accuracy would score images trained on
        are = "is" if len(shared) == 1 else "are"
        raise DataError(
            f"{counted(len(shared), 'image')} of {lists} {are} in both train_list.mat and "
            f"test_list.mat, e.g. {min(shared)}; the lists are not the official ones: unpack "
            f"lists.tar again"
        )
    pairs = test if split == "test" else train
    images = folder / "Images"
    samples = [(str(images / f), label - 1) for f, label in pairs]
    dataset = ImageList(samples, classes, upright=False)  # as stored: the paper's pixels
    return dataset if split == "test" else carve_val(dataset, split, seed, val_fraction)
