"""Run folders: runs/<run name>, then -2, -3, ...; which of them hold a run."""

from __future__ import annotations

import os
from pathlib import Path

from sef.config import Config, run_name
from sef.errors import ConfigError


def default_out_dir(config: Config) -> Path:
    """runs/<run name>: named after the preset and the data (``sef.config.run_name``)."""
    return Path("runs") / run_name(config)


def is_run(folder: Path) -> bool:
    """A folder holds a run once a checkpoint is in it: one that failed before its first
    checkpoint (config.yaml, an empty metrics.jsonl, tb/) may be started again."""
    return os.path.isfile(folder / "last.pt") or os.path.isfile(folder / "best.pt")


def latest_run_dir(config: Config) -> Path:
    """The newest of runs/<name>, runs/<name>-2, ... (what a resume without --out continues)."""
    base = default_out_dir(config)
    latest, number = base, 2
    while is_run(base.with_name(f"{base.name}-{number}")):
        latest = base.with_name(f"{base.name}-{number}")
        number += 1
    return latest


def new_out_dir(config: Config) -> Path:
    """Where a new run writes: never over a finished or running run.

    An explicit ``run.out`` that already holds a run is an error; the default runs/<preset> moves
    on to runs/<preset>-2, -3, ... instead. (A resume continues ``sef.engine.run.resume_dir``.)
    """
    if config.run.out:
        out = Path(config.run.out)
        if is_run(out):
            raise ConfigError(
                f"{out} already holds a run; pass --resume to continue it or choose another --out"
            )
        return out
    out, number = default_out_dir(config), 2
    while is_run(out):
        out = default_out_dir(config).with_name(f"{run_name(config)}-{number}")
        number += 1
    return out
