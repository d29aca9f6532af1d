"""`sef info`: what SEF adds to a backbone, in parameters; of a checkpoint's model, also who wrote
the checkpoint."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from sef.choices import POOLS
from sef.cli.options import CLASSES, COUNT, IMAGE_SIDE, add_checkpoint_option
from sef.errors import ConfigError
from sef.text import json_text

if TYPE_CHECKING:
    from sef.model import SEF
    from sef.trained import TrainedModel

# The model described without --checkpoint; a checkpoint's own model takes none of these options.
_BUILT = {"backbone": "resnet50", "classes": 200, "groups": 4, "pool": None, "image_size": None}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="parameters of a backbone and what SEF adds for training",
        description=(
            "Print the backbone's parameters and the training-only parameters SEF adds; with "
            "--checkpoint, those of its model and the versions of sef and torch that wrote it."
        ),
    )
    add_checkpoint_option(parser, required=False)  # its model instead of the options'
    parser.add_argument("--backbone", help="backbone name (default resnet50)")
    parser.add_argument("--classes", type=CLASSES, help="number of classes (default 200)")
    parser.add_argument("--groups", type=COUNT, help="channel groups G (default 4)")
    parser.add_argument(
        "--pool",
        choices=POOLS,
        help="token backbones: pool the patch tokens' mean or the class token (a distilled "
        "DeiT's: the mean of its class and distillation tokens; default: as the model's own head)",
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
    trained = _load(args) if args.checkpoint is not None else None
    model = trained.model if trained else _build(args)
    backbone = trained.config.model.backbone if trained else args.backbone
    if args.json:
        summary = _recorded(args, trained) | {"backbone_name": backbone}
        summary |= {"classes": model.num_classes, "groups": model.groups}
        summary["pooling"] = model.pooling
        summary |= {"channels": model.channels, "group_sizes": model.group_sizes}
        print(json_text(summary | model.parameter_counts()))
        return 0
    from sef.text import table

    rows = describe(model)
    if trained:
        rows = [
            ("checkpoint", str(args.checkpoint)),
            ("written by", trained.written_by),
            *_saved_at_row(trained),
            *rows,
        ]
    print(f"SEF on {backbone}, {model.num_classes} classes")
    for line in table(rows).splitlines():
        print(f"  {line}")
    return 0


def _build(args: argparse.Namespace) -> SEF:
    """The model the options describe, with the defaults of :data:`_BUILT` for those not given."""
    from sef.model import SEF

    for name, default in _BUILT.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    return SEF(
        args.backbone,
        num_classes=args.classes,
        groups=args.groups,
        pool=args.pool,
        image_size=args.image_size,
    )


def _load(args: argparse.Namespace) -> TrainedModel:
    """The model of ``args.checkpoint``; ConfigError if options describe another one too."""
    given = [f"--{name.replace('_', '-')}" for name in _BUILT if getattr(args, name) is not None]
    if given:
        raise ConfigError(
            f"--checkpoint describes its own model, which {', '.join(given)} cannot change; "
            f"pass one or the other"
        )
    from sef.trained import load_trained_model

    return load_trained_model(args.checkpoint)


def _saved_at_row(trained: TrainedModel) -> list[tuple[str, str]]:
    """The "saved at" row, "epoch 12 of 50" with "(unfinished run)" after it for such a last.pt;
    none where the checkpoint does not record its epoch."""
    if trained.saved_at is None:
        return []
    return [("saved at", trained.saved_at + (" (unfinished run)" if trained.unfinished else ""))]


def _recorded(args: argparse.Namespace, trained: TrainedModel | None) -> dict:
    """The checkpoint, the versions of sef and torch that wrote it (None: unrecorded) and the
    epoch it was saved at, of how many."""
    if trained is None:
        return {}
    versions = {"sef_version": trained.sef_version, "torch_version": trained.torch_version}
    saved = {"epoch": trained.epoch, "epochs": trained.config.optim.epochs}
    saved["unfinished"] = trained.unfinished
    return {"checkpoint": str(args.checkpoint)} | versions | saved
