"""`sef data check|download|cache`: look at a dataset before training on it, fetch it, or
decode it once into a cache that training reads instead of the JPEGs."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from sef import datasets
from sef.choices import RECIPES
from sef.cli.options import (
    COUNT,
    IMAGE_SIDE,
    NON_NEGATIVE,
    PATH,
    PLACE,
    SEED,
    add_progress_option,
)
from sef.errors import ConfigError, DataError
from sef.text import counted, json_text, printable, some, table

SHOWN_CLASSES = 8


def _option(text: str) -> tuple[str, object]:
    """KEY=VALUE with a YAML value (true, 3, 0.5, [a, b], text)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), yaml.safe_load(value)


def _dataset_arguments(parser: argparse.ArgumentParser, option_help: str) -> None:
    """NAME, ROOT and -o KEY=VALUE: a dataset as `sef data check` and `cache` read it."""
    parser.add_argument(
        "name", metavar="NAME", choices=datasets.NAMES, help=", ".join(datasets.NAMES)
    )
    parser.add_argument(
        "root",
        metavar="ROOT",
        nargs="?",
        help=f"the dataset folder as unpacked ({', '.join(datasets.GENERATED)}: optional)",
    )
    parser.add_argument(
        "-o",
        "--option",
        type=_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=option_help,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data", help="check, download or cache a dataset; list or remove the caches"
    )
    commands = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    check = commands.add_parser(
        "check",
        help="count images per split, list classes, and verify every image opens",
        description=(
            "Read every split of NAME at ROOT, print its size and classes, then fully decode "
            "every image. Exits 1 and names the bad files if any image is missing or unreadable "
            "(more than three for one reason in one line: how many, where, three examples), or "
            "says why if training would stop on the data (one class, a class without images)."
        ),
    )
    _dataset_arguments(check, "a reader option, e.g. level=family (Aircraft) or bbox_crop=true")
    check.add_argument("--seed", type=SEED, default=0, help="seed of the val hold-out (default 0)")
    check.add_argument("--workers", type=COUNT, default=None, help="decoding threads")
    check.add_argument("--all-classes", action="store_true", help="print every class name")
    add_progress_option(check)
    check.set_defaults(func=run_check)

    fetch = commands.add_parser(
        "download",
        help="download, verify and unpack an official dataset archive",
        description=(
            f"Download the official archives of NAME ({', '.join(datasets.DOWNLOADABLE)}) into "
            "ROOT, verify their MD5 checksums and unpack them so that `sef data check NAME ROOT` "
            "reads them. Run again, it continues a stopped transfer and skips the archives it "
            "has unpacked there; where NAME reads from ROOT already (unpacked by hand), it "
            "downloads nothing and leaves the files as they are."
        ),
    )
    fetch.add_argument(
        "name", metavar="NAME", choices=datasets.NAMES, help=", ".join(datasets.DOWNLOADABLE)
    )
    fetch.add_argument("root", metavar="ROOT", help="folder to unpack into (created if needed)")
    fetch.add_argument(
        "--mirror",
        help="fetch <MIRROR>/<archive name> instead of the official URL (a local folder, or the "
        "archive itself)",
    )
    fetch.add_argument("--keep-archives", action="store_true", help="keep the downloaded files")
    add_progress_option(fetch)
    fetch.set_defaults(func=run_download)

    cache = commands.add_parser(
        "cache",
        help="decode and resize every image once into a cache that training reads",
        description=(
            "Decode every image of NAME at ROOT (every split) once, resize it as the recipe "
            "does (600 x 600 for resize_crop at 448 px, 448 x 448 for resize) and store it in "
            "a memory-mapped uint8 file with an index; `sef train --cache auto` (or FOLDER) then "
            "reads it instead of the JPEGs, with the same pixels. A cache that is up to date is "
            "left as it is; a stale one (other images, sizes, times or recipe) is rebuilt."
        ),
    )
    _dataset_arguments(cache, "a reader option, as the run's data.options (e.g. bbox_crop=true)")
    cache.add_argument("--recipe", choices=RECIPES, help="default: the dataset's preset's")
    cache.add_argument(
        "--image-size", type=IMAGE_SIDE,
        help="crop side; default: the dataset's preset's (448; demo 64, birds32 128)",
    )  # fmt: skip
    cache.add_argument(
        "--out", type=PLACE, help="the cache folder (default: the one --cache auto uses)"
    )
    cache.add_argument(
        "--workers", type=NON_NEGATIVE, default=None,
        help="decoding processes, at most the CPUs (0: in this one; default: the CPUs, at most 8)",
    )  # fmt: skip
    add_progress_option(cache)
    cache.set_defaults(func=run_cache)

    listed = commands.add_parser(
        "caches",
        help="list the decoded-image caches with their sizes, or remove them",
        description=(
            "List the decoded-image caches in FOLDER: what each holds, its size on disk, when "
            "it was last built or opened, and whether it is complete. --remove and --prune "
            "remove caches, never a folder that holds anything but a cache's files, nor a cache "
            "that a build or a run holds."
        ),
    )
    listed.add_argument(
        "folder", metavar="FOLDER", nargs="?", type=PATH,
        help="where the caches are (default: the one --cache auto uses, $SEF_CACHE/decoded)",
    )  # fmt: skip
    action = listed.add_mutually_exclusive_group()
    action.add_argument("--json", action="store_true", help="print the list as JSON")
    action.add_argument(
        "--remove", metavar="CACHE", type=PLACE, action="append",
        help="remove this cache: its folder, or its name in FOLDER (repeat for more)",
    )  # fmt: skip
    action.add_argument(
        "--prune", metavar="DAYS", type=NON_NEGATIVE,
        help="remove the caches in FOLDER neither built nor opened for DAYS days",
    )  # fmt: skip
    listed.set_defaults(func=run_caches)


def _class_summary(classes: list[str], everything: bool) -> str:
    classes = [printable(name) for name in classes]
    if everything or len(classes) <= SHOWN_CLASSES:
        return "\n".join(f"  {i:4d}  {name}" for i, name in enumerate(classes))
    head = [f"  {i:4d}  {name}" for i, name in enumerate(classes[: SHOWN_CLASSES - 1])]
    return "\n".join(head + [f"  ... {len(classes) - len(head)} more (--all-classes)"])


def _reader(args: argparse.Namespace, seed: int = 0) -> Callable[[str], datasets.ImageList]:
    """What reads a split of NAME at ROOT with the -o options."""
    options = dict(args.option)
    if "seed" in options:  # load's own argument: passed beside -o it was a TypeError
        hint = "pass --seed instead" if args.data_command == "check" else "leave it out"
        raise ConfigError(f"-o seed={options['seed']}: the seed is not a reader option; {hint}")
    if args.name in datasets.GENERATED:
        options.setdefault("progress", args.progress)
    elif args.root is None:
        raise ConfigError(
            f"{args.name} needs ROOT, the dataset folder: sef data "
            f"{args.data_command} {args.name} ROOT"
        )
    return lambda split: datasets.load(args.name, args.root, split, seed=seed, **options)


def run_check(args: argparse.Namespace) -> int:
    from sef.datasets.checking import REFRESH, bad_images_said, new_run_fixes
    from sef.datasets.download import refetch_hint
    from sef.datasets.splits import NoSuchSplit

    read = _reader(args, args.seed)
    found, left = _unfinished_download(args)
    splits, undeclared = {}, {}
    for split in datasets.SPLITS:
        try:
            splits[split] = read(split)
        except NoSuchSplit as error:  # own data with train/ and val/ but no test/
            undeclared[split] = error
        except DataError as error:
            if not left or str(found) in str(error):  # the reader named it: not unpacked
                raise
            raise DataError(f"{error}; {left}") from None
    if not splits:
        raise next(iter(undeclared.values()))
    _print_splits(args, splits)
    refused = _training_refusal(splits, args.root or args.name, args.name)
    unique = {path: label for d in splits.values() for path, label in d.samples}
    bad = datasets.find_bad_images(
        list(unique.items()), workers=args.workers, progress=args.progress, record=REFRESH
    )
    if bad:
        hint = next(iter(splits.values())).missing_hint or refetch_hint(args.name, args.root)
        print(bad_images_said(bad, len(unique), new_run_fixes(), hint), file=sys.stderr)
        if left:
            print(left, file=sys.stderr)
        if refused:
            print(refused, file=sys.stderr)
        return 1
    print("the image opens" if len(unique) == 1 else f"all {len(unique):,} images open")
    if refused:
        print(refused, file=sys.stderr)
        return 1
    return 0


def _print_splits(args: argparse.Namespace, splits: dict[str, datasets.ImageList]) -> None:
    """The classes of NAME at ROOT, and each split's images and classes (a split the data does
    not declare, as "none")."""
    classes = next(iter(splits.values())).classes
    where = args.root or f"the {args.name} cache"
    print(f"{args.name} at {where}: {counted(len(classes), 'class', 'classes')}")
    for split in datasets.SPLITS:
        if split not in splits:
            print(f"  {split:<9}{'none':>8} (the data declares no {split} images)")
            continue
        used = len({label for _, label in splits[split].samples})
        images = counted(len(splits[split]), "image")
        print(f"  {split:<9}{images:>15}  {counted(used, 'class', 'classes'):>13}")
    print("classes:")
    print(_class_summary(classes, args.all_classes))


def _training_refusal(splits: dict[str, datasets.ImageList], source: str, name: str) -> str:
    """What training on the trainval split of ``splits`` (of dataset ``name``) would stop with
    (fewer than two classes, a class without images, a test split without images to evaluate
    on), as a line, or "" (also where there is no trainval split)."""
    from sef.datasets.checking import check_classes

    if "trainval" not in splits:
        return ""
    try:
        check_classes(splits["trainval"], "trainval", source)
        if "test" in splits and not len(splits["test"]):  # where training evaluates
            raise datasets.nothing_to_evaluate("test", source, name)
    except DataError as error:
        return f"training stops on this data: {error}"
    return ""


def _unfinished_download(args: argparse.Namespace) -> tuple[Path | None, str]:
    """The file a download of NAME that an interrupt left in ROOT, and what to do about it;
    (None, "") where there is none."""
    from sef.datasets.download import unfinished

    found = unfinished(args.name, args.root) if args.root else None
    if found is None:
        return None, ""
    return found, (
        f"{found} is left by a download that did not finish: run sef data download "
        f"{args.name} {args.root} again"
    )


def run_download(args: argparse.Namespace) -> int:
    from sef.datasets.download import download, unpacked_into, unpacked_otherwise

    if unpacked_otherwise(args.name, args.root):
        print(
            f"{args.name} is already in {args.root} (not unpacked by a download), so "
            f"nothing was downloaded or overwritten (to download it again, move its files out "
            f"of {args.root}); next: sef data check {args.name} {args.root}"
        )
        return 0
    there = unpacked_into(args.name, args.root)
    root = download(
        args.name,
        args.root,
        mirror=args.mirror,
        keep_archives=args.keep_archives,
        progress=args.progress,
    )
    again = f" (to fetch it again, delete {some([str(top) for top in there])})"
    ready = (
        f"is already in {root}, unpacked by an earlier download{again}"
        if there
        else f"is ready in {root}"
    )
    print(f"{args.name} {ready}; next: sef data check {args.name} {root}")
    return 0


def run_cache(args: argparse.Namespace) -> int:
    import shlex

    from sef.config import dataset_preset, load_preset
    from sef.config.values import value_word
    from sef.datasets import cache

    preset = load_preset(dataset_preset(args.name)).data
    recipe, size = args.recipe or preset.recipe, args.image_size or preset.image_size
    splits = cache.readable_splits(_reader(args))
    options = dict(args.option)
    folder = cache.folder_for(args.out or "auto", args.name, args.root, options, recipe, size)
    workers = 8 if args.workers is None else args.workers  # at most the CPUs: cache.ensure
    opened, built = cache.ensure(
        folder, splits, list, recipe, size, workers=workers, progress=args.progress,
        data=cache.origin(args.name, args.root, options),
    )  # fmt: skip
    side = opened.side
    if built is None:
        print(f"{folder} is up to date: {opened.count} images of {side} x {side} px")
    else:
        print(f"cached {built.summary()} ({recipe}, {side} x {side} px uint8)")
    # what a run needs to read this cache: the settings that name it or make it stale
    words = ["--cache", "auto" if args.out is None else str(folder)]
    words += ["--image-size", str(size)] if size != preset.image_size else []
    words += ["--set", f"data.recipe={recipe}"] if recipe != preset.recipe else []
    for key, value in options.items():
        words += ["--set", f"data.options.{key}={value_word(value)}"]
    print(f"train with {shlex.join(words)}")
    return 0


def run_caches(args: argparse.Namespace) -> int:
    from sef.datasets import caches

    root = (args.folder or caches.default_root()).expanduser()
    if args.folder and not args.remove and not root.is_dir():  # a typo read as "no caches"
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise DataError(
            f"{root} {what}; give the folder that holds the image caches (default: "
            f"{caches.default_root()})"
        )
    records = None if args.folder else caches.verified_records()  # beside the default caches
    if args.remove:
        return _remove([_named(text, root) for text in args.remove])
    if args.prune is not None:
        folders = [found.folder for found in caches.unused(root, args.prune)]
        if not folders:
            print(f"no cache in {root} has gone unused for {counted(args.prune, 'day')}")
        if records is not None:
            _prune_records(args.prune)
        return _remove(folders)
    _list(caches.caches_in(root), root, args.json, records)
    return 0


def _prune_records(days: float) -> None:
    """Remove the records of verified images unused for ``days`` days, saying so if any went."""
    from sef.datasets import caches
    from sef.space import human

    gone = caches.prune_verified(days)
    if gone.files:
        print(f"removed {counted(len(gone.files), 'record')} of verified images from "
              f"{gone.folder}: {human(gone.bytes)} freed")  # fmt: skip


def _named(text: str, root: Path) -> Path:
    """The folder that ``--remove TEXT`` names: a bare name as listed is the entry of ``root``
    (else one here), anything else (``./cub``, ``~/c/cub``) the path it spells."""
    path = Path(text).expanduser()
    if Path(text).name != text or text == os.pardir or text.startswith("~"):
        return path
    return root / text if os.path.lexists(root / text) or not os.path.lexists(path) else path


def _list(found: list, root, as_json: bool, records=None) -> None:
    """Print the entries ``found`` in ``root`` (CacheFolder) as a table and a total, or JSON;
    then the ``records`` of verified images (caches.Records), where given and any."""
    from sef.space import human

    total = sum(entry.bytes for entry in found if entry.is_cache)
    if as_json:
        entries = [entry.record() for entry in found]
        verified = {"verified": records.record()} if records else {}
        print(json_text({"folder": str(root), "bytes": total, "caches": entries, **verified}))
        return
    if not found:
        print(f"no image caches in {root}")
    else:
        print(f"image caches in {root}:")
        print(table([CACHE_COLUMNS, *map(_cache_row, found)], "<<<>>><<<"))
        for entry in found:
            if entry.problem:
                print(f"{entry.folder.name}: {entry.problem}")
        junk = sum(not entry.is_cache for entry in found)
        others = f"; {counted(junk, 'other entry', 'other entries')}" if junk else ""
        print(f"{counted(len(found) - junk, 'cache')}, {human(total)}{others}")
    if records and records.files:
        print(f"{counted(len(records.files), 'record')} of verified images in {records.folder}: "
              f"{human(records.bytes)}")  # fmt: skip


CACHE_COLUMNS = ["folder", "dataset", "recipe", "stored", "images", "on disk", "last used",
                 "state", "root"]  # fmt: skip


def _cache_row(entry) -> list[str]:
    """The cells of a CacheFolder in the table of `sef data caches`."""
    import time

    from sef.space import human

    used = entry.last_used
    return [
        entry.folder.name,
        entry.dataset or "-",
        f"{entry.recipe} {entry.image_size}" if entry.recipe else "-",
        f"{entry.side} px" if entry.side else "-",
        "-" if entry.images is None else f"{entry.images:,}",
        human(entry.bytes) if entry.is_cache else "-",
        "-" if used is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(used)),
        entry.state + (f", in use by {entry.in_use}" if entry.in_use else ""),
        entry.root or "-",
    ]


def _remove(folders: list) -> int:
    """Remove each cache of ``folders``, saying what each was and the space freed; then one
    DataError for those that are not caches or are held."""
    from sef.datasets import caches
    from sef.space import human

    freed, refused = 0, []
    for folder in folders:
        try:
            gone = caches.remove(folder)
        except DataError as error:
            refused.append(str(error))
            continue
        what = gone.state if gone.recipe is None else f"{gone.recipe} {gone.image_size}"
        print(f"removed {folder} ({gone.dataset or 'dataset not recorded'}, {what}): "
              f"{human(gone.bytes)} freed")  # fmt: skip
        freed += gone.bytes
    if len(folders) - len(refused) > 1:
        print(f"{human(freed)} freed in all")
    if refused:
        raise DataError("; ".join(refused))
    return 0
