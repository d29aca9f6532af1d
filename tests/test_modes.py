"""Looking at a model leaves every submodule in the mode its owner put it in: a BatchNorm frozen
with .eval() for fine-tuning stays frozen after sef builds, probes or evaluates the model."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import nn
from torch.utils.data import Dataset, TensorDataset

import sef
from sef.adapters import timm_features
from sef.analysis import backbone_features
from sef.modes import evaluation_mode


def _freeze_batchnorm(model: nn.Module) -> list[nn.Module]:
    """Train mode with every BatchNorm in eval mode: the usual frozen-BN fine-tuning set-up."""
    model.train()
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.eval()
    return norms


def _modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def test_evaluation_mode_restores_each_submodules_mode_on_leaving_and_on_errors():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout())
    _freeze_batchnorm(model)
    before = _modes(model)
    assert before == [True, True, False, True]
    with evaluation_mode(model):
        assert not any(_modes(model))
    assert _modes(model) == before
    with pytest.raises(KeyError), evaluation_mode(model):
        raise KeyError("inside")
    assert _modes(model) == before


def test_building_an_sef_from_a_module_keeps_its_frozen_batchnorm_frozen():
    backbone = nn.Sequential(*list(torchvision.models.resnet18().children())[:-2])
    norms = _freeze_batchnorm(backbone)
    model = sef.SEF(backbone, num_classes=4, groups=2)
    assert not any(norm.training for norm in norms)
    assert backbone[0].training  # the rest still trains
    backbone_features(model, torch.zeros(1, 3, 32, 32))
    assert not any(norm.training for norm in norms)


def test_adapting_a_timm_model_keeps_its_frozen_batchnorm_frozen():
    model = timm.create_model("resnet18", num_classes=0)
    norms = _freeze_batchnorm(model)
    timm_features(model, image_size=32)
    assert model.training and not any(norm.training for norm in norms)


class _Failing(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int):
        if index == 2:
            raise OSError("image 2 is unreadable")
        return torch.zeros(3, 32, 32), 0


def test_evaluate_keeps_frozen_batchnorm_frozen_and_restores_modes_after_an_error():
    model = sef.SEF("resnet18", num_classes=3, groups=2)
    norms = _freeze_batchnorm(model)
    before = _modes(model)
    images = TensorDataset(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0]))
    sef.evaluate(model, images, batch_size=2, progress=False)
    assert _modes(model) == before and not any(norm.training for norm in norms)
    with pytest.raises(OSError, match="unreadable"):
        sef.evaluate(model, _Failing(), batch_size=2, progress=False)
    assert _modes(model) == before
