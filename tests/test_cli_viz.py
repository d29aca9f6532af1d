"""`sef viz` as a user runs it: figures written, numbers printed, errors in one line."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from sef.cli import main


def _sef(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "sef.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def _is_png(path):
    with Image.open(path) as image:
        return image.format == "PNG" and image.width > 300 and image.height > 200


def test_corr_cam_and_parts_from_a_checkpoint(demo_checkpoint, tmp_path, write_image):
    result = _sef("viz", "corr", "--checkpoint", demo_checkpoint, "--images", 5, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "group 1" in result.stdout and "group 2" in result.stdout
    assert _is_png(demo_checkpoint.with_name("corr.png"))  # default: beside the checkpoint

    own = write_image(tmp_path / "own bird.jpg", (50, 40))
    out = tmp_path / "figs" / "cam.png"
    result = _sef("viz", "cam", "--checkpoint", demo_checkpoint, own, "--out", out)
    assert result.returncode == 0, result.stderr
    assert _is_png(out) and str(out) in result.stdout

    out = tmp_path / "parts.png"
    result = _sef(
        "viz", "parts", "--checkpoint", demo_checkpoint, "--json", "--out", out, "--no-progress"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["part_names"] == ["head", "wing", "tail"] and report["images"] == 16
    assert len(report["fractions"]) == 2
    assert all(sum(r) == pytest.approx(1) for r in report["fractions"])
    assert report["chance_distinctness"] == pytest.approx(2 / 3)
    assert 0 <= report["distinctness"] <= 1
    assert _is_png(out)


def test_curves_from_a_run_folder(tmp_path, capsys):
    records = [
        {"epoch": e, "lr": 0.01, "loss_ce": 2 / e, "loss_entropy": -0.1, "loss_distill": 0.1,
         "loss_group": 0.2 / e, "loss_total": 2.2 / e, "train_top1": 0.1 * e, "eval_top1": 0.1 * e,
         "eval_class_mean": 0.1 * e, "eval_group_top1": [0.05 * e, 0.07 * e], "seconds": 1.0}
        for e in range(1, 5)
    ]  # fmt: skip
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["viz", "curves", str(tmp_path)]) == 0  # in-process: the others cover startup
    assert _is_png(tmp_path / "curves.png") and "curves.png" in capsys.readouterr().out


def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys, demo_checkpoint):
    cases = [
        (["viz", "curves", str(tmp_path)], "metrics.jsonl does not exist"),
        (["viz", "corr", "--checkpoint", str(tmp_path / "nope.pt")], "does not exist"),
        (["viz", "cam", "--checkpoint", str(demo_checkpoint), str(tmp_path / "x.jpg")], "x.jpg"),
        (["viz", "corr", "--checkpoint", str(demo_checkpoint), "--images", "0"], "at least 1"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("sef viz: error:") and message in err, err
        assert "Traceback" not in err and err.count("\n") == 1
