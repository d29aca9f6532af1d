"""The seeded per-class hold-out against an obviously-right count, and its invariances."""

import random

import pytest

from sef.datasets.splits import held_out_count, holdout


def _slow_count(n: int, fraction: float) -> int:
    """Round half up, at least one, never the whole class; classes of one keep their image."""
    if n < 2:
        return 0
    count = int(fraction * n + 0.5)
    return max(1, min(n - 1, count))


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.2, 0.5, 0.9])
def test_held_out_count_matches_the_slow_rule(fraction):
    for n in range(0, 80):
        assert held_out_count(n, fraction) == _slow_count(n, fraction)
    assert held_out_count(30, 0.1) == held_out_count(29, 0.1) == 3  # CUB: 600 val images


def test_holdout_is_per_class_seeded_and_order_independent():
    sizes = {0: 1, 1: 2, 2: 29, 3: 30, 4: 60}
    samples = [(f"c{c}/img{i:03d}.jpg", c) for c, n in sizes.items() for i in range(n)]
    kept, held = holdout(samples, 0.1, seed=7)
    assert sorted(kept + held) == list(range(len(samples)))
    for c, n in sizes.items():
        assert sum(samples[i][1] == c for i in held) == _slow_count(n, 0.1)

    shuffled = samples[:]
    random.Random(0).shuffle(shuffled)
    _, held_shuffled = holdout(shuffled, 0.1, seed=7)
    assert {shuffled[i] for i in held_shuffled} == {samples[i] for i in held}
    assert holdout(samples, 0.1, seed=7) == (kept, held)
    assert holdout(samples, 0.1, seed=8)[1] != held
    assert holdout(samples, 0.1, seed=7, purpose=1)[1] != held  # test and val draw apart
