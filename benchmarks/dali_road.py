"""Images/s of NVIDIA DALI's data road against sef train's JPEG and decoded-image cache roads.

Issue 21's candidate (b). Writes and caches the CUB-shaped dataset of ``cache_road.py`` (CUB's
official layout, photo-like JPEGs of 500 px long side), then times, interleaved in a new random
order each repeat after a warm-up, one pass over the training split on each road, every one
handing over uint8 [B, 3, 448, 448] batches as a GPU run takes them (no model runs):

* ``jpeg``: sef's road: PIL decode, resize to 600 x 600, random 448 crop and flip in W loader
  processes (``sef.engine.train_loader``), as ``cache_road.py``'s ``jpeg`` stream;
* ``cache``: the decoded-image cache road, as ``cache_road.py``'s ``cache`` stream;
* ``dali_cpu``: a DALI pipeline doing the cub preset's training transform as closely as DALI
  can (``fn.decoders.image`` on the CPU, ``fn.resize`` to 600 x 600, linear with antialiasing,
  a random 448 crop and a random flip in ``fn.crop_mirror_normalize``, uint8) on W threads,
  read through DALI's PyTorch iterator. The pipeline runs synchronously (``exec_async`` and
  ``exec_pipelined`` off), so that a pass does its own work inside its timing, as sef's loaders
  do: by default DALI decodes the next pass's first two batches as soon as a pass ends, out of
  the clock and on the cores the other roads are timed on (half of a pass's CPU time here);
* ``dali_mixed``: the same with DALI's ``mixed`` decoder (nvJPEG, the hardware JPEG decoder where
  the GPU has one) and the rest on the GPU, synchronously too: only where torch sees a CUDA
  device.

It also decodes and resizes one batch of the same JPEGs both ways and reports how far DALI's
pixels are from sef's (PIL decode, torchvision's antialiased bilinear resize): the decode alone,
the resize alone (DALI resizing PIL's pixels) and both, since a road that changed them would
change the recipe's arithmetic (the cache road is bit-identical with the JPEG road).

Needs DALI (``pip install nvidia-dali-cuda120`` or ``nvidia-dali-cuda130``); without it the
script says so in one line and exits 2.

    python benchmarks/dali_road.py --train-per-class 64 --repeats 9   # -> results/dali_road.json
    python benchmarks/dali_road.py --quick       # tiny, to check that it runs
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from cache_road import cached_cub, one_pass, training_streams, uint8_splits
from cache_road import parse_args as cache_road_arguments
from common import configure_torch, paired_ratio, summarise, time_interleaved, write_report

from sef import transforms
from sef.datasets import read_split

INSTALL = (
    "benchmarks/dali_road.py needs NVIDIA DALI, which is not installed: pip install "
    "nvidia-dali-cuda120 (or nvidia-dali-cuda130 for CUDA 13; a wheel of about 424 MB)"
)
# speed-up name -> (faster road, slower road): the slower road's time over the faster one's
SPEEDUPS = {
    "dali_cpu_over_jpeg": ("dali_cpu", "jpeg"),
    "cache_over_dali_cpu": ("cache", "dali_cpu"),
    "cache_over_jpeg": ("cache", "jpeg"),
    "dali_mixed_over_jpeg": ("dali_mixed", "jpeg"),
    "cache_over_dali_mixed": ("cache", "dali_mixed"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """``cache_road.py``'s options: sizes, workers, repeats, --quick."""
    return cache_road_arguments(argv, "dali_road.json", __doc__)


def dali_missing() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return True
    return False


def dali_training(files: list[str], labels: list[int], args, decoder: str):
    """DALI's road for the cub preset's training transform, decoding on ``decoder`` ("cpu" or
    "mixed"): an iterator over one pass of uint8 [B, 3, size, size] batches and their labels."""
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

    size = args.image_size
    side = transforms.resize_size("resize_crop", size)
    device_id = 0 if decoder == "mixed" else None

    @pipeline_def(batch_size=args.batch_size, num_threads=args.workers, device_id=device_id,
                  seed=0, exec_async=False, exec_pipelined=False)  # fmt: skip
    def pipeline():
        jpegs, label = fn.readers.file(files=files, labels=labels, random_shuffle=True,
                                       name="reader")  # fmt: skip
        images = fn.decoders.image(jpegs, device=decoder, output_type=types.RGB)
        images = fn.resize(images, resize_x=side, resize_y=side, antialias=True,
                           interp_type=types.INTERP_LINEAR)  # fmt: skip
        images = fn.crop_mirror_normalize(
            images, crop=(size, size), crop_pos_x=fn.random.uniform(range=(0.0, 1.0)),
            crop_pos_y=fn.random.uniform(range=(0.0, 1.0)), mirror=fn.random.coin_flip(),
            dtype=types.UINT8, output_layout="CHW",
        )  # fmt: skip
        return images, label

    built = pipeline()
    built.build()
    return DALIGenericIterator(
        built, ["images", "labels"], reader_name="reader", auto_reset=True,
        last_batch_policy=LastBatchPolicy.PARTIAL,
    )  # fmt: skip


def dali_pass(batches) -> tuple[torch.Tensor, int]:
    """Every batch of one pass of a DALI iterator: the first batch and the number of images."""
    first, count = None, 0
    for (batch,) in batches:
        first = batch["images"] if first is None else first
        count += len(batch["images"])
    return first, count


def differences(ours: list[np.ndarray], theirs: list[np.ndarray]) -> dict:
    """How far ``theirs`` is from ``ours``, pixel by pixel over every image (uint8 arrays of the
    same shapes): the largest and mean absolute difference and the share of values that differ."""
    pairs = zip(ours, theirs, strict=True)
    gaps = np.concatenate([np.abs(a.astype(np.int16) - b).ravel() for a, b in pairs])
    return {"max": int(gaps.max()), "mean": float(gaps.mean()),
            "share_differing": float((gaps > 0).mean())}  # fmt: skip


def pixel_differences(images, count: int, image_size: int) -> dict:
    """DALI's decode and 600 x 600 resize of ``count`` JPEGs of ``images`` (an ImageList without
    transform) against sef's: decode alone, resize alone (of PIL's pixels), and both."""
    from nvidia.dali import fn, pipeline_def, types

    side = transforms.resize_size("resize_crop", image_size)
    resize = transforms.resize_transform("resize_crop", image_size)
    paths = [path for path, _ in images.samples[:count]]
    decoded = [images[i][0] for i in range(len(paths))]  # PIL RGB, as sef's workers decode
    pil = [np.asarray(image) for image in decoded]
    ours = [resize(image).permute(1, 2, 0).numpy() for image in decoded]
    encoded = [np.fromfile(path, dtype=np.uint8) for path in paths]

    @pipeline_def(batch_size=len(paths), num_threads=1, device_id=None)
    def pipeline():
        jpegs = fn.external_source(source=lambda: encoded, batch=True)
        pixels = fn.external_source(source=lambda: pil, batch=True, layout="HWC")
        theirs = fn.decoders.image(jpegs, device="cpu", output_type=types.RGB)

        def resized(image):
            return fn.resize(image, resize_x=side, resize_y=side, antialias=True,
                             interp_type=types.INTERP_LINEAR)  # fmt: skip

        return theirs, resized(pixels), resized(theirs)

    built = pipeline()
    built.build()
    outputs = [[np.asarray(t) for t in batch] for batch in built.run()]
    return {
        "images": len(paths),
        "decode": differences(pil, outputs[0]),
        "resize_of_the_same_pixels": differences(ours, outputs[1]),
        "decode_and_resize": differences(ours, outputs[2]),
    }


def roads(args, root: Path, folder: Path, cuda: bool) -> tuple[dict, dict, object]:
    """name -> one pass over that road's batches, the roads skipped with why, and the training
    images without transform."""
    config, uint8, _, opened = uint8_splits(args, root, folder)
    files = [path for path, _ in uint8.samples]
    labels = [label for _, label in uint8.samples]
    epochs = {"jpeg": [0], "cache": [0]}
    passes = {name: lambda b=batches, e=epochs[name]: one_pass(b, e, False)
              for name, batches in training_streams(args, uint8, opened).items()}  # fmt: skip
    for decoder in ["cpu", "mixed"] if cuda else ["cpu"]:
        batches = dali_training(files, labels, args, decoder)
        passes[f"dali_{decoder}"] = lambda b=batches: dali_pass(b)
    skipped = {} if cuda else {"dali_mixed": "torch sees no CUDA device"}
    return passes, skipped, read_split(config.data, "trainval", seed=0, progress=False)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if dali_missing():
        print(INSTALL, file=sys.stderr)
        return 2
    import nvidia.dali

    load_at_start = list(os.getloadavg())
    device = configure_torch(args)
    with tempfile.TemporaryDirectory(prefix="sef-dali-road-") as scratch:
        root, folder, built, jpeg_kb = cached_cub(args, Path(scratch))
        passes, skipped, plain = roads(args, root, folder, device.type == "cuda")
        firsts = {name: run() for name, run in passes.items()}
        shapes = {name: list(first.shape) for name, (first, _) in firsts.items()}
        images = {name: count for name, (_, count) in firsts.items()}
        seconds = time_interleaved(passes, args.repeats, args.warmup, device, "dali road")
        pixels = pixel_differences(plain, args.batch_size, args.image_size)
        del passes  # the loaders' workers end before their folder goes
    results = {
        name: {"images_per_second": images[name] / summarise(times)["median"],
               "pass_seconds": summarise(times)}
        for name, times in seconds.items()
    }  # fmt: skip
    speedups = {name: paired_ratio(seconds[slower], seconds[faster])
                for name, (faster, slower) in SPEEDUPS.items() if slower in seconds and
                faster in seconds}  # fmt: skip
    payload = {
        "what": "images/s of NVIDIA DALI's road against sef train's JPEG and cache roads, no model",
        "dali": nvidia.dali.__version__,
        "load_average_at_start": load_at_start,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "data": {"train_images": images["jpeg"], "mean_jpeg_kb": round(jpeg_kb, 1)},
        "cache": {"images": built.images, "bytes": built.bytes, "build_seconds": built.seconds},
        "first_batch_shapes": shapes,
        "results": results,
        "skipped": skipped,
        "speedups": speedups,
        "dali_pixels_against_sef": pixels,
    }  # fmt: skip
    for name, result in results.items():
        print(f"{name:>10}: {result['images_per_second']:8.1f} images/s")
    for name, ratio in speedups.items():
        print(f"{name:>21}: {ratio['median']:.2f}x (paired median)")
    for part in ("decode", "resize_of_the_same_pixels", "decode_and_resize"):
        gap = pixels[part]
        print(f"DALI against sef, {part}: max {gap['max']}, mean {gap['mean']:.3f}")
    write_report(args.out, payload, device, [__file__, *(sys.argv[1:] if argv is None else argv)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
