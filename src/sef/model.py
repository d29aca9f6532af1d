"""The SEF wrapper: any CNN or token backbone + a global head + G training-only group heads.

Core: it knows no config, dataset or checkpoint (a model from a config, or a trained one from a
checkpoint, is :mod:`sef.trained`)."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sef.adapters import FeatureAdapter, Pooled, TimmFeatures, placement
from sef.backbones import create_backbone, probe_channels, warn_of_unused_parameters
from sef.groups import group_sizes, positive_int
from sef.text import counted, some


@dataclass
class SEFOutput:
    """What SEF returns in train mode.

    logits: [B, K] from the global head; group_logits: [G, B, K] from the group heads;
    features: [B, C, H, W], the backbone's last feature map (input of the group loss).
    """

    logits: Tensor
    group_logits: Tensor
    features: Tensor

    def __getattr__(self, name: str) -> object:
        """One line where a loop reads the training output as logits (``output.argmax(1)``)."""
        if name.startswith("_") or not hasattr(Tensor, name):
            raise AttributeError(f"'SEFOutput' object has no attribute {name!r}")
        raise AttributeError(
            f"SEFOutput has no {name!r}: it is a train-mode SEF's output (logits, group_logits, "
            f"features), not a tensor; read output.logits.{name}, or call model.eval() for "
            f"plain logits"
        )


# A pytree node, so torch.export, torch.compile and tree utilities see its three tensors.
torch.export.register_dataclass(SEFOutput, serialized_type_name="sef.model.SEFOutput")


# nn.DataParallel gathers outputs along dim 0: it cannot gather a dataclass, and would stack
# group_logits [G, B, K] along G. Its replicas carry _is_replica (eval mode's logits gather fine).
_DATA_PARALLEL = (
    "SEF's training output cannot be gathered by nn.DataParallel (group_logits is [G, B, K]): "
    "train on several GPUs with DistributedDataParallel (`torchrun ... sef train`, or DDP in "
    "your own loop); DataParallel works for eval mode, which returns plain logits"
)


# torch's F.batch_norm on a batch of one value per channel in train mode
ONE_VALUE_PER_CHANNEL = "Expected more than 1 value per channel when training"


class OneValuePerChannel(ValueError):
    """A BatchNorm of the backbone got one value per channel in train mode (a batch of one image
    whose map is 1 x 1 there), with what to do in a loop of one's own; ``torch_says`` is torch's
    message (``sef train`` says what to do in its own options)."""

    def __init__(self, error: ValueError, images: Tensor) -> None:
        self.torch_says = str(error)
        detail = self.torch_says[len(ONE_VALUE_PER_CHANNEL) :].lstrip(", ")
        super().__init__(
            f"a BatchNorm of the backbone got one value per channel in train mode ({detail}): "
            f"a batch of {counted(len(images), 'image')} at {images.shape[-2]} x "
            f"{images.shape[-1]} px leaves it nothing to normalise; drop the last, short batch "
            f"(DataLoader(..., drop_last=True)), or give larger images"
        )


def _global_pool() -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


class SEF(nn.Module):
    """A backbone with SEF's heads.

    Train mode returns :class:`SEFOutput`; eval mode returns the global logits only, so the
    deployed model costs exactly its backbone. :meth:`export` drops the group heads.

    Heads read pooled features: the mean of a CNN's map; for timm token backbones what the
    model's own head pools, or ``pool="avg"`` (mean of the patch tokens) / ``"token"`` (the class
    token; a distilled DeiT's head, which takes no ``avg``, the mean of its class and distillation
    tokens). ``image_size`` builds fixed-size timm models (ViT, Swin) for that input side, and is
    the side of the blank image an ``nn.Module`` backbone is run on once to count its channels,
    or a :class:`~sef.adapters.FeatureAdapter` of your own to check them (default 64; the image
    has as many channels as the backbone's first-registered ``nn.Conv2d`` takes, else 3 where
    that fails: ``image_channels`` is the count that ran, which :meth:`export` and sef.export
    feed the network);
    ``backbone_args`` go to ``timm.create_model`` (e.g. ``{"drop_path_rate": 0.1}``).
    """

    def __init__(
        self,
        backbone: str | nn.Module,
        num_classes: int,
        groups: int = 4,
        weights: str | os.PathLike | None = None,
        *,
        pool: str | None = None,
        image_size: int | None = None,
        backbone_args: dict | None = None,
        output_stride: int | None = None,
    ) -> None:
        super().__init__()
        num_classes = positive_int("num_classes", num_classes)
        if image_size is not None:  # an int, not numpy's: the architecture is written as JSON
            image_size = positive_int("image_size", image_size)
        self.backbone = create_backbone(
            backbone,
            weights,
            image_size=image_size,
            pool=pool,
            backbone_args=backbone_args,
            output_stride=output_stride,
        )
        self.image_channels, self.channels = probe_channels(self.backbone, image_size)
        if isinstance(backbone, nn.Module) and not isinstance(backbone, FeatureAdapter):
            warn_of_unused_parameters(backbone, self.image_channels, image_size or 64)
        self.num_classes = num_classes
        self.group_sizes = group_sizes(self.channels, groups)
        self.pool = _global_pool()
        like = placement(self.backbone)  # a module in float64, or on a GPU: its heads too
        self.head = nn.Linear(self.channels, num_classes, **like)
        self.group_heads = nn.ModuleList(
            nn.Linear(c, num_classes, **like) for c in self.group_sizes
        )
        self.register_load_state_dict_pre_hook(_check_state_dict)
        # What rebuilds the exported network (sef.export.load_safetensors); None for a module.
        self.architecture = None if isinstance(backbone, nn.Module) else {
            "backbone": str(backbone), "num_classes": num_classes, "pool": pool,
            "image_size": image_size, "backbone_args": backbone_args,
            "output_stride": output_stride,
        }  # fmt: skip

    @property
    def groups(self) -> int:
        return len(self.group_sizes)

    @property
    def pooling(self) -> str:
        """How the heads' features are pooled, in words."""
        if isinstance(self.backbone, FeatureAdapter):
            return self.backbone.describe_pool()
        return "mean of the feature map"

    def _pool(self, raw: Tensor) -> Tensor:
        if isinstance(self.backbone, FeatureAdapter):
            return self.backbone.pool(raw)
        return self.pool(raw)

    def _backbone(self, images: Tensor) -> object:
        """The backbone's output; one line where a module of the user's that gave a map when it
        was probed (in eval mode) gives something else now (a tuple with auxiliary logits in
        train mode), where pooling would stop in "avg_pool2d(): argument 'input' must be
        Tensor"."""
        try:
            raw = self.backbone(images)
        except ValueError as error:
            if not str(error).startswith(ONE_VALUE_PER_CHANNEL):
                raise
            raise OneValuePerChannel(error, images) from error
        a_map = isinstance(raw, Tensor) and raw.dim() == 4
        if a_map or isinstance(self.backbone, FeatureAdapter):
            return raw
        what = f"shape {tuple(raw.shape)}" if isinstance(raw, Tensor) else type(raw).__name__
        mode = "train" if self.backbone.training else "eval"
        raise TypeError(
            f"the backbone returned {what} in {mode} mode, not "
            f"the [B, C, H, W] map it returned when sef.SEF probed it (in eval mode); make it "
            f"return its last map alone in both modes"
        )

    def _features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """The feature map [B, C, h, w] and the pooled features [B, C], from one forward pass."""
        raw = self._backbone(images)
        if isinstance(self.backbone, FeatureAdapter):
            return self.backbone.feature_map(raw, images.shape[-2:]), self._pool(raw)
        return raw, self._pool(raw)

    def feature_map(self, images: Tensor) -> Tensor:
        """The backbone's feature map X [B, C, h, w] (what the group loss and figures use)."""
        return self._features(images)[0]

    def forward_sef(self, images: Tensor) -> SEFOutput:
        """Global logits, every group head's logits, and the feature map, in any mode."""
        if getattr(self, "_is_replica", False):
            raise RuntimeError(_DATA_PARALLEL)
        self._check_images(images)
        features, pooled = self._features(images)
        self._check_channels(pooled)
        return SEFOutput(self.head(pooled), self._group_logits(pooled), features)

    def _group_logits(self, pooled: Tensor) -> Tensor:
        """Every group head on its own channels of ``pooled`` [B, C]: [G, B, K], one
        ``nn.Linear`` per head (one batched product is slower on the CPU: docs/performance.md)."""
        parts = pooled.split(self.group_sizes, dim=1)
        return torch.stack([head(p) for head, p in zip(self.group_heads, parts, strict=True)])

    def forward(self, images: Tensor) -> SEFOutput | Tensor:
        if self.training:
            return self.forward_sef(images)
        self._check_images(images)
        pooled = self._pool(self._backbone(images))
        self._check_channels(pooled)
        return self.head(pooled)

    def _check_images(self, images: Tensor) -> None:
        """:func:`_check_batch`, then the size a timm model built for one size takes."""
        _check_batch(images)
        if isinstance(self.backbone, TimmFeatures):
            self.backbone.check_size(images.shape[-2:])

    def _check_channels(self, pooled: Tensor) -> None:
        """One line where torch would say "split_with_sizes expects split_sizes to sum exactly"
        or "mat1 and mat2 shapes cannot be multiplied": a backbone replaced after construction
        by one of other channels (``pooled`` [B, N])."""
        if pooled.shape[1] != self.channels:
            raise RuntimeError(
                f"the backbone gives {pooled.shape[1]} channels, but the heads were built for "
                f"C = {self.channels}: model.backbone was replaced by another network; build a "
                f"new sef.SEF around the new backbone"
            )

    def no_weight_decay(self) -> set[str]:
        """The names its backbone's ``no_weight_decay()`` gives (a timm ViT's ``pos_embed`` and
        ``cls_token``), under their names in the SEF: timm's ``create_optimizer_v2`` reads this
        to exempt them from weight decay, and would decay them otherwise."""
        names: set[str] = set()
        found: list[str] = []
        for name, module in self.backbone.named_modules(prefix="backbone"):
            if hasattr(module, "no_weight_decay") and not name.startswith(tuple(found)):
                found.append(f"{name}.")
                names |= {f"{name}.{own}" for own in module.no_weight_decay()}
        return names

    def extra_parameters(self) -> int:
        """Parameters SEF adds to a plain backbone + linear classifier: the group heads."""
        return sum(p.numel() for p in self.group_heads.parameters())

    def parameter_counts(self) -> dict[str, int]:
        """Parameter counts of the deployed model and of what SEF adds for training only."""

        def count(module: nn.Module) -> int:
            return sum(p.numel() for p in module.parameters())

        return {
            "backbone": count(self.backbone),
            "global_head": count(self.head),
            "deployed": count(self.backbone) + count(self.head),
            "group_head_weights": sum(h.weight.numel() for h in self.group_heads),
            "group_head_biases": sum(h.bias.numel() for h in self.group_heads),
            "extra": self.extra_parameters(),
        }

    def __prepare_scriptable__(self) -> nn.Module:
        """torch.jit.script's hook: one line where TorchScript would stop at a type of sef's."""
        raise TypeError(
            "torch.jit.script cannot compile an sef.SEF (its train mode returns SEFOutput): "
            "script, trace or ONNX-export model.export(), the network that ships"
        )

    def export(self) -> nn.Module:
        """A copy of backbone + global classifier in eval mode: images -> logits, no group heads.

        Tensors a module keeps from its last forward pass (an activation stored by a hook, the
        weight of torch.nn.utils.weight_norm) are copied detached: deepcopy refuses them."""
        memo = _detached_copies(self)
        parts = [self.backbone, self.pool, self.head]
        if isinstance(self.backbone, FeatureAdapter):
            parts = [Pooled(self.backbone), self.head]
        plain = nn.Sequential(*(copy.deepcopy(part, memo) for part in parts)).eval()
        plain.image_channels = self.image_channels  # what sef.export feeds it
        return plain


def _check_batch(images: Tensor) -> None:
    """One line where the convolution would say "expected scalar type Byte" or "expected 4D
    input": images that are no float batch [B, C, H, W]."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a tensor [B, C, H, W], got {type(images).__name__}")
    if images.dim() != 4:
        add = ": one image is images.unsqueeze(0)" if images.dim() == 3 else ""
        raise ValueError(
            f"images must be a batch [B, C, H, W], got shape {tuple(images.shape)}{add}"
        )
    if not images.dtype.is_floating_point:
        raise TypeError(
            f"images must be floats, normalised as in training, got {images.dtype}: "
            f"torchvision.transforms.v2.ToDtype(torch.float32, scale=True), then Normalize"
        )


def _check_state_dict(model: SEF, state_dict: dict, prefix: str, *_) -> None:
    """A load_state_dict pre-hook: one line where torch would list every key or every head."""
    problem = (
        _wrapped_keys(state_dict, prefix)
        or _no_key_fits(model, state_dict, prefix)
        or _other_groups(model, state_dict, prefix)
    )
    if problem:
        raise RuntimeError(problem)


def _wrapped_keys(state_dict: dict, prefix: str) -> str | None:
    """What is wrong where the SEF's keys carry the prefix of a wrapper (DDP's ``module.``,
    torch.compile's ``_orig_mod.``) and its own are missing, else None."""
    if f"{prefix}head.weight" in state_dict:
        return None
    heads = (key for key in state_dict if key.startswith(prefix) and key.endswith(".head.weight"))
    wrappers = (key[len(prefix) : -len("head.weight")] for key in heads)
    wrapper = next((name for name in wrappers if _wrapper(name)), None)
    if wrapper is None:
        return None
    utils = "torch.nn.modules.utils"  # the SEF is the module loaded: torch's helper strips it
    strip = f"{utils}.consume_prefix_in_state_dict_if_present(state, '{wrapper}')"
    return (
        f"the state dict is of a wrapped SEF (its keys start with '{prefix}{wrapper}'): save the "
        f"SEF's own, sef.model.unwrap(model).state_dict(), or "
        f"{f'take {wrapper!r} out of its keys' if prefix else strip}"
    )


def _no_key_fits(model: SEF, state_dict: dict, prefix: str) -> str | None:
    """What is wrong where none of the state dict's keys is one of the SEF's (a plain network's,
    an export's): with strict=False torch would load nothing and say so only in its return
    value; else None."""
    keys = [key[len(prefix) :] for key in state_dict if key.startswith(prefix)]
    if not keys or not set(keys).isdisjoint(model.state_dict()):
        return None
    return (
        f"none of the state dict's {counted(len(keys), 'key')} is one of this SEF's "
        f"({some(keys, repr)}; an SEF's start with backbone., head. and group_heads.): "
        f"load a plain network's weights into the backbone as it is built, "
        f"sef.SEF(backbone, K, weights=PATH) (a torchvision name's file keeps torchvision's "
        f"keys), and an export's into model.export()"
    )


def _wrapper(prefix: str) -> bool:
    """Whether ``prefix`` ("module._orig_mod.") is made of DDP's and torch.compile's names."""
    return set(prefix.split(".")[:-1]) <= {"module", "_orig_mod"}


def _other_groups(model: SEF, state_dict: dict, prefix: str) -> str | None:
    """What is wrong where the state dict's group heads split the same channels into other
    groups (torch would list a size mismatch per head), else None."""
    saved = []
    while (weight := state_dict.get(f"{prefix}group_heads.{len(saved)}.weight")) is not None:
        saved.append(weight.shape[-1])
    if sum(saved) != model.channels or len(saved) == model.groups:
        return None
    return (
        f"the state dict's group heads are for groups={len(saved)} and this SEF has "
        f"groups={model.groups}: build it with groups={len(saved)}, or load the state dict "
        f"without its '{prefix}group_heads.' keys and strict=False (new group heads)"
    )


def _detached_copies(model: nn.Module) -> dict[int, Tensor]:
    """A deepcopy memo holding a detached copy of every tensor of an autograd graph that a
    submodule of ``model`` keeps as a plain attribute."""
    return {
        id(value): value.detach().clone()
        for part in model.modules()
        for value in vars(part).values()
        if isinstance(value, Tensor) and value.grad_fn is not None
    }


def unwrap(model: nn.Module) -> SEF:
    """The SEF inside DDP / torch.compile wrappers; TypeError if there is none."""
    given = model
    while not isinstance(model, SEF):
        model = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if model is None:
            raise TypeError(
                f"expected an sef.SEF (or one wrapped by DDP or torch.compile), got "
                f"{type(given).__name__}; a TrainedModel holds its SEF as .model"
            )
    return model
