"""A training run and all of resume: ``fit(config)`` runs the paper's recipe end to end.

One straight road: datasets -> model -> SGD + StepLR -> per epoch ``train_one_epoch`` then
``evaluate`` -> metrics.jsonl, TensorBoard (or W&B, MLflow), ``last.pt`` / ``best.pt`` and the best
epoch's per-image predictions in the run folder.

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
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from sef import distributed, extras, outputs, space, trackers
from sef.backbones import TIMM_PREFIX
from sef.checkpoint import load_checkpoint, save_checkpoint, writer_of, written_by
from sef.config import (
    Config,
    apply_values,
    config_changes,
    config_from_dict,
    config_to_dict,
    flatten,
    load_config_file,
    load_preset,
    preset_names,
    run_name,
    save_config,
    setting_said,
    stored_values,
    uses_method,
)
from sef.config.values import load_yaml
from sef.datasets.checking import resume_keeps_policy
from sef.datasets.images import UnreadableImage, without_leaving_out
from sef.datasets.splits import TRAINING_RECORD, recorded_training, training_record
from sef.distributed import Context
from sef.engine.data import (
    Data,
    check_images,
    end_workers,
    from_cache,
    load_data,
    train_loader,
    training_change,
    worker_death,
)
from sef.engine.device import out_of_memory
from sef.engine.evaluation import (
    EvalResult,
    eval_batch_size,
    evaluate,
    evaluation_loader,
    group_heads_said,
    heads_trained,
    write_predictions,
)
from sef.engine.folders import (
    COPY_AND_RESUME,
    ELSEWHERE,
    MOVE_AND_RESUME,
    START_OVER,
    check_config_file,
    check_others_records,
    claim_new_out_dir,
    claim_resumed,
    clear_leftovers,
    default_out_dir,
    given_out_dir,
    is_run,
    latest_run_dir,
    resume_said,
    run_started_in,
    runs_in,
    said,
)
from sef.engine.log import Logger, tensorboard_on
from sef.engine.loop import train_one_epoch
from sef.engine.optim import create_optimizer, create_scheduler, planned_scheduler
from sef.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DiskFull,
    IncompleteCheckpoint,
    OutOfMemory,
    OutputError,
    TrainingError,
    for_reader,
    original_message,
    to_command,
)
from sef.losses import SEPARATION_GAP, SEFLoss, groups_separated
from sef.model import SEF, unwrap
from sef.seeding import generators_kept, seed_everything
from sef.text import counted, duration, shown, some
from sef.trackers import Final
from sef.trained import check_saved_root, check_sections, create_model
from sef.version import __version__

# Config keys that may differ when resuming: where things are, how they are logged and how many
# processes load them (each image's augmentation has its own seed: sef.seeding), whether they
# come from a decoded-image cache (the same pixels: sef.datasets.cache), how tensors are laid out
# in memory (channels_last: the same numbers, as on another device), and the evaluation's batch,
# which no weight depends on. The run's length may change too (the learning rate is then
# re-planned: see planned_scheduler).
RESUMABLE_CHANGES = (
    "data.root", "data.workers", "data.cache", "run.out", "run.tensorboard", "run.loggers",
    "run.device", "run.channels_last", "run.eval_batch_size", "optim.accumulate",
)  # fmt: skip
LENGTH = "optim.epochs"
MAY_CHANGE = (*RESUMABLE_CHANGES, LENGTH)  # what a resume may set otherwise than the run did
TRAINING_STATE = ("optimizer", "scheduler", "history", "best", "seconds")  # beyond best.pt's keys
SEPARATION_GUIDE = "docs/finetune.md in sef's source"  # for a run whose groups stayed together
FINETUNE_HINT = "the confirmed setting is the finetune method (`sef presets | grep finetune`)"
SCRATCH_NOTE = (  # docs/results.md: the demo ablation's phi = 1 column and the finetune method
    "note: from scratch (model.weights: null) a group loss at phi >= 1 made each channel group one "
    "map and cost the demo 25 to 48 points against plain (docs/results.md in sef's source); the "
    "demo trains from scratch with phi = 0.1"
)


# ---------------------------------------------------------------------------------- resume


def resume_dir(config: Config) -> Path:
    """The run folder a resume of ``config`` continues: ``run.out``, else the newest
    runs/<name>[-N]; ConfigError if it does not exist, holds a folder named last.pt, holds
    best.pt but no last.pt, or never held a run (naming the runs inside it or beside it). A
    folder without a checkpoint (its run stopped before the first) is resumed by starting it
    again."""
    given = given_out_dir(config)
    out = given or latest_run_dir(config)
    if os.path.isfile(out):
        raise ConfigError(
            f"cannot resume: {out} is a file; give {setting_said('run.out')} the run's folder"
        )
    if os.path.isdir(out / "last.pt"):
        raise ConfigError(
            f"cannot resume: {out / 'last.pt'} is a folder, not a checkpoint file; put the run's "
            f"own last.pt in its place, or {said(START_OVER)}"
        )
    if not run_started_in(out):
        raise ConfigError(_no_run(out, given is not None))
    if is_run(out) and not os.path.isfile(out / "last.pt"):
        raise ConfigError(
            f"cannot resume: {out} holds best.pt but no last.pt, and best.pt holds weights only, "
            f"no optimizer or schedule to continue; put the run's own last.pt back, or "
            f"{said(START_OVER)}"
        )
    return out


def _no_run(out: Path, given: bool) -> str:
    """What a resume says where ``out`` holds no run: where it looked (without --out, the
    preset's folder), and the runs inside it (--out runs) or beside it (a typo), if any."""
    out_said = setting_said("run.out")
    inside = [str(folder) for folder in runs_in(out)]
    if inside:
        listed = some(inside, shown)
        return (
            f"cannot resume: {out} holds no run itself; give {out_said} one of its runs: {listed}"
        )
    runs = [str(folder) for folder in runs_in(out.parent)]
    beside = f" (runs beside it: {some(runs, shown)})" if runs else ""
    if not given:
        return (
            f"cannot resume: no run in {out}, the folder a resume without {out_said} looks in for "
            f"this preset; pass {setting_said('run.out', 'DIR')} to resume the run in DIR{beside}"
        )
    if not os.path.isdir(out):
        return f"cannot resume: {out} does not exist; check {out_said}{beside}"
    return (
        f"cannot resume: {out} holds no run (no last.pt or config.yaml); check {out_said}, or "
        f"train without {resume_said()} to start a new run there{beside}"
    )


def resume_config(
    config: Config, changes: Mapping[str, Any] | None = None, *, named: str = ""
) -> Config:
    """What ``sef train --resume`` continues: the config saved in the run folder that ``config``
    with ``changes`` names (runs/<name> is named after the data), with ``changes`` applied again,
    so only what they name differs from the saved run; ``fit`` refuses what may not change.
    ``named``: the option that named ``config`` (``--preset NAME`` or ``--config FILE``), so
    what it sets unlike the preset the run started from is a change too; one that starts from
    another preset than the run, and would change what may not, is refused naming both (a run
    without a checkpoint too). The run continues in the folder found (a moved run too, not
    where it was saved). A run that stopped before its first
    checkpoint starts again from its config.yaml; where last.pt continues, what its config.yaml,
    edited by hand, sets unlike last.pt counts like ``changes`` (which win). A saved data root
    that is gone (moved data) is named with the advice to pass --data-root."""
    changes = changes or {}
    out = resume_dir(apply_values(config, changes))
    edited: dict[str, Any] = {}
    if os.path.isfile(out / "last.pt"):
        saved = config_from_dict(stored_values(_last_state(out)["config"]))
        source = out / "last.pt"
        if os.path.isfile(out / "config.yaml"):
            edited = _hand_edits(out / "config.yaml", saved, source, changes)
    elif os.path.isfile(out / "config.yaml"):
        source = out / "config.yaml"
        saved = _run_config(source, out, said(START_OVER))
    else:
        saved, source = config, None
    if named:
        values = _named_values(config, saved)
        if source is not None:  # what the command line sets itself wins
            unset = {key: value for key, value in values.items() if key not in changes}
            _check_named_start(config, saved, named, source, unset)
        changes = {**values, **changes}
    changes = {**edited, **changes}
    if source is not None and "data.root" not in changes:  # a moved run, or moved data
        check_saved_root(saved, str(source))
    return apply_values(saved, {"run.out": str(out), **changes})  # where it is now, not was


def _last_state(out: Path) -> dict:
    """The run's DIR/last.pt; one cut short or damaged is met with what can be done without a
    whole copy: a new run, and best.pt (weights only, which no resume takes) for the rest."""
    try:
        state = load_checkpoint(out / "last.pt")
    except IncompleteCheckpoint as error:
        best = out / "best.pt"
        rest = (
            f"; {best}, the model of its best epoch, cannot be resumed, but sef eval, predict "
            f"and export take it"
            if os.path.isfile(best)
            else ""
        )
        raise IncompleteCheckpoint(f"{error}, or without one {said(START_OVER)}{rest}") from None
    check_sections(out / "last.pt", state["config"])
    return state


def _named_values(config: Config, saved: Config) -> dict[str, Any]:
    """What ``config`` sets unlike the preset ``saved`` started from (the defaults for a config
    file without ``base:``), as ``{"section.key": value}``."""
    start = load_preset(saved.name) if saved.name in preset_names() else config_from_dict({})
    return {key: now for key, _, now in config_changes(config_to_dict(start), config, ("name",))}


def _check_named_start(
    config: Config, saved: Config, named: str, source: Path, values: Mapping[str, Any]
) -> None:
    """ConfigError where the preset or config file ``named`` starts from another preset than
    ``saved`` (the run's config, read from ``source``: its last.pt, or the config.yaml of a run
    that stopped before its first checkpoint) and its ``values`` change what a resume may not:
    the preset is the mistake, not the first of its keys."""
    if config.name == saved.name:
        return
    if not config_changes(config_to_dict(saved), apply_values(saved, values), MAY_CHANGE):
        return
    option, _, given = named.partition(" ")
    other = f"not {given}" if option == "--preset" else f"and {named} from {_start_of(config)}"
    if source.name == "last.pt":
        raise ConfigError(
            f"cannot resume {source}: the run started from {_start_of(saved)}, {other}; resume "
            f"without {option} (last.pt keeps the run's config), or {said(START_OVER)}"
        )
    raise ConfigError(
        f"cannot resume {source.parent} (its run stopped before its first checkpoint): the run "
        f"started from {_start_of(saved)}, {other}; resume without {option} (it starts again "
        f"from {source}), or run the same command without --resume to start it afresh with {named}"
    )


def _start_of(config: Config) -> str:
    """The preset ``config`` came from, or its own name (a config file without ``base:``)."""
    if config.name in preset_names():
        return f"the preset {config.name}"
    return f"a config of its own ({config.name!r})"


def _hand_edits(
    config_file: Path, saved: Config, checkpoint: Path, given: Mapping[str, Any]
) -> dict[str, Any]:
    """What the run's ``config_file``, edited by hand, sets unlike ``saved`` (the config of
    ``checkpoint``) and a resume may change; ConfigError naming the first other edit that the
    command line (``given``) does not set itself, which the resume would otherwise ignore."""
    # read as it was saved; run.out left out: the folder is where it is now
    edited = _run_config(config_file, checkpoint, "delete it (last.pt keeps the run's config)")
    edits = config_changes(config_to_dict(saved), edited, ("run.out",))
    fixed = [(key, before, now) for key, before, now in edits if key not in (*MAY_CHANGE, *given)]
    if fixed:
        key, before, now = fixed[0]
        sets, back = f"sets {key} to {now!r}", f"put {before!r} back there"
        if key not in _keys_written(config_file):
            sets, back = f"leaves out {key}, which then takes {now!r},", "put it back"
        raise ConfigError(
            f"cannot resume {checkpoint}: {config_file} was edited: it {sets} where the run "
            f"trained with {before!r}; {back} (a resume may change only {', '.join(MAY_CHANGE)})"
        )
    return {key: now for key, _, now in edits}


def _run_config(config_file: Path, resumed: Path, otherwise: str) -> Config:
    """The run's ``config_file`` as it was saved; ConfigError naming it where a hand edit broke
    it, with what a resume of ``resumed`` can do: fix it there, or ``otherwise`` (the file's
    own advice to pass --set cannot help: it is read before any --set is applied)."""
    try:
        return load_config_file(config_file, stored=True)
    except ConfigError as error:
        problem = _problem_of(error)
        where = "" if str(config_file) in problem else f"in {config_file}, "
        raise ConfigError(
            f"cannot resume {resumed}: {where}{problem}; fix it there, or {otherwise}"
        ) from None


def _problem_of(error: ConfigError) -> str:
    """The loader's ``error`` without its advice on where to fix it (in the file, by --set, or
    by passing another file: a resume gives its own), its hints at the right spelling or place
    kept: "it is a key of section 'optim' (optim.epochs)", "YAML takes no tabs there", "quote
    the word"."""
    parts = str(error).split("; ")
    kept = [part for part in parts if not part.startswith(("fix it ", "pass "))]
    return "; ".join(part.split(", in the YAML file")[0] for part in kept)


def _keys_written(config_file: Path) -> set[str]:
    """The keys (``section.key``) that ``config_file``, one that loads, sets itself; every key
    where it names a ``base:``, which sets the others."""
    values = load_yaml(config_file.read_text(encoding="utf-8")) or {}
    return set(flatten(config_to_dict(Config()))) if "base" in values else set(flatten(values))


def _check_resumable(config: Config, state: dict, path: Path) -> None:
    """Resuming must compute the same thing: only locations and the run's length may change,
    and the length not below the epochs already trained."""
    if any(key not in state for key in TRAINING_STATE):
        raise CheckpointError(
            f"cannot resume {path}: it holds weights only (like best.pt), no optimizer or "
            f"schedule to continue; put the run's own last.pt back, or {said(START_OVER)}"
        )
    if config.optim.epochs < state["epoch"]:
        raise ConfigError(
            f"cannot resume {path} for {counted(config.optim.epochs, 'epoch')}: it has trained "
            f"{state['epoch']} already; pass {setting_said('optim.epochs', state['epoch'])} or more"
        )
    saved = {**state["config"], "data": absolute_places(state["config"]["data"])}
    changes = config_changes(saved, config, MAY_CHANGE)
    if changes:
        key, before, now = changes[0]
        raise ConfigError(
            f"cannot resume {path}: {key} was {before!r} and is now {now!r}; resume with the "
            f"saved config (only {', '.join(MAY_CHANGE)} may change)"
        )


def _check_resumed_classes(classes: list[str], saved: list[str], path: Path) -> None:
    """DataError naming the classes added to the data, or gone from it, since ``path`` (a
    checkpoint holding the ``saved`` classes) was trained."""
    saved = list(saved)
    if classes == saved:
        return
    added = [name for name in classes if name not in saved]
    gone = [name for name in saved if name not in classes]
    differences = [
        f"{counted(len(names), 'class', 'classes')} {how} ({some(names, repr)})"
        for names, how in ((added, "added"), (gone, "gone"))
        if names
    ]
    raise DataError(
        f"cannot resume {path}: the data's classes are not those it trained on: "
        f"{', '.join(differences) or 'the same classes in another order'}; put the data back as "
        f"it was, or {said(START_OVER)}"
    )


def absolute_places(data: dict) -> dict:
    """A config's ``data`` section with its places absolute: the root, and the csv reader's
    ``image_root`` and class-list file, recorded so that eval and --resume work from any folder."""

    def absolute(path: str) -> str:
        return os.path.abspath(os.path.expanduser(path))

    data = {**data, "options": dict(data.get("options") or {})}
    if data.get("root"):
        data["root"] = absolute(data["root"])
    if data.get("dataset") == "csv":
        for key in ("image_root", "classes"):
            if isinstance(data["options"].get(key), str):
                data["options"][key] = absolute(data["options"][key])
    return data


def _check_out_dir(config: Config) -> None:
    """ConfigError if the run folder lies inside the class folders the run reads, where its files
    would be read as data (the folder reader takes runs/ for a class; a CSV lists its images)."""
    root = config.data.root
    if config.data.dataset != "folder" or not root or not os.path.isdir(root):
        return
    out = Path(os.path.abspath(given_out_dir(config) or default_out_dir(config)))
    if _real(out).is_relative_to(_real(Path(root))):
        raise ConfigError(
            f"the run folder {out} is inside the data root {root}, where it would be read as "
            f"data; {for_reader('choose an --out', 'set run.out to a folder')} outside it"
        )


def _check_out_is_text(config: Config) -> None:
    """ConfigError for an --out whose name is not UTF-8 (Latin-1 bytes) where TensorBoard logs:
    its writer takes UTF-8 paths only, and stopped the run, its folder made, with "'utf-8' codec
    can't encode character '\\udce9' ...: surrogates not allowed"."""
    out = config.run.out
    if not out or not tensorboard_on(config) or shown(out) == out:
        return
    raise ConfigError(
        f"{setting_said('run.out', shown(out))} is not UTF-8 text (\ufffd marks its other bytes), "
        f"and TensorBoard writes only under UTF-8 paths; choose another name, or "
        f"{setting_said('run.tensorboard', False)}"
    )


def _real(path: Path) -> Path:
    """``path`` as the system finds it: links resolved, case folded where names ignore case."""
    return Path(os.path.normcase(os.path.realpath(path)))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class FitResult:
    """What a finished run reports (the same numbers are in DIR/metrics.jsonl)."""

    out: Path
    best_top1: float
    best_epoch: int
    last: dict = field(repr=False)  # the last epoch's record: shown by report(), not repr
    seconds: float
    parameters: int
    extra_parameters: int
    history: list[dict] = field(default_factory=list, repr=False)  # every epoch's record
    finetune: bool = False  # trained with the finetune method's loss: no hint towards it
    group_heads_trained: bool = True  # False in a plain run: its group heads are at chance

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
                "group heads top-1 "
                + group_heads_said(last["eval_group_top1"], self.group_heads_trained),
                *separation_lines(last, self.finetune),
                f"training time     {duration(self.seconds)}",
                f"parameters        {self.parameters:,} in training, "
                f"{self.parameters - self.extra_parameters:,} deployed "
                f"(group heads add {self.extra_parameters:,})",
            ]
        )

    def summary(self) -> dict[str, float]:
        """The report's numbers, named as a tracker's summary shows them."""
        return {
            "best_eval_top1": self.best_top1,
            "best_epoch": self.best_epoch,
            "last_eval_top1": self.last["eval_top1"],
            "last_eval_class_mean": self.last["eval_class_mean"],
            "training_seconds": self.seconds,
            "parameters": self.parameters,
            "deployed_parameters": self.parameters - self.extra_parameters,
        }


def separation_lines(record: Mapping[str, Any], finetune: bool = False) -> list[str]:
    """The report's line on whether the channel groups separated (none without groups); where
    they did not, where to read why and, unless the run used it (``finetune``), the method that
    separates them."""
    if "eval_corr_within" not in record:
        return []
    within, between = record["eval_corr_within"], record["eval_corr_between"]
    separated = groups_separated(within, between)
    verdict = "separated" if separated else "did not separate"
    lines = [
        f"groups            {verdict}: channel correlation within {within:.3f}, between "
        f"{between:.3f} on the eval images (separated: within - between >= {SEPARATION_GAP})"
    ]
    if not separated:
        lines.append(f"                  when they do, and what it costs: {SEPARATION_GUIDE}")
        if not finetune:
            lines.append(f"                  fine-tuning? {FINETUNE_HINT}")
    return lines


@contextlib.contextmanager
def tuned_backends(device: torch.device) -> Iterator[None]:
    """On CUDA let cuDNN time its kernels once and keep the fastest (training shapes are fixed);
    the caller's setting is back after, however the run ends."""
    before = torch.backends.cudnn.benchmark
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def _prepare_model(
    config: Config, num_classes: int, context: Context, resuming: bool = False
) -> tuple[SEF, nn.Module]:
    """The SEF model on its device and the (DDP / compiled) module that trains it. ``resuming``:
    without its initial weights (``model.weights``), which the checkpoint's replace: a weights
    file given by a relative path, or ImageNet weights on a machine without them, are not read."""
    seed_everything(config.run.seed)
    if resuming:
        config = apply_values(config, {"model.weights": None})
    model = distributed.on_every(lambda: create_model(config, num_classes), context)
    if not heads_trained(config):  # keep DDP free of weights no gradient reaches
        model.group_heads.requires_grad_(False)
    fmt = torch.channels_last if config.run.channels_last else torch.contiguous_format
    model = model.to(context.device, memory_format=fmt)
    trainer: nn.Module = model
    if context.distributed:
        if config.run.sync_bn:
            trainer = nn.SyncBatchNorm.convert_sync_batchnorm(trainer)
        ids = [context.device.index] if context.device.type == "cuda" else None
        trainer = nn.parallel.DistributedDataParallel(trainer, device_ids=ids)
    if config.run.compile:
        trainer = torch.compile(trainer)
    return unwrap(trainer), trainer


def _check_setup(config: Config, context: Context, resume: bool = False) -> None:
    """What only the launch reveals (devices, process count) and no config check can see;
    ``resume``: the batch size is the run's, and the process count is what may change."""
    world, parts, batch = context.world_size, config.optim.accumulate, config.optim.batch_size
    if batch % (world * parts):
        micro = f" x {parts} micro-batches (optim.accumulate)" if parts > 1 else ""
        times = f" times {setting_said('optim.accumulate')}" if parts > 1 else ""
        fix = (
            f"resume on a number of processes{times} that divides "
            f"{batch} (a resume keeps the batch size)"
            if resume
            else f"choose a multiple of {world * parts}"
        )
        raise ConfigError(
            f"optim.batch_size={batch} must divide evenly over {world} processes{micro}; {fix}"
        )
    if config.run.amp == "fp16" and context.device.type != "cuda":
        raise ConfigError(
            f"run.amp=fp16 needs a CUDA GPU; use {setting_said('run.amp', 'bf16')} or none on CPU"
        )
    if config.run.sync_bn and context.distributed and context.device.type != "cuda":
        raise ConfigError("run.sync_bn=true needs CUDA GPUs; set it to false for CPU training")
    if context.is_main:  # only rank 0 logs; a missing client fails before any image is read
        trackers.require(config.run.loggers)
        if tensorboard_on(config):
            extras.require_installed("tensorboard")


class _Run:
    """The mutable state of one training run, saved to and restored from ``last.pt``."""

    def __init__(
        self,
        config: Config,
        data: Data,
        context: Context,
        out: Path,
        *,
        resuming: bool = False,
        out_given: bool = True,
    ):
        self.config, self.data, self.context, self.out = config, data, context, out
        self.out_given = out_given  # run.out was named (else fit chose runs/<name>[-N])
        self.model, self.trainer = _prepare_model(config, len(data.classes), context, resuming)
        self.loss_fn = SEFLoss.from_config(config.loss, self.model.groups)
        self.optimizer = create_optimizer(self.model, config)
        self.scheduler = create_scheduler(self.optimizer, config)
        self.scaler = (
            torch.amp.GradScaler(context.device.type) if config.run.amp == "fp16" else None
        )
        self.epoch = 0
        self.kept = 0  # the epoch last.pt holds
        self.history: list[dict] = []
        self.best = {"epoch": 0, "eval_top1": -1.0}
        self.seconds = 0.0
        self.best_unwritten = False  # best.pt and its predictions are to be written again
        self.trained_on = context.world_size  # the processes the epochs so far trained on
        self.trained_threads = _cpu_threads(context)  # and the CPU threads (None on a GPU)
        self.trained_accumulate = config.optim.accumulate  # and the micro-batches a step
        self.training = training_record(data.train)  # the images it trains on now (own data)
        self.trained: dict[str, Any] = {}  # and those last.pt recorded (a resume's)
        self.written_by: str | None = None  # who wrote the last.pt it resumes, in words
        self.lost_best: dict | None = None  # the best epoch whose best.pt was gone on resuming

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
            "processes": self.context.world_size,
            "cpu_threads": _cpu_threads(self.context),
            **self.training,
        }

    def restore(self, state: dict, path: Path) -> None:
        """Continue from ``state``, read from ``path`` and checked by ``_check_resumable``."""
        self.model.load_state_dict(state["model"])
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError as error:  # its parameter groups hold other tensors than the model's
            raise CheckpointError(
                f"cannot resume {path}: its optimizer state does not fit this model ({error}); "
                f"a run whose model had other weights (e.g. a timm CNN saved while sef still kept "
                f"head layers that never trained) cannot continue: train it again"
            ) from None
        self.scheduler.load_state_dict(state["scheduler"])
        if self.config.optim.epochs != state["config"]["optim"]["epochs"]:
            self._replan(state["epoch"])
        if self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.history = state["epoch"], list(state["history"])
        self.best, self.seconds = dict(state["best"]), float(state["seconds"])
        self.kept = self.epoch
        self.trained_on = state.get("processes", self.trained_on)  # unrecorded before 2026-12-07
        self.trained_threads = state.get("cpu_threads")  # unrecorded before 2026-12-07
        self.trained_accumulate = state["config"]["optim"].get("accumulate", 1)
        # unrecorded before 2026-12-07, and for data other than own
        self.trained = recorded_training(state)
        self.written_by = writer_of(state)
        # the best epoch is the one restored: the disk may have filled between last.pt and best.pt
        self.best_unwritten = self.best["epoch"] == self.epoch
        self._forget_a_lost_best()

    def _forget_a_lost_best(self) -> None:
        """Where best.pt of an earlier epoch is gone (deleted, or only last.pt was copied), keep
        its record in ``lost_best`` and, while epochs remain, let the best of those write one."""
        if self.best_unwritten or (self.out / "best.pt").is_file():
            return
        self.lost_best = dict(self.best)
        if self.epoch < self.config.optim.epochs:
            self.best = {"epoch": 0, "eval_top1": -1.0}

    def _replan(self, epoch: int) -> None:
        """Continue with the learning rate of a run planned for the new length from the start."""
        planned = planned_scheduler(self.config, epoch)
        self.scheduler.load_state_dict(planned.state_dict())
        for group in self.optimizer.param_groups:
            group["lr"] = planned.get_last_lr()[0]

    def keep(self, record: dict, evaluation: EvalResult) -> None:
        """Add an epoch's record; rank 0 writes last.pt, then best.pt with its per-image
        predictions when it is the best yet (in that order: a folder never holds a best.pt
        without the last.pt to resume)."""
        self.epoch, self.seconds = record["epoch"], self.seconds + record["seconds"]
        self.history.append(record)
        best = record["eval_top1"] > self.best["eval_top1"]
        if best:
            self.best = {"epoch": self.epoch, "eval_top1": record["eval_top1"]}
        with outputs.interrupt_after():  # a stop as last.pt lands still finds it kept
            if self.context.is_main:
                save_checkpoint(self.out / "last.pt", self.state())
            self.kept = self.epoch  # on every process: rank 0's last.pt, which errors name
        if best:
            self.keep_best(evaluation)

    def keep_best(self, evaluation: EvalResult) -> None:
        """Rank 0 writes best.pt (the model as it is now) and ``evaluation``, its per-image
        predictions."""
        self.best_unwritten = False
        if not self.context.is_main:
            return
        save_checkpoint(self.out / "best.pt", self.best_state())
        if hasattr(self.data.eval, "samples"):  # datasets given to fit may lack paths
            write_predictions(self.predictions, evaluation, self.data.eval)

    def weight_bytes(self) -> int:
        """About the size of best.pt: the model's weights and buffers."""
        return space.tensor_bytes(self.model.state_dict())

    def checkpoint_bytes(self) -> int:
        """About the size of last.pt: the weights and the optimizer's state per weight (one
        momentum copy for SGD, two moments for AdamW), before a step has made it as well."""
        o = self.config.optim
        slots = 2 if o.optimizer == "adamw" else int(o.momentum > 0)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        return self.weight_bytes() + slots * space.tensor_bytes(trainable)

    def bytes_needed(self) -> int:
        """What the run's checkpoints take on disk: last.pt, best.pt and room for a last.pt
        being written."""
        return 2 * self.checkpoint_bytes() + self.weight_bytes()

    def space_needed(self) -> str:
        """What the run's checkpoints take on disk, in words."""
        last, best = self.checkpoint_bytes(), self.weight_bytes()
        return (
            f"this run needs about {space.human(self.bytes_needed())} there for its checkpoints "
            f"(last.pt of {space.human(last)}, best.pt of {space.human(best)}, and room for one "
            f"more last.pt while it is written)"
        )

    def check_space(self) -> None:
        """DiskFull now, before any training, if the run folder's disk cannot hold the run's
        checkpoints (those already there are rewritten in place)."""
        present = sum(
            os.path.getsize(self.out / name)
            for name in ("last.pt", "best.pt")
            if os.path.isfile(self.out / name)
        )
        free = space.free_bytes(self.out)
        if free is not None and free + present < self.bytes_needed():
            elsewhere = said(MOVE_AND_RESUME if present else ELSEWHERE)
            raise DiskFull(
                f"{self.out} has {space.human(free)} free and {self.space_needed()}; free some "
                f"space or {elsewhere}"
            )

    @property
    def predictions(self) -> Path:
        """best.pt's per-image predictions, named as `sef eval --checkpoint best.pt` names them."""
        return self.out / f"best-{self.config.data.eval_split}-predictions.csv"

    def files(self) -> list[Path]:
        """best.pt and its per-image predictions, where they exist: a tracker's artifacts."""
        return [path for path in (self.out / "best.pt", self.predictions) if path.is_file()]

    def best_state(self) -> dict:
        keys = ("model", "config", "classes", "epoch", "metrics", *TRAINING_RECORD)
        return {k: v for k, v in self.state().items() if k in keys}


def _epoch(
    run: _Run, loader: DataLoader, eval_loader: DataLoader, progress: bool | None
) -> tuple[dict, EvalResult]:
    """Train one epoch, step the schedule, evaluate: the epoch's record and evaluation."""
    config, context = run.config, run.context
    epoch = run.epoch + 1
    start = time.perf_counter()
    seed_everything(config.run.seed, epoch, context.rank)
    loader.sampler.set_epoch(epoch)
    record = {"epoch": epoch, "lr": run.optimizer.param_groups[0]["lr"]}
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
        accumulate=config.optim.accumulate,
    )
    run.scheduler.step()
    evaluation = _evaluate(run, eval_loader, progress)
    if evaluation.non_finite:  # NaN logits predict class 0: the epoch would look merely poor
        raise TrainingError(
            f"training stopped after epoch {epoch}: "
            f"{evaluation.non_finite_said('eval image', 'its accuracy means nothing')}"
        )
    summary = evaluation.summary()
    record |= {
        "eval_top1": summary["top1"],
        "eval_class_mean": summary["class_mean"],
        "eval_group_top1": summary["group_top1"],
    }
    record |= {f"eval_{k}": summary[k] for k in ("corr_within", "corr_between") if k in summary}
    return record | {"seconds": time.perf_counter() - start}, evaluation


def _evaluate(run: _Run, eval_loader: DataLoader, progress: bool | None) -> EvalResult:
    """The model as it is now on the eval split."""
    config = run.config
    return evaluate(
        run.model,
        eval_loader,
        context=run.context,
        amp=config.run.amp,
        channels_last=config.run.channels_last,
        progress=progress,
    )


def _epochs(
    run: _Run, logger: Logger | None, progress: bool | None, images: Callable[[], None] | None
) -> None:
    """Epochs until ``optim.epochs``, each kept (checkpoints) and logged as it ends; ``images``
    (a finished run's :func:`_read_images`, not yet run) only where the best epoch is written
    again."""
    config, context = run.config, run.context
    if images is not None and run.best_unwritten:
        images()
    loader = train_loader(
        run.data.train,
        batch_size=config.optim.batch_size,
        workers=config.data.workers,
        seed=config.run.seed,
        context=context,
        accumulate=config.optim.accumulate,
    )
    eval_batch = eval_batch_size(config, context.world_size)
    eval_loader = evaluation_loader(
        run.data.eval, eval_batch, config.data.workers, context, persistent=True
    )  # its workers start once, not at every epoch's evaluation
    try:
        # rank 0 alone writes: the processes agree on each write, so that one failing stops all
        if run.best_unwritten:  # a resume of the best epoch: its predictions come from the model
            evaluation = _evaluate(run, eval_loader, progress)
            distributed.on_every(partial(run.keep_best, evaluation), context)
        while run.epoch < config.optim.epochs:
            record, evaluation = _epoch(run, loader, eval_loader, progress)
            distributed.on_every(partial(_keep, run, record, evaluation, logger), context)
    finally:  # not when the stopped run's traceback is collected (a notebook keeps it)
        end_workers(loader, eval_loader)


def _keep(run: _Run, record: dict, evaluation: EvalResult, logger: Logger | None) -> None:
    """Keep an epoch (rank 0 writes its checkpoints) and log it."""
    run.keep(record, evaluation)
    if logger is not None:
        logger.epoch(record, run.config.optim.epochs)


def fit(
    config: Config,
    *,
    resume: bool = False,
    progress: bool | None = None,
    data: Data | None = None,
    config_file: Path | None = None,
) -> FitResult:
    """Train ``config`` from start to finish (or from DIR/last.pt with ``resume``).

    Writes DIR/config.yaml, metrics.jsonl, tb/, last.pt and best.pt (rank 0 only) and returns the
    final report. ``data`` replaces the datasets the config names (any torch Datasets whose items
    are (image tensor, label)); the checkpoint then still records the config as given.
    ``config_file``, the file the config was read from, is refused as a new run's
    DIR/config.yaml. ``progress``: bars on stderr (None: only on a terminal or in a notebook,
    :func:`sef.text.bars_drawn`). The run seeds Python's, NumPy's and torch's random generators
    and turns ``torch.backends.cudnn.benchmark`` on (CUDA); the caller's are back when it ends.
    """
    values = config_to_dict(config)  # a checked copy we may annotate, its places absolute
    config = config_from_dict({**values, "data": absolute_places(values["data"])})
    context = distributed.setup(config.run.device)
    lock = None

    def claim() -> Path:  # rank 0 checks the run, chooses the folder, holds it (engine.lock)
        nonlocal lock
        _check_setup(config, context, resume)
        _check_out_dir(config)
        _check_out_is_text(config)
        lock = claim_resumed(resume_dir(config)) if resume else claim_new_out_dir(config)
        if not resume:  # a resume reads DIR/config.yaml as the run's config and writes it back
            check_config_file(config_file, lock.folder)
        check_others_records(lock.folder)
        clear_leftovers(lock.folder)
        return lock.folder

    kept = contextlib.ExitStack()  # the caller's settings, back however the run ends
    try:
        kept.enter_context(tuned_backends(context.device))
        kept.enter_context(generators_kept(context.device))
        # every rank writes there, or stops with rank 0, which alone says why
        out = distributed.on_main(claim, context)
        config.run.out = str(out)
        saved = _last_state(out) if resume and is_run(out) else None
        if saved is not None:  # before the data: a config that cannot resume fails at once
            distributed.on_main(lambda: _check_resumable(config, saved, out / "last.pt"), context)
        elif resume and context.is_main:
            tqdm.write(f"{out} holds no checkpoint (its run stopped before the first): starting it")
        loaded = data is None
        if loaded:  # an error every process meets alike (a bad option) is said once
            data = distributed.on_every(
                lambda: load_data(config, context, progress, cached=False), context, main_first=True
            )
        elif len(data.eval) == 0:  # the splits read from a config are checked as they are read
            raise DataError("the eval dataset given to fit holds no images: nothing to evaluate on")
        if saved is not None:  # before any image is decoded or cached
            _check_resumed_classes(data.classes, saved["classes"], out / "last.pt")
        # the model before any image is decoded: bad groups or missing weights fail here
        run = _Run(
            config, data, context, out,
            resuming=saved is not None, out_given=values["run"]["out"] is not None,
        )  # fmt: skip
        distributed.on_main(run.check_space, context)
        if saved is not None:
            distributed.on_every(lambda: run.restore(saved, out / "last.pt"), context)
        images = partial(_read_images, run, progress) if loaded else None
        finished = run.epoch >= config.optim.epochs  # a resume's: it says so before any image
        if images is not None and not finished:
            images()  # before the run says what it trains on: the images left after the check
        return _train(run, progress, images if finished else None)
    finally:
        kept.close()
        if lock is not None:
            lock.release()
        distributed.teardown(context)


def _read_images(run: _Run, progress: bool | None) -> None:
    """Open the run's decoded-image cache (``data.cache``) and check its images
    (``data.bad_images``): a resume of a finished run does so only where it evaluates again."""
    run.data = from_cache(run.data, run.config, run.context, progress)
    check_images(run.data, run.config, run.context, progress, resuming=bool(run.epoch))


def scratch_note(config: Config) -> str | None:
    """``SCRATCH_NOTE`` for a run from scratch whose group loss weighs phi >= 1, else None."""
    if config.model.weights is None and config.model.groups > 1 and config.loss.phi >= 1:
        return SCRATCH_NOTE
    return None


def _announce(run: _Run) -> None:
    c, data = run.config, run.data
    start = f"resuming after epoch {run.epoch}" if run.epoch else "training"
    tqdm.write(
        f"{start} {_name(run)}: {c.model.backbone}, G={run.model.groups}, "
        f"{len(data.train)} train / {len(data.eval)} eval images, {len(data.classes)} classes, "
        f"{counted(c.optim.epochs, 'epoch')}{_micro_batches(c)} on {run.context.world_size} x "
        f"{run.context.device.type} -> {run.out}",
        file=sys.stdout,
    )
    notes = (
        _finished_note, _lost_best_note, _versions_note, _processes_note, _threads_note,
        _accumulate_note, _one_image_note, _training_note, _one_step_note, _unloaded_tag_note,
    )  # fmt: skip
    for note in (scratch_note(c), *(note(run) for note in notes)):
        if note:
            tqdm.write(note, file=sys.stdout)


def _unloaded_tag_note(run: _Run) -> str | None:
    """A note where a new run's backbone names timm's pretrained weights (timm:ARCH.TAG) but
    model.weights null leaves them unloaded: timm's tag alone loads nothing."""
    model, name = run.config.model, run.config.model.backbone
    tag = name.partition(".")[2]
    if run.epoch or model.weights is not None or not name.startswith(TIMM_PREFIX) or not tag:
        return None
    return (
        f"note: {name} names timm's pretrained weights {tag!r}, but model.weights is "
        f"null: the backbone starts from random weights; set model.weights to DEFAULT"
        f"{for_reader(' (--weights DEFAULT)', '')} to load them"
    )


def _name(run: _Run) -> str:
    """What the run is called: a resumed one by its folder, which its config's name may no
    longer match (own images moved to ~/data/birds-grown still go on in runs/birds)."""
    return run.out.name if run.epoch else run_name(run.config)


def _micro_batches(config: Config) -> str:
    """How each batch is taken where it is in micro-batches (``optim.accumulate``), else ""."""
    parts, batch = config.optim.accumulate, config.optim.batch_size
    if parts == 1:
        return ""
    return f", batches of {batch} in {parts} micro-batches of {config.optim.micro_batch()}"


def _accumulate_note(run: _Run) -> str | None:
    """What a resume with another ``optim.accumulate`` than the run trained with changes, or
    None."""
    before, now = run.trained_accumulate, run.config.optim.accumulate
    if before == now:
        return None
    return (
        f"note: {run.out / 'last.pt'} trained with optim.accumulate={before} and resumes with "
        f"{now}: the batches, steps and learning rate stay the same, but BatchNorm's statistics "
        f"are those of other micro-batches, so the run will not end exactly where an "
        f"uninterrupted one would"
    )


def _one_image_note(run: _Run) -> str | None:
    """What micro-batches of one image do to a model with BatchNorm, or None."""
    optim, world = run.config.optim, run.context.world_size
    parts, per_process = optim.accumulate, optim.process_batch(world)
    batchnorm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in run.model.modules())
    if parts == 1 or optim.micro_batch(world) > 1 or not batchnorm:
        return None
    fewer = max(n for n in range(1, parts) if parts % n == 0)
    return (
        f"note: each micro-batch holds 1 image (optim.accumulate={parts} of {per_process} images "
        f"per process): BatchNorm normalises every image by its own statistics and keeps running "
        f"averages of single images, unlike the recipe's batches; "
        f"{setting_said('optim.accumulate', fewer)} keeps {per_process // fewer} images a "
        f"micro-batch"
    )


def _training_note(run: _Run) -> str | None:
    """What a resume on other training images than last.pt recorded means, or None."""
    change = training_change(
        run.trained, run.training, run.config.data.holdout, run.out / "last.pt"
    )
    return None if change is None else f"note: {change}"


def _one_step_note(run: _Run) -> str | None:
    """What a batch larger than the training images makes of each epoch, where it is, at a
    run's start (a resume keeps its batch size), or None."""
    images, batch = len(run.data.train), run.config.optim.batch_size
    if run.epoch or images >= batch:
        return None
    return (
        f"note: the batch of {batch} is larger than the {counted(images, 'training image')}, so "
        f"each epoch is one optimizer step; a lower {setting_said('optim.batch_size')} takes more "
        f"steps an epoch"
    )


def _lost_best_note(run: _Run) -> str | None:
    """What a resume does where the best.pt of an earlier epoch is gone, or None."""
    if run.lost_best is None:
        return None
    return (
        f"note: {run.out / 'best.pt'}, the model of epoch {run.lost_best['epoch']} (eval top-1 "
        f"{run.lost_best['eval_top1']:.4f}), is gone; best.pt will hold the best of the epochs "
        f"trained from now on"
    )


def _finished_note(run: _Run) -> str | None:
    """What a resume of a run that has trained all its epochs does, or None."""
    epochs = run.config.optim.epochs
    if run.epoch < epochs:
        return None
    return (
        f"note: {run.out / 'last.pt'} has trained all {counted(epochs, 'epoch')} already, so "
        f"none trains now; to train more, {_resumed_with(f'above {epochs}')}"
    )


def _resumed_with(epochs: str) -> str:
    """How a finished run trains on with optim.epochs ``epochs`` (e.g. "above 12"): resumed by
    the command with --epochs, or by fit's call once the config sets optim.epochs."""
    setting = f"{setting_said('optim.epochs')} {epochs}"
    return f"resume with {setting}" if to_command() else f"set {setting}, then {FIT_RESUME}"


def _versions_note(run: _Run) -> str | None:
    """What a resume under another sef or torch than wrote its last.pt changes, or None."""
    now = written_by(__version__, str(torch.__version__))
    if run.written_by is None or run.written_by == now:
        return None
    return (
        f"note: {run.out / 'last.pt'} was written by {run.written_by} and resumes under {now}: "
        f"another version may compute otherwise, so the run will not end exactly where an "
        f"uninterrupted one would"
    )


def _processes_note(run: _Run) -> str | None:
    """What a resume on another number of processes than the run trained on changes, or None."""
    now = run.context.world_size
    if run.trained_on == now:
        return None
    before = counted(run.trained_on, "process", "processes")
    return (
        f"note: {run.out / 'last.pt'} trained with {before} per step and resumes with {now}: "
        f"each process draws its own batches and BatchNorm statistics, so the run will not end "
        f"exactly where an uninterrupted one would"
    )


def _cpu_threads(context: Context) -> int | None:
    """The threads torch computes with on a CPU run; None on a GPU."""
    return torch.get_num_threads() if context.device.type == "cpu" else None


def _threads_note(run: _Run) -> str | None:
    """What a resume on the CPU with another number of threads than the run trained with
    changes, or None."""
    before, now = run.trained_threads, _cpu_threads(run.context)
    if before is None or now is None or before == now:
        return None
    return (
        f"note: {run.out / 'last.pt'} trained with {counted(before, 'CPU thread')} and resumes "
        f"with {now}: they split sums differently, so the run will not end bit for bit where an "
        f"uninterrupted one would (OMP_NUM_THREADS={before} resumes it on as many)"
    )


def _kept(run: _Run) -> str:
    """What survives a run that stops now."""
    if run.kept:
        return f"{run.out / 'last.pt'} (epoch {run.kept}) is kept"
    return "no checkpoint was written"


# How the `sef train` command goes on from the kept last.pt, and Python code (`sef reproduce`
# words it its own way)
RESUME_ADVICE = "with --resume to continue"
FIT_RESUME = "call fit(config, resume=True) to continue"
# The advice of a run's messages that names `sef train`'s options (sef.engine.folders) or fit's
# call, which `sef reproduce` words its own way.
ADVICE = (RESUME_ADVICE, FIT_RESUME, ELSEWHERE, START_OVER, COPY_AND_RESUME, MOVE_AND_RESUME)


def _go_on(run: _Run, *settings: str) -> str:
    """How to go on after a run that stops now, as its caller does it, with one of ``settings``
    (:func:`~sef.config.setting_said`) where given: the command run again with --resume (and
    --out where the command did not name the folder and a plain --resume would continue
    another: runs/demo-2 started beside it), fit called again with resume=True (and run.out
    alike); with no checkpoint kept, the same again."""
    command = to_command()
    if not run.kept:
        again = "run the same command" if command else "make the same fit call again"
        return f"{again} to start it again"
    plain = run.out_given or latest_run_dir(run.config).resolve() == run.out.resolve()
    added = " or ".join(settings)
    if command:
        how = f"add {added} to" if added else "run"
        resume = RESUME_ADVICE if plain else f"with --resume --out {run.out} to continue"
        return f"{how} the same command {resume}"
    out = "" if plain else setting_said("run.out", str(run.out))
    setting = " and ".join(part for part in (out, added) if part)
    return f"set {setting}, then {FIT_RESUME}" if setting else FIT_RESUME


def _unreadable_since(run: _Run, error: DataError) -> str:
    """What a run says of an image that became unreadable since its check: a resume that
    keeps data.bad_images=stop (or off) is not offered the skip a new run may take."""
    said = original_message(error)
    if run.kept and isinstance(error, UnreadableImage) and run.config.data.bad_images != "skip":
        keeps = resume_keeps_policy("it")
        return f"{without_leaving_out(said)}; {_kept(run)}; then {_go_on(run)} ({keeps})"
    return f"{said}; {_kept(run)}; then {_go_on(run)}"


def _start(run: _Run) -> Logger | None:
    """On rank 0 say what the run does, write its config and open its logs; None elsewhere."""
    if not run.context.is_main:
        return None
    _announce(run)
    outputs.make_folder(run.out)
    save_config(run.config, run.out / "config.yaml")
    return Logger(run.out, run.config, run.history, run.epoch + 1)


def _train(run: _Run, progress: bool | None, images: Callable[[], None] | None) -> FitResult:
    logger = None
    try:
        with space.quiet_full_disk_in_threads():  # TensorBoard's writer thread
            logger = distributed.on_every(lambda: _start(run), run.context)
            _epochs(run, logger, progress, images)
            result = _result(run)
            if logger is not None:
                logger.finish(Final(result.summary(), result.report(), run.files(), run.epoch))
                logger.close()  # flushes TensorBoard's events: a full disk may show only here
                logger = None
            return result
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"{_kept(run)}; {_go_on(run)}") from None
    except TrainingError as error:
        said = f"{error}; {_kept(run)}; try a lower optim.lr or {setting_said('run.amp', 'none')}"
        raise distributed.reworded(error, said) from None
    except DataError as error:  # an image unreadable since the run's check, met by a worker
        raise DataError(_unreadable_since(run, error)) from None
    except (RuntimeError, EOFError, ConnectionError) as error:
        died = worker_death(error)
        if died:
            raise TrainingError(f"{died}; {_kept(run)}; then {_go_on(run)}") from None
        if distributed.peer_gone(error):
            said = f"{distributed.PEER_ENDED}; {_kept(run)}; {_go_on(run)}"
            raise TrainingError(said) from None
        if not (isinstance(error, RuntimeError) and out_of_memory(error)):
            raise
        raise OutOfMemory(f"{_memory(run)}; {_kept(run)}") from None
    except (OutputError, OSError) as error:  # the disk filled, or the folder became unwritable
        if isinstance(error, OutputError) and outputs.on_stdout(error):  # not the run folder
            said = f"{error}; {_kept(run)}; then {_go_on(run)}"
            raise distributed.reworded(error, said) from None
        if not isinstance(error, OutputError):  # TensorBoard's events, written by its thread
            if not space.is_full(error):
                raise
            error = outputs.output_error(run.out / "tb", error, folder=True)
        full = isinstance(error, DiskFull)
        needed, fix = (f"; {run.space_needed()}", "free some space") if full else ("", "fix that")
        said = f"{error.problem}{needed}; {_kept(run)}; {fix}, then {_go_on(run)}"
        raise distributed.reworded(error, said) from None
    finally:
        if logger is not None:  # stopped early: close what can be closed
            with contextlib.suppress(OSError):
                logger.close()


def _memory(run: _Run) -> str:
    """What to do about a run that ran out of memory: more micro-batches keep the recipe's
    batch (``optim.accumulate``), and so does a lower ``run.eval_batch_size``, which a resume may
    take too; a lower batch or image size changes it."""
    c, world, parts = run.config, run.context.world_size, run.config.optim.accumulate
    per_process = c.optim.process_batch(world)
    batches = f"{'micro-' * (parts > 1)}batches of {counted(c.optim.micro_batch(world), 'image')}"
    lower = setting_said("optim.batch_size")
    if world > 1:
        batches += " per process"
    if c.run.eval_batch_size:
        batches += f" (evaluation: {c.run.eval_batch_size})"
    evaluation = _lower_evaluation(c)
    if evaluation and not run.kept:
        lower += f" or {setting_said('run.eval_batch_size')}"
    out_of = (
        f"out of {run.context.device.type} memory with {batches} of {c.data.image_size} x "
        f"{c.data.image_size} px"
    )
    smaller = f"a lower {lower} or {setting_said('data.image_size')}"
    more = _more_parts(per_process, parts)
    same = more and (
        f"{setting_said('optim.accumulate', more)} (the same batch of {c.optim.batch_size} in "
        f"micro-batches of {per_process // more}{' per process' * (world > 1)})"
    )
    resumable = [option for option in (same, evaluation) if option] if run.kept else []
    if resumable:  # a resume may take these: the recipe is the same
        return f"{out_of}; {_go_on(run, *resumable)}, or train again with {smaller}"
    if not more:
        return f"{out_of}; train again with {smaller}"
    return f"{out_of}; train again with {same}, or with {smaller}"


def _lower_evaluation(config: Config) -> str | None:
    """The option that halves a run's own ``run.eval_batch_size``, if it has one above 1."""
    size = config.run.eval_batch_size
    if not size or size == 1:
        return None
    return setting_said("run.eval_batch_size", size // 2)


def _more_parts(images: int, parts: int) -> int | None:
    """The next number of micro-batches above ``parts`` that splits ``images`` evenly, if any."""
    return next((n for n in range(parts + 1, images + 1) if images % n == 0), None)


def _result(run: _Run) -> FitResult:
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
        finetune=uses_method(run.config, "finetune"),
        group_heads_trained=heads_trained(run.config),
    )
