"""Finding images that cannot be used and classes without images, and what to do about them
before training starts."""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm

from sef import threads
from sef.choices import BAD_IMAGE_POLICIES
from sef.datasets import verified
from sef.datasets.imagelist import ImageList
from sef.datasets.images import MISSING, UNDECODABLE, UnreadableImage, decode
from sef.errors import ConfigError, DataError, for_reader
from sef.text import bars_drawn, counted, some

FEW = 3  # bad images of one reason listed one line each; more are summed up in one line
ARCHIVES = "is the dataset root the folder its archives unpacked to?"  # why images are missing


def _skip() -> str:
    """data.bad_images=skip as its reader sets it: the `sef` command's user with --set."""
    return for_reader("--set data.bad_images=skip", "data.bad_images=skip")


def new_run_fixes() -> str:
    """What to do about bad images before a new run."""
    return f"fix or remove them, or train without them with {_skip()}"


def resume_keeps_policy(them: str) -> str:
    """Why a resume is not offered the skip that :func:`new_run_fixes` offers: it keeps
    data.bad_images."""
    return (
        f"a resume keeps data.bad_images; to skip {them}, train a new run with {_skip()} and "
        f"another {for_reader('--out', 'run.out')}"
    )


def resumed_fixes() -> str:
    """What to do about bad images before a resume."""
    return f"fix or remove them ({resume_keeps_policy('them')})"


# How a check uses the record of verified images (sef.datasets.verified): it records the images
# that decode (REFRESH), and also decodes only those it has not verified as they are now (USE).
REFRESH, USE = "refresh", "use"


def _problem(path: str) -> str | None:
    """Why the image at ``path`` cannot be used, or None if it decodes fully."""
    try:
        decode(path, upright=False)  # decodability only: a turn changes nothing of it
    except UnreadableImage as bad:
        kind = "cannot decode" if bad.kind == UNDECODABLE else bad.kind
        return f"{kind}: {bad.detail}" if bad.detail else kind
    return None


def find_bad_images(
    samples: Sequence[tuple[str, int]],
    workers: int | None = None,
    progress: bool | None = None,
    *,
    record: str | None = None,
    decoded: Collection[str] = (),
    say: Callable[[str], None] | None = None,
) -> list[tuple[str, str]]:
    """Decode the listed images; return (path, reason) for each missing or unreadable one.

    Decoding runs in threads (PIL releases the GIL while decoding); the result keeps the order of
    ``samples``. Every image is decoded unless ``record`` is USE: then only those the record of
    verified images (:mod:`sef.datasets.verified`) has not verified as they are now, with one
    line to ``say`` where it trusted some and decoded others; USE and REFRESH record the images
    that decode. ``decoded``: paths known to decode (a decoded-image cache's rows), not decoded
    again.
    """
    paths = [path for path, _ in samples]
    stamps = {path: verified.stamp(path) for path in paths} if record else {}  # before decoding
    kept = verified.Record(stamps) if record else None
    unchanged = kept.unchanged(stamps) if kept and record == USE else set()
    todo = [path for path in paths if path not in unchanged and path not in decoded]
    reasons = dict(zip(todo, _problems(todo, workers, progress), strict=True))
    if kept:
        good = unchanged.union(path for path, reason in reasons.items() if not reason)
        kept.save({path: stamps[path] for path in good})
    trusted = len(set(paths)) - len(reasons)
    if say and trusted and todo:
        say(f"checked {counted(len(reasons), 'new or changed image')}; "
            f"{trusted:,} unchanged since verified")  # fmt: skip
    return [(path, reasons[path]) for path in paths if reasons.get(path)]


def _problems(paths: list[str], workers: int | None, progress: bool | None) -> list[str | None]:
    """Why each of ``paths`` cannot be used (None: it decodes), decoded in threads."""
    workers = threads.loader_workers(workers or 8)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(
            tqdm(
                pool.map(_problem, paths, chunksize=16),
                total=len(paths),
                desc="checking images",
                unit="img",
                disable=not paths or not bars_drawn(progress),
            )
        )


def describe_bad_images(
    bad: Sequence[tuple[str, str]], total: int, hint: Callable[[list[str]], str] | None = None
) -> str:
    """The bad images of ``total`` for people, reason by reason: up to FEW of a reason one line
    each (``path: reason``), more of one reason (a split unpacked elsewhere: thousands missing)
    in one line, with how many, under which folder, FEW examples and, for missing images, a hint
    (``hint``, the data's :attr:`ImageList.missing_hint`, in place of :data:`ARCHIVES`).
    """
    paths_of: dict[str, list[str]] = {}
    for path, reason in bad:
        paths_of.setdefault(reason, []).append(path)
    lines = []
    for reason, paths in paths_of.items():
        hinted = reason == MISSING and (_backslashed(paths) or _spelled_otherwise(paths[0]))
        if len(paths) > FEW or hinted:
            lines.append(_summary(reason, paths, total, hint))
        else:
            lines += [f"{path}: {reason}" for path in paths]
    return "\n".join(lines)


def _summary(
    reason: str, paths: list[str], total: int, hint: Callable[[list[str]], str] | None
) -> str:
    """One line for the ``paths`` of ``total`` images that share ``reason``."""
    try:
        folder = os.path.commonpath(paths)
    except ValueError:  # relative and absolute paths together
        folder = ""
    if folder in paths:  # a single file
        folder = os.path.dirname(folder)
    examples = ", ".join(os.path.relpath(path, folder) if folder else path for path in paths[:FEW])
    where = f" under {folder}" if folder else ""
    line = f"{len(paths):,} of {total:,} images{where}: {reason}, e.g. {examples}"
    return f"{line}; {_missing_hint(paths, hint)}" if reason == MISSING else line


def _backslashed(paths: list[str]) -> bool:
    """Whether ``paths`` hold a Windows separator where it is none (any system but Windows)."""
    return os.sep != "\\" and any("\\" in path for path in paths)


def _spelled_otherwise(path: str) -> tuple[str, str] | None:
    """(form, path) of the file that is ``path`` with its accents stored the other way, NFD
    (e, then the accent) or NFC (one character), where there is one: a CSV typed on Linux for
    images copied from a Mac."""
    for form in ("NFD", "NFC"):
        other = unicodedata.normalize(form, path)
        if other != path and os.path.exists(other):
            return form, other
    return None


def _cased_otherwise(path: str) -> str | None:
    """The file beside ``path`` whose name is its name in another case, where there is one: a
    list written on macOS or Windows, whose file systems ignore case (IMG_1.JPG for img_1.jpg)."""
    folder, name = os.path.split(path)
    try:
        names = sorted(os.listdir(folder or os.curdir))
    except OSError:
        return None
    same = [other for other in names if other != name and other.casefold() == name.casefold()]
    return os.path.join(folder, same[0]) if same else None


def _missing_hint(paths: list[str], hint: Callable[[list[str]], str] | None) -> str:
    """Why ``paths`` may be missing: Windows separators (said, not converted: on Linux a file
    name may hold a backslash), accents stored otherwise, a name in another case, a folder that
    does not exist, or the images one folder deeper than listed (a copy that unpacks
    cars_train/cars_train/); else ``hint``'s words for them, or :data:`ARCHIVES`."""
    if _backslashed(paths):
        return "the paths separate folders with \\ (as on Windows): write them with / instead"
    found = _spelled_otherwise(paths[0])
    if found:
        form, path = found
        mac = " (as macOS writes file names)" * (form == "NFD")
        return f"{path} exists, its accents stored as {form}{mac}: list the files as they are named"
    cased = _cased_otherwise(paths[0])
    if cased:
        return (
            f"{cased} exists, its name in another case (macOS and Windows ignore case, Linux does "
            f"not): list the files as they are named"
        )
    parent, name = os.path.split(paths[0])
    if not os.path.isdir(parent):
        return f"{parent} does not exist: {_told(paths, hint)}"
    try:
        deeper = [
            os.path.join(entry.path, name)
            for entry in os.scandir(parent)
            if entry.is_dir() and os.path.exists(os.path.join(entry.path, name))
        ]
    except OSError:  # a folder this user may not list
        deeper = []
    if deeper:
        return f"{deeper[0]} exists: the images are one folder deeper than listed"
    return _told(paths, hint)


def _told(paths: list[str], hint: Callable[[list[str]], str] | None) -> str:
    """``hint``'s words for the missing ``paths``, or :data:`ARCHIVES`: worked out only where
    said (a CSV's hint looks at the disk)."""
    return hint(paths) if hint else ARCHIVES


def bad_images_said(
    bad: Sequence[tuple[str, str]],
    total: int,
    fixes: str,
    hint: Callable[[list[str]], str] | None = None,
) -> str:
    """How many of ``total`` images are ``bad``, ``fixes`` (what to do about them), then each
    reason (:func:`describe_bad_images` with ``hint``): what training and `sef data check` say."""
    head = f"{len(bad):,} of {total:,} images cannot be used; {fixes}:"
    return f"{head}\n{describe_bad_images(bad, total, hint)}"


def apply_bad_image_policy(
    dataset: ImageList | Sequence[ImageList],
    policy: str = "stop",
    workers: int | None = None,
    progress: bool | None = None,
    *,
    record: str | None = None,
    decoded: Collection[str] = (),
    say: Callable[[str], None] | None = None,
    fixes: str | None = None,
    hint: Callable[[list[str]], str] | None = None,
) -> list[tuple[str, str]]:
    """Check every image of ``dataset`` (or of several, e.g. a run's two splits, each image once)
    before training; return the bad ones as (path, reason). ``record``, ``decoded``, ``say``:
    as :func:`find_bad_images` takes them.

    ``stop`` raises a DataError listing the bad files of them all (:func:`describe_bad_images`,
    with the first dataset's ``missing_hint``, else ``hint``) after ``fixes``, what to do about
    them (a new run's, :func:`new_run_fixes`, where None);
    ``skip`` removes them from each dataset in place and returns them so the caller can report
    them; ``off`` checks nothing.
    """
    if policy not in BAD_IMAGE_POLICIES:
        raise ConfigError(
            f"unknown bad-image policy {policy!r}; choose one of {', '.join(BAD_IMAGE_POLICIES)}"
        )
    if policy == "off":
        return []
    lists = [dataset] if isinstance(dataset, ImageList) else list(dataset)
    samples = list({path: label for d in lists for path, label in d.samples}.items())
    bad = find_bad_images(
        samples, workers=workers, progress=progress, record=record, decoded=decoded, say=say
    )
    if bad and policy == "stop":
        hint = lists[0].missing_hint or hint
        raise DataError(bad_images_said(bad, len(samples), fixes or new_run_fixes(), hint))
    for each in lists:
        each.drop([path for path, _ in bad])
    return bad


def check_classes(train: ImageList, split: str, source: str) -> None:
    """DataError unless ``train`` has two classes or more and images of every one (training's
    refusal, which `sef data check` says too)."""
    if len(train.classes) < 2:
        named = ", ".join(repr(name) for name in train.classes) or "none"
        raise DataError(
            f"{source} holds {len(train.classes)} class ({named}); a classifier "
            f"needs at least two classes to tell apart"
        )
    unseen = classes_without_images(train, train.classes)
    if unseen:
        raise DataError(
            f"the {split} split of {source} has no images of {len(unseen)} of its "
            f"{len(train.classes)} classes ({some(unseen, repr)}); add images of them or remove "
            f"them"
            f"{_case_hint(unseen, train.classes)}"
        )


def _case_hint(unseen: list[str], classes: list[str]) -> str:
    """What to say of a class without images that another differs from only in case (test/cat
    beside train/Cat: one folder on macOS and Windows, two classes on Linux)."""
    for name in unseen:
        for other in classes:
            if other != name and other.casefold() == name.casefold():
                return f" ({name!r} and {other!r} differ only in case: spell them alike)"
    return ""


def classes_without_images(images: ImageList, classes: list[str]) -> list[str]:
    """The names of the ``classes`` that ``images`` hold no image of."""
    seen = {label for _, label in images.samples}
    return [name for label, name in enumerate(classes) if label not in seen]
