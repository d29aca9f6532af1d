"""Run folders: runs/<run name>, then -2, -3, ...; a folder holds a run once it holds a
checkpoint, and no run is written over another."""

from __future__ import annotations

import os
from pathlib import Path

from sef.config import Config, run_name
from sef.errors import ConfigError


def default_out_dir(config: Config) -> Path:
    """runs/<run name>: named after the preset and the data (``sef.config.run_name``)."""
    return Path("runs") / run_name(config)


def _is_run(folder: Path) -> bool:
    """A folder holds a run once a checkpoint is in it: one that failed before its first
    checkpoint (config.yaml, an empty metrics.jsonl, tb/) may be started again."""
    return os.path.isfile(folder / "last.pt") or os.path.isfile(folder / "best.pt")


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
        if not os.path.isdir(out):
            raise ConfigError(f"cannot resume: {out} does not exist; check --out")
        if not _is_run(out):
            raise ConfigError(
                f"cannot resume: {out} holds no checkpoint (its run stopped before the first); "
                f"start it again without --resume"
            )
        if not os.path.isfile(out / "last.pt"):
            raise ConfigError(f"cannot resume: {out} holds best.pt but no last.pt; check --out")
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
        out = default_out_dir(config).with_name(f"{run_name(config)}-{number}")
        number += 1
    return out
