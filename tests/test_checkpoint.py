"""Checkpoints: atomic writes, safe reads, and refusal of pickled code."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sef.checkpoint import load_checkpoint, load_trained_model, save_checkpoint
from sef.errors import CheckpointError, DataError


def _state(value: float = 1.0) -> dict:
    return {
        "model": {"w": torch.full((3,), value)},
        "config": {"name": "x"},
        "classes": ["a", "b"],
        "epoch": 1,
        "metrics": {"top1": 0.5},
        "extra": [1, 2.0, None, True, ("t", torch.zeros(1))],
    }


class _Payload:
    """Unpickling this creates a marker file: the code a safe loader must never run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_round_trip_keeps_values(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "last.pt"
    save_checkpoint(path, _state(2.0))
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], torch.full((3,), 2.0))
    assert loaded["classes"] == ["a", "b"] and loaded["extra"][:4] == [1, 2.0, None, True]
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temp file left behind


def test_save_refuses_values_that_need_pickled_code(tmp_path: Path) -> None:
    import numpy as np

    with pytest.raises(TypeError, match=r"state\['extra'\]\[0\] is a ndarray"):
        save_checkpoint(tmp_path / "a.pt", {**_state(), "extra": [np.zeros(2)]})
    assert not (tmp_path / "a.pt").exists()


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_pickled_code_is_refused_and_never_runs(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {**_state(), "metrics": _Payload(marker)}
    if writer == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_checkpoint(path)
    assert not marker.exists()


def test_missing_truncated_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    good = tmp_path / "good.pt"
    save_checkpoint(good, _state())
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a sef checkpoint"):
        load_checkpoint(foreign)


def test_kill_during_save_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    """SIGKILL a process in the middle of torch.save: the old file must still load intact."""
    path = tmp_path / "last.pt"
    save_checkpoint(path, _state(1.0))
    script = textwrap.dedent(
        f"""
        import os, signal, torch
        from sef import checkpoint
        real_save = torch.save
        def dying_save(obj, handle):
            real_save(obj, handle)
            handle.write(b"half-written")
            os.kill(os.getpid(), signal.SIGKILL)
        checkpoint.torch.save = dying_save
        state = {{"model": {{"w": torch.full((3,), 9.0)}}, "config": {{}}, "classes": [],
                  "epoch": 2, "metrics": {{}}}}
        checkpoint.save_checkpoint({str(path)!r}, state)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert result.returncode == -9
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 1 and torch.equal(loaded["model"]["w"], torch.ones(3))
    leftovers = [p for p in os.listdir(tmp_path) if p != "last.pt"]
    assert len(leftovers) == 1 and leftovers[0].endswith(".tmp")  # the dead writer's temp file


def test_trained_model_reloads_its_own_data_and_refuses_other_classes(demo_checkpoint, folder_root):
    trained = load_trained_model(demo_checkpoint)
    dataset = trained.dataset("test")
    assert dataset.classes == trained.classes and len(dataset) == 16
    assert dataset.transform is trained.test_transform
    trained.config["data"] = {**trained.config["data"], "dataset": "folder", "options": {}}
    with pytest.raises(DataError, match=f"test split under {folder_root} differ"):
        trained.dataset("test", folder_root)
