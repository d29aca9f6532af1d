"""The run's data: splits read with a config's reader options, bad images, the training loader."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from sef import datasets, distributed, threads, transforms
from sef.config import Config, config_from_dict
from sef.distributed import Context
from sef.errors import DataError
from sef.seeding import EpochSampler, SeededItems

if TYPE_CHECKING:
    from sef.datasets import ImageList
    from sef.model import TrainedModel


@dataclass
class Data:
    """The two datasets of a run and their class names."""

    train: Dataset
    eval: Dataset
    classes: list[str]


def read_split(
    config: Config,
    split: str,
    *,
    root: str | os.PathLike | None = None,
    transform: Callable | None = None,
    progress: bool = True,
) -> ImageList:
    """``split`` of the dataset ``config`` names (from ``root`` instead of ``data.root`` if
    given), with its seed, val fraction and reader options: the one place they are assembled.
    ``progress`` shows the demo set being drawn on first use."""
    d = config.data
    options = dict(d.options)
    if d.dataset in datasets.GENERATED:
        options.setdefault("progress", progress)
    return datasets.load(
        d.dataset, d.root if root is None else root, split, transform=transform,
        seed=config.run.seed, val_fraction=d.val_fraction, **options,
    )  # fmt: skip


def load_data(config: Config, context: Context, progress: bool = True) -> Data:
    """Read the train and eval splits the config names, with the paper's transforms.

    For a CUDA device the images stay uint8 (a quarter of the bytes to collate, pin and copy)
    and ``train_one_epoch`` / ``evaluate`` normalise each batch on the GPU with the workers'
    formula; on the CPU the workers normalise, off the training process's critical path.
    """
    d = config.data
    normalise = context.device.type != "cuda"
    progress = progress and context.is_main
    train = read_split(
        config, d.train_split, progress=progress,
        transform=transforms.train_transform(d.recipe, d.image_size, normalise),
    )  # fmt: skip
    evaluation = read_split(
        config, d.eval_split, progress=progress,
        transform=transforms.test_transform(d.recipe, d.image_size, normalise),
    )  # fmt: skip
    if list(evaluation.classes) != list(train.classes):
        raise DataError(
            f"the {d.eval_split} split of {d.root} has different classes from {d.train_split}; "
            f"both splits must list the same classes"
        )
    if len(train.classes) < 2:
        named = ", ".join(repr(name) for name in train.classes) or "none"
        raise DataError(
            f"{d.root or d.dataset} holds {len(train.classes)} class ({named}); a classifier "
            f"needs at least two classes to tell apart"
        )
    return Data(train, evaluation, list(train.classes))


def trained_dataset(
    trained: TrainedModel, split: str = "test", root: str | os.PathLike | None = None
) -> ImageList:
    """``split`` of the data ``trained`` was trained on (or found under ``root``), with its
    test transform; DataError if that data's classes are not the model's."""
    config = config_from_dict(trained.config)
    loaded = read_split(config, split, root=root, transform=trained.test_transform)
    if list(loaded.classes) != list(trained.classes):
        where = config.data.root if root is None else root
        raise DataError(
            f"the classes of the {split} split under {where} differ from the "
            f"{len(trained.classes)} classes the model was trained on; pass its own data"
        )
    return loaded


def check_images(data: Data, config: Config, context: Context, progress: bool = True) -> None:
    """Apply ``data.bad_images`` to both splits at once: ``stop`` lists the unreadable images of
    both and stops, ``skip`` drops them (and says so), ``off`` trusts the files. Under DDP rank 0
    decodes and the others drop what it found, so no image is decoded twice."""
    splits = (data.train, data.eval)
    bad = None
    if context.is_main:
        bad = datasets.apply_bad_image_policy(
            splits,
            config.data.bad_images,
            workers=max(1, config.data.workers),
            progress=progress,
        )
        if bad:
            message = f"skipped {len(bad)} unreadable images, e.g. {bad[0][0]}"
            tqdm.write(message, file=sys.stderr)
    bad = distributed.broadcast_object(bad, context)
    if not context.is_main and bad:
        for dataset in splits:
            dataset.drop([path for path, _ in bad])


def train_loader(
    dataset: Dataset, *, batch_size: int, workers: int, seed: int, context: Context
) -> DataLoader:
    """The loader ``fit`` trains from: this process's shard of ``dataset``, reshuffled by
    ``loader.sampler.set_epoch(epoch)``, each image augmented under its own seed (sef.seeding),
    from workers that live across epochs into pinned memory on CUDA. ``batch_size`` is global."""
    world = context.world_size
    per_process = batch_size // world
    workers = threads.loader_workers(workers)
    sampler = DistributedSampler(
        dataset, num_replicas=world, rank=context.rank, shuffle=True, seed=seed
    )
    if len(sampler) < 2:
        raise DataError(f"training needs at least {2 * world} images; got {len(dataset)}")
    return DataLoader(
        SeededItems(dataset, seed),
        batch_size=per_process,
        sampler=EpochSampler(sampler),
        num_workers=workers,
        pin_memory=context.device.type == "cuda",
        persistent_workers=workers > 0,
        # BatchNorm cannot train on a batch of one image: drop such a remainder.
        drop_last=len(sampler) % per_process == 1,
    )
