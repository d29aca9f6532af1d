"""`sef predict`: top-k classes of image files and folders, as a table or JSON."""

from __future__ import annotations

import argparse
import os
import sys

from sef.cli.options import (
    COUNT,
    NON_NEGATIVE,
    add_checkpoint_option,
    add_device_option,
    add_progress_option,
)
from sef.errors import DataError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="top-k classes of images with a trained checkpoint",
        description=(
            "Predict the top-k classes of image files and folders (searched recursively). "
            "Unreadable files (and images over the pixel limit, SEF_MAX_PIXELS) are named on "
            "stderr and skipped; the exit code is 0 when at least one image was predicted and 2 "
            "when none could be. The probabilities are the softmax of the global head, which "
            "SEF's maximum-entropy term keeps soft on purpose: read them as a ranking, not as a "
            "confidence (the right class of a demo model at 97.1 % top-1 got a median 0.475; "
            "see docs/deployment.md)."
        ),
    )
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="image files or folders; - reads paths from stdin, one a line (find | sef predict -)",
    )
    add_checkpoint_option(parser)
    parser.add_argument("--top-k", type=COUNT, default=5, help="classes per image (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--batch-size", type=COUNT, default=32, help="images per batch")
    parser.add_argument("--workers", type=NON_NEGATIVE, default=0, help="image decoding processes")
    add_device_option(parser)
    add_progress_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from sef.distributed import resolve_device
    from sef.predict import find_images, format_rows, predict_files, table_widths
    from sef.text import json_text
    from sef.trained import load_trained_model

    trained = load_trained_model(args.checkpoint, device=resolve_device(args.device))
    trained.warn_if_unfinished(args.checkpoint, "the predictions are of")
    files, skipped = find_images(_with_stdin(args.paths))
    _say_skipped(skipped)
    widths = table_widths(files, trained.classes, min(args.top_k, len(trained.classes)))
    predictions = []
    for done, failed in predict_files(
        trained,
        files,
        top_k=args.top_k,
        batch_size=args.batch_size,
        workers=args.workers,
        progress=args.progress,
    ):
        _say_skipped(failed)
        skipped.extend(failed)
        if done and not args.json:  # each batch's rows at once, not all after the last batch
            tqdm.write(format_rows(done, widths, header=not predictions), file=sys.stdout)
            sys.stdout.flush()
        predictions.extend(done)
    if not predictions:
        raise DataError(
            f"no image could be predicted among {', '.join(map(str, args.paths))}; "
            f"pass readable image files or folders holding them"
        )
    if args.json:
        payload = {
            "checkpoint": str(args.checkpoint),
            "images": [p.to_dict() for p in predictions],
            "skipped": [{"path": path, "reason": reason} for path, reason in skipped],
        }
        print(json_text(payload))
    return 0


def _say_skipped(skipped: list[tuple[str, str]]) -> None:
    from tqdm import tqdm

    from sef.predict import skipped_said

    for line in skipped_said(skipped):  # above a progress bar, which tqdm.write draws again below
        tqdm.write(f"sef predict: {line}", file=sys.stderr)


def _with_stdin(paths: list[str]) -> list[str]:
    """``paths`` with ``-`` replaced by the paths stdin lists, one a line, as `find` prints them
    (read as bytes: a name that is not UTF-8 stays the file's); a file named - is ./-."""
    if "-" not in paths:
        return paths
    listed = [os.fsdecode(line.rstrip(b"\r\n")) for line in sys.stdin.buffer if line.strip()]
    return [path for given in paths for path in (listed if given == "-" else [given])]
