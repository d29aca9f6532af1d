"""SEF's training losses: the semantic group loss (two variants) and Eq. 8 of the paper.

Both group-loss variants only need block sums of channel cosines over groups, so neither
builds the C x C channel-correlation matrix when a cheaper route exists:

* block sums of cos_ij are dot products of per-group sums of normalised channels, O(C*HW);
* block sums of cos_ij^2 are <K_m, K_n>_F with K_m the HW x HW Gram of group m, O(C*HW^2),
  used when HW < C (true for the last layer of ImageNet CNNs); otherwise the C x C Gram.

Groups of one size (C divisible by G) take one batched operator where a loop over the groups
would run one per group (the Grams, the group sums): fewer kernel launches on a GPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sef.choices import GROUP_LOSS_VARIANTS
from sef.errors import warn
from sef.groups import group_sizes, positive_int
from sef.loss_config import LossConfig

if TYPE_CHECKING:
    from sef.model import SEFOutput

EPS = torch.finfo(torch.float32).eps
ONE_BY_ONE = (
    "the feature map is 1 x 1: each channel is one number, its cosine with another is +1 or -1, "
    "and the group loss has no gradient; give the backbone larger images"
)
NO_PROGRESS = (
    "SEFLoss has a schedule (lam_warmup, phi_warmup or lam_until) but set_progress was never "
    "called, so it stays at epoch 0 (a warmed-up weight stays 0); call "
    "loss.set_progress(epoch + step / steps) before each step, as sef train does"
)
NO_FEATURE_GRADIENT = (
    "the feature map has no gradient while the logits have one (a frozen backbone?): the group "
    "loss is a constant that trains nothing; unfreeze the backbone's last layers, or pass phi=0"
)
# What SEFLoss returns, in this order: the weighted terms of Eq. 8, then their sum. The training
# loop records them (loss_<term>) and the curves figure draws them from this tuple.
LOSS_TERMS = ("ce", "entropy", "distill", "group", "total")
_DEFAULTS = LossConfig()
# Groups count as separated when the mean channel correlation within a group exceeds the one
# between groups by at least this much (the paper's Fig. 2: about 1 against 0.1-0.4; channels
# split at random: within - between = (1 - between) / channels per group, under 0.01).
SEPARATION_GAP = 0.2
# A row of class probabilities may miss a sum of 1 by this much: rounding, bf16's included.
ROW_SUM_TOLERANCE = 0.01
# The class index whose image ce skips: F.nll_loss's (and F.cross_entropy's) ignore_index.
IGNORED = -100


def _full_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast off on ``device``; nothing to turn off where autocast does not exist ("meta")."""
    available = getattr(torch.amp, "is_autocast_available", lambda kind: kind != "meta")
    if not available(device.type):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, enabled=False)


def _at_least_float32(tensor: Tensor) -> Tensor:
    """``tensor`` in float32 (bf16 and fp16 ones too), a float64 one as it is: the loss keeps a
    float64 model's precision (what ``torch.autograd.gradcheck`` needs)."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def _finite_log(log_p: Tensor) -> Tensor:
    """``log_p`` with -inf (a class given probability 0, e.g. a masked logit) as the lowest finite
    number, so that p * log p is 0 there, not 0 * -inf = nan; finite values are unchanged."""
    return log_p.clamp_min(torch.finfo(log_p.dtype).min)


def normalised_channels(features: Tensor, floor: float = 0.0) -> Tensor:
    """[B, C, H, W] -> [B, C, HW], float32 at least, with every channel scaled to unit L2 norm
    (the group loss's and the figures' channel cosines, sef.analysis, divide alike).

    ``floor`` > 0: a channel whose norm is under ``floor`` times its image's mean channel norm
    (taken as a constant) is divided by that instead, so it stays short. Scaling a nearly dead
    channel up to unit length multiplies its gradient by 1 / |x|: one such channel in a batch
    gave a gradient 140 times the usual one and undid a fine-tuning run (docs/finetune.md).
    """
    if features.dim() != 4:
        raise ValueError(
            f"features must be a [B, C, H, W] feature map, got shape {tuple(features.shape)}"
        )
    x = _at_least_float32(features).flatten(2)
    norms = x.norm(dim=2, keepdim=True)
    if floor > 0:
        norms = torch.maximum(norms, floor * norms.mean(dim=1, keepdim=True).detach())
    return x / (norms + EPS)


def _same_size_groups(x: Tensor, sizes: list[int]) -> Tensor | None:
    """[B, C, N] -> a [B, G, C/G, N] view when every group has the same size, else None: one
    batched operator then does what a loop over the groups would (fewer kernel launches)."""
    if len(set(sizes)) > 1:
        return None
    return x.unflatten(1, (len(sizes), sizes[0]))


def _group_sums(x: Tensor, sizes: list[int]) -> Tensor:
    """[B, C, N] -> [B, G, N]: the sum of the normalised channels of each group."""
    grouped = _same_size_groups(x, sizes)
    if grouped is not None:
        return grouped.sum(dim=2)
    return torch.stack([part.sum(dim=1) for part in x.split(sizes, dim=1)], dim=1)


def _group_grams(x: Tensor, sizes: list[int]) -> Tensor:
    """[B, C, N] -> [B, G, N, N]: K_m = X_m^T X_m, the position Gram of each group."""
    grouped = _same_size_groups(x, sizes)
    if grouped is not None:
        return grouped.transpose(2, 3) @ grouped
    return torch.stack([part.transpose(1, 2) @ part for part in x.split(sizes, dim=1)], 1)


def _squared_cosine_block_sums(x: Tensor, sizes: list[int]) -> Tensor:
    """[B, C, N] -> [B, G, G]: Q_mn = sum over i in m, j in n of cos_ij^2."""
    channels, positions = x.shape[1], x.shape[2]
    if positions < channels:
        grams = _group_grams(x, sizes).flatten(2)  # Q_mn = <K_m, K_n>_F
        return grams @ grams.transpose(1, 2)
    squared = (x @ x.transpose(1, 2)).square()
    membership = _membership(tuple(sizes), x.device, x.dtype)
    return membership.T @ squared @ membership


def _per_shape(build: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Cache a constant tensor per shape (so a step copies nothing from the host), built outside
    inference mode: one made under ``torch.inference_mode`` (an evaluation, Lightning's
    ``validate``) could not be saved for backward by a later training step. Under
    ``torch.compile`` the constant is traced into the graph instead (Dynamo warns at any
    ``lru_cache``)."""

    @functools.lru_cache(maxsize=64)
    def cached(*key):
        with torch.inference_mode(False):
            return build(*key)

    @functools.wraps(build)
    def constant(*key):
        return build(*key) if torch.compiler.is_compiling() else cached(*key)

    constant.cache_clear = cached.cache_clear
    return constant


@_per_shape
def _membership(sizes: tuple[int, ...], device: torch.device, dtype) -> Tensor:
    """[C, G]: 1 where channel i is in group g, built once per shape."""
    membership = torch.zeros(sum(sizes), len(sizes), device=device, dtype=dtype)
    start = 0
    for g, size in enumerate(sizes):
        membership[start : start + size, g] = 1.0
        start += size
    return membership


@_per_shape
def _weights(variant: str, sizes: tuple[int, ...], device: torch.device, dtype) -> Tensor:
    """[G, G] weights that turn block sums into the per-image loss, built once per shape (a
    copy from the host at each step would make the host wait for the device).

    paper: 1 / (n_m n_n). reference: -1 / (G n_g^2) on the diagonal, 1 / (P n_g N_<g) below
    it (N_<g: channels of the earlier groups; P = G(G-1)/2 pairs), 0 above.
    """
    count = torch.tensor(sizes, dtype=torch.float64)
    if variant == "paper":
        weights = 1.0 / (count[:, None] * count[None, :])
    else:
        groups = len(sizes)
        weights = torch.diag(-1.0 / (groups * count.square()))
        if groups > 1:
            earlier_count = count.cumsum(0) - count
            pairs = groups * (groups - 1) / 2
            below = 1.0 / (pairs * count[:, None] * earlier_count[:, None].clamp(min=1))
            weights += below.expand(groups, groups).tril(-1)
    return weights.to(device=device, dtype=dtype)


def _mean_cosines(x: Tensor, sizes: list[int]) -> Tensor:
    """[B, C, N] -> [B, G, G]: D_mn, the mean cos_ij over i in group m, j in group n (i = j
    included), from dot products of the groups' channel sums."""
    sums = _group_sums(x, sizes)
    return (sums @ sums.transpose(1, 2)) * _weights("paper", tuple(sizes), x.device, x.dtype)


def _paper_group_loss(x: Tensor, sizes: list[int]) -> Tensor:
    """Eq. 4: D_mn = mean cos over groups m, n; L = (||D||_F^2 - 2 ||diag D||^2) / 2."""
    mean_cos = _mean_cosines(x, sizes)
    diagonal = mean_cos.diagonal(dim1=1, dim2=2)
    per_image = 0.5 * (mean_cos.square().sum((1, 2)) - 2 * diagonal.square().sum(1))
    return per_image.mean()


def _reference_group_loss(x: Tensor, sizes: list[int]) -> Tensor:
    """The authors' code: mean intra-group (1 - cos^2) plus cos^2 to all earlier groups,
    the latter averaged over the G(G-1)/2 group pairs; both linear in the block sums."""
    block = _squared_cosine_block_sums(x, sizes)
    weights = _weights("reference", tuple(sizes), x.device, x.dtype)
    return 0.5 * (1.0 + (block * weights).sum((1, 2))).mean()


def group_loss(
    features: Tensor,
    groups: int,
    variant: str = "reference",
    check_finite: bool = True,
    norm_floor: float = 0.0,
) -> Tensor:
    """The semantic group loss of a [B, C, H, W] feature map, batch-averaged, in float32
    (float64 for float64 features).

    ``variant="paper"`` is Eq. 4 of the paper; ``"reference"`` (default) is what the
    authors' public code computes and what their reported numbers came from.
    ``check_finite`` raises ValueError on a non-finite loss; the check waits for the device.
    ``norm_floor`` > 0 keeps nearly dead channels short instead of scaling them up to unit
    length (0: off, the paper's cosines; ``LossConfig``).
    """
    if variant not in GROUP_LOSS_VARIANTS:
        raise ValueError(
            f"unknown group loss variant {variant!r}; use one of {GROUP_LOSS_VARIANTS}"
        )
    if features.dim() == 4 and features.shape[0] == 0:
        raise ValueError("the group loss needs at least one image; the features hold none")
    if features.shape[-2:].numel() == 1:
        warn(ONE_BY_ONE)
    with _full_precision(features.device):
        x = normalised_channels(features, norm_floor)
        sizes = group_sizes(x.shape[1], groups)
        compute = _paper_group_loss if variant == "paper" else _reference_group_loss
        loss = compute(x, sizes)
    if check_finite and not torch.isfinite(loss):
        bad = "non-finite" if not torch.isfinite(features).all() else "extreme"
        raise ValueError(f"group loss is {loss.item()} because the features contain {bad} values")
    return loss


@torch.no_grad()
def group_correlation(features: Tensor, groups: int) -> Tensor:
    """How far the G channel groups of a [B, C, H, W] map are apart: ``[within, between]``
    summed over the batch's images (divide by B for the mean).

    Per image, ``within`` is the mean of the G diagonal blocks of the C x C channel cosine
    matrix (i = j included) and ``between`` the mean of its G(G-1) off-diagonal blocks: the
    statistic of ``sef viz corr``, from the groups' channel sums in O(C*HW), with no gradient
    and no wait for the device. Needs G >= 2.
    """
    if groups < 2:
        raise ValueError(f"group_correlation needs at least 2 groups, got {groups}")
    with _full_precision(features.device):
        x = normalised_channels(features.detach())
        blocks = _mean_cosines(x, group_sizes(x.shape[1], groups)).sum(0)
    within = blocks.diagonal().sum()
    between = blocks.sum() - within
    return torch.stack([within / groups, between / (groups * (groups - 1))])


def groups_separated(within: float, between: float) -> bool:
    """Whether mean within-group correlation exceeds between-group by ``SEPARATION_GAP``."""
    return within - between >= SEPARATION_GAP


def _check_logits(logits: Tensor) -> None:
    if logits.dim() != 2:
        raise ValueError(f"logits must be [B, K], got shape {tuple(logits.shape)}")


def _check_output(output: SEFOutput, target: Tensor, groups: int) -> None:
    if not all(hasattr(output, name) for name in ("logits", "group_logits", "features")):
        raise TypeError(
            f"SEFLoss takes the SEFOutput of a model in train mode (or of model.forward_sef), "
            f"got {type(output).__name__}: an eval-mode SEF returns logits only"
        )
    for name in ("logits", "group_logits", "features"):
        if not isinstance(getattr(output, name), Tensor):
            kind = type(getattr(output, name)).__name__
            stack = ": torch.stack the group heads' logits" if name == "group_logits" else ""
            raise TypeError(f"SEFOutput.{name} must be a tensor, got {kind}{stack}")
    logits, group_logits = output.logits, output.group_logits
    _check_logits(logits)
    if logits.shape[0] == 0:
        raise ValueError("SEFLoss needs at least one image; the batch is empty")
    if logits.shape[1] < 2:
        raise ValueError(
            f"SEFLoss needs logits of two classes or more, got {logits.shape[1]}: a softmax over "
            f"one class is always 1, so its cross-entropy, entropy and distillation are 0"
        )
    expected = (groups, *logits.shape)
    other_groups = group_logits.dim() == 3 and group_logits.shape[1:] == logits.shape
    if other_groups and len(group_logits) != groups:
        raise ValueError(
            f"group_logits hold {len(group_logits)} groups and SEFLoss has groups={groups}; "
            f"give the loss the model's groups: SEFLoss(model.groups)"
        )
    if tuple(group_logits.shape) != expected:
        raise ValueError(
            f"group_logits must be [G, B, K] = {expected} for groups={groups}, "
            f"got {tuple(group_logits.shape)}"
        )
    if output.features.dim() != 4 or output.features.shape[0] != logits.shape[0]:
        raise ValueError(
            f"features must be a [B, C, H, W] feature map with B = {logits.shape[0]}, "
            f"got shape {tuple(output.features.shape)}"
        )
    _check_target(target, logits)


def _check_target(target: Tensor, logits: Tensor) -> None:
    """Refuse a target that is neither class indices [B] nor class probabilities [B, K]."""
    batch, classes = logits.shape
    if not isinstance(target, Tensor):
        raise TypeError(
            f"target must be a tensor, got {type(target).__name__}: pass "
            f"torch.as_tensor(labels, device=logits.device)"
        )
    floats = target.dtype.is_floating_point
    integers = not (floats or target.dtype.is_complex or target.dtype == torch.bool)
    if (floats or integers) and tuple(target.shape) == ((batch, classes) if floats else (batch,)):
        if floats:
            _check_probabilities(target)
        else:
            _check_classes(target, classes)
        return
    raise ValueError(
        f"target must be class indices [B] = ({batch},) (an integer dtype) or class "
        f"probabilities [B, K] = ({batch}, {classes}) (floats), got {target.dtype} of shape "
        f"{tuple(target.shape)}"
    )


def _values_readable(target: Tensor) -> bool:
    """Whether reading the target's values waits for nothing: on the CPU, outside
    ``torch.compile``. On a GPU they go unread (a check would wait for the device every step)."""
    return target.device.type == "cpu" and not torch.compiler.is_compiling()


def _check_classes(target: Tensor, classes: int) -> None:
    """Refuse a class index outside 0 to K - 1 (but ``IGNORED``) where its value is readable;
    on a GPU, nll_loss's own device-side assert stops it."""
    if not _values_readable(target) or not target.numel():
        return
    low, top = (int(value) for value in target.detach().aminmax())
    if 0 <= low and top < classes:  # the usual batch: two numbers read, ~4 us
        return
    labels = target.detach().long()
    bad = (((labels < 0) | (labels >= classes)) & (labels != IGNORED)).nonzero()
    if not len(bad):
        return
    image = int(bad[0])
    fix = (
        f"; build the SEF with num_classes={top + 1} for labels up to {top}, or subtract 1 "
        f"from labels counted from 1"
        if top >= classes
        else ""
    )
    raise ValueError(
        f"target holds class {int(labels[image])} (image {image}) but the logits have "
        f"{classes} classes: labels are 0 to {classes - 1}, or {IGNORED} for an image ce "
        f"skips{fix}"
    )


def _check_probabilities(target: Tensor) -> None:
    """Refuse a row that is not a distribution (NaN included) where its values are readable; on
    a GPU they go unread, as ``F.cross_entropy`` leaves them."""
    if not _values_readable(target):
        return
    rows = target.detach().float()
    sums = rows.sum(1)
    bad = ((rows < 0).any(1) | ~((sums - 1).abs() <= ROW_SUM_TOLERANCE)).nonzero()
    if len(bad):
        row = int(bad[0])
        raise ValueError(
            f"target holds class probabilities [B, K], which are >= 0 and sum to 1 in each row, "
            f"but row {row} sums to {sums[row]:.4g} and its least entry is {rows[row].min():.4g}"
        )


def target_classes(target: Tensor) -> Tensor:
    """The class of each image of a target: class indices as they are, class probabilities
    [B, K] (mixup, label smoothing) their most probable class; what a training top-1 counts."""
    return target.argmax(1) if target.dim() == 2 else target


def _cross_entropy(log_p: Tensor, target: Tensor) -> Tensor:
    """The batch's mean of -log p[target] (class indices) or of -sum_k q_k log p_k (class
    probabilities q, where a class of p = 0 that q gives 0 adds 0, not nan).

    Both means are nll_loss's, so one-hot probabilities give their indices' value bit for bit
    (``Tensor.mean`` adds in another order)."""
    if target.dtype.is_floating_point:
        log_p = (target.to(log_p.dtype) * _finite_log(log_p)).sum(1, keepdim=True)  # [B, 1]
        target = log_p.new_zeros(len(log_p), dtype=torch.long)
    # int32 or uint8 labels as well: nll_loss takes int64
    return F.nll_loss(log_p, target.long(), ignore_index=IGNORED)


def cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy of [B, K] logits against class indices [B] or class probabilities [B, K],
    in float32 (float64 for float64 logits): ``SEFLoss``'s ce term, for logits alone (an SEF in
    eval mode)."""
    _check_logits(logits)
    _check_target(target, logits)
    with _full_precision(logits.device):
        return _cross_entropy(F.log_softmax(_at_least_float32(logits), dim=1), target)


class SEFLoss(nn.Module):
    """Eq. 8 as the authors' code adds it: ce + entropy + distill + group, each weighted.

    Returns a dict of float32 scalars (float64 for a float64 model's output) ``LOSS_TERMS``
    (ce, entropy, distill, group, total) where the named terms are already multiplied by their
    weights and ``total`` is their sum. The options' defaults and rules are
    :class:`~sef.loss_config.LossConfig`'s; :meth:`from_config` builds the loss a config's
    ``loss`` section describes.
    ``lam_warmup`` > 0 (epochs; off by default, as in the paper) ramps ``lam`` up from 0 so the
    entropy term does not flatten the predictions of a head that is still random;
    ``phi_warmup`` ramps ``phi`` likewise, so the classifier can learn before the group loss
    rearranges the feature map. ``norm_floor`` > 0 (off by default) keeps the group loss's
    gradient bounded where a channel is nearly dead (:func:`normalised_channels`).
    ``lam_until`` > 0 (epochs; off by default) sets ``lam`` to 0 from then on: the entropy term
    acts only early in training (docs/finetune.md measures why one would).
    It never waits for the device: a non-finite input gives a non-finite ``total``, which the
    caller checks once per step (``sef.engine.train_one_epoch`` does).

    ``target`` is class indices [B] (any integer dtype) or class probabilities [B, K] (floats:
    mixup, cutmix, label smoothing). Only ce reads it: the batch's mean of -sum_k q_k log p_k,
    what ``F.cross_entropy`` computes with probabilities (and timm's ``SoftTargetCrossEntropy``).
    Shapes and dtypes are checked; the probabilities' values (>= 0, rows summing to 1) only on
    the CPU, where reading them waits for no device.
    """

    def __init__(
        self,
        groups: int,
        lam: float = _DEFAULTS.lam,
        gamma: float = _DEFAULTS.gamma,
        phi: float = _DEFAULTS.phi,
        group_variant: str = _DEFAULTS.group_variant,
        detach_teacher: bool = _DEFAULTS.detach_teacher,
        lam_warmup: float = _DEFAULTS.lam_warmup,
        phi_warmup: float = _DEFAULTS.phi_warmup,
        norm_floor: float = _DEFAULTS.norm_floor,
        lam_until: float = _DEFAULTS.lam_until,
    ) -> None:
        super().__init__()
        groups = positive_int("groups", groups)
        options = LossConfig(
            lam,
            gamma,
            phi,
            group_variant,
            detach_teacher,
            lam_warmup,
            phi_warmup,
            norm_floor,
            lam_until,
        )
        problem = options.invalid()
        if problem is not None:
            name, value, rule = problem
            raise ValueError(f"{name}={value!r} is invalid: it must be {rule}")
        self.groups, self.lam, self.gamma, self.phi = groups, lam, gamma, phi
        self.group_variant, self.detach_teacher = group_variant, detach_teacher
        self.lam_warmup, self.phi_warmup, self.norm_floor = lam_warmup, phi_warmup, norm_floor
        self.lam_until = lam_until
        self.progress = 0.0  # epochs trained so far, fractional: set by the training loop
        self._progress_known = False  # set_progress was called (or its absence was warned of)
        self._frozen_told = False  # a feature map without gradient was warned of

    def options(self) -> LossConfig:
        """The loss's options (weights, variant, warm-ups) as the config's ``loss`` section."""
        return LossConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(LossConfig)})

    def extra_repr(self) -> str:
        """The weights and variant, and every other option that is not its default."""
        always = ("lam", "gamma", "phi", "group_variant")
        options = dataclasses.asdict(self.options())
        shown = [
            f"{name}={value!r}"
            for name, value in options.items()
            if name in always or value != getattr(_DEFAULTS, name)
        ]
        return ", ".join([f"groups={self.groups}", *shown])

    @classmethod
    def from_config(cls, config: LossConfig, groups: int) -> SEFLoss:
        """The loss a config's ``loss`` section describes, for ``groups`` channel groups."""
        return cls(groups, **dataclasses.asdict(config))

    def set_progress(self, epochs: float) -> None:
        """Tell the loss how far training is (in epochs), for the warm-ups of lam and phi."""
        self.progress = epochs
        self._progress_known = True

    def _ramped(self, weight: float, warmup: float) -> float:
        """``weight``, ramped linearly from 0 over the first ``warmup`` epochs (if any)."""
        if warmup <= 0:
            return weight
        return weight * min(1.0, self.progress / warmup)

    @property
    def current_lam(self) -> float:
        """``lam`` at this point of training (``lam_warmup``, ``lam_until``)."""
        if self.lam_until and self.progress >= self.lam_until:
            return 0.0
        return self._ramped(self.lam, self.lam_warmup)

    @property
    def current_phi(self) -> float:
        """``phi`` at this point of training (``phi_warmup``)."""
        return self._ramped(self.phi, self.phi_warmup)

    def forward(self, output: SEFOutput, target: Tensor) -> Mapping[str, Tensor]:
        _check_output(output, target, self.groups)
        scheduled = self.lam_warmup or self.phi_warmup or self.lam_until
        if scheduled and not self._progress_known:
            warn(NO_PROGRESS)
            self._progress_known = True  # once
        self._warn_if_features_frozen(output)
        with _full_precision(output.logits.device):
            logits = _at_least_float32(output.logits)
            zero = logits.new_zeros(())
            log_p = F.log_softmax(logits, dim=1)
            terms = {"ce": _cross_entropy(log_p, target)}
            p = log_p.exp()
            lam = self.current_lam
            terms["entropy"] = lam * (p * _finite_log(log_p)).sum(1).mean() if lam else zero
            terms["distill"] = self._distill(p, output.group_logits) if self.gamma else zero
            phi = self.current_phi
            terms["group"] = (
                phi
                * group_loss(
                    output.features,
                    self.groups,
                    self.group_variant,
                    check_finite=False,
                    norm_floor=self.norm_floor,
                )
                if phi
                else zero
            )
        total = terms[LOSS_TERMS[0]]
        for name in LOSS_TERMS[1:-1]:
            total = total + terms[name]
        terms[LOSS_TERMS[-1]] = total
        return terms

    def _warn_if_features_frozen(self, output: SEFOutput) -> None:
        """Warn once where the group loss could train nothing: the logits need a gradient, the
        feature map none (``model.backbone.requires_grad_(False)``)."""
        if self._frozen_told or not self.current_phi:
            return
        if output.logits.requires_grad and not output.features.requires_grad:
            warn(NO_FEATURE_GRADIENT)
            self._frozen_told = True

    def _distill(self, p_global: Tensor, group_logits: Tensor) -> Tensor:
        """(gamma / G) sum_g mean_b H(P_w, P_a^g): the global head teaches every group head."""
        teacher = p_global.detach() if self.detach_teacher else p_global
        log_q = F.log_softmax(_at_least_float32(group_logits), dim=2)
        cross_entropy = -(teacher.unsqueeze(0) * _finite_log(log_q)).sum(2).mean(1)
        return self.gamma * cross_entropy.mean()
