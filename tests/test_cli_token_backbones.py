"""A tiny ViT and a tiny Swin through the command line as a user runs it: `sef train` for an
epoch on the demo set, `sef export` with its parity check, the figures, evaluation, prediction."""

import re
import subprocess
import sys

import onnxruntime
import pytest
import torch

from sef.cli import main
from sef.trained import load_trained_model

# Trains a token backbone, exports it and runs `sef` in fresh processes.
pytestmark = pytest.mark.slow

FAMILIES = {  # timm model, image side, timm arguments (one block, narrow)
    "vit": ("vit_tiny_patch16_224", 32, "{depth: 1}"),
    "swin": (
        "swin_tiny_patch4_window7_224",
        64,
        "{depths: [1, 1], num_heads: [1, 1], embed_dim: 16}",
    ),
}


def sef_command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sef", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module", params=FAMILIES)
def token_run(request, tmp_path_factory):
    """The run folder of `sef train --backbone timm:...` for one epoch on 16 demo images."""
    name, size, args = FAMILIES[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    result = sef_command(
        "train", "--backbone", f"timm:{name}", "--weights", "none", "--image-size", str(size),
        "--epochs", "1", "--batch-size", "8", "--workers", "0", "--out", str(folder / "run"),
        "--data-root", str(folder / "demo"), "--set", "data.options.per_class=2",
        "--set", "data.options.test_per_class=2", "--set", f"data.options.resolution={size}",
        "--set", f"model.backbone_args={args}", "--set", "run.tensorboard=false", "--no-progress",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    named = f"training demo-timm-{name}: timm:{name}, G=2, 16 train / 16 eval images"
    assert named in result.stdout
    assert "best eval top-1" in result.stdout
    return folder / "run", size


def test_export_reproduces_pytorch(token_run, tmp_path):
    run, size = token_run
    result = sef_command("export", "--checkpoint", str(run / "last.pt"), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = re.search(r"onnx (\S+), torchscript (\S+), safetensors (\S+)", result.stdout)
    assert report and all(float(value) < 1e-4 for value in report.groups())
    images = torch.randn(3, 3, size, size)  # another batch size than the export's example
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"))
    (logits,) = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        expected = load_trained_model(run / "last.pt").model(images)
    torch.testing.assert_close(torch.from_numpy(logits), expected, rtol=1e-4, atol=1e-4)


def test_figures_and_evaluation_read_the_token_grid(token_run, tmp_path, capsys):
    run, _ = token_run
    checkpoint = str(run / "last.pt")
    assert main(["viz", "cam", "--checkpoint", checkpoint, "--out", str(tmp_path / "c.png")]) == 0
    assert main(["viz", "corr", "--checkpoint", checkpoint, "--out", str(tmp_path / "r.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 0 and (tmp_path / "r.png").stat().st_size > 0
    arguments = ["eval", "--checkpoint", checkpoint, "--no-progress", "--predictions"]
    assert main([*arguments, str(tmp_path / "p.csv")]) == 0
    assert "(16 images)" in capsys.readouterr().out
    assert main(["predict", "--checkpoint", checkpoint, str(run.parent / "demo")]) == 0
    assert "probability" in capsys.readouterr().out
