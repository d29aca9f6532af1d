"""Backbone weights: torchvision names, local files, safe loading, downloads, timm."""

import hashlib

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torchvision.models import ResNet18_Weights

import sef
from sef.errors import WeightsError


def resnet18_state(seed=0):
    torch.manual_seed(seed)
    return torchvision.models.resnet18().state_dict()


def assert_backbone_holds(model, state):
    torch.testing.assert_close(model.backbone[0].weight, state["conv1.weight"])
    torch.testing.assert_close(
        model.backbone[7][1].bn2.running_var, state["layer4.1.bn2.running_var"]
    )


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_weights_file_is_loaded(tmp_path, suffix):
    state = resnet18_state()
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    assert_backbone_holds(sef.SEF("resnet18", num_classes=3, weights=path), state)


def test_weights_file_for_another_model_is_refused(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), path)
    with pytest.raises(WeightsError, match="does not match resnet18"):
        sef.SEF("resnet18", num_classes=3, weights=path)


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        sef.SEF("resnet18", num_classes=3, weights=tmp_path / "nope.pth")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_code_in_a_weights_file_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": _Payload(str(marker))}, path)
    with pytest.raises(WeightsError, match="safely"):
        sef.SEF("resnet18", num_classes=3, weights=path)
    assert not marker.exists()


def test_unknown_weight_name_lists_the_valid_ones():
    with pytest.raises(WeightsError, match="IMAGENET1K_V1"):
        sef.SEF("resnet18", num_classes=3, weights="IMAGENET9K")


def test_named_weights_download_into_the_torch_hub_cache(tmp_path, http_server, monkeypatch):
    served, address = http_server
    state = resnet18_state(seed=3)
    staged = tmp_path / "staged.pth"
    torch.save(state, staged)
    digest = hashlib.sha256(staged.read_bytes()).hexdigest()
    name = f"resnet18-{digest[:8]}.pth"
    staged.rename(served / name)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(ResNet18_Weights.IMAGENET1K_V1.value, "url", f"{address}/{name}")
    model = sef.SEF("resnet18", num_classes=3, weights="IMAGENET1K_V1")
    assert_backbone_holds(model, state)
    assert (tmp_path / "torch-home" / "hub" / "checkpoints" / name).is_file()


def test_failed_download_explains_how_to_pass_a_local_file(tmp_path, http_server, monkeypatch):
    _, address = http_server
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    url = f"{address}/resnet18-f37072fd.pth"  # not served: 404
    monkeypatch.setattr(ResNet18_Weights.IMAGENET1K_V1.value, "url", url)
    with pytest.raises(WeightsError, match="pass its path as weights=PATH") as error:
        sef.SEF("resnet18", num_classes=3, weights="DEFAULT")
    assert url in str(error.value)


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(ValueError, match="resnet50.*wide_resnet50_2"):
        sef.SEF("resnet9000", num_classes=3)


def test_timm_models_work_through_forward_features():
    model = sef.SEF("timm:resnet18", num_classes=4, groups=2)
    out = model.train()(torch.randn(2, 3, 64, 64))
    assert model.channels == 512 and out.group_logits.shape == (2, 2, 4)
    with pytest.raises(ValueError, match="unknown timm model"):
        sef.SEF("timm:not_a_model", num_classes=4)
