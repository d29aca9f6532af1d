"""Batches on the device: moved there (uint8 normalised there), run in the chosen precision."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from sef import transforms

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Mixed precision ``amp`` (none, bf16, fp16) on ``device``."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


def to_device(images: Tensor, device: torch.device, channels_last: bool) -> Tensor:
    """Move a batch to ``device``; uint8 pixels are normalised there (see sef.transforms)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    images = images.to(device, non_blocking=True, memory_format=fmt)
    return transforms.normalise_batch(images) if images.dtype == torch.uint8 else images
