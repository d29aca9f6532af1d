"""What the ablation scripts share: train (or resume, or reuse) one preset run, and the statistics
over seeds (mean, sample std, paired differences with a t interval)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from common import command_line, utc_now

from sef.config import Config, apply_overrides, resolve_config
from sef.engine import FitResult, fit


def train_run(
    preset: str, overrides: list[str], out: Path, progress: bool = True
) -> tuple[FitResult, Config]:
    """Train ``preset`` with ``overrides`` into ``out``; a run already there is resumed (a
    finished one returns at once), so an interrupted ablation continues where it stopped."""
    overrides = [*overrides, f"run.out={out}", "run.tensorboard=false"]
    config = apply_overrides(resolve_config(preset), overrides)
    result = fit(config, resume=(Path(out) / "last.pt").is_file(), progress=progress)
    return result, config


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def paired_difference(values: list[float], baseline: list[float], level: float = 0.95) -> dict:
    """Per-seed differences ``values - baseline``, their mean and its two-sided t interval."""
    from scipy.stats import t

    differences = [a - b for a, b in zip(values, baseline, strict=True)]
    mean, std = mean_std(differences)
    n = len(differences)
    half = t.ppf((1 + level) / 2, n - 1) * std / math.sqrt(n) if n > 1 else math.nan
    return {
        "differences": differences,
        "mean": mean,
        "std": std,
        "n": n,
        "level": level,
        "interval": [mean - half, mean + half],
    }


def measured_stamp(script: str, argv: list[str]) -> dict:
    """When and by which command a result was made, so results merged from calls stay dated."""
    return {"date": utc_now(), "command": command_line([script, *argv])}
