"""Outputs are written atomically and fail in one sentence; probes leave nothing behind."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from sef.errors import OutputError
from sef.export import export_model
from sef.model import SEF
from sef.outputs import (
    atomic_path,
    check_writable,
    matplotlib_for_files,
    temporary_path,
    write_text,
)
from sef.transforms import Preprocessing


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = write_text(tmp_path / "metrics.jsonl", "old\n")
    with pytest.raises(RuntimeError, match="disk on fire"), atomic_path(target) as temporary:
        temporary.write_text("half a li")
        raise RuntimeError("disk on fire")
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["metrics.jsonl"]


def test_probes_create_nothing_and_name_the_blocker(tmp_path: Path) -> None:
    check_writable(tmp_path / "a" / "b" / "figure.png")
    check_writable(tmp_path / "run" / "sub", folder=True)
    assert os.listdir(tmp_path) == []
    (tmp_path / "blocker").write_text("x")
    for path, folder in ((tmp_path / "blocker" / "f.png", False), (tmp_path / "blocker", True)):
        with pytest.raises(OutputError) as info:
            check_writable(path, folder=folder)
        assert str(info.value) == (
            f"cannot write {path}: {tmp_path / 'blocker'} is a file, not a folder; "
            f"choose another place"
        )
    with pytest.raises(OutputError, match="it is a folder; choose a file name"):
        check_writable(tmp_path)
    assert os.listdir(tmp_path) == ["blocker"]


def test_an_export_that_fails_midway_leaves_no_half_written_file(tmp_path, monkeypatch) -> None:
    import safetensors.torch

    def failing_save(state, metadata=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save", failing_save)
    model = SEF(torch.nn.Conv2d(3, 8, 3), num_classes=2, groups=2)
    preprocessing = Preprocessing(32, "resize", (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(OutputError) as info:
        export_model(model, tmp_path, classes=["a", "b"], preprocessing=preprocessing,
                     formats=["safetensors"])  # fmt: skip
    assert str(info.value).startswith(
        f"cannot write {tmp_path / 'model.safetensors'}: no space left on device ("
    )
    assert str(info.value).endswith(" free there); free some space or choose another place")
    assert os.listdir(tmp_path) == []


def test_an_export_into_a_used_folder_replaces_its_set_of_files_whole(tmp_path: Path) -> None:
    model = SEF(torch.nn.Conv2d(3, 8, 3), num_classes=2, groups=2)
    preprocessing = Preprocessing(32, "resize", (0.5,) * 3, (0.5,) * 3)
    (tmp_path / "notes.txt").write_text("mine\n")

    def export(formats: list[str]) -> list[str]:
        export_model(model, tmp_path, classes=["a", "b"], preprocessing=preprocessing,
                     formats=formats)  # fmt: skip
        return sorted(os.listdir(tmp_path))

    assert export(["torchscript", "safetensors"]) == [
        "labels.json", "model.safetensors", "model.torchscript.pt", "notes.txt",
        "preprocessing.json",
    ]  # fmt: skip
    # the torchscript file of the earlier export goes, said; files that are not an export's stay
    with pytest.warns(UserWarning, match=r"removed .*model\.torchscript\.pt: formats of the"):
        remaining = export(["safetensors"])
    assert remaining == [
        "labels.json", "model.safetensors", "notes.txt", "preprocessing.json"
    ]  # fmt: skip


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_ctrl_c_in_a_checkpoint_write_waits_for_the_write_to_finish(
    tmp_path, monkeypatch, stop: str
) -> None:
    """SIGINT arriving inside torch.save (before: a RuntimeError of its zip writer and a
    traceback) is delivered once the checkpoint is written whole; so is SIGTERM where Python
    handles it (the `sef` command)."""
    import signal

    from sef.checkpoint import save_checkpoint

    save, number = torch.save, getattr(signal, stop)

    def interrupted_save(state, handle):
        signal.raise_signal(number)  # as if Ctrl-C came now
        save(state, handle)

    monkeypatch.setattr(torch, "save", interrupted_save)
    # Python's own handler, also where the suite runs with SIGINT ignored (a background job)
    previous = signal.signal(number, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            state = {"model": {"w": torch.ones(4)}, "config": {}, "classes": [], "metrics": {}}
            save_checkpoint(tmp_path / "last.pt", {**state, "epoch": 3})
        assert signal.getsignal(number) is signal.default_int_handler
    finally:
        signal.signal(number, previous)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 3
    assert os.listdir(tmp_path) == ["last.pt"]


@pytest.mark.parametrize("name", ["p" * 250 + ".csv", "é" * 125 + ".csv"])  # 254 and 254 bytes
def test_a_name_that_just_fits_is_written_through_a_shorter_temporary(
    tmp_path: Path, name: str
) -> None:
    assert write_text(tmp_path / name, "x").read_text() == "x"
    temporary = temporary_path(tmp_path / name).name
    assert len(temporary.encode()) <= 255 and temporary.endswith(f".{os.getpid()}.tmp")
    assert temporary_path(tmp_path / "last.pt").name == f".last.pt.{os.getpid()}.tmp"
    assert os.listdir(tmp_path) == [name]


@pytest.mark.skipif(sys.platform == "win32", reason="matplotlib's own choice of folder there")
def test_matplotlib_is_given_a_temporary_home_only_where_its_own_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`sef viz` under a read-only HOME printed matplotlib's "mkdir -p failed for path ..." and
    "Matplotlib created a temporary cache directory ..." above the figure it wrote."""
    for name in ("MPLCONFIGDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # missing, but can be made
    matplotlib_for_files()
    assert "MPLCONFIGDIR" not in os.environ
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("HOME", str(tmp_path / "file" / "home"))  # not even root makes it
    matplotlib_for_files()
    made = Path(os.environ["MPLCONFIGDIR"])
    assert made.is_dir() and os.access(made, os.W_OK)
    shutil.rmtree(made)
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "theirs"))  # the user's choice stays
    matplotlib_for_files()
    assert os.environ["MPLCONFIGDIR"] == str(tmp_path / "theirs")


def test_a_figure_command_draws_with_agg_whatever_mplbackend_says(monkeypatch) -> None:
    """`!sef viz` in a Jupyter kernel inherits its MPLBACKEND, which failed the command with
    matplotlib's "Key backend: ... is not a valid value" where sef's environment lacks it."""
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("MPLCONFIGDIR", "kept")
    matplotlib_for_files()
    assert os.environ["MPLBACKEND"] == "agg" and os.environ["MPLCONFIGDIR"] == "kept"
