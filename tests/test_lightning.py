"""SEFLightningModule: any SEF trained by Lightning's Trainer on the CPU, each loss term logged,
top-1 and class-mean evaluated, and the plain network handed back."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from sef import datasets, transforms
from sef.config import apply_overrides, load_preset
from sef.engine import evaluate
from sef.losses import SEFLoss
from sef.model import SEF

pl = pytest.importorskip("lightning.pytorch")
from sef.integrations.lightning import SEFLightningModule  # noqa: E402

SIZE = 32
DEMO = {"per_class": 3, "test_per_class": 2, "resolution": SIZE, "progress": False}
TERMS = ["loss_ce", "loss_entropy", "loss_distill", "loss_group", "loss_total", "train_top1"]
TERMS += ["train_corr_within", "train_corr_between"]  # the groups' readout, as sef train's


def _loader(split: str, train: bool) -> DataLoader:
    """The tiny demo split as uint8 images (the module normalises them on its device)."""
    make = transforms.train_transform if train else transforms.test_transform
    dataset = datasets.load("demo", None, split, transform=make("resize", SIZE, False), **DEMO)
    return DataLoader(dataset, batch_size=8, shuffle=train)


def _trainer(tmp_path: Path, **options) -> pl.Trainer:
    quiet = {"enable_progress_bar": False, "enable_model_summary": False}
    return pl.Trainer(accelerator="cpu", devices=1, default_root_dir=tmp_path, **quiet, **options)


def test_fast_dev_run_trains_any_sef(demo_root: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = SEF("small_cnn", num_classes=8, groups=2)
    before = [p.detach().clone() for p in model.parameters()]
    module = SEFLightningModule(model)
    trainer = _trainer(tmp_path, fast_dev_run=2)
    trainer.fit(module, _loader("trainval", True), _loader("test", False))
    changed = [not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)]
    assert all(changed)  # the backbone, the global head and every group head trained
    assert {"loss_total", "train_top1", "eval_top1", "eval_class_mean"} <= set(
        trainer.callback_metrics
    )


@pytest.mark.slow
def test_a_short_fit_on_the_demo_logs_every_term_and_evaluates_as_sef_does(
    demo_root: Path, tmp_path: Path
) -> None:
    config = apply_overrides(load_preset("demo"), ["optim.epochs=2", "optim.lr=0.01"])
    torch.manual_seed(0)
    module = SEFLightningModule.from_config(config, num_classes=8)
    logger = pl.loggers.CSVLogger(tmp_path, name="sef")
    trainer = _trainer(tmp_path, max_epochs=2, logger=logger, enable_checkpointing=False)
    test = _loader("test", False)
    trainer.fit(module, _loader("trainval", True), test)
    assert module.loss.progress == pytest.approx(1 + 2 / 3)  # as sef train's: 3 steps an epoch

    with open(Path(logger.log_dir) / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    trained = [row for row in rows if row["loss_total"]]
    evaluated = [row for row in rows if row["eval_top1"]]
    assert [int(row["epoch"]) for row in trained] == [0, 1]
    assert all(row[name] for row in trained for name in TERMS)
    assert [int(row["epoch"]) for row in evaluated] == [0, 1]  # not the sanity check
    groups = [f"eval_group_top1/group{g}" for g in (1, 2)]
    assert all(row["eval_class_mean"] and all(row[g] for g in groups) for row in evaluated)

    # the last epoch's numbers are sef's own evaluation of the trained model
    result = evaluate(module.model, test.dataset, batch_size=8, progress=False)
    last = evaluated[-1]
    assert float(last["eval_top1"]) == pytest.approx(result.top1)
    assert float(last["eval_class_mean"]) == pytest.approx(result.class_mean)
    assert [float(last[g]) for g in groups] == pytest.approx(result.group_top1)
    readout = [float(last["eval_corr_within"]), float(last["eval_corr_between"])]
    assert readout == pytest.approx(list(result.correlation))

    (tested,) = trainer.test(module, test, verbose=False)
    assert tested["test_top1"] == pytest.approx(result.top1)

    plain = module.export()
    assert not any("group" in name for name in plain.state_dict())
    images = transforms.normalise_batch(next(iter(test))[0])
    with torch.no_grad():
        torch.testing.assert_close(plain(images), module.model.eval()(images))


def test_validating_first_under_inference_mode_does_not_break_training_with_eq_4(
    demo_root: Path, tmp_path: Path
) -> None:
    """``trainer.validate`` runs under torch.inference_mode; the readout's group weights cached
    there must not be inference tensors that Eq. 4's loss (the finetune method) then saves for
    backward when the same module is fitted."""
    from sef import losses

    losses._weights.cache_clear()
    config = apply_overrides(load_preset("demo-finetune"), ["optim.epochs=1"])
    module = SEFLightningModule.from_config(config, num_classes=8)
    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=2, enable_checkpointing=False)
    trainer.validate(module, _loader("test", False))  # the untrained model's accuracy first
    trainer.fit(module, _loader("trainval", True), _loader("test", False))
    assert trainer.global_step == 2


def test_predict_returns_the_global_logits_of_labelled_or_bare_batches(
    demo_root: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    module = SEFLightningModule(SEF("small_cnn", num_classes=8, groups=2))
    labelled = _loader("test", False)
    images = torch.cat([x for x, _ in labelled])  # uint8, as the loader gives them
    bare = DataLoader(images, batch_size=8)  # images alone: a tensor per batch
    trainer = _trainer(tmp_path)
    for loader in (labelled, bare):
        logits = torch.cat(trainer.predict(module, loader))
        with torch.no_grad():
            expected = module.model.eval()(transforms.normalise_batch(images))
        assert torch.allclose(logits, expected, atol=1e-6)


def test_the_gathered_evaluation_draws_no_advice_to_sync_it(
    demo_root, tmp_path, monkeypatch
) -> None:
    """Under DDP Lightning told the user to log eval_top1 ... with sync_dist=True, as if each
    process logged only its own images; they are every process's, gathered."""
    import socket

    with socket.socket() as free:  # a port for DDP's one-process group
        free.bind(("127.0.0.1", 0))
        monkeypatch.setenv("MASTER_PORT", str(free.getsockname()[1]))
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    module = SEFLightningModule(SEF("small_cnn", num_classes=8, groups=2))
    trainer = _trainer(tmp_path, strategy="ddp", logger=False)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            (result,) = trainer.validate(module, _loader("test", False), verbose=False)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    assert trainer.world_size == 1 and "eval_corr_between" in result
    assert not [str(w.message) for w in caught if "sync_dist" in str(w.message)]


def test_soft_targets_train_and_evaluate_as_their_likeliest_class(demo_root, tmp_path) -> None:
    """A DataModule's mixup or label smoothing gives [B, K] targets: the loss takes them, the
    top-1 counts each row's likeliest class (torch.cat had failed on them)."""
    images, labels = (torch.cat(part) for part in zip(*_loader("test", False), strict=True))
    one_hot = torch.nn.functional.one_hot(labels, 8).float()

    def loader(targets):
        return DataLoader(TensorDataset(images, targets), batch_size=8)

    fitted = []
    for targets in (labels, one_hot):  # one-hot: the same ce bit for bit, so the same training
        torch.manual_seed(0)
        module = SEFLightningModule(SEF("small_cnn", num_classes=8, groups=2))
        trainer = _trainer(tmp_path, max_epochs=1, logger=False, enable_checkpointing=False)
        trainer.fit(module, loader(targets), loader(targets))
        fitted.append(dict(trainer.callback_metrics))
    assert fitted[0].keys() >= {"train_top1", "loss_total", "eval_top1"} and fitted[1] == fitted[0]
    hard, smoothed = (
        trainer.validate(module, loader(targets), verbose=False)
        for targets in (labels, 0.9 * one_hot + 0.1 / 8)
    )
    assert smoothed == hard


def test_a_loss_for_other_groups_than_the_model_is_refused_when_the_module_is_built() -> None:
    model = SEF("small_cnn", num_classes=5, groups=2)
    with pytest.raises(ValueError, match="the loss is for 4 groups but the model has 2"):
        SEFLightningModule(model, SEFLoss(4))
    assert SEFLightningModule(model, SEFLoss(2)).loss.groups == 2


def test_a_cosine_schedule_planned_for_other_epochs_than_the_trainer_runs_is_warned_of():
    config = apply_overrides(load_preset("demo"), ["optim.scheduler=cosine", "optim.epochs=3"])
    module = SEFLightningModule.from_config(config, num_classes=8)
    module.trainer = pl.Trainer(max_epochs=5, logger=False, enable_checkpointing=False)
    with pytest.warns(UserWarning, match=r"optim.epochs=3, but the Trainer runs max_epochs=5"):
        module.on_fit_start()
    module.trainer = pl.Trainer(max_epochs=3, logger=False, enable_checkpointing=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module.on_fit_start()
    assert module.configure_optimizers()["lr_scheduler"].T_max == 3


def test_a_config_with_micro_batches_warns_unless_the_trainer_accumulates_as_many():
    """Lightning does not read optim.accumulate: its Trainer sums micro-batches itself."""
    config = apply_overrides(load_preset("demo"), ["optim.accumulate=2"])
    module = SEFLightningModule.from_config(config, num_classes=8)
    module.trainer = pl.Trainer(logger=False, enable_checkpointing=False)
    with pytest.warns(UserWarning, match=r"optim.accumulate=2 micro-batches, but the Trainer "):
        module.on_fit_start()
    module.trainer = pl.Trainer(accumulate_grad_batches=2, logger=False, enable_checkpointing=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module.on_fit_start()


def test_the_module_pickles_for_spawning_strategies() -> None:
    """Lambdas as default optimizer and schedule factories made ddp_spawn fail to pickle."""
    import pickle

    config = apply_overrides(load_preset("demo"), ["optim.epochs=2"])
    for module in (SEFLightningModule(SEF("small_cnn", num_classes=8, groups=2)),
                   SEFLightningModule.from_config(config, num_classes=8)):  # fmt: skip
        copy = pickle.loads(pickle.dumps(module))
        optimizer = copy.configure_optimizers()
        optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
        assert isinstance(optimizer, torch.optim.SGD)


def test_a_checkpoint_brings_back_the_loss_it_was_trained_with(demo_root, tmp_path) -> None:
    from sef import SEFLoss

    torch.manual_seed(0)
    model = SEF("small_cnn", num_classes=8, groups=2)
    trained = SEFLoss(2, lam=0.0, phi=0.1, group_variant="paper", lam_warmup=0.0)
    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(SEFLightningModule(model, trained), _loader("trainval", True))
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    fresh = SEF("small_cnn", num_classes=8, groups=2)
    back = SEFLightningModule.load_from_checkpoint(path, model=fresh)
    assert back.loss.options() == trained.options() and back.loss.groups == 2
    given = SEFLoss(2)
    with pytest.warns(UserWarning, match=r"trained with SEFLoss\(groups=2, lam=0.0, .*phi=0.1"):
        kept = SEFLightningModule.load_from_checkpoint(path, model=fresh, loss=given)
    assert kept.loss is given


@pytest.mark.parametrize(
    ("given", "named"),
    [
        (lambda model: torch.optim.SGD(model.parameters(), lr=0.1), r"not SGD\(\.\.\.\) built"),
        (lambda model: torch.optim.AdamW, "not the class AdamW itself"),
    ],
)
def test_an_optimizer_built_already_or_its_class_is_refused_when_the_module_is_built(
    given, named
) -> None:
    """Lightning failed in configure_optimizers, "'SGD' object is not callable" or "'SEF' object
    is not iterable", once the Trainer had set up."""
    model = SEF("small_cnn", num_classes=3, groups=2)
    with pytest.raises(TypeError, match=f"optimizer must be a function .*{named}"):
        SEFLightningModule(model, optimizer=given(model))


def test_a_scheduler_built_already_is_refused_when_the_module_is_built() -> None:
    model = SEF("small_cnn", num_classes=3, groups=2)
    built = torch.optim.lr_scheduler.StepLR(torch.optim.SGD(model.parameters(), lr=0.1), 1)
    with pytest.raises(TypeError, match=r"scheduler must be a function .*not StepLR\(\.\.\.\)"):
        SEFLightningModule(model, scheduler=built)


def test_an_optimizer_that_leaves_out_the_group_heads_is_warned_of() -> None:
    """A parameter group per part (a lower lr for the backbone) that forgot the group heads
    trained silently without them."""
    model = SEF("small_cnn", num_classes=3, groups=2)

    def parts(model):
        groups = [{"params": model.backbone.parameters(), "lr": 0.001}]
        return torch.optim.SGD([*groups, {"params": model.head.parameters()}], lr=0.1)

    with pytest.warns(UserWarning, match="leaves out 4 trainable parameter tensors of model.gro"):
        SEFLightningModule(model, optimizer=parts).configure_optimizers()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SEFLightningModule(model).configure_optimizers()


def test_a_model_that_is_no_sef_is_refused_when_the_module_is_built() -> None:
    """A plain network met "'Sequential' object has no attribute 'groups'"."""
    with pytest.raises(TypeError, match=r"^expected an sef.SEF \(or one wrapped by DDP or torch"):
        SEFLightningModule(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)))
    SEFLightningModule(torch.compile(SEF("small_cnn", num_classes=3, groups=2)))
