"""The training engine on tiny in-memory data: outputs, evaluation, schedules, failures."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import random
import signal
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

import sef
from sef import transforms
from sef.checkpoint import load_checkpoint, save_checkpoint
from sef.config import apply_overrides, config_to_dict, load_config_file, resolve_config
from sef.datasets.images import UnreadableImage
from sef.distributed import Context
from sef.engine import (
    CHECK_EVERY,
    Data,
    EvalResult,
    FitResult,
    evaluate,
    fit,
    load_data,
    train_one_epoch,
)
from sef.engine.data import worker_death
from sef.engine.evaluation import UNTRAINED_HEADS, evaluation_loader
from sef.engine.folders import check_config_file, claim_new_out_dir, latest_run_dir
from sef.engine.loop import _forward
from sef.engine.run import (
    TRAINING_STATE,
    _check_out_dir,
    _check_out_is_text,
    _check_resumable,
    _check_setup,
    _finished_note,
    _one_image_note,
    _one_step_note,
    _processes_note,
    _unloaded_tag_note,
    resume_config,
    resume_dir,
    scratch_note,
    separation_lines,
    tuned_backends,
)
from sef.errors import ConfigError, DataError, TrainingError, said_to_command
from sef.losses import SEFLoss
from sef.model import SEF
from sef.seeding import seed_everything
from sef.trained import create_model


class Blobs(Dataset):
    """Learnable tiny images: class k brightens colour channel k. ``poison_after`` items are
    followed by NaN images (to make the loss non-finite on purpose)."""

    classes = ["red", "green", "blue"]

    def __init__(self, count: int, seed: int, poison_after: int | None = None) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(count) % 3
        self.images = 0.5 * torch.randn(count, 3, 32, 32, generator=generator)
        self.images[torch.arange(count), self.labels] += 1.5
        self.poison_after, self.served = poison_after, 0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        self.served += 1
        if self.poison_after is not None and self.served > self.poison_after:
            return torch.full((3, 32, 32), float("nan")), int(self.labels[index])
        return self.images[index], int(self.labels[index])


def _config(out: Path, *overrides: str, preset: str = "demo"):
    base = ["optim.batch_size=4", "optim.epochs=2", "data.workers=0", f"run.out={out}"]
    return apply_overrides(resolve_config(preset), base + list(overrides))


def test_fit_writes_the_run_folder_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = _config(out, "optim.step_size=1", "optim.lr_decay=0.5", "optim.lr=0.02")
    data = Data(Blobs(12, 0), Blobs(7, 1), Blobs.classes)
    result = fit(config, data=data, progress=False)

    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and lines == result.history
    assert [r["lr"] for r in lines] == pytest.approx([0.02, 0.01])  # StepLR x0.5 every epoch
    for record in lines:
        terms = sum(record[f"loss_{k}"] for k in ("ce", "entropy", "distill", "group"))
        assert record["loss_total"] == pytest.approx(terms)
        assert len(record["eval_group_top1"]) == 2 and 0 <= record["eval_top1"] <= 1
        assert record["loss_entropy"] <= 0 and record["seconds"] > 0
    best = max(lines, key=lambda r: r["eval_top1"])
    assert (result.best_top1, result.best_epoch) == (best["eval_top1"], best["epoch"])
    assert result.extra_parameters == 2 * 3 + 128 * 3  # small_cnn: C*K weights + G*K biases

    last = load_checkpoint(out / "last.pt")
    assert last["epoch"] == 2 and last["classes"] == Blobs.classes and last["optimizer"]["state"]
    assert load_checkpoint(out / "best.pt")["epoch"] == result.best_epoch
    assert config_to_dict(load_config_file(out / "config.yaml")) == last["config"]
    assert last["config"]["run"]["out"] == str(out)
    assert any(p.name.startswith("events") for p in (out / "tb").iterdir())
    assert str(out) in result.report() and "group heads" in result.report()

    with pytest.raises(
        ConfigError, match="run; pass resume=True to continue it or choose another run.out$"
    ):
        fit(config, data=data, progress=False)
    changed = apply_overrides(config, ["loss.gamma=0.1"])
    with pytest.raises(ConfigError, match="loss.gamma was 0.05 and is now 0.1"):
        fit(changed, data=data, resume=True, progress=False)


def test_evaluate_counts_each_image_once_like_a_per_image_loop() -> None:
    torch.manual_seed(0)
    model = SEF("resnet18", num_classes=3, groups=2).eval()
    data = Blobs(7, 3)
    result = evaluate(model, data, batch_size=3, progress=False)
    with torch.no_grad():
        outputs = [model.forward_sef(data[i][0][None]) for i in range(len(data))]
    predictions = torch.tensor([o.logits.argmax(1).item() for o in outputs])
    groups = torch.stack([o.group_logits.argmax(2)[:, 0] for o in outputs], dim=1)
    assert torch.equal(result.labels, data.labels) and torch.equal(result.predictions, predictions)
    assert torch.equal(result.group_predictions, groups)
    correct = (predictions == data.labels).float()
    per_class = [correct[data.labels == k].mean().item() for k in range(3)]
    assert result.top1 == pytest.approx(correct.mean().item())
    assert result.class_mean == pytest.approx(sum(per_class) / 3)
    assert result.summary()["images"] == 7


class Marked(Blobs):
    """Blobs that leave the id of each process loading them in ``folder``."""

    def __init__(self, count: int, seed: int, folder: Path) -> None:
        super().__init__(count, seed)
        self.folder = folder
        folder.mkdir()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        (self.folder / str(os.getpid())).touch()
        return super().__getitem__(index)


def test_a_run_starts_its_evaluation_workers_once_not_every_epoch(tmp_path: Path) -> None:
    """Forking loader workers from the training process at each evaluation pass costs more the
    larger that process is (docs/performance.md); fit keeps one evaluation loader's workers."""
    train, evaluation = Marked(8, 0, tmp_path / "train"), Marked(6, 1, tmp_path / "eval")
    config = _config(tmp_path / "run", "optim.epochs=3", "data.workers=1", "run.tensorboard=false")
    result = fit(config, data=Data(train, evaluation, Blobs.classes), progress=False)
    assert len(result.history) == 3
    for folder in (train.folder, evaluation.folder):
        loaders = [int(p.name) for p in folder.iterdir()]
        assert len(loaders) == 1 and loaders != [os.getpid()]


def test_evaluate_reads_a_loader_that_keeps_its_workers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = SEF("resnet18", num_classes=3, groups=2).eval()
    data = Marked(7, 3, tmp_path / "eval")
    expected = evaluate(model, data, batch_size=3, progress=False)
    (pid,) = [p.name for p in data.folder.iterdir()]
    assert pid == str(os.getpid())  # no workers: loaded here
    (data.folder / pid).unlink()
    loader = evaluation_loader(data, 2, 1, Context(), persistent=True)
    for _ in range(2):
        result = evaluate(model, loader, progress=False)
        assert torch.equal(result.predictions, expected.predictions)
        assert torch.equal(result.labels, expected.labels)
    assert len(list(data.folder.iterdir())) == 1


class Pixels(Dataset):
    """Blobs as 8-bit pixels: uint8 images, or the same images already normalised."""

    classes = Blobs.classes

    def __init__(self, count: int, seed: int, normalised: bool) -> None:
        blobs = Blobs(count, seed)
        self.labels = blobs.labels
        self.pixels = (blobs.images * 60 + 100).clamp(0, 255).to(torch.uint8)
        self.normalised = normalised

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.pixels[index]
        if self.normalised:
            image = transforms.test_transform("resize", 32)(image)  # per image, as before
        return image, int(self.labels[index])


def test_uint8_batches_train_and_evaluate_exactly_as_normalised_ones(tmp_path: Path) -> None:
    """The engine normalises uint8 batches on the device (what sef train's loaders yield):
    a run on them ends with the same weights and predictions as a run on float images."""
    runs = []
    for normalised in (True, False):
        data = Data(Pixels(8, 0, normalised), Pixels(6, 1, normalised), Pixels.classes)
        out = tmp_path / f"normalised-{normalised}"
        result = fit(_config(out, "run.tensorboard=false"), data=data, progress=False)
        runs.append((load_checkpoint(out / "last.pt")["model"], result.last))
    (floats, float_record), (uint8s, uint8_record) = runs
    assert floats.keys() == uint8s.keys()
    assert all(torch.equal(floats[key], uint8s[key]) for key in floats)
    same = ("loss_total", "train_top1", "eval_top1", "eval_group_top1")
    assert [float_record[k] for k in same] == [uint8_record[k] for k in same]
    assert Pixels(1, 0, normalised=False)[0][0].dtype == torch.uint8


@pytest.mark.parametrize(("device", "dtype"), [("cpu", torch.float32), ("cuda", torch.uint8)])
def test_loaders_leave_normalising_to_a_gpu_but_not_to_the_cpu(demo_root, device, dtype):
    config = _config(
        demo_root / "run", "data.options.per_class=4", "data.options.test_per_class=2",
        "data.image_size=32",
    )  # fmt: skip
    data = load_data(config, Context(device=torch.device(device)), progress=False)
    (train_image, _), (eval_image, _) = data.train[0], data.eval[0]
    assert train_image.dtype == eval_image.dtype == dtype
    assert train_image.shape == eval_image.shape == (3, 32, 32)


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    data = Data(Blobs(8, 0, poison_after=8 + 5), Blobs(3, 1), Blobs.classes)
    with pytest.raises(TrainingError) as info:
        fit(_config(out), data=data, progress=False)
    message = str(info.value)
    assert "epoch 2, step 2" in message and f"{out / 'last.pt'} (epoch 1) is kept" in message
    assert "the features are non-finite" in message
    kept = load_checkpoint(out / "last.pt")
    assert kept["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


class FailsInItsWorker(Blobs):
    """Blobs whose loader worker, once it has served ``after`` items, is killed (``how``), meets
    an image gone since the run's check (a DataError) or one damaged since (as
    sef.datasets.images says it)."""

    def __init__(self, count: int, seed: int, after: int, how: str) -> None:
        super().__init__(count, seed)
        self.after, self.how = after, how

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        item = super().__getitem__(index)
        if self.served <= self.after or torch.utils.data.get_worker_info() is None:
            return item
        if self.how == "killed":  # as the system's out-of-memory killer ends it
            os.kill(os.getpid(), signal.SIGKILL)
        if self.how == "damaged":
            raise UnreadableImage(
                f"image x.png cannot be decoded (truncated); replace it, or {SKIP}"
            )
        raise DataError("image x.png is listed by the dataset but missing; restore it")


SKIP = "leave it out (sef train: --set data.bad_images=skip)"


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="kills a loader worker")
@pytest.mark.parametrize(
    ("how", "error", "said"),
    [
        ("killed", TrainingError, ", which is most often the system ending it as memory ran "
         "out (fewer data.workers take less)"),
        ("missing", DataError, "image x.png is listed by the dataset but missing; restore it"),
        ("damaged", DataError, "image x.png cannot be decoded (truncated); replace it"),
    ],
    ids=["killed", "missing", "damaged"],
)  # fmt: skip
def test_a_loader_worker_that_fails_mid_run_is_one_line_saying_what_is_kept(
    tmp_path: Path, how: str, error: type, said: str
) -> None:
    """A killed worker was torch's traceback; an image gone mid-run said nothing of last.pt; one
    damaged mid-run was offered the skip with --resume, which a resume refuses (it keeps
    data.bad_images). The loaders' other workers end with the run, not when its traceback, which
    ``info`` holds as a notebook holds the last one, is collected."""
    out = tmp_path / "run"
    data = Data(FailsInItsWorker(8, 0, after=8 + 2, how=how), Blobs(3, 1), Blobs.classes)
    with pytest.raises(error) as info:
        fit(_config(out, "data.workers=1"), data=data, progress=False)
    resume = f"{out / 'last.pt'} (epoch 1) is kept; then call fit(config, resume=True)"
    if how == "damaged":
        assert str(info.value) == (
            f"{said}; {resume} to continue (a resume keeps data.bad_images; to skip it, train a "
            f"new run with data.bad_images=skip and another run.out)"
        )
    else:
        assert str(info.value).endswith(f"{said}; {resume} to continue")
    assert multiprocessing.active_children() == []


class LosesItsPeer(Blobs):
    """Blobs whose ``after``-th item fails as a gloo collective does when another of torchrun's
    processes has been killed."""

    def __init__(self, count: int, seed: int, after: int) -> None:
        super().__init__(count, seed)
        self.after = after

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self.served == self.after:
            raise RuntimeError(
                "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] "
                "Connection closed by peer [127.0.0.1]:1448"
            )
        return super().__getitem__(index)


def test_a_process_whose_peer_was_killed_says_so_in_one_line_with_what_is_kept(tmp_path) -> None:
    # the survivor of a torchrun whose other process was killed died of gloo's traceback
    out = tmp_path / "run"
    data = Data(LosesItsPeer(8, 0, after=8 + 2), Blobs(3, 1), Blobs.classes)
    with pytest.raises(TrainingError) as info:
        fit(_config(out), data=data, progress=False)
    assert str(info.value) == (
        "another of torchrun's processes ended while this one waited for it: torchrun's report "
        "below names it and its exit code (-9: killed, most often by the system as memory ran "
        f"out); {out / 'last.pt'} (epoch 1) is kept; call fit(config, resume=True) to continue"
    )


def test_a_dead_loader_worker_is_said_with_its_likely_cause_and_other_errors_are_not() -> None:
    def said(message: str) -> str | None:
        with said_to_command():  # the `sef` command's user sets --workers
            return worker_death(RuntimeError(message))

    assert said(
        "DataLoader worker (pid 7) is killed by signal: Bus error. It is possible that "
        "dataloader's workers are out of shared memory. Please try to raise your shared memory "
        "limit."
    ) == (
        "a data loader worker (pid 7) was killed by signal: Bus error, which is most often the "
        "shared memory its batches pass through (/dev/shm) filling up (raise its size, e.g. "
        "docker run --shm-size, or use fewer --workers)"
    )
    assert said(
        "DataLoader worker (pid 7) exited unexpectedly with exit code 1. Details are lost due to "
        "multiprocessing. Rerunning with num_workers=0 may give better error trace."
    ) == (
        "a data loader worker (pid 7) exited unexpectedly with exit code 1 (--workers 0 loads in "
        "the training process and shows what it meets)"
    )
    killed = "a data loader worker (pid 7) was killed by signal: Killed, which is most often"
    assert said("DataLoader worker (pid 7) is killed by signal: Killed. ").startswith(killed)
    assert said(  # a full /dev/shm was torch's traceback
        "Caught RuntimeError in DataLoader worker process 0.\nOriginal Traceback (most recent "
        "call last):\n  ...\nRuntimeError: unable to allocate shared memory(shm) for file "
        "</torch_7_1_0>: No space left on device (28)\n"
    ) == (
        "a data loader worker could not hand over a batch: the shared memory its batches pass "
        "through (/dev/shm) is full (raise its size, e.g. docker run --shm-size, or use fewer "
        "--workers)"
    )
    assert said("CUDA error: an illegal memory access was encountered") is None
    assert worker_death(EOFError()) is None  # no worker of this process has died


def test_a_dead_loader_worker_is_said_to_python_code_with_data_workers() -> None:
    """fit called from Python said the command's --workers."""
    assert worker_death(
        RuntimeError("DataLoader worker (pid 7) exited unexpectedly with exit")
    ) == (
        "a data loader worker (pid 7) exited unexpectedly with exit (data.workers=0 loads in the "
        "training process and shows what it meets)"
    )
    assert worker_death(
        RuntimeError("DataLoader worker (pid 7) is killed by signal: Bus error. ")
    ) == (
        "a data loader worker (pid 7) was killed by signal: Bus error, which is most often the "
        "shared memory its batches pass through (/dev/shm) filling up (raise its size, e.g. "
        "docker run --shm-size, or use fewer data.workers)"
    )


def test_an_evaluation_that_is_not_finite_stops_the_run_keeping_the_last_checkpoint(
    tmp_path: Path,
) -> None:
    """A model whose outputs had overflowed predicted class 0 for every image (NaN's argmax):
    the run went on, epoch after epoch, at chance accuracy."""
    out = tmp_path / "run"
    data = Data(Blobs(8, 0), Blobs(3, 1, poison_after=3), Blobs.classes)  # NaN from epoch 2
    with pytest.raises(TrainingError) as info:
        fit(_config(out), data=data, progress=False)
    assert str(info.value) == (
        f"training stopped after epoch 2: the model's outputs are not finite (NaN or infinite) "
        f"on 3 of 3 eval images, so its accuracy means nothing: its weights or BatchNorm "
        f"statistics overflowed in training; {out / 'last.pt'} (epoch 1) is kept; try a lower "
        f"optim.lr or run.amp=none"
    )
    assert load_checkpoint(out / "last.pt")["epoch"] == 1


def test_out_dir_never_overwrites_a_run(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = resolve_config("demo")
    with claim_new_out_dir(config) as lock:
        assert lock.folder == Path("runs/demo")
    for name in ("demo", "demo-2"):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "last.pt").touch()
    with claim_new_out_dir(config) as lock:
        assert lock.folder == Path("runs/demo-3")
    assert latest_run_dir(config) == Path("runs/demo-2")
    assert resume_dir(config) == Path("runs/demo-2")
    explicit = apply_overrides(config, ["run.out=runs/demo"])
    with pytest.raises(ConfigError, match="runs/demo already holds a run"):
        claim_new_out_dir(explicit)
    missing = apply_overrides(config, ["run.out=elsewhere"])
    with pytest.raises(
        ConfigError, match="cannot resume: elsewhere does not exist; check run.out$"
    ):
        resume_dir(missing)


def test_a_resume_that_cannot_start_names_what_its_caller_sets(tmp_path: Path, monkeypatch):
    """fit(config, resume=True) was told to check --out, pass --out DIR, train without --resume
    or with another --out: options of the command, which Python code does not pass."""
    monkeypatch.chdir(tmp_path)
    config = resolve_config("demo")
    with pytest.raises(
        ConfigError, match="this preset; pass run.out=DIR to resume the run in DIR$"
    ):
        resume_dir(config)
    (tmp_path / "empty").mkdir()
    empty = apply_overrides(config, ["run.out=empty"])
    with pytest.raises(ConfigError, match="check run.out, or train without resume=True to start"):
        resume_dir(empty)
    with said_to_command(), pytest.raises(ConfigError, match="check --out, or train without --r"):
        resume_dir(empty)
    (tmp_path / "empty" / "best.pt").touch()
    with pytest.raises(ConfigError, match="or train a new run with another run.out$"):
        resume_dir(empty)


def test_a_timm_tag_left_unloaded_by_null_weights_is_noted_when_a_run_starts() -> None:
    """timm:ARCH.TAG names pretrained weights, yet with model.weights null (the demo's) the run
    trained from random weights and said nothing."""

    def note(*changes: str, epoch: int = 0) -> str | None:
        return _unloaded_tag_note(
            SimpleNamespace(config=resolve_config("demo", overrides=changes), epoch=epoch)
        )

    tagged = "model.backbone=timm:resnet18.a1_in1k"
    assert note(tagged) == (
        "note: timm:resnet18.a1_in1k names timm's pretrained weights 'a1_in1k', but "
        "model.weights is null: the backbone starts from random weights; set model.weights to "
        "DEFAULT to load them"
    )
    with said_to_command():  # the command's user is given the option too
        assert note(tagged).endswith("to DEFAULT (--weights DEFAULT) to load them")
    assert note(tagged, epoch=1) is None  # a resume: said when it started
    assert note(tagged, "model.weights=DEFAULT") is None
    assert note("model.backbone=timm:resnet18") is None and note() is None


def test_a_finished_run_says_how_its_caller_trains_it_further(tmp_path: Path) -> None:
    """fit(config, resume=True) was told to resume with --epochs above 2."""
    run = SimpleNamespace(
        config=resolve_config("demo", overrides=["optim.epochs=2"]), epoch=2, out=tmp_path
    )
    more = "; to train more, set optim.epochs above 2, then call fit(config, resume=True) to "
    assert _finished_note(run).endswith(f"{more}continue")
    with said_to_command():
        assert _finished_note(run).endswith("; to train more, resume with --epochs above 2")


def test_a_resume_continues_the_folder_it_found_not_where_the_run_was_saved(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the run was trained at /elsewhere/demo, then copied here
    saved = apply_overrides(resolve_config("demo"), [f"run.out={tmp_path / 'elsewhere' / 'demo'}"])
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    state = {"model": {}, "config": config_to_dict(saved), "classes": [], "epoch": 1, "metrics": {}}
    save_checkpoint(tmp_path / "runs" / "demo" / "last.pt", state)
    assert resume_config(resolve_config("demo")).run.out == "runs/demo"


def test_groups_larger_than_channels_fail_before_training(tmp_path: Path) -> None:
    config = _config(tmp_path / "run", "model.groups=600")
    with pytest.raises(ConfigError, match="model.groups=600 cannot be built.*128 feature"):
        fit(config, data=Data(Blobs(4, 0), Blobs(3, 1), Blobs.classes), progress=False)
    assert not (tmp_path / "run").exists()


def test_an_empty_eval_dataset_given_to_fit_is_refused_not_reported_as_nan(tmp_path: Path) -> None:
    config = _config(tmp_path / "run", "optim.epochs=1")
    with pytest.raises(DataError, match="the eval dataset given to fit holds no images"):
        fit(config, data=Data(Blobs(4, 0), Blobs(0, 1), Blobs.classes), progress=False)
    assert not (tmp_path / "run").exists()


def test_fp16_on_cpu_is_refused_in_one_line(tmp_path: Path) -> None:
    config = _config(tmp_path / "run", "run.amp=fp16", "run.device=cpu")
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU; use run.amp=bf16 or none on"):
        fit(config, data=Data(Blobs(4, 0), Blobs(3, 1), Blobs.classes), progress=False)
    with said_to_command(), pytest.raises(ConfigError, match="GPU; use --amp bf16 or none on CPU"):
        _check_setup(config, Context())


def test_a_run_folder_refused_names_run_out_to_python_and_out_to_the_command(
    folder_root: Path, tmp_path: Path
) -> None:
    """fit(config) was told to choose an --out, and to --set run.tensorboard=false."""
    inside = apply_overrides(
        resolve_config("folder-resnet18"), [f"data.root={folder_root}", f"run.out={folder_root}/r"]
    )
    latin1 = os.fsdecode(bytes(tmp_path) + b"/r\xe9")  # not UTF-8: a surrogate in its str
    latin1 = apply_overrides(inside, [f"run.out={latin1}"])
    with pytest.raises(ConfigError, match="data; set run.out to a folder outside it$"):
        _check_out_dir(inside)
    with pytest.raises(ConfigError, match="^run.out=.*or run.tensorboard=false$"):
        _check_out_is_text(latin1)
    with said_to_command():
        with pytest.raises(ConfigError, match="data; choose an --out outside it$"):
            _check_out_dir(inside)
        with pytest.raises(ConfigError, match="^--out .*or --set run.tensorboard=false$"):
            _check_out_is_text(latin1)


def test_bf16_channels_last_plain_run_leaves_untrained_group_heads_untouched(
    tmp_path: Path, capsys
) -> None:
    """...and says so where it reported their chance-level top-1 as if it were a result."""
    out = tmp_path / "run"
    extra = ["optim.epochs=1", "run.amp=bf16", "run.channels_last=true", "run.tensorboard=false"]
    config = _config(out, *extra, preset="demo-plain")
    result = fit(config, data=Data(Blobs(8, 0), Blobs(3, 1), Blobs.classes), progress=False)
    assert "  groups [untrained]  " in capsys.readouterr().out  # the epoch line
    assert f"group heads top-1 {UNTRAINED_HEADS}\n" in result.report()
    assert result.last["eval_group_top1"]  # metrics.jsonl keeps the numbers
    seed_everything(config.run.seed)
    initial = create_model(config, 3).state_dict()
    trained = load_checkpoint(out / "last.pt")["model"]
    assert torch.equal(trained["group_heads.0.weight"], initial["group_heads.0.weight"])
    assert not torch.equal(trained["head.weight"], initial["head.weight"])
    assert not (out / "tb").exists()


def test_a_run_is_the_same_with_any_number_of_loader_workers(demo_root, tmp_path) -> None:
    """Random crops and flips are drawn per image (sef.seeding), not per worker process."""
    tiny = ["data.options.per_class=4", "data.options.test_per_class=2", "data.image_size=32"]
    runs = []
    for workers in (0, 2):
        out = tmp_path / f"workers-{workers}"
        config = _config(out, *tiny, f"data.workers={workers}", "run.tensorboard=false")
        runs.append((fit(config, progress=False), load_checkpoint(out / "last.pt")["model"]))
    (serial, serial_weights), (parallel, parallel_weights) = runs
    timing = ("seconds", "images_per_second")
    for a, b in zip(serial.history, parallel.history, strict=True):
        assert {k: v for k, v in a.items() if k not in timing} == {
            k: v for k, v in b.items() if k not in timing
        }
    assert all(torch.equal(serial_weights[k], parallel_weights[k]) for k in serial_weights)


@pytest.mark.slow
def test_compiled_run_trains_and_saves_the_plain_model_weights(tmp_path: Path) -> None:
    """run.compile wraps the model in torch.compile (~25 s to build here); the checkpoint
    still holds the SEF's own weight names, so eval, export and resume read it as any other."""
    out = tmp_path / "run"
    data = Data(Blobs(8, 0), Blobs(3, 1), Blobs.classes)
    config = _config(out, "optim.epochs=1", "run.compile=true", "run.tensorboard=false")
    fit(config, data=data, progress=False)
    seed_everything(config.run.seed)
    initial = create_model(config, 3).state_dict()
    trained = load_checkpoint(out / "last.pt")["model"]
    assert trained.keys() == initial.keys()
    assert not torch.equal(trained["head.weight"], initial["head.weight"])


def test_cudnn_picks_its_fastest_kernels_only_for_cuda_runs_and_only_for_the_run(
    monkeypatch,
) -> None:
    """fit left cudnn.benchmark on for the caller's later code, a notebook's next cells."""
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    with tuned_backends(torch.device("cpu")):
        assert torch.backends.cudnn.benchmark is False
    with pytest.raises(KeyboardInterrupt), tuned_backends(torch.device("cuda", 0)):  # no GPU used
        assert torch.backends.cudnn.benchmark is True
        raise KeyboardInterrupt  # a stopped run
    assert torch.backends.cudnn.benchmark is False


def _draws() -> tuple:
    return random.random(), float(np.random.random()), float(torch.rand(1))


def test_fit_leaves_the_callers_random_generators_as_it_found_them(tmp_path: Path) -> None:
    """fit seeds Python, NumPy and torch for its run: a notebook's later draws were then the
    same after every fit, whatever the notebook had seeded."""
    data = Data(Blobs(4, 0), Blobs(3, 1), Blobs.classes)
    configs = (
        _config(tmp_path / "run", "optim.epochs=1", "run.tensorboard=false"),
        _config(tmp_path / "failed", "model.groups=600"),  # fails after seeding the model
    )
    for config in configs:
        seed_everything(123)
        expected = _draws()
        seed_everything(123)
        with contextlib.suppress(ConfigError):
            fit(config, data=data, progress=False)
        assert _draws() == expected


SEF_SOURCE = Path(sef.__file__).parent


def test_no_step_waits_for_the_device_only_every_tenth_reads_back(monkeypatch) -> None:
    """Reading a value back (item, tolist, bool) makes the host wait for a GPU; the loop does it
    every CHECK_EVERY steps and at the end, never per step (gpu_syncs.py counts it on CUDA)."""
    torch.manual_seed(0)
    model = SEF("small_cnn", 3, groups=2)
    loss_fn = SEFLoss(2, phi=0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loader = torch.utils.data.DataLoader(Blobs(2 * 25, 0), batch_size=2)  # 25 steps
    reads = []
    for name in ("item", "tolist", "__bool__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name):
            caller = Path(sys._getframe(1).f_code.co_filename)
            if caller.is_relative_to(SEF_SOURCE):  # not the DataLoader's seed, say
                reads.append(f"{_name} in {sys._getframe(1).f_code.co_name}")
            return _original(self, *args)

        monkeypatch.setattr(torch.Tensor, name, counted)
    record = train_one_epoch(
        model, loss_fn, loader, optimizer,
        context=Context(device=torch.device("cpu")), epoch=1, progress=False,
    )  # fmt: skip
    assert CHECK_EVERY == 10
    # steps 10, 20 and 25, then the epoch's record
    assert reads == ["tolist in train_one_epoch"] * 3 + ["tolist in _epoch_record"]
    assert record["loss_total"] == pytest.approx(
        record["loss_ce"] + record["loss_entropy"] + record["loss_distill"] + record["loss_group"]
    )


def _without_timing(history: list[dict]) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k not in ("seconds", "images_per_second")} for r in history
    ]


def test_one_hot_soft_targets_train_an_epoch_exactly_as_their_class_indices() -> None:
    """Soft targets [B, K] (a loader with mixup) count B images, not B * K, and the top-1
    counts each row's likeliest class."""
    blobs = Blobs(8, 0)
    records = []
    for labels in (blobs.labels, torch.nn.functional.one_hot(blobs.labels, 3).float()):
        torch.manual_seed(0)
        model = SEF("small_cnn", 3, groups=2)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(blobs.images, labels), batch_size=4
        )
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        record = train_one_epoch(
            model, SEFLoss(2, phi=0.1), loader, optimizer,
            context=Context(device=torch.device("cpu")), epoch=1, progress=False, accumulate=2,
        )  # fmt: skip
        records.append(record)
    assert _without_timing(records[1:]) == _without_timing(records[:1])


@pytest.mark.parametrize("scheduler", ["step", "cosine"])
def test_resuming_with_more_epochs_follows_a_run_planned_that_long(
    scheduler: str, tmp_path: Path
) -> None:
    """A finished 2-epoch run extended to 4 continues with the learning rate a 4-epoch run has
    at epochs 3 and 4; a step schedule is then the 4-epoch run itself, weights and all."""
    data = Data(Blobs(12, 0), Blobs(7, 1), Blobs.classes)
    schedule = [f"optim.scheduler={scheduler}", "optim.step_size=2", "optim.lr_decay=0.5"]
    short = _config(tmp_path / "extended", *schedule)
    fit(short, data=data, progress=False)
    longer = apply_overrides(short, ["optim.epochs=4"])
    extended = fit(longer, data=data, resume=True, progress=False)
    planned_config = _config(tmp_path / "planned", *schedule, "optim.epochs=4")
    planned = fit(planned_config, data=data, progress=False)

    lrs = [record["lr"] for record in extended.history]
    planned_lrs = [record["lr"] for record in planned.history]
    assert [r["epoch"] for r in extended.history] == [1, 2, 3, 4]
    assert lrs[2:] == planned_lrs[2:]  # exactly, not approximately
    if scheduler == "cosine":  # the first two epochs followed the 2-epoch cosine
        assert lrs[:2] == pytest.approx([0.02, 0.01])
        assert planned_lrs[:2] == pytest.approx([0.02, 0.01 * (1 + 0.5**0.5)])
    else:  # StepLR does not depend on the length: the extended run is the planned one
        assert _without_timing(extended.history) == _without_timing(planned.history)
        final = load_checkpoint(tmp_path / "extended" / "last.pt")["model"]
        for key, value in load_checkpoint(tmp_path / "planned" / "last.pt")["model"].items():
            assert torch.equal(final[key], value), key
    assert load_checkpoint(tmp_path / "extended" / "last.pt")["config"]["optim"]["epochs"] == 4

    shorter = apply_overrides(short, ["optim.epochs=3"])
    with pytest.raises(
        ConfigError, match="for 3 epochs: it has trained 4 already; pass optim.epochs=4 or more$"
    ):
        fit(shorter, data=data, resume=True, progress=False)


def test_each_epoch_replaces_metrics_jsonl_whole_so_no_reader_sees_half_a_line(tmp_path):
    """A reader that opened metrics.jsonl before an epoch keeps complete lines: the file is
    replaced (written aside, then renamed), never appended to in place."""
    from sef.engine.log import Logger

    def record(epoch: int) -> dict:
        terms = ("loss_total", "train_top1", "eval_top1", "eval_class_mean", "seconds")
        return {"epoch": epoch, "lr": 0.1, "images_per_second": 1.0, "eval_group_top1": [0.5]} | {
            key: 0.5 for key in terms
        }

    config = _config(tmp_path, "run.tensorboard=false")
    logger = Logger(tmp_path, config, [record(1)], start_epoch=1)
    with open(tmp_path / "metrics.jsonl", encoding="utf-8") as before:
        logger.epoch(record(2), epochs=3)
        assert [json.loads(line)["epoch"] for line in before] == [1]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    logger.close()


@pytest.fixture
def event_files_in_order(monkeypatch) -> None:
    """TensorBoard's event files of one process, made in one second, sorted in the order made:
    their names end in a per-process counter, so a 10th after a 9th sorted first (other tests'
    writers in the same worker set the count) and TensorBoard read the later session first."""
    from tensorboard.summary.writer import event_file_writer

    monkeypatch.setattr(event_file_writer, "_global_uid", event_file_writer.AtomicCounter(0))


def test_tensorboard_added_on_resume_gets_the_epochs_before_it_and_none_twice(
    tmp_path, event_files_in_order
):
    """`--resume --log tensorboard` of a run trained with `--log none` wrote only the epochs
    after the resume, where a tracker added on resume gets the whole history."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from sef.engine.log import Logger

    def record(epoch: int) -> dict:
        terms = ("loss_total", "train_top1", "eval_top1", "eval_class_mean", "seconds", "lr")
        return {"epoch": epoch, "images_per_second": 1.0, "eval_group_top1": [0.5]} | {
            key: epoch / 10 for key in terms
        }

    config = _config(tmp_path, "run.loggers=[tensorboard]")
    for epochs in (2, 3):  # added on resume after epoch 2, resumed again after epoch 3
        history = [record(e) for e in range(1, epochs + 1)]
        logger = Logger(tmp_path, config, history, start_epoch=epochs + 1)
        logger.epoch(record(epochs + 1), epochs=4)
        logger.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("eval_top1")] == [
        (e, pytest.approx(e / 10)) for e in (1, 2, 3, 4)
    ]


def test_tensorboard_back_on_after_sessions_without_it_fills_the_gap(
    tmp_path, event_files_in_order
):
    """TensorBoard on for epochs 1-2, off for 3-4, on again for 5: its charts lacked 3 and 4."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from sef.engine.log import Logger

    def record(epoch: int) -> dict:
        terms = ("loss_total", "train_top1", "eval_top1", "eval_class_mean", "seconds", "lr")
        return {"epoch": epoch, "images_per_second": 1.0, "eval_group_top1": [0.5]} | {
            key: epoch / 10 for key in terms
        }

    for epoch, loggers in ((1, "tensorboard"), (3, "none"), (5, "tensorboard")):
        config = _config(tmp_path, f"run.loggers=[{loggers}]")
        history = [record(e) for e in range(1, epoch)]
        logger = Logger(tmp_path, config, history, start_epoch=epoch)
        for e in (epoch, epoch + 1)[: 6 - epoch]:
            logger.epoch(record(e), epochs=5)
        logger.close()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("eval_top1")] == [
        (e, pytest.approx(e / 10)) for e in (1, 2, 3, 4, 5)
    ]


def test_the_epoch_line_shows_a_slow_cpus_speed_instead_of_0_img_s(tmp_path, capsys):
    """30 images at 448 px took 70 s on a 2-core CPU: the line said "0 img/s"."""
    from sef.engine.log import Logger

    record = {"epoch": 1, "lr": 0.1, "images_per_second": 0.43, "seconds": 70.0,
              "loss_total": 1.0, "train_top1": 0.5, "eval_top1": 0.5, "eval_class_mean": 0.5,
              "eval_group_top1": [0.5]}  # fmt: skip
    logger = Logger(tmp_path, _config(tmp_path, "run.tensorboard=false"), [], start_epoch=0)
    logger.epoch(record, epochs=1)
    logger.epoch({**record, "epoch": 2, "images_per_second": 27.4}, epochs=2)
    logger.close()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("  70s  0.43 img/s") and lines[1].endswith("  27 img/s")


def test_the_groups_readout_goes_to_the_epoch_line_metrics_and_tensorboard(tmp_path, capsys):
    """Issue 23: the training batches' within / between correlation is seen live in every
    epoch line, and kept in metrics.jsonl and TensorBoard; a record without it shows none."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from sef.engine.log import Logger

    plain = {"epoch": 1, "lr": 0.1, "images_per_second": 9.0, "seconds": 1.0, "loss_total": 1.0,
             "train_top1": 0.5, "eval_top1": 0.5, "eval_class_mean": 0.5,
             "eval_group_top1": [0.5, 0.5]}  # fmt: skip
    grouped = {**plain, "epoch": 2, "train_corr_within": 0.7123, "train_corr_between": 0.1049}
    logger = Logger(tmp_path, _config(tmp_path, "run.loggers=[tensorboard]"), [], start_epoch=0)
    logger.epoch(plain, epochs=2)
    logger.epoch(grouped, epochs=2)
    logger.close()
    first, second = capsys.readouterr().out.splitlines()
    assert "corr" not in first and "  groups [0.500 0.500]  corr 0.712/0.105  1s  " in second
    written = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[1])
    assert (written["train_corr_within"], written["train_corr_between"]) == (0.7123, 0.1049)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    for key, value in (("train_corr_within", 0.7123), ("train_corr_between", 0.1049)):
        assert [(e.step, e.value) for e in events.Scalars(key)] == [(2, pytest.approx(value))]


def test_the_progress_bar_shows_a_slow_cpus_speed_instead_of_0_img_s(monkeypatch, capsys):
    """The bar's img_s, like the epoch line, said 0 for a CPU's 0.43 images/s at 448 px."""
    clock = iter(range(0, 10_000, 10))  # every reading of the clock 10 s later
    monkeypatch.setattr(sef.engine.loop.time, "perf_counter", lambda: float(next(clock)))
    model = SEF("small_cnn", 3, groups=2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loader = torch.utils.data.DataLoader(Blobs(2, 0), batch_size=2)  # 2 images in 10 s
    train_one_epoch(
        model, SEFLoss(2, phi=0.1), loader, optimizer,
        context=Context(device=torch.device("cpu")), epoch=1, progress=True,
    )  # fmt: skip
    assert "img_s=0.2," in capsys.readouterr().err


def test_metrics_jsonl_is_strict_json_and_its_nulls_plot(tmp_path):
    """A non-finite number is written null (Python's json would write NaN, which jq, pandas'
    strict readers and JavaScript refuse); the curves skip it."""
    from sef.engine.log import Logger
    from sef.viz import plot_curves, read_metrics

    record = {"epoch": 1, "lr": 0.1, "images_per_second": 1.0, "seconds": 1.0,
              "loss_total": 1.0, "train_top1": 0.5, "eval_top1": float("nan"),
              "eval_class_mean": float("inf"), "eval_group_top1": [0.5, float("nan")]}  # fmt: skip
    logger = Logger(tmp_path, _config(tmp_path, "run.tensorboard=false"), [], start_epoch=0)
    logger.epoch(record, epochs=1)
    logger.close()
    line = (tmp_path / "metrics.jsonl").read_text()
    written = json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in {line}"))
    assert written["eval_top1"] is None and written["eval_class_mean"] is None
    assert written["eval_group_top1"] == [0.5, None] and written["train_top1"] == 0.5
    assert plot_curves(read_metrics(tmp_path), tmp_path / "curves.png").stat().st_size > 0


def test_every_epoch_records_the_groups_correlation_where_there_are_groups(tmp_path) -> None:
    data = Data(Blobs(12, 0), Blobs(7, 1), Blobs.classes)
    result = fit(_config(tmp_path / "sef"), data=data, progress=False)
    for record in result.history:
        for key in ("train_corr_within", "train_corr_between", "eval_corr_within"):
            assert -1 <= record[key] <= 1
    plain = fit(_config(tmp_path / "plain", "model.groups=1"), data=data, progress=False)
    assert not any("corr" in key for key in plain.history[-1])
    assert "groups  " not in plain.report()


def test_a_short_demo_run_separates_its_groups_and_says_so(demo_root, tmp_path) -> None:
    """Groups-only at phi = 1 from scratch: 60 steps split the two groups (within ~0.9 against
    ~0.02, at 32 px as at the demo's 64, in a third of the time); the last line of the report
    says it, and each epoch's record shows it coming."""
    config = _config(
        tmp_path / "run", "optim.epochs=6", "optim.batch_size=32", "loss.phi=1.0", "loss.lam=0",
        "loss.gamma=0", "data.options.per_class=40", "data.options.test_per_class=4",
        "data.image_size=32",
    )  # fmt: skip
    result = fit(config, progress=False)
    first, last = result.history[0], result.history[-1]
    assert last["train_corr_within"] - last["train_corr_between"] > 0.5
    assert first["train_corr_within"] - first["train_corr_between"] < 0.2
    assert last["eval_corr_within"] - last["eval_corr_between"] > 0.5
    line = next(x for x in result.report().splitlines() if x.startswith("groups "))
    assert "groups            separated: channel correlation within" in line


def test_groups_that_stay_together_are_said_to_and_sent_to_the_guide() -> None:
    near = {"eval_corr_within": 0.2994, "eval_corr_between": 0.2961}
    assert separation_lines(near) == [
        "groups            did not separate: channel correlation within 0.299, between 0.296 on "
        "the eval images (separated: within - between >= 0.2)",
        "                  when they do, and what it costs: docs/finetune.md in sef's source",
        "                  fine-tuning? the confirmed setting is the finetune method "
        "(`sef presets | grep finetune`)",
    ]
    apart = {"eval_corr_within": 0.534, "eval_corr_between": 0.140}
    assert [line.split(":")[0] for line in separation_lines(apart)] == [
        "groups            separated"
    ]
    assert separation_lines({"eval_top1": 0.5}) == []  # one group: no line
    assert (Path(__file__).parents[1] / "docs" / "finetune.md").is_file()  # the guide named


def test_a_finetune_run_whose_groups_stay_together_is_not_sent_to_the_finetune_method(
    tmp_path: Path,
) -> None:
    """The hint names the finetune method: a run that used it reads the guide only."""
    data = Data(Blobs(12, 0), Blobs(7, 1), Blobs.classes)
    near = {"eval_corr_within": 0.2994, "eval_corr_between": 0.2961}
    runs = [("demo-finetune", [], False), ("demo", [], True)]
    runs += [("demo-finetune", ["loss.norm_floor=0"], True)]  # no longer the finetune method
    for i, (preset, changes, hinted) in enumerate(runs):
        config = _config(tmp_path / str(i), "optim.epochs=1", *changes, preset=preset)
        result = fit(config, data=data, progress=False)
        report = dataclasses.replace(result, last={**result.last, **near}).report()
        assert "did not separate" in report
        assert ("fine-tuning? the confirmed setting" in report) is hinted, (preset, changes)


def test_only_runs_from_scratch_at_phi_1_or_more_with_groups_are_told_its_cost() -> None:
    """docs/results.md: from scratch, phi = 1 cost the demo 25 to 48 points, whatever the rest."""
    finetune = resolve_config("demo-finetune")  # weights null, G = 2, phi 1
    assert scratch_note(finetune).startswith("note: from scratch")
    assert scratch_note(apply_overrides(finetune, ["loss.phi=3"])) is not None
    assert scratch_note(apply_overrides(finetune, ["loss.phi=0.1"])) is None  # the demo's
    assert scratch_note(resolve_config("demo")) is None
    assert scratch_note(apply_overrides(finetune, ["model.groups=1"])) is None  # no group loss
    pretrained = resolve_config("birds32-mobilenet_v2-finetune")  # ImageNet weights, phi 1
    assert pretrained.model.weights and scratch_note(pretrained) is None


def test_the_loop_tells_the_loss_how_far_training_is_for_the_warmups() -> None:
    torch.manual_seed(0)
    model = SEF("small_cnn", 3, groups=2)
    loss_fn = SEFLoss(2, lam=1.0, lam_warmup=2.0, phi=0.5, phi_warmup=4.0, lam_until=2.5)
    seen = []
    original = loss_fn.forward

    def forward(output, target):
        seen.append((loss_fn.progress, loss_fn.current_lam, loss_fn.current_phi))
        return original(output, target)

    loss_fn.forward = forward
    loader = torch.utils.data.DataLoader(Blobs(8, 0), batch_size=2)  # 4 steps
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    context = Context(device=torch.device("cpu"))
    for epoch in (1, 2, 3):
        train_one_epoch(
            model, loss_fn, loader, optimizer, context=context, epoch=epoch, progress=False
        )
    progress = [e + s / 4 for e in range(3) for s in range(4)]
    assert [p for p, _, _ in seen] == progress
    assert [lam for _, lam, _ in seen] == [min(1.0, p / 2) if p < 2.5 else 0.0 for p in progress]
    assert [phi for _, _, phi in seen] == [0.5 * min(1.0, p / 4) for p in progress]


def test_a_run_saved_before_a_config_key_existed_still_resumes(tmp_path) -> None:
    """Checkpoints keep the config as it was; a key added since (loss.lam_warmup, say) takes
    its default, so resuming compares like with like instead of refusing."""
    out = tmp_path / "run"
    data = Data(Blobs(8, 0), Blobs(4, 1), Blobs.classes)
    fit(_config(out, "optim.epochs=1"), data=data, progress=False)
    state = load_checkpoint(out / "last.pt")
    del state["config"]["loss"]["lam_warmup"]
    save_checkpoint(out / "last.pt", state)
    resumed = fit(_config(out, "optim.epochs=2"), data=data, resume=True, progress=False)
    assert [r["epoch"] for r in resumed.history] == [1, 2]


def test_a_resume_does_not_read_the_initial_weights_its_checkpoint_replaces(tmp_path, monkeypatch):
    """A weights file named by a relative path (or ImageNet weights not on this machine) began
    the run; resuming from another folder, or after the file is gone, once failed to read it."""
    out, data = tmp_path / "run", Data(Blobs(8, 0), Blobs(4, 1), Blobs.classes)
    monkeypatch.chdir(tmp_path)
    torch.save(sef.backbones.small_cnn().state_dict(), "start.pth")
    fit(_config(out, "optim.epochs=1", "model.weights=start.pth"), data=data, progress=False)
    monkeypatch.chdir(out)  # where start.pth names no file
    resumed = fit(_config(out, "model.weights=start.pth"), data=data, resume=True, progress=False)
    assert [r["epoch"] for r in resumed.history] == [1, 2]


def test_a_resume_on_moved_images_names_the_folder_it_writes_to(tmp_path, capsys) -> None:
    """Own images moved to ~/data/birds-grown and resumed with --data-root there: the line said
    "resuming after epoch 1 birds-grown" while the run went on in runs/birds."""
    out = tmp_path / "runs" / "birds"
    data = Data(Blobs(4, 0), Blobs(3, 1), Blobs.classes)
    own = ["data.dataset=folder", "run.tensorboard=false"]
    fit(
        _config(out, "optim.epochs=1", *own, f"data.root={tmp_path / 'birds'}"),
        data=data,
        progress=False,
    )
    assert "training birds: small_cnn, G=2, 4 train" in capsys.readouterr().out
    moved = _config(out, *own, f"data.root={tmp_path / 'birds-grown'}")
    fit(moved, data=data, resume=True, progress=False)
    assert "resuming after epoch 1 birds: small_cnn" in capsys.readouterr().out


def test_a_resume_on_another_number_of_processes_says_it_will_not_match(tmp_path, capsys):
    """The docs' "exactly the random numbers an uninterrupted run would" holds for the same
    process count: each process seeds from its rank and keeps its own BatchNorm statistics."""
    out = tmp_path / "run"
    data = Data(Blobs(8, 0), Blobs(4, 1), Blobs.classes)
    fit(_config(out, "optim.epochs=1"), data=data, progress=False)
    state = load_checkpoint(out / "last.pt")
    assert state["processes"] == 1
    fit(_config(out, "optim.epochs=2"), data=data, resume=True, progress=False)
    assert "note:" not in capsys.readouterr().out  # the same count: nothing to say
    state = load_checkpoint(out / "last.pt")
    state["processes"] = 2  # as torchrun --nproc-per-node 2 saves it
    save_checkpoint(out / "last.pt", state)
    fit(_config(out, "optim.epochs=3"), data=data, resume=True, progress=False)
    assert (
        f"note: {out / 'last.pt'} trained with 2 processes per step and resumes with 1: each "
        "process draws its own batches and BatchNorm statistics, so the run will not end exactly "
        "where an uninterrupted one would\n"
    ) in capsys.readouterr().out


def test_a_resume_on_another_number_of_cpu_threads_says_it_will_not_match_bit_for_bit(
    tmp_path, capsys
):
    """As a run resumed on a machine with other CPUs (sef uses them all): sums split otherwise."""
    out, threads = tmp_path / "run", torch.get_num_threads()
    data = Data(Blobs(8, 0), Blobs(4, 1), Blobs.classes)
    fit(_config(out, "optim.epochs=1"), data=data, progress=False)
    assert load_checkpoint(out / "last.pt")["cpu_threads"] == threads
    torch.set_num_threads(threads + 1)
    try:
        fit(_config(out, "optim.epochs=2"), data=data, resume=True, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert (
        f"note: {out / 'last.pt'} trained with {threads} CPU thread{'s' * (threads > 1)} and "
        f"resumes with {threads + 1}: they split sums differently, so the run will not end bit for "
        f"bit where an uninterrupted one would (OMP_NUM_THREADS={threads} resumes it on as many)\n"
    ) in capsys.readouterr().out


def test_a_resume_under_another_torch_or_sef_says_it_will_not_match(tmp_path, capsys) -> None:
    """As a run resumed after `pip install -U torch`: its kernels may compute otherwise."""
    out, data = tmp_path / "run", Data(Blobs(8, 0), Blobs(4, 1), Blobs.classes)
    fit(_config(out, "optim.epochs=1"), data=data, progress=False)
    fit(_config(out, "optim.epochs=1"), data=data, resume=True, progress=False)
    assert "was written by" not in capsys.readouterr().out  # this sef and torch: nothing to say
    now = f"sef {sef.__version__} with torch {torch.__version__}"
    state = load_checkpoint(out / "last.pt")
    older = {**state, "torch_version": "2.5.1"}
    unrecorded = {k: v for k, v in state.items() if k not in ("sef_version", "torch_version")}
    for saved, writer in (
        (older, f"sef {sef.__version__} with torch 2.5.1"),
        (unrecorded, "an older sef that did not record its version"),
    ):
        torch.save(saved, out / "last.pt")  # save_checkpoint would record this torch
        fit(_config(out, "optim.epochs=1"), data=data, resume=True, progress=False)
        assert (
            f"note: {out / 'last.pt'} was written by {writer} and resumes under {now}: another "
            f"version may compute otherwise, so the run will not end exactly where an "
            f"uninterrupted one would\n"
        ) in capsys.readouterr().out


def test_a_resume_whose_best_pt_is_gone_says_so_and_writes_the_best_of_the_epochs_to_come(
    tmp_path, capsys
) -> None:
    """Only last.pt copied to another machine: the report pointed at a best.pt that never came."""
    out, data = tmp_path / "run", Data(Blobs(8, 0), Blobs(4, 1), Blobs.classes)
    fit(_config(out, "optim.epochs=2"), data=data, progress=False)
    state = load_checkpoint(out / "last.pt")
    save_checkpoint(out / "last.pt", {**state, "best": {"epoch": 1, "eval_top1": 0.75}})
    (out / "best.pt").unlink()
    capsys.readouterr()
    result = fit(_config(out, "optim.epochs=3"), data=data, resume=True, progress=False)
    assert (
        f"note: {out / 'best.pt'}, the model of epoch 1 (eval top-1 0.7500), is gone; best.pt "
        f"will hold the best of the epochs trained from now on\n"
    ) in capsys.readouterr().out
    assert result.best_epoch == 3 and load_checkpoint(out / "best.pt")["epoch"] == 3


def test_a_resume_may_evaluate_in_other_batches_but_not_train_in_them(tmp_path) -> None:
    """A resume on a smaller GPU that evaluates in smaller batches: no weight depends on them."""
    config = _config(tmp_path / "run")
    state = {key: None for key in TRAINING_STATE} | {"config": config_to_dict(config), "epoch": 1}
    smaller = apply_overrides(config, ["run.eval_batch_size=2"])
    _check_resumable(smaller, state, tmp_path / "last.pt")  # no refusal
    with pytest.raises(ConfigError, match="optim.batch_size was 4 and is now 2"):
        _check_resumable(apply_overrides(config, ["optim.batch_size=2"]), state, tmp_path)


def test_a_resume_may_change_the_memory_format(tmp_path) -> None:
    """run.channels_last, which the docs advise for speed, lays the same tensors out otherwise: a
    resume (and sef reproduce's finished rows) refused it as another computation."""
    config = _config(tmp_path / "run")
    state = {key: None for key in TRAINING_STATE} | {"config": config_to_dict(config), "epoch": 1}
    _check_resumable(apply_overrides(config, ["run.channels_last=true"]), state, tmp_path)


def test_a_resume_for_fewer_epochs_than_trained_counts_them_in_words(tmp_path) -> None:
    """It said "for 1 epochs"."""
    config = _config(tmp_path / "run", "optim.epochs=2")
    state = {key: None for key in TRAINING_STATE} | {"config": config_to_dict(config), "epoch": 2}
    with pytest.raises(ConfigError) as refusal:
        _check_resumable(apply_overrides(config, ["optim.epochs=1"]), state, tmp_path / "last.pt")
    assert str(refusal.value).startswith(f"cannot resume {tmp_path / 'last.pt'} for 1 epoch: ")


def test_a_resume_on_processes_that_do_not_divide_its_batch_is_told_to_change_them(tmp_path):
    """The batch size of a run cannot change on resuming: "choose a multiple of 3" led to a
    refusal of the new batch size."""
    config = _config(tmp_path / "run", "optim.batch_size=8")
    with pytest.raises(ConfigError) as refusal:
        _check_setup(config, Context(world_size=3), resume=True)
    assert str(refusal.value) == (
        "optim.batch_size=8 must divide evenly over 3 processes; resume on a number of processes "
        "that divides 8 (a resume keeps the batch size)"
    )
    parts = apply_overrides(config, ["optim.accumulate=2"])
    with pytest.raises(ConfigError, match="processes times optim.accumulate that divides 8 "):
        _check_setup(parts, Context(world_size=3), resume=True)
    with said_to_command(), pytest.raises(ConfigError, match="processes times --accumulate that"):
        _check_setup(parts, Context(world_size=3), resume=True)


def test_the_note_on_a_run_trained_on_one_process_counts_it_as_one(tmp_path) -> None:
    # it read "trained with 1 processes per step and resumes with 2"
    run = SimpleNamespace(out=tmp_path, trained_on=1, context=Context(world_size=2))
    assert "trained with 1 process per step and resumes with 2: " in _processes_note(run)


def test_a_batch_larger_than_the_training_images_is_noted_at_the_start(tmp_path) -> None:
    """Own data of 20 images under a recipe's batch of 32: 50 epochs were 50 steps, unsaid."""
    config = _config(tmp_path, "optim.batch_size=32")

    def note(images: int, epoch: int = 0) -> str | None:
        data = Data(Blobs(images, 0), Blobs(2, 1), Blobs.classes)
        return _one_step_note(SimpleNamespace(config=config, data=data, epoch=epoch))

    assert note(20) == (
        "note: the batch of 32 is larger than the 20 training images, so each epoch is one "
        "optimizer step; a lower optim.batch_size takes more steps an epoch"
    )
    with said_to_command():  # the command's user sets --batch-size
        assert note(20).endswith("; a lower --batch-size takes more steps an epoch")
    assert note(32) is None and note(20, epoch=3) is None  # a resume keeps its batch size


def test_fits_config_file_that_the_run_would_write_over_is_named_as_fits_argument(tmp_path):
    (tmp_path / "config.yaml").write_text("base: demo\n")
    with pytest.raises(ConfigError, match="^config_file .* elsewhere or choose another run.out$"):
        check_config_file(tmp_path / "config.yaml", tmp_path)
    with said_to_command(), pytest.raises(ConfigError, match="^--config .* another --out$"):
        check_config_file(tmp_path / "config.yaml", tmp_path)


def test_a_batch_batchnorm_cannot_train_on_names_the_settings_as_their_reader_sets_them():
    images = torch.zeros(1, 3)  # one image, its map 1 x 1: one value per channel
    with pytest.raises(ConfigError) as info:
        _forward(torch.nn.BatchNorm1d(3), images, Context(), accumulate=2)
    assert str(info.value).endswith(
        "; train with optim.batch_size=4 or more, a lower optim.accumulate, or larger images "
        "(data.image_size)"
    )
    with said_to_command(), pytest.raises(ConfigError) as info:
        _forward(torch.nn.BatchNorm1d(3), images, Context(), accumulate=1)
    assert str(info.value).endswith(  # as tests/test_cli_train.py sees it said
        "; train with --batch-size 2 or more (optim.batch_size), or larger images (--image-size)"
    )


def test_micro_batches_of_one_image_name_the_setting_as_their_reader_sets_it(tmp_path) -> None:
    config = _config(tmp_path, "optim.batch_size=8", "optim.accumulate=8")
    run = SimpleNamespace(config=config, context=Context(), model=torch.nn.BatchNorm2d(3))
    assert _one_image_note(run).endswith("; optim.accumulate=4 keeps 2 images a micro-batch")
    with said_to_command():  # as tests/test_cli_train.py sees it said
        assert _one_image_note(run).endswith("; --accumulate 4 keeps 2 images a micro-batch")


def _step_gradient_norms(model, loss_fn, batches) -> list[float]:
    """Slow and obvious: each batch's loss, its gradient, the norm of all of it."""
    norms = []
    for images, labels in batches:
        model.zero_grad()
        loss_fn(model(images), labels)["total"].backward()
        grads = [p.grad.flatten() for p in model.parameters() if p.grad is not None]
        norms.append(torch.cat(grads).double().norm().item())
    return norms


@pytest.mark.parametrize("scaled", [False, True])
def test_every_epoch_records_the_median_and_largest_gradient_its_steps_applied(scaled) -> None:
    """lr = 0 keeps the weights, so each step's gradient can be recomputed batch by batch; with
    a GradScaler the norm is of the unscaled gradient. One batch whose loss counts 100 times
    gives a step far above the others, and the epoch's line warns about it."""
    from sef.engine.log import spike_line

    class OneHeavyBatch(SEFLoss):
        def forward(self, output, target):
            heavy = 100.0 if target.tolist() == [2, 0, 1, 2] else 1.0  # the third batch of 4
            return {k: heavy * v for k, v in super().forward(output, target).items()}

    torch.manual_seed(0)
    model = SEF("small_cnn", 3, groups=2).train()
    loss_fn = OneHeavyBatch(2, lam=0.0, gamma=0.0, phi=1.0)
    loader = torch.utils.data.DataLoader(Blobs(20, 0), batch_size=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0) if scaled else None
    record = train_one_epoch(
        model, loss_fn, loader, optimizer, context=Context(device=torch.device("cpu")),
        epoch=1, scaler=scaler, progress=False,
    )  # fmt: skip
    expected = sorted(_step_gradient_norms(model, loss_fn, loader))
    assert record["grad_norm_median"] == pytest.approx(expected[2], rel=1e-4)
    assert record["grad_norm_max"] == pytest.approx(expected[-1], rel=1e-4)
    assert record["grad_norm_max"] > 20 * record["grad_norm_median"]
    assert spike_line(record | {"epoch": 1}).startswith("epoch 1: one step's gradient was ")


def test_a_gradient_spike_is_said_only_above_its_threshold() -> None:
    from sef.engine.log import spike_line
    from sef.engine.loop import GRADIENT_SPIKE

    assert spike_line({"epoch": 3}) is None  # a record without the readout (an older run)
    assert spike_line({"epoch": 3, "grad_norm_median": 0.0, "grad_norm_max": 1.0}) is None
    below = {"epoch": 3, "grad_norm_median": 5.0, "grad_norm_max": 5.0 * GRADIENT_SPIKE - 0.1}
    assert spike_line(below) is None
    line = spike_line(below | {"grad_norm_max": 764.0, "grad_norm_median": 5.49})
    assert line == (
        "epoch 3: one step's gradient was 139 x the epoch's median (764 against 5.49); such a "
        "step can undo what training had learnt (docs/training.md, gradient spikes)"
    )


def test_evaluate_reads_any_loader_on_one_process_and_names_a_model_it_cannot_use() -> None:
    torch.manual_seed(0)
    model = SEF("small_cnn", 3, groups=2).eval()
    data = Blobs(10, 0)
    expected = evaluate(model, data, batch_size=4, progress=False)
    for loader in (
        torch.utils.data.DataLoader(data, batch_size=3),  # the user's own
        torch.utils.data.DataLoader(torch.utils.data.Subset(data, range(5)), batch_size=2),
    ):
        result = evaluate(model, loader, progress=False)
        rows = len(loader.dataset)
        assert torch.equal(result.predictions, expected.predictions[:rows])
        assert torch.equal(result.group_predictions, expected.group_predictions[:, :rows])
    for wrong, name in ((model.export(), "Sequential"), (object(), "object")):
        with pytest.raises(TypeError, match=f"expected an sef.SEF .*, got {name}"):
            evaluate(wrong, data, progress=False)
    shuffled = torch.utils.data.DataLoader(data, batch_size=3, shuffle=True)
    with pytest.raises(ValueError, match="rows in order; pass a loader without shuffle"):
        evaluate(model, shuffled, progress=False)  # its rows would name other images


def test_a_stopped_run_names_its_folder_when_a_plain_resume_would_continue_another(
    tmp_path, monkeypatch
):
    """Two runs of one preset without --out go to runs/demo and runs/demo-2; a plain --resume
    continues the newest, so runs/demo's stop advice names its folder. The `sef` command's user
    is told its options; Python code (a notebook) was told them too, and is now told its call."""
    from types import SimpleNamespace

    from sef.engine.run import FIT_RESUME, RESUME_ADVICE, _go_on
    from sef.errors import said_to_command

    monkeypatch.chdir(tmp_path)
    config = resolve_config("demo")
    for folder in ("runs/demo", "runs/demo-2"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "last.pt").write_bytes(b"")

    def advice(out: str, *settings: str, out_given: bool = False, kept: int = 3) -> str:
        run = SimpleNamespace(config=config, out=Path(out), out_given=out_given, kept=kept)
        return _go_on(run, *settings)

    assert advice("runs/demo-2") == FIT_RESUME == "call fit(config, resume=True) to continue"
    assert advice("runs/demo") == f"set run.out=runs/demo, then {FIT_RESUME}"
    assert advice("runs/demo", "optim.accumulate=2") == (
        f"set run.out=runs/demo and optim.accumulate=2, then {FIT_RESUME}"
    )
    assert advice("runs/demo", kept=0) == "make the same fit call again to start it again"
    with said_to_command():
        assert (
            advice("runs/demo") == "run the same command with --resume --out runs/demo to continue"
        )
        assert advice("runs/demo-2") == f"run the same command {RESUME_ADVICE}"
        assert advice(str(tmp_path / "runs/demo-2")) == advice("runs/demo-2")  # absolute
        assert advice("runs/demo", out_given=True) == advice("runs/demo-2")  # the command names it
        assert advice("runs/demo-2", "--accumulate 2") == (
            f"add --accumulate 2 to the same command {RESUME_ADVICE}"
        )
        assert advice("runs/demo", kept=0) == "run the same command to start it again"


def test_classes_the_eval_split_holds_no_image_of_are_warned_of(tmp_path, write_image):
    """Own data with a class of one image: the held-out test split takes none of it."""
    for name, count in (("a", 6), ("b", 6), ("c", 1)):
        for index in range(count):
            write_image(tmp_path / "own" / name / f"{index}.png", colour=(40 * index, 90, 10))
    config = _config(
        tmp_path / "run", "data.dataset=folder", f"data.root={tmp_path / 'own'}",
        "data.image_size=32",
    )  # fmt: skip
    with pytest.warns(UserWarning, match=r"the test split holds no image of 1 class \('c'\)"):
        data = load_data(config, Context(device=torch.device("cpu")), progress=False)
    assert {label for _, label in data.eval.samples} == {0, 1}
    config.data.root = str(tmp_path / "own-even")
    for name in ("a", "b"):
        for index in range(3):
            write_image(tmp_path / "own-even" / name / f"{index}.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_data(config, Context(device=torch.device("cpu")), progress=False)


def test_what_a_user_holds_shows_in_one_line(demo_checkpoint):
    """A notebook cell ending in a trained model, an evaluation or a run's result showed every
    layer, class name and config key, thousands of predicted labels, or every epoch's record."""
    trained = sef.load_trained_model(demo_checkpoint)
    assert repr(trained) == (
        "TrainedModel(backbone='resnet18', groups=2, classes=8, image_size=32, recipe='resize', "
        f"written_by='sef {sef.__version__} with torch {torch.__version__}')"
    )
    labels, predicted = torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0])
    evaluation = EvalResult(labels, predicted, torch.zeros(1, 3, dtype=torch.long), 2)
    assert repr(evaluation) == (
        "EvalResult(top1=0.6667, class_mean=0.75, group_top1=[0.3333], "
        "group_heads_trained=True, images=3)"
    )
    history = [{"epoch": epoch, "eval_top1": 0.5} for epoch in range(1, 51)]
    result = FitResult(Path("runs/x"), 0.5, 3, history[-1], 10.0, 100, 10, history)
    assert repr(result) == (
        f"FitResult(out={Path('runs/x')!r}, best_top1=0.5, best_epoch=3, seconds=10.0, "
        "parameters=100, extra_parameters=10, finetune=False, group_heads_trained=True)"
    )
