"""Replay one group-study run with a record of every SGD step: where a run loses what it had
learnt between two epochs, which step did it, and what its batch held (a diagnostic; it judges
nothing).

The run is trained again from its seed with the study's settings (on the same CPU model the
replay is bit for bit the study's run) and every step writes one line of ``--out``: the loss
terms, training top-1 of the batch, the norm of the gradient the optimizer is about to apply,
and the feature map's smallest non-zero channel norm (the cosine of the group loss divides by
it) beside the median one. The steps with the largest gradients are printed at the end.

With ``--pulls-every N``, every N-th step also measures how the loss terms pull on the backbone's
parameters, as `group_gradients.py` does on checkpoints but along the run: the norms of the
gradients of cross-entropy, of the entropy term at weight 1 (whatever the row's λ) and of the group
loss as the run applies it, and the cosines between them; ``torch.autograd.grad`` leaves the
run's own gradients alone, so the run stays bit for bit the same. Their means by epoch are printed.

    python benchmarks/step_log.py sef-paper-0.3 --seed 1 --epochs 9
    python benchmarks/step_log.py sef-paper-0.3 --seed 1 --epochs 9 --set loss.norm_floor=0.01
    python benchmarks/step_log.py sef-paper-1-floor --seed 0 --pulls-every 10
    python benchmarks/step_log.py sef-paper-1-floor --seed 0 --lam-from 120=0

``--lam-from STEP=LAM`` sets SEF's λ to LAM from the STEP-th SGD step on (counted from 0): the
entropy term switched on or off mid-run, to ask when it acts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from ablation import train_run
from common import flat_gradient
from group_study import SHORT_ROWS
from torch import nn
from torch.nn.modules.module import (
    register_module_forward_hook,
    register_module_forward_pre_hook,
)
from torch.optim.optimizer import register_optimizer_step_pre_hook

from sef.engine.loop import gradient_norm
from sef.losses import SEFLoss
from sef.model import SEF

TOP = 5  # steps printed
PULLS = ("ce", "entropy", "group")
PAIRS = (("ce", "group"), ("entropy", "group"), ("ce", "entropy"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("row", choices=[r.name for r in SHORT_ROWS], help="a group-study row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=12, help="stop after this many epochs")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    parser.add_argument("--out", type=Path, default=Path("steps.jsonl"))
    parser.add_argument("--pulls-every", type=int, default=0, metavar="N",
                        help="every N-th step, the terms' pulls on the backbone")  # fmt: skip
    parser.add_argument("--lam-from", type=lam_switch, metavar="STEP=LAM",
                        help="from this SGD step on, SEF's lambda is LAM")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="tiny data, random init: a smoke test")
    return parser.parse_args(argv)


def lam_switch(text: str) -> tuple[int, float]:
    """``STEP=LAM`` -> (STEP, LAM)."""
    step, _, lam = text.partition("=")
    try:
        return int(step), float(lam)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected STEP=LAM, e.g. 120=1.0, not {text!r}") from None


class StepLog:
    """Hooks that write one JSON line per optimizer step (PyTorch's global hooks: the training
    loop stays as it is)."""

    def __init__(
        self, path: Path, pulls_every: int = 0, lam_from: tuple[int, float] | None = None
    ) -> None:
        self.file = path.open("w")
        self.step: dict = {}
        self.steps, self.pulls_every, self.model, self.lam_from = 0, pulls_every, None, lam_from
        self.handles = [
            register_module_forward_pre_hook(self.before_loss),
            register_module_forward_hook(self.after_forward),
            register_optimizer_step_pre_hook(self.before_step),
        ]

    def before_loss(self, module: nn.Module, inputs: tuple) -> None:
        if isinstance(module, SEFLoss) and self.lam_from and self.steps >= self.lam_from[0]:
            module.lam = self.lam_from[1]

    def after_forward(self, module: nn.Module, inputs: tuple, terms) -> None:
        if isinstance(module, SEF):
            self.model = module
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
        if self.pulls_every and self.steps % self.pulls_every == 0:
            self.step |= self.pulls(output, terms)

    def pulls(self, output, terms) -> dict[str, float]:
        """The terms' gradients on the backbone: their norms and pairwise cosines (nothing while
        a φ warm-up holds the group loss at 0)."""
        if not terms["group"].requires_grad:
            return {}
        weights = [p for p in self.model.backbone.parameters() if p.requires_grad]
        log_p = F.log_softmax(output.logits.float(), 1)
        values = {"ce": terms["ce"], "entropy": (log_p.exp() * log_p).sum(1).mean()}
        values["group"] = terms["group"]
        grads = {name: flat_gradient(value, weights) for name, value in values.items()}
        found = {f"pull_{name}": grads[name].norm().item() for name in PULLS}
        for a, b in PAIRS:
            found[f"cosine_{a}_{b}"] = F.cosine_similarity(grads[a], grads[b], dim=0).item()
        return found

    def before_step(self, optimizer: torch.optim.Optimizer, args, kwargs) -> None:
        norm = gradient_norm(optimizer).item()  # what sef train records each step
        self.step |= {"lr": optimizer.param_groups[0]["lr"], "gradient_norm": norm}
        self.file.write(json.dumps(self.step) + "\n")
        self.file.flush()
        self.steps += 1

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


def pulls_by_epoch(path: Path, epochs: int) -> list[str]:
    """The means of the measured steps' pulls and cosines, epoch by epoch."""
    steps = [json.loads(line) for line in path.read_text().splitlines()]
    per_epoch = len(steps) // epochs
    lines = ["epoch  |dCE|  |d entropy|  |d group|  cos(CE, group)  cos(entropy, group)"]
    for epoch in range(epochs):
        measured = [s for s in steps[epoch * per_epoch : (epoch + 1) * per_epoch] if "pull_ce" in s]
        if not measured:
            continue
        names = [k for k in measured[0] if k.startswith(("pull_", "cosine_"))]
        mean = {k: statistics.fmean(s[k] for s in measured) for k in names}
        lines.append(
            f"{epoch + 1:5d}  {mean['pull_ce']:5.3g}  {mean['pull_entropy']:11.3g}  "
            f"{mean['pull_group']:9.3g}  {mean['cosine_ce_group']:+14.2f}  "
            f"{mean['cosine_entropy_group']:+19.2f}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    row = next(r for r in SHORT_ROWS if r.name == args.row)
    if args.pulls_every and row.method == "plain":
        print("step_log.py: --pulls-every needs a row with a group loss", file=sys.stderr)
        return 2
    overrides = [*row.settings(args.quick), f"run.seed={args.seed}", *args.overrides]
    overrides.append(f"optim.epochs={args.epochs}")  # the lr schedule keeps its step_size
    log = StepLog(args.out, args.pulls_every, args.lam_from)
    try:
        with tempfile.TemporaryDirectory(prefix="sef-step-log-") as folder:
            train_run(row.preset, overrides, Path(folder) / "run", progress=False)
    finally:
        log.close()
    print("\n".join(largest(args.out)))
    if args.pulls_every:
        print("\n".join(pulls_by_epoch(args.out, args.epochs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
