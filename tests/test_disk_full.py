"""A disk that is full, or fills, at any moment: before the first checkpoint, mid-checkpoint,
mid-metrics, during eval's CSV and during export. Each ends in one line naming the file and the
space, keeps the last good checkpoint, and a rerun continues or starts clean with nothing deleted
by hand. On a real small tmpfs (mounted here, as root) and by fault-injecting writers."""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_engine import Blobs, _config

import sef.checkpoint
import sef.outputs
import sef.space
from sef.checkpoint import load_checkpoint
from sef.cli import main
from sef.engine import Data, fit
from sef.engine.lock import LOCK_NAME
from sef.errors import DiskFull

FULL = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _fill(disk: Path, leave: int = 0) -> Path:
    """Fill ``disk`` but ``leave`` bytes, as another program would."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as handle:
        try:  # in pieces: a run writing at the same time may take the last of them
            while shutil.disk_usage(disk).free > leave:
                handle.write(b"\0" * min(64 * 1024, shutil.disk_usage(disk).free - leave))
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
    return filler


def _data() -> Data:
    return Data(Blobs(8, 0), Blobs(3, 1), Blobs.classes)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _failing_torch_save(epoch: int):
    """torch.save as it behaves on a disk that fills while it writes last.pt of ``epoch``: half
    the archive written, then torch's RuntimeError raised while handling the OSError."""
    real = torch.save

    def save(state, handle, *args, **kwargs):
        if ".last.pt." in getattr(handle, "name", "") and state["epoch"] == epoch:
            buffer = io.BytesIO()
            real(state, buffer)
            handle.write(buffer.getvalue()[: buffer.tell() // 2])
            try:
                raise FULL
            except OSError:
                raise RuntimeError(
                    "[enforce fail at inline_container.cc:672] unexpected pos"
                ) from None
        return real(state, handle, *args, **kwargs)

    return save


def test_a_disk_full_mid_checkpoint_keeps_the_last_one_and_resume_continues(
    tmp_path: Path, monkeypatch
) -> None:
    out = tmp_path / "run"
    monkeypatch.setattr(sef.checkpoint.torch, "save", _failing_torch_save(epoch=2))
    with pytest.raises(DiskFull) as info:
        fit(_config(out), data=_data(), progress=False)
    message = str(info.value)
    assert message.startswith(f"cannot write {out / 'last.pt'}: no space left on device (")
    assert "free there); this run needs about " in message and "\n" not in message
    assert message.endswith(
        f"{out / 'last.pt'} (epoch 1) is kept; free some space, then call fit(config, "
        f"resume=True) to continue"
    )
    assert load_checkpoint(out / "last.pt")["epoch"] == 1  # the last good checkpoint, whole
    assert _leftovers(out) == []  # no temporary, no lock
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    monkeypatch.undo()
    result = fit(_config(out), resume=True, data=_data(), progress=False)
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert load_checkpoint(out / "best.pt")["epoch"] == result.best_epoch


def test_a_resume_removes_the_temporaries_a_killed_run_left(tmp_path: Path) -> None:
    out = tmp_path / "run"
    fit(_config(out, "optim.epochs=1"), data=_data(), progress=False)
    for name in ("last.pt", "best-test-predictions.csv", "best-val-predictions.csv"):
        (out / f".{name}.999999999.tmp").write_bytes(b"half")  # a SIGKILL mid-write
    fit(_config(out), resume=True, data=_data(), progress=False)
    assert _leftovers(out) == []


def _failing_replace(name: str, at: int):
    """os.replace that fails, as on a full disk, on its ``at``-th rename onto ``name``."""
    real, calls = os.replace, []

    def replace(source, target, *args, **kwargs):
        if Path(target).name == name:
            calls.append(target)
            if len(calls) == at:
                raise FULL
        return real(source, target, *args, **kwargs)

    return replace


def test_a_disk_full_mid_metrics_keeps_the_epochs_checkpoint(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "run"
    # metrics.jsonl is written when the run starts, then after each epoch: fail after epoch 2
    monkeypatch.setattr(sef.outputs.os, "replace", _failing_replace("metrics.jsonl", at=3))
    with pytest.raises(DiskFull) as info:
        fit(_config(out), data=_data(), progress=False)
    assert str(info.value).startswith(f"cannot write {out / 'metrics.jsonl'}: no space left on")
    assert f"{out / 'last.pt'} (epoch 2) is kept; free some space, then call fit(config" in (
        str(info.value)
    )
    monkeypatch.undo()
    result = fit(_config(out, "optim.epochs=3"), resume=True, data=_data(), progress=False)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and [r["epoch"] for r in result.history] == [1, 2, 3]


def test_a_disk_full_before_the_first_checkpoint_starts_again_with_or_without_resume(
    tmp_path: Path, monkeypatch
) -> None:
    out = tmp_path / "run"
    monkeypatch.setattr(sef.outputs.os, "replace", _failing_replace("last.pt", at=1))
    with pytest.raises(DiskFull) as info:
        fit(_config(out), data=_data(), progress=False)
    assert str(info.value).endswith(
        "no checkpoint was written; free some space, then make the same fit call again to start "
        "it again"
    )
    assert not (out / "last.pt").exists() and not (out / "best.pt").exists()
    monkeypatch.undo()
    resumed = fit(_config(out, "optim.epochs=1"), resume=True, data=_data(), progress=False)
    assert [r["epoch"] for r in resumed.history] == [1]
    (out / "last.pt").unlink()
    (out / "best.pt").unlink()
    again = fit(_config(out, "optim.epochs=1"), data=_data(), progress=False)
    assert [r["epoch"] for r in again.history] == [1]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_a_disk_too_small_for_the_checkpoints_is_refused_before_training(small_disk) -> None:
    disk = small_disk(2048)
    out = disk / "run"
    with pytest.raises(DiskFull) as info:
        fit(_config(out), data=_data(), progress=False)
    assert str(info.value).startswith(f"{out} has ")
    assert "free and this run needs about " in str(info.value)
    assert str(info.value).endswith("; free some space or choose another run.out")
    assert os.listdir(disk) == []  # nothing written, nothing left


def test_the_space_a_run_needs_counts_best_pt_as_weights_alone(tmp_path, monkeypatch) -> None:
    out = tmp_path / "run"
    fit(_config(out, "optim.epochs=1"), data=_data(), progress=False)
    last, best = (out / "last.pt").stat().st_size, (out / "best.pt").stat().st_size
    assert best < last  # no optimizer state in best.pt
    monkeypatch.setattr(sef.space, "free_bytes", lambda path: 0)
    with pytest.raises(DiskFull) as info:  # a resume: its folder is where the run is
        fit(_config(out, "optim.epochs=2"), resume=True, data=_data(), progress=False)
    message = str(info.value)
    scale = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9}
    found = re.search(r"\(last.pt of ([\d.]+) (\w+), best.pt of ([\d.]+) (\w+), and room", message)
    said_last = float(found[1]) * scale[found[2]]
    said_best = float(found[3]) * scale[found[4]]
    assert said_best < said_last and abs(said_best - best) < 0.1 * best  # as best.pt came out
    assert message.endswith("; free some space or move the run folder and resume it there")


TINY_DEMO = [
    "--set", "data.options.per_class=3", "--set", "data.options.test_per_class=2",
    "--image-size", "32", "--batch-size", "8", "--workers", "0", "--no-progress",
]  # fmt: skip


@pytest.mark.slow
def test_a_disk_that_fills_during_training_stops_in_one_line_and_resumes(
    demo_root: Path, small_disk, capsys
) -> None:
    disk = small_disk(16 * 1024)
    out = disk / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "sef.cli", "train", *TINY_DEMO, "--epochs", "400"]
    run = subprocess.Popen(
        [*command, "--out", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not (out / "last.pt").exists():
            assert run.poll() is None and time.monotonic() < deadline, run.communicate()
            time.sleep(0.05)
        filler = _fill(disk)  # another program takes the disk
        _, stderr = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.send_signal(signal.SIGKILL)
    assert run.returncode == 2 and "Traceback" not in stderr and stderr.count("\n") == 1, stderr
    assert stderr.startswith(f"sef train: error: cannot write {out}")
    assert "no space left on device" in stderr and "this run needs about" in stderr
    kept = load_checkpoint(out / "last.pt")["epoch"]
    assert f"{out / 'last.pt'} (epoch {kept}) is kept" in stderr
    assert _leftovers(out) == []
    filler.unlink()  # space freed: the same command with --resume goes on (here, in this process)
    resume = ["train", "--resume", "--out", str(out), "--epochs", str(kept + 1), "--no-progress"]
    assert main(resume) == 0, capsys.readouterr().err
    assert f"resuming after epoch {kept}" in capsys.readouterr().out
    assert not (out / LOCK_NAME).exists()


def test_a_resume_that_writes_best_pt_again_writes_its_predictions_again(
    demo_root: Path, tmp_path: Path
) -> None:
    out, predictions = tmp_path / "run", tmp_path / "run" / "best-test-predictions.csv"
    assert main(["train", *TINY_DEMO, "--epochs", "1", "--out", str(out)]) == 0
    predictions.write_text("path,label,prediction,correct\n")  # an older best's
    (out / "best.pt").unlink()  # as a disk full at best.pt leaves the folder
    assert main(["train", "--resume", "--out", str(out), "--no-progress"]) == 0
    evaluated = tmp_path / "eval.csv"
    eval_ = ["eval", "--checkpoint", str(out / "best.pt"), "--predictions", str(evaluated)]
    assert main([*eval_, "--workers", "0", "--no-progress"]) == 0
    assert predictions.read_text() == evaluated.read_text()


def test_a_full_disk_under_trains_output_says_stdout_and_that_the_run_resumes(
    demo_root: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    """`sef train ... > log` on a full disk added the run folder's space needed, as if its disk
    were the one full."""

    class FullAtTheEpochLine(io.StringIO):
        def write(self, text: str) -> int:
            if text.startswith("epoch 1/2"):
                raise FULL
            return super().write(text)

    out = tmp_path / "run"
    monkeypatch.setattr(sys, "stdout", FullAtTheEpochLine())
    assert main(["train", *TINY_DEMO, "--epochs", "2", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        "sef train: error: cannot write its output to stdout: no space left on device; free some "
        f"space or send it elsewhere; {out / 'last.pt'} (epoch 1) is kept; then run the same "
        "command with --resume to continue\n"
    )


def test_eval_prints_its_accuracy_before_the_full_disk_stops_its_csv(
    demo_checkpoint: Path, small_disk, capsys
) -> None:
    disk = small_disk(256)
    _fill(disk)
    target = disk / "p.csv"
    code = main(["eval", "--checkpoint", str(demo_checkpoint), "--predictions", str(target),
                 "--workers", "0", "--no-progress"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 2 and "  top-1              " in captured.out
    assert captured.err == (
        f"sef eval: error: cannot write {target}: no space left on device (0 B free there); "
        f"free some space or choose another place\n"
    )
    assert sorted(os.listdir(disk)) == ["filler"]


def test_export_on_a_full_disk_keeps_the_earlier_export_whole(
    demo_checkpoint: Path, small_disk, capsys, files_in
) -> None:
    disk = small_disk(100 * 1024)  # room for one export of the resnet18 (45 MB a format)
    shipped = disk / "shipped"
    formats = ["--format", "torchscript", "safetensors", "--no-check"]
    assert (
        main(["export", "--checkpoint", str(demo_checkpoint), "--out", str(shipped), *formats]) == 0
    )
    before = files_in(shipped)
    _fill(disk, leave=64 * 1024)
    capsys.readouterr()
    code = main(["export", "--checkpoint", str(demo_checkpoint), "--out", str(shipped), *formats])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1
    assert error.startswith(f"sef export: error: {shipped} has ")
    assert "free and the export needs about " in error
    assert files_in(shipped) == before  # the earlier set, whole


def test_an_export_that_fails_midway_keeps_the_earlier_set(
    demo_checkpoint: Path, tmp_path: Path, monkeypatch, capsys, files_in
) -> None:
    shipped = tmp_path / "shipped"
    formats = ["--format", "torchscript", "safetensors", "--no-check"]
    assert (
        main(["export", "--checkpoint", str(demo_checkpoint), "--out", str(shipped), *formats]) == 0
    )
    before = files_in(shipped)
    monkeypatch.setattr(sef.outputs.os, "replace", _failing_replace("model.safetensors", at=1))
    capsys.readouterr()
    assert (
        main(["export", "--checkpoint", str(demo_checkpoint), "--out", str(shipped), *formats]) == 2
    )
    assert "model.safetensors: no space left on device" in capsys.readouterr().err
    assert files_in(shipped) == before and _leftovers(shipped) == []


def test_a_disk_full_under_tensorboard_is_one_line_without_its_threads_traceback(
    tmp_path: Path, monkeypatch, capfd
) -> None:
    from tensorboard.summary.writer.record_writer import RecordWriter

    out, real, written = tmp_path / "run", RecordWriter.write, []

    def write(self, data):  # in TensorBoard's writer thread; fails from the second epoch on
        written.append(data)
        if len(written) > 30:
            raise FULL
        return real(self, data)

    monkeypatch.setattr(RecordWriter, "write", write)
    with pytest.raises(DiskFull) as info:
        fit(_config(out, "optim.epochs=3"), data=_data(), progress=False)
    assert str(info.value).startswith(f"cannot write {out / 'tb'}: no space left on device (")
    assert "(epoch " in str(info.value) and "is kept" in str(info.value)
    assert "Traceback" not in capfd.readouterr().err
    assert load_checkpoint(out / "last.pt")["epoch"] >= 1


def test_sizes_read_as_df_writes_them_and_two_that_would_read_alike_are_exact():
    human, apart = sef.space.human, sef.space.apart
    assert [human(n) for n in (512, 3_100, 45_300_000, 1.2e9, 2e12, 1.5e15)] == [
        "512 B", "3.1 KB", "45.3 MB", "1.2 GB", "2.0 TB", "1500.0 TB"
    ]  # fmt: skip
    assert apart(2_000_000, 1_000_000) == ("2.0 MB", "1.0 MB")
    assert apart(1_020_037, 1_019_845) == ("1,020,037 bytes", "1,019,845 bytes")
    assert apart(1_000_000, 1_000_000) == ("1.0 MB", "1.0 MB")
