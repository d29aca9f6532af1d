"""`sef presets`: the shipped training presets, one line each, or one preset in full."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from sef.datasets import RECORDS

    built_in = ", ".join(
        f"{name}-{backbone}[-METHOD]"
        for name, record in RECORDS.items()
        if record.kind == "generated"
        for backbone in record.backbones
    )
    parser = subparsers.add_parser(
        "presets",
        help="list the training presets (or print one as YAML)",
        description=(
            "List the presets `sef train --preset NAME` accepts: demo[-METHOD], "
            "<dataset>-<backbone>[-METHOD] for the paper's datasets, folder-<backbone>"
            "[-METHOD] and csv-<backbone>[-METHOD] for your own images, and for the built-in "
            f"sets {built_in}. With a NAME, print that preset's full config as YAML: `sef "
            "presets NAME > my.yaml` is a config file to edit and train with `sef train --config "
            "my.yaml`."
        ),
    )
    parser.add_argument("name", nargs="?", help="print this preset's full config")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sef.config import describe_preset, load_preset, preset_names
    from sef.text import table

    if args.name:
        print(load_preset(args.name))
        return 0
    print(table([[name, describe_preset(name)] for name in preset_names()]))
    return 0
