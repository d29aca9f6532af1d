"""`sef predict` as a user runs it: a table or JSON, bad files named on stderr, exit codes."""

import errno
import fcntl
import io
import json
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest

from sef.cli import main


def test_predict_json_table_and_unreadable_files(demo_checkpoint, tmp_path, write_image, capsys):
    """In this process: the progress-bar test runs `sef predict` as a fresh process."""
    good = write_image(tmp_path / "in" / "bird.png", (40, 30))
    bad = tmp_path / "in" / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    missing = tmp_path / "gone.png"
    code = main(["predict", "--checkpoint", str(demo_checkpoint), str(tmp_path / "in"),
                 str(missing), "--json", "--top-k", "3", "--no-progress"])  # fmt: skip
    result = capsys.readouterr()
    assert code == 0, result.err
    payload = json.loads(result.out)
    assert [entry["path"] for entry in payload["images"]] == [str(good)]
    top = payload["images"][0]["predictions"]
    assert len(top) == 3 and top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]
    assert {entry["path"] for entry in payload["skipped"]} == {str(bad), str(missing)}
    assert f"skipped {bad}, which is not an image (it is a text file)\n" in result.err
    assert f"sef predict: skipped {missing}, which does not exist\n" in result.err  # not ": does"


def test_predict_table_and_nothing_predictable(demo_checkpoint, tmp_path, write_image, capsys):
    good = write_image(tmp_path / "bird.png", (40, 30))
    argv = ["predict", "--checkpoint", str(demo_checkpoint), "--no-progress"]
    assert main([*argv, str(good), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["image", "rank", "class", "probability"] and len(lines) == 3

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    assert main([*argv, str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"skipped {bad}" in err and "sef predict: error: no image could be predicted" in err


def test_an_unfinished_runs_last_checkpoint_is_warned_of(
    unfinished_checkpoint, tmp_path, write_image, capsys
):
    """A last.pt of a run stopped at epoch 1 of 50 predicted as if it were the trained model."""
    good = write_image(tmp_path / "bird.png", (40, 30))
    last = unfinished_checkpoint
    assert main(["predict", "--checkpoint", str(last), str(good), "--no-progress"]) == 0
    assert capsys.readouterr().err == (
        f"sef predict: warning: {last} is the last.pt of an unfinished run (epoch 1 of 50): the "
        "predictions are of its model as it was then\n"
    )


def test_a_full_disk_under_its_output_is_said_to_be_stdouts(
    demo_checkpoint, tmp_path, write_image, capsys, monkeypatch
):
    """`sef predict ... > file` on a full disk said only "no space left on device"."""

    class FullDisk(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    good = write_image(tmp_path / "bird.png", (40, 30))
    monkeypatch.setattr(sys, "stdout", FullDisk())
    assert main(["predict", "--checkpoint", str(demo_checkpoint), str(good), "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        "sef predict: error: cannot write its output to stdout: no space left on device; free "
        "some space or send it elsewhere\n"
    )


def test_a_dash_reads_paths_from_stdin(demo_checkpoint, tmp_path, write_image, capsys, monkeypatch):
    """`find photos -name '*.png' | sef predict -` said "skipped -: does not exist"."""
    first, second = write_image(tmp_path / "a.png"), write_image(tmp_path / "b.png")
    listed = f"{first}\n\n{second}\r\n".encode()  # a blank line, a Windows line end
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(listed)))
    argv = ["predict", "--checkpoint", str(demo_checkpoint), "--json", "--no-progress"]
    assert main([*argv, "-", str(tmp_path / "gone.png")]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [image["path"] for image in payload["images"]] == [str(first), str(second)]
    assert [entry["path"] for entry in payload["skipped"]] == [str(tmp_path / "gone.png")]


def test_each_batch_is_printed_when_done(
    demo_checkpoint, tmp_path, write_image, capsys, monkeypatch
):
    """The table came after the last batch: nothing for minutes on a big folder (`| head` waited
    for all of it), and nothing at all when stopped midway."""
    import sef.predict

    for name in "abc":
        write_image(tmp_path / f"{name}.png")
    read = sef.predict._ImageFiles.__getitem__

    def stopped_at_the_third(self, index):
        if index == 2:
            raise KeyboardInterrupt
        return read(self, index)

    monkeypatch.setattr(sef.predict._ImageFiles, "__getitem__", stopped_at_the_third)
    argv = ["predict", "--checkpoint", str(demo_checkpoint), str(tmp_path), "--no-progress"]
    assert main([*argv, "--batch-size", "1", "--top-k", "2"]) == 130
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and lines[0].startswith("image")  # a.png and b.png, 2 ranks each
    assert lines[1].startswith(str(tmp_path / "a.png")) and lines[3].startswith(str(tmp_path / "b"))
    rank = lines[0].index("rank") + 3
    assert [line[rank] for line in lines[1:]] == ["1", "2", "1", "2"]  # one table's columns


def _stderr_on_a_terminal(*args) -> str:
    """What `sef ARGS` writes to stderr when stderr is a terminal (a pseudo-terminal here)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # 80 columns
    command = [sys.executable, "-m", "sef.cli", *map(str, args)]
    try:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=follower)
        os.close(follower)
        written = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the process closed its end
                break
            if not chunk:
                break
            written += chunk
        assert process.wait(timeout=300) == 0, written
    finally:
        os.close(leader)
    return written.decode(errors="replace")


@pytest.mark.slow
def test_progress_bars_only_on_a_terminal_unless_asked(
    demo_checkpoint, tmp_path, write_image, capsys
):
    """A log file or pipe gets no bar redraws; --progress and --no-progress decide over that."""
    image = write_image(tmp_path / "bird.png", (40, 30))
    predict = ["predict", "--checkpoint", str(demo_checkpoint), str(image)]
    assert "predicting" in _stderr_on_a_terminal(*predict)
    assert "predicting" not in _stderr_on_a_terminal(*predict, "--no-progress")
    # not a terminal (capsys's stderr, as a pipe's): in this process, a fresh one costs seconds
    assert main(predict) == 0 and "predicting" not in capsys.readouterr().err
    assert main([*predict, "--progress"]) == 0 and "predicting" in capsys.readouterr().err
