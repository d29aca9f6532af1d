"""Inference latency of the deployed SEF model against its plain backbone: the same graph.

``SEF.export()`` (backbone + global head) is compared with torchvision's network of the same
name and class count, both in PyTorch (eager, eval mode; SEF's own eval mode too) and as ONNX
files written by ``sef.export.write_onnx`` and run by onnxruntime. All are interleaved in one
run; the JSON also says whether the two ONNX graphs have the same operators and weight shapes.

    python benchmarks/inference.py           # ResNet-50, 448 px, batch 1 -> results/inference.json
    python benchmarks/inference.py --quick   # ResNet-18 at 32 px, to check it runs
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from common import (
    add_common_arguments,
    configure_torch,
    paired_ratios,
    parse_arguments,
    summarise,
    time_interleaved,
    write_report,
)
from torch import nn

import sef
from sef.export import INPUT_NAME, write_onnx


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="resnet50", help="a torchvision model name")
    parser.add_argument("--image-size", type=int, default=448)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--no-onnx", action="store_true", help="time PyTorch only")
    add_common_arguments(parser, "inference.json")
    quick = dict(backbone="resnet18", image_size=32, repeats=3, warmup=1, threads=1)
    return parse_arguments(parser, argv, quick)


def graph_signature(path: Path) -> dict[str, list]:
    """What makes two ONNX graphs compute the same thing: operators in order, weight shapes."""
    import onnx

    graph = onnx.load(str(path)).graph
    return {
        "operators": [node.op_type for node in graph.node],
        "weight_shapes": sorted(list(init.dims) for init in graph.initializer),
    }


def onnx_runner(path: Path, images: torch.Tensor, threads: int) -> Callable[[], object]:
    """One onnxruntime CPU call on ``images``."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {INPUT_NAME: images.numpy()}
    return lambda: session.run(None, feed)


def torch_runner(model: nn.Module, images: torch.Tensor) -> Callable[[], object]:
    """One eval-mode forward pass without autograd."""

    @torch.no_grad()
    def run() -> torch.Tensor:
        return model(images)

    return run


def onnx_latency(
    models: dict[str, nn.Module], images: torch.Tensor, args: argparse.Namespace
) -> tuple[dict[str, list[float]], dict]:
    """Seconds per onnxruntime call of the plain and the exported model, and their graphs."""
    with tempfile.TemporaryDirectory(prefix="sef-onnx-") as scratch:
        paths = {name: Path(scratch) / f"{name}.onnx" for name in ("plain", "sef_export")}
        runners = {}
        for name, path in paths.items():
            write_onnx(copy.deepcopy(models[name]).cpu(), path, args.image_size)
            runners[f"onnx_{name}"] = onnx_runner(path, images.cpu(), torch.get_num_threads())
        plain, exported = (graph_signature(path) for path in paths.values())
        cpu = torch.device("cpu")
        seconds = time_interleaved(runners, args.repeats, args.warmup, cpu, "onnxruntime")
    graphs = {
        "same_operators": plain["operators"] == exported["operators"],
        "same_weight_shapes": plain["weight_shapes"] == exported["weight_shapes"],
        "operators": len(plain["operators"]),
    }
    return seconds, graphs


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    device = configure_torch(args)
    torch.manual_seed(0)
    trained = sef.SEF(args.backbone, args.classes, groups=args.groups)
    models = {
        "plain": torchvision.models.get_model(args.backbone, num_classes=args.classes),
        "sef_export": trained.export(),
        "sef_eval": trained,
    }
    models = {name: model.to(device).eval() for name, model in models.items()}
    images = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    # PyTorch and onnxruntime are timed apart: each disturbs the call that follows it.
    runners = {name: torch_runner(model, images) for name, model in models.items()}
    seconds = time_interleaved(runners, args.repeats, args.warmup, device, "pytorch")
    ratios = paired_ratios(seconds, "plain")
    graphs = None
    if not args.no_onnx:
        onnx_seconds, graphs = onnx_latency(models, images, args)
        ratios |= paired_ratios(onnx_seconds, "onnx_plain")
        seconds |= onnx_seconds
    payload = {
        "benchmark": "inference latency, eval mode, no autograd",
        "backbone": args.backbone,
        "image_size": args.image_size,
        "batch": args.batch,
        "classes": args.classes,
        "parameters": {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()},
        "onnx_graphs": graphs,
        "seconds": {name: summarise(times) for name, times in seconds.items()},
        "ratio_to_plain": ratios,
    }
    write_report(args.out, payload, device, [__file__, *argv])
    for name, ratio in ratios.items():
        spread = ratio["relative_iqr"]
        print(f"{name:16s} x{ratio['median']:.3f} of plain (IQR/median {spread:.1%})")
    if graphs is not None:
        print(
            f"ONNX graphs: same operators {graphs['same_operators']}, "
            f"same weight shapes {graphs['same_weight_shapes']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
