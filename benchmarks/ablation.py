"""What the ablation scripts share: train (or resume, or reuse) one preset run, and the statistics
over seeds (mean, sample std, paired differences with a t interval)."""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from common import RESULTS_DIR, code_state, command_line, utc_now

from sef import datasets
from sef.checkpoint import load_checkpoint
from sef.config import Config, apply_overrides, resolve_config
from sef.engine import FitResult, fit
from sef.groups import group_sizes

# A model without groups (plain, MaxEnt) is split into this many for the analysis, as SEF would
# split it on birds32 (one group per part); the analysis looks at this many fixed test images.
ANALYSIS_GROUPS, ANALYSIS_IMAGES = 5, 256
# in a run's folder: the code its training started under, for a record made after a resume
CODE_AT_START = "code_at_start.json"


def train_run(
    preset: str, overrides: list[str], out: Path, progress: bool = True
) -> tuple[FitResult, Config]:
    """Train ``preset`` with ``overrides`` into ``out``; a run already there is resumed (a
    finished one returns at once), so an interrupted ablation continues where it stopped."""
    overrides = [*overrides, f"run.out={out}", "run.tensorboard=false"]
    config = apply_overrides(resolve_config(preset), overrides)
    resume = (Path(out) / "last.pt").is_file()
    if not resume:
        record_code_at_start(out)
    result = fit(config, resume=resume, progress=progress)
    return result, config


def record_code_at_start(run: Path) -> None:
    """Keep in the ``run`` folder the code its training starts under, for :func:`run_code`."""
    Path(run).mkdir(parents=True, exist_ok=True)
    (Path(run) / CODE_AT_START).write_text(json.dumps(code_state()) + "\n")


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def paired_difference(values: list[float], baseline: list[float], level: float = 0.95) -> dict:
    """Per-seed differences ``values - baseline``, their mean and its two-sided t interval."""
    from scipy.stats import t

    differences = [a - b for a, b in zip(values, baseline, strict=True)]
    mean, std = mean_std(differences)
    n = len(differences)
    half = t.ppf((1 + level) / 2, n - 1) * std / math.sqrt(n) if n > 1 else math.nan
    return {
        "differences": differences,
        "mean": mean,
        "std": std,
        "n": n,
        "level": level,
        "interval": [mean - half, mean + half],
    }


def describe_difference(name: str, difference: dict) -> str:
    """One line for a ``paired_difference``: its mean and interval in points."""
    low, high = (100 * x for x in difference["interval"])
    return (
        f"{name} ({difference['n']} seeds): {100 * difference['mean']:+.1f} points "
        f"({100 * difference['level']:.0f} % interval {low:+.1f} to {high:+.1f})"
    )


def read_results(path: Path, versions: tuple[int, ...], quick: bool) -> dict:
    """The JSON an ablation wrote at ``path`` ({} if none), refused when another protocol
    version or --quick setting wrote it: runs of different protocols are never mixed."""
    if not path.is_file():
        return {}
    previous = json.loads(path.read_text())
    if previous.get("protocol_version") not in versions or previous.get("quick") != quick:
        raise SystemExit(
            f"{path} was written under another protocol or --quick setting; "
            f"pass another --out (and --runs) instead of mixing them"
        )
    return previous


def protocol_parser(doc: str, name: str, quick: str = "2 epochs") -> argparse.ArgumentParser:
    """The options every protocol script has: runs/NAME, results/NAME.json, --quick, --report."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs") / name.replace("_", "-"))
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / f"{name}.json")
    parser.add_argument("--quick", action="store_true", help=f"tiny data, {quick}: a smoke test")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--report", action="store_true", help="print the verdict of --out; no runs")
    return parser


def start_call(
    argv: list[str] | None, parse_args: Callable[[list[str]], argparse.Namespace], version: int
) -> tuple[list[str], argparse.Namespace, float, dict]:
    """A protocol script's call: its argv and arguments, when it started, its JSON so far."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    return argv, args, time.perf_counter(), read_results(args.out, (version,), args.quick)


def protocol_fields(protocol: str, version: int, quick: bool, start: float) -> dict:
    """What a protocol's JSON starts with: its version and text, --quick, the call's seconds."""
    return {
        "protocol_version": version,
        "protocol": protocol,
        "quick": quick,
        "wall_seconds_this_call": time.perf_counter() - start,
    }


def run_code(run: str | Path) -> dict:
    """The code a run was measured under (:func:`common.code_state`), and, where its training
    started under other code (resumed after a commit) or in a folder older than this record,
    ``code_at_start``: that code, or None where unknown."""
    code = code_state()
    try:
        at_start = json.loads((Path(run) / CODE_AT_START).read_text())
    except (OSError, ValueError):
        at_start = None
    return {"code": code} if at_start == code else {"code": code, "code_at_start": at_start}


def measured_stamp(script: str, argv: list[str], run: str | Path | None = None) -> dict:
    """When, by which command and under which code a result was made, so results merged from
    calls stay dated; with the ``run`` folder it was measured on, the code that run started
    under too where it differs (:func:`run_code`)."""
    code = run_code(run) if run is not None else {"code": code_state()}
    return {"date": utc_now(), "command": command_line([script, *argv]), **code}


def analyse(checkpoint: Path, progress: bool) -> dict:
    """Within/between-group correlation and part localisation of a trained model on test images."""
    from sef.parts import measure_parts
    from sef.trained import load_trained_model
    from sef.viz import group_means, image_batches, mean_channel_correlation, pick_indices

    trained = load_trained_model(checkpoint)
    model = trained.model
    sizes = list(model.group_sizes)
    if len(sizes) == 1:  # no groups of its own: split its channels as SEF would
        sizes = group_sizes(model.channels, ANALYSIS_GROUPS)
    dataset = trained.dataset("test")
    indices = pick_indices(len(dataset), ANALYSIS_IMAGES, seed=0)
    batches = image_batches(dataset, indices, 32, progress=False)  # [32, C, C] cosines at a time
    correlation, count = mean_channel_correlation(model, batches)
    blocks = group_means(correlation, sizes)
    off = ~torch.eye(len(sizes), dtype=torch.bool)
    parts = measure_parts(
        model, dataset, trained.test_transform, indices, 64, progress=progress, group_sizes=sizes
    ).report
    return {
        "groups": len(sizes),
        "own_groups": len(model.group_sizes) > 1,
        "images": count,
        "within_group_correlation": blocks.diagonal().mean().item(),
        "between_group_correlation": blocks[off].mean().item(),
        "group_correlation_matrix": blocks.tolist(),
        "part_distinctness": parts.distinctness,
        "part_static_distinctness": parts.static_distinctness,
        "part_chance_distinctness": parts.chance_distinctness,
        "part_dominant": parts.dominant_parts,
        "part_fractions": parts.fractions,
    }


def finetune_run(preset: str, overrides: list[str], out: Path, progress: bool = True) -> dict:
    """Train (or resume, or reuse) one fine-tuning run and measure it: accuracy, the group heads,
    every epoch's record, and the analysis of its last checkpoint."""
    result, config = train_run(preset, overrides, out, progress=progress)
    per_class = {**datasets.options(config.data.dataset), **config.data.options}["per_class"]
    classes = len(load_checkpoint(out / "last.pt")["classes"])
    return {
        "last_top1": result.last["eval_top1"],
        "best_top1": result.best_top1,
        "best_epoch": result.best_epoch,
        "last_class_mean": result.last["eval_class_mean"],
        "last_group_top1": result.last["eval_group_top1"],
        "groups": config.model.groups,
        "epochs": config.optim.epochs,
        "steps_per_epoch": math.ceil(per_class * classes / config.optim.batch_size),
        "eval_top1_by_epoch": [record["eval_top1"] for record in result.history],
        "history": result.history,  # every epoch's record, the groups' correlation readout too
        "train_seconds": result.seconds,
        "run_folder": str(out),
        "analysis": analyse(out / "last.pt", progress=progress),
    }
