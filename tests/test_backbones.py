"""Backbone weights: torchvision names, local files, safe loading, downloads, timm."""

import errno
import hashlib
import re

import pytest
import timm
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
    with pytest.raises(WeightsError, match="does not match resnet18: 96 unexpected keys") as error:
        sef.SEF("resnet18", num_classes=3, weights=path)
    assert "missing" not in str(error.value)  # not "0 missing keys (e.g. [])"


@pytest.mark.parametrize("backbone", ["small_cnn", "timm:resnet18"])
def test_a_whole_sef_state_dict_as_weights_is_told_how_to_load(tmp_path, backbone):
    """It listed the backbone's keys as missing and the model's as unexpected, and asked for
    "the full Sequential state dict" (small_cnn)."""
    torch.save(sef.SEF(backbone, num_classes=3, groups=2).state_dict(), tmp_path / "sef.pth")
    told = rf"holds a whole sef.SEF's state dict, not {backbone}'s.*model.load_state_dict\(torch"
    with pytest.raises(WeightsError, match=told):
        sef.SEF(backbone, num_classes=3, groups=2, weights=tmp_path / "sef.pth")


def test_a_weights_path_under_the_home_folder_may_start_with_a_tilde(tmp_path, monkeypatch):
    """``--set model.weights=~/r18.pth`` reaches sef with its ~: it said the file did not exist."""
    monkeypatch.setenv("HOME", str(tmp_path))
    state = resnet18_state()
    torch.save(state, tmp_path / "r18.pth")
    assert_backbone_holds(sef.SEF("resnet18", num_classes=3, weights="~/r18.pth"), state)
    torch.save(_timm_state("resnet18"), tmp_path / "timm18.pth")
    assert sef.SEF("timm:resnet18", num_classes=3, weights="~/timm18.pth").channels == 512


def test_a_weight_name_for_a_module_backbone_is_refused_as_a_name():
    """It said 'weights file IMAGENET1K_V1 does not exist', as if a file had been meant."""
    features = torch.nn.Sequential(*list(torchvision.models.resnet18().children())[:-2])
    with pytest.raises(WeightsError, match="nn.Module backbone takes weights from a file only"):
        sef.SEF(features, num_classes=3, weights="IMAGENET1K_V1")


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


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (OSError(errno.EROFS, "Read-only file system", "/home/me/.cache"),
         "cannot write /home/me/.cache: read-only file system; set TORCH_HOME to a folder you "
         "can write"),
        (OSError(errno.ENOSPC, "No space left on device"),
         "cannot write {hub}: no space left on device; free some space there or set TORCH_HOME "
         "to a folder you can write"),
    ],
    ids=["read-only", "full"],
)  # fmt: skip
def test_a_download_cache_that_cannot_be_written_names_the_setting_that_moves_it(
    tmp_path, monkeypatch, error, said
):
    """A read-only or full home folder was told to fetch the file 'on a machine without internet'
    and copy it into the very cache that could not be written."""

    def download(*args, **kwargs):
        raise error

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    url = ResNet18_Weights.IMAGENET1K_V1.url
    with pytest.raises(WeightsError) as info:
        sef.SEF("resnet18", num_classes=3, weights="IMAGENET1K_V1")
    hub = tmp_path / "torch-home" / "hub" / "checkpoints"
    assert str(info.value) == (
        f"could not download IMAGENET1K_V1 weights for resnet18: {said.format(hub=hub)}, or fetch "
        f"{url} elsewhere and pass its path as weights=PATH (--weights PATH)"
    )


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(ValueError, match="resnet50.*wide_resnet50_2"):
        sef.SEF("resnet9000", num_classes=3)


@pytest.mark.parametrize(
    "name, meant",
    [
        ("resnet5", "did you mean 'resnet50', "),
        ("ResNet50", "did you mean 'resnet50'"),
        ("timm:resnet5", "unknown timm model 'resnet5'; did you mean 'resnet50', "),
        ("timm:", "^'timm:' names no timm model; pass 'timm:<model>', e.g. 'timm:resnet50'$"),
    ],
)
def test_a_misspelt_backbone_is_told_the_names_it_is_close_to(name, meant):
    with pytest.raises(ValueError, match=meant):
        sef.SEF(name, num_classes=3)


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "resnet50d", "resnet18.a1_in1k"])
def test_a_timm_name_without_its_prefix_is_told_to_add_it(name):
    """It was refused with every torchvision name sef knows, and no word of timm:NAME."""
    with pytest.raises(ValueError) as error:
        sef.SEF(name, num_classes=3)
    assert str(error.value) == (
        f"unknown backbone {name!r}: it is a timm model; pass 'timm:{name}'"
    )


@pytest.mark.parametrize(
    "name, instead",
    [("googlenet", "transform_input, .*'timm:inception_v3'"), ("swin_t", "'timm:swin_tiny")],
)
def test_a_torchvision_model_sef_cannot_cut_is_not_called_unknown(name, instead):
    """They were told to choose among every name sef knows ('did you mean alexnet?' for
    googlenet) or to pass their layers, which skips GoogLeNet's and Inception's input rescaling."""
    with pytest.raises(ValueError, match=f"torchvision's {name} has no sef recipe") as error:
        sef.SEF(name, num_classes=3)
    said = str(error.value)
    assert re.search(instead, said) and "unknown" not in said and "\n" not in said


@pytest.mark.parametrize(
    "name, reads_the_map",  # the layer of torchvision's model whose input is the map or its mean
    [
        ("mnasnet0_5", "classifier"),
        ("shufflenet_v2_x0_5", "fc"),
        ("squeezenet1_1", "classifier"),
    ],
)
def test_more_torchvision_families_give_the_map_their_classifier_reads(name, reads_the_map):
    """These were refused: sef had no recipe for their last feature map."""
    images = torch.randn(1, 3, 64, 64)
    torch.manual_seed(0)
    full = torchvision.models.get_model(name).eval()
    read = []
    full.get_submodule(reads_the_map).register_forward_hook(lambda m, args, out: read.append(args))
    torch.manual_seed(0)  # the same weights
    model = sef.SEF(name, num_classes=3, groups=2).eval()
    with torch.no_grad():
        full(images)
        features = model.feature_map(images)
    expected = read[0][0]
    torch.testing.assert_close(features if expected.dim() == 4 else features.mean((2, 3)), expected)


def test_timm_models_work_through_forward_features():
    model = sef.SEF("timm:resnet18", num_classes=4, groups=2)
    out = model.train()(torch.randn(2, 3, 64, 64))
    assert model.channels == 512 and out.group_logits.shape == (2, 2, 4)
    with pytest.raises(ValueError, match="unknown timm model"):
        sef.SEF("timm:not_a_model", num_classes=4)


def _hub_tags_loaded(monkeypatch):
    """The pretrained tags timm is asked to load, each time, in place of a download (the hub
    taken as reachable, whatever this machine's network)."""
    loaded = []
    monkeypatch.setattr(sef.timm_backbones, "unreachable", lambda uri: None)
    monkeypatch.setattr(
        timm.models._builder,
        "load_pretrained",
        lambda model, pretrained_cfg=None, **_: loaded.append(pretrained_cfg["tag"]),
    )
    return loaded


def test_a_timm_weights_name_chooses_among_timms_own_and_another_is_refused(monkeypatch):
    """Any name that is not a file meant timm's default weights: a typo or another tag
    silently loaded them."""
    loaded = _hub_tags_loaded(monkeypatch)
    for weights in ("DEFAULT", "IMAGENET1K_V1", "a2_in1k", "resnet18.tv_in1k"):
        sef.SEF("timm:resnet18", num_classes=3, weights=weights)
    assert loaded == ["a1_in1k", "a1_in1k", "a2_in1k", "tv_in1k"]
    cases = {
        ("timm:resnet18", "SOMETHING_WRONG"): r"unknown weights 'SOMETHING_WRONG' for "
        r"timm:resnet18; use one of DEFAULT \(timm's a1_in1k\), a1_in1k, a2_in1k, .*tv_in1k, "
        r"a file path, or None$",
        ("timm:resnet18", "resnet34.a1_in1k"): "unknown weights 'resnet34.a1_in1k'",
        ("timm:resnet18.a1_in1k", "a2_in1k"): r"DEFAULT \(timm's a1_in1k\), a1_in1k, a file",
        ("timm:cspresnet50d", "DEFAULT"): "timm has no pretrained weights for timm:cspresnet50d",
    }
    for (name, weights), message in cases.items():
        with pytest.raises(WeightsError, match=message):
            sef.SEF(name, num_classes=3, weights=weights)
    assert len(loaded) == 4


def test_a_failed_timm_download_names_where_it_came_from(monkeypatch):
    # it said "copy it to <torch hub>/checkpoints/the timm hub entry of resnet18"
    def offline(model, **_):
        raise OSError("no connection")

    monkeypatch.setattr(timm.models._builder, "load_pretrained", offline)
    monkeypatch.setattr(sef.timm_backbones, "unreachable", lambda uri: None)
    with pytest.raises(WeightsError) as error:
        sef.SEF("timm:resnet18", num_classes=3, weights="a2_in1k")
    assert str(error.value) == (
        "could not download a2_in1k weights for timm:resnet18 from "
        "https://huggingface.co/timm/resnet18.a2_in1k (no connection); on a machine without "
        "internet, fetch that file elsewhere and pass its path as weights=PATH (--weights PATH)"
    )


def test_timm_hub_weights_whose_server_takes_no_connection_stop_at_once(monkeypatch):
    # without network, the Hugging Face client retried for 65 s before sef's one line; weights
    # in its cache, or HF_HUB_OFFLINE, need no server and still load
    import huggingface_hub

    from sef import network

    tried = []
    monkeypatch.setattr(network, "_proxied", lambda url: False)
    monkeypatch.setattr(network, "_no_connection", lambda *server: tried.append(server) or "down")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    loaded = []
    monkeypatch.setattr(timm.models._builder, "load_pretrained", lambda *a, **k: loaded.append(1))
    with pytest.raises(WeightsError) as error:
        sef.SEF("timm:resnet18", num_classes=3, weights="a2_in1k")
    assert str(error.value) == (
        "could not download a2_in1k weights for timm:resnet18 from "
        "https://huggingface.co/timm/resnet18.a2_in1k (huggingface.co:443 takes no connection: "
        "down); on a machine without internet, fetch that file elsewhere and pass its path as "
        "weights=PATH (--weights PATH)"
    )
    assert tried == [("huggingface.co", 443)] and loaded == []
    cached = "/hf/models--timm--resnet18.a2_in1k/snapshots/x/model.safetensors"
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: cached)
    sef.SEF("timm:resnet18", num_classes=3, weights="a2_in1k")
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    sef.SEF("timm:resnet18", num_classes=3, weights="a2_in1k")
    assert len(tried) == 1 and len(loaded) == 2


def test_a_timm_name_with_a_tag_timm_does_not_have_is_refused_in_one_line():
    # timm's RuntimeError 'Invalid pretrained tag (bogus) for resnet18.' came as a traceback
    with pytest.raises(
        ValueError,
        match=r"no tag 'bogus' for resnet18 \(timm:resnet18.bogus\); use "
        r"timm:resnet18 or timm:resnet18.TAG with TAG one of a1_in1k, .*gluon_in1k$",
    ):
        sef.SEF("timm:resnet18.bogus", num_classes=3, weights=None)
    assert sef.SEF("timm:resnet18.tv_in1k", num_classes=3, weights=None).channels == 512


def test_a_timm_cnn_whose_first_conv_follows_a_space_to_depth_stem_takes_rgb_images():
    """TResNet's first convolution takes the 48 channels of its space-to-depth stem: sef probed
    it with a 48-channel image and refused timm:tresnet_m ('cannot run on 224 px images')."""
    small = {"layers": [1, 1, 1, 1], "width_factor": 0.25}
    model = sef.SEF("timm:tresnet_m", 3, groups=2, image_size=64, backbone_args=small)
    assert model.image_channels == model.export().image_channels == 3
    assert model.train()(torch.zeros(2, 3, 64, 64)).features.shape == (2, 512, 2, 2)


def test_a_timm_cnn_is_checked_at_the_image_size_it_will_see():
    # it was checked at its own 299 px only, and the first batch of 64 px failed in a traceback
    with pytest.raises(ValueError, match=r"^timm:inception_v3 cannot run on 64 px images \("):
        sef.SEF("timm:inception_v3", num_classes=3, image_size=64)
    assert sef.SEF("timm:inception_v3", num_classes=3, image_size=96).channels == 2048


def test_a_timm_cnn_refuses_a_pooling_of_its_own():
    # global_pool='max' was silently ignored: sef pools a CNN's map by its mean
    for name in ("timm:resnet18", "timm:convnext_atto"):
        with pytest.raises(
            ValueError,
            match=rf"^{name} is a CNN, whose map sef pools by its mean, "
            r"not by backbone_args global_pool='max'; leave global_pool out$",
        ):
            sef.SEF(name, num_classes=3, backbone_args={"global_pool": "max"})
    assert sef.SEF("timm:resnet18", 3, backbone_args={"global_pool": "avg"}).channels == 512


def _busy_batchnorm(model):
    """Eval-mode BN statistics that keep activations of order 1 through a random deep net."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_var.uniform_(0.02, 0.05)
            module.running_mean.uniform_(-0.1, 0.1)
            module.bias.data.uniform_(0, 0.2)
    return model.eval()


def test_output_stride_16_doubles_the_map_and_keeps_the_old_one_on_every_second_cell():
    torch.manual_seed(0)
    plain = _busy_batchnorm(sef.SEF("mobilenet_v2", num_classes=3))
    dilated = sef.SEF("mobilenet_v2", num_classes=3, output_stride=16)
    dilated.load_state_dict(plain.state_dict())  # the same tensors: only strides and dilations
    dilated.eval()
    images = torch.randn(2, 3, 96, 112)
    with torch.no_grad():
        old, new = plain.backbone(images), dilated.backbone(images)
    assert old.shape == (2, 1280, 3, 4) and new.shape == (2, 1280, 6, 7)
    assert old.abs().mean() > 0.5  # a map with something in it
    # a stride-2 conv followed by convs of dilation 1 == stride 1, then dilation 2, subsampled
    torch.testing.assert_close(new[..., ::2, ::2], old, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(new[..., 1::2, ::2], old)


def test_output_stride_is_refused_where_it_is_not_implemented():
    with pytest.raises(ValueError, match="output_stride=16 is available for mobilenet_v2"):
        sef.SEF("resnet18", num_classes=3, output_stride=16)
    with pytest.raises(ValueError, match="must be 16 or None"):
        sef.SEF("mobilenet_v2", num_classes=3, output_stride=8)


def test_a_timm_cnn_is_pointed_to_timms_own_output_stride():
    # refused without a word of timm's own output_stride, which works
    pytest.importorskip("timm")
    with pytest.raises(ValueError, match=r"not 'timm:resnet18'; timm's own .*'output_stride': 16"):
        sef.SEF("timm:resnet18", num_classes=3, output_stride=16)
    model = sef.SEF("timm:resnet18", 3, image_size=64, backbone_args={"output_stride": 16})
    assert model.feature_map(torch.zeros(1, 3, 64, 64)).shape == (1, 512, 4, 4)


def test_a_torchvision_weights_enum_is_taken_like_its_name(monkeypatch):
    built = []
    monkeypatch.setattr(
        sef.backbones, "_build", lambda name, weights, stride: built.append(weights)
    )
    sef.backbones.torchvision_model("resnet18", ResNet18_Weights.IMAGENET1K_V1)
    sef.backbones.torchvision_model("resnet18", "IMAGENET1K_V1")
    assert built == [ResNet18_Weights.IMAGENET1K_V1] * 2


def test_a_weights_file_with_a_tensor_of_another_shape_is_refused_in_one_line(tmp_path):
    state = resnet18_state()
    state["conv1.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(state, tmp_path / "odd.pth")
    with pytest.raises(WeightsError, match=r"does not match resnet18: size mismatch for conv1"):
        sef.SEF("resnet18", num_classes=3, weights=tmp_path / "odd.pth")


@pytest.mark.parametrize("classes", [7, 0])  # a head for 7 classes (own fine-tuning), none
def test_a_torchvision_weights_file_loads_whatever_its_classifier(tmp_path, classes):
    torch.manual_seed(0)
    state = torchvision.models.resnet18(num_classes=max(classes, 1)).state_dict()
    if classes == 0:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    torch.save(state, tmp_path / "own.pth")
    assert_backbone_holds(sef.SEF("resnet18", num_classes=3, weights=tmp_path / "own.pth"), state)
    vgg = torchvision.models.vgg11(num_classes=5).state_dict()  # a classifier of three layers
    torch.save({k: v for k, v in vgg.items() if k != "classifier.6.bias"}, tmp_path / "vgg.pth")
    model = sef.SEF("vgg11", num_classes=3, weights=tmp_path / "vgg.pth")
    torch.testing.assert_close(model.backbone[0].weight, vgg["features.0.weight"])
    state.pop("layer4.1.bn2.running_var")  # the feature map's weights must all be there
    torch.save(state, tmp_path / "short.pth")
    with pytest.raises(
        WeightsError, match=r"1 missing key \(e\.g\. \['layer4\.1\.bn2\.running_var"
    ):
        sef.SEF("resnet18", num_classes=3, weights=tmp_path / "short.pth")


def _timm_state(name: str, **kwargs) -> dict:
    torch.manual_seed(1)
    return timm.create_model(name, **kwargs).state_dict()


@pytest.mark.parametrize("classes", [1000, 7, 0])  # timm's head, another head, none
def test_a_timm_weights_file_of_the_model_loads_whatever_its_classifier(tmp_path, classes):
    state = _timm_state("resnet18", num_classes=classes)
    torch.save(state, tmp_path / "r18.pth")
    model = sef.SEF("timm:resnet18", num_classes=3, weights=tmp_path / "r18.pth")
    torch.testing.assert_close(model.backbone.model.conv1.weight, state["conv1.weight"])
    torch.testing.assert_close(
        model.backbone.model.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"]
    )


def test_a_timm_weights_file_that_does_not_fit_is_refused_in_one_line(tmp_path):
    """timm loads a file non-strictly and only logs what it could not place: sef refuses it."""
    torch.save({"foo": torch.zeros(1)}, tmp_path / "unrelated.pth")
    torch.save(_timm_state("resnet18"), tmp_path / "r18.pth")
    odd = _timm_state("resnet18")
    odd["conv1.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(odd, tmp_path / "odd.pth")
    cases = {
        ("timm:resnet18", "unrelated.pth"): r"100 missing keys \(e.g. \['conv1.weight'.*1 unexp",
        ("timm:resnet34", "r18.pth"): r"missing keys \(e.g. \['layer1.2.conv1.weight'",
        ("timm:resnet18", "odd.pth"): r"size mismatch for conv1.weight",
        ("timm:resnet18", "nope.pth"): r"nope.pth does not exist",
    }
    for (name, file), message in cases.items():
        with pytest.raises(WeightsError, match=message):
            sef.SEF(name, num_classes=3, weights=tmp_path / file)


@pytest.mark.parametrize(
    ("name", "dropped"), [("convnext_atto", ("head",)), ("mobilenetv3_small_050", ("conv_head",))]
)
def test_timm_cnn_head_layers_sef_never_uses_are_removed_so_every_weight_trains(name, dropped):
    """SEF pools the mean of a CNN's last map: a head's conv_head or norm would get no gradient
    (DistributedDataParallel stops on such weights) and would count as deployed."""
    torch.manual_seed(0)
    twin = timm.create_model(name, num_classes=0).eval()
    model = sef.SEF(f"timm:{name}", num_classes=3, groups=2)
    assert model.backbone.dropped == dropped
    model.backbone.model.load_state_dict(twin.state_dict(), strict=False)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # the same map as timm's forward_features
        torch.testing.assert_close(model.eval().feature_map(images), twin.forward_features(images))
    output = model.train()(images)
    sef.SEFLoss(2)(output, torch.tensor([0, 1]))["total"].backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    assert model.parameter_counts()["deployed"] == sum(
        p.numel() for p in model.export().parameters()
    )
    old = model.state_dict()  # a checkpoint saved before the head was dropped still loads
    head = {f"backbone.model.{k}": v for k, v in twin.state_dict().items() if k.startswith(dropped)}
    assert head
    model.load_state_dict({**old, **head})


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_a_timm_model_in_another_dtype_is_checked_in_its_own_dtype(dtype):
    model = timm.create_model("resnet18", num_classes=0).to(dtype)
    adapter = sef.adapters.timm_features(model, image_size=32)
    assert adapter.channels == 512


@pytest.mark.parametrize(
    "name",
    [
        *("resnet18", "vgg11", "densenet121", "efficientnet_b0", "mobilenet_v3_small"),
        *("convnext_tiny", "alexnet"),
    ],
)
def test_a_torchvision_backbone_yields_its_last_conv_map_not_a_pooled_one(name):
    sizes = []
    with torch.device("meta"):  # shapes only
        backbone = sef.create_backbone(name)
        for conv in (m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d)):
            conv.register_forward_hook(lambda m, args, out: sizes.append(out.shape[-2:]))
        features = backbone(torch.zeros(1, 3, 64, 64))
    assert features.shape[-2:] == sizes[-1]
