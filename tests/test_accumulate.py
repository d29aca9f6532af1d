"""Gradient accumulation (``optim.accumulate``): a batch taken in micro-batches steps as the
whole batch would, and one micro-batch a step is training as it was before the option."""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from sef.checkpoint import load_checkpoint
from sef.config import apply_overrides, resolve_config
from sef.distributed import Context
from sef.engine import Data, fit, train_one_epoch
from sef.engine.data import train_loader
from sef.engine.evaluation import eval_batch_size, evaluation_loader
from sef.engine.run import _check_setup
from sef.errors import ConfigError
from sef.losses import SEFLoss
from sef.model import SEF

CPU = Context(device=torch.device("cpu"))
CLASSES = ["red", "green", "blue"]


def _blobs(count: int, seed: int = 0) -> TensorDataset:
    """Tiny learnable images: class k brightens colour channel k."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 3
    images = 0.5 * torch.randn(count, 3, 16, 16, generator=generator)
    images[torch.arange(count), labels] += 1.5
    return TensorDataset(images, labels)


def _without_batchnorm() -> SEF:
    """SEF on two plain convolutions: no statistics of the batch, so micro-batches can match."""
    backbone = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU()
    )
    return SEF(backbone, num_classes=3, groups=2, image_size=16)


def _epoch(model: nn.Module, batch: int, accumulate: int, scaled: bool = False) -> dict:
    """One epoch of SEF's full loss over 14 images, SGD with momentum."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0) if scaled else None
    loader = DataLoader(_blobs(14), batch_size=batch)
    return train_one_epoch(
        model, SEFLoss(2), loader, optimizer, context=CPU, epoch=1, scaler=scaler,
        progress=False, accumulate=accumulate,
    )  # fmt: skip


@pytest.mark.parametrize("scaled", [False, True], ids=["fp32", "grad-scaler"])
def test_two_micro_batches_of_4_step_as_one_batch_of_8(scaled: bool) -> None:
    """Each micro-batch's loss weighs its share of the step's images, so 14 images in batches
    of 8 then 6 train as micro-batches of 4 + 4, then 4 + 2: the same two steps, to float32
    rounding (every SEF loss term is a mean over the batch's images)."""
    torch.manual_seed(0)
    whole = _without_batchnorm()
    parts = copy.deepcopy(whole)
    whole_record = _epoch(whole, 8, 1, scaled)
    parts_record = _epoch(parts, 4, 2, scaled)
    for (name, expected), actual in zip(
        whole.state_dict().items(), parts.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(whole.head.weight, _without_batchnorm().head.weight)  # it trained
    assert parts_record["train_top1"] == whole_record["train_top1"]
    for key in ("loss_total", "loss_group", "grad_norm_median", "grad_norm_max"):
        assert parts_record[key] == pytest.approx(whole_record[key], rel=1e-5), key


def test_one_micro_batch_a_step_is_the_plain_training_step_bit_for_bit() -> None:
    """accumulate=1, the default, trains exactly as the loop did before the option: zero the
    gradients, forward, loss, backward and step on each batch, BatchNorm and all."""
    torch.manual_seed(0)
    model = SEF("small_cnn", 3, groups=2)
    reference = copy.deepcopy(model).train()
    loss_fn = SEFLoss(2, phi=0.1)
    loader = DataLoader(_blobs(10), batch_size=4)  # 4, 4, 2
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train_one_epoch(model, loss_fn, loader, optimizer, context=CPU, epoch=1, progress=False)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    for images, labels in loader:
        optimizer.zero_grad()
        loss_fn(reference(images), labels)["total"].backward()
        optimizer.step()
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


class _Recorded(nn.Module):
    """A model with DDP's ``no_sync``, recording for each forward whether it ran inside it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.syncing, self.synced = model, True, []

    @contextlib.contextmanager
    def no_sync(self):
        self.syncing = False
        try:
            yield
        finally:
            self.syncing = True

    def forward(self, images: torch.Tensor):
        self.synced.append(self.syncing)
        return self.model(images)


def test_processes_average_the_gradients_once_a_step_not_every_micro_batch() -> None:
    torch.manual_seed(0)
    model = _Recorded(_without_batchnorm())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(_blobs(14), batch_size=3)  # 3, 3, 3, 3, 2: steps of 3, 3 and 1
    train_one_epoch(
        model, SEFLoss(2), loader, optimizer, context=CPU, epoch=1, progress=False, accumulate=2
    )
    assert model.synced == [False, True, False, True, True]


def _ddp_epoch(rank: int, world: int, rendezvous: str, weights: str) -> None:
    """One epoch of 16 images on process ``rank`` of ``world`` (gloo, DDP): 8 images per
    process in 2 steps of 4, each taken in 2 micro-batches; rank 0 saves the weights."""
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world
    )
    try:
        torch.manual_seed(0)
        model = _without_batchnorm()
        trainer = nn.parallel.DistributedDataParallel(model)
        images, labels = _blobs(16).tensors
        shard = DataLoader(TensorDataset(images[rank::world], labels[rank::world]), batch_size=2)
        train_one_epoch(
            trainer, SEFLoss(2), shard, torch.optim.SGD(trainer.parameters(), lr=0.1, momentum=0.9),
            context=Context(rank=rank, world_size=world), epoch=1, progress=False, accumulate=2,
        )  # fmt: skip
        if rank == 0:
            torch.save(model.state_dict(), weights)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_processes_with_micro_batches_step_as_one_process_with_the_whole_batch(tmp_path):
    """Under DDP the gradients are averaged once a step (no_sync on the first micro-batch), and
    that average of the processes' weighted micro-batches is the whole batch's gradient."""
    weights = tmp_path / "ddp.pt"
    torch.multiprocessing.spawn(
        _ddp_epoch, args=(2, str(tmp_path / "rendezvous"), str(weights)), nprocs=2
    )
    torch.manual_seed(0)
    whole = _without_batchnorm()
    optimizer = torch.optim.SGD(whole.parameters(), lr=0.1, momentum=0.9)
    loader = DataLoader(_blobs(16), batch_size=8)  # the images both processes took a step
    train_one_epoch(whole, SEFLoss(2), loader, optimizer, context=CPU, epoch=1, progress=False)
    ddp = torch.load(weights, weights_only=True)
    for name, expected in whole.state_dict().items():
        torch.testing.assert_close(ddp[name], expected, rtol=1e-5, atol=1e-6, msg=name)


def test_the_loader_hands_over_each_batch_in_micro_batches_in_the_same_order() -> None:
    """What an epoch draws does not change with optim.accumulate (resume stays exact); a last
    micro-batch of one image is left out, as a last batch of one is (BatchNorm)."""
    dataset = _blobs(13)
    whole = train_loader(dataset, batch_size=8, workers=0, seed=0, context=CPU)
    parts = train_loader(dataset, batch_size=8, workers=0, seed=0, context=CPU, accumulate=2)
    for loader in (whole, parts):
        loader.sampler.set_epoch(3)
    whole_labels = torch.cat([labels for _, labels in whole])
    sizes = [len(labels) for _, labels in parts]
    assert sizes == [4, 4, 4]  # 8, then 5: 4 and 1
    assert torch.equal(torch.cat([labels for _, labels in parts]), whole_labels[:12])


def _config(out: Path, *overrides: str):
    base = ["optim.batch_size=4", "optim.accumulate=2", "data.workers=0", f"run.out={out}"]
    base += ["run.tensorboard=false"]
    return apply_overrides(resolve_config("demo"), base + list(overrides))


def test_a_resumed_run_with_micro_batches_ends_where_an_uninterrupted_one_does(tmp_path):
    data = Data(_blobs(10), _blobs(4, 1), CLASSES)
    whole = fit(_config(tmp_path / "whole", "optim.epochs=2"), data=data, progress=False)
    fit(_config(tmp_path / "resumed", "optim.epochs=1"), data=data, progress=False)
    resumed = fit(
        _config(tmp_path / "resumed", "optim.epochs=2"), data=data, resume=True, progress=False
    )
    timing = ("seconds", "images_per_second")
    assert [{k: v for k, v in r.items() if k not in timing} for r in resumed.history] == [
        {k: v for k, v in r.items() if k not in timing} for r in whole.history
    ]
    final = load_checkpoint(tmp_path / "resumed" / "last.pt")["model"]
    for key, value in load_checkpoint(tmp_path / "whole" / "last.pt")["model"].items():
        assert torch.equal(final[key], value), key


def test_a_batch_that_processes_cannot_split_into_micro_batches_is_refused(tmp_path) -> None:
    config = _config(tmp_path / "run", "optim.batch_size=6")  # 3 per process, not in 2 parts
    with pytest.raises(ConfigError) as info:
        _check_setup(config, Context(world_size=2))
    assert str(info.value) == (
        "optim.batch_size=6 must divide evenly over 2 processes x 2 micro-batches "
        "(optim.accumulate); choose a multiple of 4"
    )


def test_evaluation_takes_micro_batches_too_unless_its_batch_is_given(tmp_path, monkeypatch):
    """A run whose batch fits only in micro-batches evaluated it whole and ran out of memory
    there, with advice (more --accumulate) that could not help; sef eval likewise."""
    batches = []

    def recording(dataset, batch_size, *args, **kwargs):
        batches.append(batch_size)
        return evaluation_loader(dataset, batch_size, *args, **kwargs)

    monkeypatch.setattr("sef.engine.run.evaluation_loader", recording)
    config = _config(tmp_path / "run", "optim.epochs=1")
    fit(config, data=Data(_blobs(10), _blobs(4, 1), CLASSES), progress=False)
    assert batches == [2]  # the micro-batch, not the batch of 4
    assert eval_batch_size(config) == 2
    assert eval_batch_size(apply_overrides(config, ["run.eval_batch_size=16"])) == 16
