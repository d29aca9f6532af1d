"""`sef info`: what SEF adds to a backbone, in parameters."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from sef.choices import POOLS
from sef.cli.options import COUNT, IMAGE_SIDE

if TYPE_CHECKING:
    from sef.model import SEF


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="parameters of a backbone and what SEF adds for training",
        description="Print the backbone's parameters and the training-only parameters SEF adds.",
    )
    parser.add_argument("--backbone", default="resnet50", help="backbone name (default resnet50)")
    parser.add_argument(
        "--classes", type=COUNT, default=200, help="number of classes (default 200)"
    )
    parser.add_argument("--groups", type=COUNT, default=4, help="channel groups G (default 4)")
    parser.add_argument(
        "--pool",
        choices=POOLS,
        help="token backbones: pool the patch tokens' mean or the class token (default: as the "
        "model's own head)",
    )
    parser.add_argument(
        "--image-size",
        type=IMAGE_SIDE,
        help="timm ViT/Swin: build for this input side (default: own)",
    )
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    parser.set_defaults(func=run)


def describe(model: SEF) -> list[tuple[str, str]]:
    """Rows (label, value) describing ``model``'s parameters, for people to read."""
    counts = model.parameter_counts()
    share = 100.0 * counts["extra"] / counts["deployed"]
    weight_share = 100.0 * counts["group_head_weights"] / counts["deployed"]
    sizes = ", ".join(str(s) for s in model.group_sizes)
    return [
        ("feature channels C", f"{model.channels}"),
        ("groups G", f"{model.groups} ({sizes} channels)"),
        ("pooled features", model.pooling),
        ("backbone", f"{counts['backbone']:,}"),
        ("global head", f"{counts['global_head']:,}"),
        ("deployed model", f"{counts['deployed']:,} (backbone + global head; what export() ships)"),
        (
            "SEF group heads",
            f"{counts['extra']:,} = {counts['group_head_weights']:,} weights "
            f"+ {counts['group_head_biases']:,} biases (training only)",
        ),
        (
            "extra for training",
            f"{share:.2f} % of the deployed model ({weight_share:.2f} % counting weights only)",
        ),
    ]


def run(args: argparse.Namespace) -> int:
    from sef.model import SEF

    model = SEF(
        args.backbone,
        num_classes=args.classes,
        groups=args.groups,
        pool=args.pool,
        image_size=args.image_size,
    )
    if args.json:
        summary = {"backbone_name": args.backbone, "classes": args.classes, "groups": model.groups}
        summary["pooling"] = model.pooling
        summary |= {"channels": model.channels, "group_sizes": model.group_sizes}
        print(json.dumps(summary | model.parameter_counts(), indent=2))
        return 0
    from sef.text import table

    print(f"SEF on {args.backbone}, {args.classes} classes")
    for line in table(describe(model)).splitlines():
        print(f"  {line}")
    return 0
