"""What every benchmark script shares: timing, statistics, peak memory, machine facts, JSON.

Timings interleave the variants in a fresh random order each repeat (after a warm-up), so
slow drifts of a shared machine and after-effects of one variant on the next hit them all
alike; ratios are taken per repeat (paired) and summarised by their median.
Peak CPU memory is the process's RSS high-water mark, so each variant is measured in a
fresh subprocess of the calling script (``--memory-of NAME``); on CUDA it is
``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from tqdm import tqdm

# the checkout whose commit a report names: the one these scripts run from
CODE_DIR = Path(__file__).resolve().parent
RESULTS_DIR = CODE_DIR / "results"
GIT_SECONDS = 5  # a slow or hung git leaves the code unrecorded, never the benchmark failed
CHANGED_LISTED = 10  # changed files named in a report; the count says how many in all
# where --quick writes unless --out (--runs) says otherwise: a smoke run never replaces a
# measurement in RESULTS_DIR, nor trains into (or reuses) a measured run's folder
QUICK_DIR = Path(tempfile.gettempdir()) / "sef-quick"


def add_common_arguments(parser: argparse.ArgumentParser, default_out: str) -> None:
    """Options every timing script takes: repeats, warm-up, device, threads, output, quick."""
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per variant first")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / default_out, help="JSON path")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, to check it runs")


def parse_arguments(
    parser: argparse.ArgumentParser, argv: list[str] | None, quick: dict
) -> argparse.Namespace:
    """Parse ``argv``; --quick swaps in the ``quick`` defaults, and --out and --runs under
    QUICK_DIR, which explicit options override."""
    args = parser.parse_args(argv)
    if args.quick:
        places = {name: parser.get_default(name) for name in ("out", "runs")}
        moved = {name: QUICK_DIR / Path(path).name for name, path in places.items() if path}
        parser.set_defaults(**moved, **quick)
        args = parser.parse_args(argv)
    return args


def add_memory_arguments(parser: argparse.ArgumentParser) -> None:
    """--no-memory, and the hidden --memory-of NAME that a memory subprocess runs with."""
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)


def configure_torch(args: argparse.Namespace) -> torch.device:
    """Apply --threads and return the device, refusing CUDA when there is none."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for but torch sees no CUDA device")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so a wall-clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_of(work: Callable[[], object], device: torch.device) -> float:
    """Wall-clock seconds of one ``work()``, the device work it queued included."""
    synchronize(device)
    start = time.perf_counter()
    work()
    synchronize(device)
    return time.perf_counter() - start


def time_interleaved(
    variants: Mapping[str, Callable[[], object]],
    repeats: int,
    warmup: int,
    device: torch.device,
    label: str = "timing",
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Seconds per call of every variant: warm up each, then run all in a new order each repeat.

    ``clock`` is wall time by default; ``time.process_time`` counts only this process's CPU
    time, which on a shared CPU leaves out the time other processes held the core (meaningful
    for one-thread CPU runs only: it does not see the GPU, and it sums over threads)."""
    names = list(variants)
    for name in names:
        for _ in range(warmup):
            variants[name]()
    synchronize(device)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    order = random.Random(0)
    for _ in tqdm(range(repeats), desc=label, unit="round", file=sys.stderr, leave=False):
        order.shuffle(names)  # no variant always runs first, or always right after another
        for name in names:
            start = clock()
            variants[name]()
            synchronize(device)
            seconds[name].append(clock() - start)
    return seconds


def summarise(samples: list[float]) -> dict[str, float]:
    """Median, quartiles, extremes and the relative spread (IQR / median) of samples."""
    ordered = sorted(samples)
    if len(ordered) >= 2:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    median = statistics.median(ordered)
    return {
        "median": median,
        "q1": q1,
        "q3": q3,
        "min": ordered[0],
        "max": ordered[-1],
        "relative_iqr": (q3 - q1) / median if median else 0.0,
        "n": len(ordered),
    }


def paired_ratio(numerator: list[float], denominator: list[float]) -> dict[str, float]:
    """Ratios of times taken in the same repeat, summarised: robust to slow drifts in load."""
    return summarise([n / d for n, d in zip(numerator, denominator, strict=True)])


def paired_ratios(seconds: Mapping[str, list[float]], baseline: str) -> dict[str, dict]:
    """Per-repeat time ratio of every other variant to ``baseline``, summarised."""
    return {
        name: paired_ratio(times, seconds[baseline])
        for name, times in seconds.items()
        if name != baseline
    }


def _rss_high_water_mb() -> float:
    """This process's peak resident memory (VmHWM, which, unlike ru_maxrss, restarts at exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: CUDA max allocated, or this process's RSS high-water mark."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return _rss_high_water_mb()


def measure_peak_memory(run: Callable[[], object], device: torch.device, calls: int = 2) -> dict:
    """Peak memory of ``calls`` runs, and how far it rose above the peak before the first one.

    Call it in a fresh process (see :func:`memory_in_subprocesses`) for an honest CPU number.
    """
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device) / 2**20
    else:
        before = peak_memory_mb(device)
    for _ in range(calls):
        run()
    synchronize(device)
    peak = peak_memory_mb(device)
    kind = "cuda_max_memory_allocated" if device.type == "cuda" else "rss_high_water"
    return {"kind": kind, "peak_mb": peak, "before_mb": before, "rise_mb": peak - before}


def memory_in_subprocesses(
    script: str, argv: list[str], names: list[str], label: str = "memory"
) -> dict[str, dict]:
    """Run ``script argv --memory-of NAME`` once per name; each prints its memory JSON last."""
    results = {}
    for name in tqdm(names, desc=label, unit="variant", file=sys.stderr, leave=False):
        command = [sys.executable, script, *argv, "--memory-of", name]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"memory run of {name} failed:\n{done.stderr[-2000:]}")
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


def argv_without_memory_flags(argv: list[str]) -> list[str]:
    """The script's own arguments, minus --out/--memory-of, to pass to memory subprocesses."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--out", "--memory-of"):
            skip = True
        elif not arg.startswith(("--out=", "--memory-of=")):
            kept.append(arg)
    return kept


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict:
    """The facts a timing means nothing without: hardware, threads, library versions."""
    import torchvision

    info = {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1_5_15": list(os.getloadavg()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "platform": platform.platform(),
        "device": str(device),
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(
            gpu=properties.name,
            gpu_memory_gb=round(properties.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
            matmul_fp32_precision=torch.get_float32_matmul_precision(),
        )
    return info


def command_line(command: list[str] | None = None) -> str:
    """``command`` (script and arguments; default sys.argv) as a shell line from the cwd."""
    script, *arguments = command or sys.argv
    return shlex.join(["python", os.path.relpath(script), *arguments])


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def flat_gradient(value: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
    """d value / d weights as one flat vector, leaving every ``.grad`` alone and the graph kept
    for the next term's (the diagnostics' pulls of each loss term)."""
    return torch.cat([g.flatten() for g in torch.autograd.grad(value, weights, retain_graph=True)])


def _git(*arguments: str) -> str | None:
    """``git arguments`` run in CODE_DIR's checkout: its output, or None where it fails."""
    try:
        done = subprocess.run(
            ["git", "-C", str(CODE_DIR), *arguments],
            capture_output=True,
            text=True,
            timeout=GIT_SECONDS,
        )
    except (OSError, subprocess.SubprocessError):  # no git, or too slow
        return None
    return done.stdout if done.returncode == 0 else None


def code_state() -> dict | None:
    """The commit of the checkout the scripts run from, and whether its tracked files differed
    from it (how many, the first few named; the results folder, which a study rewrites between
    its runs, left out); None without git or outside a checkout."""
    outside_results = ["--", ":/", f":(exclude){RESULTS_DIR.name}"]
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no", *outside_results)
    if commit is None or status is None:
        return None
    changed = [line[3:] for line in status.splitlines()]
    return {
        "commit": commit.strip(),
        "dirty": bool(changed),
        "changed_count": len(changed),
        "changed": changed[:CHANGED_LISTED],
    }


def write_report(
    path: Path, payload: dict, device: torch.device, command: list[str] | None = None
) -> dict:
    """Add machine, date, the command (script and arguments; default sys.argv) and the code
    (:func:`code_state`) to ``payload`` and write it as JSON."""
    report = {
        "command": command_line(command),
        "date": utc_now(),
        "code": code_state(),
        "machine": machine_info(device),
        **payload,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(partial, path)  # a run killed while writing keeps the previous file whole
    print(f"wrote {path}", file=sys.stderr)
    return report
