"""Images/s of sef train's data road on the CPU: a decoded-image cache against the JPEGs.

Writes a dataset in CUB-200-2011's official layout (``images.txt``, ``classes.txt``, ... and
``images/<class>/<file>.jpg``) whose JPEGs have CUB's shape and size (500 px long side, photo-like),
caches it once (``sef.datasets.cache``, as ``sef data cache cub ROOT`` does: its size and build
time are recorded), then times, interleaved in a new random order each repeat after a warm-up,
one pass over each of these batch streams, built as ``sef train`` builds them for the cub preset
(448 px crops of 600 px images, batch 32) with W loader processes whose workers live across
passes, as in a run:

* ``jpeg``: the training road of a GPU run: PIL decode, resize, random crop and flip in the
  workers, uint8 batches (``sef.engine.train_loader``);
* ``cache``: the same batches from the cache: the workers copy resized rows, this process crops
  and flips whole batches (``CachedTrainImages.finish_batch``; on a GPU run the device does);
* ``jpeg_normalised`` / ``cache_normalised``: the road of a CPU run, batches normalised as
  ``train_one_epoch`` receives them (the JPEG road normalises in the workers, the cache road in
  this process): ``sef.engine.load_data`` with ``data.cache`` off and on (the other streams
  stay uint8: on a GPU the device normalises);
* ``jpeg_eval`` / ``cache_eval``: an evaluation pass over the test split (resize, centre crop),
  uint8, through the loader ``fit`` keeps (``evaluation_loader(persistent=True)``).

The first batch of every pair is checked bit-identical. No model runs: this is the rate at which
the CPU side can feed a GPU (or a CPU run's model), with W workers on this machine.

    python benchmarks/cache_road.py              # 2 workers -> results/cache_road.json
    python benchmarks/cache_road.py --quick      # tiny, to check that it runs
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from common import (
    add_common_arguments,
    configure_torch,
    paired_ratio,
    parse_arguments,
    summarise,
    time_interleaved,
    write_report,
)
from gpu_epoch import write_jpegs

from sef import transforms
from sef.config import apply_overrides, resolve_config
from sef.datasets import cache, read_split
from sef.distributed import Context
from sef.engine import load_data, train_loader
from sef.engine.device import to_device
from sef.engine.evaluation import evaluation_loader

CPU = Context(device=torch.device("cpu"))
PAIRS = {"train": ("jpeg", "cache"), "normalised": ("jpeg_normalised", "cache_normalised"),
         "eval": ("jpeg_eval", "cache_eval")}  # fmt: skip


def parse_args(
    argv: list[str] | None = None, out: str = "cache_road.json", doc: str = __doc__
) -> argparse.Namespace:
    """The sizes, workers and timing options (``dali_road.py`` takes them too, writing ``out``)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--train-per-class", type=int, default=16, help="training images each")
    parser.add_argument("--test-per-class", type=int, default=8, help="test images each")
    parser.add_argument("--jpeg-side", type=int, default=500, help="long side (CUB: 500)")
    parser.add_argument("--image-size", type=int, default=448, help="crop side (cub preset)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="loader processes (2 cores)")
    add_common_arguments(parser, out)
    parser.set_defaults(repeats=5, warmup=1, threads=1)
    args = parse_arguments(parser, argv, {})
    if args.quick:
        vars(args).update(classes=2, train_per_class=3, test_per_class=2, jpeg_side=64,
                          image_size=32, batch_size=2, workers=1, repeats=2, warmup=0)  # fmt: skip
    return args


def write_cub(root: Path, classes: int, train: int, test: int, long_side: int) -> Path:
    """A CUB-200-2011 folder as its archive unpacks, with ``train`` + ``test`` photo-like JPEGs
    per class (``gpu_epoch.write_jpegs``); returns CUB_200_2011/."""
    folder = root / "CUB_200_2011"
    lists: dict[str, list[str]] = {
        "images.txt": [], "image_class_labels.txt": [], "train_test_split.txt": [],
        "bounding_boxes.txt": [], "classes.txt": [],
    }  # fmt: skip
    for c in range(classes):
        name = f"{c + 1:03d}.Bird_{c + 1}"
        lists["classes.txt"].append(f"{c + 1} {name}")
        files = write_jpegs(folder / "images" / name, train + test, long_side, seed=c)
        for k, path in enumerate(files):
            image_id = len(lists["images.txt"]) + 1
            lists["images.txt"].append(f"{image_id} {name}/{path.name}")
            lists["image_class_labels.txt"].append(f"{image_id} {c + 1}")
            lists["train_test_split.txt"].append(f"{image_id} {int(k < train)}")
            lists["bounding_boxes.txt"].append(f"{image_id} 0.0 0.0 10.0 10.0")
    for filename, lines in lists.items():
        (folder / filename).write_text("\n".join(lines) + "\n")
    return folder


def cached_cub(args: argparse.Namespace, scratch: Path) -> tuple[Path, Path, cache.Built, float]:
    """A CUB-shaped dataset written under ``scratch`` and cached once, as ``sef data cache cub
    ROOT`` does: its root, the cache's folder, the build, and the mean JPEG size in KB."""
    root = write_cub(scratch, args.classes, args.train_per_class, args.test_per_class,
                     args.jpeg_side)  # fmt: skip
    jpegs = sorted((root / "images").rglob("*.jpg"))
    jpeg_kb = sum(p.stat().st_size for p in jpegs) / len(jpegs) / 1024
    folder = scratch / "cache"
    located = apply_overrides(resolve_config("cub-resnet50"), [f"data.root={root}"]).data
    every = [read_split(located, split, seed=0, progress=False) for split in cache.SPLITS]
    built = cache.build(folder, every, "resize_crop", args.image_size, workers=args.workers,
                        progress=False)  # fmt: skip
    return root, folder, built, jpeg_kb


def uint8_splits(args: argparse.Namespace, root: Path, folder: Path) -> tuple:
    """The cub preset's config at these sizes, its uint8 training and test splits as a GPU run
    reads them, and their cache in ``folder``, opened."""
    overrides = [f"data.root={root}", f"data.image_size={args.image_size}",
                 f"data.workers={args.workers}", f"optim.batch_size={args.batch_size}"]  # fmt: skip
    config = apply_overrides(resolve_config("cub-resnet50"), overrides)
    size = args.image_size
    uint8 = read_split(config.data, "trainval", seed=0, transform=transforms.train_transform(
        "resize_crop", size, normalise=False), progress=False)  # fmt: skip
    test = read_split(config.data, "test", seed=0, transform=transforms.test_transform(
        "resize_crop", size, normalise=False), progress=False)  # fmt: skip
    opened, _ = cache.ensure(folder, [uint8, test], list, "resize_crop", size, progress=False)
    return config, uint8, test, opened


def training_loader(args: argparse.Namespace, dataset):
    """``dataset``'s training batches as ``sef train`` loads them on W workers (CPU context)."""
    return train_loader(dataset, batch_size=args.batch_size, workers=args.workers, seed=0,
                        context=CPU)  # fmt: skip


def training_streams(args: argparse.Namespace, uint8, opened) -> dict:
    """``jpeg`` and ``cache``: the uint8 training batches of a GPU run, from either road."""
    resized = cache.CachedTrainImages(uint8, opened, "resize_crop", args.image_size)
    return {"jpeg": training_loader(args, uint8), "cache": training_loader(args, resized)}


def streams(args: argparse.Namespace, root: Path, folder: Path) -> dict:
    """name -> the batches of one pass (each a loader whose workers live across passes)."""
    config, uint8, test, opened = uint8_splits(args, root, folder)
    cached = apply_overrides(config, [f"data.cache={folder}"])
    size = args.image_size
    normalised = {"jpeg_normalised": load_data(config, CPU, progress=False),
                  "cache_normalised": load_data(cached, CPU, progress=False)}  # fmt: skip
    return {
        **training_streams(args, uint8, opened),
        **{name: training_loader(args, data.train) for name, data in normalised.items()},
        "jpeg_eval": evaluation_loader(test, args.batch_size, args.workers, CPU, persistent=True),
        "cache_eval": evaluation_loader(
            cache.CachedTestImages(test, opened, "resize_crop", size, normalise=False),
            args.batch_size, args.workers, CPU, persistent=True,
        ),
    }  # fmt: skip


def one_pass(batches, epoch: list[int], normalise: bool) -> tuple[torch.Tensor, int]:
    """Every batch of a pass; with ``normalise`` as ``train_one_epoch`` receives it on a CPU
    (uint8 batches normalised here), else as a GPU run's workers and device hand it over (the
    device would normalise); returns the first batch and the number of images."""
    if hasattr(batches.sampler, "set_epoch"):
        epoch[0] += 1
        batches.sampler.set_epoch(epoch[0])
    first, count = None, 0
    for images, _ in batches:
        if normalise:
            images = to_device(images, torch.device("cpu"), channels_last=False)
        first = images if first is None else first
        count += len(images)
    return first, count


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = configure_torch(args)
    with tempfile.TemporaryDirectory(prefix="sef-cache-road-") as scratch:
        root, folder, built, jpeg_kb = cached_cub(args, Path(scratch))
        batches = streams(args, root, folder)
        epochs = {name: [0] for name in batches}
        normalised = {name: name.endswith("_normalised") for name in batches}
        firsts = {name: one_pass(b, [-1], normalised[name]) for name, b in batches.items()}
        identical = {pair: bool(torch.equal(firsts[a][0], firsts[b][0])) for pair, (a, b) in
                     PAIRS.items()}  # fmt: skip
        images = {name: count for name, (_, count) in firsts.items()}
        runs = {name: (lambda b=b, e=epochs[name], n=normalised[name]: one_pass(b, e, n))
                for name, b in batches.items()}  # fmt: skip
        seconds = time_interleaved(runs, args.repeats, args.warmup, device, "cache road")
        del batches, runs
    results = {
        name: {"images_per_second": images[name] / summarise(times)["median"],
               "pass_seconds": summarise(times)}
        for name, times in seconds.items()
    }  # fmt: skip
    speedups = {pair: paired_ratio(seconds[a], seconds[b]) for pair, (a, b) in PAIRS.items()}
    payload = {
        "what": "images/s of sef train's data road, JPEGs against a decoded-image cache, no model",
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "data": {"train_images": images["jpeg"], "test_images": images["jpeg_eval"],
                 "mean_jpeg_kb": round(jpeg_kb, 1)},
        "cache": {"images": built.images, "bytes": built.bytes, "build_seconds": built.seconds,
                  "side": transforms.resize_size("resize_crop", args.image_size)},
        "bit_identical_first_batch": identical,
        "results": results,
        "cache_speedup": speedups,
    }  # fmt: skip
    for name, result in results.items():
        print(f"{name:>17}: {result['images_per_second']:8.1f} images/s")
    for pair, ratio in speedups.items():
        print(f"{pair:>17}: cache {ratio['median']:.2f}x the JPEG road (paired median)")
    print(f"cache: {built.summary()}")
    write_report(args.out, payload, device, [__file__, *(sys.argv[1:] if argv is None else argv)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
