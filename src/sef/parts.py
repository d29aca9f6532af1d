"""Do SEF's groups find parts? A number the paper could not give, measured where part centres are
known (the demo data's ``ds.parts``).

For every image and group we take the peak of the group's activation map (the centre of the
hottest feature-map cell, in input pixels) and the part centre nearest to it. A model whose groups
learned distinct parts peaks on *different* parts with different groups, consistently:

- ``fractions[g][p]``: the share of images whose group-g peak is nearest part p;
- ``distinctness``: over images and pairs of groups, how often the two groups' nearest parts
  differ (1 = always different parts, 0 = always the same; ``chance_distinctness`` = 1 - 1/P if
  every group picked a part uniformly at random).

Groups that merely prefer a fixed spot of the image (a corner, the centre) also land on
different parts, because objects move. The ``static_*`` numbers are the same statistics for a
model whose group g always peaks at its most frequent location: only numbers above them show
that the groups follow the parts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from itertools import combinations

import torch
from PIL import Image
from torch import Tensor
from torchvision import tv_tensors
from tqdm import tqdm

from sef.analysis import backbone_features, group_maps, warn_if_one_position
from sef.errors import DataError
from sef.model import SEF
from sef.text import bars_drawn

Parts = dict[str, tuple[float, float]]


@dataclass
class PartReport:
    """Where each group's activation peak falls relative to the known parts, with baselines."""

    part_names: list[str]
    images: int
    fractions: list[list[float]]
    distinctness: float | None
    chance_distinctness: float
    static_fractions: list[list[float]] | None = None
    static_distinctness: float | None = None

    @property
    def dominant_parts(self) -> list[str]:
        """Each group's most frequent nearest part."""
        return [
            self.part_names[max(range(len(row)), key=row.__getitem__)] for row in self.fractions
        ]

    def to_dict(self) -> dict:
        return {**asdict(self), "dominant_parts": self.dominant_parts}

    def summary(self) -> str:
        """One line for people: each group's dominant part, and distinctness vs the baselines."""
        shares = []
        for g, (name, row) in enumerate(zip(self.dominant_parts, self.fractions, strict=True)):
            static = (
                self.static_fractions and f" (static {100 * max(self.static_fractions[g]):.0f}%)"
            )
            shares.append(f"group {g + 1} -> {name} {100 * max(row):.0f}%{static or ''}")
        text = ", ".join(shares)
        if self.distinctness is not None:
            baselines = [f"chance {self.chance_distinctness:.2f}"]
            if self.static_distinctness is not None:
                baselines.insert(0, f"static {self.static_distinctness:.2f}")
            text += f"; distinctness {self.distinctness:.2f} ({', '.join(baselines)})"
        return f"{text}; {self.images} images"


def transform_with_parts(
    transform: Callable, image: Image.Image, parts: Parts
) -> tuple[Tensor, Parts]:
    """Apply a torchvision v2 transform to an image and, identically, to its part centres."""
    points = torch.tensor([list(xy) for xy in parts.values()], dtype=torch.float32)
    keypoints = tv_tensors.KeyPoints(points, canvas_size=(image.height, image.width))
    tensor, moved = transform(image, keypoints)
    return tensor, {name: tuple(xy) for name, xy in zip(parts, moved.tolist(), strict=True)}


def peak_locations(maps: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Pixel (x, y) of the centre of each map's hottest cell: [N, G, 2] from [N, G, h, w]."""
    height, width = maps.shape[-2:]
    index = maps.flatten(2).argmax(2)
    rows, cols = index // width, index % width
    x = (cols.float() + 0.5) * image_size[1] / width
    y = (rows.float() + 0.5) * image_size[0] / height
    return torch.stack([x, y], dim=-1)


def nearest_parts(peaks: Tensor, parts: Sequence[Parts], part_names: Sequence[str]) -> Tensor:
    """Index into ``part_names`` of the part centre nearest each peak: [N, G]."""
    centres = torch.tensor([[list(p[name]) for name in part_names] for p in parts])
    return torch.cdist(peaks.float(), centres.float()).argmin(-1)


def _fractions_and_distinctness(nearest: Tensor, parts: int) -> tuple[list[list[float]], float]:
    count, groups = nearest.shape
    fractions = [
        [int((nearest[:, g] == p).sum()) / count for p in range(parts)] for g in range(groups)
    ]
    pairs = list(combinations(range(groups), 2))
    if not pairs:
        return fractions, None
    differ = torch.stack([nearest[:, a] != nearest[:, b] for a, b in pairs], dim=1)
    return fractions, int(differ.sum()) / differ.numel()


def part_report(
    nearest: Tensor, part_names: Sequence[str], static_nearest: Tensor | None = None
) -> PartReport:
    """Summarise the nearest-part indices [N, G] of every image and group (and, if given, the
    indices [N, G] a static-peak model would have)."""
    fractions, distinctness = _fractions_and_distinctness(nearest, len(part_names))
    static_fractions = static_distinctness = None
    if static_nearest is not None:
        static_fractions, static_distinctness = _fractions_and_distinctness(
            static_nearest, len(part_names)
        )
    return PartReport(
        part_names=list(part_names),
        images=nearest.shape[0],
        fractions=fractions,
        distinctness=distinctness,
        chance_distinctness=1 - 1 / len(part_names),
        static_fractions=static_fractions,
        static_distinctness=static_distinctness,
    )


def static_peaks(peaks: Tensor) -> Tensor:
    """Every group's most frequent peak location, repeated for every image: [N, G, 2]."""
    modes = []
    for group in range(peaks.shape[1]):
        locations, counts = peaks[:, group].unique(dim=0, return_counts=True)
        modes.append(locations[counts.argmax()])
    return torch.stack(modes).expand_as(peaks)


@dataclass
class PartMeasurement:
    """A part report plus what a figure needs: peaks and part centres of every image, and the
    first few transformed images (kept for examples; all of them would not fit in memory)."""

    report: PartReport
    peaks: Tensor  # [N, G, 2] pixel (x, y) in the transformed image
    parts: list[Parts]  # part centres in the same pixels
    examples: Tensor  # [E, 3, H, W] model inputs (normalised) of the first E images


def measure_parts(
    model: SEF,
    dataset,
    transform: Callable,
    indices: Sequence[int],
    batch_size: int = 32,
    examples: int = 6,
    progress: bool | None = None,
    group_sizes: Sequence[int] | None = None,
) -> PartMeasurement:
    """Run ``model`` on ``dataset[indices]`` and report where each group's peak falls.

    ``dataset`` must have ``parts`` (the demo sets do); images are read untransformed so the
    part centres can follow ``transform`` exactly. ``group_sizes`` splits the channels other
    than the model's own groups (e.g. a plain model's, as SEF would split them).
    """
    sizes = list(group_sizes or model.group_sizes)
    if getattr(dataset, "parts", None) is None:
        raise DataError(
            "this dataset has no part annotations; part localisation needs the demo data "
            "(a model trained with `sef train`'s default demo preset)"
        )
    if not indices:
        raise DataError("no images to measure part localisation on; pass at least one")
    part_names = list(dataset.parts[indices[0]])
    saved, dataset.transform = dataset.transform, None
    images, parts, peaks = [], [], []
    try:
        for start in tqdm(
            range(0, len(indices), batch_size),
            desc="locating parts",
            disable=not bars_drawn(progress),
        ):
            batch_images = []
            for index in indices[start : start + batch_size]:
                picture, _ = dataset[index]
                tensor, moved = transform_with_parts(transform, picture, dataset.parts[index])
                batch_images.append(tensor)
                parts.append(moved)
            batch = torch.stack(batch_images)
            features = backbone_features(model, batch)
            if start == 0:
                warn_if_one_position(
                    features,
                    batch.shape[-2:],
                    "each group's map is a single value and every group peaks at the image's "
                    "centre, whatever the image shows",
                    "where each group peaks",
                )
            maps = group_maps(features, sizes)
            peaks.append(peak_locations(maps, tuple(batch.shape[-2:])))
            if start < examples:
                images.append(batch[: examples - start])
    finally:
        dataset.transform = saved
    all_peaks = torch.cat(peaks)
    report = part_report(
        nearest_parts(all_peaks, parts, part_names),
        part_names,
        nearest_parts(static_peaks(all_peaks), parts, part_names),
    )
    return PartMeasurement(report, all_peaks, parts, torch.cat(images) if images else batch[:0])
