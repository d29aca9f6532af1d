"""Feature adapters: what a backbone's forward pass returns -> SEF's feature map and pooled vector.

SEF needs two things from a backbone: the feature map X [B, C, h, w] (input of the group loss and
of the figures) and one pooled vector [B, C] per image (input of the global and group heads).
A CNN's last map is X and its mean is the pooled vector. Token backbones differ:

* ViT / DeiT / EVA / BEiT-style (``[B, N, C]``): the class, distillation or register tokens come
  first (``num_prefix_tokens``); the rest are the patch grid in row-major order. X is that grid
  restored; the pooled vector is what the model's own head pools (``forward_head(pre_logits=True)``:
  the class token, the mean of the patch tokens, attention pooling; with the head's LayerNorm).
* Swin-style (``[B, H, W, C]``, channels last): X is the same map made channels-first; the
  pooled vector is the head's mean over positions.

An adapter is a module whose forward returns the backbone's raw output, with ``feature_map`` and
``pool`` turning that output into X and the pooled vector, so one forward pass serves both.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sef.choices import POOLS
from sef.modes import evaluation_mode

_NEEDS = (
    "sef needs a [B, C, H, W] map, a channels-last [B, H, W, C] map or [B, N, C] tokens "
    "(prefix tokens first, then a patch grid) from forward_features"
)


class FeatureAdapter(nn.Module):
    """A backbone whose raw output is not the [B, C, h, w] map SEF works on."""

    channels: int

    def feature_map(self, raw: Tensor, image_size: tuple[int, int]) -> Tensor:
        """The [B, C, h, w] feature map of images of ``image_size`` (H, W)."""
        raise NotImplementedError

    def pool(self, raw: Tensor) -> Tensor:
        """The pooled features [B, C] that the classifier heads read."""
        raise NotImplementedError

    def describe_pool(self) -> str:
        """How ``pool`` pools, in words."""
        raise NotImplementedError


class Pooled(nn.Module):
    """images -> pooled features of an adapter: the deployable part before the classifier."""

    def __init__(self, adapter: FeatureAdapter) -> None:
        super().__init__()
        self.adapter = adapter

    def forward(self, images: Tensor) -> Tensor:
        return self.adapter.pool(self.adapter(images))


def input_channels(model: nn.Module) -> int:
    """The channels of the images ``model`` takes: for a SEF model and its export, those of the
    image its backbone ran on when it was built (``image_channels``); else the in_channels of
    its first-registered convolution (1 for a grayscale network, 4 for RGB + infrared; the
    guess SEF's probe starts from, assuming the images enter there), 3 where it has none."""
    recorded = getattr(model, "image_channels", None)
    if isinstance(recorded, int):
        return recorded
    first = next((part for part in model.modules() if isinstance(part, nn.Conv2d)), None)
    return first.in_channels if first is not None and first.in_channels else 3  # lazy: 0


def placement(model: nn.Module) -> dict:
    """The device and dtype of ``model``'s first weight, as keyword arguments of a new tensor or
    layer ({} for a model without weights: torch's defaults)."""
    parameter = next(model.parameters(), None)
    return {"device": parameter.device, "dtype": parameter.dtype} if parameter is not None else {}


def blank_image(model: nn.Module, side: int) -> Tensor:
    """One blank image [1, c, side, side] to probe ``model`` with, on the device and in the dtype
    of its weights; c is :func:`input_channels`."""
    return torch.zeros(1, input_channels(model), side, side, **placement(model))


def blank_images(model: nn.Module, side: int) -> list[Tensor]:
    """The blank images to probe ``model`` with, in turn: :func:`blank_image`, then a 3-channel
    one where that has other channels (the first-registered convolution may not be where the
    images enter: a side branch, or TResNet's, after its space-to-depth stem, takes 48)."""
    first = blank_image(model, side)
    return [first] if first.shape[1] == 3 else [first, first.new_zeros(1, 3, side, side)]


def _layout(model: nn.Module, raw: object) -> str:
    if isinstance(raw, Tensor) and raw.dim() == 4:
        return "NHWC" if getattr(model, "output_fmt", "NCHW") == "NHWC" else "NCHW"
    if isinstance(raw, Tensor) and raw.dim() == 3:
        return "NLC"
    return "unknown"


def _patch_embed(model: nn.Module) -> nn.Module | None:
    for name in ("patch_embed", "stem"):
        module = getattr(model, name, None)
        if module is not None and hasattr(module, "grid_size"):
            return module
    return None


class TimmFeatures(FeatureAdapter):
    """A timm model seen through ``forward_features`` (built by :func:`timm_features`).

    ``layout`` is NCHW (CNNs), NHWC (Swin-style) or NLC (tokens); ``image_size`` the side the
    model was built for; ``channels`` its ``num_features``; ``dropped`` the model's modules that
    :func:`timm_features` replaced or removed (their weights in an older state dict are skipped on
    loading); ``image_channels`` those of the blank image it ran on then (what
    :func:`input_channels` says).
    """

    def __init__(
        self,
        model: nn.Module,
        layout: str,
        channels: int,
        image_size: int,
        dropped: tuple[str, ...] = (),
        image_channels: int = 3,
    ) -> None:
        super().__init__()
        self.model = model
        self.image_channels = image_channels
        self.layout = layout
        self.channels = channels
        self.image_size = image_size
        self.dropped = dropped

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        stale = tuple(f"{prefix}model.{name}." for name in self.dropped)
        for key in [key for key in state_dict if key.startswith(stale)]:
            del state_dict[key]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, images: Tensor) -> Tensor:
        return self.model.forward_features(images)

    def check_size(self, image_size: tuple[int, int]) -> None:
        """ValueError where a model built for one input size (ViT, Swin without
        ``dynamic_img_size``) is given images of another ``image_size`` (H, W): timm would stop
        on an assertion deep in its patch embedding, or a hybrid ViT on a shape mismatch."""
        embed = _patch_embed(self.model)
        if embed is None or not getattr(embed, "strict_img_size", False):
            return
        (rows, cols), built = tuple(image_size), tuple(embed.img_size)
        if (rows, cols) == built:
            return
        name = f"timm:{getattr(self.model, 'pretrained_cfg', {}).get('architecture', '?')}"
        builds = []  # sef builds a model for square images
        if rows == cols:
            builds.append(f"image_size={rows} in sef.SEF (data.image_size in a config)")
        if hasattr(self.model, "dynamic_img_size"):  # ViT, EVA, Swin; not CaiT or BEiT
            builds.append("backbone_args={'dynamic_img_size': True}")
        rebuild = f", or build it with {' or '.join(builds)}" if builds else ""
        raise ValueError(
            f"{name} is built for {built[0]} x {built[1]} px images, not {rows} x {cols}: "
            f"resize them to {built[0]} x {built[1]}{rebuild}"
        )

    def grid(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """Patch-grid rows and columns of token models for images of ``image_size``."""
        embed = _patch_embed(self.model)
        if embed is None:
            raise ValueError(f"{type(self.model).__name__} has no patch grid; {_NEEDS}")
        if getattr(self.model, "dynamic_img_size", False):
            return tuple(embed.dynamic_feat_size(tuple(image_size)))
        return tuple(embed.grid_size)

    def feature_map(self, raw: Tensor, image_size: tuple[int, int]) -> Tensor:
        if self.layout == "NCHW":
            return raw
        if self.layout == "NHWC":
            return raw.permute(0, 3, 1, 2)
        rows, cols = self.grid(image_size)
        patches = raw[:, getattr(self.model, "num_prefix_tokens", 0) :]
        return patches.transpose(1, 2).reshape(raw.shape[0], raw.shape[2], rows, cols)

    def pool(self, raw: Tensor) -> Tensor:
        if self.layout == "NCHW":
            return raw.mean((2, 3))  # as for torchvision CNNs; some timm heads change C (conv_head)
        return self.model.forward_head(raw, pre_logits=True)

    def describe_pool(self) -> str:
        if self.layout == "NCHW":
            return "mean of the feature map"
        if self.layout == "NHWC":
            kind = getattr(self.model, "global_pool", "avg")
            how = "mean of the feature map" if kind == "avg" else f"{kind!r} pooling of the map"
            return f"{how} (the model's head)"
        model = self.model
        if _distilled(model):  # timm's distilled head: no fc_norm
            return f"{_DISTILLED_POOL} (the model's head)"
        kind = getattr(model, "global_pool", None)
        how = {
            "token": "class token",
            "avg": "mean of the patch tokens",
            "map": "attention pooling",
        }.get(kind, f"{kind!r} pooling")
        norm = getattr(model, "fc_norm", None)
        normed = norm is not None and not isinstance(norm, nn.Identity)
        after = ", then the head's norm" if normed else ""
        return f"{how}{after} (the model's head)"


def _unsupported(name: str, what: str) -> ValueError:
    return ValueError(f"{name} is not supported: {what}; {_NEEDS}")


_DISTILLED_POOL = "mean of the class and distillation tokens"
_POOL_SETTING = "pool= in Python, model.pool in a config or --set model.pool=, sef info --pool"


def _distilled(model: nn.Module) -> bool:
    """Whether ``model`` is a timm distilled DeiT, whose head reads its class and distillation
    tokens (and only those)."""
    return getattr(model, "dist_token", None) is not None


def _pool_refused(name: str, why: str, allowed: str, pool: str) -> ValueError:
    """A pool ``name`` does not take, in one line: why, and what pool may be as users set it."""
    return ValueError(
        f"{name} {why}: pool may be {allowed!r} or unset, not {pool!r} ({_POOL_SETTING})"
    )


def _choose_pool(model: nn.Module, name: str, layout: str, pool: str | None) -> None:
    """Set the model's head to pool as ``pool`` asks (None keeps the model's own choice)."""
    if pool is None:
        return
    if pool not in POOLS:
        raise ValueError(f"unknown pool {pool!r}; choose one of {', '.join(POOLS)}, or None")
    if layout != "NLC" and pool == "token":
        raise _pool_refused(name, "has no class token (its features are a map)", "avg", pool)
    if layout == "NCHW":  # sef pools the mean of the map itself
        return
    if _distilled(model) and pool != "token":
        why = f"pools the {_DISTILLED_POOL}, which its distilled head reads"
        raise _pool_refused(name, why, "token", pool)
    try:
        model.reset_classifier(0, global_pool=pool)
    except (AssertionError, TypeError) as error:
        raise ValueError(
            f"{name} cannot pool with {pool!r} (timm: {error}); leave pool unset ({_POOL_SETTING})"
        ) from None
    if getattr(model, "global_pool", None) != pool:
        raise ValueError(
            f"{name} does not let sef choose its pooling; leave pool unset ({_POOL_SETTING})"
        )


@torch.no_grad()
def timm_features(
    model: nn.Module, *, image_size: int, pool: str | None = None, name: str | None = None
) -> TimmFeatures:
    """Adapt a timm model (built with ``num_classes=0``) for SEF, checking it with one forward
    pass at ``image_size``, the size it takes; ValueError saying what came out if unsupported.

    A CNN's head layers after the pooling (``conv_head``, a head norm) are replaced by
    ``nn.Identity``: SEF pools the mean of the last map, so they would never train; a token
    model's classifier is removed (``reset_classifier(0)``), its pooling and norm kept."""
    name = name or type(model).__name__
    if not hasattr(model, "forward_features"):  # timm's features_only wrapper has none
        raise _unsupported(
            name, f"its {type(model).__name__} has no forward_features (leave out features_only)"
        )
    _check_patches_divide(model, name, image_size)
    with evaluation_mode(model):
        raw, called, image_channels = _probe(model, name, image_size)
        layout = _layout(model, raw)
        if layout == "unknown":
            what = f"shape {tuple(raw.shape)}" if isinstance(raw, Tensor) else type(raw).__name__
            raise _unsupported(name, f"its forward_features returned a {what} at {image_size} px")
        _choose_pool(model, name, layout, pool)
        channels = raw.shape[1] if layout == "NCHW" else raw.shape[-1]
        channels = getattr(model, "num_features", channels)
        dropped = _drop_unused_children(model, called) if layout == "NCHW" else ()
        dropped += _drop_classifier(model) if layout != "NCHW" else ()
        adapter = TimmFeatures(model, layout, channels, image_size, dropped, image_channels)
        _check_shapes(adapter, raw, image_size, name)
    return adapter


def _check_patches_divide(model: nn.Module, name: str, image_size: int) -> None:
    """ValueError where a token model's patches do not tile ``image_size``: timm's patch
    embedding would ignore the last rows and columns (built for any size: fail on them)."""
    embed = _patch_embed(model)
    if embed is None or getattr(embed, "dynamic_img_pad", False):
        return
    step = math.lcm(*getattr(embed, "patch_size", (1,)))
    if image_size % step == 0 or image_size < step:  # smaller than a patch: _probe says so
        return
    below = image_size - image_size % step
    raise ValueError(
        f"{name} cuts images into {step} px patches, which do not tile {image_size} px images "
        f"({image_size - below} px of rows and columns left over); choose an image size of "
        f"{below} or {below + step} px"
    )


def _probe(model: nn.Module, name: str, image_size: int) -> tuple[object, set[int], int]:
    """:func:`_called_modules` on the first of :func:`blank_images` of ``image_size`` it runs on,
    and that image's channels; ValueError where the model cannot run on any (a patch or kernel
    larger than the image; timm asserts some sizes), naming the first failure."""
    failures = []
    for images in blank_images(model, image_size):
        try:
            return *_called_modules(model, images), images.shape[1]
        except (RuntimeError, AssertionError, IndexError) as error:  # IndexError: MViTv2
            failures.append(str(error).splitlines()[0])
    raise ValueError(
        f"{name} cannot run on {image_size} px images ({failures[0]}); "
        f"choose an image size (and backbone_args) it takes"
    )


def _called_modules(model: nn.Module, images: Tensor) -> tuple[object, set[int]]:
    """``model.forward_features(images)`` and the ids of the submodules it called."""
    called: set[int] = set()
    hooks = [
        part.register_forward_pre_hook(lambda part, _: called.add(id(part)))
        for part in model.modules()
    ]
    try:
        return model.forward_features(images), called
    finally:
        for hook in hooks:
            hook.remove()


def _drop_unused_children(model: nn.Module, called: set[int]) -> tuple[str, ...]:
    """Replace each top-level child of ``model`` that holds weights but that forward_features
    never called by ``nn.Identity``; their names."""
    dropped = []
    for name, child in list(model.named_children()):
        if any(id(part) in called for part in child.modules()):
            continue
        if next(child.parameters(), None) is None and next(child.buffers(), None) is None:
            continue
        setattr(model, name, nn.Identity())
        dropped.append(name)
    return tuple(dropped)


def _drop_classifier(model: nn.Module) -> tuple[str, ...]:
    """Remove the classifier of a token model passed with one (``num_classes`` > 0): its
    ``forward_head(pre_logits=True)`` stops before it, so it would never train and would
    ship; the names of the modules whose weights went."""
    if not getattr(model, "num_classes", 0):
        return ()
    before = model.state_dict()
    model.reset_classifier(0)
    return tuple(
        dict.fromkeys(key.rpartition(".")[0] for key in before.keys() - model.state_dict())
    )


def _check_shapes(adapter: TimmFeatures, raw: Tensor, image_size: int, name: str) -> None:
    shape = tuple(raw.shape)
    if adapter.layout == "NLC":
        prefix = getattr(adapter.model, "num_prefix_tokens", 0)
        embed = _patch_embed(adapter.model)
        rows, cols = adapter.grid((image_size, image_size)) if embed is not None else (0, 0)
        if rows * cols != shape[1] - prefix or rows * cols == 0:
            grid = f"a {rows}x{cols} patch grid" if embed is not None else "no patch grid"
            raise _unsupported(
                name,
                f"at {image_size} px its forward_features gave tokens of shape {shape}, "
                f"{prefix} prefix tokens and {grid}",
            )
    features = adapter.feature_map(raw, (image_size, image_size))
    pooled = adapter.pool(raw)
    if features.shape[1] != adapter.channels or tuple(pooled.shape) != (1, adapter.channels):
        raise _unsupported(
            name,
            f"its feature map has shape {tuple(features.shape)} and its head pools to "
            f"{tuple(pooled.shape)}, not the {adapter.channels} channels of the map",
        )
