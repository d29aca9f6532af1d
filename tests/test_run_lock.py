"""One run, one folder: a run holds an OS lock on its folder; a second run, or a resume, into a
held folder is refused naming the holder; a dead holder blocks nothing; default folders never
merge two runs. Tested with real processes, as two users' terminals would run them."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from sef.cli import main
from sef.config import resolve_config
from sef.engine import folders
from sef.engine.folders import claim_new_out_dir, claim_resumed
from sef.engine.lock import LOCK_NAME, FolderBusy, acquire, is_held
from sef.engine.run import resume_dir
from sef.errors import OutputError
from sef.outputs import output_error

TINY_DEMO = [
    "--set", "data.options.per_class=3", "--set", "data.options.test_per_class=2",
    "--image-size", "32", "--batch-size", "8", "--workers", "0", "--no-progress",
]  # fmt: skip
HOLD = (
    "import sys, time\n"
    "from sef.engine.lock import acquire\n"
    "lock = acquire(sys.argv[1])\n"
    "print('held', flush=True)\n"
    "time.sleep(120)\n"
)


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _holder(folder: Path) -> subprocess.Popen:
    """Another process that holds ``folder``'s lock until killed."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True, env=_env()
    )
    assert process.stdout.readline() == "held\n"
    return process


def _sef_start(*args: str, cwd: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "sef.cli", *args]
    return subprocess.Popen(
        command, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_a_held_folder_is_refused_naming_its_holder_until_the_holder_dies(tmp_path: Path) -> None:
    folder = tmp_path / "runs" / "x"
    holder = _holder(folder)
    try:
        with pytest.raises(FolderBusy) as info:
            acquire(folder)
        message = str(info.value)
        assert message.startswith(f"{folder} is in use by another run (pid {holder.pid}, started ")
        info = json.loads((folder / LOCK_NAME).read_text())
        assert info["pid"] == holder.pid and info["started"] in message
    finally:
        holder.send_signal(signal.SIGKILL)  # a crash: the kernel releases the lock
        holder.wait()
    with acquire(folder) as lock:  # nothing to delete by hand
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert os.listdir(folder) == []  # the stale lock file went too
    with acquire(tmp_path / "new" / "run"):
        assert (tmp_path / "new" / "run" / LOCK_NAME).is_file()
    assert not (tmp_path / "new").exists()  # the folders it made, left empty, went with it


def test_a_lock_file_shared_by_a_hard_link_with_another_folder_is_replaced(tmp_path: Path) -> None:
    # `cp -al` of a run folder shares its .sef-lock: a run in the copy was refused as busy while
    # the original ran, and otherwise wrote its note into the original's file
    original, copy, idle = tmp_path / "run", tmp_path / "copy", tmp_path / "idle"
    copy.mkdir()
    idle.mkdir()
    with acquire(original) as held:
        os.link(held.path, copy / LOCK_NAME)
        note = held.path.read_text()
        assert not is_held(copy)
        with acquire(copy) as lock:
            assert os.stat(lock.path).st_nlink == 1 and held.path.read_text() == note
    killed = tmp_path / "killed" / LOCK_NAME  # as a killed run leaves it: nobody holds it
    killed.parent.mkdir()
    killed.write_text('{"pid": 1}')
    os.link(killed, idle / LOCK_NAME)
    with acquire(idle) as lock:
        assert os.stat(lock.path).st_nlink == 1 and killed.read_text() == '{"pid": 1}'
        assert json.loads(lock.path.read_text())["folder"] == str(idle.resolve())


FORK = (
    "import os, sys, time\n"
    "from sef.engine.lock import acquire\n"
    "lock = acquire(sys.argv[1])\n"
    "child = os.fork()\n"
    "if child == 0:\n"
    "    time.sleep(120)\n"
    "    os._exit(0)\n"
    "print(child, flush=True)\n"
    "time.sleep(120)\n"
)


def test_a_forked_child_outliving_a_killed_run_does_not_hold_its_folder(tmp_path: Path) -> None:
    """A DataLoader worker is a forked child: it must not keep the dead run's lock."""
    folder = tmp_path / "run"
    run = subprocess.Popen(
        [sys.executable, "-c", FORK, str(folder)], stdout=subprocess.PIPE, text=True, env=_env()
    )
    worker = int(run.stdout.readline())
    try:
        run.kill()
        run.wait()
        with acquire(folder):
            os.kill(worker, 0)  # the child still lives, and the folder is free
    finally:
        os.kill(worker, signal.SIGKILL)


def test_the_default_folder_steps_over_one_a_live_run_holds(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = resolve_config("demo")
    holder = _holder(tmp_path / "runs" / "demo")
    try:
        with claim_new_out_dir(config) as lock:
            assert lock.folder == Path("runs/demo-2")
        explicit = resolve_config("demo", overrides=["run.out=runs/demo"])
        with pytest.raises(FolderBusy, match=f"in use by another run \\(pid {holder.pid}, "):
            claim_new_out_dir(explicit)
    finally:
        holder.kill()
        holder.wait()
    with claim_new_out_dir(config) as lock:
        assert lock.folder == Path("runs/demo")


def test_an_out_under_the_home_folder_is_claimed_there_not_in_a_folder_named_tilde(
    tmp_path: Path, monkeypatch
) -> None:
    """``out: ~/runs/x`` in a YAML file (or --out=~/runs/x, which the shell leaves) made
    ./~/runs/x, and a resume of it said "~/runs/x does not exist"."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = resolve_config("demo", overrides=["run.out=~/runs/x"])
    out = tmp_path / "home" / "runs" / "x"
    with claim_new_out_dir(config) as lock:
        assert lock.folder == out
        (out / "config.yaml").write_text("name: demo\n")  # a run started there
    assert not (tmp_path / "~").exists()
    assert resume_dir(config) == out


@pytest.mark.slow
def test_two_runs_into_one_folder_never_both_succeed(
    demo_root: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """The first run is a process of its own; the second, the resume and the resume after the
    first was killed run in the test's process (another process all the same, without the
    seconds a fresh one takes to start)."""
    out = tmp_path / "runs" / "x"
    monkeypatch.chdir(tmp_path)
    first = _sef_start("train", *TINY_DEMO, "--epochs", "400", "--out", str(out), cwd=tmp_path)
    try:
        _wait_for(out / LOCK_NAME, first)
        for extra in ([], ["--resume"]):  # a second run, and a resume, while the first lives
            second = ["train", *TINY_DEMO, "--epochs", "1", "--lr", "0.5", "--out", str(out)]
            assert main([*second, *extra]) == 2
            error = capsys.readouterr().err
            assert error.count("\n") == 1 and f"(pid {first.pid}, started " in error, error
            assert ("cannot resume" in error) == bool(extra)
        assert first.poll() is None  # the first run goes on untouched
        _wait_for(out / "last.pt", first)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert yaml.safe_load((out / "config.yaml").read_text())["optim"]["lr"] != 0.5
    # the killed run blocks nothing: it is resumed at once, for one more epoch
    epoch = torch.load(out / "last.pt", weights_only=True)["epoch"]
    resume = ["train", "--resume", "--out", str(out), "--epochs", str(epoch + 1), "--no-progress"]
    assert main(resume) == 0, capsys.readouterr().err
    assert f"resuming after epoch {epoch}" in capsys.readouterr().out


@pytest.mark.slow
def test_two_runs_without_out_get_their_own_folders(demo_root: Path, tmp_path: Path) -> None:
    first = _sef_start("train", *TINY_DEMO, "--epochs", "3", "--lr", "0.01", cwd=tmp_path)
    _wait_for(tmp_path / "runs" / "demo" / LOCK_NAME, first)
    second = _sef_start("train", *TINY_DEMO, "--epochs", "1", "--lr", "0.02", cwd=tmp_path)
    for process in (first, second):
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0 and "Traceback" not in stderr, stderr
    lrs = {
        name: yaml.safe_load((tmp_path / "runs" / name / "config.yaml").read_text())["optim"]["lr"]
        for name in ("demo", "demo-2")
    }
    assert lrs == {"demo": 0.01, "demo-2": 0.02}
    assert not list((tmp_path / "runs").glob(f"*/{LOCK_NAME}"))  # released at the end


@pytest.mark.slow
def test_torchrun_into_a_held_folder_stops_every_rank_with_one_line(
    demo_root: Path, tmp_path: Path
) -> None:
    """Rank 0 holds a DDP run's folder; when it is refused, every rank stops with rank 0's error
    (no rank left waiting for the folder's name), and the error is printed once."""
    folder = tmp_path / "held"
    holder = _holder(folder)
    try:
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
            "2", "-m", "sef.cli", "train", "--data-root", str(demo_root), "--out", str(folder),
            "--epochs", "1", "--device", "cpu", *TINY_DEMO,
        ]  # fmt: skip
        result = subprocess.run(
            command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=240
        )
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode != 0
    output = result.stdout + result.stderr
    refusals = [line for line in output.splitlines() if line.startswith("sef train: error: ")]
    assert refusals == [
        f"sef train: error: {folder} is in use by another run (pid {holder.pid}, started "
        + refusals[0].split(", started ", 1)[-1]
    ], output
    assert "[rank1]" not in output and "Connection reset" not in output, output
    assert not (folder / "config.yaml").exists()


def test_the_lock_file_is_created_as_the_umask_allows(tmp_path: Path) -> None:
    previous = os.umask(0o002)  # a group folder's: a killed run's lock stays the group's
    try:
        with acquire(tmp_path / "run") as lock:
            assert lock.path.stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(previous)


def _open_as_a_user(monkeypatch) -> None:
    """os.open refusing to write a file without write permission, as it does for a non-root user."""
    real = os.open

    def open_(path, flags, *args, **kwargs):
        writing = flags & (os.O_RDWR | os.O_WRONLY)
        if writing and os.path.isfile(path) and not os.stat(path).st_mode & 0o200:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)


def test_an_unwritable_lock_of_a_dead_run_is_replaced_and_a_live_ones_named(
    tmp_path: Path, monkeypatch
) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK_NAME).write_text('{"pid": 1}')
    (folder / LOCK_NAME).chmod(0o444)  # a killed run's, created 0644 by another user
    _open_as_a_user(monkeypatch)
    with acquire(folder) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    holder = _holder(folder)
    try:
        (folder / LOCK_NAME).chmod(0o444)
        with pytest.raises(FolderBusy, match=f"pid {holder.pid}"):
            acquire(folder)
    finally:
        holder.kill()
        holder.wait()


def test_eval_writes_no_default_predictions_into_a_folder_a_live_run_holds(
    demo_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    """The live run rewrites best-test-predictions.csv there: eval's would be mixed with it."""
    folder = tmp_path / "run"
    folder.mkdir()
    checkpoint = folder / "best.pt"
    shutil.copy(demo_checkpoint, checkpoint)
    evaluate = ["eval", "--checkpoint", str(checkpoint), "--workers", "0", "--no-progress"]
    holder = _holder(folder)
    try:
        assert main(evaluate) == 2
        assert capsys.readouterr().err == (
            f"sef eval: error: {folder} is in use by a run that rewrites its predictions there; "
            f"pass --predictions FILE to write them elsewhere\n"
        )
        assert main([*evaluate, "--predictions", str(tmp_path / "mine.csv")]) == 0
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert not (folder / "best-test-predictions.csv").exists()
    assert main(evaluate) == 0  # the run has ended
    assert (folder / "best-test-predictions.csv").is_file()


def test_another_users_read_only_lock_of_a_live_run_counts_as_held(
    tmp_path: Path, monkeypatch
) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    holder = _holder(folder)
    try:
        (folder / LOCK_NAME).chmod(0o444)  # another user's, under a stricter umask
        _open_as_a_user(monkeypatch)
        assert is_held(folder)
    finally:
        holder.kill()
        holder.wait()
    assert not is_held(folder)


def test_a_resume_of_a_folder_it_cannot_lock_says_to_copy_the_run_not_to_choose_another_place(
    tmp_path: Path, monkeypatch
) -> None:
    """A run on a read-only mount: 'choose another place' is what a new run can do, not a resume."""

    def read_only(folder: Path):
        raise output_error(folder / LOCK_NAME, OSError(errno.EROFS, "Read-only file system"))

    monkeypatch.setattr(folders, "acquire", read_only)
    with pytest.raises(OutputError) as info:
        claim_resumed(tmp_path)
    assert str(info.value) == (
        f"cannot resume {tmp_path}: cannot write {tmp_path / LOCK_NAME}: read-only file system; "
        f"copy the run folder to a writable place with file locks and resume it there with run.out"
    )


@pytest.mark.parametrize(
    "kind", ["a folder", "a link to nothing", "a link to a file", "a link to a folder"]
)
def test_a_resume_of_a_folder_whose_lock_is_no_file_says_to_remove_it(
    tmp_path: Path, kind: str
) -> None:
    """It was told to copy the run folder to a writable place: no run can hold such a lock. A
    link to a file elsewhere is never written through (the file stays as it was)."""
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run.mkdir()
    elsewhere.mkdir()
    (elsewhere / "notes.txt").write_text("mine")
    lock = run / LOCK_NAME
    target = {
        "a link to nothing": elsewhere / "lock",  # its folder exists: opening it would create it
        "a link to a file": elsewhere / "notes.txt",
        "a link to a folder": elsewhere,
    }
    if kind == "a folder":
        lock.mkdir()
    else:
        lock.symlink_to(target[kind])
    said = f"a link to {target[kind]}" if kind in target else kind
    with pytest.raises(OutputError) as info:
        claim_resumed(run)
    assert str(info.value) == (
        f"cannot resume {run}: {lock} is {said}, not a run's lock file; remove it (no run holds it)"
    )
    assert sorted(os.listdir(elsewhere)) == ["notes.txt"]
    assert (elsewhere / "notes.txt").read_text() == "mine"
    assert not is_held(run)
