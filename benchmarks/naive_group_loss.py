"""SEF's group loss the naive way, as the authors' code computes it: the yardstick.

Both variants first build the full [B, C, C] matrix of channel cosines, then average its
blocks. That is plain and obviously right, and costs O(B*C^2*HW) time and B*C^2 memory;
``sef.group_loss`` computes the same numbers without the C x C matrix. The benchmarks time
the two against each other and the tests check they agree.
"""

from __future__ import annotations

from itertools import accumulate

import torch
from torch import Tensor

from sef.groups import group_sizes
from sef.losses import EPS, GROUP_LOSS_VARIANTS


def channel_cosines(features: Tensor) -> Tensor:
    """[B, C, H, W] -> [B, C, C]: cos_ij between the flattened channels i and j of each image."""
    x = features.float().flatten(2)
    x = x / (x.norm(dim=2, keepdim=True) + EPS)
    return torch.bmm(x, x.transpose(1, 2))


def _group_bounds(sizes: list[int]) -> list[tuple[int, int]]:
    """[start, stop) channel index of each contiguous group."""
    stops = accumulate(sizes)
    return [(stop - size, stop) for size, stop in zip(sizes, stops, strict=True)]


def naive_paper_group_loss(cosines: Tensor, sizes: list[int]) -> Tensor:
    """Eq. 4: D_mn = block mean of cos over groups m, n; L = (||D||_F^2 - 2||diag D||^2) / 2."""
    bounds = _group_bounds(sizes)
    rows = [
        torch.stack([cosines[:, a:b, c:d].mean(dim=(1, 2)) for c, d in bounds], dim=1)
        for a, b in bounds
    ]
    mean_cos = torch.stack(rows, dim=1)  # [B, G, G]
    diagonal = mean_cos.diagonal(dim1=1, dim2=2)
    per_image = 0.5 * (mean_cos.square().sum(dim=(1, 2)) - 2 * diagonal.square().sum(dim=1))
    return per_image.mean()


def naive_reference_group_loss(cosines: Tensor, sizes: list[int]) -> Tensor:
    """Authors' code: mean of (1 - cos^2) inside each group, mean cos^2 to all earlier groups."""
    squared = cosines.square()
    bounds = _group_bounds(sizes)
    groups = len(sizes)
    intra = sum((1 - squared[:, a:b, a:b]).mean() for a, b in bounds) / groups
    if groups == 1:
        return 0.5 * intra
    inter = sum(squared[:, a:b, :a].mean() for a, b in bounds[1:])
    return 0.5 * (intra + inter / (groups * (groups - 1) / 2))


def naive_group_loss(features: Tensor, groups: int, variant: str = "reference") -> Tensor:
    """The group loss of a [B, C, H, W] feature map through the full C x C cosine matrix."""
    if variant not in GROUP_LOSS_VARIANTS:
        raise ValueError(
            f"unknown group loss variant {variant!r}; use one of {GROUP_LOSS_VARIANTS}"
        )
    sizes = group_sizes(features.shape[1], groups)
    cosines = channel_cosines(features)
    if variant == "paper":
        return naive_paper_group_loss(cosines, sizes)
    return naive_reference_group_loss(cosines, sizes)
