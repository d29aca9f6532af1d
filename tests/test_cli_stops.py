"""How the `sef` command stops on Ctrl-C, SIGTERM and SIGHUP, with loader workers forked from it
(the whole run is tested in tests/test_resume.py; these are the timings a run meets by chance)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest
from torch.utils.data import DataLoader

import sef.cli
from sef.cli import _stops_as_interrupts

FORK = multiprocessing.get_context("fork")


@pytest.fixture(autouse=True)
def signals_as_in_a_terminal():
    """Ctrl-C, SIGTERM and SIGHUP as a command started in a terminal finds them, also where the
    suite runs as a background job (SIGINT ignored) or under nohup (SIGHUP ignored)."""
    started = {
        signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL,
        signal.SIGHUP: signal.SIG_DFL,
    }  # fmt: skip
    before = {number: signal.signal(number, handler) for number, handler in started.items()}
    yield
    for number, handler in before.items():
        signal.signal(number, handler)


def _worker() -> multiprocessing.Process:
    """A forked process standing in for a DataLoader worker, waiting for work."""
    worker = FORK.Process(target=time.sleep, args=(60,), daemon=True)
    worker.start()
    return worker


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_ends_the_workers_before_the_command_lets_go_of_them(stop: int) -> None:
    with _stops_as_interrupts() as stopped:
        worker = _worker()
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(stop)
        worker.join(10)
    assert stopped == [stop]
    assert worker.exitcode == 0  # ended, and as torch's loader counts no failure


def test_an_error_ends_the_workers_before_its_line_is_said(capsys) -> None:
    """A run stopped by a worker's death left its other workers mid-batch: their sharing threads
    printed "ConnectionResetError" tracebacks after the command's one line."""
    from argparse import Namespace

    from sef.errors import TrainingError

    workers: list[multiprocessing.Process] = []

    def fails(args: Namespace) -> int:
        workers.append(_worker())
        raise TrainingError("a data loader worker (pid 7) was killed by signal: Killed")

    with _stops_as_interrupts() as stopped:
        assert sef.cli._run(Namespace(func=fails, command="train"), stopped) == 2
        assert not workers[0].is_alive()  # ended, not left to outlive the command
    assert capsys.readouterr().err == (
        "sef train: error: a data loader worker (pid 7) was killed by signal: Killed\n"
    )


def test_a_loader_worker_that_fails_outside_training_is_one_line_and_a_bug_is_not(capsys) -> None:
    """`sef eval --workers 2` on a full /dev/shm (a container's 64 MB) was torch's traceback:
    only `sef train` said a worker's failure in words."""
    from argparse import Namespace

    def fails(error: RuntimeError):
        def run(args: Namespace) -> int:
            raise error

        return Namespace(func=run, command="eval")

    shm = RuntimeError(
        "Caught RuntimeError in DataLoader worker process 0.\nOriginal Traceback (most recent "
        "call last):\nRuntimeError: unable to allocate shared memory(shm) for file </torch_7_1_0>"
        ": No space left on device (28)\n"
    )
    with _stops_as_interrupts() as stopped:
        assert sef.cli._run(fails(shm), stopped) == 2
        with pytest.raises(RuntimeError, match="a bug"):
            sef.cli._run(fails(RuntimeError("a bug")), stopped)
    assert capsys.readouterr().err == (
        "sef eval: error: a data loader worker could not hand over a batch: the shared memory its "
        "batches pass through (/dev/shm) is full (raise its size, e.g. docker run --shm-size, or "
        "use fewer --workers)\n"
    )


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP])
def test_a_worker_sent_a_stop_itself_ends_at_once_and_silently(stop: int, capfd) -> None:
    """A scheduler signals the whole process group; a worker that raised KeyboardInterrupt could
    hang in its exit, or print a traceback."""
    with _stops_as_interrupts() as stopped:
        worker = _worker()
        time.sleep(0.2)  # the worker runs
        os.kill(worker.pid, stop)
        worker.join(10)
    assert (worker.exitcode, stopped) == (0, [])
    assert "Traceback" not in capfd.readouterr().err


def test_a_signal_ignored_at_the_start_stays_ignored() -> None:
    """`nohup sef train ...` must survive the terminal's SIGHUP."""
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with _stops_as_interrupts() as stopped:
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
            signal.raise_signal(signal.SIGHUP)  # nothing happens
        assert stopped == []
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)


def test_a_stop_sent_to_the_whole_process_group_counts_no_dead_loader_worker_as_a_failure(capfd):
    """A scheduler (Slurm's scancel, `timeout`) signals every process of the group: a torch loader
    worker sent SIGTERM by anyone but its parent dies of it, and torch's SIGCHLD handler raised that
    as a RuntimeError in the middle of the stop (a traceback and exit code 1 instead of 143)."""
    loader = DataLoader(range(10_000), batch_size=2, num_workers=2, multiprocessing_context=FORK)
    with _stops_as_interrupts() as stopped:
        batches = iter(loader)
        next(batches)
        pids = [os.getpid(), *(worker.pid for worker in batches._workers)]  # as kill(-group) does
        sender = subprocess.Popen(
            [sys.executable, "-c", "import os, sys; [os.kill(int(p), 15) for p in sys.argv[1:]]"]
            + [str(pid) for pid in pids]
        )
        with pytest.raises(KeyboardInterrupt):
            time.sleep(30)
        sender.wait()
        del batches
    assert stopped == [signal.SIGTERM]
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception ignored" not in err, err


# `sef presets` as `python -m sef.cli` runs it, with an exit as slow as one that joins loader
# workers or a logger's thread, or runs torch's atexit hooks: "exiting" says it has begun.
SLOW_EXIT = """
import atexit, runpy, signal, sys, threading, time

def slow_exit():
    print("exiting", flush=True)
    time.sleep(30)

def joined_thread():  # takes no stop: one sent to this thread leaves the main thread's join
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT, signal.SIGTERM])
    threading.main_thread().join()
    slow_exit()

if sys.argv[1] == "atexit":
    atexit.register(slow_exit)
else:  # a thread the interpreter's exit joins
    threading.Thread(target=joined_thread).start()
sys.argv = ["sef", "presets"]
runpy.run_module("sef.cli", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize(
    ("joined", "stop"),
    [("atexit", signal.SIGINT), ("thread", signal.SIGINT), ("atexit", signal.SIGTERM)],
)
def test_a_stop_while_the_command_exits_ends_it_at_once_quietly(joined: str, stop: int) -> None:
    """Ctrl-C after the last line of `sef train` printed a KeyboardInterrupt traceback from
    atexit or threading (and exited 0): the exit is now cut short, quietly, with 128 + signal."""
    command = [sys.executable, "-c", SLOW_EXIT, joined]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "exiting\n" in process.stdout  # reads up to that line
    time.sleep(0.5)  # the exit waits: a stop just before its wait begins is seen when it ends
    process.send_signal(stop)
    out, err = process.communicate(timeout=20)
    assert (process.returncode, err) == (128 + stop, "")


def test_a_stop_as_the_command_lets_go_of_the_signals_is_its_exit_code(monkeypatch, capsys):
    """A stop after the command returned, before main had put the handlers back, escaped main as a
    KeyboardInterrupt traceback."""

    @contextlib.contextmanager
    def stopped_at_the_end(command: str):
        yield
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(sef.cli, "_warnings_as_lines", stopped_at_the_end)
    try:
        code = sef.cli.main(["presets"])
    except KeyboardInterrupt:
        pytest.fail("the stop escaped main")
    assert (code, capsys.readouterr().err) == (130, "")
