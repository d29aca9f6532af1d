"""How long `sef` commands take before they do any work: each run in a fresh process.

Times what a user runs often (`sef --help`, `--version`, `presets`, `presets demo`, `train
--help`, `train` with a typo in its config, which it refuses, `info --backbone resnet50`,
`predict` of one image with a small checkpoint, `data check` of a small class-folder set,
`import sef`, `import sef.model`) beside baselines measured in the same run
(`python -c pass`, `import torch`, `import torchvision`), all interleaved in a new random order
each repeat after a warm-up, on two clocks: wall time (what a user waits) and the process's CPU
time (user + system, which leaves out the time other processes held the cores of a shared
machine). Each time's ratio to each baseline's in the same repeat is summarised by its median.
``--compare SRC`` times the same commands of another checkout's sef too (its
``src/`` folder, e.g. main's), interleaved, with the ratio of its times to this checkout's.

First, untimed, under a temporary folder: a one-epoch small_cnn run on a tiny demo set (its
best.pt and one of its test images for `sef predict`) and a class-folder copy of its training
images for `sef data check`. The timed processes keep their bytecode in a private cache
(``PYTHONPYCACHEPREFIX``, written by the warm-up), as an installed package holds compiled
sources; ``--quick`` writes none and times the commands that load no torch.

    python benchmarks/startup.py                          # -> results/startup.json
    python benchmarks/startup.py --compare ../main/src    # before (there) and after (here)
    python benchmarks/startup.py --quick                  # 1 repeat, no torch, to check it runs
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import RESULTS_DIR, paired_ratio, parse_arguments, summarise, write_report

SRC = Path(__file__).resolve().parents[1] / "src"
BASELINES = {  # timed beside the commands, for scale
    "python": "pass",
    "import torch": "import torch",
    "import torchvision": "import torchvision",
}
CLOCKS = ("wall", "cpu")  # seconds until the process ended; its CPU time (user + system)
CONFIG_ERROR = "sef train, a config error"  # refused in one line: exit code 2
QUICK = ("sef --version", CONFIG_ERROR, "import sef", "python")  # what --quick times: no torch
TINY_RUN = [  # the demo at its smallest: 8 classes x 3 training and 2 test images, 32 px
    "train", "--set", "data.options.per_class=3", "--set", "data.options.test_per_class=2",
    "--image-size", "32", "--batch-size", "8", "--workers", "0", "--epochs", "1",
    "--log", "none", "--no-progress",
]  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds of every command")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of each first")
    parser.add_argument("--compare", type=Path, default=None, help="another checkout's src/")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "startup.json", help="JSON path")
    parser.add_argument("--quick", action="store_true", help="1 repeat of the torch-free ones")
    return parse_arguments(parser, argv, {"repeats": 1, "warmup": 0})


def commands(scratch: Path, quick: bool) -> dict[str, list[str]]:
    """Each timed command's argv after the interpreter (``quick``: those in QUICK), their
    fixtures made under ``scratch``."""
    checkpoint, image, folder = (None, None, None) if quick else _fixtures(scratch)
    sef = {
        "sef --help": ["--help"],
        "sef --version": ["--version"],
        "sef presets": ["presets"],
        "sef presets demo": ["presets", "demo"],
        "sef train --help": ["train", "--help"],
        CONFIG_ERROR: ["train", "--set", "loss.gama=0.1"],
        "sef info --backbone resnet50": ["info", "--backbone", "resnet50"],
        "sef predict": ["predict", "--checkpoint", str(checkpoint), str(image)],
        "sef data check": ["data", "check", "folder", str(folder)],
    }
    code = {"import sef": "import sef", "import sef.model": "import sef.model", **BASELINES}
    every = {
        **{name: ["-m", "sef", *argv] for name, argv in sef.items()},
        **{name: ["-c", line] for name, line in code.items()},
    }
    return {name: argv for name, argv in every.items() if not quick or name in QUICK}


def _fixtures(scratch: Path) -> tuple[Path, Path, Path]:
    """A tiny run's best.pt, one of its test images, and its training images as class folders."""
    run = scratch / "run"
    _run([sys.executable, "-m", "sef", *TINY_RUN, "--out", str(run)], _environment(SRC, scratch))
    images = sorted((scratch / "cache" / "demo").glob("*/trainval/*/*.png"))
    folder = scratch / "folder"
    for path in images:
        (folder / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / path.parent.name / path.name)
    image = min((scratch / "cache" / "demo").glob("*/test/*/*.png"))
    return run / "best.pt", image, folder


def _environment(src: Path, scratch: Path, bytecode: Path | None = None) -> dict[str, str]:
    """A timed process's environment: ``src``'s sef, the scratch cache, the bytecode cache."""
    env = {**os.environ, "PYTHONPATH": str(src), "SEF_CACHE": str(scratch / "cache")}
    if bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(bytecode)
    return env


def _run(argv: list[str], env: dict[str, str], code: int = 0) -> dict[str, float]:
    """Seconds of one run of ``argv`` on each clock; RuntimeError if it ends with another exit
    code than ``code`` (its time would mean nothing). CPU time leaves out the time that other
    processes held the cores."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != code:
        raise RuntimeError(f"{shlex.join(argv)} failed:\n{done.stderr.decode()[-2000:]}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"wall": wall, "cpu": cpu}


def measure(args: argparse.Namespace, scratch: Path) -> tuple[dict[str, dict], list[float]]:
    """Seconds of every variant (a command here, ``NAME @compare`` there) on each clock,
    interleaved, and the load average before each repeat."""
    argvs = commands(scratch, args.quick)
    bytecode = None if args.quick else scratch / "bytecode"
    trees = {"": SRC, " @compare": args.compare} if args.compare else {"": SRC}
    variants = {
        f"{name}{suffix}": (
            [sys.executable, *argv],
            _environment(src, scratch, bytecode),
            2 if name == CONFIG_ERROR else 0,
        )
        for suffix, src in trees.items()
        for name, argv in argvs.items()
        if not (suffix and name in BASELINES)
    }
    for variant in variants.values():
        for _ in range(args.warmup):
            _run(*variant)
    seconds: dict[str, dict] = {clock: {name: [] for name in variants} for clock in CLOCKS}
    loads, order, names = [], random.Random(0), list(variants)
    for repeat in range(args.repeats):
        order.shuffle(names)
        loads.append(os.getloadavg()[0])
        for name in names:
            for clock, value in _run(*variants[name]).items():
                seconds[clock][name].append(value)
        print(f"repeat {repeat + 1}/{args.repeats}, load {loads[-1]:.1f}", file=sys.stderr)
    return seconds, loads


def clock_summary(seconds: dict[str, list[float]]) -> dict:
    """One clock's times summarised, their per-repeat ratios to each baseline, and (with
    --compare) of each command's time there to its time here."""
    baselines = [name for name in BASELINES if name in seconds]
    return {
        "seconds": {name: summarise(times) for name, times in seconds.items()},
        "ratio_to": {
            base: {n: paired_ratio(t, seconds[base]) for n, t in seconds.items() if n != base}
            for base in baselines
        },
        "compare_over_this": {
            name: paired_ratio(seconds[f"{name} @compare"], times)
            for name, times in seconds.items()
            if f"{name} @compare" in seconds
        },
        "raw": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        seconds, loads = measure(args, Path(scratch))
    payload = {
        "src": str(SRC),
        "compare": str(args.compare) if args.compare else None,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "bytecode": "none written (--quick)" if args.quick else "a private compiled cache",
        "load_1min": summarise(loads),
        **{clock: clock_summary(seconds[clock]) for clock in CLOCKS},
    }
    command = [__file__, *(sys.argv[1:] if argv is None else argv)]
    write_report(args.out, payload, torch.device("cpu"), command)
    for clock in CLOCKS:
        _print_table(clock, payload[clock])
    return 0


def _print_table(clock: str, result: dict) -> None:
    """Median seconds and ratios of one clock, one line per variant, on stderr."""
    torch_ratio = result["ratio_to"].get("import torch", {})
    print(f"{clock} time (median of the repeats, and of the per-repeat ratios):", file=sys.stderr)
    for name, times in result["seconds"].items():
        line = f"  {name:40} {times['median']:7.3f} s"
        if name in torch_ratio:
            line += f"  x{torch_ratio[name]['median']:.2f} import torch"
        if name in result["compare_over_this"]:
            line += f"  compare/this x{result['compare_over_this'][name]['median']:.2f}"
        print(line, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
