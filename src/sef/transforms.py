"""The paper's image pipelines as named recipes, built on torchvision transforms v2.

``resize_crop`` (CUB, Aircraft): resize to a square of round(image_size * 600 / 448) pixels, then a
random crop of ``image_size`` (train) or a center crop (test). ``resize`` (Cars, Dogs): resize to an
``image_size`` square. Train pipelines add a horizontal flip; both end with ImageNet normalisation.
The input is a PIL image (or a uint8 tensor [3, H, W]); the output a float tensor [3, S, S].
With ``normalise=False`` the output stays uint8 (a quarter of the bytes to collate, pin and copy)
and :func:`normalise_batch` finishes a batch of such images on the device.

A decoded-image cache (:mod:`sef.datasets.cache`) stores what :func:`resize_transform` makes of
each image; :func:`draw_crop_flip` then draws, for one image, the numbers the training pipeline
would draw, and :func:`crop_flip_batch` applies them to a whole batch on the device: together the
same pixels as :func:`train_transform` (tested bit-identical).

:class:`Preprocessing` is the one record of how a trained model's test images are prepared (recipe,
sizes, mean and std): evaluation, test-time augmentation, prediction, the figures and the exported
``preprocessing.json`` all read it.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from sef.choices import RECIPES
from sef.errors import ConfigError

if TYPE_CHECKING:  # imported where a pipeline is built: a Preprocessing record needs none
    from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The paper resizes to 600 before cropping 448; other crop sizes keep that ratio.
RESIZE_CROP_RATIO = 600 / 448
# How every pipeline resizes (an exported preprocessing.json records it for deployments): the
# value of torchvision's InterpolationMode, kept as text so that loading a model needs no
# torchvision (`sef info --checkpoint` of a small_cnn run).
RESIZE_INTERPOLATION = "bilinear"
RESIZE_ANTIALIAS = True


def _check(recipe: str, image_size: int) -> None:
    if recipe not in RECIPES:
        raise ConfigError(
            f"unknown transform recipe {recipe!r}; choose one of {', '.join(RECIPES)}"
        )
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 8:
        raise ConfigError(f"image_size must be an integer of at least 8 pixels, got {image_size!r}")


def resize_size(recipe: str, image_size: int) -> int:
    """Side of the square the recipe resizes to before any crop."""
    _check(recipe, image_size)
    return round(image_size * RESIZE_CROP_RATIO) if recipe == "resize_crop" else image_size


def _v2():
    """torchvision's transforms v2, imported where a pipeline is built: importing torchvision
    takes about twice as long as torch (docs/performance.md), and a model loaded to be described
    or exported builds none."""
    from torchvision.transforms import v2

    return v2


def _normalise(
    mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
) -> list[v2.Transform]:
    v2 = _v2()
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


@functools.lru_cache(maxsize=8)
def _statistics(
    device: torch.device, mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[Tensor, Tensor]:
    """Mean and std as [3, 1, 1] float32 tensors on ``device``, built once, so that a batch
    copies nothing from the host (each such copy makes the host wait for a GPU)."""
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=device).view(3, 1, 1)
    return mean_t, std_t


def normalise_batch(
    images: Tensor,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> Tensor:
    """uint8 images [..., 3, H, W] to normalised float32 (ImageNet's statistics unless given),
    exactly as the pipelines do (their ``ToDtype(scale=True)`` then ``Normalize``, in the same
    operations)."""
    mean_t, std_t = _statistics(images.device, tuple(mean), tuple(std))
    return images.to(torch.float32).mul_(1.0 / 255).sub_(mean_t).div_(std_t)


def _resize(recipe: str, image_size: int) -> list[v2.Transform]:
    side = resize_size(recipe, image_size)
    v2 = _v2()
    mode = v2.InterpolationMode(RESIZE_INTERPOLATION)
    resize = v2.Resize((side, side), mode, antialias=RESIZE_ANTIALIAS)
    return [v2.ToImage(), resize]


def resize_transform(recipe: str, image_size: int) -> v2.Compose:
    """The pipelines' first steps: a PIL image to the uint8 tensor [3, side, side] that both
    pipelines crop (what a decoded-image cache stores)."""
    return _v2().Compose(_resize(recipe, image_size))


def train_transform(recipe: str, image_size: int, normalise: bool = True) -> v2.Compose:
    """Training pipeline: resize (+ random crop for ``resize_crop``), flip, normalise."""
    v2 = _v2()
    steps = _resize(recipe, image_size)
    if recipe == "resize_crop":
        steps.append(v2.RandomCrop(image_size))
    steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps + (_normalise() if normalise else []))


def test_transform(
    recipe: str,
    image_size: int,
    normalise: bool = True,
    resized: bool = False,
    *,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> v2.Compose:
    """Evaluation pipeline: resize (+ center crop for ``resize_crop``), normalise. ``resized``:
    the input is already :func:`resize_transform`'s output, so the pipeline starts after it."""
    v2 = _v2()
    steps = [] if resized else _resize(recipe, image_size)
    if recipe == "resize_crop":
        steps.append(v2.CenterCrop(image_size))
    steps += _normalise(mean, std) if normalise else []
    return v2.Compose(steps or [v2.Identity()])


def draw_crop_flip(recipe: str, image_size: int) -> tuple[int, int, int]:
    """(top, left, flipped) of one training image: the numbers :func:`train_transform` draws from
    torch's default generator, in its order (v2.RandomCrop's two offsets, only where the resized
    side exceeds the crop, then v2.RandomHorizontalFlip's coin), so that under one seed both
    give the same crop and flip."""
    side = resize_size(recipe, image_size)
    top = left = 0
    if recipe == "resize_crop" and side > image_size:
        top = int(torch.randint(0, side - image_size + 1, size=()))
        left = int(torch.randint(0, side - image_size + 1, size=()))
    flipped = bool(torch.rand(1) < 0.5)  # RandomHorizontalFlip(p=0.5) flips when rand < p
    return top, left, int(flipped)


def crop_flip_batch(images: Tensor, crops: Tensor, image_size: int) -> Tensor:
    """Crop and flip resized images [B, 3, side, side] (any device) as ``crops`` [B, 3] (rows of
    :func:`draw_crop_flip`, on the host) say: [B, 3, image_size, image_size], the same pixels as
    :func:`train_transform` without its normalisation. A slice per image and one stack: on the
    CPU that is a copy (a gather of the batch in one indexing op took 5 x longer), on a GPU a
    few small kernels, and reading ``crops`` never waits for the device."""
    size = image_size
    out = []
    for image, (top, left, flipped) in zip(images, crops.tolist(), strict=True):
        window = image[:, top : top + size, left : left + size]
        out.append(window.flip(-1) if flipped else window)
    return torch.stack(out)


@dataclass(frozen=True)
class Preprocessing:
    """How a model's test images are prepared: resize to ``resize_size`` squared, center-crop
    ``crop_size`` (the ``resize`` recipe resizes straight to ``image_size``: nothing to crop),
    scale to [0, 1], normalise with ``mean`` / ``std`` per RGB channel."""

    image_size: int
    recipe: str
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    @property
    def resize_size(self) -> int:
        return resize_size(self.recipe, self.image_size)

    @property
    def crop_size(self) -> int:
        return self.image_size

    def test_transform(self, normalise: bool = True) -> v2.Compose:
        """The evaluation pipeline this record describes (see :func:`test_transform`)."""
        return test_transform(self.recipe, self.image_size, normalise, mean=self.mean, std=self.std)

    def to_dict(self) -> dict:
        """Plain values: the fields, then resize_size and crop_size."""
        return {
            **asdict(self),
            "mean": list(self.mean),
            "std": list(self.std),
            "resize_size": self.resize_size,
            "crop_size": self.crop_size,
        }
