"""The one dataset type every reader returns: a list of (path, label) samples and class names."""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from sef.datasets.images import open_rgb
from sef.errors import DataError

Box = tuple[float, float, float, float]  # left, upper, right, lower in pixels (PIL crop order)
Parts = dict[str, tuple[float, float]]  # part name -> (x, y) pixel centre


class ImageList(Dataset):
    """Images on disk with 0-based labels into ``classes``.

    ``ds[i]`` opens ``samples[i]`` as RGB, turned upright by its EXIF orientation if ``upright``
    (else as stored), crops it to ``boxes[i]`` when boxes are given, trims ``trim_bottom`` pixel
    rows (FGVC-Aircraft's copyright banner), applies ``transform`` and returns ``(image, label)``.
    ``parts`` (demo data) holds each sample's part centres.

    ``upright`` defaults to True, as a viewer shows a photo: a list of one's own photos (a phone's,
    stored sideways and tagged) is meant to be seen the right way up, as ``folder`` and ``csv``
    data are. The readers of the benchmarks and of the generated sets pass False: their boxes and
    parts are in the stored pixels' coordinates, and the paper's recipe and the authors' code read
    the stored pixels.

    ``root`` (own data: ``folder`` and ``csv``) is the folder the images are named relative to
    (:meth:`names`), so that what the stable hold-out and a run's record of its training images
    read of them stays the same when the data moves; None elsewhere.

    ``missing_hint`` (csv data: the CSV's folder, ``image_root``, or the paths as listed) says,
    given the missing images' paths, where they were looked for, in place of the usual hint when
    they are missing (:mod:`sef.datasets.checking`).
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        classes: Sequence[str],
        *,
        transform: Callable[[Image.Image], Any] | None = None,
        boxes: Sequence[Box] | None = None,
        trim_bottom: int = 0,
        parts: Sequence[Parts] | None = None,
        upright: bool = True,
        root: str | os.PathLike | None = None,
        missing_hint: Callable[[list[str]], str] | None = None,
    ) -> None:
        self.samples = [(str(path), int(label)) for path, label in samples]
        self.classes = list(classes)
        self.transform = transform
        self.boxes = None if boxes is None else list(boxes)
        self.trim_bottom = trim_bottom
        self.parts = None if parts is None else list(parts)
        self.upright = upright
        self.root = None if root is None else str(root)
        self.missing_hint = missing_hint
        for name, extra in (("boxes", self.boxes), ("parts", self.parts)):
            if extra is not None and len(extra) != len(self.samples):
                raise ValueError(f"{name} has {len(extra)} entries for {len(self.samples)} samples")
        for path, label in self.samples:
            if not 0 <= label < len(self.classes):
                raise DataError(
                    f"label {label} of {path} is outside the {len(self.classes)} classes "
                    f"(labels are 0-based); fix the dataset's label list"
                )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        image = open_rgb(path, upright=self.upright)
        if self.boxes is not None:
            image = image.crop(self.boxes[index])
        if self.trim_bottom:
            image = image.crop((0, 0, image.width, max(1, image.height - self.trim_bottom)))
        if self.transform is not None:
            image = self.transform(image)
        return image, label

    @property
    def targets(self) -> list[int]:
        """Every sample's label, in order (what samplers and class counts need)."""
        return [label for _, label in self.samples]

    def select(self, indices: Sequence[int]) -> ImageList:
        """A new ImageList of the samples at ``indices``, keeping boxes and parts aligned (and
        read as this one reads them)."""
        indices = list(indices)
        return ImageList(
            [self.samples[i] for i in indices],
            self.classes,
            transform=self.transform,
            boxes=None if self.boxes is None else [self.boxes[i] for i in indices],
            trim_bottom=self.trim_bottom,
            parts=None if self.parts is None else [self.parts[i] for i in indices],
            upright=self.upright,
            root=self.root,
            missing_hint=self.missing_hint,
        )

    def names(self) -> list[str]:
        """Each image's name: its path relative to ``root`` (the whole path where it lies outside,
        or without a root), with / separators and in Unicode's composed form (NFC), so that a
        folder copied from a Mac names its images as one spelled on Linux does. The readers join
        their paths to ``root`` as written, so the root is cut off as text (100,000 paths took
        seconds through pathlib)."""
        inside = "" if self.root is None else os.path.join(self.root, "")  # the root and a /
        return [unicodedata.normalize("NFC", _relative(p, inside)) for p, _ in self.samples]

    def drop(self, paths: Sequence[str]) -> None:
        """Remove the samples whose path is in ``paths``, in place (keeps boxes/parts aligned)."""
        unwanted = set(paths)
        kept = self.select([i for i, (p, _) in enumerate(self.samples) if p not in unwanted])
        self.samples, self.boxes, self.parts = kept.samples, kept.boxes, kept.parts

    def __repr__(self) -> str:
        return f"ImageList({len(self)} images, {len(self.classes)} classes)"


def _relative(path: str, inside: str) -> str:
    """``path`` less the folder ``inside`` (ending in a separator, or "") it starts with, with /
    separators; the whole of it where it starts otherwise."""
    if inside and path.startswith(inside):
        path = path[len(inside) :]
    return path.replace(os.sep, "/")
