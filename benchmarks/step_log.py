"""Replay one group-study run with a record of every SGD step: where a run loses what it had
learnt between two epochs, which step did it, and what its batch held (a diagnostic; it judges
nothing).

The run is trained again from its seed with the study's settings (on the same CPU model the
replay is bit for bit the study's run) and every step writes one line of ``--out``: the loss
terms, training top-1 of the batch, the norm of the gradient the optimizer is about to apply,
and the feature map's smallest non-zero channel norm (the cosine of the group loss divides by
it) beside the median one. The steps with the largest gradients are printed at the end.

    python benchmarks/step_log.py sef-paper-0.3 --seed 1 --epochs 9
    python benchmarks/step_log.py sef-paper-0.3 --seed 1 --epochs 9 --set loss.norm_floor=0.01
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from ablation import train_run
from group_study import SHORT_ROWS
from torch import nn
from torch.nn.modules.module import register_module_forward_hook
from torch.optim.optimizer import register_optimizer_step_pre_hook

from sef.engine.loop import gradient_norm
from sef.losses import SEFLoss

TOP = 5  # steps printed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("row", choices=[r.name for r in SHORT_ROWS], help="a group-study row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=12, help="stop after this many epochs")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    parser.add_argument("--out", type=Path, default=Path("steps.jsonl"))
    parser.add_argument("--quick", action="store_true", help="tiny data, random init: a smoke test")
    return parser.parse_args(argv)


class StepLog:
    """Hooks that write one JSON line per optimizer step (PyTorch's global hooks: the training
    loop stays as it is)."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("w")
        self.step: dict = {}
        self.handles = [
            register_module_forward_hook(self.after_loss),
            register_optimizer_step_pre_hook(self.before_step),
        ]

    def after_loss(self, module: nn.Module, inputs: tuple, terms) -> None:
        if not isinstance(module, SEFLoss):
            return
        output, labels = inputs
        norms = output.features.detach().float().flatten(2).norm(dim=2)
        alive = norms[norms > 0]
        self.step = {name: value.item() for name, value in terms.items()}
        self.step |= {
            "batch_top1": (output.logits.argmax(1) == labels).float().mean().item(),
            "smallest_channel_norm": alive.min().item() if alive.numel() else 0.0,
            "median_channel_norm": alive.median().item() if alive.numel() else 0.0,
        }

    def before_step(self, optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        norm = gradient_norm(optimizer).item()  # what sef train records each step
        self.step |= {"lr": optimizer.param_groups[0]["lr"], "gradient_norm": norm}
        self.file.write(json.dumps(self.step) + "\n")
        self.file.flush()

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.file.close()


def largest(path: Path, top: int = TOP) -> list[str]:
    """The ``top`` steps with the largest gradient, against the median step."""
    steps = [json.loads(line) for line in path.read_text().splitlines()]
    median = statistics.median(s["gradient_norm"] for s in steps)
    order = sorted(range(len(steps)), key=lambda i: -steps[i]["gradient_norm"])[:top]
    lines = [f"{len(steps)} steps, median gradient norm {median:.3g}"]
    for i in order:
        s = steps[i]
        lines.append(
            f"step {i + 1}: gradient {s['gradient_norm']:.3g} ({s['gradient_norm'] / median:.1f}"
            f" x median), smallest channel norm {s['smallest_channel_norm']:.2g} (median "
            f"{s['median_channel_norm']:.3g}), batch top-1 {s['batch_top1']:.2f}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    row = next(r for r in SHORT_ROWS if r.name == args.row)
    overrides = [*row.settings(args.quick), f"run.seed={args.seed}", *args.overrides]
    overrides.append(f"optim.epochs={args.epochs}")  # the lr schedule keeps its step_size
    log = StepLog(args.out)
    try:
        with tempfile.TemporaryDirectory(prefix="sef-step-log-") as folder:
            train_run(row.preset, overrides, Path(folder) / "run", progress=False)
    finally:
        log.close()
    print("\n".join(largest(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
