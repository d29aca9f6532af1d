"""`sef train` and `sef presets` as a user runs them: output, files, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from sef.cli import main
from sef.config import preset_names

TINY_DEMO = [
    "--set", "data.options.per_class=3", "--set", "data.options.test_per_class=2",
    "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--workers", "0",
]  # fmt: skip


def _sef(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "sef.cli", *args], cwd=cwd, env=env, capture_output=True, text=True
    )


def test_default_train_runs_the_demo_into_runs_demo(demo_root: Path, tmp_path: Path) -> None:
    result = _sef("train", *TINY_DEMO, "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "runs" / "demo"
    assert "training demo: small_cnn, G=2, 24 train / 16 eval images, 8 classes" in result.stdout
    assert (
        "epoch 1/1" in result.stdout and f"run folder        {Path('runs/demo')}" in result.stdout
    )
    assert {"config.yaml", "metrics.jsonl", "last.pt", "best.pt", "tb"} <= {
        p.name for p in out.iterdir()
    }
    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["dataset"] == "demo"
    assert json.loads((out / "metrics.jsonl").read_text())["epoch"] == 1
    assert "Traceback" not in result.stderr


def test_config_errors_are_one_line_with_exit_code_2(tmp_path: Path) -> None:
    result = _sef("train", "--preset", "cub-resnet5", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("sef train: error: unknown preset 'cub-resnet5'; did you mean")
    assert result.stderr.endswith("run `sef presets` to list them all\n")
    assert result.stderr.count("\n") == 1
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--set", "optim.momentun=0.5"], "unknown config key 'momentun' in section 'optim'"),
        (["--set", "optim.batch_size=big"], "optim.batch_size must be int, got 'big'"),
        (["--set", "loss.phi=-0.5"], "loss.phi=-0.5 is invalid: it must be a number >= 0"),
        (["--groups", "9999"], "model.groups=9999 cannot be built"),
        (["--preset", "cub-resnet18"], "images.txt not found in"),
    ],
)
def test_bad_input_stops_before_training_in_one_line(
    arguments: list[str], message: str, folder_root: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    data = ["--set", "data.dataset=folder", "--image-size", "32", "--workers", "0"]
    if arguments[0] == "--preset":
        data = []
    code = main(["train", *data, "--data-root", str(folder_root), "--no-progress", *arguments])
    error = capsys.readouterr().err
    assert code == 2 and error.startswith("sef train: error: ") and message in error
    assert not (tmp_path / "runs").exists()


def test_resume_refuses_a_pickled_checkpoint_without_running_it(tmp_path: Path, capsys) -> None:
    marker, out = tmp_path / "pwned", tmp_path / "run"
    out.mkdir()

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"model": {}, "config": Payload(), "classes": [], "epoch": 1, "metrics": {}},
               out / "last.pt")  # fmt: skip
    assert main(["train", "--resume", "--out", str(out)]) == 2
    assert "refused to load checkpoint" in capsys.readouterr().err and not marker.exists()


def test_presets_lists_every_preset_on_one_line_and_prints_one_as_yaml(capsys) -> None:
    listing = _sef("presets")
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert [line.split()[0] for line in lines] == preset_names()
    assert any(line.startswith("dogs-resnet50 ") and "lr 0.001" in line for line in lines)
    assert main(["presets", "aircraft-resnet18-plain"]) == 0
    values = yaml.safe_load(capsys.readouterr().out)
    assert values["model"] == {
        "backbone": "resnet18", "weights": "IMAGENET1K_V1", "groups": 1, "output_stride": None,
    }  # fmt: skip
    assert values["loss"]["lam"] == values["loss"]["gamma"] == values["loss"]["phi"] == 0


def test_unreadable_images_stop_the_run_or_are_skipped(
    folder_root: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    (folder_root / "train" / "cat" / "broken.png").write_bytes(b"not an image")
    arguments = ["train", "--set", "data.dataset=folder", "--data-root", str(folder_root)]
    arguments += ["--image-size", "32", "--epochs", "1", "--batch-size", "4", "--workers", "0"]
    arguments += ["--no-progress"]
    assert main(arguments) == 2
    error = capsys.readouterr().err
    assert "broken.png" in error and "skip" in error and not (tmp_path / "runs").exists()
    assert main([*arguments, "--set", "data.bad_images=skip"]) == 0
    assert "skipped 1 unreadable images" in capsys.readouterr().err
