"""DistributedDataParallel on CPU: torchrun, gloo, 2 processes, an odd-sized test set."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from sef.checkpoint import load_checkpoint
from sef.cli import _warnings_as_lines, main
from sef.distributed import Context, is_main_process
from sef.engine import evaluate_checkpoint

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def _train_folder(root: Path, out: Path, *options: str) -> list[str]:
    """`sef train` under torchrun, 2 CPU processes, on the folder data at ``root``, 32 px."""
    return [
        *TORCHRUN, "-m", "sef.cli", "train", "--set", "data.dataset=folder", "--data-root",
        str(root), "--out", str(out), "--image-size", "32", "--workers", "0", "--device", "cpu",
        "--no-progress", *options,
    ]  # fmt: skip


@pytest.mark.slow
def test_torchrun_two_processes_write_once_and_count_every_test_image_once(
    folder_root: Path, tmp_path: Path, write_image
) -> None:
    # 7 test images over 2 processes: a padding sampler would evaluate 8.
    write_image(folder_root / "test" / "fox" / "extra.png", (32, 32), (10, 200, 90))
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_QUIET": "true"}
    env |= {f"WANDB_{name}_DIR": str(tmp_path / name) for name in ("DATA", "CACHE", "CONFIG")}
    env.pop("MLFLOW_TRACKING_URI", None)
    train = subprocess.run(
        _train_folder(
            folder_root, out, "--epochs", "2", "--batch-size", "4",
            "--loggers", "tensorboard", "wandb", "mlflow",  # torchrun would take --log as its own
        ),
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-3000:]
    assert train.stdout.count("run folder") == 1  # only rank 0 prints
    assert train.stdout.count("epoch 2/2") == 1 and "on 2 x cpu" in train.stdout
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]  # only rank 0 writes
    assert len(list((out / "wandb").glob("offline-run-*"))) == 1  # and logs: one W&B run
    assert len((out / "best-test-predictions.csv").read_text().splitlines()) == 1 + 7

    result, dataset = evaluate_checkpoint(out / "last.pt", device="cpu", progress=False)
    assert len(dataset) == result.summary()["images"] == 7
    # The DDP evaluation of the last epoch equals one process evaluating the saved model.
    assert records[-1]["eval_top1"] == result.top1
    assert records[-1]["eval_class_mean"] == result.class_mean
    assert records[-1]["eval_group_top1"] == result.group_top1


@pytest.mark.slow
def test_a_run_every_process_refuses_alike_is_refused_once(folder_root: Path, tmp_path: Path):
    # each process printed the same line: once per GPU under torchrun
    train = subprocess.run(
        _train_folder(folder_root, tmp_path / "ddp", "--batch-size", "5"),
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert train.returncode != 0
    refusal = "sef train: error: optim.batch_size=5 must divide evenly over 2 processes"
    assert train.stderr.count(refusal) == 1, train.stderr[-3000:]
    assert not (tmp_path / "ddp").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "refusal"),
    [
        (["train", "--weights", "missing.pt"], "weights file missing.pt does not exist"),
        (["train", "--set", "data.train_split=test"], "data.eval_split=test shares 6 images"),
        (["eval", "--checkpoint", "config.yaml"], "config.yaml is not a checkpoint"),
    ],
    ids=["model", "data", "checkpoint"],
)
def test_an_error_every_process_meets_alike_is_printed_once(
    folder_root: Path, tmp_path: Path, command: list[str], refusal: str
) -> None:
    # each process read the data, built the model or loaded the checkpoint and printed its error
    (tmp_path / "config.yaml").write_text("a: 1\n")
    if command[0] == "train":
        data = ["--set", "data.dataset=folder", "--data-root", str(folder_root)]
        command = [*command, *data, "--batch-size", "4", "--image-size", "32", "--workers", "0"]
    result = subprocess.run(
        [*TORCHRUN, "-m", "sef.cli", *command, "--device", "cpu", "--no-progress"],
        cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.count(f"sef {command[0]}: error: ") == 1, result.stderr[-3000:]
    assert refusal in result.stderr


@pytest.mark.slow
def test_an_eval_output_rank_zero_refuses_stops_every_process_at_once(
    demo_checkpoint: Path, tmp_path: Path
) -> None:
    # rank 0 refused before the process group; rank 1 waited to join it, deaf to torchrun's
    # SIGTERM, until torchrun killed it 30 s later ("forcefully exiting via 9")
    (tmp_path / "file").write_text("")
    result = subprocess.run(
        [
            *TORCHRUN, "-m", "sef.cli", "eval", "--checkpoint", str(demo_checkpoint),
            "--predictions", str(tmp_path / "file" / "p.csv"), "--device", "cpu",
            "--workers", "0", "--no-progress",
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.count("sef eval: error: cannot write ") == 1, result.stderr[-3000:]
    assert "forcefully" not in result.stderr


@pytest.mark.slow
def test_an_unreadable_image_stops_every_process_with_one_line(folder_root: Path, tmp_path: Path):
    # rank 0 alone checks the images: rank 1, waiting for its answer, died of a gloo traceback
    (folder_root / "train" / "fox" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    train = subprocess.run(
        _train_folder(folder_root, tmp_path / "ddp", "--batch-size", "4"),
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert train.returncode != 0
    assert train.stderr.count("sef train: error: 1 of 19 images cannot be used") == 1
    assert "[rank1]" not in train.stderr, train.stderr[-3000:]


@pytest.mark.slow
def test_a_checkpoint_rank_zero_cannot_write_stops_every_process_with_one_line(
    folder_root: Path, tmp_path: Path
) -> None:
    # rank 0 alone writes: it raised, while rank 1 trained on and died of a gloo traceback
    out = tmp_path / "ddp"
    train = _train_folder(folder_root, out, "--batch-size", "4", "--epochs", "1")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # the first epoch in one process, here (a torchrun costs three fresh processes); its resume
    # on 2 is noted, not refused
    assert main(train[train.index("sef.cli") + 1 :]) == 0
    (out / "best.pt").unlink()  # epoch 1, the best, is written again on resuming: into a folder
    (out / "best.pt" / "mine").mkdir(parents=True)
    resume = subprocess.run(
        [*train, "--resume", "--epochs", "2"], env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert resume.stderr.count(f"sef train: error: cannot write {out / 'best.pt'}") == 1
    assert "[rank1]" not in resume.stderr, resume.stderr[-3000:]


@pytest.mark.slow
def test_a_stop_torchrun_passes_to_every_process_is_said_once_then_resumed(
    folder_root: Path, tmp_path: Path
) -> None:
    # rank 1, which writes no checkpoint, also said "no checkpoint was written; ... start it again"
    out = tmp_path / "ddp"
    train = _train_folder(folder_root, out, "--batch-size", "2")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [*train, "--epochs", "500"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        while not (out / "last.pt").exists():
            assert process.poll() is None, process.communicate()[1][-3000:]
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)  # torchrun sends it on to both processes
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert err.count("sef train: interrupted by SIGTERM") == 1, err[-3000:]
    assert f"{out / 'last.pt'} (epoch " in err and "no checkpoint was written" not in err
    stopped = load_checkpoint(out / "last.pt")["epoch"]

    # what rank 0 alone opens failed there while rank 1 trained on, and died of a gloo traceback
    shutil.rmtree(out / "tb")
    (out / "tb").write_text("not TensorBoard's folder")
    refused = subprocess.run(
        [*train, "--resume"], env=env, capture_output=True, text=True, timeout=300
    )
    assert refused.stderr.count("sef train: error: ") == 1, refused.stderr[-3000:]
    assert "[rank1]" not in refused.stderr
    (out / "tb").unlink()
    resume = subprocess.run(
        [*train, "--resume", "--epochs", str(stopped + 1)], env=env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert resume.returncode == 0, resume.stderr[-3000:]
    assert resume.stdout.count(f"resuming after epoch {stopped}") == 1
    assert "note:" not in resume.stdout  # the same number of processes


# `sef` with rank 0 starting late, as on a busy CPU
RANK_ZERO_LATE = """
import os, sys, time
if os.environ["RANK"] == "0":
    time.sleep(2)
from sef.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("options", "refusal", "late"),
    [
        (["--set", "optim.lr=abc"], "config value optim.lr must be float, got 'abc'", True),
        (["--epochs", "abc"], "argument --epochs: invalid int value: 'abc'", False),  # argparse's
    ],
    ids=["config-rank-zero-late", "usage"],
)
def test_an_error_met_before_the_processes_join_is_printed_once(
    folder_root: Path, tmp_path: Path, options: list[str], refusal: str, late: bool
) -> None:
    # each process printed it; and one that ended at once had torchrun stop a late rank 0 before
    # it said the error ("interrupted by SIGTERM" alone)
    train = _train_folder(folder_root, tmp_path / "ddp", *options)
    if late:
        script = tmp_path / "late.py"
        script.write_text(RANK_ZERO_LATE)
        module = train.index("sef.cli")
        train[module - 1 : module + 1] = [str(script)]
    result = subprocess.run(
        train, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.count(f"sef train: error: {refusal}") == 1, result.stderr[-3000:]
    assert result.stderr.count("sef train: ") == 1 and result.stderr.count("usage:") <= 1


# `sef train` whose loss becomes NaN on rank 1 alone, at the last step of the first epoch (of 3)
POISONING_RANK_ONE = """
import os, sys
from sef.cli import main
from sef.losses import SEFLoss
forward = SEFLoss.forward
calls = []
def poisoned(self, *args, **kwargs):
    terms = forward(self, *args, **kwargs)
    calls.append(1)
    if os.environ["RANK"] == "1" and len(calls) == 3:
        terms["total"] = terms["total"] * float("nan")
    return terms
SEFLoss.forward = poisoned
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("rank_one_alone", [False, True], ids=["every-rank", "rank-one-alone"])
def test_a_loss_that_becomes_nan_stops_every_process_with_one_line(
    folder_root: Path, tmp_path: Path, rank_one_alone: bool
) -> None:
    # every rank said it; one whose loss stayed finite trained on and died of a gloo traceback
    train = _train_folder(folder_root, tmp_path / "ddp", "--batch-size", "4", "--epochs", "2")
    if rank_one_alone:
        script = tmp_path / "poisoning.py"
        script.write_text(POISONING_RANK_ONE)
        module = train.index("sef.cli")  # 6 images a rank: 3 steps
        train[module - 1 : module + 1] = [str(script)]
    else:
        train += ["--set", "optim.lr=1e12"]
    result = subprocess.run(
        train, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.count("sef train: error: training stopped at epoch 1") == 1, result.stderr[
        -3000:
    ]
    assert result.stderr.count("sef train: error: ") == 1 and "the loss became nan" in result.stderr
    assert "[rank0]" not in result.stderr and "[rank1]" not in result.stderr


# `sef train` with each process noting in GENERATED when it generates a demo set
NOTING_GENERATIONS = """
import os, sys
from sef.cli import main
from sef.datasets import demo
write = demo._write_set
def noted(*args, **kwargs):
    with open(os.environ["GENERATED"], "a") as log:
        log.write(os.environ["RANK"] + "\\n")
    write(*args, **kwargs)
demo._write_set = noted
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_the_demo_set_a_torchrun_run_uses_first_is_generated_by_rank_zero_alone(
    demo_root: Path, tmp_path: Path
) -> None:
    # each process generated the set at once, the work done twice (and the CPU shared)
    script, log = tmp_path / "noting.py", tmp_path / "generated"
    script.write_text(NOTING_GENERATIONS)
    train = subprocess.run(
        [
            *TORCHRUN, str(script), "train", "--set", "data.options.per_class=2",
            "--set", "data.options.test_per_class=2", "--image-size", "32", "--epochs", "1",
            "--batch-size", "4", "--workers", "0", "--device", "cpu", "--no-progress",
            "--out", str(tmp_path / "ddp"),
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1", "GENERATED": str(log)},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-3000:]
    assert log.read_text() == "0\n"  # rank 1 found it


def test_the_main_process_is_rank_zero_as_the_launcher_numbered_it(monkeypatch) -> None:
    monkeypatch.setenv("RANK", "1")
    assert not is_main_process()
    monkeypatch.setenv("RANK", "0")
    assert is_main_process()
    monkeypatch.delenv("RANK")
    assert is_main_process()  # not launched by torchrun


@pytest.mark.parametrize(
    ("command", "said"),
    [
        (["predict", "--checkpoint", "last.pt", "a.png"], "predict"),
        (["data", "caches"], "data caches"),
    ],
    ids=["predict", "data"],
)
def test_a_command_that_runs_in_one_process_is_refused_under_torchrun(
    monkeypatch, capsys, command: list[str], said: str
) -> None:
    # each of torchrun's processes did the whole work: predict's table printed once per process
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(command) == 2
    assert capsys.readouterr().err == (
        f"sef {said}: error: {said} runs in one process and torchrun started 2, each of which "
        f"would do all of its work: run it without torchrun (train, eval and reproduce share "
        f"their work over torchrun's processes)\n"
    )


def test_an_eval_whose_peer_was_killed_says_so_in_one_line(
    demo_checkpoint: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    # the survivor of a torchrun whose other process was killed died of gloo's traceback
    def peer_killed(*args, **kwargs):
        raise RuntimeError(
            "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection "
            "closed by peer [127.0.0.1]:1448"
        )

    monkeypatch.setattr("sef.engine.evaluate_checkpoint", peer_killed)
    command = ["eval", "--checkpoint", str(demo_checkpoint), "--device", "cpu"]
    assert main([*command, "--predictions", str(tmp_path / "p.csv")]) == 2
    assert capsys.readouterr().err == (
        "sef eval: error: another of torchrun's processes ended while this one waited for it: "
        "torchrun's report below names it and its exit code (-9: killed, most often by the "
        "system as memory ran out)\n"
    )


@pytest.mark.parametrize(("rank", "said"), [("0", "sef train: warning: a note\n"), ("1", "")])
def test_under_torchrun_rank_zero_alone_says_a_warning(monkeypatch, capsys, rank, said) -> None:
    # every process read the data and said its warnings: each line once per process
    monkeypatch.setenv("RANK", rank)
    with _warnings_as_lines("train"), warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a note", stacklevel=1)
    assert capsys.readouterr().err == said


def test_sef_eval_under_torchrun_takes_each_process_its_share_of_the_runs_batch(
    demo_checkpoint: Path, monkeypatch
) -> None:
    # each process evaluated the run's whole batch of 32, where its training and its evaluation
    # every epoch took 16 on each (docs: the batch defaults to the training micro-batch)
    batches = []

    def recording(model, dataset, *, batch_size, **options):
        batches.append(batch_size)
        raise InterruptedError  # what evaluating the shards would need: a process group

    monkeypatch.setattr("sef.distributed.setup", lambda device: Context(world_size=2))
    monkeypatch.setattr("sef.distributed.on_every", lambda compute, *args, **kwargs: compute())
    monkeypatch.setattr("sef.engine.evaluation.evaluate", recording)
    with pytest.raises(InterruptedError):
        evaluate_checkpoint(demo_checkpoint, device="cpu", progress=False)
    assert batches == [16]
