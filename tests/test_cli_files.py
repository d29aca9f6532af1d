"""Files a user gets wrong, as the `sef` command meets them: a damaged or foreign checkpoint
given to any command, and outputs that cannot be written. Each ends in one sentence, exit code 2,
no traceback, and every file as it was."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from conftest import said_as
from PIL import Image

pytestmark = pytest.mark.slow  # runs every command in a fresh `sef` process

NOT_A_CHECKPOINT = "not the zip archive torch.save writes; pass a last.pt or best.pt written by"
DAMAGED = {  # what the user passed: (how to make it, the sentence's core)
    "text": (lambda p, good: p.write_text("hello"), "is not a checkpoint: it is a text file"),
    "abc": (lambda p, good: p.write_text("abc"), "is not a checkpoint: it is a text file"),
    "random": (
        lambda p, good: p.write_bytes(random.Random(0).randbytes(4096)),
        "is not a checkpoint: it is binary data of a kind sef does not recognise",
    ),
    "png": (
        lambda p, good: Image.new("RGB", (8, 8)).save(p, format="PNG"),
        "is not a checkpoint: it is a PNG image",
    ),
    "json": (lambda p, good: p.write_text('{"epoch": 3}\n'), "is not a checkpoint: it is a JSON"),
    "truncated": (
        lambda p, good: p.write_bytes(good.read_bytes()[:3000]),
        "is truncated: the zip archive torch.save writes ends before its table of contents",
    ),
}
# Every command that reads a checkpoint meets one of the files (a process each costs seconds).
COMMANDS = {
    "text": ["eval", "--checkpoint", "{ckpt}"],
    "abc": ["predict", "--checkpoint", "{ckpt}", "{image}"],
    "random": ["export", "--checkpoint", "{ckpt}", "--out", "{folder}/shipped"],
    "png": ["viz", "cam", "--checkpoint", "{ckpt}", "--images", "1"],
    "json": ["train", "--resume", "--out", "{folder}"],
    "truncated": ["viz", "corr", "--checkpoint", "{ckpt}", "--images", "1"],
}


def _one_error_line(result, command: str) -> str:
    assert result.returncode == 2 and result.stdout == "", result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"sef {command}: error: ")
    return result.stderr


@pytest.mark.parametrize("kind", DAMAGED)
def test_a_damaged_checkpoint_gets_one_true_sentence_in_every_command(
    kind: str, demo_checkpoint: Path, tmp_path: Path, run_sef, files_in, write_image
) -> None:
    make, sentence = DAMAGED[kind]
    folder = tmp_path / "run"
    folder.mkdir()
    checkpoint = folder / "last.pt"
    make(checkpoint, demo_checkpoint)
    image = write_image(tmp_path / "bird.png")
    before = files_in(tmp_path)
    words = [w.format(ckpt=checkpoint, folder=folder, image=image) for w in COMMANDS[kind]]
    error = _one_error_line(run_sef(*words), said_as(words))
    assert f"{checkpoint} {sentence}" in error
    if sentence.startswith("is not a checkpoint"):
        assert NOT_A_CHECKPOINT in error
    assert "could run code" not in error
    assert files_in(tmp_path) == before  # nothing written, nothing changed


LONG = "x" * 300  # longer than any file system allows for one name, even for root
UNWRITABLE = {  # command: where its output goes (under tmp_path; "blocker" is a regular file)
    "export": ["export", "--checkpoint", "{ckpt}", "--out", "{place}"],
    "viz": ["viz", "cam", "--checkpoint", "{ckpt}", "--images", "1", "--out", "{place}/cam.png"],
    "eval": ["eval", "--checkpoint", "{ckpt}", "--predictions", "{place}/p.csv", "--workers", "0"],
    "train": ["train", "--out", "{place}", "--epochs", "1", "--workers", "0", "--no-progress"],
}


@pytest.mark.parametrize(
    ("command", "place"),
    [("export", "blocker/out"), ("viz", LONG), ("eval", "blocker/out"), ("train", "blocker/out"),
     ("train", LONG)],
)  # fmt: skip
def test_an_unwritable_output_is_named_with_its_reason(
    command: str, place: str, demo_checkpoint: Path, demo_root, tmp_path: Path, run_sef, files_in
) -> None:
    (tmp_path / "blocker").write_text("a file where a folder is needed\n")
    checkpoint = tmp_path / "ckpt" / "last.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(demo_checkpoint.read_bytes())
    before = files_in(tmp_path)
    words = [w.format(ckpt=checkpoint, place=place) for w in UNWRITABLE[command]]
    command = said_as(words)
    error = _one_error_line(run_sef(*words, cwd=tmp_path), command)
    target = words[words.index("--predictions" if command == "eval" else "--out") + 1]
    reason = "blocker is a file, not a folder" if place != LONG else "file name too long"
    assert error == f"sef {command}: error: cannot write {target}: {reason}; choose another place\n"
    assert files_in(tmp_path) == before  # nothing written, nothing left half-done
