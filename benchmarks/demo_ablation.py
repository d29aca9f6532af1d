"""Demo ablation: plain backbone vs MaxEnt vs SEF on the built-in demo set, over several seeds.

Trains the presets ``demo-plain``, ``demo-maxent``, ``demo`` (SEF), the demo's Table III rows and
``demo-finetune`` (the method confirmed when fine-tuning, here from scratch) once per seed and
writes the mean and sample standard deviation of their test accuracy to JSON, each method's
per-seed difference from plain with its 95 % t interval, and the last epoch's correlation readout
of every run with groups, plus a Markdown table on stdout. Methods not run this time keep their
entry from an existing --out file made with the same seeds and settings, so rows can be added one
call at a time; each row records the date, command and commit that measured it, and each run
the commit it ran under (and the one it started under, where a resume changed it).
Runs live in --runs (default runs/demo-ablation); a run already there is resumed or reused, so an
interrupted benchmark continues where it stopped. The headline number is the last epoch's test
accuracy (the best epoch's is reported too, but picking it looks at the test set).

    python benchmarks/demo_ablation.py                     # full: 7 methods x 3 seeds
    python benchmarks/demo_ablation.py --methods sef       # one row, merged into the JSON
    python benchmarks/demo_ablation.py --quick             # tiny smoke run to check it works
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from ablation import mean_std, measured_stamp, paired_difference, run_code, train_run
from common import RESULTS_DIR, parse_arguments, write_report

from sef.config import config_to_dict

METHODS = {
    "plain": "demo-plain",
    "maxent": "demo-maxent",
    "sef": "demo",
    "groups-only": "demo-groups-only",  # Table III's rows: which term does what
    "matching-only": "demo-matching-only",
    "matching-groups": "demo-matching-groups",
    "finetune": "demo-finetune",  # docs/finetune.md's confirmed setting, from scratch
}
QUICK = [
    "data.options.per_class=6", "data.options.test_per_class=4", "data.image_size=32",
    "optim.epochs=1", "optim.batch_size=8", "data.workers=0",
]  # fmt: skip
METRICS = ("last_top1", "best_top1", "last_class_mean")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--runs", type=Path, default=Path("runs/demo-ablation"))
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "demo_ablation.json")
    parser.add_argument("--quick", action="store_true", help="tiny data, 1 epoch: a smoke test")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    parser.add_argument("--no-progress", action="store_true")
    return parse_arguments(parser, argv, {})


def train_one(method: str, seed: int, args: argparse.Namespace) -> dict:
    """Train (or resume, or reuse) one method/seed run and return its headline numbers."""
    out = args.runs / f"{method}-seed{seed}"
    overrides = (QUICK if args.quick else []) + args.overrides + [f"run.seed={seed}"]
    result, config = train_run(METHODS[method], overrides, out, progress=not args.no_progress)
    return {
        "seed": seed,
        "last_top1": result.last["eval_top1"],
        "best_top1": result.best_top1,
        "best_epoch": result.best_epoch,
        "last_class_mean": result.last["eval_class_mean"],
        "last_corr": [result.last.get(f"eval_corr_{k}") for k in ("within", "between")],
        "train_seconds": result.seconds,
        "config": config_to_dict(config),
        **run_code(out),
    }


def summarise(runs: list[dict]) -> dict:
    summary: dict = {}
    for key in METRICS:
        summary[f"{key}_mean"], summary[f"{key}_std"] = mean_std([run[key] for run in runs])
    summary["train_seconds_mean"] = statistics.fmean(run["train_seconds"] for run in runs)
    return summary


def against_plain(results: dict) -> dict:
    """Each method's last-epoch top-1 minus plain's, seed by seed (``paired_difference``)."""
    if "plain" not in results:
        return {}
    plain = {run["seed"]: run["last_top1"] for run in results["plain"]["runs"]}
    paired = {}
    for method, entry in results.items():
        runs = [run for run in entry["runs"] if run["seed"] in plain]
        if method != "plain" and runs:
            values = [run["last_top1"] for run in runs]
            paired[method] = paired_difference(values, [plain[run["seed"]] for run in runs])
    return paired


def markdown(results: dict) -> str:
    lines = [
        "| method | last-epoch top-1 | best-epoch top-1 | last class-mean | train time / run |",
        "|---|---|---|---|---|",
    ]
    for method, entry in results.items():
        s = entry["summary"]
        cells = [f"{100 * s[f'{k}_mean']:.1f} ± {100 * s[f'{k}_std']:.1f}" for k in METRICS]
        lines.append(
            f"| {method} | " + " | ".join(cells) + f" | {s['train_seconds_mean'] / 60:.1f} min |"
        )
    return "\n".join(lines)


def kept_results(args: argparse.Namespace) -> dict:
    """Rows of an existing --out file made with the same settings (empty if none or different)."""
    if not args.out.is_file():
        return {}
    previous = json.loads(args.out.read_text())
    settings = [previous.get(key) for key in ("quick", "seeds", "overrides")]
    if settings != [args.quick, args.seeds, args.overrides]:
        return {}
    return {m: entry for m, entry in previous.get("results", {}).items() if m in METHODS}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    start = time.perf_counter()
    results = kept_results(args)
    for method in args.methods:
        runs = [train_one(method, seed, args) for seed in args.seeds]
        for run in runs:
            run.pop("config")
        results[method] = {
            "preset": METHODS[method],
            "measured": measured_stamp(__file__, argv),
            "runs": runs,
            "summary": summarise(runs),
        }
    results = {method: results[method] for method in METHODS if method in results}
    payload = {
        "quick": args.quick,
        "seeds": args.seeds,
        "overrides": args.overrides,
        "wall_seconds_this_call": time.perf_counter() - start,
        "results": results,
        "against_plain": against_plain(results),
    }
    write_report(args.out, payload, torch.device("cpu"), [__file__, *argv])
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
