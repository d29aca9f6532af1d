"""A run killed with SIGKILL and resumed (with another worker count) ends exactly where an
uninterrupted run ends."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sef.checkpoint import load_checkpoint
from sef.cli import main

pytestmark = pytest.mark.slow  # trains in a subprocess, kills it and resumes

EPOCHS = 3
TIMING_KEYS = ("seconds", "images_per_second")


def _command(out: Path, *extra: str) -> list[str]:
    """The demo on 32 tiny textured images: random crops and flips change what is learned."""
    return [
        sys.executable, "-m", "sef.cli", "train", "--out", str(out),
        "--set", "data.options.per_class=4", "--set", "data.options.test_per_class=2",
        "--epochs", str(EPOCHS), "--batch-size", "4", "--image-size", "32", "--workers", "1",
        "--set", "optim.step_size=2", "--no-progress", *extra,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _metrics(out: Path) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in lines]


def _as_in_a_terminal() -> None:
    for number in (signal.SIGINT, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)


def _stop_after_first_checkpoint(
    command: list[str], out: Path, stop: int = signal.SIGKILL, patience: float = 60
) -> tuple[int, str, int]:
    """Send ``stop`` (SIGKILL: no cleanup, no chance to finish a write) once last.pt exists;
    the exit code, what the run wrote to stderr and its process id. A run still there
    ``patience`` seconds after the signal fails the test with every thread's stack (a rare hang
    after Ctrl-C was once seen in CI with nothing to read)."""
    process = subprocess.Popen(
        command,
        env={**_env(), "PYTHONFAULTHANDLER": "1"},  # SIGABRT: the stacks, to stderr
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # a shell's background job ignores SIGINT and nohup SIGHUP, and so would the run: the
        # signals as a command started in a terminal finds them
        preexec_fn=_as_in_a_terminal,
        start_new_session=True,  # its own process group: its loader workers are found by it
    )
    try:
        while not (out / "last.pt").exists():
            if process.poll() is not None:
                raise AssertionError(f"training exited early with {process.returncode}")
            time.sleep(0.01)
        process.send_signal(stop)
        try:
            _, err = process.communicate(timeout=patience)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            _, err = process.communicate(timeout=30)
            stacks = f"still running {patience} s after signal {stop}:\n{err}"
            raise AssertionError(stacks) from None
        return process.returncode, err, process.pid
    finally:
        if process.poll() is None:
            process.kill()


def _in_process(arguments: list[str]) -> int:
    """`sef ...` in this process, on one thread like the subprocesses (so the same kernels)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(arguments)
    finally:
        torch.set_num_threads(threads)


def test_sigkill_then_resume_matches_an_uninterrupted_run(
    demo_root: Path, tmp_path: Path, capsys
) -> None:
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    assert _in_process(_command(reference)[3:]) == 0  # never interrupted

    assert _stop_after_first_checkpoint(_command(interrupted), interrupted)[0] == -9
    killed_at = load_checkpoint(interrupted / "last.pt")["epoch"]
    assert 1 <= killed_at < EPOCHS

    capsys.readouterr()
    resume = ["train", "--resume", "--out", str(interrupted), "--workers", "0", "--no-progress"]
    assert _in_process(resume) == 0  # fewer workers than before: the same augmentations
    assert f"resuming after epoch {killed_at}" in capsys.readouterr().out

    assert _metrics(interrupted) == _metrics(reference)
    final, expected = (
        load_checkpoint(interrupted / "last.pt"),
        load_checkpoint(reference / "last.pt"),
    )
    assert final["epoch"] == EPOCHS
    for key, value in expected["model"].items():
        assert torch.equal(final["model"][key], value), key
    assert final["optimizer"]["state"].keys() == expected["optimizer"]["state"].keys()
    assert load_checkpoint(interrupted / "best.pt")["epoch"] == expected["best"]["epoch"]


def test_ctrl_c_says_which_checkpoint_is_kept_and_how_to_go_on(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, err, _ = _stop_after_first_checkpoint(_command(out), out, signal.SIGINT)
    _says_what_it_kept(code, err, out, signal.SIGINT)  # exit code 130, no "by"


def _says_what_it_kept(code: int, err: str, out: Path, stop: signal.Signals) -> None:
    """The shell's exit code of a program ``stop`` ended, no traceback, and a last line saying
    which last.pt is kept and how to go on (Ctrl-C's without "by SIGINT")."""
    assert code == 128 + stop and "Traceback" not in err, err
    by = "" if stop == signal.SIGINT else f" by {stop.name}"
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"sef train: interrupted{by}; {re.escape(str(out / 'last.pt'))} \(epoch \d\) is kept; "
        r"run the same command with --resume to continue",
        last,
    ), err


def _group(leader: int) -> list[int]:
    """The processes still alive in the process group of ``leader`` (Linux's /proc)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended meanwhile
            continue
        if int(fields[2]) == leader and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds loader workers in /proc")
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_stop_a_run_as_ctrl_c_does(tmp_path: Path, stop: int) -> None:
    """What a job scheduler or a closed terminal sends: the same line, lock and temporaries
    gone, no loader worker left, and the shell's exit code of a program the signal stopped."""
    out = tmp_path / "run"
    code, err, pid = _stop_after_first_checkpoint(_command(out), out, stop)
    _says_what_it_kept(code, err, out, stop)
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    assert _group(pid) == []  # its loader workers ended with it
