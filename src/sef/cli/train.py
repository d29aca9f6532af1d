"""`sef train`: the paper's recipe (or the demo) end to end from one command."""

from __future__ import annotations

import argparse

from sef.choices import LOGGERS
from sef.cli.options import (
    PATH,
    PLACE,
    add_data_root_option,
    add_device_option,
    add_progress_option,
    add_set_option,
)
from sef.config import (
    AMP_MODES,
    FLAG_KEYS,
    Config,
    apply_values,
    parse_overrides,
    resolve_config,
)
from sef.datasets import check_root


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train SEF (with no arguments: the built-in demo)",
        description=(
            "Train SEF with a preset (see `sef presets`; default: demo) or a YAML config, "
            "evaluate every epoch, and write DIR/{config.yaml,metrics.jsonl,tb/,last.pt,best.pt} "
            "and best.pt's per-image predictions (best-<split>-predictions.csv). "
            "Without --out, DIR is runs/<preset>, or for your own images (folder, csv) their "
            "folder's name and the backbone's, e.g. runs/birds-resnet50 for the preset "
            "folder-resnet50 on ~/data/birds; a backbone other than the preset's takes its place "
            "in the name, e.g. runs/cub-resnet18 for --preset cub-resnet50 --backbone resnet18 "
            "(then -2, -3, ... if that holds a run). "
            "Under torchrun it trains with DistributedDataParallel."
        ),
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--preset", help="a preset name from `sef presets` (default demo)")
    source.add_argument("--config", type=PATH, help="a YAML config (may name a preset as base:)")
    add_data_root_option(parser, "the dataset folder as unpacked (data.root)")
    parser.add_argument("--out", type=PLACE, help="run folder (default: see above)")
    parser.add_argument("--epochs", type=int, help="training epochs (optim.epochs)")
    parser.add_argument("--batch-size", type=int, help="global batch size (optim.batch_size)")
    parser.add_argument(
        "--accumulate",
        type=int,
        metavar="N",
        help="take each batch in N micro-batches and step once on their summed gradients: the "
        "recipe's batch on a GPU that cannot hold it (optim.accumulate; default 1)",
    )
    parser.add_argument("--lr", type=float, help="initial learning rate (optim.lr)")
    parser.add_argument("--image-size", type=int, help="training image side (data.image_size)")
    parser.add_argument("--workers", type=int, help="data loading processes (data.workers)")
    parser.add_argument("--backbone", help="backbone name (model.backbone)")
    parser.add_argument("--weights", help="IMAGENET1K_V1, a weights file, or none")
    parser.add_argument("--groups", type=int, help="channel groups G (model.groups)")
    parser.add_argument("--seed", type=int, help="random seed (run.seed)")
    parser.add_argument("--amp", choices=AMP_MODES, help="mixed precision (run.amp)")
    add_device_option(parser, "run.device")
    parser.add_argument(
        "--log",
        "--loggers",  # under torchrun: torchrun takes --log as an abbreviation of its --log-dir
        dest="log",
        nargs="+",
        action="extend",  # --log wandb --log mlflow: both, not the last one alone
        choices=LOGGERS,
        metavar="NAME",
        help=f"where epochs are logged besides metrics.jsonl: {', '.join(LOGGERS)}; several at "
        "once (run.loggers; default tensorboard; W&B offline unless WANDB_MODE is set, MLflow "
        "in DIR/mlflow unless MLFLOW_TRACKING_URI is set; under torchrun spell it --loggers)",
    )
    parser.add_argument(
        "--channels-last", action="store_true", default=None, help="channels_last memory format"
    )
    parser.add_argument(
        "--cache",
        metavar="auto|off|FOLDER",
        help="read decoded images from a cache (data.cache; built if missing, see sef data cache)",
    )
    add_set_option(parser, "override any config value, e.g. --set loss.gamma=0.1 (repeatable)")
    parser.add_argument(
        "--resume", action="store_true", help="continue DIR/last.pt exactly where it stopped"
    )
    add_progress_option(parser)
    parser.set_defaults(func=run)


def _flag_values(args: argparse.Namespace) -> dict:
    values = {key: getattr(args, flag) for flag, key in FLAG_KEYS.items()}
    values = {key: value for key, value in values.items() if value is not None}
    if args.channels_last:
        values["run.channels_last"] = True
    return values


def config_from_args(args: argparse.Namespace) -> Config:
    """The config a `sef train` command line describes (resume: the run's own saved config, with
    the values this command line gives). A config that is wrong is refused before the engine
    (torch, torchvision: seconds) is imported; a resume imports it to read the run's own."""
    changes = {**_flag_values(args), **parse_overrides(args.overrides)}
    config = resolve_config(args.preset, args.config)
    changed = apply_values(config, changes)
    if not args.resume:
        return changed
    from sef.engine.run import resume_config

    return resume_config(config, changes, named=_named(args))


def _named(args: argparse.Namespace) -> str:
    """The option that named the config, as the command gave it: ``--preset NAME`` or
    ``--config FILE``; empty for the default preset."""
    if args.preset:
        return f"--preset {args.preset}"
    return f"--config {args.config}" if args.config else ""


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)  # before the engine's import: a config error says so at once
    check_root(config.data.dataset, config.data.root)
    from sef.distributed import is_main_process
    from sef.engine import fit

    result = fit(config, resume=args.resume, progress=args.progress, config_file=args.config)
    if is_main_process():
        print(result.report())
    return 0
