"""`sef reproduce`: the paper's Table II or III from one command, beside the paper's numbers."""

from __future__ import annotations

import argparse
import json

from sef.choices import CACHE_MODES
from sef.cli.options import PLACE, add_progress_option, add_set_option


def register(subparsers: argparse._SubParsersAction) -> None:
    from sef.reproduce.paper import tables

    rows = "; ".join(
        f"{key}: " + ", ".join(str(row.ours) for row in table.ours)
        for key, table in tables().items()
    )
    parser = subparsers.add_parser(
        "reproduce",
        help="train the paper's Table II or III rows and lay them beside the paper's",
        description=(
            "Train our rows of the paper's Table II (ResNet-50, MaxEnt-CNN and SEF on ResNet-50) "
            "or Table III (ResNet-18 and the ablations) with the paper's recipe on every dataset "
            "given, and write DIR/<table>.md and DIR/<table>.csv: our accuracy beside the "
            "paper's, with the Score. Each run trains into DIR/<preset>; a finished run is "
            "reused and a half-finished one resumed, so the same command continues a stopped "
            "reproduction. Under torchrun each run uses all processes."
        ),
    )
    parser.add_argument("table", choices=sorted(tables()), help="which of the paper's tables")
    parser.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="NAME=ROOT",
        help="a dataset (cub, cars, dogs, aircraft) and its folder as unpacked (repeatable)",
    )
    parser.add_argument(
        "--out", type=PLACE, default="runs/reproduce", help="DIR (default runs/reproduce)"
    )
    parser.add_argument(
        "--weights", type=_weights, help="backbone weights: IMAGENET1K_V1 (default), a file, none"
    )
    parser.add_argument(
        "--cache",
        choices=CACHE_MODES,
        help="decoded-image caches: auto builds one per dataset and reads it (data.cache)",
    )
    add_set_option(
        parser, "override a config value in every run, e.g. --set run.amp=bf16 (repeatable)"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        action="extend",  # --only a --only b: both rows, not b alone
        metavar="ROW",
        help=f"train only these rows ({rows})",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="list the runs and the GPU hours; train nothing"
    )
    parser.add_argument(
        "--images-per-second",
        type=float,
        help="your GPU's training rate for the estimates (default: measured on an H200)",
    )
    add_progress_option(parser)
    parser.set_defaults(func=run)


def _weights(text: str) -> str:
    """An argparse ``type``: --weights is never empty (an unset shell variable trained every run
    from scratch without a word)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty; give IMAGENET1K_V1, a weights file or none")
    return text


def _overrides(args: argparse.Namespace) -> list[str]:
    """--weights and --cache as the overrides they stand for, before the --set ones (which
    win). The weights are quoted: a file named ~ or 123 is that file, not YAML's null or a
    number."""
    flags = [] if args.cache is None else [f"data.cache={args.cache}"]
    if args.weights is not None:
        none = args.weights.lower() in ("none", "null")
        flags.insert(0, f"model.weights={'null' if none else json.dumps(args.weights)}")
    return [*flags, *args.overrides]


def run(args: argparse.Namespace) -> int:
    from sef.reproduce.plan import create_plan, parse_data

    plan = create_plan(
        args.table,
        parse_data(args.data),
        out=args.out,
        overrides=_overrides(args),
        only=args.only,
        dry_run=args.dry_run,
    )  # before the runner's import (torch, torchvision): a config error says so at once
    from sef.reproduce.runner import carry_out

    carry_out(
        plan, dry_run=args.dry_run, images_per_second=args.images_per_second, progress=args.progress
    )
    return 0
