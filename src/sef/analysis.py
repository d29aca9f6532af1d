"""Feature-map maths shared by the figures (sef.viz) and part localisation (sef.parts).

The backbone's map, channel correlations and each group's activation map: tensors in, tensors
out, so they work in notebooks too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from sef.config import setting_said
from sef.errors import DataError, warn
from sef.losses import normalised_channels
from sef.metrics import not_finite_images, not_finite_said
from sef.model import SEF
from sef.modes import evaluation_mode
from sef.text import counted

_EPS = torch.finfo(torch.float32).eps


@torch.no_grad()
def backbone_features(model: SEF, images: Tensor) -> Tensor:
    """The feature map [B, C, h, w] of ``images`` (tokens as a grid), in eval mode, on CPU."""
    with evaluation_mode(model):
        device = next(model.parameters()).device
        return model.feature_map(images.to(device)).float().cpu()


def warn_if_one_position(
    features: Tensor, image_size: Sequence[int], consequence: str, shows: str
) -> None:
    """A warning where the feature map [B, C, h, w] of ``image_size`` images is 1 x 1 (one
    position or patch): a figure of where channels activate then shows nothing of places.
    ``consequence`` says what the figure draws instead; ``shows`` what a larger map would show.
    """
    if math.prod(features.shape[-2:]) == 1:
        height, width = image_size
        warn(
            f"the backbone's last feature map is 1 x 1 for this model's {height} x {width} images "
            f"(one position or patch), so {consequence}; a model trained at a larger image size "
            f"({setting_said('data.image_size')}), or on a backbone whose last map is larger, "
            f"shows {shows}"
        )


def warn_if_not_finite(non_finite: int, images: int, outputs: str) -> None:
    """A warning where the model's ``outputs`` (e.g. "feature maps") were not finite on
    ``non_finite`` of ``images`` images: an overflowed checkpoint, whose figure means nothing."""
    if non_finite:
        said = not_finite_said(
            non_finite, counted(images, "image"), "the figure means nothing", outputs
        )
        warn(f"{said}; draw an earlier checkpoint of its run")


def channel_cosine(features: Tensor) -> Tensor:
    """Per image, the cosine between every pair of channels: [B, C, C] from [B, C, h, w]."""
    unit = normalised_channels(features)
    return unit @ unit.transpose(1, 2)


def channel_cosine_sum(features: Tensor) -> Tensor:
    """``channel_cosine(features).sum(0)`` as one C x C product, without its [B, C, C] tensor
    (2 GiB for a batch of 128 images of 2048 channels)."""
    unit = normalised_channels(features).transpose(0, 1).flatten(1)  # [C, B * h * w]
    return unit @ unit.T


def mean_channel_correlation(model: SEF, batches: Iterable[Tensor]) -> tuple[Tensor, int]:
    """The C x C channel correlation averaged over every image in ``batches``, and the count."""
    total, count, non_finite = None, 0, 0
    for images in batches:
        features = backbone_features(model, images)
        non_finite += not_finite_images(features)
        if total is None:
            warn_if_one_position(
                features,
                images.shape[-2:],
                "each channel's map is a single value and the cosine of two channels is 1, -1 or "
                "0 (the signs of their values), not how alike their maps are",
                "how alike the channels' maps are",
            )
        batch_sum = channel_cosine_sum(features)
        total = batch_sum if total is None else total + batch_sum
        count += features.shape[0]
    if total is None:
        raise DataError("no images to average the channel correlation over; pass at least one")
    warn_if_not_finite(non_finite, count, "feature maps")
    return total / count, count


def group_means(matrix: Tensor, group_sizes: Sequence[int]) -> Tensor:
    """Block means of a C x C matrix over contiguous channel groups: the G x G matrix D."""
    blocks = [row.split(list(group_sizes), dim=1) for row in matrix.split(list(group_sizes), dim=0)]
    return torch.tensor([[block.mean().item() for block in row] for row in blocks])


def group_maps(features: Tensor, group_sizes: Sequence[int]) -> Tensor:
    """Each group's activation map, the mean of its channels: [B, G, h, w]."""
    parts = features.split(list(group_sizes), dim=1)
    return torch.stack([part.mean(1) for part in parts], dim=1)


def normalise_maps(maps: Tensor) -> Tensor:
    """Scale every map of [B, G, h, w] to [0, 1] on its own (a flat map becomes all zeros)."""
    flat = maps.flatten(2)
    low = flat.min(2, keepdim=True).values
    span = flat.max(2, keepdim=True).values - low
    return ((flat - low) / span.clamp_min(_EPS)).view_as(maps)


def upsample_maps(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Scale each [B, G, h, w] map to [0, 1], then bilinearly upsample it to the image size.

    Scaling first keeps a flat map (e.g. a 1 x 1 feature map) exactly zero instead of amplifying
    the interpolation's rounding noise.
    """
    upsampled = F.interpolate(normalise_maps(maps), size=size, mode="bilinear", align_corners=False)
    return upsampled.clamp(0, 1)
