"""Per-epoch and per-image seeds: the same draws in any process, and nothing leaks out."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from sef.seeding import EpochSampler, SeededItems, item_seed, seed_everything


def _draws() -> tuple[float, float, float]:
    return random.random(), float(np.random.rand()), torch.rand(()).item()


def test_an_item_seed_gives_the_same_draws_and_restores_the_generators():
    seed_everything(0)
    with item_seed(7, 2, 5):
        first = _draws()
    after = _draws()
    seed_everything(0)
    with item_seed(7, 2, 5):
        assert _draws() == first
    assert _draws() == after  # the generators continue as if the item had not drawn
    others = [(8, 2, 5), (7, 3, 5), (7, 2, 6)]
    for seed, epoch, index in others:
        with item_seed(seed, epoch, index):
            assert _draws() != first
    seed_everything(7, 2, 5)  # a process's seed is not an item's seed
    assert _draws() != first


def test_epoch_sampler_pairs_the_wrapped_order_with_its_epoch():
    inner = DistributedSampler(range(10), num_replicas=1, rank=0, shuffle=True, seed=3)
    sampler = EpochSampler(inner)
    orders = []
    for epoch in (1, 2):
        sampler.set_epoch(epoch)
        keys = list(sampler)
        inner.set_epoch(epoch)
        assert keys == [(epoch, index) for index in inner] and len(sampler) == 10
        orders.append([index for _, index in keys])
    assert orders[0] != orders[1]  # set_epoch reached the wrapped sampler


class RandomItems(Dataset):
    """Each item is drawn from every global generator, as an augmentation would."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([index, *_draws()], dtype=torch.float64)


def _epochs(workers: int) -> list[torch.Tensor]:
    inner = DistributedSampler(RandomItems(), num_replicas=1, rank=0, shuffle=True, seed=0)
    sampler = EpochSampler(inner)
    loader = DataLoader(
        SeededItems(RandomItems(), seed=4),
        batch_size=4,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    batches = []
    for epoch in (1, 2):
        sampler.set_epoch(epoch)
        batches.append(torch.cat(list(loader)))
    return batches


@pytest.mark.parametrize("workers", [1, 2])
def test_items_draw_the_same_with_any_number_of_persistent_workers(workers):
    in_process = _epochs(0)
    assert all(torch.equal(a, b) for a, b in zip(in_process, _epochs(workers), strict=True))
    first, second = in_process
    assert not torch.equal(first[:, 1:], second[:, 1:])  # a new epoch draws anew
    by_index = {int(row[0]): row for row in first}
    with item_seed(4, 1, 5):
        assert torch.equal(by_index[5], RandomItems()[5])
