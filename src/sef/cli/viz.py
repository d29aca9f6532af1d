"""`sef viz corr|cam|curves|parts`: the paper's figures, and part localisation on the generated
sets."""

from __future__ import annotations

import argparse
from pathlib import Path

from sef.cli.options import (
    COUNT,
    PATH,
    SEED,
    add_checkpoint_data_options,
    add_device_option,
    add_progress_option,
    file_path,
)
from sef.datasets import GENERATED
from sef.text import json_text

CAM_IMAGES = 6  # random test images `sef viz cam` shows when it is given no PATH


def _checkpoint_options(
    parser: argparse.ArgumentParser, images: int, what: str, explicit: bool = False
) -> None:
    """--checkpoint and the random image choice; with ``explicit``, --images defaults to None
    so that the command can tell whether it was given."""
    add_checkpoint_data_options(parser, "split to draw images from (default test)")
    parser.add_argument(
        "--images",
        type=COUNT,
        default=None if explicit else images,
        metavar="N",
        help=f"{what} (default {images})",
    )
    parser.add_argument("--seed", type=SEED, default=0, help="seed of the random image choice")
    add_device_option(parser)


def _out_option(parser: argparse.ArgumentParser, name: str, beside: str) -> None:
    parser.add_argument(
        "--out",
        type=file_path(name),
        help=f"figure to write, in the format its name ends with: .png, .pdf, .svg, ... "
        f"(default: {name} beside the {beside})",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "viz",
        help="figures of what SEF learned: correlations, group maps, curves, parts",
        description="Draw what a trained SEF learned, as in the paper's figures.",
    )
    figures = parser.add_subparsers(dest="figure", metavar="FIGURE", required=True)

    corr = figures.add_parser(
        "corr",
        help="channel-correlation matrix with group boundaries (Fig. 2)",
        description=(
            "The last conv layer's channel-correlation matrix (mean cosine between channels over "
            "N random test images) with group boundaries, and the G x G group averages."
        ),
    )
    _checkpoint_options(corr, 64, "images to average over")
    corr.add_argument("--batch-size", type=COUNT, default=32, help="images per batch")
    _out_option(corr, "corr.png", "checkpoint")
    add_progress_option(corr)
    corr.set_defaults(func=run_corr)

    cam = figures.add_parser(
        "cam",
        help="each group's activation map over the images (Fig. 4)",
        description=(
            "For each image (a column), the image and then each group's activation map (the mean "
            "of its channels), upsampled and overlaid. Without PATHs, --images N random test "
            "images."
        ),
    )
    cam.add_argument("paths", nargs="*", metavar="PATH", help="image files (default: random)")
    _checkpoint_options(
        cam, CAM_IMAGES, "random test images to show when no PATH is given", explicit=True
    )
    _out_option(cam, "cam.png", "checkpoint")
    add_progress_option(cam)
    cam.set_defaults(func=run_cam)

    curves = figures.add_parser(
        "curves",
        help="loss terms, accuracy and each group head's accuracy per epoch (Fig. 3)",
        description="Training curves of a run folder written by `sef train` (its metrics.jsonl).",
    )
    curves.add_argument("run_dir", type=PATH, metavar="RUN_DIR", help="a `sef train` out folder")
    _out_option(curves, "curves.png", "metrics")
    curves.set_defaults(func=run_curves)

    generated = ", ".join(GENERATED)
    parts = figures.add_parser(
        "parts",
        help=f"which part each group's activation peak lands on ({generated})",
        description=(
            f"On data with known part centres (the generated sets: {generated}): for each group, "
            "the share of images whose activation peak is nearest each part, and how often "
            "different groups peak on different parts (distinctness), beside the same numbers for "
            "groups that always peak at their usual spot (static) and uniform chance (1 - 1/parts)."
        ),
    )
    _checkpoint_options(parts, 256, "images to measure")
    parts.add_argument("--batch-size", type=COUNT, default=32, help="images per batch")
    _out_option(parts, "parts.png", "checkpoint")
    parts.add_argument("--json", action="store_true", help="print the report as JSON")
    add_progress_option(parts)
    parts.set_defaults(func=run_parts)


def _load(args: argparse.Namespace):
    """The checkpoint's model, once matplotlib, which draws after the images are run, is there."""
    from sef.distributed import resolve_device
    from sef.outputs import require_matplotlib
    from sef.trained import load_trained_model

    require_matplotlib()
    return load_trained_model(args.checkpoint, device=resolve_device(args.device))


def _out(args: argparse.Namespace, name: str) -> Path:
    return _given_or(args, args.checkpoint.with_name(name))


def _given_or(args: argparse.Namespace, default: Path) -> Path:
    """The figure's file: --out, else ``default``, which is checked now and, where it cannot be
    written (a read-only model folder), said with the option to pass, as `sef eval` does for
    its predictions: the user chose no place for "choose another place" to mean anything."""
    from sef.errors import OutputError
    from sef.outputs import check_writable

    if args.out:
        return args.out
    try:
        check_writable(default)
    except OutputError as error:
        raise OutputError(f"{error.problem}; pass --out FILE", error.problem) from None
    return default


def _sampling(args: argparse.Namespace, batched: bool = False) -> dict:
    """Which test images a figure uses, whether it shows progress (and, when ``batched``, the
    batch size)."""
    chosen = {"root": args.data_root, "split": args.split, "images": args.images, "seed": args.seed}
    chosen["progress"] = args.progress
    if batched:
        chosen["batch_size"] = args.batch_size
    return chosen


def run_corr(args: argparse.Namespace) -> int:
    from sef.text import counted, table
    from sef.viz import correlation_figure

    path, blocks, count = correlation_figure(
        _load(args), _out(args, "corr.png"), **_sampling(args, batched=True)
    )
    names = [f"group {g + 1}" for g in range(blocks.shape[0])]
    rows = [
        [name, *(f"{v:.3f}" for v in row)] for name, row in zip(names, blocks.tolist(), strict=True)
    ]
    used = counted(count, f"{args.split} image")
    if count < args.images:  # --images 5000 of 800: the table is of 800
        used = f"all {used}, of {args.images:,} asked"
    print(f"mean channel correlation between groups over {used} (diagonal: within a group)")
    print(table([["", *names], *rows], ">" * (len(names) + 1)))
    print(f"wrote {path}")
    return 0


def run_cam(args: argparse.Namespace) -> int:
    from sef.errors import ConfigError
    from sef.viz import activation_figure, cam_most

    if args.paths and args.images is not None:
        raise ConfigError(
            "--images N shows N random test images; with image PATHs given it has no meaning: "
            "give one or the other"
        )
    trained = _load(args)
    if args.images is None:  # as many as a figure of its groups holds, up to the default
        args.images = min(CAM_IMAGES, cam_most(len(trained.model.group_sizes)))

    path = activation_figure(trained, _out(args, "cam.png"), args.paths, **_sampling(args))
    print(f"wrote {path}")
    return 0


def run_curves(args: argparse.Namespace) -> int:
    from sef.outputs import require_matplotlib
    from sef.viz import curves_figure

    require_matplotlib()
    folder = args.run_dir if args.run_dir.is_dir() else args.run_dir.parent
    path = curves_figure(args.run_dir, _given_or(args, folder / "curves.png"))
    print(f"wrote {path}")
    return 0


def run_parts(args: argparse.Namespace) -> int:
    from sef.text import table
    from sef.viz import parts_figure

    path, report = parts_figure(
        _load(args), _out(args, "parts.png"), **_sampling(args, batched=True)
    )
    if args.json:
        print(json_text({**report.to_dict(), "figure": str(path)}))
        return 0
    header = ["", *report.part_names, "dominant", "static peak"]
    rows = [
        [f"group {g + 1}", *(f"{100 * v:.0f}%" for v in row), dominant, f"{100 * max(base):.0f}%"]
        for g, (row, dominant, base) in enumerate(
            zip(report.fractions, report.dominant_parts, report.static_fractions, strict=True)
        )
    ]
    print(f"nearest part to each group's activation peak, over {report.images} images")
    print("(static peak: the dominant share if the group always peaked at its usual spot)")
    print(table([header, *rows], ">" * len(header)))
    if report.distinctness is None:
        print("distinctness needs two groups or more; this model has one (a plain network)")
    else:
        print(
            f"distinctness {report.distinctness:.3f} (how often two groups peak on different "
            f"parts; static peaks {report.static_distinctness:.3f}, "
            f"uniform chance {report.chance_distinctness:.3f})"
        )
    print(f"wrote {path}")
    return 0
