"""Evaluation: every head's predictions on a dataset or for a saved model, and their CSV.

Under DDP each process takes an unpadded shard, so every image counts exactly once.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler, Subset

from sef import datasets, distributed, outputs, threads
from sef.config import Config, setting_said
from sef.datasets import nothing_to_evaluate
from sef.datasets.splits import share_images, training_record
from sef.distributed import Context
from sef.engine.data import training_change
from sef.engine.device import autocast, out_of_memory, to_device
from sef.engine.loop import batch_bar
from sef.errors import DataError, OutOfMemory, for_reader, warn
from sef.losses import group_correlation
from sef.metrics import class_mean_accuracy, group_accuracies, not_finite_said, top1_accuracy
from sef.model import SEF, unwrap
from sef.modes import evaluation_mode
from sef.text import counted
from sef.trained import TrainedModel, check_saved_root, load_trained_model
from sef.tta import TTAViews, forward_views


@dataclass
class EvalResult:
    """Predictions of the global head and every group head on a whole dataset, with metrics."""

    labels: Tensor  # [N]
    predictions: Tensor  # [N]
    group_predictions: Tensor  # [G, N]
    num_classes: int
    tta: str | None = None  # the test-time augmentation of tta_predictions (sef.tta)
    tta_predictions: Tensor | None = None  # [N]
    correlation: tuple[float, float] | None = None  # within, between groups (G >= 2)
    non_finite: int = 0  # images whose logits are not all finite (a model that has overflowed)
    group_heads_trained: bool = True  # False for a plain run's (loss.gamma = 0): at chance

    @property
    def top1(self) -> float:
        return top1_accuracy(self.predictions, self.labels)

    def non_finite_said(self, images: str, so: str) -> str:
        """On how many of its ``images`` (e.g. "eval image") the outputs were not finite, ``so``
        saying what that makes meaningless (:func:`sef.metrics.not_finite_said`)."""
        return not_finite_said(self.non_finite, counted(len(self.labels), images), so)

    @property
    def class_mean(self) -> float:
        return class_mean_accuracy(self.predictions, self.labels, self.num_classes)

    @property
    def group_top1(self) -> list[float]:
        return group_accuracies(self.group_predictions, self.labels)

    def __repr__(self) -> str:
        """The summary's numbers to four places, not the [N] tensors of every prediction (a
        notebook cell ending in the result showed thousands of labels)."""
        numbers = ", ".join(f"{key}={_rounded(value)!r}" for key, value in self.summary().items())
        return f"EvalResult({numbers})"

    def summary(self) -> dict[str, Any]:
        """Plain numbers: top-1, class-mean accuracy, per-group head accuracy, image count;
        with TTA also its top-1 and class-mean accuracy."""
        summary = {
            "top1": self.top1,
            "class_mean": self.class_mean,
            "group_top1": self.group_top1,
            "group_heads_trained": self.group_heads_trained,
            "images": int(self.labels.numel()),
        }
        if self.correlation is not None:
            summary["corr_within"], summary["corr_between"] = self.correlation
        if self.tta_predictions is not None:
            summary["tta"] = self.tta
            summary["tta_top1"] = top1_accuracy(self.tta_predictions, self.labels)
            summary["tta_class_mean"] = class_mean_accuracy(
                self.tta_predictions, self.labels, self.num_classes
            )
        return summary


def _rounded(value: Any) -> Any:
    """``value`` with its floats (a list's too) to four places."""
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return round(value, 4) if isinstance(value, float) else value


class _Shard(Subset):
    """This process's rows of the dataset, as :func:`evaluation_loader` reads them."""


UNTRAINED_HEADS = "untrained: a plain run (loss.gamma = 0) trains no group head"


def heads_trained(config: Config) -> bool:
    """Whether a run of ``config`` trains its group heads: only distillation does (gamma > 0);
    a plain run's stay at their initial, chance-level weights."""
    return config.loss.gamma > 0


def group_heads_said(accuracies: list[float], trained: bool, digits: int = 4) -> str:
    """Each group head's top-1, or that a plain run trained none (its numbers are chance)."""
    return ", ".join(f"{value:.{digits}f}" for value in accuracies) if trained else UNTRAINED_HEADS


def eval_batch_size(config: Config, processes: int = 1) -> int:
    """Each process's evaluation batch: ``run.eval_batch_size``, else a training micro-batch
    (``optim.batch_size`` split over the processes and ``optim.accumulate``), so that a run
    whose batch only fits in micro-batches does not run out of memory evaluating it whole."""
    return config.run.eval_batch_size or max(1, config.optim.micro_batch(processes))


def evaluation_loader(
    dataset: Dataset,
    batch_size: int,
    workers: int,
    context: Context,
    *,
    persistent: bool = False,
) -> DataLoader:
    """The batches ``evaluate`` reads: this process's unpadded shard of ``dataset`` (a Subset),
    in order, pinned on CUDA so that copies need not wait. ``persistent`` keeps the workers
    from one pass to the next, for a caller that evaluates again and again (``fit``, every
    epoch): a fresh loader forks its workers from the training process at every pass, which
    costs more the larger that process is (docs/performance.md, Evaluation)."""
    return DataLoader(
        _Shard(dataset, distributed.shard(len(dataset), context)),
        batch_size=batch_size,
        num_workers=threads.loader_workers(workers),
        pin_memory=context.device.type == "cuda",
        persistent_workers=persistent and workers > 0,
    )


def _rows(loader: DataLoader, context: Context) -> tuple[int, list[int]]:
    """The size of the dataset ``loader`` reads and the rows of it this process predicts."""
    if isinstance(loader.dataset, _Shard):
        return len(loader.dataset.dataset), list(loader.dataset.indices)
    if context.world_size > 1:
        raise ValueError(
            "under DDP evaluate takes a dataset or a loader made by evaluation_loader, "
            "which give each process its shard"
        )
    batches_in_order = type(loader.batch_sampler) in (BatchSampler, type(None))
    if not (isinstance(loader.sampler, SequentialSampler) and batches_in_order):
        # row i of the result must be the dataset's image i (write_predictions pairs them)
        raise ValueError(
            "evaluate reads a loader's images as the dataset's rows in order; pass a loader "
            "without shuffle or a sampler, or the dataset itself"
        )
    return len(loader.dataset), list(range(len(loader.dataset)))


@torch.no_grad()
def _predict_all(
    sef: SEF,
    batches: Iterable,
    length: int,
    indices: list[int],
    device: torch.device,
    amp: str,
    channels_last: bool,
    tta: str | None,
) -> tuple[Tensor, Tensor]:
    """This process's predictions of ``evaluate``: a table [G + 3 (+1 with TTA), length] (row 0
    counts how often each image was seen; the others hold 1 + label, prediction, each group
    head's prediction (and the TTA prediction); 0 where another process predicts) and the
    within / between channel correlation summed over the images, then the number of images
    whose global logits are not all finite."""
    shard = torch.tensor(indices, device=device)  # copied once, not per batch
    table = torch.zeros(sef.groups + 3 + bool(tta), length, dtype=torch.long, device=device)
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # within, between, non-finite
    position = 0

    def prepare(batch: Tensor) -> Tensor:
        return to_device(batch, device, channels_last)

    for images, labels in batches:
        with autocast(device, amp):
            if tta:
                output, probabilities = forward_views(sef, images, tta, prepare)
            else:
                output = sef.forward_sef(prepare(images))
        rows = shard[position : position + len(labels)]
        position += len(labels)
        table[0, rows] += 1
        table[1, rows] = labels.to(device, non_blocking=True) + 1
        table[2, rows] = output.logits.argmax(1) + 1
        table[3 : 3 + sef.groups, rows] = output.group_logits.argmax(2) + 1
        if sef.groups > 1:
            sums[:2] += group_correlation(output.features, sef.groups).double()
        sums[2] += (~torch.isfinite(output.logits)).any(1).sum()
        if tta:
            table[-1, rows] = probabilities.argmax(1) + 1
    return table, sums


def evaluate(
    model: nn.Module,
    dataset: Dataset | DataLoader,
    *,
    batch_size: int = 64,
    workers: int = 0,
    context: Context | None = None,
    amp: str = "none",
    channels_last: bool = False,
    progress: bool | None = None,
    tta: str | None = None,
) -> EvalResult:
    """Predict every image of ``dataset`` once with the global head and each group head
    (uint8 images are normalised on the device, as in ``train_one_epoch``); with two groups or
    more, also average the channel correlation within and between groups over the images.

    With ``tta`` (a mode of :mod:`sef.tta`) the dataset's items are view stacks of
    ``sef.tta.TTAViews``: the heads read the plain view, and the TTA prediction averages the
    class probabilities of the mode's views.

    Under DDP each process takes an unpadded shard and the predictions are summed into full-size
    tensors, so every image is counted exactly once whatever the world size.

    ``dataset`` may also be a DataLoader (its batch size and workers then hold, not
    ``batch_size`` and ``workers``): one made by :func:`evaluation_loader`, to keep its workers
    across passes, or, on one process, any loader that reads the whole dataset in order (no
    shuffle, no sampler: row i of the result is image i of the dataset).
    """
    sef = unwrap(model)
    context = context or Context(device=next(sef.parameters()).device)
    distributed.broadcast_buffers(sef, context)  # BatchNorm statistics as rank 0 has them
    if isinstance(dataset, DataLoader):
        loader = dataset
    else:
        loader = evaluation_loader(dataset, batch_size, workers, context)
    length, indices = _rows(loader, context)
    with evaluation_mode(sef):
        batches = batch_bar(loader, "eval", progress, context)
        table, sums = _predict_all(
            sef, batches, length, indices, context.device, amp, channels_last, tta
        )
    table = distributed.all_reduce_sum(table, context).cpu()
    sums = distributed.all_reduce_sum(sums, context)
    correlation = sums[:2] / max(length, 1)
    if not torch.all(table[0] == 1):
        raise RuntimeError("evaluation did not see every image exactly once")
    return EvalResult(
        labels=table[1] - 1,
        predictions=table[2] - 1,
        group_predictions=table[3 : 3 + sef.groups] - 1,
        num_classes=sef.num_classes,
        tta=tta,
        tta_predictions=table[-1] - 1 if tta else None,
        correlation=tuple(correlation.tolist()) if sef.groups > 1 else None,
        non_finite=int(sums[2]),
    )


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    *,
    data_root: str | None = None,
    split: str = "test",
    batch_size: int | None = None,
    workers: int | None = None,
    device: str = "auto",
    progress: bool | None = None,
    tta: str | None = None,
) -> tuple[EvalResult, Any]:
    """Evaluate a saved model on ``split`` of the dataset its config names (or ``data_root``),
    with test-time augmentation ``tta`` (a mode of :mod:`sef.tta`) beside the plain prediction.

    Returns the result and the dataset (whose ``samples`` line up with the predictions).
    """
    context = distributed.setup(device)
    try:
        trained, dataset = distributed.on_every(  # an error every process meets, said once
            lambda: _model_and_data(checkpoint, context, split, data_root, progress),
            context,
            main_first=True,
        )
        if context.is_main:
            trained.warn_if_unfinished(checkpoint, "the accuracy is of")
        config = trained.config
        if tta:
            dataset.transform = TTAViews(trained.preprocessing, tta)
        batch_size = batch_size or eval_batch_size(config, context.world_size)
        try:
            result = evaluate(
                trained.model,
                dataset,
                batch_size=batch_size,
                workers=config.data.workers if workers is None else workers,
                context=context,
                progress=progress,
                tta=tta,
            )
        except RuntimeError as error:
            if not out_of_memory(error):
                raise
            raise OutOfMemory(
                f"out of {context.device.type} memory with batches of {batch_size} images; "
                f"evaluate with a lower {for_reader('--batch-size', 'batch_size')}"
            ) from None
        result.group_heads_trained = heads_trained(config)
        if context.is_main and result.non_finite:
            warn(_broken(result, checkpoint, split))
        return result, dataset
    finally:
        distributed.teardown(context)


def _broken(result: EvalResult, checkpoint: str | os.PathLike, split: str) -> str:
    """Why an evaluation whose outputs were not finite on some images means nothing there."""
    said = result.non_finite_said(f"{split} image", f"the predictions of {checkpoint} mean nothing")
    return (
        f"{said}; evaluate an earlier checkpoint of its run, or train again with a lower "
        f"optim.lr or {setting_said('run.amp', 'none')}"
    )


def _model_and_data(
    checkpoint: str | os.PathLike,
    context: Context,
    split: str,
    data_root: str | None,
    progress: bool | None,
) -> tuple[TrainedModel, Any]:
    """The saved model on this process's device and the ``split`` it is evaluated on."""
    trained = load_trained_model(checkpoint, device=context.device)
    if data_root is None:  # a moved data root, named as evaluate_checkpoint takes another
        check_saved_root(trained.config, argument="data_root")
    dataset = trained.dataset(split, data_root, progress=progress)
    data = trained.config.data
    if len(dataset) == 0:
        raise nothing_to_evaluate(split, data_root or data.root or data.dataset, data.dataset)
    if context.is_main and share_images(split, data.train_split):
        warn(
            f"the {split} split shares images with {data.train_split}, which this model "
            f"trained on: its accuracy is not on held-out images; the run evaluated on "
            f"{for_reader(f'--split {data.eval_split}', f'split={data.eval_split!r}')}"
        )
    if context.is_main:
        _warn_changed_training(trained, checkpoint, data_root)
    return trained, dataset


def _warn_changed_training(
    trained: TrainedModel, checkpoint: str | os.PathLike, data_root: str | None
) -> None:
    """Warn where the training split of the data now is another than ``checkpoint`` recorded
    (own data: images added or removed since), saying what that does to the split evaluated."""
    if not trained.training:
        return
    data, seed = trained.config.data, trained.config.run.seed
    try:
        with warnings.catch_warnings():  # the reader warned of the data reading the split
            warnings.simplefilter("ignore")
            train = datasets.read_split(
                data, data.train_split, seed=seed, root=data_root, progress=False
            )
    except DataError:  # no training split there (a copy of the test folder alone): none to compare
        return
    change = training_change(trained.training, training_record(train), data.holdout, checkpoint)
    if change is not None:
        warn(change)


# the columns of every per-image predictions CSV, with TTA's after them
PREDICTION_COLUMNS = ("path", "label", "prediction", "correct", "label_name", "prediction_name")


def holds_other_than_predictions(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file with something in it other than a predictions CSV (the data's
    own labels CSV, say), which writing predictions there would replace."""
    try:
        with open(path, "rb") as handle:
            first = handle.readline()
    except OSError:  # none there, or one that cannot be read: not a file to keep
        return False
    return bool(first) and not first.startswith(",".join(PREDICTION_COLUMNS).encode())


def write_predictions(path: str | os.PathLike, result: EvalResult, dataset: Any) -> None:
    """A CSV of per-image predictions: path, label, prediction, correct (+ class names); with
    TTA also tta_prediction, tta_correct and tta_prediction_name."""
    import csv

    classes = dataset.classes
    header = list(PREDICTION_COLUMNS)
    tta = result.tta_predictions
    if tta is not None:
        header += ["tta_prediction", "tta_correct", "tta_prediction_name"]
    with (
        outputs.atomic_path(path) as temporary,
        open(temporary, "w", newline="", **outputs.FILE_NAME_TEXT) as handle,
    ):
        writer = csv.writer(handle)
        writer.writerow(header)
        for index, ((image, _), label, prediction) in enumerate(
            zip(dataset.samples, result.labels.tolist(), result.predictions.tolist(), strict=True)
        ):
            row = [image, label, prediction, int(label == prediction), classes[label],
                   classes[prediction]]  # fmt: skip
            if tta is not None:
                guess = int(tta[index])
                row += [guess, int(label == guess), classes[guess]]
            writer.writerow(row)
