"""Checkpoints: atomic writes, safe reads, and refusal of pickled code."""

from __future__ import annotations

import os
import pickle
import random
import re
import struct
import subprocess
import sys
import textwrap
import unicodedata
import zipfile
from pathlib import Path

import pytest
import safetensors.torch
import torch
from PIL import Image

from sef import __version__
from sef.checkpoint import load_checkpoint, save_checkpoint
from sef.cli import main
from sef.errors import CheckpointError, DataError
from sef.trained import load_trained_model


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


@pytest.mark.parametrize(
    "change, unfit",
    [
        ({"classes": None}, r"its classes is a NoneType, not a list of class names"),
        ({"classes": "abc"}, r"its classes is a str, not a list of class names"),
        ({"model": [1]}, r"its model is a list, not a state dict"),
        ({"format": "1"}, r"its format is a str, not a format number"),
    ],
)
def test_load_refuses_a_model_config_or_classes_of_another_type_in_one_line(
    tmp_path: Path, change: dict, unfit: str
) -> None:
    """Before: a TypeError traceback from load_trained_model, or a string's letters taken as
    its class names."""
    path = tmp_path / "other.pt"
    torch.save({**_state(), **change}, path)
    with pytest.raises(
        CheckpointError, match=rf"^{re.escape(str(path))} is not a sef checkpoint \({unfit}\); pass"
    ):
        load_trained_model(path)


@pytest.mark.parametrize(
    "state, unfit",
    [
        ({"model": {}, "epoch": 3}, "missing config, classes, metrics"),
        ([1, 2], "missing model, config, classes, epoch, metrics"),
        ({**_state(), "classes": "ab"}, "its classes is a str, not a list of class names"),
        ({**_state(), "sef_version": ["0.1"]}, "its sef_version is a list, not a version"),
        (
            {**_state(), "format": 2},
            f"its format 2 is newer than format 1, which sef {__version__} reads",
        ),
    ],
)
def test_save_refuses_what_load_would_refuse(tmp_path: Path, state, unfit: str) -> None:
    """Through the public API: a state load_checkpoint would refuse is refused before anything
    is written; one it takes loads back."""
    import sef

    with pytest.raises(ValueError, match=rf"model, config, .*; this state is not one \({unfit}\)"):
        sef.save_checkpoint(tmp_path / "a.pt", state)
    assert not (tmp_path / "a.pt").exists()
    sef.save_checkpoint(tmp_path / "b.pt", _state(3.0))
    assert torch.equal(sef.load_checkpoint(tmp_path / "b.pt")["model"]["w"], torch.full((3,), 3.0))


def test_a_checkpoint_records_its_format_and_who_wrote_it(tmp_path: Path) -> None:
    """Before: nothing said which sef or torch wrote a best.pt, or in which layout."""
    state = _state()
    save_checkpoint(tmp_path / "a.pt", {**state, "sef_version": "0.0.1"})  # as re-saved by this sef
    loaded = load_checkpoint(tmp_path / "a.pt")
    assert (loaded["format"], loaded["sef_version"]) == (1, __version__)
    assert loaded["torch_version"] == str(torch.__version__) and "format" not in state


def test_a_checkpoint_written_before_versions_were_recorded_still_loads(
    demo_checkpoint: Path, tmp_path: Path
) -> None:
    """One saved the old way, without format or versions, loads and says so; a new one names
    its writer."""
    written = f"sef {__version__} with torch {torch.__version__}"
    assert load_trained_model(demo_checkpoint).written_by == written
    state = load_checkpoint(demo_checkpoint)
    for key in ("format", "sef_version", "torch_version"):
        del state[key]
    torch.save(state, tmp_path / "old.pt")  # what save_checkpoint wrote before
    old = load_trained_model(tmp_path / "old.pt")
    assert old.written_by == "an older sef that did not record its version"
    assert old.sef_version is None and old.classes == state["classes"]


@pytest.mark.parametrize("keys", ["as now", "renamed"])
def test_a_newer_format_is_refused_in_one_line_naming_both_seds(tmp_path: Path, keys: str) -> None:
    """Before any of its keys is judged: a newer format may name them otherwise (before: "not a
    sef checkpoint (missing model, ...)", or a misreading)."""
    state = _state() if keys == "as now" else {"weights": {}}
    torch.save({**state, "format": 2, "sef_version": "9.0"}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(tmp_path / "future.pt")
    assert str(refused.value) == (
        f"checkpoint {tmp_path}/future.pt is in format 2, written by sef 9.0; this sef "
        f"{__version__} reads format 1 at most: upgrade sef to read it"
    )


def test_save_refuses_values_that_need_pickled_code(tmp_path: Path) -> None:
    import numpy as np

    with pytest.raises(TypeError, match=r"state\['extra'\]\[0\] is a ndarray"):
        save_checkpoint(tmp_path / "a.pt", {**_state(), "extra": [np.zeros(2)]})
    assert not (tmp_path / "a.pt").exists()


@pytest.mark.parametrize(
    "writer, refusal",
    [
        ("torch", "pickled Python objects"),
        ("legacy", "pickled Python objects"),
        ("pickle", "is a Python pickle that torch.save did not write"),
    ],
)
def test_pickled_code_is_refused_and_never_runs(tmp_path: Path, writer: str, refusal: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {**_state(), "metrics": _Payload(marker)}
    if writer == "pickle":
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=writer == "torch")
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=refusal):
        load_checkpoint(path)
    assert not marker.exists()


def test_a_legacy_checkpoint_loads(tmp_path: Path) -> None:
    _legacy(tmp_path)
    assert load_checkpoint(tmp_path / "legacy")["epoch"] == 1


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_a_plain_pickle_is_named_without_a_warning(tmp_path: Path, protocol: int, recwarn) -> None:
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=protocol))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value) == (
        f"{path} is a Python pickle that torch.save did not write; pass a last.pt or best.pt "
        f"written by `sef train`"
    )
    assert not recwarn.list


def test_missing_truncated_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    good = tmp_path / "good.pt"
    save_checkpoint(good, _state())
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="is truncated: the zip archive"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a sef checkpoint"):
        load_checkpoint(foreign)


@pytest.mark.slow
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
    trained.config.data.dataset, trained.config.data.options = "folder", {}
    with pytest.raises(DataError, match=f"test split under {folder_root} differ"):
        trained.dataset("test", folder_root)


def test_a_model_trained_on_names_from_a_mac_evaluates_them_spelled_on_linux(
    demo_checkpoint, folder_root
):
    """Classes whose accents the checkpoint stores apart (NFD, folders copied from a Mac) and
    the data in one character (NFC) are the same classes, not "differ"."""
    for split in ("train", "test"):
        (folder_root / split / "cat").rename(folder_root / split / "Mésange")  # NFC
    trained = load_trained_model(demo_checkpoint)
    trained.config.data.dataset, trained.config.data.options = "folder", {}
    trained.classes = [unicodedata.normalize("NFD", "Mésange"), "dog", "fox"]
    assert len(trained.dataset("test", folder_root)) == 6


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("classes", r"size mismatch for head\.weight"),  # a class list of another length
        ("missing", r"Missing key\(s\) in state_dict: \"head\.bias\""),
    ],
)
def test_weights_that_do_not_fit_their_config_say_which(demo_checkpoint, tmp_path, change, named):
    state = load_checkpoint(demo_checkpoint)
    if change == "classes":
        state["classes"] = state["classes"][:3]
    else:
        del state["model"]["head.bias"]
    save_checkpoint(tmp_path / "odd.pt", state)
    with pytest.raises(CheckpointError, match=f"do not fit its own config \\({named}") as caught:
        load_trained_model(tmp_path / "odd.pt")
    # a file sef.save_checkpoint wrote is not called damaged: a hand change is as likely
    assert str(caught.value).endswith("changed by hand or by another program, or is damaged")


def test_a_model_this_installation_cannot_build_names_the_checkpoint(demo_checkpoint, tmp_path):
    """As a checkpoint of a backbone that a newer sef or timm has (before: a ConfigError that
    did not say it came from the checkpoint)."""
    state = load_checkpoint(demo_checkpoint)
    state["config"]["model"]["backbone"] = "resnet_from_the_future"
    save_checkpoint(tmp_path / "newer.pt", state)
    with pytest.raises(
        CheckpointError,
        match=rf"^checkpoint {re.escape(str(tmp_path))}/newer\.pt holds a model this installation "
        r"cannot build: model\.backbone='resnet_from_the_future' .* unknown backbone",
    ):
        load_trained_model(tmp_path / "newer.pt")


def test_a_config_of_another_sef_names_who_wrote_it(demo_checkpoint, tmp_path):
    """A newer sef's config key is its own, not damage (before: only "unusable config")."""
    state = load_checkpoint(demo_checkpoint)
    state["config"]["model"]["future_key"] = 1
    save_checkpoint(tmp_path / "edited.pt", state)
    with pytest.raises(CheckpointError, match=r"'future_key' .* output_stride$"):
        load_trained_model(tmp_path / "edited.pt")  # this sef's own: no other sef to blame
    torch.save({**state, "sef_version": "9.9.0"}, tmp_path / "newer.pt")
    with pytest.raises(
        CheckpointError,
        match=r"unknown config key 'future_key' .* \(written by sef 9\.9\.0 with torch .*; this "
        rf"is sef {re.escape(__version__)}: read it with that sef\)$",
    ):
        load_trained_model(tmp_path / "newer.pt")


def test_a_config_with_a_section_removed_by_hand_is_refused(demo_checkpoint, tmp_path, capsys):
    """Every sef wrote all sections (before: no data section loaded 448 px resize_crop
    preprocessing, and predict, eval and export fed the model images unlike its training's)."""
    state = load_checkpoint(demo_checkpoint)
    del state["config"]["data"]
    save_checkpoint(tmp_path / "edited.pt", state)
    with pytest.raises(
        CheckpointError,
        match=rf"^checkpoint {re.escape(str(tmp_path))}/edited\.pt was edited: its config lacks "
        r"the data section that every checkpoint sef writes holds; use the checkpoint as",
    ):
        load_trained_model(tmp_path / "edited.pt")
    (tmp_path / "run").mkdir()  # a resume of it: a KeyError on 'data' before
    training = dict.fromkeys(("optimizer", "scheduler", "history", "best", "seconds"), {})
    save_checkpoint(tmp_path / "run" / "last.pt", {**state, **training})  # no weights-only one
    assert main(["train", "--resume", "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "last.pt was edited: its config lacks the data section" in capsys.readouterr().err


@pytest.mark.parametrize("policy", ["skip", "stop"])
def test_a_run_that_skipped_bad_images_skips_them_when_evaluated(
    demo_checkpoint, folder_root, policy
):
    broken = folder_root / "test" / sorted(os.listdir(folder_root / "test"))[0] / "broken.png"
    broken.write_text("not an image")
    trained = load_trained_model(demo_checkpoint)
    trained.config.data.dataset, trained.config.data.options = "folder", {}
    trained.config.data.bad_images = policy
    trained.classes = sorted(os.listdir(folder_root / "test"))
    if policy == "stop":  # nothing checked beforehand: the evaluation meets the file itself
        assert str(broken) in [path for path, _ in trained.dataset("test", folder_root).samples]
        return
    with pytest.warns(UserWarning, match=r"left out 1 unreadable image as the run did .*broken"):
        dataset = trained.dataset("test", folder_root, progress=False)
    assert str(broken) not in [path for path, _ in dataset.samples] and len(dataset) == 6


def _damaged(kind: str, good: Path, folder: Path) -> Path:
    """A file of ``kind`` where a checkpoint is expected (``good`` is a real one)."""
    path = folder / f"{kind}.pt"
    data = good.read_bytes()
    if kind == "member":  # flip bytes inside a tensor's data: only the CRC can tell
        with zipfile.ZipFile(good) as archive:
            info = archive.getinfo(next(n for n in archive.namelist() if "/data/" in n))
        offset = info.header_offset  # local header: 30 bytes, name and extra field lengths at 26
        start = offset + 30 + sum(struct.unpack("<HH", data[offset + 26 : offset + 30]))
        data = data[:start] + bytes(b ^ 0xFF for b in data[start : start + 4]) + data[start + 4 :]
    writers = {
        "text": lambda: path.write_text("hello"),
        "json": lambda: path.write_text('{"model": 1}'),
        "png": lambda: Image.new("RGB", (4, 4)).save(path, format="PNG"),
        "random": lambda: path.write_bytes(random.Random(0).randbytes(4096)),
        "empty": lambda: path.write_bytes(b""),
        "truncated": lambda: path.write_bytes(data[: len(data) // 2]),
        "member": lambda: path.write_bytes(data),
        "torchscript": lambda: torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), path),
        "zip": lambda: zipfile.ZipFile(path, "w").writestr("notes/a.txt", "hi"),
        "pickle": lambda: path.write_bytes(pickle.dumps({"model": 1}, protocol=2)),
        "legacy-truncated": lambda: path.write_bytes(_legacy(folder)[:40]),
        "safetensors": lambda: safetensors.torch.save_file({"w": torch.zeros(2)}, path),
        "onnx": lambda: path.write_bytes(b"\x08\x0a\x12\x07pytorch\x1a\x062.14.1:\xf7"),
        "folder": lambda: path.mkdir(),
    }
    writers[kind]()
    return path


def _legacy(folder: Path) -> bytes:
    torch.save(_state(), folder / "legacy", _use_new_zipfile_serialization=False)
    return (folder / "legacy").read_bytes()


DAMAGED = {
    "text": "is not a checkpoint: it is a text file, not the zip archive torch.save writes",
    "json": "is not a checkpoint: it is a JSON text file",
    "png": "is not a checkpoint: it is a PNG image",
    "random": "is not a checkpoint: it is binary data of a kind sef does not recognise",
    "empty": "is empty (0 bytes)",
    "truncated": "is truncated: the zip archive torch.save writes ends before its table",
    "member": "is damaged: its member archive/data/0 does not match its checksum",
    "torchscript": "is a TorchScript model (as `sef export` writes), not a checkpoint",
    "zip": "is a zip archive that torch.save did not write (no data.pkl inside)",
    "pickle": "is a Python pickle that torch.save did not write",
    "legacy-truncated": "is truncated: its pickle ends early",
    "safetensors": "is not a checkpoint: it is a safetensors file",
    "onnx": "is not a checkpoint: it is an ONNX model (as `sef export` writes)",
    "folder": "is a folder that holds no best.pt or last.pt; pass a last.pt or best.pt written",
}


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
@pytest.mark.parametrize("kind", DAMAGED)
def test_a_damaged_or_foreign_file_gets_one_true_sentence(kind: str, tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    save_checkpoint(good, _state())
    path = _damaged(kind, good, tmp_path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert f"{path} {DAMAGED[kind]}" in message and "\n" not in message
    assert "could run code" not in message


def test_a_run_folder_given_as_checkpoint_is_answered_with_its_checkpoints(tmp_path: Path) -> None:
    """`--checkpoint runs/demo` was told to pass "the last.pt or best.pt in it", the same words
    for a folder that held none."""
    save_checkpoint(tmp_path / "best.pt", _state())
    save_checkpoint(tmp_path / "last.pt", _state())
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path)
    assert str(info.value) == (
        f"checkpoint {tmp_path} is a folder; pass {tmp_path / 'best.pt'} or {tmp_path / 'last.pt'}"
    )
