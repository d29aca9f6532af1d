"""Backbones: a name or an nn.Module -> a feature extractor that yields [B, C, H, W].

Names cover torchvision's CNN families (ResNet/ResNeXt/Wide-ResNet, EfficientNet, MobileNet,
ConvNeXt, DenseNet, VGG, RegNet, MNASNet, ShuffleNetV2, SqueezeNet, AlexNet), ``small_cnn``
(sef's own, for small images trained from scratch such as the demo set) and, when timm is
installed, any timm model as ``"timm:<name>"`` (CNNs, and token backbones through
:mod:`sef.adapters`).
Weights are a torchvision weight name ("IMAGENET1K_V1", "DEFAULT"), a local file
(.pth/.pt/.safetensors holding the full model's state dict), or None.
``output_stride=16`` (mobilenet_v2) halves the last stage's stride as DeepLab does: the map
doubles in size, the weights stay the same tensors, and the old map is every second cell of it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sized
from urllib.error import URLError

import torch
from torch import nn

from sef.adapters import (
    FeatureAdapter,
    TimmFeatures,
    blank_image,
    blank_images,
    input_channels,
)
from sef.errors import WeightsError, warn
from sef.groups import positive_int
from sef.modes import evaluation_mode
from sef.text import close_to, counted, some
from sef.timm_backbones import timm_backbone
from sef.weights import download_help, is_weights_file, load_file_into

TIMM_PREFIX = "timm:"
SMALL_CNN = "small_cnn"
_DILATABLE = ("mobilenet_v2",)  # its last downsampling is one conv: see dilate_last_stage
_SMALL_CNN_WIDTHS = (16, 32, 64, 128)


def small_cnn(widths: tuple[int, ...] = _SMALL_CNN_WIDTHS) -> nn.Sequential:
    """A VGG-style CNN of stride 8 for small images trained from scratch.

    ResNet-18 reduces a 64 px image to a 2x2 map and does not learn the demo set from scratch
    in minutes; this net keeps an 8x8 map, so groups have room to find parts.
    """
    layers: list[nn.Module] = []
    channels = 3
    for stage, width in enumerate(widths):
        if stage:
            layers.append(nn.MaxPool2d(2))
        for _ in range(2):
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)]
            layers.append(nn.ReLU(inplace=True))
            channels = width
    return nn.Sequential(*layers)


def _resnet_features(model: nn.Module) -> nn.Module:
    keep = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    return nn.Sequential(*(getattr(model, k) for k in keep))


# torchvision families: name prefixes -> the classifier cut down to its last feature map. The
# first entry whose prefix a name starts with applies; a new family is one entry here.
FAMILIES: dict[tuple[str, ...], Callable[[nn.Module], nn.Module]] = {
    ("resnet", "resnext", "wide_resnet"): _resnet_features,
    # DenseNet applies ReLU before pooling
    ("densenet",): lambda model: nn.Sequential(model.features, nn.ReLU()),
    # ConvNeXt normalises the pooled vector; normalising every position keeps its weights
    ("convnext",): lambda model: nn.Sequential(model.features, model.classifier[0]),
    ("efficientnet", "mobilenet"): lambda model: model.features,
    # VGG's and AlexNet's features end with a max pool: the last conv map is the one before it
    ("vgg", "alexnet"): lambda model: model.features[:-1],
    ("regnet",): lambda model: nn.Sequential(model.stem, model.trunk_output),
    ("mnasnet",): lambda model: model.layers,
    ("shufflenet",): lambda model: nn.Sequential(
        model.conv1, model.maxpool, model.stage2, model.stage3, model.stage4, model.conv5
    ),
    # SqueezeNet classifies with a 1x1 conv on its features: their map is the last one
    ("squeezenet",): lambda model: model.features,
}
_PREFIXES = tuple(prefix for prefixes in FAMILIES for prefix in prefixes)


def _torchvision_models():
    """``torchvision.models``, imported on first use: importing torchvision imports
    ``torch._dynamo`` (about as long as torch's own import), which a small_cnn, timm or
    nn.Module backbone never needs."""
    import torchvision.models

    return torchvision.models


def _torchvision_names() -> list[str]:
    """The names of torchvision's classifiers."""
    models = _torchvision_models()
    return models.list_models(module=models)


def available_backbones() -> list[str]:
    """torchvision model names that ``create_backbone`` accepts (timm models come as timm:NAME)."""
    names = _torchvision_names()
    return sorted([SMALL_CNN, *(n for n in names if n.startswith(_PREFIXES))])


# torchvision models sef has no recipe for: name prefixes -> why, and what to pass instead
_NO_RECIPE = {
    ("googlenet", "inception"): (
        "its pretrained weights expect the input rescaled by torchvision's transform_input, which "
        "a cut-down network skips; pass 'timm:inception_v3' (its tag tv_in1k holds torchvision's "
        "weights) or another name"
    ),
    ("vit", "swin", "maxvit"): (
        "sef takes token backbones from timm: pass 'timm:<model>', e.g. "
        "'timm:vit_base_patch16_224' or 'timm:swin_tiny_patch4_window7_224'"
    ),
}


def _unknown_backbone(name: str) -> ValueError:
    if name in _torchvision_names():
        what = f"torchvision's {name} has no sef recipe for its last feature map"
        for prefixes, instead in _NO_RECIPE.items():
            if name.startswith(prefixes):
                return ValueError(f"{what}: {instead}")
        own = "pass its layers up to that map as an nn.Module"
    elif _timm_knows(name):
        return ValueError(f"unknown backbone {name!r}: it is a timm model; pass 'timm:{name}'")
    else:
        what, own = f"unknown backbone {name!r}", "pass an nn.Module"
    names = available_backbones()
    return ValueError(
        f"{what}; {close_to(name, names)}choose one of: {', '.join(names)}, "
        f"or 'timm:<model>' with timm installed, or {own}"
    )


def _timm_knows(name: str) -> bool:
    """Whether timm is installed and has a model ``name`` (given without the timm: prefix)."""
    try:
        import timm
    except ImportError:
        return False
    return timm.is_model(name)


def _check_output_stride(backbone: object, output_stride: int | None) -> None:
    if output_stride is None:
        return
    if output_stride != 16:
        raise ValueError(
            f"output_stride must be 16 or None (the backbone's own), not {output_stride!r}"
        )
    if not (isinstance(backbone, str) and backbone.startswith(_DILATABLE)):
        timm = isinstance(backbone, str) and backbone.startswith(TIMM_PREFIX)
        own = "; timm's own for its CNNs: backbone_args={'output_stride': 16}" if timm else ""
        raise ValueError(
            f"output_stride=16 is available for mobilenet_v2, "
            f"not {backbone if isinstance(backbone, str) else type(backbone).__name__!r}{own}"
        )


def dilate_last_stage(model: nn.Module) -> nn.Module:
    """Output stride 32 -> 16 for a stack whose last downsampling is its last stride-2 conv
    (MobileNetV2): that conv strides 1, every later conv wider than 1x1 dilates by 2."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    last = max(i for i, conv in enumerate(convs) if conv.stride == (2, 2))
    convs[last].stride = (1, 1)
    for conv in convs[last + 1 :]:
        if conv.kernel_size != (1, 1):
            conv.dilation = tuple(2 * d for d in conv.dilation)
            conv.padding = tuple(
                d * (k - 1) // 2 for d, k in zip(conv.dilation, conv.kernel_size, strict=True)
            )
    return model


def _build(name: str, weights: object, output_stride: int | None) -> nn.Module:
    model = _torchvision_models().get_model(name, weights=weights)
    return dilate_last_stage(model) if output_stride == 16 else model


def torchvision_model(
    name: str, weights: str | os.PathLike | None = None, output_stride: int | None = None
) -> nn.Module:
    """The full torchvision classifier ``name`` with named, local-file, or no weights (a file's
    classifier may be missing or of any size: the model's then stays as initialised)."""
    if name not in _torchvision_names():
        raise _unknown_backbone(name)
    _check_output_stride(name, output_stride)
    if weights is None:
        return _build(name, None, output_stride)
    if is_weights_file(weights):
        model = _build(name, None, output_stride)
        load_file_into(model, weights, name, unused=_classifier_keys(name, model))
        return model
    enum = _torchvision_models().get_model_weights(name)
    try:
        chosen = weights if isinstance(weights, enum) else enum[str(weights)]
    except KeyError:
        options = ", ".join(dict.fromkeys(["DEFAULT", *enum.__members__]))
        raise WeightsError(
            f"unknown weights {weights!r} for {name}; use one of {options}, a file path, or None"
        ) from None
    try:
        return _build(name, chosen, output_stride)
    except (URLError, OSError, RuntimeError) as error:
        raise download_help(name, weights, chosen.url, error) from error


def _classifier_keys(name: str, model: nn.Module) -> frozenset[str]:
    """The state dict keys of torchvision's ``name`` that its feature map never uses: the
    classifier SEF replaces, which a weights file may lack or hold for any number of classes."""
    used = {id(t) for t in _features_of(name, model).state_dict(keep_vars=True).values()}
    return frozenset(k for k, t in model.state_dict(keep_vars=True).items() if id(t) not in used)


def _features_of(name: str, model: nn.Module) -> nn.Module:
    """Strip a torchvision classifier down to its last convolutional feature map."""
    for prefixes, features in FAMILIES.items():
        if name.startswith(prefixes):
            return features(model)
    raise _unknown_backbone(name)


def create_backbone(
    backbone: str | nn.Module,
    weights: str | os.PathLike | None = None,
    *,
    image_size: int | None = None,
    pool: str | None = None,
    backbone_args: dict | None = None,
    output_stride: int | None = None,
) -> nn.Module:
    """A module mapping images [B, 3, H, W] to the last conv feature map [B, C, h, w], or a
    :class:`~sef.adapters.FeatureAdapter` (timm models: token backbones give tokens or a
    channels-last map). ``image_size``, ``pool`` and ``backbone_args`` (keyword arguments of
    ``timm.create_model``) concern timm models; CNNs pool the mean of their map.
    ``output_stride`` 16 (mobilenet_v2 only, for now) doubles the map's size."""
    if image_size is not None:
        positive_int("image_size", image_size)
    named_timm = isinstance(backbone, str) and backbone.startswith(TIMM_PREFIX)
    if backbone_args and not named_timm:
        raise ValueError("backbone_args apply to timm:<model> backbones only")
    if pool not in (None, "avg") and not named_timm:
        raise ValueError(f"pool={pool!r} needs a timm:<model> token backbone; CNNs pool 'avg'")
    _check_output_stride(backbone, output_stride)
    if isinstance(backbone, nn.Module):
        if weights is not None and not is_weights_file(weights):
            raise WeightsError(
                f"an nn.Module backbone takes weights from a file only, not {weights!r}: build "
                f"it with its pretrained weights, or pass the path of its state dict"
            )
        if weights is not None:
            load_file_into(backbone, weights, type(backbone).__name__)
        return backbone
    if not isinstance(backbone, str):
        raise TypeError(f"backbone must be a name or an nn.Module, got {type(backbone).__name__}")
    if backbone.startswith(TIMM_PREFIX):
        return timm_backbone(
            backbone,
            backbone[len(TIMM_PREFIX) :],
            weights,
            image_size=image_size,
            pool=pool,
            backbone_args=backbone_args,
        )
    if backbone == SMALL_CNN:
        if weights is not None and not is_weights_file(weights):
            raise WeightsError(
                f"{SMALL_CNN} has no pretrained weights {weights!r}; use None or a file"
            )
        model = small_cnn()
        if weights is not None:
            load_file_into(model, weights, SMALL_CNN)
        return model
    if not backbone.startswith(_PREFIXES):
        raise _unknown_backbone(backbone)
    return _features_of(backbone, torchvision_model(backbone, weights, output_stride))


class ProbeFailed(ValueError):
    """The backbone failed on the blank ``side`` x ``side`` image :func:`probe_channels` runs
    it on, most often an image too small for it; ``failures`` maps the channels of each image
    tried to torch's first line, ``reason`` says it in words."""

    def __init__(self, side: int, failures: dict[int, str]) -> None:
        channels = "/".join(map(str, failures))
        many = len(failures) > 1
        self.reason = "; ".join(
            f"{counted(c, 'channel')}: {r}" if many else r for c, r in failures.items()
        )
        super().__init__(
            f"sef finds the backbone's channels by running it once on a blank {channels}-channel "
            f"{side} x {side} image, and that failed ({self.reason}); pass image_size= a size it "
            f"takes"
        )
        self.side = side


@torch.no_grad()
def probe_channels(backbone: nn.Module, image_size: int | None = None) -> tuple[int, int]:
    """The channels of the images the backbone takes and the channels C of its feature map, found
    by one forward pass of a blank image of ``image_size`` (default 64) pixels
    (:func:`~sef.adapters.blank_image`: as many channels as its first-registered convolution
    takes, else 3: the count of the image that ran); an adapter's own ``channels``, checked when
    it was built (timm's) or on that image (ValueError where its pooled features or its feature
    map have other channels)."""
    if isinstance(backbone, TimmFeatures):  # its probe ran on blank_images when it was built
        return input_channels(backbone), backbone.channels
    side = image_size or 64
    if isinstance(backbone, FeatureAdapter):
        images = blank_image(backbone, side)
        _check_adapter_channels(backbone, images)
        return images.shape[1], backbone.channels
    out, images = _probe(backbone, blank_images(backbone, side))
    problem = _not_a_feature_map(backbone, out) or _pooled_to_one_position(backbone, images, out)
    if problem is not None:
        raise ValueError(f"sef needs the backbone's last [B, C, H, W] feature map, but {problem}")
    return images.shape[1], out.shape[1]


def warn_of_unused_parameters(backbone: nn.Module, image_channels: int, side: int) -> None:
    """Warn where trainable parameters of a module of the user's get no gradient from its map on
    a blank image (a classifier left attached): they would never train, DistributedDataParallel
    stops on them and the export ships them. Not for compiled modules (a backward would compile
    once more), nor under ``torch.inference_mode``, which records no gradient."""
    trainable = [(name, p) for name, p in backbone.named_parameters() if p.requires_grad]
    if not trainable or hasattr(backbone, "_orig_mod") or torch.is_inference_mode_enabled():
        return
    image = blank_image(backbone, side).new_zeros(1, image_channels, side, side)
    parameters = [p for _, p in trainable]
    with evaluation_mode(backbone), torch.enable_grad():
        out = backbone(image).sum()
        grads = (
            torch.autograd.grad(out, parameters, allow_unused=True)
            if out.requires_grad
            else [None] * len(parameters)
        )
    unused = [name for (name, _), grad in zip(trainable, grads, strict=True) if grad is None]
    if unused:
        parts = list(dict.fromkeys(name.rpartition(".")[0] or name for name in unused))
        warn(
            f"the backbone's {some(parts)} ({counted(len(unused), 'parameter tensor')}) get no "
            f"gradient from its feature map (a classifier left attached?): they would never "
            f"train, DistributedDataParallel stops on them and export() ships them; pass a "
            f"module without them, or freeze them with requires_grad_(False)"
        )


def _probe(backbone: nn.Module, tries: list[torch.Tensor]) -> tuple[object, torch.Tensor]:
    """The backbone's output on the first of the blank images ``tries`` it runs on, in eval
    mode, and that image; ProbeFailed naming each failure where none runs."""
    side = tries[0].shape[-1]
    failures = {}
    with evaluation_mode(backbone):
        for blank in tries:
            try:
                return backbone(blank), blank
            except (RuntimeError, AssertionError) as error:  # torchvision's ViT asserts its size
                failures[blank.shape[1]] = str(error).splitlines()[0]
    raise ProbeFailed(side, failures)


_UP_TO_THE_MAP = (
    "pass its layers up to the last map, e.g. nn.Sequential(*list(resnet.children())[:-2]), "
    "or a torchvision name such as 'resnet50'"
)


def _pooled_to_one_position(
    backbone: nn.Module, images: torch.Tensor, out: torch.Tensor
) -> str | None:
    """What to do where the backbone's 1 x 1 map ``out`` of the blank ``images`` stays 1 x 1 on
    images 4 times as large: it pools its map (an AdaptiveAvgPool2d(1) at its end), and larger
    training images would not give the group loss positions to compare; None otherwise, or where
    it cannot run on the larger images (a network of one input size: no telling)."""
    if tuple(out.shape[-2:]) != (1, 1):
        return None
    side = images.shape[-1]
    larger = images.new_zeros(*images.shape[:2], 4 * side, 4 * side)
    try:
        with evaluation_mode(backbone):
            again = backbone(larger)
    except (RuntimeError, AssertionError):
        return None
    if tuple(again.shape[-2:]) != (1, 1):
        return None
    return (
        f"it returned {tuple(out.shape)} on blank {side} and {4 * side} px images alike, pooled "
        f"features (an AdaptiveAvgPool2d(1) at its end, as list(resnet.children())[:-1] "
        f"keeps?); {_UP_TO_THE_MAP}"
    )


def _not_a_feature_map(backbone: nn.Module, out: object) -> str | None:
    """What a module returned on the blank probe image instead of a [B, C, H, W] map, and what
    to do; None where it is one."""
    if not isinstance(out, torch.Tensor):
        many = f" ({counted(len(out), 'entry', 'entries')})" if isinstance(out, Sized) else ""
        return (
            f"it returned {type(out).__name__}{many} (IntermediateLayerGetter, "
            f"create_feature_extractor and timm's features_only give one map per layer); make it "
            f"return the last map alone, or pass a torchvision name or 'timm:<model>'"
        )
    shape = tuple(out.shape)
    if out.dim() and shape[0] != 1:  # the probe is a batch of one image
        return (
            f"it returned {shape} for a batch of one image: its first axis is not the batch "
            f"(a squeeze()?); keep the batch axis"
        )
    if out.dim() == 2 and hasattr(backbone, "forward_features"):  # timm's: pools and classifies
        return (
            f"it returned {shape}; pass a timm model as "
            f"sef.adapters.timm_features(model, image_size=S), or as 'timm:<model>'"
        )
    if out.dim() == 2:
        return (
            f"it returned {shape}, pooled features or class scores (a whole classifier?); "
            f"{_UP_TO_THE_MAP}"
        )
    if out.dim() == 3:
        return (
            f"it returned {shape}, tokens [B, N, C]?; put them back on their grid in a "
            f"sef.adapters.FeatureAdapter, or pass a token backbone as 'timm:<model>'"
        )
    if out.dim() != 4:
        return f"it returned shape {shape}"
    if shape[1] == shape[2] != shape[3]:  # the probe image is square, and so is a map of it
        return (
            f"it returned {shape}, a channels-last [B, H, W, C] map (as torchvision's Swin "
            f"features do); append torchvision.ops.Permute([0, 3, 1, 2]) to the module (a "
            f"[B, C, H, W] map whose C happens to equal H: pass another image_size)"
        )
    return None


def _shape_or_none(make: Callable[[], torch.Tensor]) -> tuple[int, ...] | None:
    """The shape of what ``make()`` returns; None where it fails."""
    try:
        return tuple(make().shape)
    except Exception:  # a user's adapter may refuse a blank image of this size in any way
        return None


def _adapter_shapes(
    adapter: FeatureAdapter, images: torch.Tensor
) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None]:
    """The shapes of the pooled features and of the feature map of ``images``: one forward pass;
    None for what the adapter cannot compute on them (its first training batch then says why)."""
    with evaluation_mode(adapter):
        try:
            raw = adapter(images)
        except Exception:  # as in _shape_or_none
            return None, None
        pooled = _shape_or_none(lambda: adapter.pool(raw))
        return pooled, _shape_or_none(lambda: adapter.feature_map(raw, images.shape[-2:]))


def _check_adapter_channels(adapter: FeatureAdapter, images: torch.Tensor) -> None:
    """ValueError in one line where the pooled features of ``images`` (one blank image) are not
    ``[1, adapter.channels]`` or its feature map not ``[1, adapter.channels, h, w]``; nothing
    where the adapter cannot compute them on that image (another size, say)."""
    pooled, mapped = _adapter_shapes(adapter, images)
    declared, side = adapter.channels, images.shape[-1]
    what = f"{type(adapter).__name__}.channels is {declared}"
    if pooled is not None and pooled != (1, declared):
        raise ValueError(
            f"{what}, but its pool gives features of shape {pooled} on a blank {side} x {side} "
            f"image; set channels to the C of its [B, C] pooled features"
        )
    if mapped is not None and (len(mapped) != 4 or mapped[1] != declared):
        actual = f"{mapped[1]} channels" if len(mapped) == 4 else "not [B, C, H, W]"
        raise ValueError(
            f"{what}, but its feature_map gives shape {mapped} ({actual}) on a blank {side} x "
            f"{side} image; make it return the [B, C, H, W] map with C = {declared}"
        )
