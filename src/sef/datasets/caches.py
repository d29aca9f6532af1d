"""The decoded-image caches in a folder as `sef data caches` lists and removes them, without torch.

A cache folder (:mod:`sef.datasets.cache`) holds ``images.u8`` and ``index.json``, a build's
temporaries, ``.build-lock`` (an OS lock that the one process building it holds) and
``.read-lock`` (a shared OS lock that every process with the cache open holds, and touches as it
opens it: the cache's last use). :func:`describe` says what a folder is: a complete cache, one
being built, a build's leftovers, a damaged cache, one of another sef's format
(:func:`format_problem`: never read, rebuilt when next asked for) or no cache at all, with what
its index records.
:func:`remove` removes a folder only if it holds nothing but those files and is a cache (its
index says so, or a build or a reader left its lock there), and only while it holds both locks
itself: never under a build or a run that reads it.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from sef.errors import DataError, OutputError
from sef.outputs import linked_lock, named, open_unlinked, process_alive

try:
    import fcntl
except ImportError:  # Windows: no shared flock, so no reader's lock is taken there
    fcntl = None

DATA, INDEX = "images.u8", "index.json"
LOCK = ".build-lock"  # held by the one process that builds (and opens what it built) at a time
READERS = ".read-lock"  # held, shared, by every process that has the cache open
TEMPORARY = rf"\.(?:{re.escape(DATA)}|{re.escape(INDEX)})\.(?P<pid>\d+)\.tmp"  # a build's
COMPLETE, BUILDING, PARTIAL, DAMAGED, OTHER_FORMAT, FOREIGN = (
    "complete", "building", "partial", "damaged", "other format", "not a cache"
)  # fmt: skip
# What a cache's rows hold and how its files are laid out, by whether its images are turned
# upright by their EXIF orientation (a user's own data's) or read as stored (the benchmarks' and
# the generated sets', ImageList.upright). Format 1 is also what every sef wrote before any image
# was turned, rows as stored: such a cache of a benchmark is read as it is, one of own data is
# rebuilt, and a sef that reads only format 1 never reads rows turned upright. A sef reads only
# its formats, so one of another is rebuilt, never read: a new layout takes two new numbers.
FORMATS = {False: 1, True: 2}
ROWS = {False: "as stored", True: "turned upright by their EXIF orientation"}  # what a row holds
DAY = 24 * 3600
RECORD = r"[0-9a-f]{16}\.json"  # a record of verified images (sef.datasets.verified)


def default_cache(name: str = "demo") -> Path:
    """Where a set lives by default: $SEF_CACHE/<name>, else ~/.cache/sef/<name>."""
    base = os.environ.get("SEF_CACHE")
    return Path(base) / name if base else Path.home() / ".cache" / "sef" / name


def default_root() -> Path:
    """Where ``data.cache: auto`` and ``sef data cache`` keep the decoded-image caches."""
    return default_cache("decoded")


def verified_root() -> Path:
    """Where the records of verified images are (:mod:`sef.datasets.verified`)."""
    return default_cache("verified")


@dataclass
class Records:
    """The records of verified images in ``folder``: their files, bytes on disk and last uses."""

    folder: Path
    files: list[Path]
    bytes: int
    last_used: list[float]

    def record(self) -> dict[str, Any]:
        """What `sef data caches --json` says of them."""
        return {"folder": str(self.folder), "records": len(self.files), "bytes": self.bytes}


def verified_records(folder: Path | None = None) -> Records:
    """The records of verified images in ``folder`` (default: :func:`verified_root`): only files
    named as sef names them, ``<digest>.json``, never anything else there."""
    folder = folder or verified_root()
    files, sizes, used = [], 0, []
    for match in named(folder, RECORD):
        try:
            status = os.lstat(folder / match.string)
        except OSError:  # removed meanwhile
            continue
        files.append(folder / match.string)
        sizes += _disk_bytes(status)
        used.append(status.st_mtime)
    return Records(folder, files, sizes, used)


def prune_verified(days: float, folder: Path | None = None, now: float | None = None) -> Records:
    """Remove the records of verified images that no check wrote or used for ``days`` days
    (forgetting them costs a check of their images, nothing else); return what went."""
    found = verified_records(folder)
    now = time.time() if now is None else now
    gone = Records(found.folder, [], 0, [])
    for path, used in zip(found.files, found.last_used, strict=True):
        if now - used > days * DAY:
            try:
                size = _disk_bytes(os.lstat(path))
                path.unlink()
            except OSError:  # removed meanwhile, or not ours to remove
                continue
            gone.files.append(path)
            gone.bytes += size
            gone.last_used.append(used)
    return gone


@dataclass
class CacheFolder:
    """What a folder is (``state``; ``problem``: why it is damaged or no cache; ``in_use``: who
    holds it), what it takes on disk, when it was last written or opened, and what its index
    records: the dataset, its root and reader options (caches built before sef recorded them:
    None), the recipe, its image size, the side of a stored row and the number of images."""

    folder: Path
    state: str
    bytes: int
    last_used: float | None
    problem: str | None = None
    in_use: str | None = None
    images: int | None = None
    dataset: str | None = None
    root: str | None = None
    options: dict | None = None
    recipe: str | None = None
    image_size: int | None = None
    side: int | None = None

    @property
    def is_cache(self) -> bool:
        return self.state != FOREIGN

    def record(self) -> dict[str, Any]:
        """The fields as JSON values."""
        return {**asdict(self), "folder": str(self.folder)}


def _disk_bytes(status: os.stat_result) -> int:
    """The bytes a file takes on its disk (its size where the system does not say)."""
    blocks = getattr(status, "st_blocks", None)
    return status.st_size if blocks is None else blocks * 512


def _read_index(folder: Path) -> tuple[dict | None, str | None]:
    """FOLDER/INDEX as a cache's index, or None and why not (None, None: there is none)."""
    try:
        index = json.loads((folder / INDEX).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, None
    except OSError as error:
        return None, f"{INDEX} cannot be read: {_reason(error)}"
    except ValueError:
        return None, f"{INDEX} cannot be read: not JSON"
    if not (
        isinstance(index, dict)
        and "format" in index
        and isinstance(index.get("side"), int)
        and isinstance(index.get("images"), list)
    ):
        return None, f"{INDEX} is not an image cache's index"
    return index, None


def format_problem(index: dict) -> str | None:
    """How a cache of ``index`` was built by a sef of a format not among this one's
    :data:`FORMATS` (one line, after "was"), or None if it is one of them."""
    found = index.get("format")
    if found in FORMATS.values():
        return None
    ours = " and ".join(map(str, sorted(FORMATS.values())))
    return f"built by another sef (cache format {found}; this one reads formats {ours})"


def _is_cache_file(name: str) -> bool:
    return name in (DATA, INDEX, LOCK, READERS) or re.fullmatch(TEMPORARY, name) is not None


def _building(names: list[str]) -> bool:
    """Whether a live process writes one of the temporaries ``names``."""
    found = (re.fullmatch(TEMPORARY, name) for name in names)
    return any(m and process_alive(int(m["pid"])) for m in found)


def describe(folder: Path) -> CacheFolder:
    """What ``folder`` is, as :class:`CacheFolder` says; never an error (junk is FOREIGN)."""
    try:
        names = [] if folder.is_symlink() else os.listdir(folder)
        itself = os.lstat(folder)
        foreign = sorted(name for name in names if not _is_cache_file(name))
        if folder.is_symlink() or foreign:
            held = f"holds {', '.join(foreign[:3])}"
            problem = f"a link to {os.readlink(folder)}" if folder.is_symlink() else held
            return CacheFolder(folder, FOREIGN, 0, itself.st_mtime, problem)
        stats = {name: os.lstat(folder / name) for name in names}
    except OSError as error:  # not a folder, not readable, or removed meanwhile
        problem = "a file" if folder.is_file() else _reason(error)
        return CacheFolder(folder, FOREIGN, 0, None, problem)
    used = max((s.st_mtime for s in stats.values()), default=itself.st_mtime)
    found = CacheFolder(folder, FOREIGN, sum(map(_disk_bytes, stats.values())), used)
    index, found.problem = _read_index(folder)
    if index is None and LOCK not in names and READERS not in names:
        found.problem = found.problem or "no index and no lock"
        return found
    found.in_use = _holder(folder, names)
    if index is not None:
        _read_record(found, index)
    if _building(names):
        found.state = BUILDING
    elif index is None:
        found.state = DAMAGED if found.problem else PARTIAL
    else:
        found.problem = _data_problem(stats.get(DATA), found.images * 3 * found.side**2)
        found.state = DAMAGED if found.problem else COMPLETE
        other = format_problem(index)
        if found.state == COMPLETE and other:
            found.state, found.problem = OTHER_FORMAT, f"{other}; a run rebuilds it"
    return found


def _data_problem(data: os.stat_result | None, expected: int) -> str | None:
    """What is wrong with a cache's data file (``data``: its status) that should hold
    ``expected`` bytes; None: nothing."""
    if data is None:
        return f"{DATA} is missing"
    if data.st_size != expected:
        return f"{DATA} is not the {expected:,} bytes its index says"
    return None


def _read_record(found: CacheFolder, index: dict) -> None:
    """``found``'s fields from the cache's ``index``."""
    found.images, found.side = len(index["images"]), index["side"]
    found.recipe, found.image_size = index.get("recipe"), index.get("image_size")
    found.dataset, found.root = index.get("dataset"), index.get("root")
    found.options = index.get("options")


def caches_in(root: Path) -> list[CacheFolder]:
    """Every entry of the folder ``root`` described, by name; none where there is no such folder."""
    try:
        names = sorted(os.listdir(root))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [describe(root / name) for name in names]


# ----------------------------------------------------------------------------- locks


class LinkedBuildLock(OutputError):
    """A link at FOLDER/LOCK: no build takes it (it would make, or empty, the file it points to),
    so no build holds it and the advice is to remove it."""


def build_lock(folder: Path) -> FileLock:
    """The lock on FOLDER/LOCK, its file made first without following a link (a filelock that
    follows one would make or touch the file it points to): LinkedBuildLock where a link is
    there. Where the file cannot be made (a read-only folder) the lock's acquire says why."""
    path = folder / LOCK
    try:
        os.close(open_unlinked(path, os.O_RDWR | os.O_CREAT))
    except OSError:
        linked = linked_lock(path, "a cache's build lock", "build", LinkedBuildLock)
        if linked is not None:
            raise linked from None
    return FileLock(path)


def _lock_readers(folder: Path, exclusive: bool) -> int | None:
    """A descriptor of FOLDER/READERS locked shared (waited for) or ``exclusive`` (not waited
    for: -1 where another holds it), the file made if it can be; None where it cannot be locked
    here (Windows, a file system without locks, a folder that is not there, a link in its place,
    never opened: it would make or touch the file it points to)."""
    if fcntl is None:
        return None
    path = folder / READERS
    try:
        descriptor = open_unlinked(path, os.O_RDWR | os.O_CREAT)
    except OSError:
        try:  # a read-only folder or file: a lock needs no write access
            descriptor = open_unlinked(path, os.O_RDONLY)
        except OSError:
            return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB if exclusive else fcntl.LOCK_SH)
    except OSError as error:
        os.close(descriptor)
        return -1 if isinstance(error, BlockingIOError) else None
    return descriptor


def hold_for_reading(folder: Path) -> int | None:
    """A shared lock on FOLDER/READERS, held while the returned descriptor is open (forked loader
    workers share it), its file's time now: the cache's last use, and what tells :func:`remove`
    that a process reads the cache. Waits for a removal under way (one that then leaves no
    cache to map). None where it cannot be taken (Windows, a file system without locks)."""
    descriptor = _lock_readers(folder, exclusive=False)
    if descriptor is not None:
        try:
            os.utime(descriptor)  # the file opened, not one a link put in its place since
        except OSError:  # read-only: the lock serves without the time
            pass
    return descriptor


def _holder(folder: Path, names: list[str]) -> str | None:
    """Who holds the cache in ``folder`` (its files ``names``), in a few words; None: nobody."""
    if _building(names):
        return "a build"
    if READERS in names:
        descriptor = _lock_readers(folder, exclusive=True)
        if descriptor == -1:
            return "a process that reads it"
        if descriptor is not None:
            os.close(descriptor)
    return None


class CacheInUse(DataError):
    """A cache that a build or a run holds, so it is not removed."""


@contextmanager
def _held(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s build lock and its readers' lock, neither waited for: CacheInUse if a
    build or a reader holds one, DataError if they cannot be taken (a read-only folder). A link
    at the build lock is left unlocked: no build takes one, and removing the cache removes the
    link, not what it points to."""
    try:  # acquire's answer releases the lock on leaving a `with`
        build = build_lock(folder).acquire(timeout=0)
    except LinkedBuildLock:
        build = nullcontext()
    except Timeout:
        raise CacheInUse(f"{folder} is being built; remove it once that build ends") from None
    except OSError as error:
        raise DataError(f"cannot remove {folder}: {_reason(error)}") from None
    with build:
        readers = _lock_readers(folder, exclusive=True)
        if readers == -1:
            raise CacheInUse(
                f"{folder} is in use by a process that reads it (a run or `sef data cache`); "
                f"remove it once that process ends"
            )
        try:
            yield
        finally:
            if readers is not None:
                os.close(readers)


def _reason(error: OSError) -> str:
    return (error.strerror or str(error)).lower()


def remove(folder: Path) -> CacheFolder:
    """Remove the cache ``folder`` (complete, partial or damaged) and return what it was;
    DataError where it is not a cache (nothing removed), CacheInUse where a build or a process
    that reads it holds it."""
    if not os.path.lexists(folder):
        raise DataError(f"there is no {folder}; `sef data caches` lists them")
    found = describe(folder)
    if not found.is_cache:
        raise DataError(f"{folder} is not an image cache ({found.problem}), so it is left as it is")
    with _held(folder):
        names = os.listdir(folder)
        if not all(map(_is_cache_file, names)):  # written meanwhile: not a cache any more
            raise DataError(f"{folder} holds other files now, so it is left as it is")
        for name in sorted(names, key=_removal_order):
            try:
                (folder / name).unlink()
            except FileNotFoundError:
                pass
            except OSError as error:
                raise DataError(f"cannot remove {folder / name}: {_reason(error)}") from None
    try:
        folder.rmdir()
    except OSError as error:
        raise DataError(f"cannot remove {folder}: {_reason(error)}") from None
    return found


def _removal_order(name: str) -> int:
    """The index first (the cache is no cache from then on), the locks last (held meanwhile)."""
    return {INDEX: 0, LOCK: 3, READERS: 3}.get(name, 1 if name == DATA else 2)


def unused(root: Path, days: float, now: float | None = None) -> list[CacheFolder]:
    """The caches in ``root`` neither written nor opened for ``days`` days, nor held now."""
    now = time.time() if now is None else now
    return [  # ages compared, not times: `now - days * DAY` overflows for days of 400 digits
        found
        for found in caches_in(root)
        if found.is_cache and found.in_use is None and now - (found.last_used or 0) > days * DAY
    ]
