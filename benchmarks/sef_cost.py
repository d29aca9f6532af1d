"""Where SEF's extra step time goes: its training step with one piece taken out at a time.

On the GPU SEF's compute-only step cost 1.10 x the plain one's (issue 21; on the CPU x1.00x),
and which piece pays for it was never measured. Every variant below is the compute-only step of
``gpu_epoch.py`` (one batch kept on the device, bf16 autocast, channels_last, cudnn.benchmark;
forward, loss, backward, SGD), and all are timed interleaved in one process:

* ``plain``: SEF with one group and lam = gamma = phi = 0 (the method-plain preset): the ceiling;
* ``sef``: the paper's SEF (G groups, lam 1, gamma 0.05, phi 1, the reference group loss);
* ``no_group_loss``: phi = 0 (the group loss not computed): the group loss's share;
* ``no_distill``: gamma = 0 (the group heads get no gradient): the heads' backward and the
  distillation's share;
* ``no_entropy``: lam = 0;
* ``group_loss_bf16``: the group loss computed under autocast (bf16 matmuls) instead of float32:
  what the float32 casts cost, a candidate that would loosen the float64-oracle agreement;
* ``with_readout``: sef plus the groups' correlation readout ``sef train`` records each step;
* ``loss_compiled``: sef with ``torch.compile`` on the loss alone (the model eager): SEF adds
  about 100 small operators to a step of about 640 (``operators_per_step``), which a compiled
  loss fuses into a few kernels; a candidate, as exact as the eager loss to float32 rounding;
* ``heads_batched``: sef with its G group heads (of one size, C divisible by G) in one batched
  product instead of G ``nn.Linear`` calls, their parameters stacked each step: a candidate
  with the loop's numbers (a test) and fewer kernels, which is slower on the CPU
  (docs/performance.md), so ``sef.SEF`` keeps the loop until a GPU says otherwise.

Then ``torch.profiler`` on the ``sef`` and ``plain`` steps: the operators with the most device
time (self), so the difference can be read operator by operator, and every variant's count of
top-level operators per step (each one at least one kernel launch on a GPU).

    python benchmarks/sef_cost.py                 # on a CUDA machine -> results/sef_cost.json
    python benchmarks/sef_cost.py --quick         # CPU, tiny: checks that it runs
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
from collections.abc import Callable

import torch
from common import (
    add_common_arguments,
    configure_torch,
    paired_ratios,
    parse_arguments,
    summarise,
    time_interleaved,
    write_report,
)
from gpu_epoch import Road, build_training

import sef
from sef import losses
from sef.engine.device import autocast, to_device
from sef.groups import group_sizes
from sef.losses import group_correlation

VARIANTS = {  # name: SEFLoss options (plain: gpu_epoch's plain road, one group, no SEF term)
    "plain": None,
    "sef": {},
    "no_group_loss": dict(phi=0.0),
    "no_distill": dict(gamma=0.0),
    "no_entropy": dict(lam=0.0),
    "group_loss_bf16": dict(phi=0.0),  # the group loss is added under autocast below
    "with_readout": {},
    "loss_compiled": {},
    "heads_batched": {},
}
PROFILED = ("sef", "plain")
TOP_OPERATORS = 25


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, "sef_cost.json")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image-size", type=int, default=448)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--groups", type=int, default=4)
    parser.set_defaults(repeats=30, warmup=10, compile=False)  # build_training's model eager
    quick = dict(backbone="small_cnn", image_size=32, batch_size=2, repeats=2, warmup=1, threads=1)
    return parse_arguments(parser, argv, quick)


def bf16_group_loss(features: torch.Tensor, groups: int) -> torch.Tensor:
    """The reference group loss with its matrix products left to autocast (bf16 on the GPU)."""
    x = features.flatten(2)
    x = x / (x.norm(dim=2, keepdim=True) + losses.EPS)
    return losses._reference_group_loss(x, group_sizes(x.shape[1], groups)).float()


def batched_group_logits(heads: torch.nn.ModuleList, pooled: torch.Tensor) -> torch.Tensor:
    """The group heads' logits [G, B, K] for heads of one input size c, in one product:
    [G, B, c] @ [G, c, K] + bias, the heads' own parameters stacked (C x K numbers copied)."""
    weight = torch.stack([head.weight for head in heads]).transpose(1, 2)  # [G, c, K]
    bias = torch.stack([head.bias for head in heads]).unsqueeze(1)  # [G, 1, K]
    parts = pooled.unflatten(1, (len(heads), -1)).transpose(0, 1)  # [G, B, c]
    return torch.baddbmm(bias, parts, weight)


def training_step(name: str, args: argparse.Namespace, device: torch.device) -> Callable:
    """A closure running one compute-only SGD step of variant ``name``: the model, the loss and
    the optimizer of gpu_epoch.py's compute roads, the loss's options changed."""
    road = Road(name, "plain" if name == "plain" else "sef", "on_device", "bf16", fast=True)
    model, _, criterion, optimizer = build_training(road, args, device)
    groups = model.groups
    if VARIANTS[name] is not None:
        criterion = sef.SEFLoss(groups, **VARIANTS[name])
    if name == "loss_compiled":
        criterion = torch.compile(criterion)
    if name == "heads_batched":
        model._group_logits = functools.partial(batched_group_logits, model.group_heads)
    images = torch.randint(0, 256, (args.batch_size, 3, args.image_size, args.image_size))
    images = to_device(images.to(torch.uint8), device, channels_last=True)
    target = torch.randint(args.classes, (args.batch_size,), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, "bf16"):
            output = model(images)
            total = criterion(output, target)["total"]
            if name == "group_loss_bf16":
                total = total + bf16_group_loss(output.features, groups)
            if name == "with_readout":
                group_correlation(output.features, groups)
        total.backward()
        optimizer.step()

    return step


def operator_table(step: Callable, device: torch.device) -> list[dict]:
    """The operators of one step with the most self device time (CPU time on a CPU)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    step()
    with profile(activities=activities) as profiler:
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    use_device = device.type == "cuda"
    rows = [
        {
            "operator": event.key,
            "calls": event.count,
            "self_ms": (event.self_device_time_total if use_device else event.self_cpu_time_total)
            / 1000,
        }
        for event in profiler.key_averages()
    ]
    rows.sort(key=lambda row: row["self_ms"], reverse=True)
    return rows[:TOP_OPERATORS]


def operators_per_step(step: Callable) -> int:
    """Top-level operators (autograd's backward ones included) one call of ``step`` runs."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        step()
    return sum(1 for event in profiler.events() if event.cpu_parent is None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    device = configure_torch(args)
    torch.backends.cudnn.benchmark = True
    steps = {name: training_step(name, args, device) for name in VARIANTS}
    seconds = time_interleaved(steps, args.repeats, args.warmup, device, "steps")
    ratios = paired_ratios(seconds, "plain")
    sef_step = statistics.median(seconds["sef"])
    payload = {
        "benchmark": "SEF's compute-only training step with one piece taken out at a time",
        "backbone": args.backbone,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "groups": args.groups,
        "seconds": {name: summarise(times) for name, times in seconds.items()},
        "ratio_to_plain": ratios,
        "share_of_sef_step": {
            name: 1 - statistics.median(times) / sef_step
            for name, times in seconds.items()
            if name.startswith("no_")
        },
        "operators": {name: operator_table(steps[name], device) for name in PROFILED},
        "operators_per_step": {name: operators_per_step(step) for name, step in steps.items()},
    }
    write_report(args.out, payload, device, [__file__, *argv])
    print(f"plain {1000 * statistics.median(seconds['plain']):.1f} ms/step")
    for name in VARIANTS:
        if name != "plain":
            print(f"{name:16s} x{ratios[name]['median']:.3f} the plain step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
