"""`sef info` and the CLI shell, run as a user would."""

import json
import subprocess
import sys

import pytest

from sef import __version__
from sef.cli import main


def sef(*args):
    return subprocess.run(
        [sys.executable, "-m", "sef", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_info_reports_the_papers_extra_parameters():
    result = sef("info", "--backbone", "resnet50", "--classes", "200", "--groups", "4")
    assert result.returncode == 0, result.stderr
    assert "409,600 weights + 800 biases" in result.stdout
    assert "1.71 % counting weights only" in result.stdout
    assert "23,917,832" in result.stdout  # torchvision resnet50 with 200 classes


@pytest.mark.slow
def test_info_json():
    result = sef("info", "--backbone", "resnet18", "--classes", "10", "--groups", "3", "--json")
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)
    assert counts["group_sizes"] == [170, 170, 172]
    assert counts["extra"] == 512 * 10 + 3 * 10


@pytest.mark.slow
def test_user_errors_are_one_line_with_exit_code_2():
    result = sef("info", "--backbone", "resnet9000")
    assert result.returncode == 2
    assert result.stderr.startswith("sef info: error: unknown backbone 'resnet9000'")
    assert "Traceback" not in result.stderr
    result = sef("info", "--groups", "4096")
    assert result.returncode == 2 and "groups=4096 is larger than the 2048" in result.stderr


def test_no_command_prints_help_and_version_works():
    bare = sef()  # a usage error: the help goes to stderr, the exit code is 2
    assert "COMMAND" in bare.stderr and bare.returncode == 2
    assert sef("--version").stdout.startswith("sef ")


@pytest.mark.slow
def test_output_into_a_closed_pipe_is_not_an_error():
    shell = f"{sys.executable} -m sef info --backbone resnet18 --classes 3 | true"  # closed at once
    result = subprocess.run(shell, shell=True, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stderr == ""


@pytest.mark.slow
def test_info_on_token_backbones_says_how_features_are_pooled(capsys):
    result = sef("info", "--backbone", "timm:vit_tiny_patch16_224", "--classes", "200")
    assert result.returncode == 0, result.stderr
    assert "feature channels C  192" in result.stdout
    assert "pooled features     class token (the model's head)" in result.stdout
    arguments = ["info", "--backbone", "timm:vit_tiny_patch16_224", "--pool", "avg", "--json"]
    assert main([*arguments, "--image-size", "32"]) == 0
    assert (
        json.loads(capsys.readouterr().out)["pooling"]
        == "mean of the patch tokens (the model's head)"
    )
    assert main(["info", "--backbone", "timm:pit_ti_224"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("sef info: error: timm:pit_ti_224 is not supported: at 224 px")


@pytest.mark.slow
def test_a_checkpoint_of_a_newer_format_is_one_line_from_each_command(
    demo_checkpoint, tmp_path, capsys
):
    """Before: a newer sef's checkpoint failed on whatever key it had changed, or misread."""
    import torch

    state = torch.load(demo_checkpoint, weights_only=True)
    future = tmp_path / "future.pt"
    torch.save({**state, "format": 2, "sef_version": "9.0"}, future)
    refusal = (
        f"checkpoint {future} is in format 2, written by sef 9.0; this sef {__version__} reads "
        f"format 1 at most: upgrade sef to read it\n"
    )
    result = sef("info", "--checkpoint", str(future))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"sef info: error: {refusal}"
    for command in (["eval"], ["predict", str(tmp_path)]):
        assert main([*command, "--checkpoint", str(future), "--no-progress"]) == 2
        assert capsys.readouterr().err == f"sef {command[0]}: error: {refusal}"


def test_info_of_a_checkpoint_says_which_sef_and_torch_wrote_it(demo_checkpoint, tmp_path, capsys):
    import torch

    assert main(["info", "--checkpoint", str(demo_checkpoint)]) == 0
    said = capsys.readouterr().out
    assert said.startswith("SEF on resnet18, 8 classes\n")
    assert f"  written by          sef {__version__} with torch {torch.__version__}\n" in said
    assert "  groups G            2 (256, 256 channels)\n" in said
    assert main(["info", "--checkpoint", str(demo_checkpoint), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["sef_version"] == __version__ and summary["group_sizes"] == [256, 256]
    assert summary["torch_version"] == str(torch.__version__)
    state = torch.load(demo_checkpoint, weights_only=True)
    state = {key: value for key, value in state.items() if "version" not in key}
    torch.save(state, tmp_path / "old.pt")  # as sef wrote them before
    assert main(["info", "--checkpoint", str(tmp_path / "old.pt")]) == 0
    said = capsys.readouterr().out
    assert "  written by          an older sef that did not record its version\n" in said


def test_info_refuses_model_options_beside_a_checkpoint(demo_checkpoint, capsys):
    """Options that describe a model to build would be ignored beside a checkpoint's."""
    assert main(["info", "--checkpoint", str(demo_checkpoint), "--groups", "3"]) == 2
    assert capsys.readouterr().err == (
        "sef info: error: --checkpoint describes its own model, which --groups cannot change; "
        "pass one or the other\n"
    )


def test_info_of_a_checkpoint_says_the_epoch_it_was_saved_at(
    demo_checkpoint, unfinished_checkpoint, capsys
):
    """An unfinished run's last.pt was described without a word of how far it had trained."""
    assert main(["info", "--checkpoint", str(demo_checkpoint)]) == 0
    assert "  saved at            epoch 1 of 50\n" in capsys.readouterr().out  # best.pt: unknown
    last = unfinished_checkpoint
    assert main(["info", "--checkpoint", str(last)]) == 0
    assert "  saved at            epoch 1 of 50 (unfinished run)\n" in capsys.readouterr().out
    assert main(["info", "--checkpoint", str(last), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["epoch"], summary["epochs"], summary["unfinished"]) == (1, 50, True)
