"""The seeded per-class hold-outs: the ranked one against an obviously-right count and as it
always drew, the stable one image by image; both keep every class of two images in both parts."""

import random
import unicodedata

import pytest

from sef.datasets.imagelist import ImageList
from sef.datasets.splits import (
    TEST_PURPOSE,
    VAL_PURPOSE,
    carve_val,
    draw,
    from_declared,
    held_out_count,
    ranked_holdout,
    stable_holdout,
)


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
    kept, held = ranked_holdout(samples, 0.1, seed=7)
    assert sorted(kept + held) == list(range(len(samples)))
    for c, n in sizes.items():
        assert sum(samples[i][1] == c for i in held) == _slow_count(n, 0.1)

    shuffled = samples[:]
    random.Random(0).shuffle(shuffled)
    _, held_shuffled = ranked_holdout(shuffled, 0.1, seed=7)
    assert {shuffled[i] for i in held_shuffled} == {samples[i] for i in held}
    assert ranked_holdout(samples, 0.1, seed=7) == (kept, held)
    assert ranked_holdout(samples, 0.1, seed=8)[1] != held
    assert ranked_holdout(samples, 0.1, seed=7, purpose=1)[1] != held  # test and val draw apart


# --- the stable hold-out of own data: each image's part depends on its name alone ---


def _images(sizes: dict[int, int], root: str = "/data") -> ImageList:
    """An image list of ``sizes[c]`` images in class c, under ``root``; no file is read."""
    samples = [(f"{root}/c{c}/img{i:03d}.jpg", c) for c, n in sizes.items() for i in range(n)]
    return ImageList(samples, [f"c{c}" for c in sizes], root=root)


def _held_names(images: ImageList, fraction: float = 0.2, seed: int = 0, purpose: int = 0):
    names = images.names()
    return {names[i] for i in stable_holdout(images, fraction, seed, purpose)[1]}


def test_the_draw_is_pinned_and_salted_by_seed_and_purpose():
    # a change of this number moves images between every user's splits: keep it
    assert draw(0, 0, "cat/IMG_0001.jpg") == pytest.approx(0.3874100, abs=1e-7)
    assert len({draw(s, p, "cat/IMG_0001.jpg") for s in (0, 1) for p in (0, 1)}) == 4


def test_adding_or_removing_images_moves_no_other_image():
    before = _images({0: 40, 1: 40, 2: 40})
    held = _held_names(before)
    grown = ImageList(
        before.samples + [(f"/data/c1/new{i}.jpg", 1) for i in range(7)], before.classes,
        root="/data",
    )  # fmt: skip
    assert _held_names(grown) - {f"c1/new{i}.jpg" for i in range(7)} == held
    removed = before.samples[45]  # one of class 1, held out or not
    shrunk = before.select([i for i, sample in enumerate(before.samples) if sample != removed])
    assert _held_names(shrunk) == held - {"c1/img005.jpg"}
    # where the data lives and the order it is listed in do not matter
    moved = ImageList([(p.replace("/data", "/mnt/x"), c) for p, c in before.samples[::-1]],
                      before.classes, root="/mnt/x")  # fmt: skip
    assert _held_names(moved) == held


@pytest.mark.parametrize("fraction", [0.05, 0.5, 0.95])
def test_every_class_of_two_images_or_more_is_in_both_parts(fraction):
    sizes = {c: 1 + c % 6 for c in range(300)}  # classes of 1 to 6 images
    images = _images(sizes)
    kept, held = stable_holdout(images, fraction, seed=3)
    assert sorted(kept + held) == list(range(len(images)))
    for c, n in sizes.items():
        parts = [sum(images.samples[i][1] == c for i in part) for part in (kept, held)]
        assert parts[0] >= 1 and (parts[1] >= 1 or n == 1)  # a class of one trains on it


def test_the_fallbacks_pick_the_smallest_and_keep_the_largest_draw():
    images = _images({0: 5, 1: 5})
    names = images.names()
    for fraction, kept_or_held, pick in ((1e-9, 1, min), (1 - 1e-9, 0, max)):
        parts = stable_holdout(images, fraction, seed=0)
        for c in (0, 1):
            indices = [i for i, (_, label) in enumerate(images.samples) if label == c]
            lone = [i for i in parts[kept_or_held] if i in indices]
            assert lone == [pick(indices, key=lambda i: draw(0, 0, names[i]))]


def test_the_fraction_is_held_out_on_average():
    # 10,000 images in 10 classes of 1,000 (no fallback: 0.9**1000 is nil): the count held out is
    # binomial, mean 1,000 and standard deviation sqrt(10,000 * 0.1 * 0.9) = 30; 150 is five of
    # them, which a fair draw passes but once in about 1.7 million seeds
    images = _images(dict.fromkeys(range(10), 1000))
    val, test = (stable_holdout(images, 0.1, 0, purpose)[1] for purpose in (0, 1))
    assert abs(len(val) - 1000) < 150 and abs(len(test) - 1000) < 150
    assert abs(len(set(val) & set(test)) - 100) < 50  # test and val draw apart: 1 % in both


def test_names_are_relative_to_the_root_composed_and_with_slashes():
    decomposed = unicodedata.normalize("NFD", "/data/é/ça.jpg")
    images = ImageList([(decomposed, 0), ("/elsewhere/x.jpg", 0)], ["é"], root="/data")
    assert images.names() == ["é/ça.jpg", "/elsewhere/x.jpg"]
    assert images.select([1]).names() == ["/elsewhere/x.jpg"]


# What main's holdout drew on this list before the stable hold-out came (seed 3, fraction 0.2,
# val then test): the benchmarks' splits, and old runs' own, may never move.
RANKED_SIZES = {0: 1, 1: 2, 2: 7, 3: 13}
RANKED_HELD = {VAL_PURPOSE: [1, 5, 13, 20, 22], TEST_PURPOSE: [1, 7, 12, 17, 21]}


def test_the_ranked_holdout_is_bit_identical_to_before():
    samples = [(f"c{c}/img{i:02d}.jpg", c) for c, n in RANKED_SIZES.items() for i in range(n)]
    images = ImageList(samples, [f"c{c}" for c in RANKED_SIZES])
    for purpose, held in RANKED_HELD.items():
        assert ranked_holdout(samples, 0.2, seed=3, purpose=purpose)[1] == held
    val = [samples[i] for i in RANKED_HELD[VAL_PURPOSE]]
    assert carve_val(images, "val", 3, 0.2).samples == val  # the benchmarks' call
    tags = [None] * len(samples)
    test = from_declared(images, tags, "test", 3, 0.1, 0.2, "own", holdout="ranked")
    assert test.samples == [samples[i] for i in RANKED_HELD[TEST_PURPOSE]]  # an old run's own
