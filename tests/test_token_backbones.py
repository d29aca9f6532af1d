"""SEF on timm token backbones: the restored map, the pooled features, sizes, choices, errors.

Every family is a tiny random-initialised timm model (one block, small images), so each builds
in well under a second; each adapter is checked against the same timm model built separately
with the same weights and its tokens reshaped by hand.
"""

import pytest
import timm
import torch
from torch import nn

import sef
from sef.adapters import Pooled, TimmFeatures
from sef.config import apply_overrides, resolve_config
from sef.errors import ConfigError

SWIN_ARGS = {"depths": (1, 1), "num_heads": (1, 1), "embed_dim": 16}
BEIT_ARGS = {"depth": 1, "embed_dim": 32, "num_heads": 2}
# name -> (timm kwargs, image side, prefix tokens, by-hand pooling of (tokens or NHWC map, model))
FAMILIES = {
    "vit_tiny_patch16_224": ({"depth": 1}, 32, 1, lambda x, m: x[:, 0]),
    "deit_tiny_distilled_patch16_224": ({"depth": 1}, 32, 2, lambda x, m: (x[:, 0] + x[:, 1]) / 2),
    "vit_small_patch14_reg4_dinov2": ({"depth": 1}, 28, 5, lambda x, m: x[:, 0]),
    "eva02_tiny_patch14_224": ({"depth": 1}, 28, 1, lambda x, m: m.fc_norm(x[:, 1:].mean(1))),
    "beit_base_patch16_224": (BEIT_ARGS, 32, 1, lambda x, m: m.fc_norm(x[:, 1:].mean(1))),
    "swin_tiny_patch4_window7_224": (SWIN_ARGS, 64, None, lambda x, m: x.mean((1, 2))),
}


def build(name, pool=None, **extra):
    args, size, _, _ = FAMILIES[name]
    torch.manual_seed(0)
    model = sef.SEF(
        f"timm:{name}", 6, groups=3, image_size=size, backbone_args={**args, **extra}, pool=pool
    )
    return model.eval(), size


def twin(model: sef.SEF, name: str) -> nn.Module:
    """The same timm model built by timm alone, holding the SEF backbone's weights."""
    args, size, _, _ = FAMILIES[name]
    plain = timm.create_model(name, num_classes=0, img_size=size, **args)
    plain.load_state_dict(model.backbone.model.state_dict())
    return plain.eval()


@pytest.mark.parametrize("name", FAMILIES)
def test_map_and_pooled_features_match_timm_and_hand_computation(name):
    model, size = build(name)
    _, _, prefix, pool_by_hand = FAMILIES[name]
    plain = twin(model, name)
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        raw = plain.forward_features(images)
        out = model.forward_sef(images)
        expected_pooled = plain.forward_head(raw, pre_logits=True)
    if prefix is None:  # Swin: [B, H, W, C], channels last
        by_hand = raw.permute(0, 3, 1, 2)
    else:  # [B, N, C]: prefix tokens, then the patch grid row by row
        rows = cols = size // plain.patch_embed.patch_size[0]
        grid = torch.stack(
            [raw[:, prefix + r * cols : prefix + (r + 1) * cols] for r in range(rows)]
        )
        by_hand = grid.permute(1, 3, 0, 2)  # [rows, B, cols, C] -> [B, C, rows, cols]
    torch.testing.assert_close(out.features, by_hand, rtol=0, atol=0)
    torch.testing.assert_close(pool_by_hand(raw, plain), expected_pooled)
    torch.testing.assert_close(out.logits, model.head(expected_pooled))
    parts = expected_pooled.split(model.group_sizes, dim=1)
    heads = torch.stack([h(p) for h, p in zip(model.group_heads, parts, strict=True)])
    torch.testing.assert_close(out.group_logits, heads)
    with torch.no_grad():
        torch.testing.assert_close(model(images), out.logits)
        torch.testing.assert_close(model.export()(images), out.logits)
    assert model.channels == plain.num_features == out.features.shape[1]


def test_the_issues_examples_build_at_the_models_own_size():
    vit = sef.SEF("timm:vit_tiny_patch16_224", 10, groups=3)
    swin = sef.SEF("timm:swin_tiny_patch4_window7_224", 10, groups=3, backbone_args=SWIN_ARGS)
    assert vit.backbone.image_size == swin.backbone.image_size == 224
    out = vit.train()(torch.randn(2, 3, 224, 224))
    assert out.features.shape == (2, 192, 14, 14) and out.group_logits.shape == (3, 2, 10)
    assert vit.pooling == "class token (the model's head)"
    assert swin.pooling == "mean of the feature map (the model's head)"


def test_pool_choice_class_token_or_mean_of_patch_tokens():
    images = torch.randn(2, 3, 32, 32)
    avg, _ = build("vit_tiny_patch16_224", pool="avg")
    token, _ = build("vit_tiny_patch16_224", pool="token")
    with torch.no_grad():
        raw = avg.backbone(images)
        torch.testing.assert_close(avg.backbone.pool(raw), avg.feature_map(images).mean((2, 3)))
        torch.testing.assert_close(token.backbone.pool(raw), raw[:, 0])
    assert avg.pooling == "mean of the patch tokens (the model's head)"
    eva, _ = build("eva02_tiny_patch14_224", pool="token")
    assert eva.pooling == "class token, then the head's norm (the model's head)"
    with pytest.raises(ValueError) as refused:  # was timm's assertion text, "leave pool unset"
        build("deit_tiny_distilled_patch16_224", pool="avg")
    assert str(refused.value) == (
        "timm:deit_tiny_distilled_patch16_224 pools the mean of the class and distillation "
        "tokens, which its distilled head reads: pool may be 'token' or unset, not 'avg' (pool= "
        "in Python, model.pool in a config or --set model.pool=, sef info --pool)"
    )
    with pytest.raises(ValueError, match="has no class token.*may be 'avg' or unset.*model.pool"):
        build("swin_tiny_patch4_window7_224", pool="token")
    with pytest.raises(ValueError, match="needs a timm:<model> token backbone"):
        sef.SEF("resnet18", 3, pool="token")


@pytest.mark.parametrize("extra", [{}, {"fc_norm": True}])
def test_a_distilled_deit_says_it_pools_the_plain_mean_of_its_two_tokens(extra):
    """timm's distilled head reads (class + distillation) / 2 and never its fc_norm: built with
    fc_norm=True, sef info said "..., then the head's norm" of a mean no norm touched."""
    model, size = build("deit_tiny_distilled_patch16_224", pool="token", **extra)
    with torch.no_grad():
        raw = model.backbone(torch.randn(2, 3, size, size))
        torch.testing.assert_close(model.backbone.pool(raw), (raw[:, 0] + raw[:, 1]) / 2)
    assert model.pooling == "mean of the class and distillation tokens (the model's head)"


def test_a_swin_pooling_by_its_max_says_so_and_pool_avg_makes_it_the_mean():
    # it was described as the mean of the map, and pool='avg' was silently ignored
    pooled = {}
    for pool in (None, "avg"):
        model, size = build("swin_tiny_patch4_window7_224", pool=pool, global_pool="max")
        raw = model.backbone(torch.randn(2, 3, size, size))
        pooled[pool] = (model.backbone.describe_pool(), model.backbone.pool(raw), raw)
    description, vector, raw = pooled[None]
    assert description == "'max' pooling of the map (the model's head)"
    torch.testing.assert_close(vector, raw.amax((1, 2)))
    description, vector, raw = pooled["avg"]
    assert description == "mean of the feature map (the model's head)"
    torch.testing.assert_close(vector, raw.mean((1, 2)))


def test_dynamic_image_size_restores_the_grid_of_each_input():
    model, _ = build("vit_tiny_patch16_224", dynamic_img_size=True)
    for side, cells in ((32, 2), (48, 3)):
        assert model.feature_map(torch.randn(1, 3, side, side)).shape == (1, 192, cells, cells)


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "beit_base_patch16_224"])
def test_images_of_another_size_than_the_model_was_built_for_are_refused_in_one_line(name):
    """sef.SEF("timm:vit_...") is built for 224 px; fed 32 px images, timm stopped on an
    assertion deep in its patch embedding that did not say how to build it for them."""
    model, size = build(name)
    model.train()
    with pytest.raises(ValueError) as error:
        model(torch.randn(1, 3, 2 * size, 2 * size))
    rebuild = f"image_size={2 * size} in sef.SEF (data.image_size in a config)"
    dynamic = " or backbone_args={'dynamic_img_size': True}" if name.startswith("vit") else ""
    assert str(error.value) == (
        f"timm:{name} is built for {size} x {size} px images, not {2 * size} x {2 * size}: "
        f"resize them to {size} x {size}, or build it with {rebuild}{dynamic}"
    )
    with pytest.raises(ValueError, match=f"not {size} x {2 * size}: resize them to {size} x "):
        model.eval()(torch.randn(1, 3, size, 2 * size))


def test_a_timm_model_passed_as_a_module_is_adapted_the_same_way():
    timm_model = timm.create_model("vit_tiny_patch16_224", num_classes=0, depth=1, img_size=32)
    backbone = sef.adapters.timm_features(timm_model, image_size=32)
    model = sef.SEF(backbone, 4, groups=2).eval()
    assert isinstance(model.backbone, TimmFeatures) and model.channels == 192
    assert isinstance(model.export()[0], Pooled)


def test_a_timm_model_passed_as_it_is_is_pointed_to_timm_features():
    # the message named only the pooled shape, for a CNN whose forward_features gives a map
    vit = {"depth": 1, "img_size": 32}
    for name, args in (("resnet18", {}), ("vit_tiny_patch16_224", vit)):
        timm_model = timm.create_model(name, num_classes=0, **args)
        with pytest.raises(
            ValueError, match=r"returned \(1, \d+\); pass a timm model as sef\.adapters"
        ):
            sef.SEF(timm_model, 4, image_size=32)


def test_unsupported_models_get_one_sentence_with_the_shape_that_came_out():
    with pytest.raises(ValueError) as error:
        sef.SEF("timm:pit_ti_224", 4, backbone_args={"depth": (1, 1, 1)})
    message = str(error.value)
    assert message.startswith("timm:pit_ti_224 is not supported: at 224 px its forward_features")
    assert "(1, 1, 256)" in message and "sef needs a [B, C, H, W] map" in message
    assert "\n" not in message


def test_timms_features_only_wrapper_is_refused_in_one_line():
    # an AttributeError traceback: 'FeatureListNet' object has no attribute 'forward_features'
    with pytest.raises(
        ValueError,
        match=r"^timm:resnet18 is not supported: its FeatureListNet has "
        r"no forward_features \(leave out features_only\); sef needs",
    ):
        sef.SEF("timm:resnet18", 3, backbone_args={"features_only": True})


def test_images_smaller_than_a_patch_are_refused_in_one_line():
    # the probe's forward pass raised torch's RuntimeError, a traceback from sef info and train
    # built for any size, timm's AssertionError came through as it was
    for extra in ({}, {"dynamic_img_size": True}):
        with pytest.raises(ValueError) as error:
            sef.SEF(
                "timm:vit_tiny_patch16_224",
                3,
                image_size=16,
                backbone_args={"patch_size": 32, **extra},
            )
        message = str(error.value)
        assert message.startswith("timm:vit_tiny_patch16_224 cannot run on 16 px images (")
        assert message.endswith("; choose an image size (and backbone_args) it takes")
        assert "\n" not in message


def test_a_size_timm_asserts_against_when_it_builds_the_model_is_refused_in_one_line():
    """A hybrid ViT (ResNet stem, then patches) at 40 px: a bare AssertionError from timm's
    constructor came through sef train and sef info as a traceback."""
    with pytest.raises(ValueError) as error:
        sef.SEF("timm:vit_tiny_r_s16_p8_224", 3, image_size=40, backbone_args={"depth": 1})
    message = str(error.value)
    assert message.startswith("timm cannot build timm:vit_tiny_r_s16_p8_224 for 40 px images (")
    assert "in hybrid_embed.py, line " in message and "\n" not in message
    assert message.endswith("); choose another image size (its own is 224) or other backbone_args")


def test_a_model_that_fails_on_an_index_at_the_probes_size_is_refused_in_one_line():
    """timm's MViTv2 at 40 px stopped on an IndexError, which the probe let through."""

    class OutOfRange(nn.Module):
        def forward_features(self, images):
            return images[:, :, 99]

    with pytest.raises(ValueError, match=r"^m cannot run on 32 px images \(index 99 is out of"):
        sef.adapters.timm_features(OutOfRange(), image_size=32, name="m")


def test_an_image_size_its_patches_do_not_tile_is_refused_naming_the_nearest_that_do():
    # timm built the ViT for 200 px and its patch embedding silently ignored the last 8 px rows
    # and columns; built for any size, the model failed at its first batch
    for extra in ({}, {"dynamic_img_size": True}):
        with pytest.raises(ValueError) as error:
            sef.SEF(
                "timm:vit_tiny_patch16_224", 3, image_size=200, backbone_args={"depth": 1, **extra}
            )
        assert str(error.value) == (
            "timm:vit_tiny_patch16_224 cuts images into 16 px patches, which do not tile 200 px "
            "images (8 px of rows and columns left over); choose an image size of 192 or 208 px"
        )
    with pytest.raises(ValueError, match="14 px patches.*tile 200 px.*of 196 or 210 px"):
        sef.SEF("timm:eva02_tiny_patch14_224", 3, image_size=200, backbone_args={"depth": 1})
    padded = {"depth": 1, "dynamic_img_size": True, "dynamic_img_pad": True}  # timm pads them
    model = sef.SEF("timm:vit_tiny_patch16_224", 3, image_size=200, backbone_args=padded)
    assert model.feature_map(torch.randn(1, 3, 200, 200)).shape == (1, 192, 13, 13)


def test_models_that_cannot_change_size_or_take_an_argument_say_so(monkeypatch):
    monkeypatch.setattr(sef.timm_backbones, "_timm_input_size", lambda timm, name: (224, True))
    with pytest.raises(ValueError, match=r"takes only 224 px.*set data.image_size=224"):
        sef.SEF("timm:resnet18", 3, image_size=64)
    with pytest.raises(ValueError, match="does not accept these arguments"):
        sef.SEF("timm:resnet18", 3, backbone_args={"no_such_argument": 1})
    with pytest.raises(ValueError, match="apply to timm:<model> backbones only"):
        sef.SEF("resnet18", 3, backbone_args={"depth": 1})


def test_a_wrong_argument_of_a_model_built_for_another_size_is_named_not_the_size():
    # the size was blamed for any TypeError once sef passed img_size itself
    with pytest.raises(ValueError, match="does not accept these arguments.*'no_such_argument'"):
        sef.SEF(
            "timm:vit_tiny_patch16_224", 3, image_size=32, backbone_args={"no_such_argument": 1}
        )


def test_backbone_args_building_for_other_images_than_image_size_are_refused_at_once():
    # the model was built and failed at its first batch with timm's AssertionError
    for size in (64, [32, 32]):
        with pytest.raises(ValueError, match=r"img_size=.* is not the image size 32, and"):
            sef.SEF("timm:vit_tiny_patch16_224", 3, image_size=32, backbone_args={"img_size": size})
    for args in ({"img_size": 32}, {"img_size": 64, "dynamic_img_size": True}):
        model = sef.SEF(
            "timm:vit_tiny_patch16_224", 3, image_size=32, backbone_args={"depth": 1, **args}
        )
        assert model.feature_map(torch.randn(1, 3, 32, 32)).shape == (1, 192, 2, 2)


def test_config_carries_pool_and_timm_arguments():
    config = apply_overrides(
        resolve_config("demo"),
        ["model.backbone=timm:vit_tiny_patch16_224", "model.pool=avg",
         "model.backbone_args.depth=1", "model.backbone_args.drop_path_rate=0.1"],
    )  # fmt: skip
    assert config.model.backbone_args == {"depth": 1, "drop_path_rate": 0.1}
    model = sef.trained.create_model(config, 8)
    assert model.backbone.image_size == config.data.image_size == 64
    assert len(model.backbone.model.blocks) == 1 and model.pooling.startswith("mean of the patch")
    with pytest.raises(ConfigError, match="model.pool='max' is invalid"):
        apply_overrides(config, ["model.pool=max"])


class _Tokens(sef.adapters.FeatureAdapter):
    """The adapter of docs/developing.md over a stand-in token model: [B, 1 + 4x4, 48] tokens
    from images of 32 px only (like a ViT built for one size)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.embed, self.channels = nn.Conv2d(3, 48, 8, stride=8), channels

    def forward(self, images):
        if images.shape[-1] != 32:
            raise AssertionError(f"input size {images.shape[-1]} does not match the model (32)")
        patches = self.embed(images).flatten(2).transpose(1, 2)
        return torch.cat([patches.mean(1, keepdim=True), patches], dim=1)

    def feature_map(self, raw, image_size):
        patches = raw[:, 1:]
        side = int(patches.shape[1] ** 0.5)
        return patches.transpose(1, 2).reshape(raw.shape[0], self.channels, side, side)

    def pool(self, raw):
        return raw[:, 0]

    def describe_pool(self):
        return "class token"


def test_an_adapters_channels_are_checked_when_the_model_is_built():
    """A channels its pooled features do not have is refused at once in one line (before: a
    matrix-shape RuntimeError at the first batch); one the blank image cannot check is left to
    the first batch, as before."""
    model = sef.SEF(_Tokens(48), num_classes=5, groups=4, image_size=32).train()
    assert model(torch.randn(2, 3, 32, 32)).features.shape == (2, 48, 4, 4)
    with pytest.raises(ValueError, match=r"^_Tokens.channels is 64, but its pool gives features "
                       r"of shape \(1, 48\) on a blank 32 x 32 image; set channels"):  # fmt: skip
        sef.SEF(_Tokens(64), num_classes=5, image_size=32)
    assert sef.SEF(_Tokens(48), num_classes=5).channels == 48  # 64 px: it cannot run, unchecked


class _ChannelsLast(_Tokens):
    """_Tokens whose feature_map forgets to move the channels first: [B, h, w, C]."""

    def feature_map(self, raw, image_size):
        return super().feature_map(raw, image_size).permute(0, 2, 3, 1)


def test_an_adapters_feature_map_channels_are_checked_when_the_model_is_built():
    """A feature_map with other channels than declared was built without a word: the group loss
    then split the wrong axis (G <= 4 here) or failed at the first batch saying G was too large;
    it is refused at once, naming both. One the blank image cannot check is left to training."""
    with pytest.raises(ValueError) as error:
        sef.SEF(_ChannelsLast(48), num_classes=5, groups=4, image_size=32)
    assert str(error.value) == (
        "_ChannelsLast.channels is 48, but its feature_map gives shape (1, 4, 4, 48) (4 channels) "
        "on a blank 32 x 32 image; make it return the [B, C, H, W] map with C = 48"
    )
    assert sef.SEF(_ChannelsLast(48), num_classes=5).channels == 48  # 64 px: it cannot run


def test_a_token_model_passed_with_its_classifier_loses_it_and_loads_a_state_dict_with_it():
    """Its classifier stayed: no gradient reached it (DDP stops on it) and the export shipped
    its 1000-class weights."""
    timm_model = timm.create_model("vit_tiny_patch16_224", depth=1, img_size=32)
    saved = timm_model.state_dict()
    model = sef.SEF(sef.adapters.timm_features(timm_model, image_size=32), 4, groups=2)
    assert (
        model.backbone.dropped == ("head",)
        and "model.head.weight" not in model.backbone.state_dict()
    )
    model.train().forward_sef(torch.randn(2, 3, 32, 32)).logits.sum().backward()
    assert all(p.grad is not None for p in model.backbone.parameters())
    model.backbone.load_state_dict({f"model.{key}": value for key, value in saved.items()})


def test_timms_optimizer_factory_exempts_the_backbones_position_embedding_from_weight_decay():
    """SEF had no no_weight_decay(): timm's create_optimizer_v2 decayed a ViT's pos_embed and
    cls_token, which timm exempts on the ViT itself."""
    import timm.optim

    model = sef.SEF(
        "timm:vit_tiny_patch16_224", 3, groups=2, image_size=32, backbone_args={"depth": 1}
    )
    optimizer = timm.optim.create_optimizer_v2(model, "adamw", weight_decay=0.05)
    decayed = {
        id(p) for group in optimizer.param_groups if group["weight_decay"] for p in group["params"]
    }
    embedding = model.backbone.model
    assert (
        decayed
        and id(embedding.pos_embed) not in decayed
        and id(embedding.cls_token) not in decayed
    )
