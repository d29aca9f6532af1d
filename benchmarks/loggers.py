"""What each logger of ``sef train`` costs: the wall time of the same demo run with TensorBoard
only (``--log tensorboard``, the default), with nothing but metrics.jsonl (``none``), with W&B
offline, with MLflow's SQLite store in the run folder, and with all three, as ratios to
TensorBoard-only.

Each variant is the ``sef`` command as a user runs it, in a fresh process into a fresh run
folder, so the ratio holds the clients' imports, the opening of their runs, every epoch's
logging and the files at the end (best.pt and the per-image predictions). The demo set is drawn
before the first timing; every variant trains exactly the same run (the final accuracies match).
The epochs' own seconds (training and evaluation, from metrics.jsonl) are kept beside the wall
time: the rest is start-up, logging and the end, where a logger's cost lies.

    python benchmarks/loggers.py                 # the demo as `sef train` runs it, one run each
    python benchmarks/loggers.py --repeats 3     # three rounds, interleaved in a new order each
    python benchmarks/loggers.py --quick         # a tiny demo, one epoch: to check it runs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import (
    add_common_arguments,
    configure_torch,
    paired_ratios,
    parse_arguments,
    summarise,
    time_interleaved,
    write_report,
)

from sef.config import resolve_config
from sef.datasets import read_split

VARIANTS = {
    "tensorboard": ["tensorboard"],
    "none": ["none"],
    "wandb": ["wandb"],
    "mlflow": ["mlflow"],
    "all": ["tensorboard", "wandb", "mlflow"],
}
BASELINE = "tensorboard"
QUICK = [
    "data.options.per_class=3", "data.options.test_per_class=2", "data.image_size=32",
    "optim.epochs=1", "optim.batch_size=8", "data.workers=0",
]  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, "loggers.json")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    parser.set_defaults(repeats=1, warmup=0, device="cpu")
    return parse_arguments(parser, argv, {"overrides": QUICK})


def draw_demo(overrides: list[str]) -> None:
    """Draw the demo set the runs read, so that no variant pays for it."""
    config = resolve_config(overrides=overrides)
    for split in (config.data.train_split, config.data.eval_split):
        read_split(config.data, split, seed=config.run.seed, progress=False)


def sef_train(loggers: list[str], overrides: list[str], runs: Path, env: dict) -> list[dict]:
    """One `sef train` of ``overrides`` logging to ``loggers``, into a fresh folder under
    ``runs``; returns its epoch records."""
    out = Path(tempfile.mkdtemp(prefix="-".join(loggers) + "-", dir=runs))
    sets = [item for override in overrides for item in ("--set", override)]
    command = [sys.executable, "-m", "sef.cli", "train", "--out", str(out), "--no-progress"]
    done = subprocess.run(
        [*command, *sets, "--log", *loggers], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"sef train --log {' '.join(loggers)} failed:\n{done.stderr[-3000:]}")
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    device = configure_torch(args)
    if device.type != "cpu":
        raise SystemExit("this benchmark measures the CPU demo: pass --device cpu")
    draw_demo(args.overrides)
    records: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="sef-loggers-") as folder:
        runs = Path(folder)
        env = {**os.environ, "WANDB_MODE": "offline", "WANDB_QUIET": "true"}
        env |= {f"WANDB_{name}_DIR": str(runs / name) for name in ("DATA", "CACHE", "CONFIG")}
        env.pop("MLFLOW_TRACKING_URI", None)  # the store in the run folder, as by default
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)

        def variant(name: str):
            def run() -> None:
                records[name] = sef_train(VARIANTS[name], args.overrides, runs, env)

            return run

        variants = {name: variant(name) for name in args.variants}
        seconds = time_interleaved(variants, args.repeats, args.warmup, device, "sef train runs")
    top1 = {name: run[-1]["eval_top1"] for name, run in records.items()}
    epochs = {name: sum(record["seconds"] for record in run) for name, run in records.items()}
    payload = {
        "benchmark": "wall time of `sef train` on the demo per logger, against TensorBoard only",
        "overrides": args.overrides,
        "variants": {name: VARIANTS[name] for name in args.variants},
        "epochs": records[args.variants[0]][-1]["epoch"],
        "seconds": {name: summarise(times) for name, times in seconds.items()},
        "last_run_epoch_seconds": epochs,  # of the last repeat: training and evaluation
        "last_run_other_seconds": {name: seconds[name][-1] - epochs[name] for name in epochs},
        "ratio_to_tensorboard": paired_ratios(seconds, BASELINE) if BASELINE in seconds else {},
        "last_eval_top1": top1,
        "same_training": len(set(top1.values())) == 1,
    }
    write_report(args.out, payload, device, [__file__, *argv])
    for name, ratio in payload["ratio_to_tensorboard"].items():
        median = payload["seconds"][name]["median"]
        print(f"{name:12s} {median:7.1f} s   x{ratio['median']:.3f} of TensorBoard only")
    return 0


if __name__ == "__main__":
    sys.exit(main())
