"""`sef eval`: accuracy of a saved model, and a CSV of its per-image predictions."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint: top-1, class-mean and group-head accuracy",
        description=(
            "Evaluate a checkpoint written by `sef train` on a split of the dataset it was trained "
            "on, and write per-image predictions (path, label, prediction, correct) as CSV."
        ),
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="a last.pt or best.pt")
    parser.add_argument("--data-root", help="dataset folder (default: the one it trained on)")
    parser.add_argument("--split", default="test", help="trainval, train, val or test (default)")
    parser.add_argument(
        "--predictions",
        type=Path,
        help="CSV to write (default: <checkpoint>-<split>-predictions.csv beside the checkpoint)",
    )
    parser.add_argument("--batch-size", type=int, help="images per batch")
    parser.add_argument("--workers", type=int, help="data loading processes")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sef.engine import evaluate_checkpoint, write_predictions
    from sef.outputs import check_writable

    path = args.predictions or args.checkpoint.with_name(
        f"{args.checkpoint.stem}-{args.split}-predictions.csv"
    )
    if os.environ.get("RANK", "0") == "0":
        check_writable(path)  # before the evaluation, not after it
    result, dataset = evaluate_checkpoint(
        args.checkpoint,
        data_root=args.data_root,
        split=args.split,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        progress=not args.no_progress,
    )
    if os.environ.get("RANK", "0") != "0":
        return 0
    write_predictions(path, result, dataset)
    summary = {"checkpoint": str(args.checkpoint), "split": args.split, **result.summary()}
    summary["predictions"] = str(path)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    groups = ", ".join(f"{value:.4f}" for value in summary["group_top1"])
    print(f"{args.checkpoint} on {args.split} ({summary['images']} images)")
    print(f"  top-1              {summary['top1']:.4f}")
    print(f"  class-mean         {summary['class_mean']:.4f}")
    print(f"  group heads top-1  {groups}")
    print(f"  predictions        {path}")
    return 0
