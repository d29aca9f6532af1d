"""How sure trained models say they are: the softmax probability each gives the right class.

SEF's maximum-entropy term rewards a spread-out softmax (docs/deployment.md), so its probabilities
read as a ranking, not as a confidence. Trains the demo's SEF preset (`sef train` with no
arguments) and ``demo-plain`` (none of SEF's terms) into --runs (a run already there is resumed or
reused), then, on the demo test set, writes each best.pt's top-1 and the median, 10th and 90th
percentiles and maximum of the probability it gives the right class.

    python benchmarks/confidence.py          # demo and demo-plain -> results/confidence.json
    python benchmarks/confidence.py --quick  # tiny runs, to check it works
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from ablation import train_run
from common import RESULTS_DIR, parse_arguments, write_report
from torch.utils.data import DataLoader

from sef.trained import load_trained_model

PRESETS = ("demo", "demo-plain")
QUICK = [
    "data.options.per_class=4", "data.options.test_per_class=3", "data.image_size=32",
    "optim.epochs=1", "optim.batch_size=8", "data.workers=0",
]  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/confidence"))
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "confidence.json")
    parser.add_argument("--quick", action="store_true", help="tiny data, 1 epoch: a smoke test")
    return parse_arguments(parser, argv, {})


def right_class_probabilities(checkpoint: Path) -> tuple[np.ndarray, np.ndarray]:
    """Per test image of the run's data: the probability given to its class, and whether the
    top-1 class is right."""
    trained = load_trained_model(checkpoint, device="cpu")
    dataset = trained.dataset("test", None, progress=False)
    model = trained.model.eval()
    given, right = [], []
    with torch.no_grad():
        for images, labels in DataLoader(dataset, batch_size=200):
            probabilities = model(images).softmax(1)
            given.append(probabilities.gather(1, labels[:, None]).squeeze(1))
            right.append(probabilities.argmax(1) == labels)
    return torch.cat(given).numpy(), torch.cat(right).numpy()


def summary(preset: str, checkpoint: Path) -> dict:
    given, right = right_class_probabilities(checkpoint)
    low, median, high = np.percentile(given, [10, 50, 90])
    return {
        "preset": preset,
        "checkpoint": str(checkpoint),
        "images": int(len(given)),
        "top1": round(float(right.mean()), 4),
        "right_class_probability": {
            "median": round(float(median), 3),
            "p10": round(float(low), 3),
            "p90": round(float(high), 3),
            "max": round(float(given.max()), 3),
        },
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    runs = []
    for preset in PRESETS:
        out = args.runs / preset
        train_run(preset, QUICK if args.quick else [], out, progress=False)
        runs.append(summary(preset, out / "best.pt"))
    for run in runs:
        p = run["right_class_probability"]
        print(
            f"{run['preset']}: top-1 {run['top1']:.2%} on {run['images']} images; right "
            f"class's probability median {p['median']}, 10-90 % {p['p10']}-{p['p90']}, "
            f"max {p['max']}"
        )
    payload = {"quick": args.quick, "runs": runs}
    write_report(args.out, payload, torch.device("cpu"), [__file__, *argv])
    return 0


if __name__ == "__main__":
    sys.exit(main())
