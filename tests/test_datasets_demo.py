"""The built-in demo set: contract, determinism, locality of class differences, atomic caching."""

import dataclasses
import errno
import json
import os
import socket

import numpy as np
import pytest
import torch
from PIL import Image

import sef
from sef.datasets import birds32, birds32b, demo
from sef.errors import DataError, OutputError, said_to_command

TINY = {"per_class": 4, "test_per_class": 2}


def test_demo_honours_the_dataset_contract(demo_root):
    trainval = sef.datasets.load("demo", None, "trainval", progress=False, **TINY)
    test = sef.datasets.load("demo", None, "test", progress=False, **TINY)
    assert trainval.classes == test.classes == demo.CLASSES and len(demo.CLASSES) == 8
    assert len(trainval) == 8 * 4 and len(test) == 8 * 2
    assert not {p for p, _ in trainval.samples} & {p for p, _ in test.samples}
    assert all(path.startswith(str(demo_root)) for path, _ in trainval.samples)
    for (path, label), parts in zip(trainval.samples, trainval.parts, strict=True):
        assert f"/{trainval.classes[label]}/" in path  # the folder names the class
        assert set(parts) == {"head", "wing", "tail"}
        assert all(0 <= v < 64 for xy in parts.values() for v in xy)
    image, label = trainval[5]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (64, 64)
    assert label == trainval.samples[5][1]
    assert not trainval.upright and not test.upright  # read as stored, as the benchmarks are

    trainval.transform = sef.transforms.test_transform("resize", 32)
    tensor, _ = trainval[0]
    assert tensor.shape == (3, 32, 32) and tensor.dtype == torch.float32


def test_birds32_has_cubs_proportions_and_five_parts(demo_root):
    """32 classes (five two-way parts), 30 / 25 images per class at 128 px by default; tiny here."""
    assert len(birds32.CLASSES) == 32 and len(set(birds32.CLASSES)) == 32
    assert sef.datasets.options("birds32") == {
        "per_class": 30, "test_per_class": 25, "resolution": 128, "generation_seed": 0,
        "progress": None,
    }  # fmt: skip
    tiny = {"per_class": 2, "test_per_class": 2, "resolution": 48, "progress": False}
    trainval = sef.datasets.load("birds32", None, "trainval", **tiny)
    test = sef.datasets.load("birds32", None, "test", **tiny)
    assert trainval.classes == test.classes == birds32.CLASSES
    assert len(trainval) == len(test) == 64
    assert all(p.startswith(str(demo_root.parent / "birds32")) for p, _ in trainval.samples)
    names = ["head", "wing", "tail", "breast", "feet"]
    assert all(list(parts) == names for parts in trainval.parts)
    assert all(0 <= v < 48 for parts in test.parts for xy in parts.values() for v in xy)
    image, label = test[37]
    assert image.size == (48, 48) and f"/{test.classes[label]}/" in test.samples[37][0]
    assert test.classes[label].split("-") == list(demo.BIRDS32.variants_of(label).values())


def test_a_birds32_bird_is_the_demo_bird_plus_its_two_new_parts():
    """Same seed, same size range, same head/wing/tail: the pictures differ only around the feet
    (a clear breast draws nothing), so the demo's pictures do not depend on what birds32 adds."""
    same_size = dataclasses.replace(demo.BIRDS32, unit=demo.DEMO.unit)
    for label in range(8):
        demo_image, demo_parts = demo.render(label, np.random.default_rng(label), 128)
        label32 = label * 4  # the same head, wing and tail; clear breast, perching feet
        bird, parts = demo.render(label32, np.random.default_rng(label), 128, same_size)
        assert {k: parts[k] for k in demo_parts} == demo_parts
        diff = np.abs(np.asarray(demo_image, int) - np.asarray(bird, int)).sum(axis=2) > 30
        ys, xs = np.nonzero(diff)
        distance = {name: np.hypot(xs - x, ys - y) for name, (x, y) in parts.items()}
        others = np.minimum.reduce([d for name, d in distance.items() if name != "feet"])
        assert len(xs) >= 6 and (distance["feet"] < others).mean() > 0.95


def test_birds32b_is_birds32_with_other_variants_and_generation_seed_1(demo_root):
    """Same parts in the same order, sizes and defaults as birds32; other variants; seed 1."""
    assert [p for p, _ in demo.BIRDS32B.parts] == [p for p, _ in demo.BIRDS32.parts]
    assert demo.BIRDS32B.unit == demo.BIRDS32.unit and demo.BIRDS32B.name == "birds32b"
    for (part, variants), (_, old) in zip(demo.BIRDS32B.parts, demo.BIRDS32.parts, strict=True):
        drawings = demo.PART_DRAWINGS[part]
        assert drawings[variants[1]] not in {drawings[v] for v in old}, part  # a new difference
    assert len(set(birds32b.CLASSES)) == 32 and not set(birds32b.CLASSES) & set(birds32.CLASSES)
    assert birds32b.CLASSES[:2] == ["plain-plain-short-clear-short", "plain-plain-short-clear-long"]
    defaults = {**sef.datasets.options("birds32"), "generation_seed": 1}  # 30 / 25 at 128 px
    assert sef.datasets.options("birds32b") == defaults
    tiny = {"per_class": 2, "test_per_class": 2, "resolution": 48, "progress": False}
    trainval = sef.datasets.load("birds32b", None, "trainval", **tiny)
    test = sef.datasets.load("birds32b", None, "test", **tiny)
    assert trainval.classes == test.classes == birds32b.CLASSES
    assert len(trainval) == len(test) == 64
    folder = demo_root.parent / "birds32b" / "v1-seed1-2x2-48px"
    assert all(p.startswith(str(folder)) for p, _ in trainval.samples + test.samples)
    names = ["head", "wing", "tail", "breast", "feet"]
    assert all(list(parts) == names for parts in trainval.parts + test.parts)
    assert all(0 <= v < 48 for parts in test.parts for xy in parts.values() for v in xy)
    image, label = test[37]
    assert image.size == (48, 48) and f"/{test.classes[label]}/" in test.samples[37][0]
    assert test.classes[label].split("-") == list(demo.BIRDS32B.variants_of(label).values())


def test_birds32b_draws_the_same_birds_as_birds32_with_other_parts(demo_root):
    """The same random draw gives the same bird and part centres with other parts; the sets as
    generated (seeds 1 and 0) differ in every image."""
    for label in range(32):
        old, old_parts = demo.render(label, np.random.default_rng(label), 128, demo.BIRDS32)
        new, parts = demo.render(label, np.random.default_rng(label), 128, demo.BIRDS32B)
        assert parts == old_parts and np.asarray(old).tobytes() != np.asarray(new).tobytes()
    tiny = {"per_class": 2, "test_per_class": 2, "resolution": 48, "progress": False}
    sets = [sef.datasets.load(name, None, "trainval", **tiny) for name in ("birds32", "birds32b")]
    for (old_path, label), (new_path, new_label) in zip(*(s.samples for s in sets), strict=True):
        assert label == new_label and old_path.endswith(new_path[-9:])  # same label and index
        assert Image.open(old_path).tobytes() != Image.open(new_path).tobytes()
    assert sets[0].parts != sets[1].parts  # another generation seed: other poses


def test_a_bird_set_refuses_a_variant_it_cannot_draw():
    with pytest.raises(ValueError, match="no drawing of the tail 'spiky'"):
        demo.BirdSet("odd", (("tail", ("fan", "spiky")),), 1)


def test_val_is_carved_per_class_from_trainval(demo_root):
    load = lambda split, seed=0: sef.datasets.load(  # noqa: E731
        "demo", demo_root, split, seed=seed, progress=False, **TINY
    )
    trainval, train, val = load("trainval"), load("train"), load("val")
    assert sorted(train.samples + val.samples) == sorted(trainval.samples)
    assert not set(train.samples) & set(val.samples)
    assert sorted({label for _, label in val.samples}) == list(range(8))  # every class in val
    assert len(val) == 8  # max(1, round(0.1 * 4)) per class
    assert val.parts == [trainval.parts[trainval.samples.index(s)] for s in val.samples]
    assert load("val").samples == val.samples
    assert load("val", seed=1).samples != val.samples


def test_generation_is_a_pure_function_of_its_options(tmp_path):
    a = demo.ensure_generated(tmp_path / "a", progress=False, **TINY)
    b = demo.ensure_generated(tmp_path / "b", progress=False, **TINY)
    c = demo.ensure_generated(tmp_path / "c", generation_seed=1, progress=False, **TINY)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files) == 8 * 6
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert json.loads((a / demo.ANNOTATIONS).read_text()) == json.loads(
        (b / demo.ANNOTATIONS).read_text()
    )
    assert sum((a / f).read_bytes() != (c / f).read_bytes() for f in files) == len(files)


@pytest.mark.parametrize(
    ("birds", "part"),
    [(demo.DEMO, p) for p in demo.PART_VARIANTS]
    + [(demo.BIRDS32, p) for p in ("head", "wing", "tail", "breast", "feet")]
    + [(demo.BIRDS32B, p) for p in ("head", "wing", "tail", "breast", "feet")],
)
def test_classes_differ_only_around_one_part(birds, part):
    """Same pose and colours, one part variant swapped: changed pixels lie around that part."""
    names = [name for name, _ in birds.parts]
    base_label = 0  # round-plain-fan(-clear-perching); birds32b: plain-plain-short-clear-short
    other_label = 2 ** (len(names) - 1 - names.index(part))  # flip only this part's variant
    swapped = {**birds.variants_of(base_label), part: dict(birds.parts)[part][1]}
    assert birds.variants_of(other_label) == swapped
    size = 64 if birds is demo.DEMO else 128
    for seed in range(20):
        first, parts = demo.render(base_label, np.random.default_rng(seed), size, birds)
        second, same_parts = demo.render(other_label, np.random.default_rng(seed), size, birds)
        assert parts == same_parts
        diff = np.abs(np.asarray(first, int) - np.asarray(second, int)).sum(axis=2) > 30
        ys, xs = np.nonzero(diff)
        assert len(xs) >= 6, "the variants must be visibly different"
        distance = {name: np.hypot(xs - x, ys - y) for name, (x, y) in parts.items()}
        others = np.minimum.reduce([d for name, d in distance.items() if name != part])
        assert (distance[part] < others).mean() > 0.95
        assert diff.mean() < 0.06  # a small, local change (< 6 % of the image)


def test_generation_is_atomic_and_cached(tmp_path, monkeypatch):
    calls = {"n": 0}
    real_render = demo.render

    def failing_render(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt  # killed half way
        return real_render(*args, **kwargs)

    monkeypatch.setattr(demo, "render", failing_render)
    with pytest.raises(KeyboardInterrupt):
        demo.ensure_generated(tmp_path, progress=False, **TINY)
    assert list(tmp_path.iterdir()) == []  # no half set, no temporary folder

    monkeypatch.setattr(demo, "render", real_render)
    folder = demo.ensure_generated(tmp_path, progress=False, **TINY)
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]

    monkeypatch.setattr(demo, "render", failing_render)  # cached: nothing is drawn again
    calls["n"] = 0
    assert len(sef.datasets.load("demo", tmp_path, "test", progress=False, **TINY)) == 16
    assert calls["n"] == 0


@pytest.mark.parametrize(
    ("number", "advice"),
    [
        (errno.ENOSPC, "free there); free some space or set SEF_CACHE"),
        (errno.EROFS, "read-only file system; set SEF_CACHE"),
    ],
)
def test_a_set_that_cannot_be_written_says_where_and_what_to_do(
    tmp_path, monkeypatch, number, advice
):
    def save(image, path, *args, **kwargs):
        raise OSError(number, os.strerror(number), str(path))

    monkeypatch.setattr(Image.Image, "save", save)
    with pytest.raises(OutputError) as info:
        demo.ensure_generated(tmp_path, progress=False, **TINY)
    folder = tmp_path / demo.folder_name(**TINY, resolution=64, generation_seed=0)
    assert str(info.value).startswith(f"cannot write {folder}: ")
    assert f"{advice} or data.root to another folder" in str(info.value)
    assert list(tmp_path.iterdir()) == []
    with said_to_command(), pytest.raises(OutputError) as info:  # `sef train --data-root`
        demo.ensure_generated(tmp_path, progress=False, **TINY)
    assert f"{advice} or --data-root to another folder" in str(info.value)


def test_a_folder_of_own_images_is_told_the_preset_for_them(folder_root) -> None:
    with pytest.raises(DataError, match="csv-<backbone>, e.g. the preset folder-resnet50\\)$"):
        demo.ensure_generated(folder_root, progress=False, **TINY)
    with said_to_command(), pytest.raises(DataError, match=", e.g. --preset folder-resnet50\\)$"):
        demo.ensure_generated(folder_root, progress=False, **TINY)


@pytest.mark.parametrize("options", [{"per_class": 1}, {"test_per_class": "9"}, {"resolution": 16}])
def test_bad_demo_options_are_data_errors(tmp_path, options):
    with pytest.raises(DataError, match="demo option"):
        demo.ensure_generated(tmp_path, progress=False, **options)


def test_default_cache_follows_sef_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SEF_CACHE", str(tmp_path))
    assert demo.default_cache() == tmp_path / "demo"
    monkeypatch.delenv("SEF_CACHE")
    assert demo.default_cache().parts[-3:] == (".cache", "sef", "demo")


def test_a_killed_generations_partial_set_is_removed_by_the_next(tmp_path):
    host = socket.gethostname()
    dead, live, elsewhere = (
        tmp_path / f".v1-seed0-300x100-64px.partial-{where}-{pid}-5b70380c"
        for where, pid in ((host, 999999999), (host, os.getppid()), ("another-host", 999999999))
    )  # killed here (no such process); running (our parent); another machine's, unknowable
    for partial in (dead, live, elsewhere):
        (partial / "trainval").mkdir(parents=True)
    demo.ensure_generated(tmp_path, progress=False, **TINY)
    assert not dead.exists() and live.exists() and elsewhere.exists()


def test_a_set_finished_first_by_another_process_is_kept(tmp_path, monkeypatch):
    """Two processes (e.g. torchrun ranks) generating at once: the first complete set wins."""
    real_write = demo._write_set
    winner = {}

    def write_while_another_process_finishes(folder, *args):
        real_write(folder, *args)
        monkeypatch.setattr(demo, "_write_set", real_write)
        winner["folder"] = demo.ensure_generated(tmp_path, progress=False, **TINY)
        winner["stamp"] = (winner["folder"] / demo.ANNOTATIONS).stat().st_mtime_ns

    monkeypatch.setattr(demo, "_write_set", write_while_another_process_finishes)
    folder = demo.ensure_generated(tmp_path, progress=False, **TINY)
    assert folder == winner["folder"]
    assert (folder / demo.ANNOTATIONS).stat().st_mtime_ns == winner["stamp"]  # theirs, untouched
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # our partial copy is gone


def test_a_generated_set_is_as_readable_as_the_umask_allows(tmp_path):
    """Not mkdtemp's 0700: in a shared SEF_CACHE the others of a group read the same set."""
    previous = os.umask(0o022)
    try:
        folder = demo.ensure_generated(tmp_path, progress=False, **TINY)
    finally:
        os.umask(previous)
    assert folder.stat().st_mode & 0o777 == 0o755


def test_a_generated_set_says_where_it_went_and_a_found_one_is_quiet(tmp_path, capsys):
    """A mistyped --data-root creates a new demo cache there: the one line names it."""
    folder = demo.ensure_generated(tmp_path / "typo", progress=True, **TINY)
    assert f"demo set written to {folder}" in capsys.readouterr().err
    assert demo.ensure_generated(tmp_path / "typo", progress=True, **TINY) == folder
    assert capsys.readouterr().err == ""
