"""Training images/s of SEF-ResNet-50 at 448 px, batch 32: the authors' fp32 road against ours.

Every road trains through the engine's own ``sef.engine.train_one_epoch`` for one epoch of
CUB's size (5,994 images) over synthetic JPEGs of CUB's image size, written by this script,
after a short warm-up (cuDNN autotuning, compilation; the epoch's last, shorter batch too):

* ``authors_fp32``: fp32, PIL decode and transforms in 8 worker processes started afresh each
  epoch, no pinned memory, NCHW float batches (the authors' main.py);
* ``fast``: bf16 autocast, channels_last, cudnn.benchmark, optional torch.compile; the data
  road of ``sef train`` (``sef.engine.train_loader``: PIL decode and uint8 resize/crop/flip in
  persistent workers, pinned uint8 batches, float conversion and ImageNet normalisation on the
  device);
* ``fast_cache``: the same, reading the images from a decoded-image cache
  (``sef.datasets.cache``, built here once: its size and build time are recorded) instead of
  decoding JPEGs: the workers copy resized rows, the batch is cropped and flipped on the device
  (``sef train --cache``);
* ``fast_gpu_decode``: the same, decoding the JPEGs on the GPU with
  ``torchvision.io.decode_jpeg(device="cuda")`` (CUDA only; deprecated since torchvision 0.29
  in favour of TorchCodec, measured here to see whether it would pay);
* ``plain``: the plain backbone (groups=1, lam=gamma=phi=0, as the method-plain preset) on
  the fast road: the ceiling SEF is held to;
* ``sef_compute`` / ``plain_compute``: the same steps on one batch kept on the device, so
  the data path costs nothing: how close the fast road gets to the hardware.

Then two evaluation passes (``sef.engine.evaluate``) over CUB's test-set size on the authors'
road, the fast road and the cache road, as ``sef train`` evaluates after each epoch (the fast
roads through one loader whose workers persist, so the second pass is what every later epoch
pays), and the model alone on one on-device batch as often (``eval_compute_seconds``), for the
projected time of the paper's 50-epoch CUB recipe and issue 21's targets.

    python benchmarks/gpu_epoch.py                  # on a CUDA machine -> results/gpu_epoch.json
    python benchmarks/gpu_epoch.py --compile
    python benchmarks/gpu_epoch.py --quick          # CPU, tiny, 2 steps: checks that it runs
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path

import torch
import torch.nn.functional as F
from common import (
    RESULTS_DIR,
    configure_torch,
    parse_arguments,
    peak_memory_mb,
    seconds_of,
    write_report,
)
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchvision.io import ImageReadMode, decode_jpeg
from tqdm import tqdm

import sef
from sef import engine, transforms
from sef.datasets import ImageList, cache
from sef.datasets.cache import Built, ImageCache
from sef.distributed import Context
from sef.engine.data import DeviceBatches
from sef.engine.device import autocast, to_device
from sef.engine.evaluation import evaluation_loader

RECIPE = "resize_crop"  # CUB's: resize to 600 x 600, crop 448, flip


@dataclass(frozen=True)
class Road:
    """One way to train: the model, where images are decoded, precision and memory layout."""

    name: str
    model: str  # "sef" or "plain"
    data: str  # "float" (normalised in workers), "uint8", "cache", "gpu_decode" or "on_device"
    amp: str  # "none" or "bf16"
    fast: bool  # channels_last, cudnn.benchmark, compile if asked, persistent pinned workers


ROADS = (
    Road("authors_fp32", "sef", "float", "none", fast=False),
    Road("fast", "sef", "uint8", "bf16", fast=True),
    Road("fast_cache", "sef", "cache", "bf16", fast=True),
    Road("fast_gpu_decode", "sef", "gpu_decode", "bf16", fast=True),
    Road("plain", "plain", "uint8", "bf16", fast=True),
    Road("sef_compute", "sef", "on_device", "bf16", fast=True),
    Road("plain_compute", "plain", "on_device", "bf16", fast=True),
)
EVALUATED = ("authors_fp32", "fast", "fast_cache")
FAST_ROADS = ("fast", "fast_cache", "fast_gpu_decode")  # sef train's roads: the fastest counts


def parse_args(
    argv: list[str] | None = None, out: Path = RESULTS_DIR / "gpu_epoch.json", doc: str = __doc__
) -> argparse.Namespace:
    """This script's options; ``out`` and ``doc`` let another GPU script share them."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image-size", type=int, default=448)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--train-images", type=int, default=5994, help="images per epoch (CUB)")
    parser.add_argument("--test-images", type=int, default=5794, help="eval images (CUB)")
    parser.add_argument("--epochs", type=int, default=50, help="epochs of the projected recipe")
    parser.add_argument("--warmup", type=int, default=15, help="untimed steps per road")
    parser.add_argument("--jpegs", type=int, default=512, help="distinct synthetic JPEGs")
    parser.add_argument("--jpeg-side", type=int, default=500, help="long side (CUB: 500)")
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    parser.add_argument("--authors-workers", type=int, default=8, help="their main.py's 8")
    parser.add_argument("--compile", action="store_true", help="torch.compile the fast roads")
    parser.add_argument("--roads", nargs="+", choices=[r.name for r in ROADS], default=None)
    parser.add_argument("--jpeg-dir", type=Path, default=None, help="keep the JPEGs here")
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--quick", action="store_true", help="CPU-sized: tiny model and data")
    quick = dict(
        backbone="resnet18",
        image_size=32,
        batch_size=2,
        train_images=4,
        test_images=4,
        warmup=1,
        jpegs=4,
        jpeg_side=80,
        workers=1,
        authors_workers=1,
        threads=1,
    )
    return parse_arguments(parser, argv, quick)


# ---------------------------------------------------------------------------- synthetic data


def write_jpegs(folder: Path, count: int, long_side: int, seed: int = 0) -> list[Path]:
    """``count`` photo-like JPEGs (smooth colour fields plus grain), CUB's shape and quality."""
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    paths = []
    for i in range(count):
        short = int(torch.randint(long_side * 9 // 16, long_side + 1, (), generator=generator))
        size = (short, long_side) if i % 4 else (long_side, short)  # 1 in 4 portrait
        field = F.interpolate(
            torch.rand(1, 3, 6, 8, generator=generator) * 255, size=size, mode="bicubic"
        )[0]
        grain = torch.randn(3, *size, generator=generator) * 16
        pixels = (field + grain).clamp(0, 255).byte().permute(1, 2, 0).numpy()
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def cycled(files: list[Path], labels: list[int], length: int) -> list[tuple[str, int]]:
    """``length`` (path, label) samples cycling over the files: an epoch of any size."""
    return [(str(files[i % len(files)]), labels[i % len(labels)]) for i in range(length)]


class JpegBytes(Dataset):
    """(undecoded file, label) items, for decoding on the GPU."""

    def __init__(self, samples: list[tuple[str, int]]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.samples[index]
        return torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.uint8), label


def collate_undecoded(batch: list[tuple[Tensor, int]]) -> tuple[list[Tensor], Tensor]:
    """JPEG files differ in length, so a batch of them stays a list."""
    return [data for data, _ in batch], torch.tensor([label for _, label in batch])


class GpuDecoded:
    """Batches of JPEG files decoded with ``torchvision.io.decode_jpeg(device=...)`` and given
    the recipe's resize / crop / flip there; the engine then normalises the uint8 batch."""

    def __init__(self, loader: DataLoader, device: torch.device, image_size: int) -> None:
        self.loader, self.device = loader, device
        self.geometry = transforms.train_transform(RECIPE, image_size, normalise=False)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for files, labels in self.loader:
            decoded = decode_jpeg(files, mode=ImageReadMode.RGB, device=self.device)
            yield torch.stack([self.geometry(image) for image in decoded]), labels


class RepeatedBatch:
    """One batch already on the device, ``steps`` times: training with a free data path."""

    def __init__(self, images: Tensor, labels: Tensor, steps: int) -> None:
        self.images, self.labels, self.steps = images, labels, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for _ in range(self.steps):
            yield self.images, self.labels


class FirstBatches:
    """The first ``count`` batches of ``batches``: a short warm-up epoch."""

    def __init__(self, batches, count: int) -> None:
        self.batches, self.count = batches, min(count, len(batches))

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator:
        return islice(iter(self.batches), self.count)


def _images(args: argparse.Namespace, files: list[Path], count: int, transform) -> ImageList:
    """``count`` of the JPEGs with seeded random labels, as ``sef.datasets`` reads them."""
    labels = torch.randint(args.classes, (len(files),), generator=torch.Generator().manual_seed(1))
    classes = [str(c) for c in range(args.classes)]
    return ImageList(cycled(files, labels.tolist(), count), classes, transform=transform)


def image_cache(args: argparse.Namespace, files: list[Path]) -> tuple[ImageCache, Built | None]:
    """The decoded-image cache of the JPEGs (beside them), built on first use: the build's
    size and seconds are returned with it then."""
    distinct = _images(args, files, len(files), None)
    folder = files[0].parent / "decoded-cache"
    return cache.ensure(folder, [distinct], list, RECIPE, args.image_size, workers=args.workers,
                        progress=False)  # fmt: skip


def cache_facts(args: argparse.Namespace, files: list[Path]) -> dict:
    """The cache's size and build time (None if an earlier run built it)."""
    opened, built = image_cache(args, files)
    seconds = None if built is None else built.seconds
    return {"images": opened.count, "bytes": opened.bytes, "build_seconds": seconds}


def _authors_batches(args: argparse.Namespace, files: list[Path]) -> DataLoader:
    """PIL decode and float transforms in workers restarted each epoch, no pinned memory."""
    transform = transforms.train_transform(RECIPE, args.image_size)
    dataset = _images(args, files, args.train_images, transform)
    return DataLoader(
        dataset, args.batch_size, shuffle=True, num_workers=args.authors_workers, drop_last=True
    )


def _fast_batches(
    args: argparse.Namespace, files: list[Path], device: torch.device, data: str
) -> DataLoader | DeviceBatches | GpuDecoded:
    """sef train's road: ``sef.engine.train_loader`` over uint8 images (normalised on the
    device by the engine), read from JPEGs or (``data="cache"``) from their decoded-image
    cache; or the JPEG files themselves, for the GPU to decode."""
    transform = transforms.train_transform(RECIPE, args.image_size, normalise=False)
    dataset = _images(args, files, args.train_images, transform)
    if data == "cache":
        dataset = cache.CachedTrainImages(
            dataset, image_cache(args, files)[0], RECIPE, args.image_size
        )
    if data != "gpu_decode":
        return engine.train_loader(
            dataset,
            batch_size=args.batch_size,
            workers=args.workers,
            seed=0,
            context=Context(device=device),
        )
    loader = DataLoader(
        JpegBytes(dataset.samples),
        args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=args.workers > 0,
        drop_last=True,
        collate_fn=collate_undecoded,
    )
    return GpuDecoded(loader, device, args.image_size)


def images_per_epoch(batches, batch_size: int) -> int:
    """Images one pass over ``batches`` trains on (a loader may end on a shorter batch)."""
    loader = getattr(batches, "loader", batches)
    if isinstance(loader, DataLoader) and not loader.drop_last:
        return len(loader.sampler)
    return len(batches) * batch_size


def short_batch(args: argparse.Namespace, size: int, device: torch.device) -> RepeatedBatch:
    """One uint8 batch of ``size`` images on the device, as the loader's last batch arrives."""
    shape = (size, 3, args.image_size, args.image_size)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
    return RepeatedBatch(images, torch.randint(args.classes, (size,), device=device), 1)


def train_batches(road: Road, args: argparse.Namespace, files: list[Path], device: torch.device):
    """One epoch of ``args.train_images`` images on ``road``'s data path."""
    if road.data == "on_device":
        size = (args.batch_size, 3, args.image_size, args.image_size)
        images = torch.randn(size, device=device).contiguous(memory_format=torch.channels_last)
        labels = torch.randint(args.classes, (args.batch_size,), device=device)
        return RepeatedBatch(images, labels, args.train_images // args.batch_size)
    if road.data == "float":
        return _authors_batches(args, files)
    return _fast_batches(args, files, device, road.data)


# ------------------------------------------------------------------------------ the roads


def build_training(
    road: Road, args: argparse.Namespace, device: torch.device
) -> tuple[sef.SEF, nn.Module, sef.SEFLoss, torch.optim.Optimizer]:
    """The model, the module that trains (maybe compiled), the loss and the paper's SGD."""
    torch.manual_seed(0)
    if road.model == "plain":
        model = sef.SEF(args.backbone, args.classes, groups=1)
        criterion = sef.SEFLoss(1, lam=0.0, gamma=0.0, phi=0.0)
        model.group_heads.requires_grad_(False)  # nothing trains them, as in the engine
    else:
        model = sef.SEF(args.backbone, args.classes, groups=args.groups)
        criterion = sef.SEFLoss(args.groups)
    layout = torch.channels_last if road.fast else torch.contiguous_format
    model = model.to(device, memory_format=layout)
    trainer = torch.compile(model) if road.fast and args.compile else model
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(parameters, lr=0.01, momentum=0.9)
    return model, trainer, criterion, optimizer


def evaluate_pass(
    model: sef.SEF, data, args: argparse.Namespace, device: torch.device, road: Road
) -> Callable[[], object]:
    """One ``sef.engine.evaluate`` pass over ``data`` (a dataset, or a loader from
    :func:`evaluation_batches`) on ``road``, as ``sef train`` runs it after each epoch (the
    authors' road with their 8 workers)."""
    return lambda: engine.evaluate(
        model,
        data,
        batch_size=args.batch_size,
        workers=args.authors_workers if road.data == "float" else args.workers,
        context=Context(device=device),
        amp=road.amp,
        channels_last=road.fast,
        progress=False,
    )


def evaluation_batches(
    road: Road, args: argparse.Namespace, files: list[Path], device: torch.device
) -> DataLoader:
    """``args.test_images`` test images on ``road``'s data path, through the loader ``evaluate``
    reads: on the fast roads one whose workers persist from pass to pass, as in ``fit``; the
    authors' road starts its workers at every pass."""
    transform = transforms.test_transform(RECIPE, args.image_size, normalise=road.data == "float")
    dataset = _images(args, files, args.test_images, transform)
    if road.data == "cache":
        opened = image_cache(args, files)[0]
        dataset = cache.CachedTestImages(dataset, opened, RECIPE, args.image_size, False)
    workers = args.authors_workers if road.data == "float" else args.workers
    return evaluation_loader(
        dataset, args.batch_size, workers, Context(device=device), persistent=road.fast
    )


def time_evaluation(
    road: Road, model: sef.SEF, args: argparse.Namespace, files: list[Path], device: torch.device
) -> dict[str, float]:
    """Seconds of two ``sef.engine.evaluate`` passes over ``args.test_images`` images: the
    first (workers start, cuDNN tunes the last batch's shape) and the second, as every later
    epoch of a run pays it."""
    batches = evaluation_batches(road, args, files, device)
    first = seconds_of(evaluate_pass(model, batches, args, device, road), device)
    return {
        "eval_seconds_first": first,
        "eval_seconds": seconds_of(evaluate_pass(model, batches, args, device, road), device),
    }


def compute_pass(model: sef.SEF, args: argparse.Namespace, device: torch.device) -> None:
    """``forward_sef`` on one on-device batch, once per batch of the test set: the model alone
    of an evaluation pass (bf16, channels_last)."""
    images = torch.randint(0, 256, (args.batch_size, 3, args.image_size, args.image_size))
    images = to_device(images.to(torch.uint8), device, channels_last=True)
    with torch.inference_mode(), autocast(device, "bf16"):
        for _ in range(-(-args.test_images // args.batch_size)):
            model.forward_sef(images)


def run_road(road: Road, args: argparse.Namespace, files: list[Path], device: torch.device) -> dict:
    """Warm up, then time one epoch of ``sef.engine.train_one_epoch`` on ``road``."""
    torch.backends.cudnn.benchmark = road.fast
    model, trainer, criterion, optimizer = build_training(road, args, device)
    built = cache_facts(args, files) if road.data == "cache" else None
    batches = train_batches(road, args, files, device)

    def epoch(loader) -> None:
        engine.train_one_epoch(
            trainer,
            criterion,
            loader,
            optimizer,
            context=Context(device=device),
            epoch=1,
            amp=road.amp,
            channels_last=road.fast,
            progress=False,
        )

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    epoch(FirstBatches(batches, args.warmup))
    remainder = images_per_epoch(batches, args.batch_size) % args.batch_size
    if remainder:  # the epoch's last, shorter batch: tune (and compile) its shape too, as a
        epoch(short_batch(args, remainder, device))  # whole run pays that only once
    seconds = seconds_of(lambda: epoch(batches), device)
    result = {
        **asdict(road),
        "steps": len(batches),
        "epoch_seconds": seconds,
        "images_per_second": images_per_epoch(batches, args.batch_size) / seconds,
        "peak_memory_mb": peak_memory_mb(device) if device.type == "cuda" else None,
    }
    if road.data == "cache":
        result["cache"] = built
    if road.name in EVALUATED:
        result |= time_evaluation(road, model, args, files, device)
    if road.name == "fast":
        compute_pass(model, args, device)  # warm-up: cuDNN tunes the whole-batch shapes
        result["eval_compute_seconds"] = seconds_of(
            lambda: compute_pass(model, args, device), device
        )
    return result


def _met(targets: dict[str, tuple[float | None, Callable[[float], bool]]]) -> dict:
    """name -> whether its measured value passes; None where a road it needs did not run."""
    return {name: None if v is None else passes(v) for name, (v, passes) in targets.items()}


def summarise_roads(results: dict[str, dict], args: argparse.Namespace) -> dict:
    """The ratios issues 6 and 21 set targets for, and the projected time of the CUB recipe."""
    speed = {name: r["images_per_second"] for name, r in results.items()}
    summary: dict = {}
    fast = max((name for name in FAST_ROADS if name in speed), key=speed.get, default=None)
    summary["fastest_road"] = fast
    ratios = {  # name -> (numerator road, denominator road) of images/s
        "fast_over_authors": (fast, "authors_fp32"),
        "fast_fraction_of_plain": (fast, "plain"),
        "fast_fraction_of_compute_only": (fast, "sef_compute"),
        "fast_fraction_of_plain_compute": (fast, "plain_compute"),
        "sef_compute_fraction_of_plain_compute": ("sef_compute", "plain_compute"),
        "cache_over_jpeg": ("fast_cache", "fast"),
        "gpu_decode_over_cpu_decode": ("fast_gpu_decode", "fast"),
    }
    for name, (top, bottom) in ratios.items():
        if top in speed and bottom in speed:
            summary[name] = speed[top] / speed[bottom]
    evaluations = {n: r["eval_seconds"] for n, r in results.items() if "eval_seconds" in r}
    projected = {}
    for name in ("authors_fp32", *FAST_ROADS):
        evaluated = name if name in evaluations else "fast"  # GPU decoding: the fast road's
        if name in speed and evaluated in evaluations:
            epoch = args.train_images / speed[name] + evaluations[evaluated]
            projected[name] = args.epochs * epoch / 60
    summary["projected_recipe_minutes"] = projected
    best = min((projected[n] for n in FAST_ROADS if n in projected), default=None)
    model_alone = results.get("fast", {}).get("eval_compute_seconds")
    fast_eval = min((evaluations[n] for n in FAST_ROADS if n in evaluations), default=None)
    if model_alone and fast_eval:
        summary["eval_over_model_alone"] = fast_eval / model_alone
    step_ratio = summary.get("sef_compute_fraction_of_plain_compute")
    summary["targets_met"] = _met(  # issue 21
        {
            "fast_fraction_of_plain_compute >= 0.95": (
                summary.get("fast_fraction_of_plain_compute"),
                lambda v: v >= 0.95,
            ),
            "sef step <= 1.03 x plain step (compute only)": (
                None if step_ratio is None else 1 / step_ratio,
                lambda v: v <= 1.03,
            ),
            "evaluation <= 1.2 x model alone": (
                summary.get("eval_over_model_alone"),
                lambda v: v <= 1.2,
            ),
            "projected recipe <= 7 min": (best, lambda v: v <= 7),
        }
    )
    summary["targets_met_issue_6"] = _met(
        {
            "fast_over_authors >= 3": (summary.get("fast_over_authors"), lambda v: v >= 3),
            "fast_fraction_of_plain >= 0.7": (
                summary.get("fast_fraction_of_plain"),
                lambda v: v >= 0.7,
            ),
            "projected fast recipe < 15 min": (best, lambda v: v < 15),
        }
    )
    return summary


def chosen_roads(args: argparse.Namespace, device: torch.device) -> tuple[list[Road], list[str]]:
    """The roads to run here and the names skipped (GPU decoding needs CUDA)."""
    wanted = [r for r in ROADS if args.roads is None or r.name in args.roads]
    runnable = [r for r in wanted if r.data != "gpu_decode" or device.type == "cuda"]
    return runnable, [r.name for r in wanted if r not in runnable]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    device = configure_torch(args)
    roads, skipped = chosen_roads(args, device)
    with tempfile.TemporaryDirectory(prefix="sef-jpegs-") as scratch:
        files = write_jpegs(args.jpeg_dir or Path(scratch), args.jpegs, args.jpeg_side)
        jpeg_kb = sum(f.stat().st_size for f in files) / len(files) / 1024
        results = {}
        for road in tqdm(roads, desc="roads", unit="road", file=sys.stderr, leave=False):
            results[road.name] = run_road(road, args, files, device)
    summary = summarise_roads(results, args)
    payload = {
        "benchmark": "training images/s through sef.engine.train_one_epoch",
        "settings": {
            **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "recipe": RECIPE,
            "mean_jpeg_kb": round(jpeg_kb, 1),
        },
        "skipped_roads": skipped,
        "roads": results,
        "summary": summary,
    }
    write_report(args.out, payload, device, [__file__, *argv])
    for name, result in results.items():
        print(f"{name:16s} {result['images_per_second']:9.1f} images/s")
    for key, value in summary.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
