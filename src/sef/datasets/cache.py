"""A decoded-image cache: every image of a dataset decoded once and stored as a recipe resizes it.

``sef data cache NAME ROOT`` (or ``data.cache: auto`` in a run) decodes each image of every split
once, resizes it as the recipe does (:func:`sef.transforms.resize_transform`: 600 x 600 for
``resize_crop`` at 448 px, the CUB and Aircraft recipe; 448 x 448 for ``resize``, Cars and Dogs)
and writes it as one uint8 row [3, side, side] of FOLDER/images.u8, a file that is then
memory-mapped when the cache is opened (a rebuild writes a new file and renames it into place,
so a reader keeps the build it opened); FOLDER/index.json says what the rows are. A run then reads
rows instead of decoding and resizing JPEGs: training items are the resized image with the crop
and flip drawn under the item's own seed (:mod:`sef.seeding`), and
:meth:`CachedTrainImages.finish_batch` crops and flips the whole batch on the device, where the
engine normalises it; evaluation items are centre-cropped rows. Both give the JPEG road's pixels
bit for bit (tests/test_cache.py), so a run is the same with or without the cache.

A cache is stale, and never read, unless its index matches what is asked: the cache format
(:data:`~sef.datasets.caches.FORMATS`: its layout, and whether its rows hold the images turned
upright by their EXIF orientation, as own data reads them, or as stored, as the benchmarks do: a
cache holds what its dataset's :class:`ImageList` gives, bit for bit), the recipe and its sizes,
the torch and torchvision versions that resized (their arithmetic), the pixel limit
(``SEF_MAX_PIXELS``: which images were too large), and for every image asked for its file (its
resolved path), box and trimmed rows (what :class:`ImageList` does before the transform), byte
size and modification time. Each reason is one line (:class:`StaleCache`).

A build also records the images it decoded in the record of verified images
(:mod:`sef.datasets.verified`), with the stamps it took before decoding them, so that a check of
their files (a run without the cache, `sef eval`, the figures) does not decode them again.

A process that has a cache open holds a shared lock on FOLDER/.read-lock, so that ``sef data
caches --remove`` (:mod:`sef.datasets.caches`) leaves the cache alone while it reads it.
"""

from __future__ import annotations

import copy
import errno
import hashlib
import json
import os
import shutil
import sys
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
import torchvision
from filelock import Timeout
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from sef import space, threads, transforms
from sef.datasets import verified
from sef.datasets.caches import (
    DATA,
    FORMATS,
    INDEX,
    LOCK,
    ROWS,
    TEMPORARY,
    build_lock,
    default_root,
    format_problem,
    hold_for_reading,
)
from sef.datasets.imagelist import ImageList
from sef.datasets.images import UnreadableImage, pixel_limit
from sef.datasets.splits import NoSuchSplit
from sef.errors import DataError, OutputError
from sef.outputs import (
    abandoned,
    atomic_path,
    make_folder,
    named,
    output_error,
    remove_file,
    write_text,
)
from sef.text import bars_drawn, counted

_NO_FALLOCATE = (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)  # file systems without it
MARGIN = 1_000_000  # room a build wants beyond its files: blocks, metadata, other writers
SPLITS = ("trainval", "test")  # every image of a dataset is in one of them: what a build caches
# path, box, rows trimmed: what one stored row is made from (turned upright or not: the cache's
# format says, the same for every row)
Source = tuple[str, "tuple[float, ...] | None", int]


class StaleCache(DataError):
    """A cache that does not hold what is asked for (or no cache at all); the message says why."""


class CacheUnavailable(DataError):
    """A cache that cannot be built here (no room, no write access, ...); the message says why."""


def source_of(
    images: ImageList, index: int, resolve: Callable[[str], str] = os.path.realpath
) -> Source:
    """What item ``index`` of ``images`` is made from: the key of its row in a cache, with the
    file's resolved path, so that every spelling of a root (relative, absolute, through a
    symbolic link) finds the same rows. Whether it is turned upright is the list's
    (:func:`upright`), not the key's."""
    box = None if images.boxes is None else tuple(float(v) for v in images.boxes[index])
    path = resolve(images.samples[index][0])
    return path, box, int(images.trim_bottom)


def sources(images: ImageList) -> list[Source]:
    """The key of every item of ``images``."""
    return [source_of(images, index) for index in range(len(images))]


def upright(images: Iterable[ImageList]) -> bool | None:
    """Whether the images of ``images`` are turned upright by their EXIF orientation
    (``ImageList.upright``: the cache format that holds them), None where the lists hold no
    image; ValueError where they mix both, which no one cache holds."""
    turned = {bool(listed.upright) for listed in images if len(listed)}
    if len(turned) > 1:
        raise ValueError("one cache holds images turned upright or as stored, not both")
    return turned.pop() if turned else None


def readable_splits(read: Callable[[str], ImageList]) -> list[ImageList]:
    """The splits of SPLITS that ``read(split)`` reads, for a build: own data without a test split
    is cached without it; any other error reading a split (a damaged list) stops the build. The
    first split's NoSuchSplit if the data declares none of them."""
    found, errors = [], []
    for split in SPLITS:
        try:
            found.append(read(split))
        except NoSuchSplit as error:
            errors.append(error)
    if not found:
        raise errors[0]
    return found


def recipe_record(recipe: str, image_size: int) -> dict[str, Any]:
    """What every row of a cache depends on besides its image (the pixel limit: which images
    were too large to decode)."""
    return {
        "recipe": recipe,
        "image_size": image_size,
        "side": transforms.resize_size(recipe, image_size),
        "torch": torch.__version__.split("+")[0],
        "torchvision": torchvision.__version__.split("+")[0],
        "max_pixels": pixel_limit(),
    }


def origin(name: str, root: str | os.PathLike | None, options: dict) -> dict[str, Any]:
    """What a cache's index records of the data it holds (``sef data caches`` shows it): the
    dataset, its root resolved (None: a generated set's default place) and the reader options."""
    where = None if root is None else os.path.realpath(os.path.expanduser(root))
    chosen = {k: v for k, v in sorted(options.items()) if k != "progress"}
    return {"dataset": name, "root": where, "options": json.loads(json.dumps(chosen, default=str))}


def default_folder(
    name: str, root: str | os.PathLike | None, options: dict, recipe: str, image_size: int
) -> Path:
    """Where ``data.cache: auto`` and ``sef data cache`` keep the cache of a dataset (at ``root``,
    read with reader ``options``) for a recipe: $SEF_CACHE/decoded/<name>-<recipe>-<side>px-<hash>
    (else under ~/.cache/sef), the hash naming the folder and options."""
    data = origin(name, root, options)
    named = [data["root"] or "default", data["options"]]
    digest = hashlib.sha256(json.dumps(named, default=str).encode()).hexdigest()[:10]
    side = transforms.resize_size(recipe, image_size)
    return default_root() / f"{name}-{recipe}-{side}px-{digest}"


def folder_for(
    setting: str,
    name: str,
    root: str | os.PathLike | None,
    options: dict,
    recipe: str,
    image_size: int,
) -> Path:
    """The folder a ``data.cache`` setting names: ``auto`` the default one, else the folder."""
    if setting == "auto":
        return default_folder(name, root, options, recipe, image_size)
    return Path(setting).expanduser()


def _stat(path: str) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_size, status.st_mtime_ns


# ----------------------------------------------------------------------------- reading


class ImageCache:
    """An open cache: the row of every stored image, read from its file, memory-mapped when the
    cache is opened. A rebuild (another process's) writes a new file and renames it into place,
    so this process and the loader workers it forks read the build they opened to the end; a
    spawned worker, which gets the cache pickled without its map, maps the file again and
    refuses one of another build (DataError)."""

    def __init__(self, folder: Path, index: dict) -> None:
        self.folder, self.side, self.count = folder, index["side"], len(index["images"])
        # held before the map and while this object lives: `sef data caches --remove` refuses
        self._reading = hold_for_reading(folder)
        if self._reading is not None:
            weakref.finalize(self, os.close, self._reading)
        self.upright = index["format"] == FORMATS[True]  # every row's
        self.rows: dict[Source, int] = {}
        self.unreadable: dict[Source, str] = {}
        for row, (path, box, trim, _, _, problem) in enumerate(index["images"]):
            source = (path, None if box is None else tuple(box), trim)
            if problem is None:
                self.rows[source] = row
            else:
                self.unreadable[source] = problem
        self._pixels, self.file = self._map()

    def _map(self) -> tuple[np.memmap, tuple[int, int]]:
        """FOLDER/DATA mapped copy-on-write (a write changes this process's pages, never the
        file), and which file it is (device, inode); OSError or ValueError if it is not there
        or shorter than the index says."""
        with open(self.folder / DATA, "rb") as handle:
            status = os.fstat(handle.fileno())
            shape = (self.count, 3, self.side, self.side)
            return np.memmap(handle, np.uint8, "c", shape=shape), (status.st_dev, status.st_ino)

    @property
    def bytes(self) -> int:
        return self.count * 3 * self.side * self.side

    def image(self, source: Source) -> Tensor:
        """The stored uint8 image [3, side, side] of ``source``: a view of the mapped file, so
        that a batch copies each image once, when the loader collates it (copying it here as
        well halved what a loader worker delivered: 370 against 800 images/s of 600 px on this
        CPU)."""
        row = self.rows.get(source)
        if row is None:
            why = self.unreadable.get(source, "it is not in the cache")
            raise DataError(f"image {source[0]} cannot be read from {self.folder}: {why}")
        if self._pixels is None:  # unpickled in a spawned process
            try:
                pixels, file = self._map()
            except (OSError, ValueError):  # mid-rebuild: gone, or another size
                pixels, file = None, None
            if file != self.file:
                raise DataError(
                    f"{self.folder} was rebuilt by another process while this one read it; "
                    f"run this again"
                )
            self._pixels = pixels
        return torch.from_numpy(self._pixels[row])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pixels": None, "_reading": None}  # the parent holds the lock


def stale_reason(
    folder: Path, wanted: Sequence[Source], recipe: str, image_size: int, *, turned: bool | None
) -> str | None:
    """Why the cache in ``folder`` cannot give ``wanted`` as ``recipe`` at ``image_size`` makes
    them, turned upright or not as ``turned`` says (:func:`upright`; None: no image is wanted),
    in one line, or None if it can; CacheUnavailable if its index.json is not a cache's."""
    try:
        index = json.loads((folder / INDEX).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):  # not even the folder: a file in its way
        return f"{folder} holds no image cache yet"
    except (OSError, ValueError) as error:
        return f"{folder / INDEX} cannot be read ({error})"
    if not isinstance(index, dict) or "format" not in index:  # another program's index.json
        raise CacheUnavailable(
            f"{folder / INDEX} is not an image cache's index, so nothing is written to {folder}; "
            f"choose an empty or new folder"
        )
    if problem := format_problem(index):  # a format of another sef
        return f"{folder} was {problem}"
    stored_upright = index["format"] == FORMATS[True]
    if turned is not None and turned != stored_upright:
        return (
            f"{folder} holds images {ROWS[stored_upright]} (cache format {index['format']}), "
            f"this run reads them {ROWS[turned]} (format {FORMATS[turned]})"
        )
    expected = recipe_record(recipe, image_size)
    for key, value in expected.items():
        if index.get(key) != value:
            return f"{folder} was built with {key} {index.get(key)!r}, this run needs {value!r}"
    stored = {
        (path, None if box is None else tuple(box), trim): (size, mtime)
        for path, box, trim, size, mtime, _ in index["images"]
    }
    missing = [s for s in wanted if s not in stored]
    if missing:
        return (
            f"{len(missing):,} of the {len(wanted):,} images are not in {folder}, "
            f"e.g. {missing[0][0]}"
        )
    changed = [s for s in wanted if (_stat(s[0]) or (None, None)) != stored[s]]
    if changed:
        return (
            f"{len(changed):,} of the {len(wanted):,} images changed (size or time) since {folder} "
            f"was built, e.g. {changed[0][0]}"
        )
    size = _stat(str(folder / DATA))
    expected_bytes = len(index["images"]) * 3 * expected["side"] ** 2
    if size is None or size[0] != expected_bytes:
        return f"{folder / DATA} is not the {expected_bytes:,} bytes its index promises"
    return None


def _index_text(folder: Path) -> str:
    """FOLDER/INDEX as it is now; "" where it cannot be read."""
    try:
        return (folder / INDEX).read_text(encoding="utf-8")
    except OSError:
        return ""


def open_cache(
    folder: Path, wanted: Sequence[Source], recipe: str, image_size: int, *, turned: bool | None
) -> ImageCache:
    """The cache in ``folder``, checked to hold ``wanted`` as the recipe makes them (turned as
    :func:`stale_reason` says), its file mapped; else StaleCache saying why (also where another
    process rebuilt it meanwhile)."""
    text = _index_text(folder)
    reason = stale_reason(folder, wanted, recipe, image_size, turned=turned)
    if reason is not None:
        raise StaleCache(reason)
    try:
        opened = ImageCache(folder, json.loads(text))
        # a rebuild removes the index first and writes it last: the same index before the check
        # and after the mapping means that both are of the file mapped
        if _index_text(folder) == text:
            return opened
    except (OSError, ValueError):  # mid-rebuild or removed: no index, no file, or another size
        pass
    removed = not (folder / DATA).exists() and not _temporaries(folder)
    what = "removed" if removed else "rebuilt"  # removed: what its reader's lock waited for
    raise StaleCache(f"{folder} was {what} by another process while this one opened it")


# ----------------------------------------------------------------------------- building


@dataclass
class Built:
    """What a build wrote: how many images, how many bytes, in how many seconds, and how many
    could not be used (``example``: why the first of them could not)."""

    folder: Path
    images: int
    bytes: int
    seconds: float
    unreadable: int
    example: str = ""  # why the first unreadable image is: "image <path> is missing ..."

    def summary(self) -> str:
        bad = f"; {self.unreadable:,} of them cannot be used, the first: {self.example}"
        return (
            f"{counted(self.images, 'image')} in {self.folder}: {space.human(self.bytes)}, "
            f"built in {self.seconds:.0f} s{bad if self.unreadable else ''}"
        )


class _Resized(Dataset):
    """Item ``index`` of each (ImageList, index) pair, loaded by that list as it loads it and
    resized by ``resize_transform``; an unreadable image becomes its one-line reason instead of
    an error, so the build goes on and the index records it."""

    def __init__(self, items: list[tuple[ImageList, int]], recipe: str, image_size: int) -> None:
        resize = transforms.resize_transform(recipe, image_size)
        lists: dict[int, ImageList] = {}
        for listed, _ in items:
            if id(listed) not in lists:
                lists[id(listed)] = copy.copy(listed)
                lists[id(listed)].transform = resize
        self.items = [(lists[id(listed)], index) for listed, index in items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Tensor | str:
        listed, index = self.items[i]
        try:
            return listed[index][0]
        except UnreadableImage as bad:
            return str(bad)


def _as_is(item: Any) -> Any:
    return item


def _check_room(folder: Path, needed: int) -> None:
    """CacheUnavailable unless ``folder`` has (or can have) room for ``needed`` bytes and MARGIN
    (its old cache and every build's temporaries count as free: a killed build's are removed,
    and the one under way becomes the cache that this build opens or replaces)."""
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    replaced = [folder / DATA, folder / INDEX, *_temporaries(folder)]
    old = sum((_stat(str(path)) or (0, 0))[0] for path in replaced)
    free = shutil.disk_usage(existing).free + old
    needed += MARGIN
    if needed > free:
        needs, has = space.apart(needed, free)
        raise CacheUnavailable(
            f"the image cache needs {needs} in {folder} and {has} are free there; free space or "
            f"choose another folder"
        )


def _clear(folder: Path) -> None:
    """``folder`` made, and the cache in it removed (invalid from here on); OutputError if that
    cannot be done (a read-only folder)."""
    make_folder(folder)
    for path in [folder / INDEX, folder / DATA, *_abandoned(folder)]:
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            raise output_error(path, error) from None


def _temporaries(folder: Path) -> list[Path]:
    """Every build's temporaries in ``folder`` (``.images.u8.<pid>.tmp``, full size from the
    start), the running build's too."""
    return [folder / m.string for m in named(folder, TEMPORARY)]


def _abandoned(folder: Path) -> list[Path]:
    """The temporaries of builds whose process is gone, killed before it could remove them;
    none where that cannot be told."""
    return abandoned(folder, TEMPORARY)


def _allocate(handle: BinaryIO, size: int) -> None:
    """The open file ``handle`` made ``size`` bytes long, its blocks reserved now where the
    system can, so that a disk too full fails here (an OSError), not midway."""
    try:
        os.posix_fallocate(handle.fileno(), 0, size)
    except (AttributeError, OSError) as error:  # no such call here, or not on this system
        if isinstance(error, OSError) and error.errno not in _NO_FALLOCATE:
            raise
        handle.truncate(size)


def _decode_into(
    path: Path,
    todo: list[tuple[ImageList, int]],
    shape: tuple[int, ...],
    recipe: str,
    image_size: int,
    workers: int,
    progress: bool | None,
) -> list[str | None]:
    """Decode and resize ``todo`` into a uint8 array of ``shape`` written to ``path`` whole or
    not at all (OutputError); returns each image's problem (None: decoded)."""
    problems: list[str | None] = []
    loader = DataLoader(
        _Resized(todo, recipe, image_size),
        batch_size=None,
        num_workers=threads.loader_workers(workers),
        collate_fn=_as_is,
    )
    bar = tqdm(
        loader,
        total=len(todo),
        desc="caching images",
        unit="img",
        file=sys.stderr,
        disable=not bars_drawn(progress),
    )
    row_bytes = int(np.prod(shape[1:]))
    # written through the file, not a writable map: where the blocks could not be reserved, a
    # disk that fills is an OSError here, where a mapped page's write was a SIGBUS (Bus error)
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        _allocate(handle, int(np.prod(shape)))
        for row, item in enumerate(bar):
            if isinstance(item, str):
                problems.append(item)
            else:
                handle.seek(row * row_bytes)
                handle.write(item.numpy().tobytes())
                problems.append(None)
    return problems


def _records(
    todo: Iterable[Source], stamps: list[verified.Stamp | None], problems: list[str | None]
) -> list[list]:
    """The index's line of each image: its key (the cache's format says whether it is turned),
    size and modification time (of its :func:`verified.stamp`), and its problem."""
    return [
        [path, None if box is None else list(box), trim, *(stamp or (None, None))[:2], problem]
        for (path, box, trim), stamp, problem in zip(todo, stamps, problems, strict=True)
    ]


def _record_verified(
    todo: list[tuple[ImageList, int]],
    stamps: list[verified.Stamp | None],
    problems: list[str | None],
) -> None:
    """Record the images of ``todo`` that the build decoded fully as verified, with their
    ``stamps`` from before it decoded them (:mod:`sef.datasets.verified`), so that a check of
    their files (a run without the cache, `sef eval`, the figures) does not decode them again;
    an image with a row that did not decode is left out."""
    paths = [listed.samples[index][0] for listed, index in todo]
    bad = {path for path, problem in zip(paths, problems, strict=True) if problem is not None}
    good = {path: s for path, s in zip(paths, stamps, strict=True) if path not in bad}
    verified.Record(paths).save(good)


def _refuse_foreign(folder: Path) -> None:
    """CacheUnavailable if ``folder`` holds files other than a cache's (hidden ones aside)."""
    if folder.is_dir():
        foreign = sorted(
            p.name for p in folder.iterdir() if p.name not in (DATA, INDEX) and p.name[0] != "."
        )
        if foreign:
            raise CacheUnavailable(
                f"{folder} holds other files ({', '.join(foreign[:3])}), so it is not an image "
                f"cache and nothing is written there; choose an empty or new folder"
            )


@contextmanager
def _building(folder: Path, say: Callable[[str], None], why: str | None = None) -> Iterator[None]:
    """Hold ``folder``'s build lock (an OS lock on FOLDER/LOCK, released however its holder
    ends): a second builder waits, saying so, instead of clearing what the first is writing or
    opening. CacheUnavailable if the lock cannot be made (a read-only folder, a link there),
    after ``why`` a build is wanted."""
    try:
        lock = build_lock(make_folder(folder))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            say(f"waiting for another process that is building the image cache in {folder}")
            lock.acquire()
    except (OutputError, OSError) as error:
        problem = error if isinstance(error, OutputError) else output_error(folder / LOCK, error)
        raise CacheUnavailable(f"{why}, and {problem}" if why else str(problem)) from None
    try:
        yield
    finally:
        lock.release()


def build(
    folder: Path,
    images: Iterable[ImageList],
    recipe: str,
    image_size: int,
    *,
    workers: int = 0,
    progress: bool | None = None,
    say: Callable[[str], None] = print,
) -> Built:
    """Decode and resize every distinct image of ``images`` into a cache in ``folder``
    (replacing any cache there), with ``workers`` loader processes and a progress bar; a build
    of ``folder`` by another process is waited for first (:func:`ensure` then opens it)."""
    images = list(images)
    _plan(folder, images, recipe, image_size)  # a build refused now, before the lock is made
    with _building(folder, say):  # planned again: the files may have changed while it waited
        return _plan(folder, images, recipe, image_size)(workers, progress)


def _plan(
    folder: Path,
    images: Iterable[ImageList],
    recipe: str,
    image_size: int,
    data: dict[str, Any] | None = None,
) -> Callable[[int, bool], Built]:
    """The build of ``images`` into ``folder``, ``write(workers, progress)``, for its caller to
    run holding the build lock; CacheUnavailable now, before anything is written, if ``folder``
    is not a cache's or has no room for it. ``data``: what the index records of the data."""
    images = list(images)
    todo: dict[Source, tuple[ImageList, int]] = {}
    for listed in images:
        for index, source in enumerate(sources(listed)):
            todo.setdefault(source, (listed, index))
    if not todo:
        raise DataError(f"there are no images to cache in {folder}")
    turned = upright(images)
    record = {"format": FORMATS[turned], **recipe_record(recipe, image_size), **(data or {})}
    side = record["side"]
    shape = (len(todo), 3, side, side)
    # before decoding: a later change shows, to the index and to the record of verified images
    stamps = [verified.stamp(source[0]) for source in todo]
    index_bytes = len(json.dumps(_records(todo, stamps, [None] * len(todo))))
    _refuse_foreign(folder)
    _check_room(folder, int(np.prod(shape)) + index_bytes)

    def write(workers: int, progress: bool | None) -> Built:
        started = time.perf_counter()
        try:
            _clear(folder)
            problems = _decode_into(
                folder / DATA, list(todo.values()), shape, recipe, image_size, workers, progress
            )
            seconds = time.perf_counter() - started
            index = {**record, "shape": list(shape), "seconds": round(seconds, 1),
                     "images": _records(todo, stamps, problems)}  # fmt: skip
            write_text(folder / INDEX, json.dumps(index) + "\n")
        except OutputError as error:
            remove_file(folder / DATA)  # never a data file without its index
            raise CacheUnavailable(str(error)) from None
        _record_verified(list(todo.values()), stamps, problems)
        bad = [why for why in problems if why]
        return Built(folder, len(todo), int(np.prod(shape)), seconds, len(bad), (bad or [""])[0])

    return write


def ensure(
    folder: Path,
    wanted: Sequence[ImageList],
    everything: Callable[[], Sequence[ImageList]],
    recipe: str,
    image_size: int,
    *,
    workers: int = 0,
    progress: bool | None = None,
    say: Callable[[str], None] = print,
    build_refused: str | None = None,
    data: dict[str, Any] | None = None,
) -> tuple[ImageCache, Built | None]:
    """The cache in ``folder`` holding ``wanted``; where it is missing or stale it is built
    (saying why in one line) over ``wanted`` and ``everything()``, every split, so that one
    cache serves any choice of splits. ``build_refused``: why building is impossible here
    (CacheUnavailable); ``data``: what a build records of the data (:func:`origin`).

    An up-to-date cache is opened without a lock (a read-only folder serves); a build holds the
    build lock until it has opened what it wrote, so that two processes asking at once (two runs
    with ``--cache auto``) build once: the second waits, then decides again, and opens the
    first's cache (or, stale for it still, rebuilds it from what the files are then)."""
    keys = [source for listed in wanted for source in sources(listed)]
    turned = upright(wanted)
    try:
        return open_cache(folder, keys, recipe, image_size, turned=turned), None
    except StaleCache as stale:
        reason = str(stale)
    if build_refused is not None:
        raise CacheUnavailable(f"{reason}, and {build_refused}")
    every = [*wanted, *everything()]
    _plan(folder, every, recipe, image_size, data)  # a build refused now, before the lock
    with _building(folder, say, reason):
        try:  # decided again with the lock: another process may have built it meanwhile
            return open_cache(folder, keys, recipe, image_size, turned=turned), None
        except StaleCache as stale:
            reason = str(stale)
        if (folder / INDEX).exists():
            say(f"rebuilding the image cache: {reason}")
        built = _plan(folder, every, recipe, image_size, data)(workers, progress)
        return open_cache(folder, keys, recipe, image_size, turned=turned), built


# ----------------------------------------------------------------------------- datasets


class _Cached(Dataset):
    """``images`` (an ImageList) read from ``cache``; ``samples``, ``classes``, ``missing_hint``
    and ``drop`` are the list's, so the bad-image policy and DDP treat it as the list itself.
    ValueError where the list reads its images turned otherwise than the cache's rows are (their
    keys are the same)."""

    def __init__(self, images: ImageList, cache: ImageCache, recipe: str, image_size: int) -> None:
        if len(images) and bool(images.upright) != cache.upright:
            raise ValueError(
                f"{cache.folder} holds images {ROWS[cache.upright]}, this list reads them "
                f"{ROWS[bool(images.upright)]}"
            )
        self.images, self.cache = images, cache
        self.recipe, self.image_size = recipe, image_size
        self.resolved = {path: os.path.realpath(path) for path, _ in images.samples}  # once

    def __len__(self) -> int:
        return len(self.images)

    @property
    def samples(self) -> list[tuple[str, int]]:
        return self.images.samples

    @property
    def classes(self) -> list[str]:
        return self.images.classes

    @property
    def targets(self) -> list[int]:
        return self.images.targets

    @property
    def missing_hint(self) -> str | None:
        return self.images.missing_hint

    def drop(self, paths: Sequence[str]) -> None:
        self.images.drop(paths)

    def decoded(self) -> list[str]:
        """The paths of the images whose rows the cache holds: its build decoded them fully, and
        opening it found their files as they were then."""
        return [
            path
            for index, (path, _) in enumerate(self.images.samples)
            if source_of(self.images, index, self.resolved.__getitem__) in self.cache.rows
        ]

    def _row(self, index: int) -> tuple[Tensor, int]:
        source = source_of(self.images, index, self.resolved.__getitem__)
        return self.cache.image(source), self.images.samples[index][1]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images from {self.cache.folder})"


def decoded_paths(images: Iterable[Dataset]) -> set[str]:
    """The paths of the images of ``images`` that the cache they are read from holds decoded
    (:meth:`_Cached.decoded`): none of a dataset read otherwise."""
    return {path for each in images if isinstance(each, _Cached) for path in each.decoded()}


class CachedTrainImages(_Cached):
    """Training items ``((image [3, side, side] uint8, crop [3]), label)``: the crop and flip are
    drawn here, under the item's seed, as ``train_transform`` draws them; the batch is cropped
    on the device by :meth:`finish_batch` (the training loader calls it)."""

    def __getitem__(self, index: int) -> tuple[tuple[Tensor, Tensor], int]:
        image, label = self._row(index)
        crop = torch.tensor(transforms.draw_crop_flip(self.recipe, self.image_size))
        return (image, crop), label

    def finish_batch(self, inputs: tuple[Tensor, Tensor], device: torch.device) -> Tensor:
        """A collated batch of items on ``device``, cropped and flipped: uint8 [B, 3, S, S]."""
        images, crops = inputs
        images = images.to(device, non_blocking=True)
        return transforms.crop_flip_batch(images, crops, self.image_size)


class CachedTestImages(_Cached):
    """Evaluation items ``(image, label)``: the row centre-cropped (``resize_crop``) and, with
    ``normalise``, normalised, as ``test_transform`` makes them."""

    def __init__(
        self, images: ImageList, cache: ImageCache, recipe: str, image_size: int, normalise: bool
    ) -> None:
        super().__init__(images, cache, recipe, image_size)
        self.finish = transforms.test_transform(recipe, image_size, normalise, resized=True)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image, label = self._row(index)
        return self.finish(image), label
