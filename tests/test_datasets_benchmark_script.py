"""benchmarks/dataloader.py runs in its quick mode and writes the JSON the docs quote."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "dataloader.py"


def test_dataloader_benchmark_quick_mode(tmp_path):
    out = tmp_path / "dataloader.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"reference", "sef_float", "sef"}
    assert all(r["images_per_s_per_core"] > 0 for r in report["results"].values())
    assert set(report["speedup_vs_reference"]) == {"sef_float", "sef"}
    assert report["output_dtypes"] == {
        "reference": "torch.float32", "sef_float": "torch.float32", "sef": "torch.uint8"
    }  # fmt: skip
    assert report["normalise_batch_per_image_ms"] > 0
    assert report["images"]["count"] == 3
    assert all(shape == [3, 448, 448] for shape in report["output_shapes"].values())
    assert report["machine"]["torch_threads"] == 1 and "python" in report["command"]
