"""The options of SEF's loss, with their defaults and rules: the one place both read.

``sef.losses.SEFLoss`` (the core, torch) takes its defaults from here and checks its options with
:meth:`LossConfig.invalid`; the config's ``loss`` section (``sef.config``, which must start without
torch) is this dataclass and is checked the same way. A new loss option is a field here and its
use in ``sef.losses`` (docs/developing.md, "A loss term").
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from sef.choices import GROUP_LOSS_VARIANTS

# The options that must be finite numbers >= 0.
WEIGHTS = ("lam", "gamma", "phi", "lam_warmup", "phi_warmup", "lam_until")


@dataclass
class LossConfig:
    """Weights of Eq. 8: lam (max entropy), gamma (distillation), phi (group loss); the group
    loss's variant; whether the global head's probabilities are detached as the teacher;
    lam_warmup and phi_warmup ramp lam and phi up from 0 over that many epochs; norm_floor, a
    fraction of the image's mean channel norm below which a channel is not scaled up to unit
    length (the group loss's cosines; ``sef.losses``); lam_until, the epochs after which lam is
    0 (the entropy term only early in training). 0 turns each off: the paper's behaviour."""

    lam: float = 1.0
    gamma: float = 0.05
    phi: float = 1.0
    group_variant: str = "reference"
    detach_teacher: bool = False
    lam_warmup: float = 0.0
    phi_warmup: float = 0.0
    norm_floor: float = 0.0
    lam_until: float = 0.0

    def invalid(self) -> tuple[str, Any, str] | None:
        """The first option that cannot work, as (name, value, what it must be); None if all can."""
        for name in WEIGHTS:
            value = getattr(self, name)
            if not (_number(value) and math.isfinite(value) and value >= 0):
                return name, value, "a number >= 0"
        if not (_number(self.norm_floor) and 0 <= self.norm_floor < 1):  # NaN fails too
            return "norm_floor", self.norm_floor, "a number >= 0 and < 1"
        if not isinstance(self.detach_teacher, bool):
            return "detach_teacher", self.detach_teacher, "True or False"
        if self.lam_until and self.lam_warmup >= self.lam_until:
            return "lam_warmup", self.lam_warmup, f"under lam_until ({self.lam_until}) or 0"
        if self.group_variant not in GROUP_LOSS_VARIANTS:
            return "group_variant", self.group_variant, f"one of {', '.join(GROUP_LOSS_VARIANTS)}"
        return None


def _number(value: Any) -> bool:
    """A real number, not a bool (True is no weight) nor a text that looks like one."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)
