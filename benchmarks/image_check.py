"""Seconds of the bad-image check that every ``sef train`` (and ``--resume``) does before its first
step, with and without the record of verified images (sef.datasets.verified).

Writes photo-like JPEGs of CUB's size (500 px long side, ``gpu_epoch.write_jpegs``), then times
``find_bad_images`` over them with W threads, as ``check_images`` calls it, in three ways:

* ``before``: no record, every image decoded (what every start did before the record);
* ``first``: the record used but empty (a run's first start: every image decoded, then recorded);
* ``again``: the record of ``first`` used, no file changed (every later start and resume: a
  ``stat`` per file and the record read, nothing decoded).

Each repeat runs the three in turn with a fresh record folder, so ``again`` reads what ``first``
wrote.

    python benchmarks/image_check.py                # 3,000 images -> results/image_check.json
    python benchmarks/image_check.py --quick        # a few images, to check it runs
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import add_common_arguments, parse_arguments, summarise, write_report
from gpu_epoch import write_jpegs

from sef.datasets.checking import USE, find_bad_images

WAYS = {"before": None, "first": USE, "again": USE}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_arguments(parser, "image_check.json")
    parser.add_argument("--images", type=int, default=3000, help="JPEGs to write and check")
    parser.add_argument("--workers", type=int, default=4, help="decoding threads (data.workers)")
    parser.add_argument("--long-side", type=int, default=500, help="pixels (CUB's: 500)")
    quick = {"images": 8, "repeats": 1, "long_side": 64}
    return parse_arguments(parser, argv, quick)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seconds: dict[str, list[float]] = {way: [] for way in WAYS}
    previous = os.environ.get("SEF_CACHE")
    with tempfile.TemporaryDirectory() as scratch:
        files = write_jpegs(Path(scratch) / "images", args.images, args.long_side)
        samples = [(str(path), 0) for path in files]
        try:
            for repeat in range(args.repeats):
                os.environ["SEF_CACHE"] = str(Path(scratch) / f"cache{repeat}")  # a fresh record
                for way, record in WAYS.items():
                    started = time.perf_counter()
                    bad = find_bad_images(samples, args.workers, progress=False, record=record)
                    seconds[way].append(time.perf_counter() - started)
                    assert not bad, bad
        finally:
            os.environ.pop("SEF_CACHE")
            if previous is not None:
                os.environ["SEF_CACHE"] = previous
    payload = {
        "images": args.images,
        "workers": args.workers,
        "long_side": args.long_side,
        "seconds": {way: summarise(times) for way, times in seconds.items()},
    }
    command = [__file__, *(sys.argv[1:] if argv is None else argv)]
    report = write_report(args.out, payload, torch.device("cpu"), command)
    for way, summary in report["seconds"].items():
        print(f"{way:>7}: {summary['median']:.3f} s for {args.images:,} images", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
