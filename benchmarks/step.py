"""One training step of SEF against its plain backbone: what SEF costs to train.

A step is forward, every loss term, backward and an SGD update, on a fixed random batch.
Three variants are interleaved at each image size:

* ``plain``: torchvision's (or timm's, for ``timm:<model>``) network with ``num_classes``
  outputs, cross-entropy only;
* ``sef``: ``sef.SEF`` + ``sef.SEFLoss`` (ce, entropy, distillation, group loss) + the groups'
  correlation readout that ``sef train`` records every step (``sef.losses.group_correlation``);
* ``sef_naive``: the same, with the group loss through the full C x C cosine matrix.

The readout's own cost is also timed alone (``readout_seconds``: ``group_correlation`` on the
SEF network's last map of the batch, many repeats) and given as a share of SEF's step: a step
ratio moves by a few percent with the machine's load, the readout's share does not. So is the
norm of the gradients that ``sef train`` records every step, plain or SEF
(``gradient_norm_seconds``: ``sef.engine.loop.gradient_norm`` after SEF's backward).

    python benchmarks/step.py                       # ResNet-50, 448 and 224 px -> results/step.json
    python benchmarks/step.py --sizes 224 --batch 4
    python benchmarks/step.py --quick               # ResNet-18 at 32 px, to check it runs
    python benchmarks/step.py --backbone timm:vit_small_patch16_224 --sizes 224 \
        --out benchmarks/results/step_vit_small.json   # a token backbone against timm's model
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
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
from sef.backbones import TIMM_PREFIX
from sef.engine.loop import gradient_norm
from sef.losses import GROUP_LOSS_VARIANTS, group_correlation

VARIANTS = ("plain", "sef", "sef_naive")
READOUT_REPEATS = 50
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backbone", default="resnet50", help="a torchvision model name or timm:<model>"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[448, 224], help="image sizes")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--variant", default="reference", choices=GROUP_LOSS_VARIANTS)
    parser.add_argument(
        "--clock",
        default="wall",
        choices=CLOCKS,
        help="wall time, or this process's CPU time (one-thread CPU runs on a shared machine)",
    )
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


def plain_model(backbone: str, classes: int, size: int) -> nn.Module:
    """The backbone's own classifier with ``classes`` outputs; fixed-size timm models (ViT,
    Swin) built for ``size`` px, as ``sef.SEF(..., image_size=size)`` builds them."""
    if not backbone.startswith(TIMM_PREFIX):
        return torchvision.models.get_model(backbone, num_classes=classes)
    import timm

    name = backbone[len(TIMM_PREFIX) :]
    cfg = timm.models.get_pretrained_cfg(name)
    resize = cfg is not None and cfg.fixed_input_size and cfg.input_size[-1] != size
    return timm.create_model(name, num_classes=classes, **({"img_size": size} if resize else {}))


def build_model_and_loss(
    name: str, args: argparse.Namespace, size: int
) -> tuple[nn.Module, Callable]:
    """The network and a (output, target) -> scalar loss of one variant."""
    if name == "plain":
        return plain_model(args.backbone, args.classes, size), F.cross_entropy
    model = sef.SEF(args.backbone, args.classes, groups=args.groups, image_size=size)
    criterion = sef.SEFLoss(args.groups, group_variant=args.variant)
    if name == "sef_naive":
        return model, naive_sef_loss(criterion)

    def loss(output: sef.SEFOutput, target: torch.Tensor) -> torch.Tensor:
        group_correlation(output.features, args.groups)  # as train_one_epoch records it
        return criterion(output, target)["total"]

    return model, loss


def training_step(name: str, args: argparse.Namespace, size: int, device: torch.device) -> Callable:
    """A closure running one SGD step of variant ``name`` on a fixed batch of ``size`` px."""
    torch.manual_seed(0)
    model, loss_fn = build_model_and_loss(name, args, size)
    model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(args.batch, 3, size, size, device=device)
    target = torch.randint(args.classes, (args.batch,), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(images), target).backward()
        optimizer.step()

    return step


def time_readouts(args: argparse.Namespace, size: int, device: torch.device, clock) -> dict:
    """Seconds of the correlation readout alone on the SEF network's last map of the batch, and
    of the gradient norm alone after its backward."""
    torch.manual_seed(0)
    model = sef.SEF(args.backbone, args.classes, groups=args.groups, image_size=size)
    images = torch.randn(args.batch, 3, size, size, device=device)
    output = model.to(device).train()(images)
    target = torch.randint(args.classes, (args.batch,), device=device)
    sef.SEFLoss(args.groups)(output, target)["total"].backward()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    features = output.features.detach()
    readouts = {
        "readout": lambda: group_correlation(features, args.groups),
        "gradient_norm": lambda: gradient_norm(optimizer),
    }
    seconds = time_interleaved(readouts, READOUT_REPEATS, 2, device, f"{size}px readouts", clock)
    return {name: summarise(times) for name, times in seconds.items()}


def count_flops(name: str, args: argparse.Namespace, size: int, device: torch.device) -> int:
    """Floating-point operations of one forward + backward of variant ``name`` (matrix products
    and convolutions, as torch.utils.flop_counter counts them): a cost no other process moves."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model, loss_fn = build_model_and_loss(name, args, size)
    model.to(device).train()
    images = torch.randn(args.batch, 3, size, size, device=device)
    target = torch.randint(args.classes, (args.batch,), device=device)
    with FlopCounterMode(display=False) as counter:
        loss_fn(model(images), target).backward()
    return counter.get_total_flops()


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
        if args.clock == "cpu" and (device.type != "cpu" or torch.get_num_threads() != 1):
            raise SystemExit("--clock cpu needs --device cpu and --threads 1")
        clock = CLOCKS[args.clock]
        label = f"{size}px steps"
        seconds = time_interleaved(steps, args.repeats, args.warmup, device, label, clock)
        del steps
        readouts = time_readouts(args, size, device, clock)
        sef_step = statistics.median(seconds["sef"])
        flops = {name: count_flops(name, args, size, device) for name in VARIANTS}
        results[size] = {
            "seconds": {name: summarise(times) for name, times in seconds.items()},
            "ratio_to_plain": paired_ratios(seconds, "plain"),
            "flops": flops,
            "flop_ratio_to_plain": {name: flops[name] / flops["plain"] for name in VARIANTS[1:]},
            "readout_seconds": readouts["readout"],
            "readout_share_of_sef_step": readouts["readout"]["median"] / sef_step,
            "gradient_norm_seconds": readouts["gradient_norm"],
            "gradient_norm_share_of_sef_step": readouts["gradient_norm"]["median"] / sef_step,
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
        "clock": args.clock,
        "by_image_size": {str(size): result for size, result in results.items()},
    }
    write_report(args.out, payload, device, [__file__, *argv])
    for size, result in results.items():
        plain = result["seconds"]["plain"]["median"]
        ratios = result["ratio_to_plain"]
        print(
            f"{size} px: plain {plain:.3f} s/step; SEF x{ratios['sef']['median']:.3f} "
            f"(IQR/median {ratios['sef']['relative_iqr']:.1%}); "
            f"SEF with naive group loss x{ratios['sef_naive']['median']:.3f}; "
            f"FLOPs: SEF x{result['flop_ratio_to_plain']['sef']:.4f}; "
            f"readout {result['readout_share_of_sef_step']:.3%} and gradient norm "
            f"{result['gradient_norm_share_of_sef_step']:.3%} of SEF's step"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
