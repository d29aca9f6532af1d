"""The SEF wrapper: outputs per mode, channel groups, export, backbones, parameter counts."""

import re
import warnings

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import sef
from sef.model import SEFOutput

ISSUE_BACKBONES = {  # name -> channels of its last feature map
    "resnet18": 512,
    "resnet34": 512,
    "resnet50": 2048,
    "resnet101": 2048,
    "resnet152": 2048,
    "resnext50_32x4d": 2048,
    "resnext101_32x8d": 2048,
    "wide_resnet50_2": 2048,
    "efficientnet_b0": 1280,
    "convnext_tiny": 768,
    "densenet121": 1024,
    "vgg16_bn": 512,
    "mobilenet_v3_large": 960,
}


@pytest.mark.parametrize("name, channels", ISSUE_BACKBONES.items())
def test_named_backbones_yield_their_feature_channels(name, channels):
    assert name in sef.available_backbones()
    with torch.device("meta"):  # shapes only: building real weights would cost seconds each
        model = sef.SEF(name, num_classes=10, groups=3)
        out = model.train()(torch.zeros(2, 3, 64, 64))
    assert model.channels == channels
    assert out.features.shape[:2] == (2, channels)
    assert out.group_logits.shape == (3, 2, 10)


@pytest.mark.parametrize("name", ["efficientnet_b0", "convnext_tiny", "densenet121"])
def test_non_resnet_backbones_train_and_export(name):
    model = sef.SEF(name, num_classes=4, groups=2)
    images = torch.randn(2, 3, 64, 64)
    out = model.train()(images)
    sef.SEFLoss(2)(out, torch.tensor([0, 3]))["total"].backward()
    model.eval()
    torch.testing.assert_close(model.export()(images), model(images), rtol=0, atol=0)


def test_train_mode_returns_sef_output_and_eval_mode_plain_logits():
    torch.manual_seed(0)
    model = sef.SEF("resnet18", num_classes=7, groups=3)
    images = torch.randn(2, 3, 64, 64)
    out = model.train()(images)
    assert isinstance(out, SEFOutput)
    assert out.logits.shape == (2, 7)
    assert out.group_logits.shape == (3, 2, 7)
    assert out.features.shape == (2, 512, 2, 2)
    model.eval()
    logits = model(images)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 7)
    torch.testing.assert_close(model.forward_sef(images).logits, logits)


@pytest.mark.slow
def test_torch_export_takes_a_train_mode_model_and_gives_its_outputs():
    """SEFOutput is a pytree node: torch.export keeps it, tree utilities see its tensors."""
    torch.manual_seed(0)
    model = sef.SEF("small_cnn", num_classes=5, groups=2).train()
    images = torch.randn(2, 3, 32, 32)
    exported = torch.export.export(model, (images,)).module()(images)
    expected = model(images)
    assert isinstance(exported, SEFOutput)
    for name in ("logits", "group_logits", "features"):
        assert torch.allclose(getattr(exported, name), getattr(expected, name), atol=1e-5), name
    leaves = torch.utils._pytree.tree_leaves(expected)
    assert [leaf.shape for leaf in leaves] == [(2, 5), (2, 2, 5), (2, 128, 4, 4)]


def test_a_data_parallel_replica_refuses_train_mode_in_one_line_and_runs_eval_mode():
    # torch.nn.parallel.replicate makes each GPU's copy with this call (it needs CUDA itself);
    # DataParallel's gather could not put SEFOutput back together, so the replica says so.
    model = sef.SEF("small_cnn", num_classes=3, groups=2)
    replica = model._replicate_for_data_parallel()
    images = torch.randn(2, 3, 32, 32)
    with pytest.raises(RuntimeError, match="DataParallel.*DistributedDataParallel") as caught:
        replica.train()(images)
    assert "\n" not in str(caught.value)
    model.eval()
    torch.testing.assert_close(replica.eval()(images), model(images), rtol=0, atol=0)
    assert isinstance(model.train()(images), SEFOutput)  # the original is untouched


def test_group_heads_see_only_their_own_channels():
    torch.manual_seed(0)
    model = sef.SEF("resnet18", num_classes=5, groups=3).eval()
    assert model.group_sizes == [170, 170, 172]
    images = torch.randn(1, 3, 32, 32)
    pooled = model.pool(model.backbone(images))
    expected = [
        model.group_heads[0](pooled[:, :170]),
        model.group_heads[1](pooled[:, 170:340]),
        model.group_heads[2](pooled[:, 340:]),
    ]
    torch.testing.assert_close(model.forward_sef(images).group_logits, torch.stack(expected))


def test_export_is_a_copy_that_training_the_model_on_leaves_unchanged():
    torch.manual_seed(0)
    model = sef.SEF(TinyCNN(), num_classes=3, groups=2).train()
    plain, images = model.export(), torch.randn(2, 3, 16, 16)
    assert model.training and not plain.training
    tensors = {id(t) for t in (*model.parameters(), *model.buffers())}
    assert not tensors & {id(t) for t in (*plain.parameters(), *plain.buffers())}
    before = plain(images).detach()
    sef.SEFLoss(2)(model(images), torch.tensor([0, 2]))["total"].backward()
    torch.optim.SGD(model.parameters(), lr=1.0).step()
    torch.testing.assert_close(plain(images), before, rtol=0, atol=0)
    assert not torch.equal(model.eval()(images), before)


def test_export_copies_a_tensor_the_backbone_kept_from_its_last_forward_pass_detached():
    """deepcopy refuses a tensor of an autograd graph: export() failed in torch's words after a
    training step of a backbone that keeps its last map (as a hook drawing CAMs does)."""

    class Keeping(TinyCNN):
        def forward(self, x):
            self.last_map = super().forward(x)
            return self.last_map

    model = sef.SEF(Keeping(), num_classes=3, groups=2).train()
    images = torch.randn(2, 3, 16, 16)
    model(images)
    plain = model.export()
    assert plain[0].last_map.grad_fn is None
    torch.testing.assert_close(plain(images), model.eval()(images), rtol=0, atol=0)


def test_export_matches_plain_torchvision_model_in_size_and_logits():
    torch.manual_seed(0)
    model = sef.SEF("resnet50", num_classes=200, groups=4).eval()
    plain = model.export()
    reference = torchvision.models.resnet50(num_classes=200)
    count = sum(p.numel() for p in plain.parameters())
    assert count == sum(p.numel() for p in reference.parameters())
    assert not any("group" in name for name, _ in plain.named_parameters())
    images = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(plain(images), model(images), rtol=0, atol=0)
    assert not plain.training
    # torchvision's resnet50 holding the same weights gives the same logits: its average pool and
    # its one fc layer are what the global head reads
    stages = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    state = {}
    for key, value in model.backbone.state_dict().items():
        index, rest = key.split(".", 1)
        state[f"{stages[int(index)]}.{rest}"] = value
    state |= {f"fc.{key}": value for key, value in model.head.state_dict().items()}
    reference.load_state_dict(state)
    torch.testing.assert_close(reference.eval()(images), plain(images))


def test_extra_parameters_are_the_papers_409600_weights_plus_biases():
    with torch.device("meta"):
        model = sef.SEF("resnet50", num_classes=200, groups=4)
    counts = model.parameter_counts()
    assert counts["group_head_weights"] == 409_600
    assert counts["group_head_biases"] == 4 * 200
    assert counts["extra"] == model.extra_parameters() == 2048 * 200 + 4 * 200
    assert round(100 * counts["group_head_weights"] / counts["deployed"], 1) == 1.7


class TinyCNN(nn.Module):
    def __init__(self, channels=12):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, stride=2)

    def forward(self, x):
        return self.conv(x).relu()


def test_any_module_that_yields_a_feature_map_is_a_backbone():
    model = sef.SEF(TinyCNN(), num_classes=3, groups=5)
    assert model.channels == 12 and model.group_sizes == [2, 2, 2, 2, 4]
    out = model.train()(torch.randn(2, 3, 16, 16))
    assert out.group_logits.shape == (5, 2, 3)


def test_one_group_works():
    model = sef.SEF(TinyCNN(), num_classes=3, groups=1)
    out = model.train()(torch.randn(2, 3, 16, 16))
    terms = sef.SEFLoss(1)(out, torch.tensor([0, 1]))
    assert torch.isfinite(terms["total"])


@pytest.mark.parametrize("groups", [0, 13, -2])
def test_bad_group_counts_are_value_errors_naming_the_channels(groups):
    with pytest.raises(ValueError, match="groups"):
        sef.SEF(TinyCNN(), num_classes=3, groups=groups)


def test_backbone_that_does_not_yield_a_feature_map_is_refused():
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        sef.SEF(nn.Sequential(TinyCNN(), nn.Flatten()), num_classes=3, groups=2)


class Returning(TinyCNN):
    """TinyCNN whose [B, 12, h, w] map is turned into something else by ``change``."""

    def __init__(self, change):
        super().__init__()
        self.change = change

    def forward(self, x):
        return self.change(super().forward(x))


@pytest.mark.parametrize(
    "change, fix",
    [
        (lambda x: x.mean((2, 3)), r"\(1, 12\), pooled .* nn.Sequential\(\*list\(resnet.children"),
        (lambda x: {"layer4": x}, r"dict \(1 entry\) .* return the last map alone"),
        (lambda x: [x, x], r"list \(2 entries\) .*features_only"),
        (lambda x: x.flatten(2).transpose(1, 2), r"tokens \[B, N, C\]\?; .*FeatureAdapter"),
        (lambda x: x.permute(0, 2, 3, 1), r"channels-last .*torchvision.ops.Permute\(\[0, 3, 1, 2"),
        (lambda x: x.squeeze(), r"\(12, 31, 31\) for a batch of one image: .*not the batch"),
        (
            lambda x: x.mean((2, 3), keepdim=True),  # the group loss then warned: larger images
            r"\(1, 12, 1, 1\) on blank 64 and 256 px images alike, pooled .*children\(\)\)\[:-2",
        ),
    ],
    ids=["classifier", "dict", "list", "tokens", "channels-last", "no-batch-axis", "pooled-1x1"],
)
def test_a_module_that_returns_no_feature_map_is_told_how_to_give_one(change, fix):
    with pytest.raises(
        ValueError, match=r"needs the backbone's last \[B, C, H, W\] feature map, but it returned"
    ) as caught:
        sef.SEF(Returning(change), num_classes=3, groups=2)
    assert re.search(fix, str(caught.value)) and "\n" not in str(caught.value)


def test_a_map_of_one_position_that_larger_images_enlarge_is_taken():
    strided = nn.Sequential(nn.Conv2d(3, 4, 64, stride=64), nn.ReLU())  # 1 x 1 at 64 px
    assert sef.SEF(strided, num_classes=3, groups=2).channels == 4


def test_bad_class_counts_are_value_errors():
    with pytest.raises(ValueError, match="num_classes"):
        sef.SEF(TinyCNN(), num_classes=0)
    with pytest.raises(ValueError, match="num_classes must be a positive integer, got True"):
        sef.SEF(TinyCNN(), num_classes=True)


def test_counts_of_any_integer_type_are_taken():
    """``len(np.unique(labels))`` and friends are numpy integers."""
    model = sef.SEF(TinyCNN(), num_classes=np.int64(3), groups=np.int32(2))
    assert (model.num_classes, model.groups) == (3, 2) and type(model.num_classes) is int
    assert sef.SEFLoss(np.int64(2)).groups == 2


def test_an_image_size_that_is_not_a_positive_integer_is_refused_in_one_line():
    for size in (0, -5, 64.0, (64, 96)):
        with pytest.raises(ValueError, match="image_size must be a positive integer, got"):
            sef.SEF("resnet18", num_classes=3, image_size=size)
    with pytest.raises(ValueError, match="image_size must be a positive integer, got 0"):
        sef.create_backbone("timm:resnet18", image_size=0)


def test_a_numpy_image_size_is_kept_as_an_int_the_export_can_write():
    model = sef.SEF("small_cnn", num_classes=3, groups=2, image_size=np.int64(48))
    assert type(model.architecture["image_size"]) is int


def test_a_backbone_is_probed_at_its_size_in_its_dtype_and_a_failed_probe_is_named():
    class Big(nn.Module):  # needs more than 64 px
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 9, stride=8)
            self.more = nn.Conv2d(6, 6, 9)

        def forward(self, x):
            return self.more(self.conv(x))

    with pytest.raises(ValueError, match="blank 3-channel 64 x 64 image, and that failed .* "
                                         "pass image_size= a size it takes"):  # fmt: skip
        sef.SEF(Big(), num_classes=3, groups=2)
    assert sef.SEF(Big(), num_classes=3, groups=2, image_size=128).channels == 6
    assert sef.SEF(TinyCNN().double(), num_classes=3, groups=2).channels == 12


@pytest.mark.parametrize("channels", [1, 4])  # grayscale, RGB + infrared
def test_a_backbone_for_images_of_other_than_three_channels_is_probed_with_its_own(channels):
    """The probe image had 3 channels: such a module was refused, told to change image_size."""
    backbone = nn.Sequential(nn.Conv2d(channels, 6, 3, stride=2), nn.ReLU())
    model = sef.SEF(backbone, num_classes=3, groups=2).train()
    out = model(torch.randn(2, channels, 16, 16))
    assert model.channels == 6 and out.features.shape == (2, 6, 7, 7)
    timm_model = sef.SEF("timm:resnet18", 3, groups=2, backbone_args={"in_chans": channels})
    assert timm_model.channels == 512


class LaterConvFirst(nn.Module):  # its first-registered conv is not its first layer
    def __init__(self):
        super().__init__()
        self.refine = nn.Conv2d(6, 6, 1)
        self.stem = nn.Conv2d(3, 6, 3, stride=2)

    def forward(self, x):
        return self.refine(self.stem(x))


def test_a_backbone_whose_first_registered_conv_is_not_its_first_layer_is_probed_with_rgb():
    assert sef.SEF(LaterConvFirst(), num_classes=3, groups=2).channels == 6
    both = r"blank 6/3-channel 2 x 2 image, and that failed \(6 channels: .*; 3 channels: .*\);"
    with pytest.raises(ValueError, match=both):  # each failure said, the 3-channel one too
        sef.SEF(LaterConvFirst(), num_classes=3, groups=2, image_size=2)


def test_a_backbone_that_asserts_its_input_size_is_refused_with_the_size_to_pass():
    class Fixed(nn.Module):  # checks its input as torchvision's ViT and Swin do
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 3)

        def forward(self, x):
            torch._assert(
                x.shape[-1] == 32, f"Wrong image width! Expected 32 but got {x.shape[-1]}!"
            )
            return self.conv(x)

    with pytest.raises(ValueError, match=r"64 x 64 image, and that failed \(Wrong image width.*"
                                         "pass image_size= a size it takes"):  # fmt: skip
        sef.SEF(Fixed(), num_classes=3, groups=2)
    assert sef.SEF(Fixed(), num_classes=3, groups=2, image_size=32).channels == 6


def test_small_cnn_keeps_an_8x8_map_at_64_px_and_has_no_pretrained_weights():
    model = sef.SEF("small_cnn", num_classes=8, groups=2)
    assert "small_cnn" in sef.available_backbones()
    assert model.channels == 128
    assert model.train()(torch.randn(2, 3, 64, 64)).features.shape == (2, 128, 8, 8)
    with pytest.raises(sef.SEFError, match="small_cnn has no pretrained weights"):
        sef.SEF("small_cnn", num_classes=8, weights="IMAGENET1K_V1")


def test_a_state_dict_of_other_groups_is_refused_in_one_line_and_loads_without_its_heads():
    four, two = (sef.SEF(TinyCNN(), num_classes=3, groups=g) for g in (4, 2))
    said = r"^the state dict's group heads are for groups=4 and this SEF has groups=2: build it"
    for strict in (True, False):  # strict=False too: torch refuses heads of another size
        with pytest.raises(RuntimeError, match=said):
            two.load_state_dict(four.state_dict(), strict=strict)
    kept = {k: v for k, v in four.state_dict().items() if not k.startswith("group_heads.")}
    assert two.load_state_dict(kept, strict=False).unexpected_keys == []
    torch.testing.assert_close(two.head.weight, four.head.weight)


@pytest.mark.parametrize("wrapper", ["module.", "_orig_mod.", "module._orig_mod."])
def test_a_state_dict_of_a_wrapped_sef_names_the_wrappers_prefix_and_loads_stripped(wrapper):
    """DDP's and torch.compile's state dicts stopped in a list of every missing key."""
    saved, model = (sef.SEF(TinyCNN(), num_classes=3, groups=2) for _ in "ab")
    state = {wrapper + key: value for key, value in saved.state_dict().items()}
    said = rf"^the state dict is of a wrapped SEF \(its keys start with '{wrapper}'\): save"
    for strict in (True, False):
        with pytest.raises(RuntimeError, match=said):
            model.load_state_dict(state, strict=strict)
    nn.modules.utils.consume_prefix_in_state_dict_if_present(state, wrapper)
    model.load_state_dict(state)
    torch.testing.assert_close(model.head.weight, saved.head.weight)


def test_images_that_are_no_float_batch_are_refused_in_one_line_in_both_modes():
    """uint8 pixels met the convolution's "expected scalar type Byte but found Float", and one
    image without its batch dimension a shape error from deep in the backbone."""
    model = sef.SEF(TinyCNN(), num_classes=3, groups=2)
    image = torch.rand(3, 16, 16)
    for train in (True, False):
        model.train(train)
        with pytest.raises(ValueError, match=r"got shape \(3, 16, 16\): one image is images\.unsq"):
            model(image)
        with pytest.raises(TypeError, match=r"^images must be floats, .* got torch\.uint8: "):
            model((image * 255).to(torch.uint8).unsqueeze(0))
        with pytest.raises(TypeError, match=r"^images must be a tensor \[B, C, H, W\], got list"):
            model([image])
        assert model(image.unsqueeze(0)) is not None


@pytest.mark.parametrize("training", [True, False])
def test_a_backbone_of_other_channels_put_in_after_construction_says_so(training):
    """Replacing model.backbone failed deep in forward_sef with torch's split_with_sizes error."""
    model = sef.SEF(nn.Conv2d(3, 8, 1), num_classes=2, groups=2)
    model.backbone = nn.Conv2d(3, 6, 1)
    model.train(training)
    with pytest.raises(RuntimeError) as error:
        model(torch.rand(1, 3, 8, 8))
    assert str(error.value) == (
        "the backbone gives 6 channels, but the heads were built for C = 8: model.backbone was "
        "replaced by another network; build a new sef.SEF around the new backbone"
    )


@pytest.mark.parametrize("strict", [True, False])
def test_a_state_dict_with_no_key_of_an_sef_is_refused_in_one_line(strict):
    """A plain network's or an export's state dict loaded nothing with strict=False, silently,
    and with strict=True listed every key of the SEF as missing."""
    model = sef.SEF(TinyCNN(), num_classes=3, groups=2)
    said = r"^none of the state dict's 4 keys is one of this SEF's \('0\.conv\.weight', .*export"
    with pytest.raises(RuntimeError, match=said):
        model.load_state_dict(model.export().state_dict(), strict=strict)
    head = {"head.weight": model.head.weight.detach() + 1}
    assert model.load_state_dict(head, strict=False).unexpected_keys == []


def test_a_module_with_parameters_its_map_does_not_use_is_warned_of_once_built():
    """A module of one's own that kept its classifier trained without it, DDP stopped on its
    weights at the second step, and the export shipped them."""

    class KeptClassifier(TinyCNN):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(12, 3)

    with pytest.warns(UserWarning, match=r"^the backbone's fc \(2 parameter tensors\) get no gra"):
        sef.SEF(KeptClassifier(), num_classes=3, groups=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sef.SEF(KeptClassifier().requires_grad_(False), num_classes=3, groups=2)
        sef.SEF(TinyCNN(), num_classes=3, groups=2)
        with torch.inference_mode():  # no gradient recorded: nothing to tell
            sef.SEF(TinyCNN(), num_classes=3, groups=2)


def test_scripting_the_sef_itself_points_to_its_export():
    """torch.jit.script(model) stopped in "Unknown type name 'FeatureAdapter'" at a property."""
    model = sef.SEF(TinyCNN(), num_classes=3, groups=2).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch's, for jit.script
        with pytest.raises(TypeError, match=r"^torch.jit.script cannot compile an sef.SEF \(its"):
            torch.jit.script(model)
        torch.jit.script(model.export())


def test_the_heads_take_the_dtype_of_a_module_built_in_another():
    """A float64 (or half, or GPU) module met "mat1 and mat2 must have the same dtype" (or
    device) at its first forward pass: the heads were float32 on the CPU."""
    model = sef.SEF(TinyCNN().double(), num_classes=3, groups=2)
    assert model.head.weight.dtype == model.group_heads[1].bias.dtype == torch.float64
    assert model.eval()(torch.randn(2, 3, 16, 16, dtype=torch.float64)).dtype == torch.float64


def test_a_module_that_returns_more_than_its_map_in_train_mode_says_so_in_one_line():
    """Probed in eval mode it gave a map; in train mode its (map, aux) tuple stopped in
    "avg_pool2d(): argument 'input' (position 1) must be Tensor, not tuple"."""

    class WithAux(TinyCNN):
        def forward(self, x):
            features = super().forward(x)
            return (features, features.mean()) if self.training else features

    model = sef.SEF(WithAux(), num_classes=3, groups=2)
    with pytest.raises(TypeError, match=r"^the backbone returned tuple in train mode, not the \["):
        model.train()(torch.randn(2, 3, 16, 16))


def test_reading_the_training_output_as_logits_says_where_they_are():
    """A loop's output.argmax(1) on the training output met "'SEFOutput' object has no attribute
    'argmax'", which says nothing of output.logits or eval mode."""
    output = sef.SEF(TinyCNN(), num_classes=3, groups=2).train()(torch.randn(2, 3, 16, 16))
    with pytest.raises(AttributeError, match=r"^SEFOutput has no 'argmax': .*output.logits.argmax"):
        output.argmax(1)
    with pytest.raises(AttributeError, match=r"^'SEFOutput' object has no attribute 'other'$"):
        output.other  # noqa: B018


def test_a_batch_of_one_image_that_leaves_a_batchnorm_one_value_says_to_drop_it():
    """The last batch of an epoch, one image, stopped in torch's "Expected more than 1 value per
    channel when training", which says nothing of drop_last."""
    backbone = nn.Sequential(nn.Conv2d(3, 4, 16), nn.BatchNorm2d(4))  # 1 x 1 at 16 px
    model = sef.SEF(backbone, num_classes=3, groups=2).train()
    said = r"^a BatchNorm of the backbone got one value per channel in train mode \(got input"
    with pytest.raises(ValueError, match=rf"{said}.*1 image at 16 x 16 px .*drop_last=True"):
        model(torch.randn(1, 3, 16, 16))
    assert model(torch.randn(2, 3, 16, 16)).logits.shape == (2, 3)
