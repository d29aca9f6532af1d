"""`sef data check|download`: look at a dataset before training on it, or fetch it."""

from __future__ import annotations

import argparse
import sys

import yaml

from sef import datasets
from sef.cli.options import add_no_progress_option
from sef.errors import ConfigError

SHOWN_CLASSES = 8


def _option(text: str) -> tuple[str, object]:
    """KEY=VALUE with a YAML value (true, 3, 0.5, [a, b], text)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), yaml.safe_load(value)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="check or download a dataset")
    commands = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    check = commands.add_parser(
        "check",
        help="count images per split, list classes, and verify every image opens",
        description=(
            "Read every split of NAME at ROOT, print its size and classes, then fully decode "
            "every image. Exits 1 and names each bad file if any image is missing or unreadable."
        ),
    )
    check.add_argument(
        "name", metavar="NAME", choices=datasets.NAMES, help=", ".join(datasets.NAMES)
    )
    check.add_argument(
        "root", metavar="ROOT", nargs="?", help="the dataset folder as unpacked (demo: optional)"
    )
    check.add_argument(
        "-o",
        "--option",
        type=_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a reader option, e.g. level=family (Aircraft) or bbox_crop=true",
    )
    check.add_argument("--seed", type=int, default=0, help="seed of the val hold-out (default 0)")
    check.add_argument("--workers", type=int, default=None, help="decoding threads")
    check.add_argument("--all-classes", action="store_true", help="print every class name")
    add_no_progress_option(check)
    check.set_defaults(func=run_check)

    fetch = commands.add_parser(
        "download",
        help="download, verify and unpack an official dataset archive",
        description=(
            f"Download the official archives of NAME ({', '.join(datasets.DOWNLOADABLE)}) into "
            "ROOT, verify their MD5 checksums and unpack them so that `sef data check NAME ROOT` "
            "reads them."
        ),
    )
    fetch.add_argument(
        "name", metavar="NAME", choices=datasets.NAMES, help=", ".join(datasets.DOWNLOADABLE)
    )
    fetch.add_argument("root", metavar="ROOT", help="folder to unpack into (created if needed)")
    fetch.add_argument("--mirror", help="fetch <MIRROR>/<archive name> instead of the official URL")
    fetch.add_argument("--keep-archives", action="store_true", help="keep the downloaded files")
    add_no_progress_option(fetch)
    fetch.set_defaults(func=run_download)


def _class_summary(classes: list[str], everything: bool) -> str:
    if everything or len(classes) <= SHOWN_CLASSES:
        return "\n".join(f"  {i:4d}  {name}" for i, name in enumerate(classes))
    head = [f"  {i:4d}  {name}" for i, name in enumerate(classes[: SHOWN_CLASSES - 1])]
    return "\n".join(head + [f"  ... {len(classes) - len(head)} more (--all-classes)"])


def run_check(args: argparse.Namespace) -> int:
    from sef.datasets.checking import describe_bad_images

    options = dict(args.option)
    if args.name in datasets.GENERATED:
        options.setdefault("progress", not args.no_progress)
    elif args.root is None:
        raise ConfigError(f"sef data check {args.name} needs ROOT, the dataset folder")
    splits = {
        split: datasets.load(args.name, args.root, split, seed=args.seed, **options)
        for split in datasets.SPLITS
    }
    classes = splits["trainval"].classes
    print(f"{args.name} at {args.root or f'the {args.name} cache'}: {len(classes)} classes")
    for split, dataset in splits.items():
        used = len({label for _, label in dataset.samples})
        print(f"  {split:<9}{len(dataset):>8} images  {used:>5} classes")
    print("classes:")
    print(_class_summary(classes, args.all_classes))
    unique = {
        path: label for d in (splits["trainval"], splits["test"]) for path, label in d.samples
    }
    bad = datasets.find_bad_images(
        list(unique.items()), workers=args.workers, progress=not args.no_progress
    )
    if bad:
        print(f"{len(bad)} of {len(unique)} images cannot be used:", file=sys.stderr)
        print(describe_bad_images(bad), file=sys.stderr)
        return 1
    print(f"all {len(unique)} images open")
    return 0


def run_download(args: argparse.Namespace) -> int:
    from sef.datasets.download import download

    root = download(
        args.name,
        args.root,
        mirror=args.mirror,
        keep_archives=args.keep_archives,
        progress=not args.no_progress,
    )
    print(f"{args.name} is ready in {root}; next: sef data check {args.name} {root}")
    return 0
