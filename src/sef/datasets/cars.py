"""Stanford Cars as its three archives unpack: cars_train/, cars_test/, devkit/, test labels.

The annotations are MATLAB struct arrays (``bbox_x1..bbox_y2``, 1-based ``class``, ``fname``);
class names come from devkit/cars_meta.mat and may contain '/'. torchvision's ``StanfordCars``
reads the same files but only under a folder literally named ``stanford_cars`` and without the
boxes, so this reader reads the .mat files itself (the way torchvision does, with scipy) and
accepts any folder name, ``stanford_cars/`` inside it, and the test labels at the top level or in
devkit/.
"""

from __future__ import annotations

import os
from pathlib import Path

from sef.datasets.imagelist import ImageList
from sef.datasets.layout import (
    box_with_area,
    find_root,
    listed_once,
    one_based_label,
    read_mat,
    require,
)
from sef.datasets.splits import carve_val, check_split
from sef.errors import DataError

LAYOUT = (
    "ROOT/{cars_train/, cars_test/, devkit/{cars_meta.mat, cars_train_annos.mat}, "
    "cars_test_annos_withlabels.mat} (cars_train.tgz, cars_test.tgz and car_devkit.tgz unpacked "
    "into ROOT, plus the test labels file)"
)
TEST_LABELS = "cars_test_annos_withlabels.mat"
BOX = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2")  # the fields of a box, in PIL's crop order


def _annotations(path: Path, folder: Path, num_classes: int, with_boxes: bool):
    """(path, label) samples and, if asked, (x1, y1, x2, y2) boxes from an annotations file."""
    require(folder, LAYOUT)
    samples, boxes = [], []
    table = read_mat(path, ["annotations"], LAYOUT)["annotations"]
    fields = table.dtype.names or ()
    if "class" not in fields and path.name == TEST_LABELS:  # cars_test_annos.mat renamed
        raise DataError(f"{path} has no 'class' field; use the labelled file {TEST_LABELS}")
    missing = [f for f in ("class", "fname", *(BOX if with_boxes else ())) if f not in fields]
    if missing:
        raise DataError(f"{path} has no '{missing[0]}' field; is it the official file?")
    listed_once([str(row["fname"]) for row in table], path)
    for row in table:
        where = f"{path} ({row['fname']})"
        samples.append(
            (str(folder / str(row["fname"])), one_based_label(row["class"], num_classes, where))
        )
        if with_boxes:
            box = tuple(float(row[f]) for f in BOX)
            boxes.append(box_with_area(box, where))
    return samples, (boxes if with_boxes else None)


def _folder(root: Path) -> Path:
    """The folder holding devkit/ (``root`` or its stanford_cars/); DataError saying to move a
    devkit/ kept one folder deeper than cars_train/ (car_devkit/devkit), where passing its
    folder, as the usual hint says, would leave out the images."""
    try:
        return find_root(root, "devkit", ["stanford_cars"], LAYOUT)
    except DataError:
        deeper = sorted(root.glob("*/devkit")) if (root / "cars_train").is_dir() else []
        if deeper:
            raise DataError(
                f"devkit not found in {root} beside cars_train; {deeper[0]} exists: move it to "
                f"{root / 'devkit'}"
            ) from None
        raise


def _test_labels(folder: Path) -> Path:
    """The labelled test annotations in ``folder`` or its devkit/; DataError naming a copy saved
    under another name (a browser's ``cars_test_annos_withlabels (1).mat``) or saying where the
    file comes from."""
    places = (folder, folder / "devkit")
    for place in places:
        if (place / TEST_LABELS).exists():
            return place / TEST_LABELS
    copies = sorted(path for place in places for path in place.glob(f"{TEST_LABELS[:-4]}*.mat"))
    if copies:
        raise DataError(
            f"{TEST_LABELS} is in neither {folder} nor its devkit/; {copies[0]} exists: rename "
            f"it {TEST_LABELS}"
        )
    raise DataError(
        f"{TEST_LABELS} is in neither {folder} nor its devkit/ (the devkit's "
        f"cars_test_annos.mat holds no test labels); get {TEST_LABELS}, published apart "
        f"from car_devkit.tgz, and put it in {folder}"
    )


def read(
    root: str | os.PathLike,
    split: str,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    bbox_crop: bool = False,
) -> ImageList:
    """Stanford Cars ``split``; ``bbox_crop`` crops every image to its annotated car box."""
    check_split(split)
    folder = _folder(Path(root).expanduser())
    meta = read_mat(folder / "devkit" / "cars_meta.mat", ["class_names"], LAYOUT)
    classes = [str(name) for name in meta["class_names"]]
    if split == "test":
        labels = _test_labels(folder)
        samples, boxes = _annotations(labels, folder / "cars_test", len(classes), bbox_crop)
    else:
        annotations = folder / "devkit" / "cars_train_annos.mat"
        samples, boxes = _annotations(annotations, folder / "cars_train", len(classes), bbox_crop)
    # as stored: the boxes are in the stored pixels' coordinates, as the paper read them
    dataset = ImageList(samples, classes, boxes=boxes, upright=False)
    return dataset if split == "test" else carve_val(dataset, split, seed, val_fraction)
