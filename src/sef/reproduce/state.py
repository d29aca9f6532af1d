"""What a run folder holds: nothing to resume, a half-finished run, or a finished one.

The folder's ``last.pt`` is the truth (``sef.engine.fit`` writes it after every epoch): its epoch
says how far the run got and its history gives the accuracies. A folder whose run was trained
with another config (another --set, another --weights) is refused rather than mixed in, and so
is one whose last.pt cannot say how its run went (cut short, weights only, a section missing),
or, for a run to train, one holding records no sef run wrote: each before any run trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sef.checkpoint import load_checkpoint, written_by
from sef.config import Config, config_changes
from sef.engine import RESUMABLE_CHANGES
from sef.engine.folders import check_others_records
from sef.engine.lock import check_lock_file, is_held
from sef.engine.run import TRAINING_STATE
from sef.errors import (
    CheckpointError,
    ConfigError,
    IncompleteCheckpoint,
    NotACheckpoint,
    OutputError,
    for_reader,
)
from sef.outputs import holds_a_run
from sef.reproduce.plan import another_out
from sef.trained import check_sections
from sef.version import __version__

NEW, PARTIAL, DONE = "new", "partial", "done"


@dataclass(frozen=True)
class Result:
    """A finished run's test accuracies (fractions): best epoch (what the authors report) and
    last epoch."""

    best_top1: float
    best_epoch: int
    last_top1: float
    last_class_mean: float
    epochs: int
    seconds: float


@dataclass(frozen=True)
class RunState:
    """``new`` (nothing to resume), ``partial`` (``epoch`` epochs done) or ``done``."""

    kind: str
    epoch: int = 0
    result: Result | None = None


def _check_same_config(config: Config, saved: dict, path: Path) -> None:
    """Refuse a run that computes something else than the one planned (locations may differ),
    whose config lacks a section (edited: defaults in its place would be compared), or whose
    config this sef cannot read (a key of another sef version)."""
    try:
        check_sections(path, saved["config"])
    except CheckpointError as error:
        raise CheckpointError(f"{error}, or give {another_out()}") from None
    try:
        changes = config_changes(saved["config"], config, RESUMABLE_CHANGES)
    except ConfigError as error:
        writer = saved.get("sef_version", "another version")
        raise ConfigError(
            f"{path} was written by sef {writer} with a config this sef {__version__} cannot "
            f"read ({error}); reproduce with that sef, or give {another_out()}"
        ) from None
    if changes:
        key, before, now = changes[0]
        raise ConfigError(
            f"{path} was trained with {key}={before!r}, but this reproduction asks for "
            f"{now!r}{_another_writer(saved)}; give the same "
            f"{for_reader('--weights and --set', 'overrides')} as before, or {another_out()}"
        )


def _another_writer(saved: dict) -> str:
    """Who wrote ``saved`` where it is not this sef, whose presets and defaults may differ: the
    same options then ask for other values."""
    writer = saved.get("sef_version")
    if writer == __version__:
        return ""
    by = written_by(writer, saved.get("torch_version"))
    return f" (its run was written by {by}; this is sef {__version__})"


def _result(saved: dict) -> Result:
    last = saved["history"][-1]
    return Result(
        best_top1=float(saved["best"]["eval_top1"]),
        best_epoch=int(saved["best"]["epoch"]),
        last_top1=float(last["eval_top1"]),
        last_class_mean=float(last["eval_class_mean"]),
        epochs=int(saved["epoch"]),
        seconds=float(saved["seconds"]),
    )


def train_again(folder: Path) -> str:
    """The advice where ``folder`` cannot serve its run as it is: only its row's folder changes."""
    return f"move {folder} away to train the run again"


def _check_new_folder(folder: Path) -> None:
    """OutputError where the folder of a run to train holds records that no sef run wrote, which
    its run would refuse to replace, or a lock no run can take: said before any run of the table
    trains (and by the dry run), not when its turn comes, hours later. A folder a live run holds
    is left to its turn, which names that run (the records may be the ones it is writing). So is
    a file in the folder's place, or a folder in its last.pt's, where no run can write."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(
            f"{folder} is a file, not a run's folder; move it away, or give {another_out()}"
        )
    if (folder / "last.pt").is_dir():
        raise CheckpointError(
            f"{folder / 'last.pt'} is a folder, not a checkpoint; {train_again(folder)}, or give "
            f"{another_out()}"
        )
    if is_held(folder):
        return
    check_lock_file(folder)
    try:
        check_others_records(folder)
    except OutputError as error:
        raise OutputError(
            f"{error.problem}; move it away, or give {another_out()}", error.problem
        ) from None


def read_state(config: Config) -> RunState:
    """The state of the run folder ``config.run.out`` for a run of ``config``."""
    folder = Path(str(config.run.out))
    path = folder / "last.pt"
    if not path.is_file() and holds_a_run(folder):
        raise ConfigError(
            f"{folder} holds best.pt but no last.pt, which says how far its run got; put the "
            f"run's last.pt back, or move the folder away to train the run again"
        )
    if not path.is_file():
        _check_new_folder(folder)
        return RunState(NEW)
    try:
        saved = load_checkpoint(path)
    except IncompleteCheckpoint as error:  # a copy of the folder that did not finish
        raise IncompleteCheckpoint(f"{error}, or {train_again(folder)}") from None
    except NotACheckpoint as error:  # its advice to pass another file: here none is passed
        raise NotACheckpoint(
            f"{error.problem}; {train_again(folder)}, or give {another_out()}", error.problem
        ) from None
    _check_same_config(config, saved, path)
    if any(key not in saved for key in TRAINING_STATE):  # best.pt copied in its place
        raise CheckpointError(
            f"{path} holds weights only (like best.pt), not how its run went; put the run's own "
            f"last.pt back, or {train_again(folder)}"
        )
    epoch = int(saved["epoch"])
    if epoch < config.optim.epochs:
        return RunState(PARTIAL, epoch)
    return RunState(DONE, epoch, _result(saved))
