"""Forward + backward time of sef.group_loss against the naive C x C form, both variants.

The default shape is ResNet-50's last feature map at 448 px (B=8, C=2048, 14 x 14), G=4.
All four (fast/naive x reference/paper) are interleaved in one run; the JSON gives each
one's seconds per call, the naive/fast speed-up per variant, and peak memory.

    python benchmarks/group_loss.py             # the issue's shape -> results/group_loss.json
    python benchmarks/group_loss.py --quick     # tiny shapes, to check it runs
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

import torch
from common import (
    add_common_arguments,
    add_memory_arguments,
    argv_without_memory_flags,
    configure_torch,
    measure_peak_memory,
    memory_in_subprocesses,
    paired_ratio,
    parse_arguments,
    summarise,
    time_interleaved,
    write_report,
)
from naive_group_loss import naive_group_loss

import sef
from sef.losses import GROUP_LOSS_VARIANTS

IMPLEMENTATIONS = {"fast": sef.group_loss, "naive": naive_group_loss}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channels", type=int, default=2048)
    parser.add_argument("--size", type=int, default=14, help="feature map height = width")
    parser.add_argument("--groups", type=int, default=4)
    add_memory_arguments(parser)
    add_common_arguments(parser, "group_loss.json")
    quick = dict(batch=2, channels=64, size=4, repeats=3, warmup=1, threads=1)
    return parse_arguments(parser, argv, quick)


def forward_backward(
    loss_fn: Callable, features: torch.Tensor, groups: int, variant: str
) -> Callable[[], None]:
    """One call: the loss of ``features`` and its gradient, as in a training step."""

    def run() -> None:
        features.grad = None
        loss_fn(features, groups, variant).backward()

    return run


def build_variants(args: argparse.Namespace, device: torch.device) -> dict[str, Callable]:
    """'<implementation>/<variant>' -> a forward+backward call on one shared feature map."""
    generator = torch.Generator().manual_seed(0)
    shape = (args.batch, args.channels, args.size, args.size)
    # Post-ReLU features, like the backbone's last feature map.
    features = torch.randn(shape, generator=generator).relu().to(device).requires_grad_()
    return {
        f"{impl}/{variant}": forward_backward(fn, features, args.groups, variant)
        for variant in GROUP_LOSS_VARIANTS
        for impl, fn in IMPLEMENTATIONS.items()
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    device = configure_torch(args)
    variants = build_variants(args, device)
    if args.memory_of:
        print(json.dumps(measure_peak_memory(variants[args.memory_of], device)))
        return 0
    seconds = time_interleaved(variants, args.repeats, args.warmup, device, "group loss")
    speedups = {
        variant: paired_ratio(seconds[f"naive/{variant}"], seconds[f"fast/{variant}"])
        for variant in GROUP_LOSS_VARIANTS
    }
    memory = None
    if not args.no_memory:
        own_argv = argv_without_memory_flags(argv)
        memory = memory_in_subprocesses(__file__, own_argv, list(variants), "group loss memory")
    payload = {
        "benchmark": "group_loss forward+backward",
        "shape": {
            "batch": args.batch,
            "channels": args.channels,
            "height": args.size,
            "width": args.size,
            "groups": args.groups,
        },
        "seconds": {name: summarise(times) for name, times in seconds.items()},
        "speedup_naive_over_fast": speedups,
        "peak_memory": memory,
    }
    write_report(args.out, payload, device, [__file__, *argv])
    for variant, summary in speedups.items():
        fast = payload["seconds"][f"fast/{variant}"]["median"]
        naive = payload["seconds"][f"naive/{variant}"]["median"]
        print(
            f"{variant:9s} fast {fast * 1e3:8.2f} ms  naive {naive * 1e3:8.2f} ms  "
            f"speed-up x{summary['median']:.1f} (IQR/median {summary['relative_iqr']:.0%})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
