"""Images per second per core of the paper's CUB training pipeline: ours against the reference.

Every variant turns the same synthetic CUB-sized JPEGs (500 x 375, generated here, seeded) into
normalised 448 x 448 training tensors, in one process with one torch thread:

* ``reference``: the authors' pipeline -- PIL decode, torchvision.transforms (v1) Resize 600x600,
  RandomCrop 448, RandomHorizontalFlip, ToTensor, Normalize;
* ``sef_float``: sef's pipeline normalising in the worker -- items of a
  ``sef.datasets.ImageList`` (what every reader returns: PIL decode to RGB) through
  ``sef.transforms.train_transform("resize_crop", 448)`` (transforms v2, resizing the uint8
  tensor), the road ``sef train`` took before 2026-11-25;
* ``sef``: what a ``sef train`` worker does when training on a GPU -- the same with
  ``normalise=False``: uint8 out, a quarter of the bytes to collate, pin and copy; the engine
  normalises each batch on the GPU. On the CPU that step would cost the training process
  ``normalise_batch_per_image_ms`` (measured here), so CPU runs keep normalising in workers.

torchvision.io's JPEG decoder is not measured: it is deprecated since torchvision 0.29 (TorchCodec
replaces it), so sef decodes with PIL.

    python benchmarks/dataloader.py            # 48 images x 7 rounds -> results/dataloader.json
    python benchmarks/dataloader.py --quick    # 4 small rounds, to check it runs
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as v1
from common import (
    add_common_arguments,
    configure_torch,
    paired_ratio,
    parse_arguments,
    summarise,
    time_interleaved,
    write_report,
)
from PIL import Image

import sef

CUB_SIZE = (500, 375)  # a typical CUB-200-2011 image (width, height)
CROP, RESIZE = 448, 600


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=48, help="synthetic JPEGs per round")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of the images")
    add_common_arguments(parser, "dataloader.json")
    parser.set_defaults(repeats=7, warmup=1, threads=1)
    args = parse_arguments(parser, argv, {})
    if args.quick:
        vars(args).update(images=3, repeats=2, warmup=0)
    return args


def write_images(folder: Path, count: int, quality: int, seed: int = 0) -> list[Path]:
    """CUB-like JPEGs: a smooth random scene plus sensor-like noise, so they compress alike."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (9, 12, 3), dtype=np.uint8))
        scene = np.asarray(coarse.resize(CUB_SIZE, Image.Resampling.BICUBIC), dtype=np.float32)
        pixels = np.clip(scene + rng.normal(0, 10, scene.shape), 0, 255).astype(np.uint8)
        path = folder / "bird" / f"{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path, quality=quality)
        paths.append(path)
    return paths


def reference_pipeline() -> v1.Compose:
    """The authors' CUB training transform (torchvision.transforms v1 on PIL images)."""
    return v1.Compose(
        [
            v1.Resize((RESIZE, RESIZE)),
            v1.RandomCrop(CROP),
            v1.RandomHorizontalFlip(),
            v1.ToTensor(),
            v1.Normalize(sef.transforms.IMAGENET_MEAN, sef.transforms.IMAGENET_STD),
        ]
    )


def variants(paths: list[Path]) -> dict:
    """name -> a callable that turns every image into a training tensor, returning the last."""
    reference = reference_pipeline()
    samples = [(str(p), 0) for p in paths]
    floats = sef.datasets.ImageList(
        samples, ["bird"], transform=sef.transforms.train_transform("resize_crop", CROP)
    )
    uint8 = sef.datasets.ImageList(
        samples,
        ["bird"],
        transform=sef.transforms.train_transform("resize_crop", CROP, normalise=False),
    )

    def run_reference() -> torch.Tensor:
        for path in paths:
            with Image.open(path) as image:
                out = reference(image.convert("RGB"))
        return out

    def every_item(dataset: sef.datasets.ImageList) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            for index in range(len(dataset)):
                out, _ = dataset[index]
            return out

        return run

    return {"reference": run_reference, "sef_float": every_item(floats), "sef": every_item(uint8)}


def normalise_seconds_per_image(args: argparse.Namespace, device: torch.device) -> float:
    """CPU seconds per image of ``sef.transforms.normalise_batch`` on a uint8 batch of 32."""
    pixels = torch.randint(0, 256, (32, 3, CROP, CROP), dtype=torch.uint8)
    run = {"normalise_batch": lambda: sef.transforms.normalise_batch(pixels)}
    seconds = time_interleaved(run, args.repeats, args.warmup, device, "normalise")
    return summarise(seconds["normalise_batch"])["median"] / len(pixels)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = configure_torch(args)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(Path(tmp), args.images, args.quality)
        runs = variants(paths)
        count = len(paths)
        jpeg_kb = float(np.mean([p.stat().st_size for p in paths]) / 1024)
        seconds = time_interleaved(runs, args.repeats, args.warmup, device, "dataloader")
        outputs = {name: run() for name, run in runs.items()}
    rounds = {name: summarise(times) for name, times in seconds.items()}
    results = {
        name: {"images_per_s_per_core": count / r["median"], "round_seconds": r}
        for name, r in rounds.items()
    }
    speedups = {
        name: paired_ratio(seconds["reference"], times)
        for name, times in seconds.items()
        if name != "reference"
    }
    payload = {
        "what": "CUB train pipeline, images/s on one core (1 torch thread, 1 process)",
        "images": {"count": count, "size": list(CUB_SIZE), "jpeg_quality": args.quality,
                   "mean_jpeg_kb": round(jpeg_kb, 1)},
        "output_shapes": {name: list(out.shape) for name, out in outputs.items()},
        "output_dtypes": {name: str(out.dtype) for name, out in outputs.items()},
        "results": results,
        "speedup_vs_reference": speedups,
        "normalise_batch_per_image_ms": 1000 * normalise_seconds_per_image(args, device),
    }  # fmt: skip
    for name, result in results.items():
        print(f"{name:>16}: {result['images_per_s_per_core']:7.1f} images/s per core")
    for name, ratio in speedups.items():
        print(f"{name:>16}: {ratio['median']:.2f}x the reference (paired median)")
    write_report(args.out, payload, device)
    return payload


if __name__ == "__main__":
    main(sys.argv[1:])
