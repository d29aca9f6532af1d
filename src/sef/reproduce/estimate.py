"""How long a reproduction takes: the recipe's epochs x images, at a stated images/s.

Every epoch trains on the training set once and evaluates the test set once; both are counted at
the training rate (on the H200 below, evaluation ran at about 750 images/s against 814 for
training). The default rates were measured for SEF-ResNet-50, so ResNet-18 runs (Table III) are
counted as if they were as slow: their estimate is high.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sef.config import Config
from sef.errors import ConfigError, for_reader
from sef.reproduce.plan import option_said

# SEF-ResNet-50 training at 448 px, batch 32, one NVIDIA H200, 2026-11-26 (docs/performance.md)
MIXED_PRECISION_RATE = 814.0  # bf16 autocast + channels_last: `sef train`'s road
FP32_RATE = 339.0  # fp32: the authors' road; sef's own fp32 road has not been measured
_WHERE = "SEF-ResNet-50, 448 px, batch 32, one NVIDIA H200, 2026-11-26, docs/performance.md"


@dataclass(frozen=True)
class Speed:
    """Training images per second on one GPU, and where the number comes from (``measured``:
    the SEF-ResNet-50 rate above, not one the user gave)."""

    images_per_second: float
    source: str
    measured: bool = True

    def seconds(self, images: float) -> float:
        return images / self.images_per_second


def assumed_speed(config: Config, images_per_second: float | None = None) -> Speed:
    """The user's rate if given, else the measured one for the config's precision."""
    if images_per_second is not None:
        if not (math.isfinite(images_per_second) and images_per_second > 0):
            rate = option_said("--images-per-second")
            raise ConfigError(f"{rate} must be a positive number, not {images_per_second:g}")
        given = for_reader("given with --images-per-second", "given as images_per_second")
        return Speed(images_per_second, given, measured=False)
    if config.run.amp != "none":
        return Speed(MIXED_PRECISION_RATE, f"measured with bf16 and channels_last: {_WHERE}")
    mixed = for_reader(
        "--set run.amp=bf16 --set run.channels_last=true", "run.amp=bf16 and run.channels_last=true"
    )
    return Speed(
        FP32_RATE,
        f"measured on the authors' fp32 road: {_WHERE}; sef's road with {mixed} measured "
        f"{MIXED_PRECISION_RATE:.0f}",
    )


def hours(seconds: float) -> str:
    """A duration for a progress line: minutes below two hours, hours above."""
    if seconds < 60:
        return "<1 min"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
