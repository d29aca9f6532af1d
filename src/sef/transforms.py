"""The paper's image pipelines as named recipes, built on torchvision transforms v2.

``resize_crop`` (CUB, Aircraft): resize to a square of round(image_size * 600 / 448) pixels, then a
random crop of ``image_size`` (train) or a center crop (test). ``resize`` (Cars, Dogs): resize to an
``image_size`` square. Train pipelines add a horizontal flip; both end with ImageNet normalisation.
The input is a PIL image (or a uint8 tensor [3, H, W]); the output a float tensor [3, S, S].
With ``normalise=False`` the output stays uint8 (a quarter of the bytes to collate, pin and copy)
and :func:`normalise_batch` finishes a batch of such images on the device.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torchvision.transforms import v2

from sef.choices import RECIPES
from sef.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The paper resizes to 600 before cropping 448; other crop sizes keep that ratio.
RESIZE_CROP_RATIO = 600 / 448


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


def _normalise() -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


@functools.lru_cache(maxsize=8)
def _imagenet_statistics(device: torch.device) -> tuple[Tensor, Tensor]:
    """ImageNet mean and std as [3, 1, 1] float32 tensors on ``device``, built once, so that a
    batch copies nothing from the host (each such copy makes the host wait for a GPU)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=device).view(3, 1, 1)
    return mean, std


def normalise_batch(images: Tensor) -> Tensor:
    """uint8 images [..., 3, H, W] to ImageNet-normalised float32, exactly as the pipelines do
    (their ``ToDtype(scale=True)`` then ``Normalize``, in the same operations)."""
    mean, std = _imagenet_statistics(images.device)
    return images.to(torch.float32).mul_(1.0 / 255).sub_(mean).div_(std)


def train_transform(recipe: str, image_size: int, normalise: bool = True) -> v2.Compose:
    """Training pipeline: resize (+ random crop for ``resize_crop``), flip, normalise."""
    side = resize_size(recipe, image_size)
    steps: list[v2.Transform] = [v2.ToImage(), v2.Resize((side, side), antialias=True)]
    if recipe == "resize_crop":
        steps.append(v2.RandomCrop(image_size))
    steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps + (_normalise() if normalise else []))


def test_transform(recipe: str, image_size: int, normalise: bool = True) -> v2.Compose:
    """Evaluation pipeline: resize (+ center crop for ``resize_crop``), normalise."""
    side = resize_size(recipe, image_size)
    steps: list[v2.Transform] = [v2.ToImage(), v2.Resize((side, side), antialias=True)]
    if recipe == "resize_crop":
        steps.append(v2.CenterCrop(image_size))
    return v2.Compose(steps + (_normalise() if normalise else []))
