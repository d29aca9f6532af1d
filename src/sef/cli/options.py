"""Options that several commands share, so each is spelled once."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sef.choices import DEVICE_WORDS, MAX_SEED


def at_least(low: int, most: int | None = None):
    """An argparse ``type``: an integer >= ``low`` (and <= ``most``), else a usage error naming
    the option."""

    def integer(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (most is not None and value > most):
            bound = f">= {low}" if most is None else f"from {low} to {most}"
            raise argparse.ArgumentTypeError(f"must be an integer {bound}, got {value}")
        return value

    return integer


COUNT, NON_NEGATIVE, IMAGE_SIDE = at_least(1), at_least(0), at_least(16)
CLASSES = at_least(2)  # a classifier tells two classes apart at least, as training requires
SEED = at_least(0, MAX_SEED)  # as run.seed: NumPy and torch refused others with their own words


def _place(text: str) -> str:
    """An argparse ``type``: a file or folder name, never empty (``--out ""`` meant the default,
    or the current folder, without a word) nor ``-`` (``--predictions -`` wrote a file named -,
    where a user of Unix tools expects stdout)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; give a file or folder name")
    if text == "-":
        raise argparse.ArgumentTypeError(
            "- (stdin or stdout) is not read or written here; give a file or folder name "
            "(one named - is ./-)"
        )
    return text


def _path(text: str) -> Path:
    return Path(_place(text))


PLACE, PATH = _place, _path  # as text, as a Path


def file_path(example: str):
    """An argparse ``type``: a file to write, as a Path; a name that ends with a separator
    (``--out figs/``) is refused, naming ``example`` in it: ``Path`` drops the separator, and a
    missing figs/ became a file named figs."""

    def path(text: str) -> Path:
        if text.endswith(tuple(filter(None, (os.sep, os.altsep)))):
            raise argparse.ArgumentTypeError(
                f"{text} ends with {text[-1]}, so it names a folder; give a file name, e.g. "
                f"{text}{example}"
            )
        return _path(text)

    return path


def add_set_option(parser: argparse.ArgumentParser, help: str) -> None:
    """``--set KEY=VALUE`` (repeatable) into ``args.overrides``."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help
    )


def add_checkpoint_option(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """``--checkpoint``: the checkpoint a command reads (``required`` by all but `sef info`)."""
    parser.add_argument("--checkpoint", required=required, type=PATH, help="a last.pt or best.pt")


def add_data_root_option(
    parser: argparse.ArgumentParser, help: str = "dataset folder (default: the one it trained on)"
) -> None:
    """``--data-root``: where the dataset is, instead of where the checkpoint's run read it."""
    parser.add_argument("--data-root", type=PLACE, help=help)


def add_checkpoint_data_options(parser: argparse.ArgumentParser, split_help: str) -> None:
    """``--checkpoint``, ``--data-root`` and ``--split``: a saved model and which of its data."""
    add_checkpoint_option(parser)
    add_data_root_option(parser)
    parser.add_argument("--split", default="test", help=split_help)


def add_device_option(parser: argparse.ArgumentParser, config_key: str | None = None) -> None:
    """``--device``, resolved by ``sef.distributed.resolve_device``: ``auto`` by default, or, as
    the flag of ``config_key``, unset (the config's value stays)."""
    if config_key is None:
        parser.add_argument("--device", default="auto", help=DEVICE_WORDS)
    else:
        parser.add_argument("--device", help=f"{DEVICE_WORDS} ({config_key})")


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    """``--progress`` / ``--no-progress``: progress bars always or never; ``args.progress`` goes to
    the library as it is, None without either: bars only where they redraw in place
    (:func:`sef.text.bars_drawn`), and a set generated on first use says where it was written
    even in a log file, where ``--no-progress`` (False) leaves that line out too."""
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="progress bars (default: only when stderr is a terminal)",
    )
