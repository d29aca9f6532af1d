"""How SEF splits the C channels of a feature map into G contiguous groups."""

from __future__ import annotations

import numbers
from typing import Any


def positive_int(name: str, value: Any) -> int:
    """``value`` as an int if it is a positive integer of any integer type (numpy's too: a count
    such as ``len(np.unique(labels))``), else ValueError naming ``name``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def group_sizes(channels: int, groups: int) -> list[int]:
    """Sizes of G contiguous channel groups: G-1 of floor(C/G), the last takes the remainder."""
    groups = positive_int("groups", groups)
    if groups > channels:
        raise ValueError(
            f"groups={groups} is larger than the {channels} feature channels; "
            f"choose groups between 1 and {channels}"
        )
    base = channels // groups
    return [base] * (groups - 1) + [channels - base * (groups - 1)]
