"""`sef export`: the deployable model (no group heads) as ONNX, TorchScript and safetensors."""

from __future__ import annotations

import argparse
import sys

from sef.choices import EXPORT_FORMATS
from sef.cli.options import PATH, add_checkpoint_option, add_progress_option


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint's plain network: ONNX, TorchScript, safetensors",
        description=(
            "Write the trained backbone + global classifier (the group heads are training-only "
            "and left out) to DIR as model.onnx (dynamic batch), model.torchscript.pt and "
            "model.safetensors, with labels.json and preprocessing.json (all written first, then "
            "moved into DIR together: an earlier export there is replaced whole, a failed one "
            "leaves it as it was, and a file of such a name that no earlier export wrote is "
            "never replaced); then check that every exported model gives PyTorch's logits, to "
            "within float32 rounding, which grows with the logits (docs/deployment.md)."
        ),
    )
    add_checkpoint_option(parser)
    parser.add_argument("--out", required=True, type=PATH, metavar="DIR", help="output folder")
    parser.add_argument(
        "--format",
        nargs="+",
        action="extend",  # --format onnx --format safetensors: both, not the last one alone
        choices=EXPORT_FORMATS,
        dest="formats",
        help="formats to write (default: all three)",
    )
    parser.add_argument(
        "--no-check", action="store_true", help="skip comparing the exports with PyTorch"
    )
    add_progress_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sef.errors import SEFError
    from sef.export import (
        ABSOLUTE_TOLERANCE,
        RELATIVE_TOLERANCE,
        check_export,
        export_trained,
    )
    from sef.trained import load_trained_model

    say = _stage_lines(args.progress)
    trained = load_trained_model(args.checkpoint, device="cpu")
    trained.warn_if_unfinished(args.checkpoint, "the export is")
    paths = export_trained(trained, args.out, args.formats or EXPORT_FORMATS, say=say)
    for name, path in paths.items():
        print(f"{name:<14} {path}")
    if args.no_check:
        return 0
    say("checking the export against the checkpoint ...")
    check = check_export(trained.model, paths, trained.preprocessing.image_size)
    report = ", ".join(f"{name} {value:.1e}" for name, value in check.differences.items())
    print(
        f"max |logit difference| vs PyTorch on random images: {report} (allowed: "
        f"{ABSOLUTE_TOLERANCE:g} + {RELATIVE_TOLERANCE:g} x the largest |logit| "
        f"{check.largest_logit:.3g} = {check.tolerance:.2g})"
    )
    failed = check.failed()
    if failed:
        worst, tolerance = _apart(max(failed.values()), check.tolerance)
        raise SEFError(
            f"an export of {args.checkpoint} ({', '.join(failed)}) differs from PyTorch by up "
            f"to {worst} in the logits, more than the {tolerance} float32 rounding "
            f"explains; check the backbone for export-unsafe operations (the files above are "
            f"kept to inspect, not to deploy)"
        )
    return 0


def _stage_lines(progress: bool | None):
    """What says each slow stage on stderr as it starts (a ResNet-50 at 448 px exported in a
    minute without a word, which looked like a hang), even in a log file; silent with
    --no-progress, as the other commands' stage lines are."""
    if progress is False:
        return lambda line: None
    return lambda line: print(f"sef export: {line}", file=sys.stderr, flush=True)


def _apart(worst: float, tolerance: float) -> tuple[str, str]:
    """Both numbers with as many digits as tell them apart: "up to 0.00105, more than the
    0.00104", not "up to 0.001, more than the 0.001"."""
    for digits in range(2, 10):
        texts = f"{worst:.{digits}g}", f"{tolerance:.{digits}g}"
        if texts[0] != texts[1]:
            break
    return texts
