"""`sef data caches`: the decoded-image caches in a folder listed with what their index records and
their size, junk listed as such; removed only when they are caches that no build or run holds."""

from __future__ import annotations

import errno
import gc
import json
import os
import pickle
import re
import time
from pathlib import Path

import pytest
from filelock import FileLock

from sef import datasets
from sef.cli import main
from sef.datasets import cache, caches
from sef.errors import DataError
from sef.space import human

RECIPE, SIZE = "resize", 16  # rows of 16 x 16 px: 15 images of the tiny CUB in 11.5 KB


@pytest.fixture
def built(cub_root: Path, tmp_path: Path) -> Path:
    """A complete cache of the tiny CUB in tmp_path/caches/cub, that nobody reads."""
    folder = tmp_path / "caches" / "cub"
    splits = cache.readable_splits(lambda split: _load(cub_root, split))
    opened, _ = cache.ensure(folder, splits, list, RECIPE, SIZE, progress=False,
                             data=cache.origin("cub", cub_root, {"bbox_crop": False}))  # fmt: skip
    del opened
    gc.collect()  # its reader's lock given back, as when a run ends
    return folder


def _load(root: Path, split: str):
    return datasets.load("cub", root, split, bbox_crop=False)


def _open(folder: Path, root: Path) -> cache.ImageCache:
    """The cache in ``folder`` opened as a run opens it."""
    splits = [_load(root, split) for split in cache.SPLITS]
    wanted = [s for listed in splits for s in cache.sources(listed)]
    return cache.open_cache(folder, wanted, RECIPE, SIZE, turned=cache.upright(splits))


def _junk(root: Path) -> dict[str, Path]:
    """Entries beside the caches that are not complete caches, by name."""
    folders = ("empty", "photos", "killed", "garbled", "short", "website", "left")
    made = {name: root / name for name in ("notes.txt", *folders)}
    made["notes.txt"].write_text("not a cache")
    for name in folders:
        made[name].mkdir()
    (made["photos"] / "index.json").write_text('{"format": 1, "side": 4, "images": []}')
    (made["photos"] / "holiday.jpg").write_bytes(b"\xff\xd8")
    (made["killed"] / caches.LOCK).touch()  # a build killed while it wrote its temporary
    (made["killed"] / ".images.u8.999999999.tmp").write_bytes(bytes(100))
    (made["garbled"] / caches.LOCK).touch()
    (made["garbled"] / "index.json").write_text('{"format": 1, "si')
    (made["short"] / caches.LOCK).touch()
    (made["short"] / "index.json").write_text('{"format": 1, "side": 2, "images": [[], []]}')
    (made["short"] / "images.u8").write_bytes(bytes(5))
    (made["website"] / "index.json").write_text('{"pages": []}')  # another program's
    (made["left"] / caches.READERS).touch()  # made by a process opening it as it was removed
    return made


def test_a_cache_is_described_by_what_its_index_records(built, cub_root):
    found = caches.describe(built)
    assert (found.state, found.problem, found.in_use) == ("complete", None, None)
    recorded = ("cub", os.path.realpath(cub_root), {"bbox_crop": False})
    assert (found.dataset, found.root, found.options) == recorded
    assert (found.recipe, found.image_size, found.side, found.images) == (RECIPE, SIZE, 16, 15)
    assert found.bytes >= 15 * 3 * 16 * 16 and time.time() - found.last_used < 60
    assert caches.caches_in(built.parent) == [found]
    assert json.loads(json.dumps(found.record()))["folder"] == str(built)


def test_a_run_that_reads_a_cache_holds_it_and_marks_its_use(built, cub_root):
    old = time.time() - 10 * caches.DAY
    for name in os.listdir(built):
        os.utime(built / name, (old, old))
    assert caches.describe(built).last_used == pytest.approx(old)
    opened = _open(built, cub_root)
    found = caches.describe(built)
    assert found.in_use == "a process that reads it" and time.time() - found.last_used < 60
    with pytest.raises(caches.CacheInUse, match="in use by a process that reads it"):
        caches.remove(built)
    assert caches.describe(built).state == "complete"  # nothing removed
    del opened
    gc.collect()
    assert caches.describe(built).in_use is None


def test_a_spawned_loader_worker_takes_no_lock_of_its_own(built, cub_root):
    opened = _open(built, cub_root)
    spawned = pickle.loads(pickle.dumps(opened))  # what a spawned worker gets
    assert spawned._reading is None and spawned.image(next(iter(spawned.rows))).shape[0] == 3
    del opened
    gc.collect()
    assert caches.describe(built).in_use is None  # its parent's lock went with the parent


def test_junk_beside_the_caches_is_listed_as_such(built, tmp_path):
    _junk(built.parent)
    (built.parent / "link").symlink_to(built)
    listed = {found.folder.name: found for found in caches.caches_in(built.parent)}
    assert {name: (found.state, found.problem) for name, found in listed.items()} == {
        "cub": ("complete", None),
        "empty": ("not a cache", "no index and no lock"),
        "garbled": ("damaged", "index.json cannot be read: not JSON"),
        "killed": ("partial", None),
        "left": ("partial", None),
        "link": ("not a cache", f"a link to {built}"),
        "notes.txt": ("not a cache", "a file"),
        "photos": ("not a cache", "holds holiday.jpg"),
        "short": ("damaged", "images.u8 is not the 24 bytes its index says"),
        "website": ("not a cache", "index.json is not an image cache's index"),
    }
    assert caches.caches_in(tmp_path / "none") == []


def test_a_cache_of_another_sefs_format_is_listed_as_such(built, capsys):
    """Never read (a newer sef's, say): a run rebuilds it. Formats 1 (images as stored) and 2
    (turned upright by their EXIF orientation) are both this sef's."""
    index = json.loads((built / caches.INDEX).read_text())
    for found in (1, 2):
        (built / caches.INDEX).write_text(json.dumps({**index, "format": found}))
        assert caches.describe(built).state == "complete"
    (built / caches.INDEX).write_text(json.dumps({**index, "format": 3}))
    problem = (
        "built by another sef (cache format 3; this one reads formats 1 and 2); a run rebuilds it"
    )
    found = caches.describe(built)
    assert (found.state, found.problem, found.images) == ("other format", problem, 15)
    assert main(["data", "caches", str(built.parent)]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert "other format" in shown[2] and shown[3] == f"cub: {problem}"


def test_only_caches_that_nobody_holds_are_removed(built, tmp_path, files_in):
    root = built.parent
    made = _junk(root)
    (root / "link").symlink_to(built)
    before = files_in(root)
    for name in ("notes.txt", "empty", "photos", "website", "link"):
        with pytest.raises(DataError, match=r"is not an image cache \(.*\), so it is left as"):
            caches.remove(root / name)
    with pytest.raises(DataError) as info:
        caches.remove(root / "link")
    assert f"link is not an image cache (a link to {built})" in str(info.value)  # what to remove
    assert files_in(root) == before and made["empty"].is_dir()
    with pytest.raises(DataError, match=r"^there is no .*/gone; `sef data caches` lists them"):
        caches.remove(root / "gone")
    building = FileLock(built / caches.LOCK)
    building.acquire()
    with pytest.raises(caches.CacheInUse, match="is being built; remove it once that build ends"):
        caches.remove(built)
    building.release()
    assert files_in(root) == before
    expected = caches.describe(built).bytes
    assert caches.remove(built).bytes == expected and not built.exists()
    for name in ("killed", "garbled", "short", "left"):  # leftovers, damaged caches
        assert caches.remove(made[name]).state in ("partial", "damaged")
        assert not made[name].exists()


def test_unused_caches_are_those_neither_built_nor_opened_for_days(built, cub_root):
    now = time.time()
    assert caches.unused(built.parent, 3, now + 2 * caches.DAY) == []
    assert [c.folder for c in caches.unused(built.parent, 3, now + 4 * caches.DAY)] == [built]
    opened = _open(built, cub_root)
    assert caches.unused(built.parent, 3, now + 4 * caches.DAY) == []  # a run reads it
    del opened


def test_a_cache_opened_again_after_its_removal_is_missing_not_a_crash(built, cub_root):
    caches.remove(built)
    with pytest.raises(cache.StaleCache, match="holds no image cache yet"):
        _open(built, cub_root)


def test_a_cache_removed_while_a_process_waits_to_read_it_is_said_to_be_removed(
    built, cub_root, monkeypatch
):
    def removed_meanwhile(folder):  # the removal held the readers' lock; it ends, then ...
        for path in folder.iterdir():
            path.unlink()
        return caches.hold_for_reading(folder)

    monkeypatch.setattr(cache, "hold_for_reading", removed_meanwhile)
    with pytest.raises(cache.StaleCache) as info:
        _open(built, cub_root)
    assert str(info.value) == f"{built} was removed by another process while this one opened it"


def test_a_link_in_place_of_the_readers_lock_is_never_opened(tmp_path):
    # .read-lock was opened (O_CREAT) and touched through a link: it made or touched the file
    # the link pointed to, wherever that was
    pytest.importorskip("fcntl")
    folder, elsewhere = tmp_path / "cache", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    kept = elsewhere / "kept"
    kept.write_text("mine")
    os.utime(kept, (1, 1))
    for target in (kept, elsewhere / "made"):
        (folder / caches.READERS).unlink(missing_ok=True)
        (folder / caches.READERS).symlink_to(target)
        assert caches.hold_for_reading(folder) is None  # read without the readers' lock
    assert kept.stat().st_mtime == 1 and kept.read_text() == "mine"
    assert sorted(os.listdir(elsewhere)) == ["kept"]


def test_a_cache_with_a_link_at_its_build_lock_is_removed_and_the_link_only(built, tmp_path):
    # the removal took the build lock through filelock, which refused the link: "cannot remove"
    kept = tmp_path / "kept"
    kept.write_text("mine")
    (built / caches.LOCK).unlink(missing_ok=True)
    (built / caches.LOCK).symlink_to(kept)  # no build takes it, so none holds it
    assert caches.remove(built).state == "complete" and not built.exists()
    assert kept.read_text() == "mine"


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.EOPNOTSUPP])
def test_a_cache_on_a_file_system_without_locks_is_read_without_one(built, cub_root, monkeypatch,
                                                                    code):  # fmt: skip
    def refused(descriptor, operation):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(caches.fcntl, "flock", refused)  # NFS without lockd, some FUSE mounts
    opened = _open(built, cub_root)
    assert opened._reading is None and len(opened.rows) == 15
    assert opened.image(next(iter(opened.rows))).shape == (3, 16, 16)
    assert caches.describe(built).state == "complete"
    with pytest.raises(DataError, match=r"^cannot remove .*: "):  # its build lock refused too
        caches.remove(built)


def test_a_cache_on_a_read_only_disk_is_read(built, cub_root, monkeypatch):
    real_open = os.open

    def read_only(path, flags, *mode):  # as a read-only mount answers (root ignores chmod)
        if flags & (os.O_RDWR | os.O_WRONLY | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *mode)

    def no_times(path, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(os, "open", read_only)
    monkeypatch.setattr(os, "utime", no_times)
    opened = _open(built, cub_root)  # its lock file, copied with it: held, read-only
    assert caches.describe(built).in_use == "a process that reads it"
    del opened
    gc.collect()
    (built / caches.READERS).unlink()  # a cache built before sef made that file
    assert _open(built, cub_root)._reading is None and not (built / caches.READERS).exists()


def test_sef_data_cache_records_the_dataset_for_the_list(cub_root, tmp_path, monkeypatch):
    monkeypatch.setenv("SEF_CACHE", str(tmp_path / "home"))
    arguments = ["data", "cache", "cub", str(cub_root), "--recipe", "resize", "--image-size", "16"]
    assert main([*arguments, "-o", "bbox_crop=true", "--no-progress", "--workers", "0"]) == 0
    (found,) = caches.caches_in(caches.default_root())
    recorded = ("cub", os.path.realpath(cub_root), {"bbox_crop": True})
    assert (found.dataset, found.root, found.options) == recorded


# ----------------------------------------------------------------------------- the command


def test_the_list_is_a_table_and_a_total(built, cub_root, run_sef):
    root = built.parent
    (root / "notes.txt").write_text("not a cache")
    result = run_sef("data", "caches", root)
    assert result.returncode == 0 and result.stderr == ""
    found = caches.describe(built)
    used = time.strftime("%Y-%m-%d %H:%M", time.localtime(found.last_used))
    assert [re.split(r"  +", line.strip()) for line in result.stdout.splitlines()] == [
        [f"image caches in {root}:"],
        ["folder", "dataset", "recipe", "stored", "images", "on disk", "last used", "state",
         "root"],
        ["cub", "cub", "resize 16", "16 px", "15", human(found.bytes), used, "complete",
         os.path.realpath(cub_root)],
        ["notes.txt", "-", "-", "-", "-", "-", "-", "not a cache", "-"],
        ["notes.txt: a file"],
        [f"1 cache, {human(found.bytes)}; 1 other entry"],
    ]  # fmt: skip


def test_the_list_as_json(built, run_sef):
    result = run_sef("data", "caches", built.parent, "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert listed["folder"] == str(built.parent) and listed["bytes"] == caches.describe(built).bytes
    assert [(c["folder"], c["state"], c["images"]) for c in listed["caches"]] == [
        (str(built), "complete", 15)
    ]
    documented = ("folder state bytes last_used problem in_use images dataset root options recipe "
                  "image_size side")  # fmt: skip
    assert set(listed["caches"][0]) == set(documented.split())  # docs/datasets.md names them


def test_the_list_of_a_folder_without_caches(run_sef):
    result = run_sef("data", "caches")
    where = Path(os.environ["SEF_CACHE"]) / "decoded"
    assert (result.returncode, result.stdout) == (0, f"no image caches in {where}\n")


def test_a_folder_that_is_none_is_refused_not_listed_empty(built, capsys):
    for given, what in (("nowhere", "does not exist"), ("index.json", "is a file, not a folder")):
        for action in ([], ["--json"], ["--prune", "3"]):
            assert main(["data", "caches", str(built / given), *action]) == 2
            assert capsys.readouterr().err == (
                f"sef data caches: error: {built / given} {what}; give the folder that holds the "
                f"image caches (default: {caches.default_root()})\n"
            )


def test_remove_says_what_it_freed(built, run_sef):
    size = human(caches.describe(built).bytes)
    result = run_sef("data", "caches", built.parent, "--remove", "cub")  # its name as listed
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"removed {built} (cub, resize 16): {size} freed\n"
    assert not built.exists()


def test_remove_takes_a_path_as_spelled_and_a_bare_name_in_folder(built, run_sef, monkeypatch):
    root, elsewhere = built.parent, built.parent.parent / "elsewhere"
    elsewhere.mkdir()
    result = run_sef("data", "caches", root, "--remove", "./cub", cwd=elsewhere)
    assert result.returncode == 2 and built.is_dir()  # ./cub is not FOLDER's cub
    said = "there is no cub; `sef data caches` lists them"
    assert result.stderr == f"sef data caches: error: {said}\n"
    monkeypatch.setenv("HOME", str(root.parent))
    listed = run_sef("data", "caches", "~/caches", "--json")  # quoted: no shell expanded it
    assert json.loads(listed.stdout)["folder"] == str(root)
    result = run_sef("data", "caches", "--remove", "~/caches/cub", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert not built.exists()


def test_remove_removes_the_caches_it_can_then_names_the_others(built, run_sef):
    killed = built.parent / "killed"
    killed.mkdir()
    (killed / caches.LOCK).touch()
    (killed / ".images.u8.999999999.tmp").write_bytes(bytes(100))
    sizes = [caches.describe(folder).bytes for folder in (built, killed)]
    (built.parent / "notes.txt").write_text("not a cache")
    result = run_sef("data", "caches", built.parent,
                     "--remove", "cub", "--remove", "notes.txt", "--remove", killed)  # fmt: skip
    assert result.returncode == 2
    assert result.stdout.splitlines() == [
        f"removed {built} (cub, resize 16): {human(sizes[0])} freed",
        f"removed {killed} (dataset not recorded, partial): {human(sizes[1])} freed",
        f"{human(sum(sizes))} freed in all",
    ]
    assert result.stderr == (
        f"sef data caches: error: {built.parent / 'notes.txt'} is not an image cache (a file), so "
        f"it is left as it is\n"
    )
    assert [p.name for p in built.parent.iterdir()] == ["notes.txt"]


def test_remove_refuses_what_is_not_a_cache_or_is_held(built, cub_root, tmp_path, run_sef):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    result = run_sef("data", "caches", "--remove", tmp_path / "mine")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        f"sef data caches: error: {tmp_path / 'mine'} is not an image cache (holds thesis.tex), "
        f"so it is left as it is\n"
    )
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "years of work"
    opened = _open(built, cub_root)
    result = run_sef("data", "caches", "--remove", built)
    assert result.returncode == 2 and built.is_dir()
    assert result.stderr == (
        f"sef data caches: error: {built} is in use by a process that reads it (a run or `sef data "
        f"cache`); remove it once that process ends\n"
    )
    del opened


def test_prune_removes_the_caches_unused_for_days(built, cub_root, tmp_path, run_sef):
    result = run_sef("data", "caches", built.parent, "--prune", "3")
    assert (result.returncode, result.stdout) == (
        0, f"no cache in {built.parent} has gone unused for 3 days\n"
    )  # fmt: skip
    old = time.time() - 4 * caches.DAY
    for name in os.listdir(built):
        os.utime(built / name, (old, old))
    size = human(caches.describe(built).bytes)
    result = run_sef("data", "caches", built.parent, "--prune", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"removed {built} (cub, resize 16): {size} freed\n"


def test_json_goes_with_the_list_alone(capsys):
    with pytest.raises(SystemExit):
        main(["data", "caches", "--json", "--prune", "3"])
    assert "not allowed with argument --json" in capsys.readouterr().err


def test_prune_takes_any_number_of_days(built, run_sef):
    days = "9" * 400  # `now - days * DAY` as a float: OverflowError, a traceback
    result = run_sef("data", "caches", built.parent, "--prune", days)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith(f"no cache in {built.parent} has gone unused for 9,999,")
    assert built.is_dir()


def test_the_records_of_verified_images_are_listed_and_pruned_beside_the_caches(capsys):
    folder = caches.verified_root()
    folder.mkdir(parents=True)
    record = folder / "0123456789abcdef.json"  # as sef.datasets.verified names one
    record.write_text('{"images": {}}\n')
    (folder / "notes.txt").write_text("not a record")
    size = human(caches.verified_records().bytes)
    assert main(["data", "caches"]) == 0
    assert capsys.readouterr().out == (
        f"no image caches in {caches.default_root()}\n"
        f"1 record of verified images in {folder}: {size}\n"
    )
    assert main(["data", "caches", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["verified"]
    assert listed == {"folder": str(folder), "records": 1, "bytes": caches.verified_records().bytes}
    assert main(["data", "caches", "--prune", "3"]) == 0 and record.exists()
    old = time.time() - 4 * caches.DAY
    os.utime(record, (old, old))
    capsys.readouterr()
    assert main(["data", "caches", "--prune", "3"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"removed 1 record of verified images from {folder}: {size} freed"
    )
    assert [path.name for path in folder.iterdir()] == ["notes.txt"]
