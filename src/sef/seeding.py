"""Reproducible randomness: each epoch, and each training image in it, draws from its own seed.

The training process reseeds from (seed, epoch, rank) when an epoch starts, and every training
image is augmented under a seed made from (seed, epoch, index), in whichever process loads it.
So what a run draws depends neither on the number of loader workers nor on what ran before a
resumed epoch, and the workers can live from one epoch to the next.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, get_worker_info

_ITEM = 0x5EF  # sets an item's seed (seed, epoch, index, _ITEM) apart from (seed, epoch, rank)


def _seeds(entropy: Sequence[int]) -> tuple[int, int]:
    first, second = np.random.SeedSequence(list(entropy)).generate_state(2)
    return int(first), int(second)


def seed_everything(seed: int, epoch: int = 0, rank: int = 0) -> None:
    """Seed Python, NumPy and torch (all devices) from (seed, epoch, rank)."""
    first, second = _seeds([seed, epoch, rank])
    random.seed(first)
    np.random.seed(second)
    torch.manual_seed(first)


@contextlib.contextmanager
def generators_kept(device: torch.device) -> Iterator[None]:
    """Python's, NumPy's and torch's generators (the CPU's and a CUDA ``device``'s) as they were
    before, after: a run seeds them all, and its caller's own draws go on as if it had not."""
    python, numpy = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)


@contextlib.contextmanager
def item_seed(seed: int, epoch: int, index: int) -> Iterator[None]:
    """Seed Python, NumPy and torch's CPU generator for one item (some tens of µs in a loader
    worker). In the training process itself (no workers) their states are restored after."""
    saved = None
    if get_worker_info() is None:
        saved = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    first, second = _seeds([seed, epoch, index, _ITEM])
    random.seed(first)
    np.random.seed(second)
    torch.default_generator.manual_seed(first)  # what CPU transforms draw from
    try:
        yield
    finally:
        if saved is not None:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.random.set_rng_state(saved[2])


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` for each index of ``sampler``; ``set_epoch`` sets both."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler, self.epoch = sampler, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((epoch, index) for index in self.sampler)


class SeededItems(Dataset):
    """``dataset`` indexed by ``(epoch, index)`` (an EpochSampler's keys): each item is loaded
    under :func:`item_seed`, so its random augmentation is the same in any process."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        with item_seed(self.seed, epoch, index):
            return self.dataset[index]
