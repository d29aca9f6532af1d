"""Where the seconds of one evaluation pass go: CUB's test set (5,794 images), SEF-ResNet-50.

``gpu_epoch.py`` times one ``sef.engine.evaluate`` pass per road; this script takes that pass
apart, each part timed separately in one process:

* ``loader_W``: only the data, through the DataLoader that ``evaluate`` builds (W workers,
  pinned memory on CUDA, uint8 images resized and cropped in the workers);
* ``compute``: only the model: ``forward_sef`` on one batch kept on the device, as many
  times as there are batches;
* ``evaluate_full``: ``evaluate`` over a test set cut to whole batches (cuDNN has tuned
  every shape during the warm-up);
* ``evaluate_1`` .. ``evaluate_3``: three passes over the real test size, whose last, shorter
  batch is a shape cuDNN's autotuner (``cudnn.benchmark``, as ``sef train`` sets on CUDA) has
  not seen before the first pass;
* ``persistent_1`` .. ``persistent_3``: three passes through one loader whose workers persist,
  as ``fit`` evaluates since 2026-12-05 (before, every pass forked its workers afresh);
* ``start_fresh``: seconds from asking a fresh evaluation loader for batches to its first batch
  (forking its workers, decoding a first batch), the mean of three; ``stop_fresh``: from its
  last batch to its end (where it joins its workers); ``start_persistent``, ``stop_persistent``:
  the same for the persistent loader's fourth pass;
* ``gpu_epoch_timing_1``, ``_2``: ``gpu_epoch.py``'s own evaluation timing (its first and second
  pass) on a model built as that script builds its fast road's: there the pass took 9.6-9.8 s on
  an H200 on 2026-11-26 while the ``evaluate_N`` passes here took 3.1-4.4 s; this pair says
  whether the model's construction or the timing explains the gap;
* ``evaluate_authors``: the authors' road: fp32, NCHW, floats normalised in 8 workers.

    python benchmarks/gpu_eval.py            # on a CUDA machine -> results/gpu_eval.json
    python benchmarks/gpu_eval.py --quick    # CPU, tiny: checks that it runs
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import RESULTS_DIR, configure_torch, seconds_of, write_report
from gpu_epoch import (
    RECIPE,
    ROADS,
    _images,
    build_training,
    compute_pass,
    evaluate_pass,
    parse_args,
    time_evaluation,
    write_jpegs,
)

import sef
from sef import transforms
from sef.distributed import Context
from sef.engine.evaluation import evaluation_loader

FAST, AUTHORS = (next(r for r in ROADS if r.name == name) for name in ("fast", "authors_fp32"))


def loader_pass(dataset, args: argparse.Namespace, workers: int, device: torch.device) -> None:
    """Every batch of the loader ``evaluate`` reads, copied to the device and dropped."""
    context = Context(device=device)
    for images, _ in evaluation_loader(dataset, args.batch_size, workers, context):
        images.to(device, non_blocking=True)


def loader_ends(loader) -> tuple[float, float]:
    """Seconds from asking ``loader`` for batches to its first batch, and from its last batch
    to its end (a loader without persistent workers stops them there)."""
    start = time.perf_counter()
    batches = iter(loader)
    next(batches)
    last = time.perf_counter()
    first = last - start
    for _ in batches:
        last = time.perf_counter()
    return first, time.perf_counter() - last


def parts(args: argparse.Namespace, files: list[Path], device: torch.device) -> dict[str, float]:
    """Seconds of each part, in the order of the module docstring."""
    uint8 = _images(
        args,
        files,
        args.test_images,
        transforms.test_transform(RECIPE, args.image_size, normalise=False),
    )
    whole = args.test_images // args.batch_size * args.batch_size
    uint8_whole = _images(args, files, whole, uint8.transform)
    floats = _images(
        args, files, args.test_images, transforms.test_transform(RECIPE, args.image_size)
    )
    torch.manual_seed(0)
    model = sef.SEF(args.backbone, args.classes, groups=args.groups).to(device)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    model.to(memory_format=torch.channels_last)  # the fast road's layout, until the authors'
    times = {}
    context = Context(device=device)
    for workers in sorted({args.authors_workers, args.workers}):
        times[f"loader_{workers}"] = seconds_of(
            lambda w=workers: loader_pass(uint8, args, w, device), device
        )
    compute_pass(model, args, device)  # warm-up: cuDNN tunes the whole-batch shapes
    times["compute"] = seconds_of(lambda: compute_pass(model, args, device), device)
    times["evaluate_full"] = seconds_of(
        evaluate_pass(model, uint8_whole, args, device, FAST), device
    )
    for n in (1, 2, 3):
        times[f"evaluate_{n}"] = seconds_of(evaluate_pass(model, uint8, args, device, FAST), device)
    kept = evaluation_loader(uint8, args.batch_size, args.workers, context, persistent=True)
    for n in (1, 2, 3):
        times[f"persistent_{n}"] = seconds_of(
            evaluate_pass(model, kept, args, device, FAST), device
        )
    fresh = [loader_ends(evaluation_loader(uint8, args.batch_size, args.workers, context))
             for _ in range(3)]  # fmt: skip
    times["start_fresh"] = sum(first for first, _ in fresh) / len(fresh)
    times["stop_fresh"] = sum(stop for _, stop in fresh) / len(fresh)
    times["start_persistent"], times["stop_persistent"] = loader_ends(kept)
    del kept
    built = build_training(FAST, args, device)[0]
    timing = time_evaluation(FAST, built, args, files, device)
    times["gpu_epoch_timing_1"] = timing["eval_seconds_first"]
    times["gpu_epoch_timing_2"] = timing["eval_seconds"]
    torch.backends.cudnn.benchmark = False
    model.to(memory_format=torch.contiguous_format)
    times["evaluate_authors"] = seconds_of(
        evaluate_pass(model, floats, args, device, AUTHORS), device
    )
    return times


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv, out=RESULTS_DIR / "gpu_eval.json", doc=__doc__)
    device = configure_torch(args)
    with tempfile.TemporaryDirectory(prefix="sef-jpegs-") as scratch:
        files = write_jpegs(args.jpeg_dir or Path(scratch), args.jpegs, args.jpeg_side)
        times = parts(args, files, device)
    payload = {
        "benchmark": "seconds of the parts of one evaluation pass (sef.engine.evaluate)",
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "seconds": times,
        "images_per_second": {k: args.test_images / v for k, v in times.items()},
    }
    write_report(args.out, payload, device, [__file__, *argv])
    for name, value in times.items():
        print(f"{name:18s} {value:7.2f} s  {args.test_images / value:8.1f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
