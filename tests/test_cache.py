"""The decoded-image cache (sef.datasets.cache): the JPEG road's pixels bit for bit under the same
per-image seeds, in items, loaders and whole runs; stale caches named in one line, never read."""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import ExifTags, Image
from test_datasets_images import stored_pixels, upright_by_the_table
from test_disk_full import FULL, _failing_replace
from torch.utils.data import default_collate

from sef import datasets, transforms
from sef.checkpoint import load_checkpoint
from sef.cli import main
from sef.config import apply_overrides, resolve_config
from sef.datasets import cache, caches
from sef.datasets.splits import NoSuchSplit
from sef.distributed import Context
from sef.engine import fit, load_data, train_loader
from sef.engine.data import DeviceBatches
from sef.errors import ConfigError, DataError, said_to_command
from sef.seeding import SeededItems

CPU = torch.device("cpu")
ORIENTATIONS = (1, 6, 1, 3, 5)  # the EXIF Orientation of noisy_cub's images, in turn
ORIENTATION = ExifTags.Base.Orientation


@pytest.fixture
def noisy_cub(cub_root: Path) -> Path:
    """The tiny CUB copy with noisy JPEGs of several shapes, so every crop offset and flip shows,
    some of them phone photos stored sideways or flipped (EXIF Orientation 6, 3, 5)."""
    rng = np.random.default_rng(0)
    for k, path in enumerate(sorted((cub_root / "images").rglob("*.jpg"))):
        shape = (36 + 3 * k, 48) if k % 3 else (52, 33)  # some portrait
        exif = Image.Exif()
        exif[ORIENTATION] = ORIENTATIONS[k % len(ORIENTATIONS)]
        Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(path, exif=exif)
    return cub_root


def _splits(root: Path, **options) -> list:
    return [datasets.load("cub", root, split, **options) for split in cache.SPLITS]


def _own_splits(noisy_cub: Path, root: Path) -> list:
    """noisy_cub's photos, some tagged, as one's own ``folder`` data (ROOT/<class>/<photo>)."""
    for path in (noisy_cub / "images").rglob("*.jpg"):
        (root / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, root / path.parent.name / path.name)
    return [datasets.load("folder", root, split) for split in cache.SPLITS]


def _with(images, transform):
    copy = images.select(range(len(images)))
    copy.transform = transform
    return copy


@pytest.mark.parametrize(("recipe", "size", "bbox_crop", "own"), [
    ("resize_crop", 24, False, False), ("resize_crop", 16, True, False),
    ("resize", 20, False, False), ("resize_crop", 24, False, True),
])  # fmt: skip
def test_items_are_the_jpeg_roads_pixels_bit_for_bit(
    noisy_cub, tmp_path, recipe, size, bbox_crop, own
):
    """CUB's tagged photos as stored, the same photos as own data turned upright."""
    if own:
        trainval, test = _own_splits(noisy_cub, tmp_path / "own")
    else:
        trainval, test = _splits(noisy_cub, bbox_crop=bbox_crop)
    opened, built = cache.ensure(tmp_path / "c", [trainval, test], list, recipe, size,
                                 progress=False)  # fmt: skip
    assert built.images == 15 and opened.side == transforms.resize_size(recipe, size)
    jpegs = SeededItems(_with(trainval, transforms.train_transform(recipe, size, False)), 7)
    cached = cache.CachedTrainImages(trainval, opened, recipe, size)
    flips = []
    for epoch in (1, 2, 3):
        keys = [(epoch, index) for index in range(len(trainval))]
        expected = torch.stack([jpegs[key][0] for key in keys])
        (images, crops), labels = default_collate([SeededItems(cached, 7)[key] for key in keys])
        assert torch.equal(cached.finish_batch((images, crops), CPU), expected)
        assert labels.tolist() == trainval.targets
        flips += crops[:, 2].tolist()
    assert 0 < sum(flips) < len(flips)  # both ways drawn: the comparison saw flips
    for normalise in (False, True):
        reference = _with(test, transforms.test_transform(recipe, size, normalise))
        ours = cache.CachedTestImages(test, opened, recipe, size, normalise)
        for index in range(len(test)):
            assert torch.equal(ours[index][0], reference[index][0])
            assert ours[index][1] == reference[index][1]


@pytest.mark.parametrize("workers", [0, 1])
def test_the_training_loader_yields_the_same_batches_from_the_cache(noisy_cub, tmp_path, workers):
    trainval, test = _splits(noisy_cub)
    opened, _ = cache.ensure(tmp_path / "c", [trainval, test], list, "resize_crop", 24,
                             progress=False)  # fmt: skip
    jpegs = _with(trainval, transforms.train_transform("resize_crop", 24, normalise=False))
    cached = cache.CachedTrainImages(trainval, opened, "resize_crop", 24)
    context = Context(device=CPU)
    loaders = [train_loader(d, batch_size=4, workers=workers, seed=3, context=context)
               for d in (jpegs, cached)]  # fmt: skip
    assert isinstance(loaders[1], DeviceBatches) and len(loaders[1]) == len(loaders[0]) == 2
    for epoch in (1, 2):
        for loader in loaders:
            loader.sampler.set_epoch(epoch)
        for (a, labels_a), (b, labels_b) in zip(*loaders, strict=True):
            assert b.dtype == torch.uint8 and torch.equal(a, b) and torch.equal(labels_a, labels_b)


def test_the_cache_road_finishes_micro_batches_as_it_finishes_the_whole_batch(noisy_cub, tmp_path):
    """optim.accumulate: each image's crop and flip are its own, whatever batch it travels in."""
    trainval, test = _splits(noisy_cub)
    opened, _ = cache.ensure(tmp_path / "c", [trainval, test], list, "resize_crop", 24,
                             progress=False)  # fmt: skip
    cached = cache.CachedTrainImages(trainval, opened, "resize_crop", 24)
    context = Context(device=CPU)
    whole, parts = (train_loader(cached, batch_size=4, workers=0, seed=3, context=context,
                                 accumulate=n) for n in (1, 2))  # fmt: skip
    for loader in (whole, parts):
        loader.sampler.set_epoch(2)
    assert len(cached) == 9 and [len(labels) for _, labels in parts] == [2] * 4  # 1 left out
    images = torch.cat([images for images, _ in whole])
    assert torch.equal(torch.cat([images for images, _ in parts]), images[:8])


def _demo(out: Path, *overrides: str):
    tiny = ["data.options.per_class=4", "data.options.test_per_class=2", "data.image_size=32",
            "data.recipe=resize_crop", "optim.batch_size=4", "data.workers=0",
            "run.tensorboard=false", f"run.out={out}"]  # fmt: skip
    return apply_overrides(resolve_config("demo"), tiny + list(overrides))


@pytest.mark.slow
def test_a_run_is_the_same_with_the_cache_and_may_switch_it_when_resuming(demo_root, tmp_path):
    plain = fit(_demo(tmp_path / "jpeg", "optim.epochs=2"), progress=False)
    first = _demo(tmp_path / "cached", "optim.epochs=1", "data.cache=auto")
    fit(first, progress=False)
    assert len(list((demo_root.parent / "decoded").iterdir())) == 1  # the auto folder
    resumed = fit(_demo(tmp_path / "cached", "optim.epochs=2"), resume=True, progress=False)
    timing = ("seconds", "images_per_second")
    for a, b in zip(plain.history, resumed.history, strict=True):
        assert {k: v for k, v in a.items() if k not in timing} == {
            k: v for k, v in b.items() if k not in timing
        }
    weights = [load_checkpoint(tmp_path / run / "last.pt")["model"] for run in ("jpeg", "cached")]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_load_data_reads_the_cache_and_builds_it_once(demo_root, tmp_path, capsys):
    config = _demo(tmp_path / "run", f"data.cache={tmp_path / 'c'}")
    data = load_data(config, Context(device=CPU), progress=False)
    assert isinstance(data.train, cache.CachedTrainImages)
    assert isinstance(data.eval, cache.CachedTestImages)
    assert data.eval[0][0].dtype == torch.float32  # normalised in the workers on a CPU
    line = capsys.readouterr().err.strip()
    assert line.startswith(f"cached 48 images in {tmp_path / 'c'}: ") and "built in" in line
    assert caches.describe(tmp_path / "c").dataset == "demo"  # for `sef data caches`
    load_data(config, Context(device=CPU), progress=False)
    assert capsys.readouterr().err == ""  # up to date: read as it is


def test_a_model_that_cannot_be_built_stops_a_run_before_its_cache_is_built(demo_root, tmp_path):
    # G above the channels, or weights that cannot be read offline, fail before any image is
    # decoded: building the cache first decoded and wrote every image of the dataset in vain
    config = _demo(tmp_path / "run", f"data.cache={tmp_path / 'c'}", "model.groups=999")
    with pytest.raises(ConfigError, match="groups=999 is larger than the 128 feature channels"):
        fit(config, progress=False)
    assert not (tmp_path / "c").exists()


def test_a_run_on_data_without_a_test_split_says_how_to_evaluate_on_val(no_test_split, tmp_path):
    config = apply_overrides(resolve_config("folder-resnet18"), [f"data.root={no_test_split}"])
    with pytest.raises(NoSuchSplit) as info:
        load_data(config, Context(device=CPU), progress=False)
    assert str(info.value) == (
        f"{no_test_split} declares no test images; add them or leave out every split, or "
        f"evaluate on held-out training images: data.train_split=train and data.eval_split=val"
    )
    with said_to_command(), pytest.raises(NoSuchSplit) as info:  # `sef train`'s user, its --set
        load_data(config, Context(device=CPU), progress=False)
    assert str(info.value).endswith(": --set data.train_split=train --set data.eval_split=val")


def test_a_run_without_a_test_split_caches_the_splits_there_are(no_test_split, tmp_path, capsys):
    overrides = [
        f"data.root={no_test_split}",
        "data.train_split=train",
        "data.eval_split=val",
        "data.image_size=32",
        "data.workers=0",
        f"data.cache={tmp_path / 'c'}",
    ]
    config = apply_overrides(resolve_config("folder-resnet18"), overrides)
    data = load_data(config, Context(device=CPU), progress=False)
    assert isinstance(data.train, cache.CachedTrainImages) and len(data.train) == 8
    assert capsys.readouterr().err.startswith(f"cached 12 images in {tmp_path / 'c'}: ")


def test_where_the_cache_cannot_be_built_a_run_reads_the_jpegs_saying_why(
    demo_root, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # where the advised command writes what it writes
    config = _demo(tmp_path / "run", "data.cache=auto")
    data = load_data(config, Context(world_size=2, device=CPU), progress=False)
    assert type(data.train) is datasets.ImageList
    line = capsys.readouterr().err
    assert line.startswith("data.cache=auto is off for this run: ") and line.count("\n") == 1
    assert "holds no image cache yet, and under torchrun it is built first: sef data cache" in line
    command = line.split("under torchrun it is built first: ")[1]
    # it named NAME ROOT only: `sef data cache demo` built the 64 px set of 300 images a class
    assert main(shlex.split(command)[1:] + ["--no-progress"]) == 0
    built = load_data(config, Context(world_size=2, device=CPU), progress=False)
    assert isinstance(built.train, cache.CachedTrainImages)  # the cache the command built
    capsys.readouterr()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    config = _demo(tmp_path / "run", f"data.cache={tmp_path / 'mine'}")
    assert type(load_data(config, Context(device=CPU), progress=False).train) is datasets.ImageList
    line = capsys.readouterr().err
    assert "holds other files (notes.txt), so it is not an image cache" in line
    assert line.count("\n") == 1
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


def test_a_file_system_without_locks_refuses_the_cache_in_one_line(tmp_path, monkeypatch):
    """NFS without a lock daemon answers flock with ENOLCK: filelock before 3.30 took that for a
    holder and the build waited for ever, saying another process was building."""

    def no_locks(*_):
        raise OSError(errno.ENOLCK, "No locks available")

    def waits(line):
        raise AssertionError(f"waited: {line}")

    monkeypatch.setattr("fcntl.flock", no_locks)
    with pytest.raises(cache.CacheUnavailable, match="no locks available; choose another place"):
        with cache._building(tmp_path / "c", waits):
            pass


def _free(monkeypatch, free: int) -> None:
    monkeypatch.setattr(cache.shutil, "disk_usage", lambda _: type("U", (), {"free": free})())


def test_a_cache_without_room_is_refused_before_anything_is_written(cub_root, tmp_path,
                                                                     monkeypatch):  # fmt: skip
    folder = tmp_path / "c"
    _free(monkeypatch, 19_845 + cache.MARGIN)  # room for the data and the margin, not the index
    with pytest.raises(cache.CacheUnavailable) as info:
        cache.build(folder, _splits(cub_root), "resize_crop", 16, progress=False)
    # both are 1.0 MB in words, so the message gives the bytes (the index's size varies with
    # the length of tmp_path)
    needs, free = re.fullmatch(
        rf"the image cache needs ([\d,]+) bytes in {re.escape(str(folder))} and ([\d,]+) bytes "
        r"are free there; free space or choose another folder",
        str(info.value),
    ).groups()
    assert int(needs.replace(",", "")) > int(free.replace(",", "")) == 19_845 + cache.MARGIN
    assert not folder.exists()


def test_a_disk_full_at_the_index_leaves_no_data_file(cub_root, tmp_path, monkeypatch):
    folder = tmp_path / "c"
    _free(monkeypatch, 10**12)
    monkeypatch.setattr(os, "replace", _failing_replace(cache.INDEX, at=1))
    with pytest.raises(cache.CacheUnavailable) as info:
        cache.build(folder, _splits(cub_root), "resize_crop", 16, progress=False)
    assert str(info.value) == (
        f"cannot write {folder / cache.INDEX}: no space left on device (1.0 TB free there); "
        f"free some space or choose another place"
    )
    assert [path.name for path in folder.iterdir()] == [cache.LOCK]  # its empty lock file


def test_a_killed_builds_full_size_temporary_is_removed_and_counts_as_free(
    cub_root, tmp_path, monkeypatch
):
    folder = tmp_path / "c"
    folder.mkdir()
    dead = folder / f".{cache.DATA}.999999999.tmp"
    live = folder / f".{cache.DATA}.{os.getppid()}.tmp"
    dead.write_bytes(b"x" * 30_000)  # a build killed before it cleaned up: no such process
    live.write_bytes(b"y")  # a build still running (our parent process): left alone
    _free(monkeypatch, 19_845 + cache.MARGIN + 200)  # room only with the dead build's file
    cache.build(folder, _splits(cub_root), "resize_crop", 16, progress=False)
    assert not dead.exists() and live.exists() and (folder / cache.INDEX).is_file()


def test_a_file_system_without_fallocate_gets_a_plain_file(cub_root, tmp_path, monkeypatch):
    def unsupported(descriptor: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    built = cache.build(tmp_path / "c", _splits(cub_root), "resize_crop", 16, progress=False)
    assert built.images == 15 and (tmp_path / "c" / cache.DATA).stat().st_size == 19_845


# A build on a disk whose file system cannot reserve blocks, filled by another program after the
# third image: what it printed.
_FILLED = """
import errno, os, sys
from pathlib import Path
from test_disk_full import _fill
from sef import datasets
from sef.datasets import cache, caches

root, folder = sys.argv[1:]


def unsupported(descriptor, offset, length):
    raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))


os.posix_fallocate = unsupported
resize = cache._Resized.__getitem__


def item(self, i):
    if i == 3:
        _fill(Path(folder).parent)
    return resize(self, i)


cache._Resized.__getitem__ = item
try:
    splits = cache.readable_splits(lambda split: datasets.load("cub", root, split))
    cache.build(Path(folder), splits, "resize", 64, progress=False)
except cache.CacheUnavailable as error:
    print(error)
"""


@pytest.mark.slow
def test_a_disk_that_fills_where_blocks_cannot_be_reserved_is_one_line(cub_root, tmp_path,
                                                                        small_disk):  # fmt: skip
    folder = small_disk(2000) / "c"
    script = tmp_path / "filled.py"
    script.write_text(_FILLED)
    done = subprocess.run(
        [sys.executable, str(script), str(cub_root), str(folder)], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done  # not killed by a SIGBUS writing a mapped page
    assert re.fullmatch(
        rf"cannot write {folder / cache.DATA}: no space left on device \(.* free there\); free "
        rf"some space or choose another place\n",
        done.stdout,
    )
    assert [path.name for path in folder.iterdir()] == [cache.LOCK]


def test_the_data_file_is_allocated_before_it_is_written(cub_root, tmp_path, monkeypatch):
    folder, allocated = tmp_path / "c", []
    _free(monkeypatch, 10**12)

    def allocate(descriptor: int, offset: int, length: int) -> None:  # as on a full disk
        allocated.append((offset, length))
        raise FULL

    monkeypatch.setattr(os, "posix_fallocate", allocate)
    with pytest.raises(cache.CacheUnavailable) as info:
        cache.build(folder, _splits(cub_root), "resize_crop", 16, progress=False)
    assert allocated == [(0, 19_845)]
    assert str(info.value) == (
        f"cannot write {folder / cache.DATA}: no space left on device (1.0 TB free there); "
        f"free some space or choose another place"
    )
    assert [path.name for path in folder.iterdir()] == [cache.LOCK]  # no temporary, no data file


# One process's cache.ensure of a folder. The first's build, once it has begun, waits until the
# second has said it waits for the lock, so that the second asks while the first builds. The
# second's last argument: "full", a disk with room for little beside the cache the first writes;
# an image's path, touched as the second gets the lock (changed while it waited).
_ENSURE = """
import os, sys, time
from pathlib import Path
from filelock import FileLock
from sef import datasets
from sef.datasets import cache, caches

root, folder, role, signals, second, how = sys.argv[1:]
building, waiting = Path(signals, "building"), Path(signals, "waiting")
if role == "first":
    resize = cache._Resized.__getitem__

    def item(self, i):
        if not building.exists():
            building.touch()
            while not waiting.exists():
                time.sleep(0.02)
        return resize(self, i)

    cache._Resized.__getitem__ = item
elif second == "full":
    cache.shutil.disk_usage = lambda path: type("U", (), {"free": cache.MARGIN + 8000})()
elif second:
    acquire = FileLock.acquire

    def acquired(self, *args, **kwargs):
        held = acquire(self, *args, **kwargs)
        os.utime(second)  # now
        return held

    FileLock.acquire = acquired
splits = [datasets.load("cub", root, split) for split in cache.SPLITS]
if role == "second":
    while not building.exists():
        time.sleep(0.02)


def say(line):
    print(line, flush=True)
    waiting.touch()


try:
    if how == "build":  # whatever is there replaced
        built = cache.build(Path(folder), splits, "resize", 16, progress=False, say=say)
        print("built", built.images)
    else:
        opened, built = cache.ensure(Path(folder), splits, list, "resize", 16, progress=False,
                                     say=say)
        print("built" if built else "opened", opened.count)
finally:
    waiting.touch()  # the first goes on whatever became of this one
"""


def _two_ensures(root: Path, tmp_path: Path, second: str = "", how: str = "ensure") -> list[str]:
    """What the first and the second process printed, each ensuring (or with ``how="build"``
    building) the cache of ``root``."""
    script = tmp_path / "ensure.py"
    script.write_text(_ENSURE)
    started = [
        subprocess.Popen(
            [sys.executable, str(script), str(root), str(tmp_path / "c"), role, str(tmp_path),
             second, how],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for role in ("first", "second")
    ]  # fmt: skip
    said = [process.communicate(timeout=300) for process in started]
    assert [process.returncode for process in started] == [0, 0], said
    return [out for out, _ in said]


@pytest.mark.slow
def test_two_processes_asking_for_one_cache_at_once_build_it_once(cub_root, tmp_path):
    folder = tmp_path / "c"
    assert _two_ensures(cub_root, tmp_path) == [
        "built 15\n",
        f"waiting for another process that is building the image cache in {folder}\nopened 15\n",
    ]


@pytest.mark.slow
def test_a_process_that_waited_for_a_build_decides_again_with_the_lock(cub_root, tmp_path):
    # the second finds the first's cache stale after waiting (an image changed meanwhile): it
    # rebuilds from what the files are now, not from the file sizes and times it read before
    # waiting, which made its own cache stale the moment it was written
    folder, image = tmp_path / "c", sorted((cub_root / "images").rglob("*.jpg"))[3]
    first, second = _two_ensures(cub_root, tmp_path, str(image))
    assert first == "built 15\n"
    assert second == (
        f"waiting for another process that is building the image cache in {folder}\n"
        f"rebuilding the image cache: 1 of the 15 images changed (size or time) since {folder} "
        f"was built, e.g. {image}\nbuilt 15\n"
    )
    assert _stale(cub_root, folder, "resize") is None
    again = tmp_path / "again"  # sef.datasets.cache.build, which replaces the cache: the same
    again.mkdir()
    _, second = _two_ensures(cub_root, again, str(image), how="build")
    assert second.endswith("\nbuilt 15\n") and _stale(cub_root, again / "c", "resize") is None


@pytest.mark.slow
def test_a_build_under_way_leaves_room_for_the_cache_it_becomes(cub_root, tmp_path):
    # the second asks while the first's full-size temporary fills the disk: that file becomes
    # the cache the second opens (or replaces), so it is no reason to refuse for room
    folder = tmp_path / "c"
    assert _two_ensures(cub_root, tmp_path, "full") == [
        "built 15\n",
        f"waiting for another process that is building the image cache in {folder}\nopened 15\n",
    ]


def test_a_stale_cache_in_a_read_only_folder_is_unavailable_and_kept(noisy_cub, tmp_path,
                                                                     monkeypatch):  # fmt: skip
    folder = tmp_path / "c"
    cache.build(folder, _splits(noisy_cub), "resize", 16, progress=False)
    before = {name: (folder / name).read_bytes() for name in (cache.INDEX, cache.DATA)}
    image = sorted((noisy_cub / "images").rglob("*.jpg"))[2]
    os.utime(image, ns=(0, 0))
    real = Path.unlink

    def unlink(path, *args, **kwargs):  # as on a read-only mount
        if path.parent == folder:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", unlink)
    said = []
    with pytest.raises(cache.CacheUnavailable) as info:
        cache.ensure(folder, _splits(noisy_cub), list, "resize", 16, progress=False,
                     say=said.append)  # fmt: skip
    assert said[0].startswith("rebuilding the image cache: 1 of the 15 images changed")
    assert str(info.value) == (
        f"cannot write {folder / cache.INDEX}: read-only file system; choose another place"
    )
    assert {name: (folder / name).read_bytes() for name in before} == before


def test_a_stale_cache_whose_lock_cannot_be_made_says_why_it_was_to_be_built(
    noisy_cub, tmp_path, monkeypatch
):
    folder = tmp_path / "c"
    cache.build(folder, _splits(noisy_cub), "resize", 16, progress=False)

    def read_only(self, *args, **kwargs):  # as on a read-only mount
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), self.lock_file)

    monkeypatch.setattr(caches.FileLock, "acquire", read_only)
    with pytest.raises(cache.CacheUnavailable) as info:
        cache.ensure(folder, _splits(noisy_cub), list, "resize", 24, progress=False)
    assert str(info.value) == (
        f"{folder} was built with image_size 16, this run needs 24, and cannot write "
        f"{folder / cache.LOCK}: read-only file system; choose another place"
    )


def test_a_link_in_place_of_the_build_lock_is_refused_in_one_line_never_opened(cub_root, tmp_path):
    # filelock opened .build-lock through a link (older versions make or empty what it points
    # to), and the build then stopped on "cannot write ...: too many levels of symbolic links"
    folder, kept = tmp_path / "c", tmp_path / "kept"
    folder.mkdir()
    kept.write_text("mine")
    os.utime(kept, (1, 1))
    for target in (kept, tmp_path / "made"):
        (folder / cache.LOCK).unlink(missing_ok=True)
        (folder / cache.LOCK).symlink_to(target)
        with pytest.raises(cache.CacheUnavailable) as info:
            cache.ensure(folder, _splits(cub_root), list, "resize", 16, progress=False)
        assert str(info.value) == (
            f"{folder} holds no image cache yet, and {folder / cache.LOCK} is a link to {target}, "
            f"not a cache's build lock; remove it (no build holds it)"
        )
    assert kept.stat().st_mtime == 1 and kept.read_text() == "mine"
    assert not (tmp_path / "made").exists()


def test_a_cache_place_under_a_file_is_one_plain_line(cub_root, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("SEF_CACHE", str(tmp_path / "file"))
    folder = cache.default_folder("cub", cub_root, {}, "resize", 16)
    with pytest.raises(cache.CacheUnavailable) as info:
        cache.ensure(folder, _splits(cub_root), list, "resize", 16, progress=False)
    assert str(info.value) == (
        f"{folder} holds no image cache yet, and cannot write {folder}: {tmp_path / 'file'} is a "
        f"file, not a folder; choose another place"
    )


def test_a_reader_keeps_the_pixels_it_opened_when_the_cache_is_rebuilt(noisy_cub, tmp_path):
    folder = tmp_path / "c"
    trainval, test = _splits(noisy_cub)
    opened, _ = cache.ensure(folder, [trainval, test], list, "resize", 16, progress=False)
    items = cache.CachedTestImages(test, opened, "resize", 16, normalise=False)
    # another run asks the folder for other rows (a bbox crop), so it rebuilds it, as a second
    # process would, before this run has read an image (its evaluation workers start later)
    _, rebuilt = cache.ensure(folder, _splits(noisy_cub, bbox_crop=True), list, "resize", 16,
                              progress=False, say=lambda line: None)  # fmt: skip
    assert rebuilt is not None
    reference = _with(test, transforms.test_transform("resize", 16, False))
    loader = torch.utils.data.DataLoader(items, batch_size=None, num_workers=1)
    for index, (image, label) in enumerate(loader):  # a worker started after the rebuild
        assert torch.equal(image, reference[index][0]) and label == reference[index][1]
    spawned = pickle.loads(pickle.dumps(items))  # a spawned worker cannot reach the old file
    with pytest.raises(DataError) as info:
        spawned[0]
    assert str(info.value) == (
        f"{folder} was rebuilt by another process while this one read it; run this again"
    )


def test_a_cache_rebuilt_while_it_is_opened_is_not_read(noisy_cub, tmp_path, monkeypatch):
    folder = tmp_path / "c"
    cache.build(folder, _splits(noisy_cub), "resize", 16, progress=False)
    real = cache.stale_reason

    def rebuilt_after(*args, **kwargs):  # another process rebuilds between check and opening
        reason = real(*args, **kwargs)
        monkeypatch.setattr(cache, "stale_reason", real)
        cache.build(folder, _splits(noisy_cub, bbox_crop=True), "resize", 16, progress=False)
        return reason

    monkeypatch.setattr(cache, "stale_reason", rebuilt_after)
    keys, turned = _wanted(_splits(noisy_cub))
    with pytest.raises(cache.StaleCache) as info:
        cache.open_cache(folder, keys, "resize", 16, turned=turned)
    assert str(info.value) == f"{folder} was rebuilt by another process while this one opened it"


def test_a_build_reads_the_splits_there_are_and_fails_only_without_any(tmp_path):
    def read(split: str, missing=("test",), damaged=()) -> str:
        if split in missing:
            raise NoSuchSplit(f"{tmp_path} declares no {split} images")
        if split in damaged:
            raise DataError(f"{tmp_path}/images_test.txt line 3 is '7', expected '<id> <value>'")
        return split

    assert cache.readable_splits(read) == ["trainval"]
    with pytest.raises(DataError) as info:
        cache.readable_splits(lambda split: read(split, cache.SPLITS))
    assert str(info.value) == f"{tmp_path} declares no trainval images"
    with pytest.raises(DataError, match="line 3 is '7'"):  # a damaged list is no missing split
        cache.readable_splits(lambda split: read(split, (), ("test",)))


def _stale(root: Path, folder: Path, recipe="resize_crop", size=16, **options) -> str | None:
    keys, turned = _wanted(_splits(root, **options))
    return cache.stale_reason(folder, keys, recipe, size, turned=turned)


def _wanted(splits) -> tuple[list, bool | None]:
    """What ``splits`` want of a cache, as ``cache.open_cache`` takes it: keys, then turned."""
    return [key for images in splits for key in cache.sources(images)], cache.upright(splits)


@pytest.mark.parametrize("own", [False, True])
def test_a_cache_holds_own_photos_upright_and_a_benchmarks_as_stored(noisy_cub, tmp_path, own):
    """Phone photos stored sideways (EXIF Orientation) are cached as their dataset reads them:
    turned as the EXIF table says for own data, as stored for CUB (whose boxes are in the stored
    pixels' coordinates), in a cache of format 2 or 1."""
    splits = _own_splits(noisy_cub, tmp_path / "own") if own else _splits(noisy_cub)
    opened, _ = cache.ensure(tmp_path / "c", splits, list, "resize_crop", 16, progress=False)
    finish = transforms.test_transform("resize_crop", 16, normalise=False)
    turned = 0
    for images in splits:
        items = cache.CachedTestImages(images, opened, "resize_crop", 16, normalise=False)
        for index, (path, _) in enumerate(images.samples):
            with Image.open(path) as file:
                orientation = file.getexif().get(ORIENTATION)
            stored = stored_pixels(path)
            seen = upright_by_the_table(stored, orientation) if own else stored
            assert torch.equal(items[index][0], finish(Image.fromarray(seen)))
            turned += orientation != 1
    assert turned == 9  # tagged photos were among them
    assert json.loads((tmp_path / "c" / cache.INDEX).read_text())["format"] == (2 if own else 1)


def test_a_benchmarks_cache_built_before_own_photos_were_turned_is_read_as_it_is(
    noisy_cub, tmp_path
):
    """Every cache an older sef built is format 1, rows as stored, lines as this one writes them:
    a benchmark's holds what its dataset reads, so a 12.7 GB CUB cache is not rebuilt for
    nothing."""
    folder = tmp_path / "c"
    cache.build(folder, _splits(noisy_cub), "resize", 16, progress=False)
    index = json.loads((folder / cache.INDEX).read_text())
    assert index["format"] == 1 and all(len(line) == 6 for line in index["images"])
    _, built = cache.ensure(folder, _splits(noisy_cub), list, "resize", 16, progress=False)
    assert built is None


@pytest.mark.parametrize(("own", "found", "reason"), [
    (True, 1, "holds images as stored (cache format 1), this run reads them turned upright by "
              "their EXIF orientation (format 2)"),  # own data's, from an older sef
    (False, 2, "holds images turned upright by their EXIF orientation (cache format 2), this run "
               "reads them as stored (format 1)"),  # CUB's, from a sef that turned every image
    (False, 3, "was built by another sef (cache format 3; this one reads formats 1 and 2)"),
])  # fmt: skip
def test_a_cache_of_another_format_is_stale_and_rebuilt(noisy_cub, tmp_path, own, found, reason):
    """Rows turned otherwise than its dataset reads them, or laid out otherwise: never read."""
    folder = tmp_path / "c"

    def splits():
        return _own_splits(noisy_cub, tmp_path / "own") if own else _splits(noisy_cub)

    cache.build(folder, splits(), "resize", 16, progress=False)
    index = json.loads((folder / cache.INDEX).read_text())
    (folder / cache.INDEX).write_text(json.dumps({**index, "format": found}))
    keys, turned = _wanted(splits())
    assert cache.stale_reason(folder, keys, "resize", 16, turned=turned) == f"{folder} {reason}"
    said = []
    _, built = cache.ensure(folder, splits(), list, "resize", 16, progress=False,
                            say=said.append)  # fmt: skip
    assert said == [f"rebuilding the image cache: {folder} {reason}"] and built.images == 15
    assert json.loads((folder / cache.INDEX).read_text())["format"] == (2 if own else 1)


def test_one_cache_never_mixes_images_turned_upright_and_as_stored(noisy_cub, tmp_path):
    mixed = [_splits(noisy_cub)[1], _own_splits(noisy_cub, tmp_path / "own")[1]]
    with pytest.raises(ValueError, match="turned upright or as stored, not both"):
        cache.build(tmp_path / "c", mixed, "resize", 16, progress=False)


def test_a_cache_never_serves_a_list_that_reads_its_images_turned_otherwise(noisy_cub, tmp_path):
    """Rows are keyed by file, box and trim alone (the format says whether they are turned), so
    a list of the same files read upright is refused, not served the stored rows."""
    trainval, test = _splits(noisy_cub)
    opened, _ = cache.ensure(tmp_path / "c", [trainval, test], list, "resize", 16, progress=False)
    turned = test.select(range(len(test)))
    turned.upright = True
    with pytest.raises(ValueError, match="holds images as stored, this list reads them turned"):
        cache.CachedTestImages(turned, opened, "resize", 16, normalise=False)


def test_a_stale_cache_counts_its_images_with_thousands_separators(tmp_path):
    """A real dataset's stale cache says "1,000 of the 1,000 images", as every count sef prints
    does (it said "11788" beside sef data cache's "11,788")."""
    index = {"format": 1, **cache.recipe_record("resize", 16), "images": []}
    (tmp_path / cache.INDEX).write_text(json.dumps(index))
    wanted = [(f"/nowhere/{i}.jpg", None, 0) for i in range(1000)]
    reason = cache.stale_reason(tmp_path, wanted, "resize", 16, turned=False)
    assert reason.startswith(
        f"1,000 of the 1,000 images are not in {tmp_path}, e.g. /nowhere/0.jpg"
    )


def test_stale_caches_are_named_in_one_line_and_never_read(noisy_cub, tmp_path):
    folder = tmp_path / "c"
    assert _stale(noisy_cub, folder) == f"{folder} holds no image cache yet"
    cache.build(folder, _splits(noisy_cub), "resize_crop", 16, progress=False)
    assert _stale(noisy_cub, folder) is None
    assert _stale(noisy_cub, folder, size=24) == (
        f"{folder} was built with image_size 16, this run needs 24"
    )
    assert _stale(noisy_cub, folder, recipe="resize", size=16) == (
        f"{folder} was built with recipe 'resize_crop', this run needs 'resize'"
    )
    assert _stale(noisy_cub, folder, bbox_crop=True).startswith(
        f"15 of the 15 images are not in {folder}, e.g. {noisy_cub}/images/"
    )
    index = json.loads((folder / cache.INDEX).read_text())
    (folder / cache.INDEX).write_text(json.dumps({**index, "torchvision": "0.1.0"}))
    assert "was built with torchvision '0.1.0', this run needs" in _stale(noisy_cub, folder)
    (folder / cache.INDEX).write_text(json.dumps(index))
    image = sorted((noisy_cub / "images").rglob("*.jpg"))[4]
    image.write_bytes(image.read_bytes() + b"\0")
    reason = _stale(noisy_cub, folder)
    assert (
        reason
        == f"1 of the 15 images changed (size or time) since {folder} was built, e.g. {image}"
    )
    with pytest.raises(cache.StaleCache, match="changed"):
        keys, turned = _wanted(_splits(noisy_cub))
        cache.open_cache(folder, keys, "resize_crop", 16, turned=turned)
    said = []
    _, built = cache.ensure(folder, _splits(noisy_cub), list, "resize_crop", 16, progress=False,
                            say=said.append)  # fmt: skip
    assert said == [f"rebuilding the image cache: {reason}"] and built.images == 15
    with open(folder / cache.DATA, "r+b") as handle:
        handle.truncate(100)
    assert _stale(noisy_cub, folder) == (
        f"{folder / cache.DATA} is not the 19,845 bytes its index promises"
    )
    assert all("\n" not in reason for reason in said)


def test_unreadable_images_are_recorded_and_named_when_read(noisy_cub, tmp_path):
    bad = sorted((noisy_cub / "images").rglob("*.jpg"))[0]
    bad.write_text("not a jpeg")
    trainval, test = _splits(noisy_cub)
    opened, built = cache.ensure(tmp_path / "c", [trainval, test], list, "resize", 16,
                                 progress=False)  # fmt: skip
    assert built.unreadable == 1 and built.summary().endswith(
        f"; 1 of them cannot be used, the first: image {bad} cannot "
        f"be decoded (it is a text file); replace it, or leave it out (sef train: --set "
        f"data.bad_images=skip)"
    )
    keys, turned = _wanted([trainval])
    assert cache.stale_reason(tmp_path / "c", keys, "resize", 16, turned=turned) is None
    items = cache.CachedTrainImages(trainval, opened, "resize", 16)
    index = [path for path, _ in trainval.samples].index(str(bad))
    with pytest.raises(DataError, match=f"image {bad} cannot be read from .*cannot be decoded"):
        items[index]
    with pytest.raises(DataError, match=f"1 of 9 images cannot be used; .*\n{bad}: not an image"):
        datasets.apply_bad_image_policy([items], "stop", progress=False)  # was AttributeError
    items.drop([str(bad)])  # what the bad-image policy "skip" does
    assert len(items) == len(trainval) == 8 and all(items[i][1] >= 0 for i in range(8))


def test_a_cache_built_under_another_pixel_limit_is_stale(cub_root, tmp_path, monkeypatch):
    folder = tmp_path / "c"
    monkeypatch.setenv("SEF_MAX_PIXELS", "1000")  # below every image's 48 x 36
    built = cache.build(folder, _splits(cub_root), "resize", 16, progress=False)
    assert built.unreadable == 15
    monkeypatch.delenv("SEF_MAX_PIXELS")
    assert _stale(cub_root, folder, "resize") == (
        f"{folder} was built with max_pixels 1000, this run needs 100000000"
    )
    opened, built = cache.ensure(folder, _splits(cub_root), list, "resize", 16, progress=False,
                                 say=lambda line: None)  # fmt: skip
    assert built.unreadable == 0 and len(opened.rows) == 15


def test_every_spelling_of_a_root_reads_the_same_cache(cub_root, tmp_path, monkeypatch):
    folder, linked = tmp_path / "c", tmp_path / "linked"
    linked.symlink_to(cub_root)
    monkeypatch.chdir(tmp_path)
    cache.build(folder, _splits(Path(cub_root.name)), "resize", 16, progress=False)
    for spelling in (cub_root, linked, Path("linked/../CUB_200_2011")):
        assert _stale(spelling, folder, "resize") is None
    trainval, test = _splits(linked)
    opened, built = cache.ensure(folder, [trainval, test], list, "resize", 16, progress=False)
    reference = _with(test, transforms.test_transform("resize", 16, False))
    items = cache.CachedTestImages(test, opened, "resize", 16, normalise=False)
    assert built is None and torch.equal(items[0][0], reference[0][0])


def test_items_pickle_without_their_pixels(noisy_cub, tmp_path):
    trainval, test = _splits(noisy_cub)
    opened, _ = cache.ensure(tmp_path / "c", [trainval, test], list, "resize_crop", 24,
                             progress=False)  # fmt: skip
    items = cache.CachedTestImages(test, opened, "resize_crop", 24, normalise=False)
    first = items[0][0]
    copy = pickle.loads(pickle.dumps(items))  # as a spawned loader worker receives it
    assert copy.cache._pixels is None and torch.equal(copy[0][0], first)
    assert copy.cache._reading is None  # the reader's lock is its opener's


def test_the_default_folder_names_dataset_recipe_side_and_root(tmp_path, monkeypatch):
    monkeypatch.setenv("SEF_CACHE", str(tmp_path))
    folder = cache.default_folder("cub", "/data/CUB_200_2011", {}, "resize_crop", 448)
    assert folder.parent == tmp_path / "decoded" and folder.name.startswith(
        "cub-resize_crop-600px-"
    )
    assert cache.default_folder("cub", "/data/CUB_200_2011", {"bbox_crop": True},
                                "resize_crop", 448) != folder  # fmt: skip
    assert cache.folder_for("auto", "cub", "/data/CUB_200_2011", {}, "resize_crop", 448) == folder
    assert cache.folder_for("~/c", "cub", None, {}, "resize", 448) == Path("~/c").expanduser()
