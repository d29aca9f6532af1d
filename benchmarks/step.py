"""One training step of SEF against its plain backbone: what SEF costs to train.

A step is forward, every loss term, backward and an SGD update, on a fixed random batch.
Three variants are interleaved at each image size:

* ``plain``: torchvision's network with ``num_classes`` outputs, cross-entropy only;
* ``sef``: ``sef.SEF`` + ``sef.SEFLoss`` (ce, entropy, distillation, group loss);
* ``sef_naive``: the same, with the group loss through the full C x C cosine matrix.

    python benchmarks/step.py                       # ResNet-50, 448 and 224 px -> results/step.json
    python benchmarks/step.py --sizes 224 --batch 4
    python benchmarks/step.py --quick               # ResNet-18 at 32 px, to check it runs
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
import torchvision
from common import (
    add_common_arguments,
    add_memory_arguments,
    argv_without_memory_flags,
    configure_torch,
    measure_peak_memory,
    memory_in_subprocesses,
    paired_ratios,
    parse_arguments,
    summarise,
    time_interleaved,
    write_report,
)
from naive_group_loss import naive_group_loss
from torch import nn

import sef
from sef.losses import GROUP_LOSS_VARIANTS

VARIANTS = ("plain", "sef", "sef_naive")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="resnet50", help="a torchvision model name")
    parser.add_argument("--sizes", type=int, nargs="+", default=[448, 224], help="image sizes")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--variant", default="reference", choices=GROUP_LOSS_VARIANTS)
    add_memory_arguments(parser)
    add_common_arguments(parser, "step.json")
    quick = dict(backbone="resnet18", sizes=[32], batch=2, repeats=2, warmup=1, threads=1)
    return parse_arguments(parser, argv, quick)


def naive_sef_loss(criterion: sef.SEFLoss) -> Callable:
    """``criterion``'s total with its group term computed through the C x C cosine matrix."""
    others = sef.SEFLoss(
        criterion.groups,
        lam=criterion.lam,
        gamma=criterion.gamma,
        phi=0.0,
        group_variant=criterion.group_variant,
        detach_teacher=criterion.detach_teacher,
    )

    def loss(output: sef.SEFOutput, target: torch.Tensor) -> torch.Tensor:
        group = naive_group_loss(output.features, criterion.groups, criterion.group_variant)
        return others(output, target)["total"] + criterion.phi * group

    return loss


def build_model_and_loss(name: str, args: argparse.Namespace) -> tuple[nn.Module, Callable]:
    """The network and a (output, target) -> scalar loss of one variant."""
    if name == "plain":
        plain = torchvision.models.get_model(args.backbone, num_classes=args.classes)
        return plain, F.cross_entropy
    model = sef.SEF(args.backbone, args.classes, groups=args.groups)
    criterion = sef.SEFLoss(args.groups, group_variant=args.variant)
    if name == "sef_naive":
        return model, naive_sef_loss(criterion)
    return model, lambda output, target: criterion(output, target)["total"]


def training_step(name: str, args: argparse.Namespace, size: int, device: torch.device) -> Callable:
    """A closure running one SGD step of variant ``name`` on a fixed batch of ``size`` px."""
    torch.manual_seed(0)
    model, loss_fn = build_model_and_loss(name, args)
    model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(args.batch, 3, size, size, device=device)
    target = torch.randint(args.classes, (args.batch,), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(images), target).backward()
        optimizer.step()

    return step


def _memory_name(name: str, size: int) -> str:
    return f"{name}@{size}"


def measure_memory(args: argparse.Namespace, argv: list[str]) -> dict[int, dict]:
    """Peak memory of every variant at every size, each in a fresh process."""
    names = [_memory_name(name, size) for size in args.sizes for name in VARIANTS]
    results = memory_in_subprocesses(__file__, argv_without_memory_flags(argv), names, "memory")
    return {
        size: {name: results[_memory_name(name, size)] for name in VARIANTS} for size in args.sizes
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    device = configure_torch(args)
    if args.memory_of:
        name, size = args.memory_of.split("@")
        step = training_step(name, args, int(size), device)
        print(json.dumps(measure_peak_memory(step, device)))
        return 0
    results = {}
    for size in args.sizes:
        steps = {name: training_step(name, args, size, device) for name in VARIANTS}
        seconds = time_interleaved(steps, args.repeats, args.warmup, device, f"{size}px steps")
        del steps
        results[size] = {
            "seconds": {name: summarise(times) for name, times in seconds.items()},
            "ratio_to_plain": paired_ratios(seconds, "plain"),
        }
    if not args.no_memory:
        memory = measure_memory(args, argv)
        for size, by_variant in memory.items():
            results[size]["peak_memory"] = by_variant
    payload = {
        "benchmark": "one training step: forward, all loss terms, backward, SGD",
        "backbone": args.backbone,
        "batch": args.batch,
        "classes": args.classes,
        "groups": args.groups,
        "group_variant": args.variant,
        "by_image_size": {str(size): result for size, result in results.items()},
    }
    write_report(args.out, payload, device, [__file__, *argv])
    for size, result in results.items():
        plain = result["seconds"]["plain"]["median"]
        ratios = result["ratio_to_plain"]
        print(
            f"{size} px: plain {plain:.3f} s/step; SEF x{ratios['sef']['median']:.3f} "
            f"(IQR/median {ratios['sef']['relative_iqr']:.1%}); "
            f"SEF with naive group loss x{ratios['sef_naive']['median']:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
