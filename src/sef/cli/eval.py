"""`sef eval`: accuracy of a saved model, a CSV of its per-image predictions, optionally with
test-time augmentation (--tta) and a per-class error report (--report)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sef.choices import TTA_MODES
from sef.cli.options import (
    COUNT,
    NON_NEGATIVE,
    PATH,
    add_checkpoint_data_options,
    add_device_option,
    add_progress_option,
    file_path,
)
from sef.text import json_text


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint: top-1, class-mean and group-head accuracy",
        description=(
            "Evaluate a checkpoint written by `sef train` on a split of the dataset it was trained "
            "on, and write per-image predictions (path, label, prediction, correct) as CSV."
        ),
    )
    add_checkpoint_data_options(parser, "trainval, train, val or test (default)")
    parser.add_argument(
        "--predictions",
        type=file_path("predictions.csv"),
        help="CSV to write (default: <checkpoint>-<split>-predictions.csv beside the checkpoint)",
    )
    parser.add_argument(
        "--batch-size", type=COUNT, help="images per batch (of each process under torchrun)"
    )
    parser.add_argument("--workers", type=NON_NEGATIVE, help="data loading processes")
    add_device_option(parser)
    parser.add_argument(
        "--tta",
        choices=TTA_MODES,
        help="also predict with test-time augmentation: the mirror image, the four corners and "
        "centre, or both; reported beside the plain accuracy",
    )
    parser.add_argument(
        "--report",
        type=PATH,
        metavar="DIR",
        help="write a per-class error report to DIR: accuracy per class (worst first), the most "
        "confused pairs, a confusion-matrix figure, each group head per class",
    )
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_progress_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sef import distributed
    from sef.engine import evaluate_checkpoint, write_predictions
    from sef.report import error_report

    path = args.predictions or _default_predictions(args.checkpoint, args.split)
    # under torchrun the evaluation's process group: a process that went on to join it while
    # rank 0 refused an output waited there, deaf to torchrun's SIGTERM, until killed 30 s later
    context = distributed.setup(args.device)
    try:
        distributed.on_main(lambda: _check_outputs(args, path), context)  # rank 0 writes them
        result, dataset = evaluate_checkpoint(
            args.checkpoint,
            data_root=args.data_root,
            split=args.split,
            batch_size=args.batch_size,
            workers=args.workers,
            device=args.device,
            progress=args.progress,
            tta=args.tta,
        )
    finally:
        distributed.teardown(context)
    if not context.is_main:
        return 0
    summary = {"checkpoint": str(args.checkpoint), "split": args.split, **result.summary()}
    if not args.json:  # the accuracy first: a file that cannot be written must not hide it
        _print_summary(args, summary)
    try:
        write_predictions(path, result, dataset)
        summary["predictions"] = str(path)
        report = None
        if args.report:
            report = error_report(result, dataset.classes)
            summary["report"] = {k: str(v) for k, v in report.write(args.report).items()}
    finally:  # JSON: printed whole, with the files that were written
        if args.json:
            print(json_text(summary))
    if not args.json:
        print(f"  predictions        {path}")
        if report is not None:
            _print_report(report, args.report)
    return 0


def _check_outputs(args: argparse.Namespace, path: Path) -> None:
    """OutputError now, before the evaluation, for a report folder or a predictions file that
    could not be written after it, and SEFError for a package the report needs."""
    from sef.errors import OutputError
    from sef.outputs import check_writable, require_matplotlib
    from sef.report import check_replaceable

    if args.report:
        check_writable(args.report, folder=True)
        check_replaceable(args.report)
        require_matplotlib("scipy")  # its figure, and its order of the classes
    try:
        check_writable(path)
        _check_replaceable(path)
        _check_not_anothers(path, args.checkpoint, args.split)
    except OutputError as error:
        if args.predictions:
            raise
        raise OutputError(f"{error.problem}; pass --predictions FILE", error.problem) from None


def _check_replaceable(path: Path) -> None:
    """OutputError for a file ``path`` that holds something other than predictions: a typo in
    --predictions must not replace the data's labels CSV or any other file."""
    from sef.engine.evaluation import holds_other_than_predictions
    from sef.errors import OutputError

    if holds_other_than_predictions(path):
        problem = f"cannot write {path}: it holds something other than predictions sef wrote"
        raise OutputError(f"{problem}, which this would replace; choose another file", problem)


def _check_not_anothers(path: Path, checkpoint: Path, split: str) -> None:
    """OutputError for <name>-<split>-predictions.csv beside <name>.pt (a run's
    best-test-predictions.csv), unless it is this checkpoint's on this split: its name would lie."""
    from sef.datasets.splits import SPLITS
    from sef.errors import OutputError

    for other in SPLITS:
        stem = path.name.removesuffix(f"-{other}-predictions.csv")
        if stem == path.name or not path.with_name(f"{stem}.pt").is_file():
            continue
        if path.resolve() != _predictions_beside(checkpoint, split).resolve():
            problem = f"cannot write {path}: it names the predictions of {stem}.pt on {other}"
            raise OutputError(f"{problem}; choose another file", problem)


def _predictions_beside(checkpoint: Path, split: str) -> Path:
    """<checkpoint>-<split>-predictions.csv beside the checkpoint."""
    return checkpoint.with_name(f"{checkpoint.stem}-{split}-predictions.csv")


def _default_predictions(checkpoint: Path, split: str) -> Path:
    """<checkpoint>-<split>-predictions.csv beside the checkpoint, unless a live run holds that
    folder: it rewrites best.pt's predictions there."""
    from sef.engine.lock import FolderBusy, is_held

    if is_held(checkpoint.parent):
        raise FolderBusy(
            f"{checkpoint.parent} is in use by a run that rewrites its predictions there; pass "
            f"--predictions FILE to write them elsewhere",
            checkpoint.parent,
        )
    return _predictions_beside(checkpoint, split)


def _print_summary(args: argparse.Namespace, summary: dict) -> None:
    """The accuracies, as `sef eval` prints them."""
    from sef.engine.evaluation import group_heads_said
    from sef.text import counted

    groups = group_heads_said(summary["group_top1"], summary["group_heads_trained"])
    print(f"{args.checkpoint} on {args.split} ({counted(summary['images'], 'image')})")
    tta = {"top1": "", "class_mean": ""}
    if args.tta:
        tta = {k: f"   with TTA {args.tta}: {summary[f'tta_{k}']:.4f}" for k in tta}
    print(f"  top-1              {summary['top1']:.4f}{tta['top1']}")
    print(f"  class-mean         {summary['class_mean']:.4f}{tta['class_mean']}")
    print(f"  group heads top-1  {groups}")
    if "corr_within" in summary:
        print(
            f"  group correlation  within {summary['corr_within']:.3f}, between "
            f"{summary['corr_between']:.3f} (mean channel cosine)"
        )
    sys.stdout.flush()


def _print_report(report, folder: Path, lines: int = 5) -> None:
    """The worst classes and the most confused pairs, then where the full report is."""
    from sef.text import counted, shown

    print(f"worst classes (of {len(report.per_class)}):")
    for row in report.per_class[:lines]:
        print(f"  {row['accuracy']:.3f}  {shown(row['name'])} ({counted(row['support'], 'image')})")
    print("most confused (true -> predicted: images):")
    for pair in report.pairs[:lines]:
        print(f"  {shown(pair['true_name'])} -> {shown(pair['predicted_name'])}: {pair['count']}")
    if not report.pairs:
        print("  none: every image is right")
    print(f"report             {folder}")
