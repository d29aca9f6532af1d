"""The training loop: ``train_one_epoch``, with its device-friendly non-finite loss check."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from functools import partial

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from sef import distributed
from sef.config.values import setting_said
from sef.distributed import Context
from sef.engine.device import autocast, to_device
from sef.errors import ConfigError, TrainingError, for_reader
from sef.losses import LOSS_TERMS, SEFLoss, group_correlation, target_classes
from sef.model import ONE_VALUE_PER_CHANNEL, SEFOutput
from sef.text import bars_drawn, rate

READOUT = ("train_corr_within", "train_corr_between")  # group_correlation, with G >= 2
GRADIENTS = ("grad_norm_median", "grad_norm_max")  # of the gradients the steps applied
GRADIENT_SPIKE = 20  # a step this many times its epoch's median gradient norm is reported
CHECK_EVERY = 10  # steps between reads of the running sums and the finiteness check


def gradient_norm(optimizer: torch.optim.Optimizer) -> Tensor:
    """The L2 norm of every gradient the optimizer holds, on the device (no wait for it)."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
    grads = [g for g in grads if g is not None]
    # torch._foreach_norm: one kernel for all tensors, what clip_grad_norm_ uses in every torch
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def batch_bar(loader: Iterable, desc: str, progress: bool | None, context: Context) -> tqdm:
    """A progress bar over ``loader``'s batches on stderr, shown by the main process only."""
    return tqdm(
        loader,
        desc=desc,
        unit="batch",
        leave=False,
        file=sys.stderr,
        disable=not (context.is_main and bars_drawn(progress)),
        dynamic_ncols=True,
    )


def _forward(model: nn.Module, images: Tensor, context: Context, accumulate: int) -> SEFOutput:
    """``model(images)``; ConfigError for a batch of one image that BatchNorm cannot train on."""
    try:
        return model(images)
    except ValueError as error:  # sef.SEF's OneValuePerChannel, or torch's own (any module)
        said = getattr(error, "torch_says", str(error))
        if ONE_VALUE_PER_CHANNEL not in said:
            raise
        parts = accumulate > 1
        batch = "micro-batch" if parts else "batch"
        fewer = f", a lower {setting_said('optim.accumulate')}" if parts else ""
        least = setting_said("optim.batch_size", 2 * context.world_size * accumulate)
        key = for_reader(" (optim.batch_size)", "")  # the option's key, which code names itself
        raise ConfigError(
            f"BatchNorm cannot train on a {batch} of {len(images)} image whose map is 1 x 1 at one "
            f"of its layers ({said}); train with {least} or more{key}{fewer}, or "
            f"larger images ({setting_said('data.image_size')})"
        ) from None


class _Steps:
    """``loader``'s batches in lists of ``accumulate``, one list an optimizer step (the epoch's
    last list may be shorter); ``len``: the steps."""

    def __init__(self, loader: Iterable, accumulate: int) -> None:
        self.loader, self.accumulate = loader, accumulate

    def __len__(self) -> int:
        return math.ceil(len(self.loader) / self.accumulate)

    def __iter__(self) -> Iterator[list]:
        step = []
        for batch in self.loader:
            step.append(batch)
            if len(step) == self.accumulate:
                yield step
                step = []
        if step:
            yield step


def _synced(model: nn.Module, last: bool) -> contextlib.AbstractContextManager:
    """Where ``model`` is DDP, its ``no_sync`` for all but a step's ``last`` micro-batch: the
    gradients are averaged over the processes once a step."""
    no_sync = getattr(model, "no_sync", None)
    return contextlib.nullcontext() if last or no_sync is None else no_sync()


def _backward(total: Tensor, share: float, scaler: torch.amp.GradScaler | None) -> None:
    """Add the gradient of ``total`` times ``share`` (a micro-batch's part of its step's images,
    so that the step's gradient is that of the mean loss over all of them)."""
    loss = total if share == 1 else total * share
    (loss if scaler is None else scaler.scale(loss)).backward()


def _step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> Tensor:
    """Step with the gradients summed so far; returns their norm, on the device (no wait for
    it; 0 for a step the fp16 scaler skipped)."""
    if scaler is None:
        norm = gradient_norm(optimizer)
        optimizer.step()
        return norm
    scaler.unscale_(optimizer)  # what step would do: the norm is of the true gradient
    norm = gradient_norm(optimizer)
    scaler.step(optimizer)
    scaler.update()
    return torch.where(norm.isfinite(), norm, 0.0)


def _batch_sums(
    terms: Mapping[str, Tensor], output: SEFOutput, labels: Tensor, groups: int
) -> Tensor:
    """A batch's loss terms times its images, the readout's two sums (with ``groups`` > 1),
    its correct predictions and its images: what ``train_one_epoch`` adds up."""
    batch = len(labels)
    correct = (output.logits.argmax(1) == target_classes(labels)).sum()
    values = [terms[k].detach().double() * batch for k in LOSS_TERMS]
    if groups > 1:
        values += [*group_correlation(output.features, groups).double()]
    counts = [correct.double(), torch.full((), batch, dtype=torch.float64, device=labels.device)]
    return torch.stack([*values, *counts])


class _FirstNonFinite:
    """The first step whose loss is not finite, with its terms and whether its features were
    finite, kept on the device: a step never waits for the check; the loop reads it where it
    reads its running sums anyway."""

    def __init__(self, device: torch.device) -> None:
        # step (0: none yet), features finite, then the LOSS_TERMS
        self.record = torch.zeros(len(LOSS_TERMS) + 2, dtype=torch.float64, device=device)

    def update(self, step: int, terms: Mapping[str, Tensor], output: SEFOutput) -> None:
        now = torch.stack(
            [
                torch.full_like(self.record[0], step),
                torch.isfinite(output.features).all().double(),
                *(terms[k].detach().double() for k in LOSS_TERMS),
            ]
        )
        first = (self.record[0] == 0) & ~torch.isfinite(terms["total"])
        self.record = torch.where(first, now, self.record)

    @staticmethod
    def check(record: list[float], epoch: int) -> None:
        """Raise TrainingError if ``record`` (this object's ``record`` read back) holds a step."""
        step, features_finite, *values = record
        if not step:
            return
        named = dict(zip(LOSS_TERMS, values, strict=True))
        terms = ", ".join(f"{k}={named[k]:.4g}" for k in LOSS_TERMS[:-1])
        features = "" if features_finite else "; the features are non-finite"
        raise TrainingError(
            f"training stopped at epoch {epoch}, step {int(step)}: the loss became "
            f"{named['total']} (terms: {terms}){features}"
        )


def train_one_epoch(
    model: nn.Module,
    loss_fn: SEFLoss,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    *,
    context: Context,
    epoch: int,
    amp: str = "none",
    scaler: torch.amp.GradScaler | None = None,
    channels_last: bool = False,
    progress: bool | None = None,
    accumulate: int = 1,
) -> dict[str, float]:
    """One pass over ``loader``; returns mean loss terms, train accuracy and images/second,
    the median and largest norm of the gradients its steps applied (``GRADIENTS``: a step far
    above the median can undo what training had learnt, docs/training.md), and with two groups
    or more the mean channel correlation within and between the groups of the training batches
    (``sef.losses.group_correlation``). Batches of uint8 images are normalised on the device
    (``sef.transforms.normalise_batch``). Labels are class indices or class probabilities
    [B, K], as ``SEFLoss`` takes them; the train top-1 counts a probability row's likeliest class.

    ``accumulate``: each optimizer step sums the gradients of that many of ``loader``'s batches
    (micro-batches), each weighted by its share of the step's images, so the step applies the
    gradient of the mean loss over all of them; under DDP the processes average it once a step.

    Raises TrainingError naming the epoch and the first step whose loss became NaN or infinite,
    on every process when any met one (the lowest such rank's, ``distributed.on_every``).
    The check is read every ``CHECK_EVERY`` steps and at the end, so that no step waits for the
    device (on an H200 a wait per step cost 8 % of SEF-ResNet-50's step time); by then the
    optimizer may have applied that step, so the weights in memory are suspect: ``fit`` keeps
    the last checkpoint instead.
    """
    model.train()
    device = context.device
    readout = loss_fn.groups > 1
    # the loss terms, then the readout's two sums where there are groups, then correct, n
    sums = torch.zeros(len(LOSS_TERMS) + 2 * readout + 2, dtype=torch.float64, device=device)
    non_finite = _FirstNonFinite(device)
    gradient_norms = []  # one 0-d tensor a step, read with the epoch's sums
    start = time.perf_counter()
    steps = _Steps(loader, accumulate)
    bar = batch_bar(steps, f"epoch {epoch}", progress, context)
    for step, batches in enumerate(bar, start=1):
        optimizer.zero_grad(set_to_none=True)
        loss_fn.set_progress(epoch - 1 + (step - 1) / len(steps))
        images_in_step = sum(len(labels) for _, labels in batches)
        for part, (images, labels) in enumerate(batches, start=1):
            with _synced(model, last=part == len(batches)):
                images = to_device(images, device, channels_last)
                labels = labels.to(device, non_blocking=True)
                with autocast(device, amp):
                    output = _forward(model, images, context, accumulate)
                terms = loss_fn(output, labels)
                non_finite.update(step, terms, output)
                _backward(terms["total"], len(labels) / images_in_step, scaler)
            sums += _batch_sums(terms, output, labels, loss_fn.groups)
        gradient_norms.append(_step(optimizer, scaler))
        if step % CHECK_EVERY == 0 or step == len(steps):
            read = torch.cat([sums, non_finite.record]).tolist()  # one wait for the device
            # every process stops at once, a rank whose loss stayed finite too (else it waited for
            # the others at the next step and died of a gloo traceback); rank 0 says it once
            distributed.on_every(partial(_FirstNonFinite.check, read[len(sums) :], epoch), context)
            seen = read[len(sums) - 1]
            bar.set_postfix(
                loss=f"{read[LOSS_TERMS.index('total')] / seen:.3f}",
                img_s=rate(seen * context.world_size / (time.perf_counter() - start)),
            )
    sums = distributed.all_reduce_sum(sums, context)  # the gradients are the same on every rank
    return _epoch_record(sums, torch.stack(gradient_norms), time.perf_counter() - start, readout)


def _epoch_record(sums: Tensor, norms: Tensor, seconds: float, readout: bool) -> dict[str, float]:
    """The epoch's means from its summed terms (``train_one_epoch``'s layout) and its
    steps' gradient norms, read from the device at once."""
    norms = norms.double()
    *totals, correct, seen, median, largest = torch.cat(
        [sums, norms.median().view(1), norms.max().view(1)]
    ).tolist()
    names = [f"loss_{k}" for k in LOSS_TERMS] + list(READOUT[: 2 * readout])
    record = {name: total / seen for name, total in zip(names, totals, strict=True)}
    record["train_top1"] = correct / seen
    record["images_per_second"] = seen / seconds
    record |= dict(zip(GRADIENTS, (median, largest), strict=True))
    return record
