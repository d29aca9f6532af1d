"""SEF in Lightning: :class:`SEFLightningModule` trains any :class:`sef.SEF` with
:class:`sef.SEFLoss` under ``lightning.Trainer`` (the ``lightning`` extra).

Each loss term and the training top-1 go to the Trainer's logger per epoch, under the names
``sef train`` writes to metrics.jsonl (``loss_ce``, ``loss_entropy``, ``loss_distill``,
``loss_group``, ``loss_total``, ``train_top1``, and with G >= 2 the groups' correlation readout
``train_corr_within``, ``train_corr_between``); validation logs ``eval_top1``,
``eval_class_mean``, ``eval_group_top1/group1``, ... and ``eval_corr_within``,
``eval_corr_between`` (``test_...`` for ``Trainer.test``), computed by :mod:`sef.metrics` and
:func:`sef.losses.group_correlation` over the whole split. :meth:`SEFLightningModule.export`
hands back the plain network that ships (backbone and global head: :meth:`sef.SEF.export`).
``loss.lam_warmup``, ``loss.phi_warmup`` and ``loss.lam_until`` work as in ``sef train``: the
module tells the loss how far training is. A Lightning checkpoint keeps the loss's options
(``sef_loss``), so ``load_from_checkpoint(path, model=...)`` trains on with the loss it saved.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from sef.extras import require

try:
    import lightning.pytorch as pl
except ImportError:  # one line naming the pip command
    require("lightning", "sef.integrations.lightning", ImportError)
    raise

from sef import transforms
from sef.config import Config
from sef.engine.optim import create_optimizer, create_scheduler
from sef.errors import warn
from sef.losses import SEFLoss, group_correlation, target_classes
from sef.metrics import class_mean_accuracy, group_accuracies, top1_accuracy
from sef.model import SEF, unwrap
from sef.text import counted
from sef.trained import create_model

_LOSS_KEY = "sef_loss"  # the loss's options in a Lightning checkpoint
Optimizer = Callable[[nn.Module], torch.optim.Optimizer]
Scheduler = Callable[[torch.optim.Optimizer], Any]


class SEFLightningModule(pl.LightningModule):
    """Train ``model`` (an SEF) with ``loss`` (default: the paper's weights) in Lightning.

    ``optimizer`` builds the optimizer from the SEF model (default: the paper's SGD, lr 0.01,
    momentum 0.9, as ``sef.engine.optim.create_optimizer`` makes it); ``scheduler``, if given, the
    learning-rate schedule from the optimizer, stepped every epoch. Batches are (images, labels),
    or images alone for ``Trainer.predict``, which returns each batch's logits; uint8 images
    (sef's datasets without normalising transforms) are normalised on the device. The defaults
    pickle, as Lightning's spawning strategies need. Labels are class indices or class
    probabilities [B, K] (a DataModule's mixup, label smoothing), as ``SEFLoss`` takes them;
    top-1 and class-mean count a probability row's likeliest class.
    """

    def __init__(
        self,
        model: SEF,
        loss: SEFLoss | None = None,
        optimizer: Optimizer | None = None,
        scheduler: Scheduler | None = None,
    ):
        super().__init__()
        unwrap(model)  # TypeError in one line for a model that is no SEF
        _check_factory("optimizer", optimizer, torch.optim.Optimizer, _OPTIMIZER_EXAMPLE)
        _check_factory("scheduler", scheduler, _SCHEDULER, _SCHEDULER_EXAMPLE)
        if loss is not None and loss.groups != model.groups:
            raise ValueError(
                f"the loss is for {loss.groups} groups but the model has {model.groups}; "
                f"build both with the same groups (or leave the loss out: SEFLoss(model.groups))"
            )
        self.model = model
        self.loss = loss if loss is not None else SEFLoss(model.groups)
        self._loss_given = loss is not None
        self.make_optimizer = optimizer or functools.partial(create_optimizer, config=Config())
        self.make_scheduler = scheduler
        self._evaluated: list[Tensor] = []  # [2 + G, B] per batch: labels, predictions, groups
        self._correlation: list[Tensor] = []  # [2] per batch: within, between, summed
        self.cosine_epochs: int | None = None  # from_config's cosine schedule: the epochs it plans
        self.accumulate: int | None = None  # from_config's optim.accumulate

    @classmethod
    def from_config(cls, config: Config, num_classes: int) -> SEFLightningModule:
        """The model, loss weights, optimizer and schedule a ``sef train`` config describes."""
        model = create_model(config, num_classes)
        module = cls(
            model,
            SEFLoss.from_config(config.loss, model.groups),
            optimizer=functools.partial(create_optimizer, config=config),
            scheduler=functools.partial(create_scheduler, config=config),
        )
        if config.optim.scheduler == "cosine":  # its length is optim.epochs, not the Trainer's
            module.cosine_epochs = config.optim.epochs
        module.accumulate = config.optim.accumulate
        return module

    def forward(self, images: Tensor) -> Any:
        return self.model(images)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[_LOSS_KEY] = _loss_options(self.loss)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The saved loss, unless this module was given one (then a warning if they differ)."""
        saved = checkpoint.get(_LOSS_KEY)
        if saved is None or saved == _loss_options(self.loss):
            return
        if not self._loss_given:
            self.loss = SEFLoss(**saved)
            return
        warnings.warn(
            f"the checkpoint was trained with SEFLoss({_describe(saved)}); this module keeps "
            f"the loss it was given, {self.loss}",
            stacklevel=2,
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images = _images(batch)
        if images.dtype == torch.uint8:
            images = transforms.normalise_batch(images)
        return images if isinstance(batch, Tensor) else (images, *batch[1:])

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        output = self.model(images)
        self.loss.set_progress(self.current_epoch + batch_idx / self.trainer.num_training_batches)
        terms = self.loss(output, labels)
        values = {f"loss_{name}": value.detach() for name, value in terms.items()}
        values["train_top1"] = (output.logits.argmax(1) == target_classes(labels)).float().mean()
        if self.model.groups > 1:
            within, between = group_correlation(output.features, self.model.groups) / len(labels)
            values |= {"train_corr_within": within, "train_corr_between": between}
        self.log_dict(values, on_step=False, on_epoch=True, batch_size=len(labels), sync_dist=True)
        return terms["total"]

    def _evaluate_batch(self, batch: tuple[Tensor, Tensor]) -> None:
        images, labels = batch
        output = self.model.forward_sef(images)
        predictions = torch.cat([output.logits.argmax(1)[None], output.group_logits.argmax(2)])
        self._evaluated.append(torch.cat([target_classes(labels)[None], predictions]))
        if self.model.groups > 1:
            self._correlation.append(group_correlation(output.features, self.model.groups))

    def _log_evaluation(self, prefix: str) -> None:
        """Top-1, class-mean, each group head's top-1 and the correlation readout over every
        image evaluated."""
        table = torch.cat(self._evaluated, dim=1)
        correlation = torch.stack(self._correlation).sum(0) if self._correlation else None
        self._evaluated.clear()
        self._correlation.clear()
        if self.trainer.world_size > 1:  # [world, 2 + G, N]: every process's images
            table = self.all_gather(table).transpose(0, 1).flatten(1)
            correlation = None if correlation is None else self.all_gather(correlation).sum(0)
        labels, predictions, groups = table[0], table[1], table[2:]
        metrics = {
            f"{prefix}_top1": top1_accuracy(predictions, labels),
            f"{prefix}_class_mean": class_mean_accuracy(
                predictions, labels, self.model.num_classes
            ),
        }
        for g, value in enumerate(group_accuracies(groups, labels), start=1):
            metrics[f"{prefix}_group_top1/group{g}"] = value
        if correlation is not None:
            within, between = (correlation / labels.numel()).tolist()
            metrics |= {f"{prefix}_corr_within": within, f"{prefix}_corr_between": between}
        # every process holds the same numbers, over every image: averaging them keeps them, and
        # quiets Lightning's advice to sync_dist metrics that it takes for one process's own
        self.log_dict(metrics, sync_dist=True)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate_batch(batch)

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("eval")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate_batch(batch)

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        """The global head's logits of a batch (images, or (images, labels))."""
        return self.model(_images(batch))

    def on_fit_start(self) -> None:
        planned, epochs = self.cosine_epochs, self.trainer.max_epochs
        if planned is not None and epochs not in (None, -1, planned):
            warnings.warn(
                f"the cosine learning-rate schedule is planned for optim.epochs={planned}, but "
                f"the Trainer runs max_epochs={epochs}; give both the same number",
                stacklevel=2,
            )
        self._check_accumulate()

    def _check_accumulate(self) -> None:
        """Warn where the Trainer sums the gradients of other micro-batches a step than
        from_config's ``optim.accumulate``, which Lightning does not read."""
        planned, summed = self.accumulate, self.trainer.accumulate_grad_batches
        if planned is not None and summed != planned:
            warnings.warn(
                f"the config takes each batch in optim.accumulate={planned} micro-batches, but "
                f"the Trainer steps every {counted(summed, 'batch', 'batches')} "
                f"(accumulate_grad_batches); give the Trainer accumulate_grad_batches={planned} "
                f"and the DataLoader optim.batch_size / {planned} images a batch",
                stacklevel=3,
            )

    def configure_optimizers(self) -> Any:
        optimizer = self.make_optimizer(self.model)
        _warn_of_parameters_left_out(self.model, optimizer)
        if self.make_scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.make_scheduler(optimizer)}

    def export(self) -> nn.Module:
        """The plain network that ships: backbone and global head (:meth:`sef.SEF.export`)."""
        return self.model.export()


_SCHEDULER = torch.optim.lr_scheduler.LRScheduler
_OPTIMIZER_EXAMPLE = "lambda model: torch.optim.AdamW(model.parameters(), lr=1e-3)"
_SCHEDULER_EXAMPLE = "lambda optimizer: torch.optim.lr_scheduler.StepLR(optimizer, 20)"


def _check_factory(name: str, factory: Any, kind: type, example: str) -> None:
    """TypeError in one line where ``factory`` is no function that builds a ``kind``: one built
    already, or the class itself (Lightning would fail in configure_optimizers)."""
    built = isinstance(factory, kind)
    a_class = isinstance(factory, type) and issubclass(factory, kind)
    if factory is None or (callable(factory) and not built and not a_class):
        return
    what = f"the class {factory.__name__} itself" if a_class else type(factory).__name__
    raise TypeError(
        f"{name} must be a function that builds the {name} when fitting starts, e.g. "
        f"{name}={example}, not {what}{'(...) built already' if built else ''}"
    )


def _warn_of_parameters_left_out(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Warn where the optimizer leaves out trainable parameters of the model (a parameter group
    per part that forgot the group heads): they would never change."""
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    left = [name for name, p in model.named_parameters() if p.requires_grad and id(p) not in held]
    if not left:
        return
    parts = ", ".join(dict.fromkeys(f"model.{name.split('.')[0]}" for name in left))
    warn(
        f"the optimizer leaves out {counted(len(left), 'trainable parameter tensor')} of "
        f"{parts}, which will never change: give it every parameter that trains (a parameter "
        f"group for model.group_heads too), or freeze the others with requires_grad_(False)"
    )


def _loss_options(loss: SEFLoss) -> dict[str, Any]:
    return {"groups": loss.groups, **dataclasses.asdict(loss.options())}


def _describe(options: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in options.items())


def _images(batch: Any) -> Tensor:
    """The images of a batch: the batch itself, or the first item of (images, labels, ...)."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    raise TypeError(
        f"SEFLightningModule takes batches of images or (images, labels), "
        f"got {type(batch).__name__}"
    )
