"""Batches on the device: moved there (uint8 normalised there), run in the chosen precision."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from sef import transforms

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# What torch's CPU allocator names itself in the RuntimeError of a failed allocation (torch raises
# OutOfMemoryError for a GPU's memory only).
CPU_ALLOCATOR = "DefaultCPUAllocator"


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


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is torch running out of a GPU's or the CPU's memory (in this process or
    in a loader worker, whose error torch raises again with its message)."""
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and CPU_ALLOCATOR in str(error)
    )
