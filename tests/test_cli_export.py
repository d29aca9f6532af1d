"""`sef export` as a user runs it: every file written, the exports checked against PyTorch."""

import json
import subprocess
import sys

import numpy as np
import onnxruntime
import pytest
import torch

from sef.cli import main
from sef.trained import load_trained_model


@pytest.mark.slow
def test_export_writes_and_checks_all_formats(demo_checkpoint, tmp_path):
    out = tmp_path / "shipped"
    result = subprocess.run(
        [sys.executable, "-m", "sef.cli", "export", "--checkpoint", str(demo_checkpoint),
         "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "max |logit difference| vs PyTorch" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "labels.json",
        "model.onnx",
        "model.safetensors",
        "model.torchscript.pt",
        "preprocessing.json",
    ]
    trained = load_trained_model(demo_checkpoint)
    assert json.loads((out / "labels.json").read_text()) == trained.classes
    prep = json.loads((out / "preprocessing.json").read_text())
    assert (prep["image_size"], prep["recipe"]) == (32, "resize")
    assert prep["mean"] == list(trained.preprocessing.mean)
    assert prep["std"] == list(trained.preprocessing.std)

    # What a deployment does: ONNX Runtime on a batch, no sef or torch model needed.
    images = torch.randn(4, 3, 32, 32)
    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    (logits,) = session.run(None, {prep["input_name"]: images.numpy()})
    with torch.no_grad():
        expected = trained.model(images).numpy()
    assert np.abs(logits - expected).max() < 1e-4


def test_export_one_format_and_errors(demo_checkpoint, tmp_path, capsys):
    assert main(["export", "--checkpoint", str(demo_checkpoint), "--out", str(tmp_path),
                 "--format", "safetensors"]) == 0  # fmt: skip
    assert not (tmp_path / "model.onnx").exists() and (tmp_path / "model.safetensors").exists()
    assert "safetensors 0.0e+00" in capsys.readouterr().out

    assert main(["export", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sef export: error: checkpoint") and "does not exist" in err
