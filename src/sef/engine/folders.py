"""Run folders: runs/<run name>, then -2, -3, ...; which of them hold a run; claiming one."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import yaml

from sef import outputs
from sef.config import Config, run_name
from sef.engine.lock import LOCK_NAME, FolderBusy, NotALock, RunLock, acquire
from sef.errors import ConfigError, DiskFull, OutputError, for_reader

# The advice of a run's messages that names `sef train`'s --out, each said in one place:
# `sef reproduce`, whose --out holds a folder per run, says each its own way (with RESUME_ADVICE,
# sef.engine.run.ADVICE). Where a new run may go instead of a folder it cannot take, how a run
# that cannot go on may start over, and where a run may resume when its folder cannot serve;
# Python code, which sets run.out, is told each as :func:`for_code` words it.
ELSEWHERE = "choose another --out"
START_OVER = "train a new run with another --out"
COPY_AND_RESUME = (
    "copy the run folder to a writable place with file locks and resume it there with --out"
)
MOVE_AND_RESUME = "move the run folder and resume it there"


def for_code(advice: str) -> str:
    """One of the advice above as Python code follows it: run.out where the command's user
    gives --out."""
    return advice.replace("--out", "run.out")


def said(advice: str) -> str:
    """One of the advice above as its reader goes on: the command's user with --out, Python code
    with run.out (:func:`~sef.errors.to_command`)."""
    return for_reader(advice, for_code(advice))


def resume_said() -> str:
    """How a resume is asked for: the command's --resume, fit's resume=True."""
    return for_reader("--resume", "resume=True")


# The files only the run holding a folder writes (their temporaries are that run's too), as
# patterns: best.pt's predictions are named after the eval split.
RUN_FILES = ("last.pt", "best.pt", "config.yaml", "metrics.jsonl", "best-*-predictions.csv")


def given_out_dir(config: Config) -> Path | None:
    """The folder ``run.out`` names (``~`` is the home folder: a YAML file or ``--out=~/x``
    gives it unexpanded, which made a folder named ``~``), None where it names none."""
    return Path(config.run.out).expanduser() if config.run.out else None


def default_out_dir(config: Config) -> Path:
    """runs/<run name>: named after the preset and the data (``sef.config.run_name``)."""
    return Path("runs") / run_name(config)


def _candidates(config: Config) -> Iterator[Path]:
    """runs/<name>, runs/<name>-2, runs/<name>-3, ..."""
    base = default_out_dir(config)
    yield base
    for number in itertools.count(2):
        yield base.with_name(f"{base.name}-{number}")


is_run = outputs.holds_a_run  # a folder holds a run once a checkpoint is in it


def run_started_in(folder: Path) -> bool:
    """Whether a run ever started in ``folder``: it holds a checkpoint, the run's config.yaml, or
    the lock of a run killed before it wrote that (while it read its data)."""
    return is_run(folder) or any((folder / name).is_file() for name in ("config.yaml", LOCK_NAME))


def runs_in(folder: Path) -> list[Path]:
    """The folders in ``folder`` where a run started, by name; none where it cannot be read."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [entry for entry in entries if entry.is_dir() and run_started_in(entry)]


def latest_run_dir(config: Config) -> Path:
    """The newest of runs/<name>, runs/<name>-2, ... (what a resume without --out continues)."""
    candidates = _candidates(config)
    latest = next(candidates)
    for folder in candidates:
        if not is_run(folder):
            return latest
        latest = folder
    raise AssertionError("unreachable")  # pragma: no cover


def _already_a_run(out: Path) -> ConfigError:
    return ConfigError(
        f"{out} already holds a run; pass {resume_said()} to continue it or {said(ELSEWHERE)}"
    )


def claim_new_out_dir(config: Config) -> RunLock:
    """Choose the folder of a new run, never over a finished or running run, and lock it for
    the run's life (:mod:`sef.engine.lock`). An explicit ``run.out`` that holds a run is an
    error, and one that a live run holds is refused naming that run; the default runs/<name>
    moves on to runs/<name>-2, -3, ... past such folders, so two runs never share one. (A resume
    continues ``sef.engine.run.resume_dir``.)"""
    if out := given_out_dir(config):
        # the lock first: a live run is named even once it holds checkpoints
        outputs.check_writable(out, folder=True)
        try:
            lock = acquire(out)
        except FolderBusy as busy:
            raise FolderBusy(
                f"{out} is in use by another run ({busy.holder}); wait for it to end or "
                f"{said(ELSEWHERE)}",
                out,
                busy.holder,
            ) from None
        if is_run(out):
            lock.release()
            raise _already_a_run(out)
        return lock
    for out in _candidates(config):
        if is_run(out):
            continue
        outputs.check_writable(out, folder=True)
        try:
            lock = acquire(out)
        except FolderBusy:
            continue
        if not is_run(out):
            return lock
        lock.release()
    raise AssertionError("unreachable")  # pragma: no cover


def claim_resumed(out: Path) -> RunLock:
    """Lock the run folder ``out`` to resume it; refused, naming the holder, while a live run
    holds it (two processes continuing one run would overwrite each other's checkpoints), and
    with the advice to copy the run where it can be written where it cannot (a read-only mount,
    a file system without file locks): a resume cannot choose another place. A lock that is a
    folder or a link to nothing is named with the advice to remove it."""
    try:
        return acquire(out)
    except DiskFull:
        raise
    except NotALock as error:
        raise NotALock(f"cannot resume {out}: {error}", error.problem) from None
    except OutputError as error:
        raise OutputError(
            f"cannot resume {out}: {error.problem}; {said(COPY_AND_RESUME)}",
            error.problem,
        ) from None
    except FolderBusy as busy:
        raise FolderBusy(
            f"cannot resume {out}: a run still holds it ({busy.holder}); wait for it to end or "
            f"stop it first",
            out,
            busy.holder,
        ) from None


def check_config_file(config_file: Path | None, folder: Path) -> None:
    """ConfigError if ``config_file`` is the config.yaml a run starting in ``folder`` would
    write over (a hand-written one's comments and ``base:`` would be lost)."""
    own = folder / "config.yaml"
    if config_file is None or is_run(folder) or not own.is_file():
        return
    if os.path.samefile(config_file, own):
        raise ConfigError(
            f"{for_reader('--config', 'config_file')} {config_file} is the config.yaml the run "
            f"writes in {folder}; keep your "
            f"config elsewhere or {said(ELSEWHERE)}"
        )


TOP_KEYS = {field.name for field in dataclasses.fields(Config)}  # a run's config.yaml: all


def _mapping(config_file: Path) -> dict:
    """The YAML file ``config_file`` as a mapping; empty where it cannot be read as one."""
    try:
        values = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeError, yaml.YAMLError):
        return {}
    return values if isinstance(values, dict) else {}


def check_others_records(folder: Path) -> None:
    """OutputError where ``folder``, holding no checkpoint, holds a config.yaml, metrics.jsonl or
    trackers.json that no sef run wrote (a run writes its config.yaml first): a run there would
    replace them, and clear the TensorBoard events beside such a config.yaml. A run's config.yaml
    with a ``base:`` added is told to drop that line."""
    if is_run(folder):
        return
    values = _mapping(folder / "config.yaml")
    if set(values) == TOP_KEYS:  # sef train wrote it: every key of a resolved config, no base:
        return
    if set(values) == {*TOP_KEYS, "base"}:  # a run's, base: added by hand
        problem = (
            f"cannot write {folder / 'config.yaml'}: it names base: {values['base']}, which no "
            f"sef run writes, and this run would replace it"
        )
        raise OutputError(
            f"{problem}; remove that line (a run's config.yaml holds every value itself), or "
            f"{said(ELSEWHERE)}",
            problem,
        )
    for name in outputs.RUN_RECORDS:
        if (folder / name).is_file():
            problem = (
                f"cannot write {folder / name}: no sef run wrote it, and this one would replace it"
            )
            raise OutputError(f"{problem}; {said(ELSEWHERE)}", problem)


def _clear_events(tb: Path) -> None:
    """TensorBoard's event files under ``tb`` and the folders left empty; never other files."""
    for events in tb.rglob("events.out.tfevents.*"):
        events.unlink(missing_ok=True)
    folders = [tb, *(path for path in tb.rglob("*") if path.is_dir())]
    for empty in sorted(folders, key=lambda path: len(path.parts), reverse=True):
        with contextlib.suppress(OSError):  # not empty: it holds someone's files
            empty.rmdir()


def clear_leftovers(folder: Path) -> None:
    """Under the folder's lock: remove what a run killed mid-write left, the temporaries of its
    files, and, when it stopped before its first checkpoint, its metrics and TensorBoard
    events, so that a run started again holds only its own files."""
    for name in RUN_FILES:
        for temporary in folder.glob(f".{name}.*.tmp"):
            temporary.unlink(missing_ok=True)
    if not is_run(folder) and (folder / "config.yaml").is_file():  # a sef run's folder
        (folder / "metrics.jsonl").unlink(missing_ok=True)
        _clear_events(folder / "tb")
