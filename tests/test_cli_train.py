"""`sef train` and `sef presets` as a user runs them: output, files, one-line errors."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from conftest import sef_process

from sef.checkpoint import load_checkpoint, save_checkpoint
from sef.cli import main
from sef.config import apply_overrides, preset_names, resolve_config, save_config
from sef.datasets import RECORDS
from sef.engine import run as run_module
from sef.engine.run import resume_dir
from sef.errors import said_to_command
from sef.losses import ONE_BY_ONE

TINY_DEMO = [
    "--set", "data.options.per_class=3", "--set", "data.options.test_per_class=2",
    "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--workers", "0",
]  # fmt: skip


def _what_a_run_writes() -> str:
    """The list of docs/training.md's "What a run writes"."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    return page.split("\n- `DIR/config.yaml`")[1].split("\n\n")[0]


def _run_files_documented() -> list[str]:
    """The files and folders the list names at the head of its items (without --log trackers)."""
    items = ("- `DIR/config.yaml`" + _what_a_run_writes()).split("\n- ")
    return [name.rstrip("/") for item in items for name in re.findall(r"`DIR/([^`]+)`", item[:80])]


def _metrics_documented() -> list[str]:
    """The keys of an epoch's record in metrics.jsonl, as the list names them."""
    item = _what_a_run_writes().split("`DIR/metrics.jsonl`")[1].split("; strict")[0]
    return re.findall(r"`([a-z0-9_]+)`", item)


@pytest.mark.slow
def test_default_train_runs_the_demo_into_runs_demo(demo_root: Path, tmp_path: Path) -> None:
    result = sef_process("train", *TINY_DEMO, cwd=tmp_path)  # stderr a pipe, as a log file: no bars
    assert result.returncode == 0, result.stderr
    written = [line for line in result.stderr.splitlines() if " set written to " in line]
    assert written == [f"demo set written to {demo_root / 'v1-seed0-3x2-64px'}"]
    out = tmp_path / "runs" / "demo"
    assert "training demo: small_cnn, G=2, 24 train / 16 eval images, 8 classes" in result.stdout
    assert (
        "epoch 1/1" in result.stdout and f"run folder        {Path('runs/demo')}" in result.stdout
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(_run_files_documented())
    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["dataset"] == "demo"
    record = json.loads((out / "metrics.jsonl").read_text())
    assert record["epoch"] == 1 and sorted(record) == sorted(_metrics_documented())
    assert "Traceback" not in result.stderr
    assert "note: from scratch" not in result.stdout  # the demo's phi = 0.1


def test_accumulate_trains_the_batch_in_micro_batches(
    demo_root: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "run"
    assert main(["train", *TINY_DEMO, "--accumulate", "2", "--out", str(out), "--no-progress"]) == 0
    assert "epoch 1/1" in capsys.readouterr().out
    saved = yaml.safe_load((out / "config.yaml").read_text())["optim"]
    assert (saved["batch_size"], saved["accumulate"]) == (8, 2)
    record = json.loads((out / "metrics.jsonl").read_text())
    assert 0 <= record["train_top1"] <= 1 and record["grad_norm_max"] > 0


def test_a_run_from_scratch_at_phi_1_is_told_what_that_cost_the_demo(
    demo_root: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--preset", "demo-finetune", *TINY_DEMO, "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("training demo"))
    assert lines[start + 1].startswith("note: from scratch (model.weights: null) a group loss at")
    assert "cost the demo 25 to 48 points against plain" in lines[start + 1]


@pytest.mark.slow
def test_config_errors_are_one_line_with_exit_code_2(tmp_path: Path) -> None:
    result = sef_process("train", "--preset", "cub-resnet5", cwd=tmp_path)
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


def test_own_data_without_a_data_root_names_the_option(tmp_path: Path, monkeypatch, capsys):
    """`sef train --preset folder-resnet18` said the dataset needs "data.root / ROOT"."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--preset", "folder-resnet18", "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        "sef train: error: dataset 'folder' needs a root folder: pass --data-root DIR (data.root "
        "in a config)\n"
    )
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


def test_the_cache_flag_sets_data_cache_and_set_still_wins() -> None:
    from sef.cli import create_parser
    from sef.cli.train import config_from_args

    parse = create_parser().parse_args
    assert config_from_args(parse(["train", "--cache", "auto"])).data.cache == "auto"
    assert config_from_args(parse(["train", "--cache", "/tmp/c"])).data.cache == "/tmp/c"
    arguments = ["train", "--cache", "auto", "--set", "data.cache=off"]
    assert config_from_args(parse(arguments)).data.cache == "off"


def test_the_last_set_of_a_key_wins_and_a_set_wins_over_its_flag_wherever_it_stands() -> None:
    """As docs/training.md says: the order of a flag and a --set does not matter."""
    from sef.cli import create_parser
    from sef.cli.train import config_from_args

    def epochs(*arguments: str) -> int:
        return config_from_args(create_parser().parse_args(["train", *arguments])).optim.epochs

    assert epochs("--set", "optim.epochs=3", "--set", "optim.epochs=4") == 4
    assert epochs("--epochs", "5", "--set", "optim.epochs=7") == 7
    assert epochs("--set", "optim.epochs=7", "--epochs", "5") == 7


def test_presets_lists_every_preset_on_one_line_and_prints_one_as_yaml(capsys) -> None:
    listing = sef_process("presets")
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert [line.split()[0] for line in lines] == preset_names()
    assert any(line.startswith("dogs-resnet50 ") and "lr 0.001" in line for line in lines)
    assert main(["presets", "aircraft-resnet18-plain"]) == 0
    values = yaml.safe_load(capsys.readouterr().out)
    assert values["model"] == {
        "backbone": "resnet18", "weights": "IMAGENET1K_V1", "groups": 1, "pool": None,
        "backbone_args": {}, "output_stride": None,
    }  # fmt: skip
    assert values["loss"]["lam"] == values["loss"]["gamma"] == values["loss"]["phi"] == 0


@pytest.mark.slow
def test_a_preset_printed_into_a_file_is_a_config_and_the_list_says_it_is_none(
    tmp_path, capsys
) -> None:
    """The shell round trip a user makes: `sef presets NAME > my.yaml`, then `sef train --config
    my.yaml`, which reads the file as that preset (cub: the root is still to set); the list
    `sef presets` prints answered "unknown config key 'demo    demo, SEF' at the top level"."""
    sef = f"{shlex.quote(sys.executable)} -m sef.cli"
    command = f"{sef} presets cub-resnet18 > my.yaml && {sef} train --config my.yaml"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "sef train: error: dataset 'cub' needs a root folder: pass --data-root DIR (data.root in "
        "a config)\n"
    )
    assert main(["presets"]) == 0  # in this process from here: a fresh one costs seconds
    listing = tmp_path / "list.yaml"
    listing.write_text(capsys.readouterr().out)
    assert main(["train", "--config", str(listing)]) == 2
    assert capsys.readouterr().err == (
        f"sef train: error: config file {listing} is the list of presets `sef presets` prints, "
        f"not a config; `sef presets NAME > {listing}` writes one preset's config to edit, or "
        f"train a preset as it is with --preset NAME\n"
    )


def test_presets_help_names_every_kind_of_preset(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["presets", "--help"])
    described = " ".join(capsys.readouterr().out.split())
    for name in preset_names():  # birds32-mobilenet_v2 and birds32b-... were left out
        dataset = name.split("-")[0]
        form = {
            "paper": "<dataset>-<backbone>",
            "own": f"{dataset}-<backbone>",
            "generated": "-".join(name.split("-")[: 1 if dataset == "demo" else 2]),
        }[RECORDS[dataset].kind]
        assert f"{form}[-METHOD]" in described, name


def test_a_warning_is_one_line(demo_root: Path, tmp_path: Path, capsys) -> None:
    arguments = ["train", "--out", str(tmp_path / "run"), *TINY_DEMO, "--no-progress"]
    assert main([*arguments, "--backbone", "resnet18", "--weights", "none"]) == 0
    assert capsys.readouterr().err == f"sef train: warning: {ONE_BY_ONE}\n"  # 32 px: a 1 x 1 map


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
    assert "skipped 1 unreadable image, e.g." in capsys.readouterr().err


def test_images_too_small_for_the_backbone_name_the_option_to_change(
    demo_root: Path, tmp_path: Path, capsys
) -> None:
    arguments = ["train", *TINY_DEMO, "--out", str(tmp_path / "run"), "--no-progress"]
    arguments += ["--backbone", "densenet121", "--weights", "none", "--image-size", "16"]
    assert main(arguments) == 2  # its last pooling needs a map of 2 x 2 or more
    error = capsys.readouterr().err
    assert error.startswith(
        "sef train: error: model.backbone='densenet121' cannot run on images of 16 x 16 px ("
    )
    assert error.endswith("); choose another --image-size (data.image_size)\n")


@pytest.mark.parametrize(
    ("batch", "parts", "end"),
    [
        ("1", [], "--batch-size 2 or more (optim.batch_size), or larger images (--image-size)"),
        (
            "2",
            ["--accumulate", "2"],
            "--batch-size 4 or more (optim.batch_size), a lower --accumulate, or larger images "
            "(--image-size)",
        ),
    ],
    ids=["batch", "micro-batch"],
)
def test_a_batch_of_one_image_batchnorm_cannot_train_on_says_what_to_change(
    demo_root: Path, tmp_path: Path, capsys, batch: str, parts: list[str], end: str
) -> None:
    arguments = ["train", *TINY_DEMO, "--out", str(tmp_path / "run"), "--no-progress"]
    arguments += ["--backbone", "resnet18", "--weights", "none", "--batch-size", batch, *parts]
    assert main(arguments) == 2  # 32 px: resnet18's last maps are 1 x 1
    error = capsys.readouterr().err.splitlines()[-1]
    kind = "micro-batch" if parts else "batch"
    assert error.startswith(f"sef train: error: BatchNorm cannot train on a {kind} of 1 image ")
    assert error.endswith(f"train with {end}")


@pytest.mark.parametrize(
    "error",
    [  # as torch raises them: the CPU allocator's RuntimeError, a GPU's OutOfMemoryError
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 1644167168 bytes. Error code 12 (Cannot allocate memory)"
        ),
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.53 GiB."),
    ],
)
def test_running_out_of_memory_says_what_to_lower_in_one_line(
    demo_root: Path, tmp_path: Path, monkeypatch, capsys, error: RuntimeError
) -> None:
    def out_of_memory(*args, **kwargs):
        raise error

    monkeypatch.setattr("sef.engine.loop.to_device", out_of_memory)
    arguments = ["train", *TINY_DEMO, "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(arguments) == 2
    assert capsys.readouterr().err == (
        "sef train: error: out of cpu memory with batches of 8 images of 32 x 32 px; train again "
        "with --accumulate 2 (the same batch of 8 in micro-batches of 4), or with a lower "
        "--batch-size or --image-size; no checkpoint was written\n"
    )
    assert main([*arguments, "--accumulate", "4"]) == 2  # micro-batches of 2: 1 is left
    assert capsys.readouterr().err == (
        "sef train: error: out of cpu memory with micro-batches of 2 images of 32 x 32 px; train "
        "again with --accumulate 8 (the same batch of 8 in micro-batches of 1), or with a lower "
        "--batch-size or --image-size; no checkpoint was written\n"
    )
    assert main([*arguments, "--accumulate", "8"]) == 2
    assert capsys.readouterr().err == (
        "sef train: error: out of cpu memory with micro-batches of 1 image of 32 x 32 px; train "
        "again with a lower --batch-size or --image-size; no checkpoint was written\n"
    )


def test_a_run_out_of_memory_after_a_checkpoint_resumes_in_more_micro_batches(
    demo_root: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    arguments = ["train", *TINY_DEMO, "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(arguments) == 0
    with monkeypatch.context() as patch:
        patch.setattr("sef.engine.loop.to_device", _out_of_cpu_memory)
        assert main([*arguments, "--epochs", "2", "--resume"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "sef train: error: out of cpu memory with batches of 8 images of 32 x 32 px; add "
        "--accumulate 2 (the same batch of 8 in micro-batches of 4) to the same command with "
        f"--resume to continue, or train again with a lower --batch-size or --image-size; "
        f"{tmp_path / 'run' / 'last.pt'} (epoch 1) is kept"
    )
    assert main([*arguments, "--epochs", "2", "--resume", "--accumulate", "2"]) == 0
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert (saved["epoch"], saved["config"]["optim"]["accumulate"]) == (2, 2)
    said = capsys.readouterr().out.splitlines()
    assert ", 2 epochs, batches of 8 in 2 micro-batches of 4 on 1 x cpu" in said[0]
    assert said[1] == (
        f"note: {tmp_path / 'run' / 'last.pt'} trained with optim.accumulate=1 and resumes with "
        f"2: the batches, steps and learning rate stay the same, but BatchNorm's statistics are "
        f"those of other micro-batches, so the run will not end exactly where an uninterrupted "
        f"one would"
    )
    assert "accumulate: 2" in (tmp_path / "run" / "config.yaml").read_text()


def test_micro_batches_of_one_image_under_batchnorm_are_noted(tmp_path: Path, capsys) -> None:
    arguments = ["train", *TINY_DEMO, "--out", str(tmp_path / "run"), "--no-progress"]
    assert main([*arguments, "--accumulate", "8"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == (
        "note: each micro-batch holds 1 image (optim.accumulate=8 of 8 images per process): "
        "BatchNorm normalises every image by its own statistics and keeps running averages of "
        "single images, unlike the recipe's batches; --accumulate 4 keeps 2 images a micro-batch"
    )


def test_running_out_of_memory_with_an_eval_batch_size_says_a_resume_may_lower_it(
    tmp_path: Path,
) -> None:
    """A resume may take another run.eval_batch_size: once last.pt is kept, the advice says so
    rather than to train again."""
    config = apply_overrides(resolve_config("demo"), ["run.eval_batch_size=16"])
    context = SimpleNamespace(world_size=1, device=torch.device("cpu"))
    run = SimpleNamespace(config=config, context=context, kept=0, out=tmp_path, out_given=True)
    out_of = "out of cpu memory with batches of 32 images (evaluation: 16) of 64 x 64 px; "
    run.kept = 3  # Python code (a notebook) is told the config keys and fit's call
    assert run_module._memory(run) == (
        f"{out_of}set optim.accumulate=2 (the same batch of 32 in micro-batches of 16) or "
        "run.eval_batch_size=8, then call fit(config, resume=True) to continue, or train again "
        "with a lower optim.batch_size or data.image_size"
    )
    run.kept = 0
    with said_to_command():  # the command's user, its options
        assert run_module._memory(run) == (
            f"{out_of}train again with --accumulate 2 (the same batch of 32 in micro-batches of "
            "16), or with a lower --batch-size or run.eval_batch_size or --image-size"
        )
        run.kept = 3
        assert run_module._memory(run) == (
            f"{out_of}add --accumulate 2 (the same batch of 32 in micro-batches of 16) or --set "
            "run.eval_batch_size=8 to the same command with --resume to continue, or train again "
            "with a lower --batch-size or --image-size"
        )
        run.config = apply_overrides(config, ["optim.batch_size=1"])  # no more micro-batches
        assert run_module._memory(run) == (
            "out of cpu memory with batches of 1 image (evaluation: 16) of 64 x 64 px; add --set "
            "run.eval_batch_size=8 to the same command with --resume to continue, or train again "
            "with a lower --batch-size or --image-size"
        )


def _out_of_cpu_memory(*args, **kwargs):
    raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB")


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ("train/fox", "the trainval split of {root} has no readable image left of 1 class ('fox')"),
        ("test", "the test split of {root} has no readable image left, so there is nothing to"),
    ],
)
def test_skipping_unreadable_images_that_leave_a_split_unusable_is_refused(
    folder_root: Path, tmp_path: Path, monkeypatch, capsys, broken: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    for image in (folder_root / broken).rglob("*.png"):
        image.write_bytes(b"not an image")
    arguments = ["train", "--set", "data.dataset=folder", "--data-root", str(folder_root)]
    arguments += ["--image-size", "32", "--epochs", "1", "--batch-size", "4", "--workers", "0"]
    assert main([*arguments, "--no-progress", "--set", "data.bad_images=skip"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("sef train: error: skipped ") and error.count("\n") == 1
    assert message.format(root=folder_root) in error
    assert not list(tmp_path.rglob("*.pt"))


def test_skipping_every_eval_image_of_a_class_is_warned_of(
    folder_root: Path, tmp_path: Path, capsys
) -> None:
    for image in (folder_root / "test" / "fox").glob("*.png"):
        image.write_bytes(b"not an image")
    arguments = ["train", "--set", "data.dataset=folder", "--data-root", str(folder_root)]
    arguments += ["--image-size", "32", "--epochs", "1", "--batch-size", "4", "--workers", "0"]
    arguments += ["--no-progress", "--set", "data.bad_images=skip", "--out", str(tmp_path / "r")]
    assert main(arguments) == 0
    assert (
        "sef train: warning: the test split holds no image of 1 class ('fox'): trained on, never "
        "evaluated, and left out of the class-mean accuracy; its images of them were unreadable "
        "and skipped (data.bad_images=skip)\n"
    ) in capsys.readouterr().err


def test_documented_bad_images_off_is_accepted_from_yaml_and_set(
    demo_root: Path, tmp_path: Path, capsys
) -> None:
    config = tmp_path / "mine.yaml"
    config.write_text("base: demo\ndata:\n  bad_images: off\n")  # unquoted, as README writes it
    out = tmp_path / "run"
    code = main(["train", "--config", str(config), "--set", "data.bad_images=off", *TINY_DEMO,
                 "--out", str(out), "--no-progress"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["bad_images"] == "off"


@pytest.mark.slow
def test_a_run_that_fails_before_its_first_checkpoint_leaves_its_folder_usable(
    demo_root: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "run"
    failed = sef_process("train", *TINY_DEMO, "--out", str(out), "--lr", "1e30", "--no-progress")
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert failed.stderr.count("\n") == 1 and "no checkpoint was written" in failed.stderr
    assert not (out / "last.pt").exists() and (out / "config.yaml").exists()  # what it left

    # --resume starts it again from its config.yaml (here: lr 1e30 again, so it fails again);
    # in this process from here: the command's own output was checked above
    assert main(["train", "--resume", "--out", str(out), "--no-progress"]) == 2
    resumed = capsys.readouterr()
    assert resumed.out.startswith(
        f"{out} holds no checkpoint (its run stopped before the first): starting it\ntraining demo"
    )
    assert "no checkpoint was written" in resumed.err
    assert main(["train", *TINY_DEMO, "--out", str(out), "--no-progress"]) == 0
    assert "epoch 1/1" in capsys.readouterr().out and (out / "last.pt").is_file()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert len(list((out / "tb").iterdir())) == 1  # the failed runs' events went


@pytest.mark.slow
def test_a_finished_run_is_extended_with_resume_and_more_epochs(
    demo_root: Path, tmp_path: Path, capsys
) -> None:
    """The run and the refusal in this process, the resume as a user runs it."""
    out = tmp_path / "run"
    assert main(["train", *TINY_DEMO, "--epochs", "2", "--out", str(out), "--no-progress"]) == 0

    extended = sef_process("train", "--resume", "--out", str(out), "--epochs", "3", "--no-progress")
    assert extended.returncode == 0 and "Traceback" not in extended.stderr, extended.stderr
    assert "resuming after epoch 2" in extended.stdout and "epoch 3/3" in extended.stdout
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # demo: cosine over 12 epochs by default, here 2, then 3: epoch 3 takes the 3-epoch plan's lr
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[2]["lr"] == pytest.approx(0.02 * (1 + math.cos(math.pi * 2 / 3)) / 2)

    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "--epochs", "2"]) == 2
    assert capsys.readouterr().err == (
        f"sef train: error: cannot resume {out / 'last.pt'} for 2 epochs: it has trained 3 "
        f"already; pass --epochs 3 or more\n"
    )
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 3  # left as it was


def test_own_images_train_with_the_folder_preset_into_a_run_named_after_them(
    folder_root: Path, tmp_path: Path, files_in, monkeypatch, capsys
) -> None:
    birds = folder_root.rename(tmp_path / "birds")
    before = files_in(birds)
    tiny = ["--weights", "none", "--image-size", "32", "--epochs", "1", "--batch-size", "4"]
    monkeypatch.chdir(tmp_path)
    code = main(["train", "--preset", "folder-resnet18", "--data-root", str(birds), *tiny,
                 "--workers", "0", "--no-progress"])  # fmt: skip
    result = capsys.readouterr()
    assert code == 0, result.err
    assert "training birds-resnet18: resnet18, G=2, 12 train / 6 eval images, 3 classes" in (
        result.out
    )
    out = tmp_path / "runs" / "birds-resnet18"
    assert f"run folder        {Path('runs/birds-resnet18')}" in result.out
    assert (out / "last.pt").is_file() and files_in(birds) == before  # the images untouched


def test_the_demo_preset_never_writes_into_a_folder_of_own_images(
    folder_root: Path, tmp_path: Path, files_in, monkeypatch, capsys
) -> None:
    before = files_in(folder_root)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data-root", str(folder_root), "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"sef train: error: {folder_root} is not a demo cache (it holds test, train) and the demo "
        f"will not write its images there; for your own images use dataset folder or csv (the "
        f"presets folder-<backbone> and csv-<backbone>, e.g. --preset folder-resnet50)\n"
    )
    assert files_in(folder_root) == before and not (tmp_path / "runs").exists()


def test_own_images_from_a_csv_and_from_the_demo_preset_are_named_after_their_folder(
    csv_root: Path, folder_root: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    tiny = ["--weights", "none", "--image-size", "32", "--epochs", "1", "--batch-size", "4"]
    tiny += ["--workers", "0", "--no-progress"]
    csv_file = csv_root / "labels.csv"
    assert main(["train", "--preset", "csv-resnet18", "--data-root", str(csv_file), *tiny]) == 0
    assert "training own-csv-resnet18: resnet18" in capsys.readouterr().out
    assert (tmp_path / "runs" / "own-csv-resnet18" / "last.pt").is_file()
    resume = ["train", "--preset", "csv-resnet18", "--data-root", str(csv_file), "--resume"]
    assert main([*resume, "--epochs", "1", "--workers", "0", "--no-progress"]) == 0  # no --out
    assert "resuming after epoch 1 own-csv-resnet18: resnet18" in capsys.readouterr().out
    demo_on_folder = ["train", "--set", "data.dataset=folder", "--data-root", str(folder_root)]
    assert main([*demo_on_folder, *tiny[4:]]) == 0
    assert "training own: small_cnn" in capsys.readouterr().out
    assert (tmp_path / "runs" / "own" / "last.pt").is_file()


def test_a_preset_trained_on_another_backbone_runs_in_a_folder_named_after_it(
    demo_root: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """`--backbone resnet18` on the demo trained in runs/demo, which its own runs then met."""
    monkeypatch.chdir(tmp_path)
    tiny = [*TINY_DEMO, "--no-progress", "--backbone", "resnet18"]
    assert main(["train", *tiny]) == 0
    assert "training demo-resnet18: resnet18, G=2" in capsys.readouterr().out
    assert main(["train", *tiny, "--resume", "--epochs", "2"]) == 0
    assert "resuming after epoch 1 demo-resnet18: resnet18" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["demo-resnet18"]


def test_resume_refuses_a_preset_or_config_file_that_differs_from_the_run(
    demo_root: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "run"
    assert main(["train", *TINY_DEMO, "--out", str(out), "--no-progress"]) == 0
    resume = ["train", "--resume", "--out", str(out), *TINY_DEMO, "--epochs", "2", "--no-progress"]
    capsys.readouterr()
    assert main([*resume, "--preset", "demo-plain"]) == 2  # the preset, not its first key
    assert capsys.readouterr().err == (
        f"sef train: error: cannot resume {out / 'last.pt'}: the run started from the preset "
        f"demo, not demo-plain; resume without --preset (last.pt keeps the run's config), or "
        f"train a new run with another --out\n"
    )
    plain = tmp_path / "plain.yaml"
    plain.write_text("base: demo-plain\n")
    assert main([*resume, "--config", str(plain)]) == 2
    said = capsys.readouterr().err
    assert f"demo, and --config {plain} from the preset demo-plain; resume without --c" in said
    other = tmp_path / "other.yaml"
    other.write_text("base: demo\nloss: {phi: 0.5}\n")
    assert main([*resume, "--config", str(other)]) == 2  # the run's preset: a key set otherwise
    assert "loss.phi was 0.1 and is now 0.5; " in capsys.readouterr().err
    assert main([*resume, "--set", "loss.gamma=0.0"]) == 2
    assert "loss.gamma was 0.05 and is now 0.0; " in capsys.readouterr().err
    same = tmp_path / "same.yaml"
    same.write_text((out / "config.yaml").read_text())
    assert main([*resume, "--config", str(same)]) == 0  # the run's own config
    assert main([*resume, "--preset", "demo", "--epochs", "3"]) == 0  # and its own preset
    assert "resuming after epoch 2" in capsys.readouterr().out


def test_resume_of_a_run_without_a_checkpoint_refuses_another_preset_too(
    demo_root: Path, tmp_path: Path, capsys
) -> None:
    """It took the other preset's values under the run's name, and wrote them over config.yaml."""
    out = tmp_path / "run"  # what a run stopped during its first epoch leaves
    save_config(resolve_config("demo"), out / "config.yaml")
    before = (out / "config.yaml").read_text()
    resume = ["train", "--resume", "--out", str(out), *TINY_DEMO, "--no-progress"]
    assert main([*resume, "--preset", "demo-plain"]) == 2
    assert capsys.readouterr().err == (
        f"sef train: error: cannot resume {out} (its run stopped before its first checkpoint): the "
        f"run started from the preset demo, not demo-plain; resume without --preset (it starts "
        f"again from {out / 'config.yaml'}), or run the same command without --resume to start it "
        f"afresh with --preset demo-plain\n"
    )
    assert (out / "config.yaml").read_text() == before


def test_a_resume_that_finds_no_run_says_where_it_looked_and_names_the_runs_near_it(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """It said 'runs/demo-plain does not exist; check --out' to a command without --out."""
    monkeypatch.chdir(tmp_path)
    save_config(resolve_config("demo"), Path("runs/mine/config.yaml"))
    Path("runs/notes").mkdir()  # no run: not named
    assert main(["train", "--resume", "--preset", "demo-plain", "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"sef train: error: cannot resume: no run in {Path('runs/demo-plain')}, the folder a "
        f"resume without --out looks in for this preset; pass --out DIR to resume the run in DIR "
        f"(runs beside it: {Path('runs/mine')})\n"
    )
    assert main(["train", "--resume", "--out", "runs/mne", "--no-progress"]) == 2  # a typo
    said = f"does not exist; check --out (runs beside it: {Path('runs/mine')})\n"
    assert capsys.readouterr().err.endswith(said)
    assert main(["train", "--resume", "--out", "runs", "--no-progress"]) == 2  # their folder
    assert capsys.readouterr().err == (
        f"sef train: error: cannot resume: runs holds no run itself; give --out one of its runs: "
        f"{Path('runs/mine')}\n"
    )


def test_resume_of_a_weights_only_last_pt_says_so_in_one_line(
    demo_root: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "run"
    assert main(["train", *TINY_DEMO, "--out", str(out), "--no-progress"]) == 0
    (out / "last.pt").write_bytes((out / "best.pt").read_bytes())
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "--epochs", "2", "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"sef train: error: cannot resume {out / 'last.pt'}: it holds weights only (like best.pt), "
        f"no optimizer or schedule to continue; put the run's own last.pt back, or train a new run "
        f"with another --out\n"
    )


def test_resume_of_a_truncated_last_pt_says_what_else_can_be_done(
    demo_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    """Told to use a whole copy, a user without one met a dead end: a new run, and best.pt for
    all but resuming, are what is left."""
    out = tmp_path / "run"
    out.mkdir()
    whole = demo_checkpoint.read_bytes()
    (out / "last.pt").write_bytes(whole[: len(whole) // 2])
    resume = ["train", "--resume", "--out", str(out), "--no-progress"]
    assert main(resume) == 2
    truncated = (
        f"sef train: error: checkpoint {out / 'last.pt'} is truncated: the zip archive torch.save "
        f"writes ends before its table of contents (a save, copy or download that did not "
        f"finish); use a whole copy, or without one train a new run with another --out"
    )
    assert capsys.readouterr().err == f"{truncated}\n"
    (out / "best.pt").write_bytes(whole)
    assert main(resume) == 2
    assert capsys.readouterr().err == (
        f"{truncated}; {out / 'best.pt'}, the model of its best epoch, cannot be resumed, but "
        f"sef eval, predict and export take it\n"
    )


def test_resume_of_a_finished_run_says_how_to_train_more(
    demo_root: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    """It says so before any image is checked (it checked them all first), and checks them only
    to write its best epoch's best.pt again, which reads the eval images."""
    out = tmp_path / "run"
    assert main(["train", *TINY_DEMO, "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    check = run_module.check_images
    monkeypatch.setattr(
        run_module, "check_images", lambda *a, **k: print("checking") or check(*a, **k)
    )
    assert main(["train", "--resume", "--out", str(out), "--no-progress"]) == 0
    note = (
        f"note: {out / 'last.pt'} has trained all 1 epoch already, so none trains now; to train "
        f"more, resume with --epochs above 1\n"
    )
    said = capsys.readouterr().out
    assert note in said and said.index(note) < said.index("checking\n")
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_resume_of_a_finished_run_whose_best_epoch_was_earlier_reads_no_image(
    demo_root: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    """It has no best.pt to write again, so nothing to check the images for."""
    out = tmp_path / "run"
    assert main(["train", *TINY_DEMO, "--epochs", "2", "--out", str(out), "--no-progress"]) == 0
    state = load_checkpoint(out / "last.pt")
    state["best"] = {"epoch": 1, "eval_top1": state["history"][0]["eval_top1"]}
    save_checkpoint(out / "last.pt", state)
    capsys.readouterr()
    monkeypatch.setattr(run_module, "check_images", lambda *a, **k: pytest.fail("checked images"))
    monkeypatch.setattr(run_module, "from_cache", lambda *a: pytest.fail("opened a cache"))
    assert main(["train", "--resume", "--out", str(out), "--no-progress"]) == 0
    assert "has trained all 2 epochs already" in capsys.readouterr().out


def test_resume_of_a_folder_whose_last_pt_is_gone_says_what_best_pt_lacks(
    trained_demo_checkpoint: Path, capsys
) -> None:
    out = trained_demo_checkpoint.parent
    trained_demo_checkpoint.rename(out / "best.pt")  # last.pt deleted, best.pt kept
    assert main(["train", "--resume", "--out", str(out), "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"sef train: error: cannot resume: {out} holds best.pt but no last.pt, and best.pt holds "
        f"weights only, no optimizer or schedule to continue; put the run's own last.pt back, or "
        f"train a new run with another --out\n"
    )


def test_resume_of_a_folder_whose_last_pt_is_a_folder_says_so(
    trained_demo_checkpoint: Path, capsys
) -> None:
    """It said the run folder "holds best.pt but no last.pt"."""
    out = trained_demo_checkpoint.parent
    trained_demo_checkpoint.rename(out / "best.pt")
    (out / "last.pt").mkdir()
    assert main(["train", "--resume", "--out", str(out), "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"sef train: error: cannot resume: {out / 'last.pt'} is a folder, not a checkpoint file; "
        f"put the run's own last.pt in its place, or train a new run with another --out\n"
    )


def test_a_hand_edited_config_yaml_is_resumed_or_refused_never_ignored(
    demo_root: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "run"
    assert main(["train", *TINY_DEMO, "--out", str(out), "--no-progress"]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())

    def edit(section: str, key: str, value: object) -> None:
        values = {**saved, section: {**saved[section], key: value}}
        (out / "config.yaml").write_text(yaml.safe_dump(values, sort_keys=False))

    edit("optim", "lr", 0.5)  # was silently trained at 0.02, and written back over the edit
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "--epochs", "2", "--no-progress"]) == 2
    assert capsys.readouterr().err.startswith(
        f"sef train: error: cannot resume {out / 'last.pt'}: {out / 'config.yaml'} was edited: it "
        f"sets optim.lr to 0.5 where the run trained with 0.02; put 0.02 back there (a resume may "
        f"change only data.root, "
    )
    edit("optim", "lr", "fast")  # its advice to pass --set could not help: read before --set
    resume = ["train", "--resume", "--out", str(out), "--set", "optim.lr=0.02", "--no-progress"]
    assert main(resume) == 2
    assert capsys.readouterr().err == (
        f"sef train: error: cannot resume {out / 'last.pt'}: in {out / 'config.yaml'}, config "
        f"value optim.lr must be float, got 'fast'; fix it there, or delete it (last.pt keeps the "
        f"run's config)\n"
    )
    (out / "config.yaml").write_text("optim: {epochs: 2}\n")  # cut down to the one change
    assert main(["train", "--resume", "--out", str(out), "--no-progress"]) == 2
    assert capsys.readouterr().err.startswith(  # it said 'it sets data.image_size to 448'
        f"sef train: error: cannot resume {out / 'last.pt'}: {out / 'config.yaml'} was edited: it "
        f"leaves out data.image_size, which then takes 448, where the run trained with 32; put it "
        f"back (a resume may change only data.root, "
    )
    edit("optim", "epochs", 2)  # what a resume may change takes effect
    assert main(["train", "--resume", "--out", str(out), "--no-progress"]) == 0
    assert load_checkpoint(out / "last.pt")["epoch"] == 2


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("optim: {epochz: 3}\n", "in section 'optim'; did you mean 'epochs'? valid keys: "),
        ("data: {epochs: 3}\n", "it is a key of section 'optim' (optim.epochs); valid keys: "),
        ("optim:\n\tepochs: 3\n", "cannot start any token; YAML takes no tabs there: use spaces"),
        ("data: {root: on}\n", "that way; quote the word; fix it there"),
    ],
)
def test_resume_of_a_run_without_a_checkpoint_names_its_broken_config_yaml(
    tmp_path: Path, capsys, text: str, hint: str
) -> None:
    """The loader's hints at the right place or spelling were dropped (its advice to pass --set
    is, being read before any --set)."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text(text)
    assert main(["train", "--resume", "--out", str(out), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"sef train: error: cannot resume {out}: ")
    assert error.endswith("; fix it there, or train a new run with another --out\n")
    assert hint in error and "--set" not in error and error.count("\n") == 1


def _train_own_tiny(folder_root: Path, out: Path) -> Path:
    """Train one epoch of a tiny small_cnn on the own-data folder into ``out``; return ``out``."""
    own = ["--preset", "folder-resnet18", "--backbone", "small_cnn", "--weights", "none"]
    tiny = ["--image-size", "32", "--epochs", "1", "--batch-size", "4", "--workers", "0"]
    train = ["train", *own, *tiny, "--data-root", str(folder_root), "--out", str(out)]
    assert main([*train, "--no-progress"]) == 0
    return out


def test_resume_of_data_whose_classes_changed_names_them_before_any_image_is_read(
    folder_root: Path, tmp_path: Path, capsys
) -> None:
    out = _train_own_tiny(folder_root, tmp_path / "run")
    resume = ["train", "--resume", "--out", str(out), "--epochs", "2", "--no-progress"]
    for split in ("train", "test"):  # a class added, another gone
        (folder_root / split / "fox").rename(folder_root / split / "wolf")
    capsys.readouterr()
    assert main(resume) == 2
    assert capsys.readouterr().err == (
        f"sef train: error: cannot resume {out / 'last.pt'}: the data's classes are not those it "
        f"trained on: 1 class added ('wolf'), 1 class gone ('fox'); put the data back as it was, "
        f"or train a new run with another --out\n"
    )


def test_an_image_unreadable_on_resume_is_met_with_what_a_resume_can_do(
    folder_root: Path, tmp_path: Path, capsys
) -> None:
    """The advice to --set data.bad_images=skip led to a refusal: a resume keeps that setting."""
    out = _train_own_tiny(folder_root, tmp_path / "run")
    (folder_root / "train" / "cat" / "cat0.png").write_text("not an image")
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "--epochs", "2", "--no-progress"]) == 2
    said = (
        "sef train: error: 1 of 18 images cannot be used; fix or remove them (a resume keeps "
        "data.bad_images; to skip them, train a new run with --set data.bad_images=skip and "
        "another --out):\n"
    )
    assert said in capsys.readouterr().err


def test_resume_of_a_folder_that_never_held_a_run_is_refused_and_left_alone(
    demo_root: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "notes"  # an --out typo naming some folder of the user's
    out.mkdir()
    (out / "mine.txt").write_text("mine")
    assert main(["train", "--resume", *TINY_DEMO, "--out", str(out), "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"sef train: error: cannot resume: {out} holds no run (no last.pt or config.yaml); check "
        f"--out, or train without --resume to start a new run there\n"
    )
    assert sorted(os.listdir(out)) == ["mine.txt"]

    (out / ".sef-lock").write_text("")  # what a run killed while it read its data leaves
    assert resume_dir(apply_overrides(resolve_config("demo"), [f"run.out={out}"])) == out


def test_resume_of_a_last_pt_whose_optimizer_holds_other_weights_says_so_in_one_line(
    demo_root: Path, tmp_path: Path, capsys
) -> None:
    """As a timm CNN run saved before sef dropped its head layers that never trained."""
    out = tmp_path / "run"
    assert main(["train", *TINY_DEMO, "--out", str(out), "--no-progress"]) == 0
    state = load_checkpoint(out / "last.pt")
    group = state["optimizer"]["param_groups"][0]
    group["params"] = [*group["params"], max(group["params"]) + 1000]  # one weight more
    save_checkpoint(out / "last.pt", state)
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "--epochs", "2", "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"sef train: error: cannot resume {out / 'last.pt'}: its optimizer ")
    assert error.endswith("cannot continue: train it again\n") and error.count("\n") == 1


def test_resume_of_a_run_without_a_checkpoint_takes_its_own_config_yaml_given_as_config(
    demo_root: Path, tmp_path: Path, capsys
) -> None:
    """As with a checkpoint; it was refused as a hand-written config the run would write over."""
    out = tmp_path / "run"
    tiny = ["data.options.per_class=3", "data.options.test_per_class=2", "data.image_size=32"]
    tiny += ["optim.epochs=1", "optim.batch_size=8", "data.workers=0"]
    save_config(resolve_config("demo", overrides=tiny), out / "config.yaml")
    resume = ["train", "--resume", "--config", str(out / "config.yaml"), "--out", str(out)]
    assert main([*resume, "--no-progress"]) == 0, capsys.readouterr().err
    assert (out / "last.pt").is_file()


def test_a_folder_with_a_config_but_no_checkpoint_keeps_the_users_files(
    demo_root: Path, tmp_path: Path, capsys
) -> None:
    out, mine = tmp_path / "myexp", tmp_path / "myexp" / "tb" / "mine.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("mine")
    (out / "tb" / "events.out.tfevents.1.host.1.0").write_bytes(b"")  # TensorBoard events of theirs
    written = "base: demo\n# my notes\noptim: {epochs: 1}\n"
    (out / "config.yaml").write_text(written)
    train = ["train", *TINY_DEMO, "--out", str(out), "--no-progress"]
    assert main([*train, "--config", str(out / "config.yaml")]) == 2
    assert capsys.readouterr().err == (
        f"sef train: error: --config {out / 'config.yaml'} is the config.yaml the run writes in "
        f"{out}; keep your config elsewhere or choose another --out\n"
    )
    assert (out / "config.yaml").read_text() == written
    kept = tmp_path / "mine.yaml"
    kept.write_text(written)  # a copy: the run would still write over the one in myexp
    assert main([*train, "--config", str(kept)]) == 2
    assert capsys.readouterr().err == (
        f"sef train: error: cannot write {out / 'config.yaml'}: no sef run wrote it, and this one "
        f"would replace it; choose another --out\n"
    )
    (out / "config.yaml").unlink()  # kept elsewhere, as the first refusal said
    (out / "metrics.jsonl").write_text('{"my": "numbers"}\n')  # a file of that name, not a run's
    assert main([*train, "--config", str(kept)]) == 2
    assert "cannot write " + str(out / "metrics.jsonl") + ": no sef run" in capsys.readouterr().err
    assert (out / "metrics.jsonl").read_text() == '{"my": "numbers"}\n'
    (out / "metrics.jsonl").unlink()
    assert main([*train, "--config", str(kept)]) == 0
    events = list((out / "tb").glob("events.out.tfevents.*"))
    assert mine.read_text() == "mine" and any(e.stat().st_size > 0 for e in events)


def test_resume_of_a_run_whose_config_yaml_was_given_a_base_names_that_key(
    demo_root: Path, tmp_path: Path, capsys
) -> None:
    """A run stopped before its first checkpoint, its config.yaml given a base: by hand: the
    resume said no sef run wrote that file."""
    out = tmp_path / "run"
    out.mkdir()
    save_config(apply_overrides(resolve_config("demo"), [f"run.out={out}"]), out / "config.yaml")
    written = "base: demo\n" + (out / "config.yaml").read_text()
    (out / "config.yaml").write_text(written)
    assert main(["train", "--resume", "--out", str(out), "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"sef train: error: cannot write {out / 'config.yaml'}: it names base: demo, which no sef "
        f"run writes, and this run would replace it; remove that line (a run's config.yaml holds "
        f"every value itself), or choose another --out\n"
    )
    assert (out / "config.yaml").read_text() == written


def test_a_tensorboard_folder_that_cannot_be_written_is_named_in_one_line(
    demo_root: Path, tmp_path: Path, capsys
) -> None:
    # the user read "sef train: error: DIR/tb: file exists", which says neither what nor what to do
    out = tmp_path / "run"
    out.mkdir()
    (out / "tb").write_text("not a folder")
    assert main(["train", *TINY_DEMO, "--out", str(out), "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"sef train: error: cannot write {out / 'tb'}: {out / 'tb'} is a file, not a folder; no "
        f"checkpoint was written; fix that, then run the same command to start it again\n"
    )
    assert main(["train", *TINY_DEMO, "--out", str(out), "--no-progress", "--log", "none"]) == 0


def test_a_run_folder_inside_the_folder_of_own_images_is_refused(
    folder_root: Path, monkeypatch, capsys, files_in
) -> None:
    before = files_in(folder_root)
    monkeypatch.chdir(folder_root)
    arguments = ["train", "--set", "data.dataset=folder", "--data-root", ".", "--epochs", "1"]
    assert main([*arguments, "--workers", "0", "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"sef train: error: the run folder {Path.cwd() / 'runs' / folder_root.name} is inside the "
        f"data root {Path.cwd()}, where it would be read as data; choose an --out outside it\n"
    )
    assert files_in(folder_root) == before
    link = folder_root.parent / "link"  # the data root through a link, the run folder not
    link.symlink_to(folder_root)
    assert main([*arguments[:-3], str(link), "--epochs", "1", "--workers", "0"]) == 2
    assert "is inside the data root" in capsys.readouterr().err


def test_a_run_folder_beside_a_csv_is_fine_the_csv_lists_its_images(csv_root, monkeypatch):
    monkeypatch.chdir(csv_root)
    arguments = ["train", "--set", "data.dataset=csv", "--data-root", ".", "--epochs", "1"]
    tiny = ["--image-size", "32", "--batch-size", "4", "--workers", "0", "--no-progress"]
    assert main([*arguments, *tiny]) == 0
    assert (csv_root / "runs" / csv_root.name / "best.pt").is_file()


def test_sigterm_stops_a_command_as_ctrl_c_does_and_its_handler_before_is_put_back(
    monkeypatch, capsys
) -> None:
    import sef.cli.presets

    monkeypatch.setattr(sef.cli.presets, "run", lambda args: signal.raise_signal(signal.SIGTERM))
    caught: list[int] = []

    def own(number: int, frame) -> None:  # a program's own handler, around sef's
        caught.append(number)

    before = signal.signal(signal.SIGTERM, own)
    try:
        code = main(["presets"])
        restored = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, before)
    assert code == 143 and capsys.readouterr().err == "sef presets: interrupted by SIGTERM\n"
    assert caught == [] and restored is own


@pytest.mark.parametrize(
    "arguments",
    [
        ["train", "--out", ""],
        ["train", "--data-root", " "],
        ["export", "--checkpoint", "best.pt", "--out", ""],
        ["eval", "--checkpoint", ""],
        ["data", "cache", "demo", "--out", ""],
    ],
)
def test_an_empty_path_is_a_usage_error_not_the_default_or_the_current_folder(arguments, capsys):
    with pytest.raises(SystemExit) as exit_code:
        main(arguments)
    assert exit_code.value.code == 2
    assert (
        capsys.readouterr()
        .err.splitlines()[-1]
        .endswith(": an empty path; give a file or folder name")
    )


def test_train_help_gives_the_folder_a_run_of_own_images_goes_to(capsys):
    """The help said runs/<preset>; --preset folder-resnet50 writes runs/<its folder>-resnet50."""
    from sef.config import resolve_config, run_name

    config = resolve_config("folder-resnet50", overrides=["data.root=~/data/birds"])
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"runs/{run_name(config)} for the preset folder-resnet50 on ~/data/birds" in text
