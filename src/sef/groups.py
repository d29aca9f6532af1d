"""How SEF splits the C channels of a feature map into G contiguous groups."""

from __future__ import annotations


def check_groups(groups: int) -> None:
    """Raise ValueError unless ``groups`` is a positive integer."""
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"groups must be a positive integer, got {groups!r}")


def group_sizes(channels: int, groups: int) -> list[int]:
    """Sizes of G contiguous channel groups: G-1 of floor(C/G), the last takes the remainder."""
    check_groups(groups)
    if groups > channels:
        raise ValueError(
            f"groups={groups} is larger than the {channels} feature channels; "
            f"choose groups between 1 and {channels}"
        )
    base = channels // groups
    return [base] * (groups - 1) + [channels - base * (groups - 1)]
