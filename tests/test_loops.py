"""SEF in a loop that calls ``loss_fn(model(x), y)``: SEFCriterion in a plain loop and in timm's
ClassificationTask (what timm's train_one_epoch calls each step), on the CPU."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import sef
from sef.integrations.loops import SEFCriterion

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "timm_train_one_epoch.py"


def _batch(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(6, 3, size, size), torch.tensor([0, 1, 2, 0, 1, 2])


def test_the_criterion_is_eq_8_in_training_and_cross_entropy_on_plain_logits() -> None:
    images, labels = _batch()
    model = sef.SEF("small_cnn", num_classes=3, groups=2).train()
    loss = sef.SEFLoss(groups=2, phi=0.1)
    criterion = SEFCriterion(loss)
    output = model(images)
    total = criterion(output, labels)
    assert total.dim() == 0 and total.requires_grad
    terms = loss(output, labels)
    assert torch.equal(total, terms["total"])
    assert set(criterion.terms) == {"ce", "entropy", "distill", "group", "total"}
    assert not any(value.requires_grad for value in criterion.terms.values())
    logits = model.eval()(images)  # eval mode: plain logits, as a validation loop sees them
    expected = torch.nn.functional.cross_entropy(logits, labels)
    assert torch.equal(criterion(logits, labels), expected)


def test_int32_labels_work_on_plain_logits_as_in_training() -> None:
    # SEFLoss took them in training; validation's cross_entropy raised torch's RuntimeError
    images, labels = _batch()
    model = sef.SEF("small_cnn", num_classes=3, groups=2)
    criterion = SEFCriterion(sef.SEFLoss(groups=2))
    assert torch.isfinite(criterion(model.train()(images), labels.int()))
    logits = model.eval()(images)
    assert torch.equal(criterion(logits, labels.int()), criterion(logits, labels))


def test_soft_targets_train_and_validate_as_cross_entropy_with_probabilities() -> None:
    images, labels = _batch()
    model = sef.SEF("small_cnn", num_classes=3, groups=2).train()
    loss = sef.SEFLoss(groups=2, phi=0.1)
    criterion = SEFCriterion(loss)
    soft = 0.8 * torch.nn.functional.one_hot(labels, 3) + 0.2 / 3
    output = model(images)
    assert torch.equal(criterion(output, soft), loss(output, soft)["total"])
    logits = model.eval()(images)
    expected = torch.nn.functional.cross_entropy(logits, soft)
    torch.testing.assert_close(criterion(logits, soft), expected)
    with pytest.raises(ValueError, match=r"probabilities \[B, K\] = \(6, 3\) \(floats\), got"):
        criterion(logits, soft[:, :2])  # as in training: one line naming what it takes


def test_label_smoothing_smooths_class_indices_and_leaves_probabilities() -> None:
    images, labels = _batch()
    model = sef.SEF("small_cnn", num_classes=3, groups=2).train()
    loss = sef.SEFLoss(groups=2, phi=0.1)
    criterion = SEFCriterion(loss, label_smoothing=0.2)
    smoothed = 0.8 * torch.nn.functional.one_hot(labels, 3) + 0.2 / 3
    output = model(images)
    assert torch.equal(criterion(output, labels), loss(output, smoothed)["total"])
    assert torch.equal(criterion(output, smoothed), SEFCriterion(loss)(output, smoothed))
    logits = model.eval()(images)
    expected = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.2)
    torch.testing.assert_close(criterion(logits, labels.int()), expected)
    for eps in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match=rf"label_smoothing={eps} is invalid: it must be at"):
            SEFCriterion(loss, label_smoothing=eps)


@pytest.mark.parametrize(
    ("label", "said"),
    [
        (5, r"^target holds class 5 \(image 1\) but the logits have 3 classes: labels are 0 to"),
        (-100, r"^label_smoothing=0.1 cannot smooth the label -100 \(an image to skip\)"),
    ],
)
def test_labels_smoothing_cannot_take_are_named_in_one_line(label, said) -> None:
    """They stopped in one_hot's "Class values must be smaller than num_classes" (or "non-
    negative"): the class out of range went unnamed."""
    output = sef.SEF("small_cnn", num_classes=3, groups=2).train()(_batch(16)[0][:2])
    with pytest.raises(ValueError, match=said):
        SEFCriterion(sef.SEFLoss(2), label_smoothing=0.1)(output, torch.tensor([0, label]))


def test_timms_mixup_trains_sef_through_the_criterion_as_timms_losses_it_replaces() -> None:
    """train.py with --mixup/--cutmix/--smoothing: timm's Mixup makes the targets, the task
    calls the criterion, and its ce is SoftTargetCrossEntropy, the loss it replaces there;
    without mixing, its label_smoothing gives LabelSmoothingCrossEntropy's."""
    pytest.importorskip("timm.task")  # timm 1.0.25 and later
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
    from timm.task import ClassificationTask

    images, labels = _batch()
    model = sef.SEF("small_cnn", num_classes=3, groups=2)
    criterion = SEFCriterion(sef.SEFLoss(groups=2, phi=0.1), label_smoothing=0.1)
    task = ClassificationTask(model, criterion, verbose=False)
    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=3)
    mixed, targets = mixup(images, labels)
    assert targets.shape == (6, 3) and targets.dtype == torch.float32
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    task.get_trainable_module().train()
    result = task(mixed, targets)
    result["loss"].backward()
    optimizer.step()
    assert torch.isfinite(result["loss"])
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    timms = SoftTargetCrossEntropy()(result["output"].logits, targets)
    torch.testing.assert_close(criterion.terms["ce"], timms)  # Mixup smoothed them: not again
    output = model(images)
    criterion(output, labels)
    timms = LabelSmoothingCrossEntropy(0.1)(output.logits, labels)
    torch.testing.assert_close(criterion.terms["ce"], timms)


def test_timms_classification_task_trains_a_timm_backbone_with_sef() -> None:
    from timm.task import ClassificationTask
    from timm.utils import accuracy

    images, labels = _batch(64)  # a 2 x 2 map: at 32 px (1 x 1) the group loss has no gradient
    model = sef.SEF("timm:resnet18", num_classes=3, groups=4)
    task = ClassificationTask(model, SEFCriterion(sef.SEFLoss(groups=4)), verbose=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    heads = [p.detach().clone() for p in model.group_heads.parameters()]
    task.get_trainable_module().train()
    for _ in range(3):  # train_one_epoch's step: result = task(input, target); backward; step
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the 1 x 1 map's warning among them
            result = task(images, labels)
        result["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
    assert isinstance(result["output"], sef.SEFOutput) and torch.isfinite(result["loss"])
    assert task.criterion.terms["group"] > 0
    after = list(model.group_heads.parameters())
    assert not any(map(torch.equal, heads, after))  # the loss reached the group heads
    evaluated = task.get_eval_model().eval()  # what timm's validate calls
    with torch.no_grad():
        logits = evaluated(images)
    assert logits.shape == (6, 3)
    (top1,) = accuracy(logits, labels, topk=(1,))
    torch.testing.assert_close(model.export()(images), logits)
    assert 0 <= top1.item() <= 100


@pytest.mark.slow
def test_the_example_drives_timms_own_train_one_epoch(demo_root: Path) -> None:
    """timm's train.py is not in its wheel: point SEF_TIMM_TRAIN_PY at a clone's to run this."""
    train_py = os.environ.get("SEF_TIMM_TRAIN_PY")
    if not train_py:
        pytest.skip("SEF_TIMM_TRAIN_PY is not set (the train.py of a pytorch-image-models clone)")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), train_py, "--epochs", "1", "--per-class", "4"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "epoch 0: train loss" in done.stdout and "exported the plain network" in done.stdout


def test_the_example_without_train_py_says_what_to_pass(tmp_path: Path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("timm_train_one_epoch", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    missing = tmp_path / "train.py"
    with pytest.raises(SystemExit) as stop:  # was a FileNotFoundError traceback
        example.main([str(missing)])
    assert stop.value.code == 2
    assert (
        capsys.readouterr()
        .err.splitlines()[-1]
        .endswith(f": error: {missing} is not a file: pass a pytorch-image-models clone's train.py")
    )
