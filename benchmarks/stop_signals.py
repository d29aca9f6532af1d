"""How `sef train` ends when a stop signal lands at a random moment of a run with loader workers.

Each try starts the tiny demo run of tests/test_resume.py (32 px, batch 4, ``--workers``
loader workers, ``--epochs`` epochs) in a fresh process, waits for its first last.pt, then for a
random moment up to ``--delay`` seconds, and sends ``--signal`` to the command (or, with
``--group``, to its whole process group, as Slurm's scancel or `timeout` do). A try is clean when
the command exits with 128 + the signal's number, prints no traceback, and closes its stderr
within ``--wait`` seconds (no process of it left holding it). Counted per outcome:

    python benchmarks/stop_signals.py                          # -> results/stop_signals.json
    python benchmarks/stop_signals.py --signal SIGINT --group  # Ctrl-C in a terminal
    python benchmarks/stop_signals.py --quick                  # 2 tries, to check it runs
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import RESULTS_DIR, parse_arguments, write_report

STOPS = ("SIGINT", "SIGTERM", "SIGHUP")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tries", type=int, default=30, help="runs stopped, one at a time")
    parser.add_argument("--signal", choices=STOPS, default="SIGTERM")
    parser.add_argument("--group", action="store_true", help="signal the whole process group")
    parser.add_argument("--workers", type=int, default=1, help="the run's loader workers")
    parser.add_argument("--epochs", type=int, default=30, help="the run's epochs")
    parser.add_argument("--delay", type=float, default=3.0, help="most seconds after last.pt")
    parser.add_argument("--wait", type=float, default=20.0, help="seconds to end before a hang")
    parser.add_argument("--seed", type=int, default=0, help="of the random moments")
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR / "stop_signals.json", help="JSON path"
    )
    parser.add_argument("--quick", action="store_true", help="2 tries, each stopped soon")
    return parse_arguments(parser, argv, {"tries": 2, "delay": 0.3})


def _command(out: Path, args: argparse.Namespace) -> list[str]:
    return [
        sys.executable, "-m", "sef.cli", "train", "--out", str(out),
        "--set", "data.options.per_class=4", "--set", "data.options.test_per_class=2",
        "--epochs", str(args.epochs), "--batch-size", "4", "--image-size", "32",
        "--workers", str(args.workers), "--set", "optim.step_size=2", "--no-progress",
    ]  # fmt: skip


def _as_in_a_terminal() -> None:
    """The stop signals as a command started in a terminal finds them (not nohup's)."""
    for number in (signal.SIGINT, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)


def one_try(folder: Path, stop: signal.Signals, moment: float, args: argparse.Namespace) -> str:
    """The outcome of one run stopped ``moment`` seconds after its first last.pt."""
    out = folder / "run"
    process = subprocess.Popen(
        _command(out, args),
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_as_in_a_terminal,
        start_new_session=args.group,
    )
    try:
        while not (out / "last.pt").exists():
            if process.poll() is not None:
                return f"ended before its first checkpoint (exit {process.returncode})"
            time.sleep(0.01)
        time.sleep(moment)
        if args.group:
            os.killpg(process.pid, stop)
        else:
            process.send_signal(stop)
        try:
            _, err = process.communicate(timeout=args.wait)
        except subprocess.TimeoutExpired:
            return "hang"
        if process.returncode == 0:
            return "finished first"
        clean = process.returncode == 128 + stop and "Traceback" not in err
        return "clean" if clean else f"exit {process.returncode}, traceback {'Traceback' in err}"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL) if args.group else process.kill()
            process.wait()


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    stop = signal.Signals[args.signal]
    moments = random.Random(args.seed)
    outcomes: collections.Counter[str] = collections.Counter()
    for number in range(args.tries):
        with tempfile.TemporaryDirectory() as folder:
            outcome = one_try(Path(folder), stop, moments.uniform(0, args.delay), args)
        outcomes[outcome] += 1
        print(f"try {number + 1}/{args.tries}: {outcome}", flush=True)
    payload = {
        "signal": args.signal,
        "to": "process group" if args.group else "command",
        "workers": args.workers,
        "epochs": args.epochs,
        "delay_seconds": args.delay,
        "tries": args.tries,
        "outcomes": dict(outcomes),
    }
    print(f"{args.signal} to the {payload['to']}: {dict(outcomes)}")
    return write_report(args.out, payload, torch.device("cpu"))


if __name__ == "__main__":
    main()
