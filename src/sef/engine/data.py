"""The run's data: its two splits (read by ``sef.datasets.read_split``), a decoded-image cache if
asked for, bad images, the loader."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from sef import datasets, distributed, threads, transforms
from sef.config import Config, DataConfig
from sef.config.schema import split_batch
from sef.config.values import setting_said, value_word
from sef.datasets import HELD_OUT, cache, checking, nothing_to_evaluate
from sef.datasets.checking import check_classes, classes_without_images
from sef.datasets.download import refetch_hint
from sef.datasets.splits import NoSuchSplit
from sef.distributed import Context
from sef.errors import DataError, for_reader, warn
from sef.seeding import EpochSampler, SeededItems
from sef.text import counted, some

if TYPE_CHECKING:
    from sef.datasets import ImageList

# Why an eval split may lack a class: held out (sef.datasets.HELD_OUT), or its images unreadable.
UNREADABLE = "its images of them were unreadable and skipped (data.bad_images=skip)"


@dataclass
class Data:
    """The two datasets of a run and their class names."""

    train: Dataset
    eval: Dataset
    classes: list[str]


def load_data(
    config: Config, context: Context, progress: bool | None = None, *, cached: bool = True
) -> Data:
    """Read the train and eval splits the config names, with the paper's transforms, from the
    decoded-image cache ``data.cache`` names (``cached=False``: not yet, see :func:`from_cache`).

    For a CUDA device the images stay uint8 (a quarter of the bytes to collate, pin and copy)
    and ``train_one_epoch`` / ``evaluate`` normalise each batch on the GPU with the workers'
    formula; on the CPU the workers normalise, off the training process's critical path.
    """
    d = config.data
    normalise = context.device.type != "cuda"
    progress = progress if context.is_main else False
    seed = config.run.seed
    train = datasets.read_split(
        d, d.train_split, seed=seed, progress=progress,
        transform=transforms.train_transform(d.recipe, d.image_size, normalise),
    )  # fmt: skip
    try:
        evaluation = datasets.read_split(
            d, d.eval_split, seed=seed, progress=progress,
            transform=transforms.test_transform(d.recipe, d.image_size, normalise),
        )  # fmt: skip
    except NoSuchSplit as missing:  # own data with train/ and val/ folders, say
        splits = (setting_said("data.train_split", "train"), setting_said("data.eval_split", "val"))
        raise NoSuchSplit(
            f"{missing}, or evaluate on held-out training images: "
            f"{for_reader(' ', ' and ').join(splits)}"
        ) from None
    if list(evaluation.classes) != list(train.classes):
        raise DataError(
            f"the {d.eval_split} split of {d.root} has different classes from {d.train_split}; "
            f"both splits must list the same classes"
        )
    check_classes(train, d.train_split, d.root or d.dataset)
    shared = {path for path, _ in train.samples} & {path for path, _ in evaluation.samples}
    if shared:
        raise DataError(
            f"data.eval_split={d.eval_split} shares {counted(len(shared), 'image')} with "
            f"data.train_split={d.train_split} (e.g. {min(shared)}), so it would score images "
            f"the model trained on; evaluate on a split it does not train on (data.eval_split=val "
            f"with data.train_split=train, or test)"
        )
    if len(evaluation) == 0:
        raise nothing_to_evaluate(d.eval_split, d.root or d.dataset, d.dataset)
    _warn_unevaluated(train, evaluation, d.eval_split)
    data = Data(train, evaluation, list(train.classes))
    return from_cache(data, config, context, progress) if cached else data


def training_change(
    recorded: Mapping[str, Any], now: Mapping[str, Any], holdout: str, checkpoint: str | Path
) -> str | None:
    """What it means that the training split is another than ``checkpoint`` recorded (both
    :func:`sef.datasets.splits.training_record`), in one sentence; None where it is the same, or
    either record is missing (a run saved before they were kept, data other than own)."""
    if not recorded or not now or recorded["train_fingerprint"] == now["train_fingerprint"]:
        return None
    changed = (
        f"the training images changed since {checkpoint} was saved: "
        f"{recorded['train_images']} then, {now['train_images']} now"
    )
    if holdout == "stable":
        return (
            f"{changed}; the stable hold-out (data.holdout=stable) moved no image between "
            f"training and val or test, save perhaps in classes so small that a fallback picks "
            f"their held-out image"
        )
    return (
        f"{changed}; the ranked hold-out (data.holdout=ranked) drew val and test anew where they "
        f"are held out, not declared, so they may hold images the run trained on: declare a "
        f"test split (DIR/test/, a split column) or train a new run, which holds out stably"
    )


def _warn_unevaluated(
    train: ImageList, evaluation: ImageList, split: str, why: str = HELD_OUT
) -> None:
    """Warn of the classes ``evaluation`` holds no image of: trained on, never measured."""
    missing = classes_without_images(evaluation, train.classes)
    if missing:
        warn(
            f"the {split} split holds no image of {counted(len(missing), 'class', 'classes')} "
            f"({some(missing, repr)}): trained on, never evaluated, and left out of the class-mean "
            f"accuracy; {why}"
        )


def from_cache(data: Data, config: Config, context: Context, progress: bool | None = None) -> Data:
    """``data`` read from the decoded-image cache ``data.cache`` names (sef.datasets.cache),
    built first where it is missing or stale (every split, once); where it cannot be (no room,
    or under torchrun, where ``sef data cache`` builds it first), ``data`` with one line why;
    ``data`` itself where ``data.cache`` is off."""
    d = config.data
    if d.cache == "off":
        return data
    folder = cache.folder_for(d.cache, d.dataset, d.root, d.options, d.recipe, d.image_size)

    def say(line: str) -> None:
        if context.is_main:
            tqdm.write(line, file=sys.stderr)

    def every_split() -> list[ImageList]:
        return cache.readable_splits(
            lambda split: datasets.read_split(d, split, seed=config.run.seed, progress=progress)
        )

    refused = None
    if context.distributed:
        refused = f"under torchrun it is built first: {_cache_command(d)}"
    try:
        opened, built = cache.ensure(
            folder, [data.train, data.eval], every_split, d.recipe, d.image_size,
            workers=d.workers, progress=progress if context.is_main else False, say=say,
            build_refused=refused, data=cache.origin(d.dataset, d.root, d.options),
        )  # fmt: skip
    except cache.CacheUnavailable as error:
        say(f"data.cache={d.cache} is off for this run: {error}")
        return data
    if built is not None:
        say(f"cached {built.summary()}")
    normalise = context.device.type != "cuda"
    return Data(
        cache.CachedTrainImages(data.train, opened, d.recipe, d.image_size),
        cache.CachedTestImages(data.eval, opened, d.recipe, d.image_size, normalise),
        data.classes,
    )


def _cache_command(d: DataConfig) -> str:
    """The `sef data cache` command that builds the cache ``d`` reads."""
    words = ["sef", "data", "cache", d.dataset, *([d.root] if d.root else [])]
    words += ["--recipe", d.recipe, "--image-size", str(d.image_size)]
    for key, value in (d.options or {}).items():
        words += ["-o", f"{key}={value_word(value)}"]
    if d.cache != "auto":
        words += ["--out", d.cache]
    return shlex.join(words)


def check_images(
    data: Data,
    config: Config,
    context: Context,
    progress: bool | None = None,
    resuming: bool = False,
) -> None:
    """Apply ``data.bad_images`` to both splits at once: ``stop`` lists the unreadable images of
    both and stops (``resuming``: with what a resume can do), ``skip`` drops them (and says so),
    ``off`` trusts the files. Only the images not verified as they are now are decoded: those
    the record of verified images (sef.datasets.verified) lacks, or whose files changed, and not
    those a decoded-image cache holds. Under DDP rank 0 decodes and the others drop what it
    found, so no image is decoded twice (and ``stop`` stops every process, where the others
    waited for an answer that never came)."""
    splits = (data.train, data.eval)

    def find() -> list:
        unevaluated = classes_without_images(data.eval, data.classes)
        bad = datasets.apply_bad_image_policy(
            splits,
            config.data.bad_images,
            workers=max(1, config.data.workers),
            progress=progress,
            record=checking.USE,
            decoded=cache.decoded_paths(splits),
            say=lambda line: tqdm.write(line, file=sys.stderr),
            fixes=checking.resumed_fixes() if resuming else None,
            hint=refetch_hint(config.data.dataset, config.data.root),
        )
        if bad:
            skipped = f"skipped {counted(len(bad), 'unreadable image')}, e.g. {bad[0][0]}"
            _check_left(data, config.data, skipped, unevaluated)
            tqdm.write(skipped, file=sys.stderr)
        return bad

    bad = distributed.on_main(find, context)
    if not context.is_main and bad:
        for dataset in splits:
            dataset.drop([path for path, _ in bad])


def _check_left(data: Data, d: DataConfig, skipped: str, unevaluated: list[str]) -> None:
    """DataError where skipping unreadable images left the training split without images of a
    class, or the eval split without any; a warning of the classes it left unevaluated that
    were evaluated before (``unevaluated``: those that were not)."""
    source = d.root or d.dataset
    unseen = classes_without_images(data.train, data.classes)
    if unseen:
        raise DataError(
            f"{skipped}: the {d.train_split} split of {source} has no readable image left of "
            f"{counted(len(unseen), 'class', 'classes')} ({some(unseen, repr)}); replace the "
            f"unreadable images or remove the class"
        )
    if len(data.eval) == 0:
        raise DataError(
            f"{skipped}: the {d.eval_split} split of {source} has no readable image left, so "
            f"there is nothing to evaluate on; replace the unreadable images"
        )
    if classes_without_images(data.eval, data.classes) != unevaluated:
        _warn_unevaluated(data.train, data.eval, d.eval_split, UNREADABLE)


# How torch reports a loader worker that died (torch/csrc/DataLoader.cpp, and its DataLoader's
# "DataLoader worker (pid(s) ...) exited unexpectedly" where it found the worker gone first).
WORKER_DIED = "DataLoader worker (pid"
SHM = "the shared memory its batches pass through (/dev/shm)"
# What torch's worker raises where /dev/shm cannot take a batch (a container's default 64 MB).
SHM_FULL = "unable to allocate shared memory"


def _out_of_memory() -> str:
    """The likely cause of a worker ended by the system, with the setting that takes less."""
    return (
        ", which is most often the system ending it as memory ran out "
        f"(fewer {setting_said('data.workers')} take less)"
    )


def _shm_advice() -> str:
    """How /dev/shm takes the batches: a larger one, or fewer workers."""
    return (
        f"(raise its size, e.g. docker run --shm-size, or use fewer {setting_said('data.workers')})"
    )


def _any_cause() -> str:
    """How to see why a worker died of anything else: load in the training process."""
    load = setting_said("data.workers", 0)
    return f" ({load} loads in the training process and shows what it meets)"


def worker_death(error: BaseException) -> str | None:
    """A loader worker's death that torch reports as ``error``, in words with its likely cause
    (torch's own message ends in advice about its settings, or in none), also where ``error`` is
    the broken connection of a batch the worker was passing when it died, or a worker's error
    saying that /dev/shm could not take its batch; None for any other error."""
    try:  # how the worker died, as torch's SIGCHLD handler would raise it a moment later, anywhere
        torch.utils.data._utils.signal_handling._error_if_any_worker_fails()
    except RuntimeError as reported:
        error = reported
    text = str(error).strip()
    if isinstance(error, RuntimeError) and text.startswith("Caught ") and SHM_FULL in text:
        return f"a data loader worker could not hand over a batch: {SHM} is full {_shm_advice()}"
    if not isinstance(error, RuntimeError) or not text.startswith(WORKER_DIED):
        return None
    what = text.split(". ")[0].rstrip(".").replace(" is killed", " was killed")
    what = what.replace("DataLoader worker", "a data loader worker", 1)
    if "signal: Bus error" in text:
        return f"{what}, which is most often {SHM} filling up {_shm_advice()}"
    if "signal: Killed" in text or text.endswith("exited unexpectedly"):  # killed, since reaped
        return what + _out_of_memory()
    return what + _any_cause()


class DeviceBatches:
    """A loader whose batches ``finish(inputs, device)`` completes on the device (a cache's
    crop and flip: sef.datasets.cache); ``sampler`` and ``len`` are the loader's."""

    def __init__(self, loader: DataLoader, finish: Callable, device: torch.device) -> None:
        self.loader, self.finish, self.device = loader, finish, device

    @property
    def sampler(self) -> Any:
        return self.loader.sampler

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for inputs, labels in self.loader:
            yield self.finish(inputs, self.device), labels


def end_workers(*loaders: DataLoader | DeviceBatches) -> None:
    """End the worker processes that ``loaders`` keep from one pass to the next (persistent
    workers), now rather than when the loaders are collected: a run stopped by an error or a
    notebook's stop button left them running for as long as its traceback was kept (a notebook
    keeps the last one), 2 x data.workers idle processes beside the next run's."""
    for loader in loaders:
        loader = getattr(loader, "loader", loader)  # DeviceBatches' own
        iterator = getattr(loader, "_iterator", None)  # torch keeps persistent workers there
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()  # what torch calls when the iterator is collected
            loader._iterator = None


def train_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    workers: int,
    seed: int,
    context: Context,
    accumulate: int = 1,
) -> DataLoader | DeviceBatches:
    """The loader ``fit`` trains from: this process's shard of ``dataset``, reshuffled by
    ``loader.sampler.set_epoch(epoch)``, each image augmented under its own seed (sef.seeding),
    from workers that live across epochs into pinned memory on CUDA. ``batch_size`` is global;
    with ``accumulate`` > 1 the loader hands over each process's batch in that many
    micro-batches, in the same order (``train_one_epoch`` sums their gradients).
    A dataset with a ``finish_batch(inputs, device)`` method has its batches finished by it."""
    world = context.world_size
    micro_batch = split_batch(batch_size, world, accumulate)  # the batch of each process, in parts
    workers = threads.loader_workers(workers)
    sampler = DistributedSampler(
        dataset, num_replicas=world, rank=context.rank, shuffle=True, seed=seed
    )
    if len(sampler) < 2:
        raise DataError(f"training needs at least {2 * world} images; got {len(dataset)}")
    loader = DataLoader(
        SeededItems(dataset, seed),
        batch_size=micro_batch,
        sampler=EpochSampler(sampler),
        num_workers=workers,
        pin_memory=context.device.type == "cuda",
        persistent_workers=workers > 0,
        # BatchNorm cannot train on a batch of one image: drop such a remainder.
        drop_last=len(sampler) % micro_batch == 1,
    )
    finish = getattr(dataset, "finish_batch", None)
    return loader if finish is None else DeviceBatches(loader, finish, context.device)
