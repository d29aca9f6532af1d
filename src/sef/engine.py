"""Training and evaluation: ``fit(config)`` runs the paper's recipe end to end.

One straight road: datasets -> model -> SGD + StepLR -> per epoch ``train_one_epoch`` then
``evaluate`` -> metrics.jsonl, TensorBoard, ``last.pt`` / ``best.pt`` in the run folder.

Resume is exact: every epoch starts by seeding all random generators from (seed, epoch, rank),
the sampler shuffles from (seed, epoch) and each image is augmented under its own seed
(:mod:`sef.seeding`), so the random stream of epoch e never depends on what ran before it or on
the number of loader workers; the checkpoint holds weights, optimizer, scheduler and scaler state
and the history.
Under torchrun (DDP) only rank 0 writes files and prints, and evaluation shards the test set
without padding, so every test image counts exactly once.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm import tqdm

from sef import distributed, transforms
from sef.checkpoint import build_model, load_checkpoint, save_checkpoint
from sef.config import Config, config_from_dict, config_to_dict, save_config
from sef.distributed import Context
from sef.errors import ConfigError, DataError, TrainingError
from sef.losses import SEFLoss
from sef.metrics import class_mean_accuracy, group_accuracies, top1_accuracy
from sef.model import SEF, SEFOutput
from sef.seeding import EpochSampler, SeededItems, seed_everything

LOSS_TERMS = ("ce", "entropy", "distill", "group", "total")
# Config keys that may differ when resuming: where things are, how they are logged and how many
# processes load them (each image's augmentation has its own seed: sef.seeding).
RESUMABLE_CHANGES = ("data.root", "data.workers", "run.out", "run.tensorboard", "run.device")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


# ------------------------------------------------------------------------------ small helpers


def _autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


def _to_device(images: Tensor, device: torch.device, channels_last: bool) -> Tensor:
    """Move a batch to ``device``; uint8 pixels are normalised there (see sef.transforms)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    images = images.to(device, non_blocking=True, memory_format=fmt)
    return transforms.normalise_batch(images) if images.dtype == torch.uint8 else images


def _sef(model: nn.Module) -> SEF:
    """The SEF inside DDP / torch.compile wrappers."""
    while not isinstance(model, SEF):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------- training


CHECK_EVERY = 10  # steps between reads of the running sums and the finiteness check


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
    progress: bool = True,
) -> dict[str, float]:
    """One pass over ``loader``; returns mean loss terms, train accuracy and images/second.
    Batches of uint8 images are normalised on the device (``sef.transforms.normalise_batch``).

    Raises TrainingError naming the epoch and the first step whose loss became NaN or infinite.
    The check is read every ``CHECK_EVERY`` steps and at the end, so that no step waits for the
    device (on an H200 a wait per step cost 8 % of SEF-ResNet-50's step time); by then the
    optimizer may have applied that step, so the weights in memory are suspect: ``fit`` keeps
    the last checkpoint instead.
    """
    model.train()
    device = context.device
    sums = torch.zeros(len(LOSS_TERMS) + 2, dtype=torch.float64, device=device)  # + correct, n
    non_finite = _FirstNonFinite(device)
    start = time.perf_counter()
    bar = tqdm(
        loader,
        desc=f"epoch {epoch}",
        unit="batch",
        leave=False,
        file=sys.stderr,
        disable=not (progress and context.is_main),
        dynamic_ncols=True,
    )
    for step, (images, labels) in enumerate(bar, start=1):
        images = _to_device(images, device, channels_last)
        labels = labels.to(device, non_blocking=True)
        with _autocast(device, amp):
            output = model(images)
        terms = loss_fn(output, labels)
        non_finite.update(step, terms, output)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(terms["total"]).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            terms["total"].backward()
            optimizer.step()
        batch = labels.numel()
        correct = (output.logits.argmax(1) == labels).sum()
        values = [terms[k].detach().double() * batch for k in LOSS_TERMS]
        counts = [correct.double(), torch.full((), batch, dtype=torch.float64, device=device)]
        sums += torch.stack([*values, *counts])
        if step % CHECK_EVERY == 0 or step == len(loader):
            read = torch.cat([sums, non_finite.record]).tolist()  # one wait for the device
            _FirstNonFinite.check(read[len(sums) :], epoch)
            seen = read[len(sums) - 1]
            bar.set_postfix(
                loss=f"{read[LOSS_TERMS.index('total')] / seen:.3f}",
                img_s=f"{seen * context.world_size / (time.perf_counter() - start):.0f}",
            )
    sums = distributed.all_reduce_sum(sums, context)
    seconds = time.perf_counter() - start
    *totals, correct, seen = sums.tolist()
    record = {f"loss_{k}": total / seen for k, total in zip(LOSS_TERMS, totals, strict=True)}
    record["train_top1"] = correct / seen
    record["images_per_second"] = seen / seconds
    return record


# ------------------------------------------------------------------------------- evaluation


@dataclass
class EvalResult:
    """Predictions of the global head and every group head on a whole dataset, with metrics."""

    labels: Tensor  # [N]
    predictions: Tensor  # [N]
    group_predictions: Tensor  # [G, N]
    num_classes: int

    @property
    def top1(self) -> float:
        return top1_accuracy(self.predictions, self.labels)

    @property
    def class_mean(self) -> float:
        return class_mean_accuracy(self.predictions, self.labels, self.num_classes)

    @property
    def group_top1(self) -> list[float]:
        return group_accuracies(self.group_predictions, self.labels)

    def summary(self) -> dict[str, Any]:
        """Plain numbers: top-1, class-mean accuracy, per-group head accuracy, image count."""
        return {
            "top1": self.top1,
            "class_mean": self.class_mean,
            "group_top1": self.group_top1,
            "images": int(self.labels.numel()),
        }


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 64,
    workers: int = 0,
    context: Context | None = None,
    amp: str = "none",
    channels_last: bool = False,
    progress: bool = True,
) -> EvalResult:
    """Predict every image of ``dataset`` once with the global head and each group head
    (uint8 images are normalised on the device, as in ``train_one_epoch``).

    Under DDP each process takes an unpadded shard and the predictions are summed into full-size
    tensors, so every image is counted exactly once whatever the world size.
    """
    context = context or Context(device=next(model.parameters()).device)
    sef = _sef(model)
    distributed.broadcast_buffers(sef, context)  # BatchNorm statistics as rank 0 has them
    was_training = sef.training
    sef.eval()
    device, length = context.device, len(dataset)
    indices = distributed.shard(length, context)
    loader = DataLoader(Subset(dataset, indices), batch_size=batch_size, num_workers=workers)
    # Slot 0 counts how often each image was seen; the rest hold 1 + predicted class.
    table = torch.zeros(sef.groups + 3, length, dtype=torch.long, device=device)
    position = 0
    bar = tqdm(
        loader,
        desc="eval",
        unit="batch",
        leave=False,
        file=sys.stderr,
        disable=not (progress and context.is_main),
    )
    for images, labels in bar:
        with _autocast(device, amp):
            output = sef.forward_sef(_to_device(images, device, channels_last))
        rows = torch.tensor(indices[position : position + len(labels)], device=device)
        position += len(labels)
        table[0, rows] += 1
        table[1, rows] = labels.to(device) + 1
        table[2, rows] = output.logits.argmax(1) + 1
        table[3:, rows] = output.group_logits.argmax(2) + 1
    sef.train(was_training)
    table = distributed.all_reduce_sum(table, context).cpu()
    if not torch.all(table[0] == 1):
        raise RuntimeError("evaluation did not see every image exactly once")
    return EvalResult(
        labels=table[1] - 1,
        predictions=table[2] - 1,
        group_predictions=table[3:] - 1,
        num_classes=sef.num_classes,
    )


# ---------------------------------------------------------------------------- optimization


def make_optimizer(model: nn.Module, config: Config) -> torch.optim.Optimizer:
    """SGD with momentum (the paper) or AdamW, over the parameters that train."""
    o = config.optim
    parameters = [p for p in model.parameters() if p.requires_grad]
    if o.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.SGD(parameters, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, config: Config) -> Any:
    """StepLR x lr_decay every step_size epochs (the paper), cosine, or a constant rate."""
    o = config.optim
    if o.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, o.step_size, gamma=o.lr_decay)
    if o.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=o.epochs)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


# ------------------------------------------------------------------------------ data set-up


@dataclass
class Data:
    """The two datasets of a run and their class names."""

    train: Dataset
    eval: Dataset
    classes: list[str]


def load_data(config: Config, context: Context, progress: bool = True) -> Data:
    """Read the train and eval splits the config names, with the paper's transforms.

    For a CUDA device the images stay uint8 (a quarter of the bytes to collate, pin and copy)
    and ``train_one_epoch`` / ``evaluate`` normalise each batch on the GPU with the workers'
    formula; on the CPU the workers normalise, off the training process's critical path.
    """
    from sef import datasets

    d = config.data
    normalise = context.device.type != "cuda"
    options = dict(d.options)
    if d.dataset in datasets.GENERATED:
        options.setdefault("progress", progress and context.is_main)
    common = {"seed": config.run.seed, "val_fraction": d.val_fraction, **options}
    train = datasets.load(
        d.dataset, d.root, d.train_split,
        transform=transforms.train_transform(d.recipe, d.image_size, normalise),
        **common,
    )  # fmt: skip
    evaluation = datasets.load(
        d.dataset, d.root, d.eval_split,
        transform=transforms.test_transform(d.recipe, d.image_size, normalise),
        **common,
    )  # fmt: skip
    if list(evaluation.classes) != list(train.classes):
        raise DataError(
            f"the {d.eval_split} split of {d.root} has different classes from {d.train_split}; "
            f"both splits must list the same classes"
        )
    return Data(train, evaluation, list(train.classes))


def check_images(data: Data, config: Config, context: Context, progress: bool = True) -> None:
    """Apply ``data.bad_images`` to both splits: ``stop`` lists unreadable images and stops,
    ``skip`` drops them (and says so), ``off`` trusts the files. Under DDP rank 0 decodes and
    the others drop what it found, so no image is decoded twice."""
    from sef import datasets

    for dataset in (data.train, data.eval):
        bad = None
        if context.is_main:
            bad = datasets.apply_bad_image_policy(
                dataset,
                config.data.bad_images,
                workers=max(1, config.data.workers),
                progress=progress,
            )
            if bad:
                message = f"skipped {len(bad)} unreadable images, e.g. {bad[0][0]}"
                tqdm.write(message, file=sys.stderr)
        bad = distributed.broadcast_object(bad, context)
        if not context.is_main and bad:
            dataset.drop([path for path, _ in bad])


def train_loader(
    dataset: Dataset, *, batch_size: int, workers: int, seed: int, context: Context
) -> DataLoader:
    """The loader ``fit`` trains from: this process's shard of ``dataset``, reshuffled by
    ``loader.sampler.set_epoch(epoch)``, each image augmented under its own seed (sef.seeding),
    from workers that live across epochs into pinned memory on CUDA. ``batch_size`` is global."""
    world = context.world_size
    per_process = batch_size // world
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


# ----------------------------------------------------------------------------- run folder


def default_out_dir(config: Config) -> Path:
    return Path("runs") / config.name


def _is_run(folder: Path) -> bool:
    return (folder / "last.pt").exists() or (folder / "metrics.jsonl").exists()


def latest_run_dir(config: Config) -> Path:
    """The newest of runs/<name>, runs/<name>-2, ... (what a resume without --out continues)."""
    base = default_out_dir(config)
    latest, number = base, 2
    while _is_run(base.with_name(f"{base.name}-{number}")):
        latest = base.with_name(f"{base.name}-{number}")
        number += 1
    return latest


def choose_out_dir(config: Config, resume: bool) -> Path:
    """Where the run writes: never over a finished or running run unless resuming it.

    An explicit ``run.out`` that already holds a run is an error without resume; the default
    runs/<preset> moves on to runs/<preset>-2, -3, ... instead.
    """
    if resume:
        out = Path(config.run.out) if config.run.out else latest_run_dir(config)
        if not (out / "last.pt").is_file():
            raise ConfigError(f"cannot resume: {out / 'last.pt'} does not exist; check --out")
        return out
    if config.run.out:
        out = Path(config.run.out)
        if _is_run(out):
            raise ConfigError(
                f"{out} already holds a run; pass --resume to continue it or choose another --out"
            )
        return out
    out, number = default_out_dir(config), 2
    while _is_run(out):
        out = default_out_dir(config).with_name(f"{config.name}-{number}")
        number += 1
    return out


def _check_resumable(config: Config, saved: dict, path: Path) -> None:
    """Resuming must compute the same thing: only locations may change."""
    now, before = _flatten(config_to_dict(config)), _flatten(saved)
    for key in sorted(set(now) | set(before)):
        if key not in RESUMABLE_CHANGES and now.get(key) != before.get(key):
            raise ConfigError(
                f"cannot resume {path}: {key} was {before.get(key)!r} and is now "
                f"{now.get(key)!r}; resume with the saved config (only "
                f"{', '.join(RESUMABLE_CHANGES)} may change)"
            )


def _flatten(values: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict) and key != "options":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _write_lines(path: Path, records: list[dict]) -> None:
    """Rewrite metrics.jsonl atomically (resume drops lines the checkpoint does not cover)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    os.replace(temporary, path)


class _Logger:
    """Rank 0's outputs: metrics.jsonl, TensorBoard scalars and a line per epoch."""

    def __init__(self, out: Path, config: Config, history: list[dict], start_epoch: int):
        self.metrics = out / "metrics.jsonl"
        _write_lines(self.metrics, history)
        self.board = None
        if config.run.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.board = SummaryWriter(str(out / "tb"), purge_step=start_epoch)

    def epoch(self, record: dict, epochs: int) -> None:
        with open(self.metrics, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.board is not None:
            for key, value in record.items():
                if isinstance(value, list):
                    for g, v in enumerate(value, start=1):
                        self.board.add_scalar(f"{key}/group{g}", v, record["epoch"])
                elif key != "epoch":
                    self.board.add_scalar(key, value, record["epoch"])
            self.board.flush()
        groups = " ".join(f"{v:.3f}" for v in record["eval_group_top1"])
        tqdm.write(
            f"epoch {record['epoch']}/{epochs}  lr {record['lr']:.2g}  "
            f"loss {record['loss_total']:.4f}  train {record['train_top1']:.3f}  "
            f"eval top1 {record['eval_top1']:.3f}  class-mean {record['eval_class_mean']:.3f}  "
            f"groups [{groups}]  {record['seconds']:.0f}s  {record['images_per_second']:.0f} img/s",
            file=sys.stdout,
        )

    def close(self) -> None:
        if self.board is not None:
            self.board.close()


# ------------------------------------------------------------------------------------- fit


@dataclass
class FitResult:
    """What a finished run reports (the same numbers are in DIR/metrics.jsonl)."""

    out: Path
    best_top1: float
    best_epoch: int
    last: dict
    seconds: float
    parameters: int
    extra_parameters: int
    history: list[dict] = field(default_factory=list)

    def report(self) -> str:
        """The final report printed by ``sef train``."""
        last = self.last
        return "\n".join(
            [
                f"run folder        {self.out}",
                f"best eval top-1   {self.best_top1:.4f} (epoch {self.best_epoch}) -> "
                f"{self.out / 'best.pt'}",
                f"last eval top-1   {last['eval_top1']:.4f}, class-mean "
                f"{last['eval_class_mean']:.4f} (epoch {last['epoch']})",
                "group heads top-1 " + ", ".join(f"{v:.4f}" for v in last["eval_group_top1"]),
                f"training time     {self.seconds / 60:.1f} min ({self.seconds:.0f} s)",
                f"parameters        {self.parameters:,} in training, "
                f"{self.parameters - self.extra_parameters:,} deployed "
                f"(group heads add {self.extra_parameters:,})",
            ]
        )


def tune_backends(device: torch.device) -> None:
    """On CUDA let cuDNN time its kernels once and keep the fastest: training shapes are fixed."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def _prepare_model(config: Config, num_classes: int, context: Context) -> tuple[SEF, nn.Module]:
    """The SEF model on its device and the (DDP / compiled) module that trains it."""
    seed_everything(config.run.seed)
    model = build_model(config, num_classes)
    if config.loss.gamma == 0:  # nothing trains the group heads: keep DDP free of unused weights
        model.group_heads.requires_grad_(False)
    fmt = torch.channels_last if config.run.channels_last else torch.contiguous_format
    model = model.to(context.device, memory_format=fmt)
    tune_backends(context.device)
    trainer: nn.Module = model
    if context.distributed:
        if config.run.sync_bn:
            trainer = nn.SyncBatchNorm.convert_sync_batchnorm(trainer)
        ids = [context.device.index] if context.device.type == "cuda" else None
        trainer = nn.parallel.DistributedDataParallel(trainer, device_ids=ids)
    if config.run.compile:
        trainer = torch.compile(trainer)
    return _sef(trainer), trainer


def _check_setup(config: Config, context: Context) -> None:
    """What only the launch reveals (devices, process count) and no config check can see."""
    world = context.world_size
    if config.optim.batch_size % world:
        raise ConfigError(
            f"optim.batch_size={config.optim.batch_size} must divide evenly over {world} "
            f"processes; choose a multiple of {world}"
        )
    if config.run.amp == "fp16" and context.device.type != "cuda":
        raise ConfigError("run.amp=fp16 needs a CUDA GPU; use --amp bf16 or none on CPU")
    if config.run.sync_bn and context.distributed and context.device.type != "cuda":
        raise ConfigError("run.sync_bn=true needs CUDA GPUs; set it to false for CPU training")


class _Run:
    """The mutable state of one training run, saved to and restored from ``last.pt``."""

    def __init__(self, config: Config, data: Data, context: Context, out: Path):
        self.config, self.data, self.context, self.out = config, data, context, out
        self.model, self.trainer = _prepare_model(config, len(data.classes), context)
        self.loss_fn = SEFLoss(
            self.model.groups,
            lam=config.loss.lam,
            gamma=config.loss.gamma,
            phi=config.loss.phi,
            group_variant=config.loss.group_variant,
            detach_teacher=config.loss.detach_teacher,
        )
        self.optimizer = make_optimizer(self.model, config)
        self.scheduler = make_scheduler(self.optimizer, config)
        self.scaler = (
            torch.amp.GradScaler(context.device.type) if config.run.amp == "fp16" else None
        )
        self.epoch = 0
        self.history: list[dict] = []
        self.best = {"epoch": 0, "eval_top1": -1.0}
        self.seconds = 0.0

    def state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "config": config_to_dict(self.config),
            "classes": self.data.classes,
            "epoch": self.epoch,
            "metrics": self.history[-1] if self.history else {},
            "history": self.history,
            "best": self.best,
            "seconds": self.seconds,
        }

    def restore(self, path: Path) -> None:
        state = load_checkpoint(path)
        _check_resumable(self.config, state["config"], path)
        if list(state["classes"]) != self.data.classes:
            raise DataError(f"the dataset's classes differ from those saved in {path}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.history = state["epoch"], list(state["history"])
        self.best, self.seconds = dict(state["best"]), float(state["seconds"])

    def best_state(self) -> dict:
        keys = ("model", "config", "classes", "epoch", "metrics")
        return {k: v for k, v in self.state().items() if k in keys}


def _epochs(run: _Run, logger: _Logger | None, progress: bool) -> Iterator[dict]:
    config, context = run.config, run.context
    loader = train_loader(
        run.data.train,
        batch_size=config.optim.batch_size,
        workers=config.data.workers,
        seed=config.run.seed,
        context=context,
    )
    eval_batch = config.run.eval_batch_size or max(1, config.optim.batch_size // context.world_size)
    while run.epoch < config.optim.epochs:
        epoch = run.epoch + 1
        start = time.perf_counter()
        seed_everything(config.run.seed, epoch, context.rank)
        loader.sampler.set_epoch(epoch)
        lr = run.optimizer.param_groups[0]["lr"]
        record = {"epoch": epoch, "lr": lr}
        record |= train_one_epoch(
            run.trainer,
            run.loss_fn,
            loader,
            run.optimizer,
            context=context,
            epoch=epoch,
            amp=config.run.amp,
            scaler=run.scaler,
            channels_last=config.run.channels_last,
            progress=progress,
        )
        run.scheduler.step()
        result = evaluate(
            run.model,
            run.data.eval,
            batch_size=eval_batch,
            workers=config.data.workers,
            context=context,
            amp=config.run.amp,
            channels_last=config.run.channels_last,
            progress=progress,
        )
        summary = result.summary()
        record |= {
            "eval_top1": summary["top1"],
            "eval_class_mean": summary["class_mean"],
            "eval_group_top1": summary["group_top1"],
            "seconds": time.perf_counter() - start,
        }
        run.epoch, run.seconds = epoch, run.seconds + record["seconds"]
        run.history.append(record)
        if context.is_main:
            if record["eval_top1"] > run.best["eval_top1"]:
                run.best = {"epoch": epoch, "eval_top1": record["eval_top1"]}
                save_checkpoint(run.out / "best.pt", run.best_state())
            save_checkpoint(run.out / "last.pt", run.state())
            logger.epoch(record, config.optim.epochs)
        yield record


def fit(
    config: Config, *, resume: bool = False, progress: bool = True, data: Data | None = None
) -> FitResult:
    """Train ``config`` from start to finish (or from DIR/last.pt with ``resume``).

    Writes DIR/config.yaml, metrics.jsonl, tb/, last.pt and best.pt (rank 0 only) and returns the
    final report. ``data`` replaces the datasets the config names (any torch Datasets whose items
    are (image tensor, label)); the checkpoint then still records the config as given.
    """
    config = config_from_dict(config_to_dict(config))  # a checked copy we may annotate
    context = distributed.setup(config.run.device)
    try:
        _check_setup(config, context)
        out = choose_out_dir(config, resume)
        distributed.barrier(context)  # every rank chose the folder before rank 0 fills it
        config.run.out = str(out)
        loaded = data is None
        data = data or load_data(config, context, progress)
        run = _Run(config, data, context, out)  # builds the model: bad groups fail here
        if loaded:
            check_images(data, config, context, progress)
        if resume:
            run.restore(out / "last.pt")
        return _train(run, progress)
    finally:
        distributed.teardown(context)


def _announce(run: _Run) -> None:
    c, data = run.config, run.data
    start = f"resuming after epoch {run.epoch}" if run.epoch else "training"
    tqdm.write(
        f"{start} {c.name}: {c.model.backbone}, G={run.model.groups}, "
        f"{len(data.train)} train / {len(data.eval)} eval images, {len(data.classes)} classes, "
        f"{c.optim.epochs} epochs on {run.context.world_size} x {run.context.device.type} "
        f"-> {run.out}",
        file=sys.stdout,
    )


def _train(run: _Run, progress: bool) -> FitResult:
    logger = None
    if run.context.is_main:
        _announce(run)
        run.out.mkdir(parents=True, exist_ok=True)
        save_config(run.config, run.out / "config.yaml")
        logger = _Logger(run.out, run.config, run.history, run.epoch + 1)
    try:
        for _ in _epochs(run, logger, progress):
            pass
    except TrainingError as error:
        kept = (
            f"{run.out / 'last.pt'} (epoch {run.epoch}) is kept"
            if run.epoch
            else "no checkpoint was written"
        )
        raise TrainingError(f"{error}; {kept}; try a lower optim.lr or --amp none") from None
    finally:
        if logger is not None:
            logger.close()
    last = run.history[-1]
    return FitResult(
        out=run.out,
        best_top1=run.best["eval_top1"],
        best_epoch=run.best["epoch"],
        last=last,
        seconds=run.seconds,
        parameters=count_parameters(run.model),
        extra_parameters=run.model.extra_parameters(),
        history=run.history,
    )


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    *,
    data_root: str | None = None,
    split: str = "test",
    batch_size: int | None = None,
    workers: int | None = None,
    device: str = "auto",
    progress: bool = True,
) -> tuple[EvalResult, Any]:
    """Evaluate a saved model on ``split`` of the dataset its config names (or ``data_root``).

    Returns the result and the dataset (whose ``samples`` line up with the predictions).
    """
    from sef.checkpoint import load_trained_model

    context = distributed.setup(device)
    try:
        trained = load_trained_model(checkpoint, device=context.device)
        config = config_from_dict(trained.config)
        dataset = trained.dataset(split, data_root)
        result = evaluate(
            trained.model,
            dataset,
            batch_size=batch_size or config.run.eval_batch_size or config.optim.batch_size,
            workers=config.data.workers if workers is None else workers,
            context=context,
            progress=progress,
        )
        return result, dataset
    finally:
        distributed.teardown(context)


def write_predictions(path: str | os.PathLike, result: EvalResult, dataset: Any) -> None:
    """A CSV of per-image predictions: path, label, prediction, correct (+ class names)."""
    import csv

    classes = dataset.classes
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "prediction", "correct", "label_name", "prediction_name"])
        for (image, _), label, prediction in zip(
            dataset.samples, result.labels.tolist(), result.predictions.tolist(), strict=True
        ):
            writer.writerow(
                [image, label, prediction, int(label == prediction), classes[label],
                 classes[prediction]]
            )  # fmt: skip
