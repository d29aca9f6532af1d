"""Host-device synchronisations of SEF training steps on CUDA, where they come from, and their cost.

Each step is ``sef.engine.train_one_epoch`` over one uint8 batch kept on the device (so no data
path; normalised there every step, as ``sef train`` does), SEF-ResNet-50 at 448 px, batch 32, as
the fast road of ``gpu_epoch.py`` trains it:

* **count**: ``torch.cuda.set_sync_debug_mode("warn")`` over one epoch of ``--steps`` steps;
  every warning is one synchronising call, recorded with the line of sef that made it;
* **cost**: epochs of ``--steps`` steps timed (interleaved, paired) as shipped, where the loss's
  finiteness is read every ``sef.engine.CHECK_EVERY`` steps, and with the check waiting for the
  device at every step (``if not torch.isfinite(total)``, as sef did before): what one wait
  per step costs.

Both for ``--amp bf16`` and ``--amp fp16`` (whose gradient scaler adds its own check). Also
counted: one ``sef.engine.evaluate`` pass over ``--steps`` batches of uint8 images on the host,
as its loader hands them over.

    python benchmarks/gpu_syncs.py                  # on a CUDA machine -> results/gpu_syncs.json
    python benchmarks/gpu_syncs.py --quick          # CPU, tiny: checks that it runs (no counts)
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import torch
from common import (
    add_common_arguments,
    configure_torch,
    paired_ratios,
    parse_arguments,
    summarise,
    time_interleaved,
    write_report,
)
from gpu_epoch import RepeatedBatch, Road, build_training
from torch.utils.data import TensorDataset

import sef
from sef import engine
from sef.distributed import Context
from sef.engine import loop

SEF_SOURCE = Path(sef.__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image-size", type=int, default=448)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed epoch")
    parser.add_argument("--amps", nargs="+", default=["bf16", "fp16"], choices=["bf16", "fp16"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    add_common_arguments(parser, "gpu_syncs.json")
    quick = dict(  # small_cnn: float16's backward on a CPU takes seconds a step for a ResNet
        backbone="small_cnn", image_size=32, batch_size=2, steps=2, repeats=2, warmup=1, threads=1
    )
    return parse_arguments(parser, argv, quick)


@contextlib.contextmanager
def waiting_every_step() -> Iterator[None]:
    """Each step's finiteness check reads the loss back on the host, as sef's loop once did."""
    update = loop._FirstNonFinite.update

    def update_and_wait(self, step, terms, output) -> None:
        update(self, step, terms, output)
        bool(torch.isfinite(terms["total"]))

    with mock.patch.object(loop._FirstNonFinite, "update", update_and_wait):
        yield


def sef_line(stack_file: str, line: int) -> str:
    """``module.py:line`` for a warning raised from sef's own source, else the file's name."""
    path = Path(stack_file).resolve()
    if path.is_relative_to(SEF_SOURCE):
        return f"{path.relative_to(SEF_SOURCE)}:{line}"
    return f"{path.name}:{line}"


def count_syncs(epoch, device: torch.device) -> dict[str, int] | None:
    """Synchronising calls made by ``epoch()``, by the source line that made each (CUDA only)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            epoch()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    sites = collections.Counter(
        sef_line(w.filename, w.lineno) for w in caught if "synchroniz" in str(w.message)
    )
    return dict(sites.most_common())


def measure_amp(args: argparse.Namespace, amp: str, device: torch.device) -> dict:
    """Sync counts and the paired time of epochs with and without a wait per step."""
    road = Road(f"sef_{amp}", "sef", "on_device", amp, fast=True)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    _, trainer, criterion, optimizer = build_training(road, args, device)
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
    shape = (args.batch_size, 3, args.image_size, args.image_size)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
    labels = torch.randint(args.classes, (args.batch_size,), device=device)
    batches = RepeatedBatch(images, labels, args.steps)  # normalised on the device every step

    def epoch() -> None:
        engine.train_one_epoch(
            trainer,
            criterion,
            batches,
            optimizer,
            context=Context(device=device),
            epoch=1,
            amp=amp,
            scaler=scaler,
            channels_last=True,
            progress=False,
        )

    def epoch_waiting() -> None:
        with waiting_every_step():
            epoch()

    epoch()  # warm up (cuDNN autotuning, compilation) before counting
    syncs = count_syncs(epoch, device)
    seconds = time_interleaved(
        {"shipped": epoch, "wait_per_step": epoch_waiting},
        args.repeats,
        args.warmup,
        device,
        label=f"{amp} epochs",
    )
    per_step = {name: summarise([s / args.steps for s in times]) for name, times in seconds.items()}
    return {
        "syncs_per_epoch": syncs,
        "syncs_per_step": None if syncs is None else sum(syncs.values()) / args.steps,
        "step_seconds": per_step,
        "wait_per_step_over_shipped": paired_ratios(seconds, "shipped")["wait_per_step"],
    }


def evaluation_syncs(args: argparse.Namespace, device: torch.device) -> dict[str, int] | None:
    """Synchronising calls of one bf16 evaluation pass over ``--steps`` uint8 batches."""
    road = Road("sef_eval", "sef", "uint8", "bf16", fast=True)
    model = build_training(road, args, device)[0]
    shape = (args.steps * args.batch_size, 3, args.image_size, args.image_size)
    images = torch.randint(0, 256, shape, dtype=torch.uint8)
    dataset = TensorDataset(images, torch.randint(args.classes, shape[:1]))

    def evaluation() -> None:
        engine.evaluate(
            model,
            dataset,
            batch_size=args.batch_size,
            context=Context(device=device),
            amp="bf16",
            channels_last=True,
            progress=False,
        )

    evaluation()  # warm up
    return count_syncs(evaluation, device)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    device = configure_torch(args)
    results = {amp: measure_amp(args, amp, device) for amp in args.amps}
    payload = {
        "benchmark": "host-device synchronisations per SEF training step, and their cost",
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "results": results,
        "evaluate_syncs": evaluation_syncs(args, device),
    }
    write_report(args.out, payload, device, [__file__, *argv])
    for amp, result in results.items():
        ratio = result["wait_per_step_over_shipped"]["median"]
        print(f"{amp}: {result['syncs_per_epoch']} over {args.steps} steps; "
              f"a wait per step takes x{ratio:.3f} the time")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
