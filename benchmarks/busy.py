"""A training step on a busy machine: torch's default threads against sef's (sef.threads).

The demo's training step (small_cnn, 64 px, batch 32, SEF's loss, SGD) is timed in a fresh
process each time, since OpenMP reads its settings once, when torch starts, in four settings:

* ``torch`` or ``sef``: the step process starts with torch's defaults (threads spin while they
  wait, one thread per core) or with what ``sef`` sets (``OMP_WAIT_POLICY=PASSIVE``,
  ``OMP_NUM_THREADS`` = the CPUs available);
* ``idle`` or ``busy``: alone, or beside one competing CPU-bound process (``--competitor loop``:
  a one-thread Python busy loop; ``torch``: a torch process multiplying matrices with its defaults).

The four are interleaved in a fresh random order each repeat, so a drift in the machine's load
hits them alike; the ratios (busy / idle, sef / torch) are taken per repeat and summarised by
their median. The load average is recorded with every measurement: on a shared machine "idle" is
only as idle as the others leave it.

    python benchmarks/busy.py                  # -> results/busy.json
    python benchmarks/busy.py --quick          # 1 repeat of one step, to check it runs
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS_DIR, paired_ratio, parse_arguments, summarise, write_report

WAYS = ("torch", "sef")
CONDITIONS = ("idle", "busy")
COMPETITORS = {
    "loop": "while True:\n    pass\n",
    "torch": ("import torch\na = torch.randn(512, 512)\nwhile True:\n    a = torch.tanh(a @ a)\n"),
}
OPENMP = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=6, help="rounds of the four settings")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per process")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--competitor", choices=COMPETITORS, default="loop")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "busy.json", help="JSON path")
    parser.add_argument("--quick", action="store_true", help="1 repeat of 1 step, no warm-up")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parse_arguments(parser, argv, {})
    if args.quick:
        args.repeats, args.steps, args.warmup = 1, 1, 0
    return args


def child(args: argparse.Namespace) -> None:
    """Time the demo's training step here; print the seconds of each step as JSON."""
    import torch

    from sef.config import resolve_config
    from sef.losses import SEFLoss
    from sef.trained import create_model

    config = resolve_config("demo")
    torch.manual_seed(0)
    model = create_model(config, 8)
    criterion = SEFLoss(model.groups, lam=config.loss.lam, gamma=config.loss.gamma,
                        phi=config.loss.phi)  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=config.optim.lr, momentum=0.9)
    size, batch = config.data.image_size, config.optim.batch_size
    images, labels = torch.randn(batch, 3, size, size), torch.arange(batch) % 8
    model.train()
    seconds = []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        loss = criterion(model(images), labels)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step >= args.warmup:
            seconds.append(time.perf_counter() - start)
    print(json.dumps({"seconds": seconds, "threads": torch.get_num_threads(), "batch": batch}))


def _environment(way: str) -> dict[str, str]:
    """The step process's environment: torch's defaults, or what `sef` sets before torch."""
    from sef import threads

    env = {k: v for k, v in os.environ.items() if k not in OPENMP}
    if way == "sef":
        threads.configure(env)
    return env


def measure(way: str, condition: str, args: argparse.Namespace) -> dict:
    """One step process in ``way`` and ``condition``: its images per second and the load."""
    competitor = None
    if condition == "busy":
        code = COMPETITORS[args.competitor]
        env = {k: v for k, v in os.environ.items() if k not in OPENMP}  # torch's own defaults
        competitor = subprocess.Popen([sys.executable, "-c", code], env=env)
        time.sleep(1.0)  # let it get going
    load_before = os.getloadavg()[0]
    try:
        command = [sys.executable, __file__, "--child", "--steps", str(args.steps),
                   "--warmup", str(args.warmup)]  # fmt: skip
        done = subprocess.run(
            command, env=_environment(way), capture_output=True, text=True, check=True
        )
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    result = json.loads(done.stdout.strip().splitlines()[-1])
    median = statistics.median(result["seconds"])
    return {
        "images_per_second": result["batch"] / median,
        "step_seconds_median": median,
        "threads": result["threads"],
        "load_1min_before": load_before,
        "load_1min_after": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args)
        return 0
    settings = [(way, condition) for way in WAYS for condition in CONDITIONS]
    runs: dict[str, list[dict]] = {f"{w}_{c}": [] for w, c in settings}
    order = random.Random(0)
    for repeat in range(args.repeats):
        order.shuffle(settings)
        for way, condition in settings:
            result = measure(way, condition, args)
            runs[f"{way}_{condition}"].append(result)
            print(
                f"repeat {repeat + 1}/{args.repeats} {way:5} {condition:4} "
                f"{result['images_per_second']:7.1f} img/s  {result['threads']} threads  "
                f"load {result['load_1min_before']:.2f}",
                file=sys.stderr,
            )
    speed = {name: [r["images_per_second"] for r in rs] for name, rs in runs.items()}
    # slowdown = idle speed / busy speed, and the idle cost = torch speed / sef speed, per repeat
    payload = {
        "competitor": args.competitor,
        "steps": args.steps,
        "warmup": args.warmup,
        "images_per_second": {name: summarise(values) for name, values in speed.items()},
        "slowdown_when_busy": {
            way: paired_ratio(speed[f"{way}_idle"], speed[f"{way}_busy"]) for way in WAYS
        },
        "sef_idle_time_over_torch_idle": paired_ratio(speed["torch_idle"], speed["sef_idle"]),
        "sef_busy_speed_over_torch_busy": paired_ratio(speed["sef_busy"], speed["torch_busy"]),
        "load_1min": summarise([r["load_1min_before"] for rs in runs.values() for r in rs]),
        "runs": runs,
    }
    import torch

    write_report(args.out, payload, torch.device("cpu"))
    for way in WAYS:
        ratio = payload["slowdown_when_busy"][way]["median"]
        print(f"{way}: {ratio:.2f}x slower beside a busy process", file=sys.stderr)
    cost = payload["sef_idle_time_over_torch_idle"]["median"]
    print(f"sef's setting on the idle machine: step time x{cost:.3f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
