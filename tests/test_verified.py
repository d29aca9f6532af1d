"""The record of verified images: a check decodes an image once while its file stays as it is."""

import json
import os
import shutil
import warnings
from pathlib import Path

import pytest

from sef.config import resolve_config
from sef.datasets import (
    ImageList,
    apply_bad_image_policy,
    cache,
    caches,
    checking,
    find_bad_images,
    verified,
)
from sef.datasets.checking import REFRESH, USE
from sef.distributed import Context
from sef.engine.data import Data, check_images
from sef.trained import load_trained_model


@pytest.fixture
def decodes(monkeypatch) -> list[str]:
    """The paths the check decodes, in order, as it decodes them."""
    seen: list[str] = []
    decode = checking.decode

    def counting(path, **kwargs):
        seen.append(path)
        return decode(path, **kwargs)

    monkeypatch.setattr(checking, "decode", counting)
    return seen


@pytest.fixture
def images(tmp_path, write_image) -> list[str]:
    return [str(write_image(tmp_path / "birds" / f"{i}.jpg", (24, 16))) for i in range(3)]


def check(paths: list[str], lines: list[str] | None = None, record: str = USE) -> list:
    say = None if lines is None else lines.append
    return find_bad_images([(p, 0) for p in paths], 1, progress=False, record=record, say=say)


def test_a_second_check_decodes_nothing_when_no_file_changed(images, decodes):
    lines: list[str] = []
    assert check(images, lines) == [] and sorted(decodes) == sorted(images)
    decodes.clear()
    assert check(images, lines) == [] and decodes == []
    assert lines == []  # nothing new: nothing said


def _touched(path: str) -> None:
    status = os.stat(path)
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))


def _grown(path: str) -> None:
    with open(path, "ab") as handle:
        handle.write(b"\0")


def _replaced(path: str) -> None:
    """Another file of the same size and times renamed into its place."""
    status = os.stat(path)
    shutil.copyfile(path, path + ".new")
    os.utime(path + ".new", ns=(status.st_atime_ns, status.st_mtime_ns))
    os.replace(path + ".new", path)


@pytest.mark.parametrize("change", [_touched, _grown, _replaced])
def test_a_changed_file_is_checked_again_and_said_so(images, decodes, change):
    check(images)
    change(images[1])
    decodes.clear()
    lines: list[str] = []
    assert check(images, lines) == [] and decodes == [images[1]]
    assert lines == ["checked 1 new or changed image; 2 unchanged since verified"]


def test_a_bad_image_is_checked_every_time_and_recorded_once_fixed(images, decodes, write_image):
    bad = images[0]
    with open(bad, "r+b") as handle:
        handle.truncate(100)
    for _ in range(2):
        decodes.clear()
        assert [path for path, _ in check(images)] == [bad] and bad in decodes
    assert decodes == [bad]  # the good ones only the first time
    write_image(Path(bad), (24, 16))
    decodes.clear()
    assert check(images) == [] and decodes == [bad]
    decodes.clear()
    assert check(images) == [] and decodes == []


def test_a_smaller_pixel_limit_checks_again_and_a_larger_one_trusts(images, decodes, monkeypatch):
    check(images)
    monkeypatch.setenv("SEF_MAX_PIXELS", "1000")
    decodes.clear()
    assert check(images) == [] and sorted(decodes) == sorted(images)
    monkeypatch.setenv("SEF_MAX_PIXELS", "2000")
    decodes.clear()
    assert check(images) == [] and decodes == []


def test_sef_data_check_decodes_everything_and_refreshes_the_record(images, decodes):
    check(images, record=REFRESH)
    check(images, record=REFRESH)
    assert len(decodes) == 6
    decodes.clear()
    assert check(images) == [] and decodes == []


def test_a_check_of_one_split_trusts_the_record_of_both(tmp_path, write_image, decodes):
    """`sef eval` checks the test split alone, whose folder is not the one training recorded
    both splits under: it decoded every image again and wrote a record of its own."""
    both = [str(write_image(tmp_path / "d" / s / f"{i}.jpg", (8, 8))) for s in "ab" for i in "01"]
    check(both)
    (record,) = caches.verified_root().iterdir()
    os.utime(record, (0, 0))
    decodes.clear()
    assert check(both[2:]) == [] and decodes == []
    assert list(caches.verified_root().iterdir()) == [record] and record.stat().st_mtime > 0
    _grown(both[3])
    assert check(both[2:]) == [] and decodes == [both[3]]
    decodes.clear()
    assert check(both[2:]) == [] and decodes == []  # its own record now


def test_two_writers_merge_and_neither_keeps_a_changed_file(images, tmp_path):
    stamps = {path: verified.stamp(path) for path in images}
    first, second = verified.Record(images[:2]), verified.Record(images[2:])  # both read nothing
    first.save({path: stamps[path] for path in images[:2]})
    _grown(images[1])  # changed after the first recorded it
    second.save({images[2]: stamps[images[2]]})
    folder = caches.verified_root()
    assert [p.name for p in folder.iterdir()] == [first.file.name]  # no temporary left
    record = json.loads(first.file.read_text())
    assert sorted(record["images"]) == ["0.jpg", "2.jpg"]
    now = {path: verified.stamp(path) for path in images}
    assert verified.Record(images).unchanged(now) == {images[0], images[2]}


def test_an_unwritable_cache_folder_checks_everything_with_one_warning(
    images, decodes, tmp_path, monkeypatch
):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("SEF_CACHE", str(tmp_path / "file"))
    monkeypatch.setattr(verified, "_warned", [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            assert check(images) == []
    assert len(decodes) == 6
    assert len(caught) == 1 and "every image is checked at every start" in str(caught[0].message)


def _cache(paths: list[str], folder: Path) -> ImageList:
    """The images at ``paths`` as one list, built into a decoded-image cache in ``folder``."""
    listed = ImageList([(path, 0) for path in paths], ["bird"])
    cache.build(folder, [listed], "resize", 8, progress=False, say=lambda line: None)
    return listed


def test_images_a_decoded_cache_holds_are_not_decoded_again(images, decodes, tmp_path):
    """Also those of a cache whose build recorded none of them (one of an older sef)."""
    with open(images[0], "r+b") as handle:
        handle.truncate(100)
    listed = _cache(images, tmp_path / "c")
    shutil.rmtree(caches.verified_root())
    opened, _ = cache.ensure(tmp_path / "c", [listed], list, "resize", 8, say=lambda line: None)
    cached = cache.CachedTestImages(listed, opened, "resize", 8, normalise=False)
    decodes.clear()
    bad = apply_bad_image_policy(
        [cached], "skip", 1, False, record=USE, decoded=cache.decoded_paths([cached])
    )
    assert [path for path, _ in bad] == [images[0]] and decodes == [images[0]]
    assert len(cached) == 2
    assert not caches.verified_root().exists()  # nothing decoded fine: no empty record written


def test_images_a_cache_build_decoded_are_verified_for_a_check_of_their_files(
    images, decodes, tmp_path
):
    """A run without the cache, `sef eval` and the figures decoded every image that a run with
    ``--cache auto`` had read from its cache: neither its build nor its check recorded them."""
    with open(images[0], "r+b") as handle:
        handle.truncate(100)
    _cache(images, tmp_path / "c")
    assert [path for path, _ in check(images)] == [images[0]] and decodes == [images[0]]


def test_a_cache_build_records_an_image_with_its_stamp_from_before_decoding(
    images, decodes, tmp_path, monkeypatch
):
    """An image that changed while the build decoded it is checked again."""
    decode_into = cache._decode_into

    def changing(*args):
        _grown(images[1])  # after the build took its stamps
        return decode_into(*args)

    monkeypatch.setattr(cache, "_decode_into", changing)
    _cache(images, tmp_path / "c")
    assert check(images) == [] and decodes == [images[1]]


def test_a_run_checks_only_what_changed_and_says_so_in_one_line(images, decodes, capsys):
    config = resolve_config("demo")
    config.data.workers = 1
    listed = ImageList([(path, 0) for path in images], ["bird"])
    data = Data(listed, ImageList(list(listed.samples), ["bird"]), ["bird"])
    check_images(data, config, Context(), progress=False)
    _grown(images[2])
    decodes.clear()
    capsys.readouterr()
    check_images(data, config, Context(), progress=False)
    assert decodes == [images[2]]
    assert capsys.readouterr().err == "checked 1 new or changed image; 2 unchanged since verified\n"


def test_eval_of_a_run_that_skipped_bad_images_decodes_only_those_again(
    demo_checkpoint, folder_root, decodes
):
    """`sef eval` and the figures leave the bad images out as the run did, decoding only the
    images the record has not verified: at every call they decoded the whole split."""
    broken = folder_root / "test" / sorted(os.listdir(folder_root / "test"))[0] / "broken.png"
    broken.write_text("not an image")
    trained = load_trained_model(demo_checkpoint)
    trained.config.data.dataset, trained.config.data.options = "folder", {}
    trained.config.data.bad_images, trained.config.data.workers = "skip", 1
    trained.classes = sorted(os.listdir(folder_root / "test"))
    for _ in range(2):
        decodes.clear()
        with pytest.warns(UserWarning, match=r"left out 1 unreadable image as the run did"):
            dataset = trained.dataset("test", folder_root, progress=False)
        assert str(broken) not in [path for path, _ in dataset.samples] and len(dataset) == 6
    assert decodes == [str(broken)]
