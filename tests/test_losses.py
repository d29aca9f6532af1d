"""SEF's losses against slow, obviously-right float64 versions that build the C x C matrix."""

import math
import warnings
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sef
from sef.model import SEFOutput

EPS32 = torch.finfo(torch.float32).eps


def contiguous_groups(channels, groups):
    """Channel indices of each group: G-1 groups of floor(C/G), the last takes the rest."""
    base = channels // groups
    starts = [g * base for g in range(groups)] + [channels]
    return [list(range(starts[g], starts[g + 1])) for g in range(groups)]


def slow_group_loss(features, groups, variant, floor=0.0):
    """docs/method.md's definitions, one image and one block at a time, in float64; ``floor``
    divides each channel by at least that fraction of its image's mean channel norm."""
    x = features.double().flatten(2)
    divisors = torch.zeros(x.shape[:2], dtype=torch.float64)
    for b in range(x.shape[0]):
        mean_norm = sum(x[b, c].norm().item() for c in range(x.shape[1])) / x.shape[1]
        for c in range(x.shape[1]):
            divisors[b, c] = max(x[b, c].norm(), floor * mean_norm) + EPS32
    x = x / divisors.unsqueeze(2)
    members = contiguous_groups(x.shape[1], groups)
    per_image = []
    for image in x:
        cos = image @ image.T
        if variant == "paper":
            d = torch.zeros(groups, groups, dtype=torch.float64)
            for m in range(groups):
                for n in range(groups):
                    d[m, n] = cos[members[m]][:, members[n]].mean()
            per_image.append(0.5 * ((d**2).sum() - 2 * (d.diagonal() ** 2).sum()))
            continue
        s = cos**2
        intra = sum((1 - s[members[m]][:, members[m]]).mean() for m in range(groups)) / groups
        inter = torch.zeros((), dtype=torch.float64)
        for m in range(1, groups):
            earlier = [i for n in range(m) for i in members[n]]
            inter = inter + s[members[m]][:, earlier].mean() / (groups * (groups - 1) / 2)
        per_image.append(0.5 * (intra + inter))
    return torch.stack(per_image).mean()


def slow_sef_loss(out, target, groups, lam, gamma, phi, variant):
    """Eq. 8 term by term, sample by sample, in float64."""
    logits, group_logits = out.logits.double(), out.group_logits.double()
    batch = logits.shape[0]
    ce = entropy = distill = 0.0
    for b in range(batch):
        p = torch.softmax(logits[b], 0)
        ce = ce - torch.log(p[target[b]]) / batch
        entropy = entropy + lam * (p * torch.log(p)).sum() / batch
        for g in range(groups):
            q = torch.softmax(group_logits[g, b], 0)
            distill = distill + gamma / groups * (-(p * torch.log(q)).sum()) / batch
    group = phi * slow_group_loss(out.features, groups, variant)
    return {"ce": ce, "entropy": entropy, "distill": distill, "group": group}


def assert_close(actual, expected, rel=1e-5, abs_tol=1e-7):
    actual, expected = float(actual), float(expected)
    assert math.isclose(actual, expected, rel_tol=rel, abs_tol=abs_tol), (actual, expected)


SHAPES = [  # (B, C, H, W): H*W < C takes the Gram route, H*W >= C the C x C route
    (3, 64, 4, 4),
    (2, 61, 3, 5),
    (2, 24, 7, 7),
    (2, 13, 5, 5),
]


@pytest.mark.parametrize("variant", ["reference", "paper"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("groups", range(1, 9))
def test_group_loss_matches_slow_version(variant, shape, groups):
    torch.manual_seed(groups)
    features = torch.randn(shape).relu() + 0.01 * torch.rand(shape)
    expected = slow_group_loss(features, groups, variant)
    assert_close(sef.group_loss(features, groups, variant), expected)


def assert_gradient_matches_slow_version(features, groups, variant):
    """The float32 loss's gradient at ``features`` against the float64 oracle's."""
    fast_input = features.clone().float().requires_grad_()
    slow_input = features.clone().double().requires_grad_()
    sef.group_loss(fast_input, groups, variant).backward()
    slow_group_loss(slow_input, groups, variant).backward()
    torch.testing.assert_close(fast_input.grad.double(), slow_input.grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("variant", ["reference", "paper"])
@pytest.mark.parametrize("shape", [(2, 40, 3, 3), (2, 10, 6, 6)])
@pytest.mark.parametrize("groups", [3, 4])  # C = 40: 13 + 13 + 14 (a loop), 4 x 10 (batched)
def test_group_loss_gradient_matches_slow_version(variant, shape, groups):
    torch.manual_seed(0)
    assert_gradient_matches_slow_version(torch.randn(shape, dtype=torch.float64), groups, variant)


def nearly_dead_channel(shape, channel, value):
    """Random ReLU features with ``channel`` zero everywhere but ``value`` at one position."""
    torch.manual_seed(3)
    features = torch.randn(shape).relu() + 0.1
    features[:, channel] = 0.0
    features[:, channel, 0, 0] = value
    return features


@pytest.mark.parametrize("variant", ["reference", "paper"])
@pytest.mark.parametrize("shape", [(2, 40, 3, 3), (2, 10, 6, 6)])
def test_norm_floor_matches_slow_version_with_its_gradient(variant, shape):
    features = nearly_dead_channel(shape, channel=4, value=1e-3).double()
    fast_input = features.float().requires_grad_()
    slow_input = features.clone().requires_grad_()
    fast = sef.group_loss(fast_input, 3, variant, norm_floor=0.05)
    slow = slow_group_loss(slow_input, 3, variant, floor=0.05)
    assert_close(fast.detach(), slow.detach())
    assert not math.isclose(fast.item(), float(slow_group_loss(features, 3, variant)))
    fast.backward()
    slow.backward()
    torch.testing.assert_close(fast_input.grad.double(), slow_input.grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("variant", ["reference", "paper"])
def test_norm_floor_bounds_the_gradient_of_a_nearly_dead_channel(variant):
    """The cosine's 1 / |x|: a channel of norm 1e-7 takes a gradient millions of times its
    neighbours'; with a floor of 1 % of the mean norm, at most about 100 times."""

    def gradient(value, floor):
        features = nearly_dead_channel((2, 40, 3, 3), channel=4, value=value).requires_grad_()
        sef.group_loss(features, 3, variant, norm_floor=floor).backward()
        per_channel = features.grad.flatten(2).norm(dim=2)
        return per_channel[:, 4].max() / per_channel[:, 5:].median()

    assert gradient(1e-7, 0.0) > 1e5
    assert gradient(1e-7, 0.01) < 300


@pytest.mark.parametrize("variant", ["reference", "paper"])
def test_norm_floor_changes_nothing_where_every_channel_is_above_it(variant):
    torch.manual_seed(4)
    features = torch.rand(2, 30, 4, 4) + 0.5
    assert sef.group_loss(features, 3, variant, norm_floor=0.2) == sef.group_loss(
        features, 3, variant
    )


def test_sef_loss_passes_its_norm_floor_to_the_group_loss():
    out, target = make_output(groups=3, channels=30), torch.tensor([0, 3, 6, 2])
    out.features[:, 2] = 0.0
    out.features[:, 2, 0, 0] = 1e-4
    floored = sef.SEFLoss(3, lam=0, gamma=0, phi=1, group_variant="paper", norm_floor=0.1)
    expected = slow_group_loss(out.features, 3, "paper", floor=0.1)
    assert_close(floored(out, target)["group"], expected)


@pytest.mark.parametrize("shape", [(2, 16, 3, 3), (2, 4, 3, 3)])  # the Gram and C x C routes
def test_losses_computed_under_inference_mode_first_still_train(shape):
    """The per-shape constants cached by a first call under torch.inference_mode (an evaluation,
    Lightning's validate) are ordinary tensors: a training step can save them for backward."""
    from sef import losses

    losses._weights.cache_clear()
    losses._membership.cache_clear()
    features = torch.rand(shape)
    with torch.inference_mode():
        losses.group_correlation(features, 2)
        for variant in ("reference", "paper"):
            sef.group_loss(features, 2, variant)
    for variant in ("reference", "paper"):
        assert_gradient_matches_slow_version(features, 2, variant)


@pytest.mark.parametrize("variant", ["reference", "paper"])
def test_compiled_sef_loss_equals_eager_without_dynamo_warnings(variant):
    """Under torch.compile the per-shape constants are traced, not taken from the lru_cache
    (at which Dynamo warns of possible silent incorrectness); the loss is the eager one."""
    out, target = make_output(groups=3, channels=30), torch.tensor([0, 3, 6, 2])
    loss = sef.SEFLoss(3, group_variant=variant)
    torch._dynamo.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compiled = torch.compile(loss, backend="eager")(out, target)
    for name, value in loss(out, target).items():
        assert_close(compiled[name], value)


def test_a_frozen_backbone_is_warned_of_once_where_the_group_loss_trains_nothing():
    model = sef.SEF(nn.Conv2d(3, 8, 3, stride=2), num_classes=3, groups=2).train()
    images, target = torch.randn(2, 3, 16, 16), torch.tensor([0, 2])
    loss = sef.SEFLoss(2)
    model.backbone.requires_grad_(False)  # heads only: the group loss has nothing to train
    with pytest.warns(UserWarning, match=r"no gradient .*\(a frozen backbone\?\).*phi=0") as caught:
        loss(model(images), target)
        loss(model(images), target)
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sef.SEFLoss(2, phi=0)(model(images), target)  # no group loss: nothing to warn of
        with torch.no_grad():  # an evaluation: nothing trains
            sef.SEFLoss(2)(model(images), target)
        model.backbone.requires_grad_(True)
        sef.SEFLoss(2)(model(images), target)


def test_the_losses_warnings_point_at_the_users_line_not_into_torch():
    """They named torch/nn/modules/module.py, the frame of nn.Module.__call__."""
    model = sef.SEF(nn.Conv2d(3, 8, 3, stride=2), num_classes=3, groups=2).train()
    model.backbone.requires_grad_(False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sef.SEFLoss(2, lam_warmup=1)(model(torch.randn(2, 3, 4, 4)), torch.tensor([0, 2]))
    assert [w.filename for w in caught] == [__file__] * 3  # schedule, frozen, 1 x 1 map


def test_group_loss_on_signed_features_and_resnet50_shape():
    torch.manual_seed(1)
    features = torch.randn(2, 2048, 14, 14)
    for variant in ("reference", "paper"):
        assert_close(sef.group_loss(features, 4, variant), slow_group_loss(features, 4, variant))


def test_group_loss_separates_groups_better_when_channels_agree_within_groups():
    """A sanity anchor on meaning: grouped structure scores lower than shuffled structure."""
    torch.manual_seed(0)
    parts = torch.rand(2, 4, 1, 49)
    grouped = (parts.repeat_interleave(8, dim=1) + 0.01 * torch.rand(2, 32, 1, 49)).view(
        2, 32, 7, 7
    )
    shuffled = grouped[:, torch.randperm(32)]
    for variant in ("reference", "paper"):
        assert sef.group_loss(grouped, 4, variant) < sef.group_loss(shuffled, 4, variant)


def test_group_loss_is_float32_for_half_precision_features():
    torch.manual_seed(0)
    features = torch.rand(2, 32, 4, 4)
    for dtype in (torch.bfloat16, torch.float16):
        low = features.to(dtype)
        loss = sef.group_loss(low, 4)
        assert loss.dtype == torch.float32
        assert_close(loss, slow_group_loss(low.float(), 4, "reference"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert sef.group_loss(features, 4).dtype == torch.float32


def make_output(batch=4, classes=7, groups=3, channels=24, dtype=torch.float32):
    torch.manual_seed(groups)
    return SEFOutput(
        logits=torch.randn(batch, classes, dtype=dtype),
        group_logits=torch.randn(groups, batch, classes, dtype=dtype),
        features=torch.rand(batch, channels, 3, 3, dtype=dtype),
    )


@pytest.mark.parametrize("groups", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("variant", ["reference", "paper"])
def test_sef_loss_matches_slow_version(groups, variant):
    out = make_output(groups=groups, channels=29)
    target = torch.tensor([0, 3, 6, 2])
    weights = {"lam": 0.7, "gamma": 0.05, "phi": 1.3}
    terms = sef.SEFLoss(groups, group_variant=variant, **weights)(out, target)
    expected = slow_sef_loss(out, target, groups, variant=variant, **weights)
    for name, value in expected.items():
        assert_close(terms[name], value)
    assert_close(terms["total"], sum(expected.values()))
    assert all(t.dtype == torch.float32 for t in terms.values())


@pytest.mark.parametrize("variant", ["reference", "paper"])
def test_sef_loss_gradients_match_slow_version(variant):
    """Each term's gradient into the global logits, the group logits and the feature map: a term
    of the right value with a detached factor (p in the entropy, say) fails here."""
    out, target = make_output(groups=3, channels=29), torch.tensor([0, 3, 6, 2])
    weights = {"lam": 0.7, "gamma": 0.3, "phi": 1.3}
    loss = sef.SEFLoss(3, group_variant=variant, **weights)
    for term in ("ce", "entropy", "distill", "group"):
        fast = SEFOutput(*(t.clone().requires_grad_() for t in vars(out).values()))
        slow = SEFOutput(*(t.double().requires_grad_() for t in vars(out).values()))
        loss(fast, target)[term].backward()
        slow_sef_loss(slow, target, 3, variant=variant, **weights)[term].backward()
        for name in ("logits", "group_logits", "features"):
            fast_grad, slow_grad = getattr(fast, name).grad, getattr(slow, name).grad
            if slow_grad is None:  # the term does not read this input
                assert fast_grad is None or not fast_grad.any(), (term, name)
                continue
            torch.testing.assert_close(
                fast_grad.double(), slow_grad, rtol=1e-4, atol=1e-7, msg=f"{term}: {name}"
            )


def test_sef_loss_default_weights_are_the_papers():
    loss = sef.SEFLoss(4)
    assert (loss.lam, loss.gamma, loss.phi) == (1.0, 0.05, 1.0)
    assert loss.group_variant == "reference" and loss.detach_teacher is False


def test_zero_weights_leave_plain_cross_entropy():
    out = make_output()
    target = torch.tensor([1, 2, 3, 4])
    terms = sef.SEFLoss(3, lam=0, gamma=0, phi=0)(out, target)
    assert_close(terms["total"], F.cross_entropy(out.logits, target))
    assert float(terms["entropy"]) == float(terms["distill"]) == float(terms["group"]) == 0.0


def test_teacher_receives_distillation_gradient_unless_detached():
    target = torch.tensor([1, 2, 3, 4])
    for detach, expect_gradient in ((False, True), (True, False)):
        out = make_output()
        out.logits.requires_grad_()
        out.group_logits.requires_grad_()
        terms = sef.SEFLoss(3, lam=0, gamma=1.0, phi=0, detach_teacher=detach)(out, target)
        terms["distill"].backward()
        has_gradient = out.logits.grad is not None and out.logits.grad.abs().sum() > 0
        assert has_gradient == expect_gradient


def test_sef_loss_is_float32_under_autocast_with_bf16_inputs():
    out = make_output(dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = sef.SEFLoss(3)(out, torch.tensor([1, 2, 3, 4]))
        soft = sef.SEFLoss(3)(out, soft_targets(4, 7).bfloat16())
    assert all(t.dtype == torch.float32 for t in [*terms.values(), *soft.values()])


@pytest.mark.parametrize("target", [torch.tensor([0, 2]), torch.tensor([[0.3, 0.7, 0], [0, 0, 1]])])
def test_a_float64_output_keeps_float64_so_gradcheck_passes(target):
    """The loss computed a float64 model's terms in float32: gradcheck failed on it."""
    out = make_output(batch=2, classes=3, groups=2, channels=4, dtype=torch.float64)
    features = out.features[..., :2, :2].clone()  # 2 x 2: few inputs to perturb
    inputs = [t.requires_grad_() for t in (out.logits, out.group_logits, features)]
    loss = sef.SEFLoss(2, lam=0.7, gamma=0.3)

    def total(*tensors):
        return loss(SEFOutput(*tensors), target)["total"]

    assert total(*inputs).dtype == torch.float64
    assert torch.autograd.gradcheck(total, inputs)


def mains_terms(out, target, groups, **weights):
    """SEFLoss's terms as main computed them before soft targets: ce by nll_loss on int64."""
    loss = sef.SEFLoss(groups, **weights)
    logits = out.logits.float()
    log_p = F.log_softmax(logits, dim=1)
    p = log_p.exp()
    terms = {
        "ce": F.nll_loss(log_p, target.long()),
        "entropy": loss.lam * (p * sef.losses._finite_log(log_p)).sum(1).mean(),
        "distill": loss._distill(p, out.group_logits),
        "group": loss.phi * sef.group_loss(out.features, groups, check_finite=False),
    }
    terms["total"] = terms["ce"] + terms["entropy"] + terms["distill"] + terms["group"]
    return terms


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8])
def test_class_indices_give_the_terms_they_gave_before_soft_targets_bit_for_bit(dtype):
    weights = {"lam": 0.7, "gamma": 0.3, "phi": 1.3}
    out = make_output(batch=9, classes=11)
    target = torch.randint(0, 11, (9,), generator=torch.Generator().manual_seed(0))
    terms = sef.SEFLoss(3, **weights)(out, target.to(dtype))
    for name, value in mains_terms(out, target, 3, **weights).items():
        assert torch.equal(terms[name], value), name


def soft_targets(batch, classes, seed=0):
    """Rows of class probabilities, as mixup with label smoothing makes them."""
    generator = torch.Generator().manual_seed(seed)
    first, second = (torch.randint(0, classes, (batch,), generator=generator) for _ in "ab")
    mix = torch.rand(batch, 1, generator=generator)
    one_hot = mix * F.one_hot(first, classes) + (1 - mix) * F.one_hot(second, classes)
    return 0.9 * one_hot + 0.1 / classes


def test_soft_targets_give_the_slow_cross_entropy_and_leave_the_other_terms():
    out, weights = make_output(), {"lam": 0.7, "gamma": 0.3, "phi": 1.3}
    target = soft_targets(4, 7)
    logits, features = out.logits.clone().requires_grad_(), out.features.clone().requires_grad_()
    terms = sef.SEFLoss(3, **weights)(SEFOutput(logits, out.group_logits, features), target)
    slow_logits = out.logits.double().requires_grad_()
    slow = sum(
        -(q * torch.log_softmax(row, 0)).sum()
        for q, row in zip(target.double(), slow_logits, strict=True)
    ) / len(target)
    assert_close(terms["ce"].detach(), slow.detach())
    (fast_grad,) = torch.autograd.grad(terms["ce"], logits)
    (slow_grad,) = torch.autograd.grad(slow, slow_logits)
    torch.testing.assert_close(fast_grad.double(), slow_grad, rtol=1e-4, atol=1e-7)
    indexed = sef.SEFLoss(3, **weights)(out, target.argmax(1))
    for name in ("entropy", "distill", "group"):  # the terms that do not read the target
        assert torch.equal(terms[name], indexed[name]), name
    torch.testing.assert_close(terms["ce"], F.cross_entropy(out.logits, target))


def test_one_hot_targets_give_the_class_indices_terms_exactly():
    out = make_output(batch=40, classes=7)
    target = torch.randint(0, 7, (40,), generator=torch.Generator().manual_seed(1))
    indexed = sef.SEFLoss(3)(out, target)
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        one_hot = sef.SEFLoss(3)(out, F.one_hot(target, 7).to(dtype))
        assert all(torch.equal(one_hot[name], indexed[name]) for name in indexed), dtype


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_label_smoothed_targets_give_torchs_label_smoothing_cross_entropy(eps):
    out, target = make_output(), torch.tensor([1, 2, 3, 4])
    smoothed = (1 - eps) * F.one_hot(target, 7) + eps / 7
    ce = sef.SEFLoss(3)(out, smoothed)["ce"]
    torch.testing.assert_close(ce, F.cross_entropy(out.logits, target, label_smoothing=eps))


def with_row(row, values):
    target = soft_targets(4, 7)
    target[row] = torch.tensor(values)
    return target


@pytest.mark.parametrize(
    "target, message",
    [
        (torch.tensor([1.0, 2, 3, 4]), r"class indices \[B\] = \(4,\) \(an integer dtype\) or "
         r"class probabilities \[B, K\] = \(4, 7\) \(floats\), got torch.float32 of shape \(4,\)"),
        (torch.full((4, 5), 0.2), r"= \(4, 7\) \(floats\), got torch.float32 of shape \(4, 5\)"),
        (F.one_hot(torch.tensor([1, 2, 3, 4]), 7), r"got torch.int64 of shape \(4, 7\)"),
        (with_row(2, [0.5] * 7),
         r"are >= 0 and sum to 1 in each row, but row 2 sums to 3.5 and its least entry is 0.5"),
        (with_row(1, [1.2, -0.2, 0, 0, 0, 0, 0]),
         r"but row 1 sums to 1 and its least entry is -0.2"),
        (with_row(3, [float("nan")] * 7), r"but row 3 sums to nan"),
        (torch.tensor([0, 1, 2, 7]), r"target holds class 7 \(image 3\) but the logits have 7 "
         r"classes: labels are 0 to 6, or -100 for an image ce skips; build the SEF with "
         r"num_classes=8 for labels up to 7, or subtract 1 from labels counted from 1$"),
        (torch.tensor([0, -1, 2, 3], dtype=torch.int32),
         r"target holds class -1 \(image 1\) but the logits have 7 classes: labels are 0 to 6, "
         r"or -100 for an image ce skips$"),
    ],
)  # fmt: skip
def test_targets_that_are_neither_indices_nor_probabilities_are_refused_in_one_line(
    target, message
):
    with pytest.raises(ValueError, match=message) as refused:
        sef.SEFLoss(3)(make_output(), target)
    assert "\n" not in str(refused.value)


def test_a_label_of_minus_100_is_skipped_by_ce_as_torch_skips_it_and_read_by_the_rest():
    out, target = make_output(), torch.tensor([1, -100, 3, 4])
    terms = sef.SEFLoss(3)(out, target)
    assert torch.equal(terms["ce"], F.cross_entropy(out.logits, target))
    assert torch.equal(terms["entropy"], sef.SEFLoss(3)(out, torch.tensor([1, 2, 3, 4]))["entropy"])


def test_labels_that_are_no_tensor_are_told_to_become_one():
    with pytest.raises(TypeError, match=r"target must be a tensor, got list: pass torch.as_tens"):
        sef.SEFLoss(3)(make_output(), [1, 2, 3, 4])


def test_soft_targets_may_miss_a_sum_of_1_by_rounding():
    target = soft_targets(4, 7).bfloat16()  # rows sum to 1 give or take 0.004
    assert torch.isfinite(sef.SEFLoss(3)(make_output(), target)["total"])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda o: SEFOutput(o.logits, o.group_logits[:2], o.features), "group_logits"),
        (lambda o: SEFOutput(o.logits, o.group_logits[:, :, :5], o.features), "group_logits"),
        (lambda o: SEFOutput(o.logits[0], o.group_logits, o.features), "logits"),
        (lambda o: SEFOutput(o.logits, o.group_logits, o.features[0]), "feature map"),
    ],
)
def test_sef_loss_rejects_mismatched_shapes(change, message):
    with pytest.raises(ValueError, match=message):
        sef.SEFLoss(3)(change(make_output()), torch.tensor([1, 2, 3, 4]))


def test_an_sef_output_built_with_a_list_of_group_logits_is_told_to_stack_them():
    """A model of one's own that built SEFOutput from its heads' logits met "'list' object has
    no attribute 'dim'" inside the loss."""
    out = make_output()
    built = SEFOutput(out.logits, list(out.group_logits), out.features)
    with pytest.raises(TypeError, match=r"^SEFOutput.group_logits must be a tensor, got list: to"):
        sef.SEFLoss(3)(built, torch.tensor([1, 2, 3, 4]))


def test_sef_loss_of_other_groups_than_the_model_says_so():
    with pytest.raises(ValueError, match=r"hold 3 groups and SEFLoss has groups=4; give the loss"):
        sef.SEFLoss(4)(make_output(), torch.tensor([1, 2, 3, 4]))


def test_sef_loss_refuses_logits_of_one_class_whose_terms_would_all_be_zero():
    model = sef.SEF("small_cnn", num_classes=1, groups=2).train()
    output = model(torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match="logits of two classes or more, got 1: a softmax over"):
        sef.SEFLoss(2)(output, torch.zeros(2, dtype=torch.long))


def test_sef_loss_rejects_wrong_target_shape():
    with pytest.raises(ValueError, match="target"):
        sef.SEFLoss(3)(make_output(), torch.tensor([1, 2]))


def test_sef_loss_names_what_it_takes_instead_of_failing_inside_torch():
    out, loss = make_output(), sef.SEFLoss(3)
    with pytest.raises(TypeError, match="SEFOutput of a model in train mode .* got Tensor"):
        loss(out.logits, torch.tensor([1, 2, 3, 4]))  # what an eval-mode SEF returns
    with pytest.raises(ValueError, match=r"feature map with B = 4, got shape \(2, "):
        loss(SEFOutput(out.logits, out.group_logits, out.features[:2]), torch.tensor([1, 2, 3, 4]))
    for labels in (torch.tensor([1.0, 2, 3, 4]), torch.tensor([True, False, True, True])):
        with pytest.raises(ValueError, match="class indices"):
            loss(out, labels)
    expected = loss(out, torch.tensor([1, 2, 3, 4]))["total"]
    for dtype in (torch.int32, torch.uint8):  # any integer labels
        assert torch.equal(loss(out, torch.tensor([1, 2, 3, 4], dtype=dtype))["total"], expected)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_features_raise_instead_of_returning_nan(bad):
    features = torch.rand(2, 8, 3, 3)
    features[1, 2, 0, 0] = bad
    with pytest.raises(ValueError, match="non-finite"):
        sef.group_loss(features, 2)


def test_sef_loss_leaves_the_finiteness_check_to_its_caller():
    """A check inside the loss would make every step wait for the device; the loop checks
    the total once instead (test_engine)."""
    output = make_output()
    features = output.features.clone()
    features[0, 0, 0, 0] = float("nan")
    terms = sef.SEFLoss(3)(replace(output, features=features), torch.tensor([1, 2, 3, 4]))
    assert torch.isnan(terms["group"]) and torch.isnan(terms["total"])
    assert torch.isfinite(terms["ce"])


@pytest.mark.parametrize("groups", [0, -1, 9, 2.5])
def test_invalid_group_counts_are_value_errors(groups):
    with pytest.raises(ValueError, match="groups"):
        sef.group_loss(torch.rand(1, 8, 2, 2), groups)


def test_invalid_variant_and_weights_are_value_errors():
    with pytest.raises(ValueError, match="variant"):
        sef.group_loss(torch.rand(1, 8, 2, 2), 2, "mine")
    with pytest.raises(ValueError, match="lam"):
        sef.SEFLoss(2, lam=-1)
    with pytest.raises(ValueError, match="group_variant"):
        sef.SEFLoss(2, group_variant="mine")


@pytest.mark.parametrize(
    "option, value",
    [("lam", "1"), ("gamma", None), ("phi", True), ("norm_floor", "0.1"),
     ("detach_teacher", "False")],
)  # fmt: skip
def test_options_of_the_wrong_type_are_refused_naming_the_option(option, value):
    """lam="1" gave "TypeError: must be real number, not str"; phi=True was a weight of 1 and
    detach_teacher="False" detached the teacher."""
    with pytest.raises(ValueError, match=f"^{option}={value!r} is invalid: it must be"):
        sef.SEFLoss(2, **{option: value})


# ------------------------------------------------------------- the groups' correlation readout


def slow_group_correlation(features, groups):
    """Per image, the C x C cosine's block means; within: mean of the G diagonal blocks,
    between: mean of the G(G-1) others; summed over the batch, in float64."""
    x = features.double().flatten(2)
    x = x / (x.norm(dim=2, keepdim=True) + EPS32)
    members = contiguous_groups(x.shape[1], groups)
    within = between = 0.0
    for image in x:
        cos = image @ image.T
        for m in range(groups):
            for n in range(groups):
                block = cos[members[m]][:, members[n]].mean()
                if m == n:
                    within += block / groups
                else:
                    between += block / (groups * (groups - 1))
    return float(within), float(between)


def one_hot_maps(*positions, size=4):
    """[C, 1, size]: channel c is 1 at positions[c] and 0 elsewhere (unit, mutually orthogonal
    where the positions differ)."""
    maps = torch.zeros(len(positions), 1, size)
    for channel, position in enumerate(positions):
        maps[channel, 0, position] = 1.0
    return maps


@pytest.mark.parametrize(
    ("positions", "groups", "expected"),
    [
        ((0, 0, 1, 1, 2, 2), 3, (1.0, 0.0)),  # each group one map, the maps orthogonal
        ((0, 0, 0, 0, 0, 0), 3, (1.0, 1.0)),  # every channel the same map: collapse
        ((0, 1, 0, 0), 2, (0.75, 0.5)),  # group 1 {a, b}: 0.5 inside; group 2 {a, a}: 1; 0.5 across
        ((0, 1, 2, 3), 2, (0.5, 0.0)),  # four orthogonal channels: only i = j correlates
    ],
)
def test_group_correlation_of_hand_built_maps_is_exact(positions, groups, expected):
    features = one_hot_maps(*positions).unsqueeze(0).repeat(3, 1, 1, 1)  # 3 images
    within, between = sef.losses.group_correlation(features, groups).tolist()
    assert (within / 3, between / 3) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("shape", "groups"), [((3, 64, 4, 4), 5), ((2, 13, 5, 5), 3)])
def test_group_correlation_matches_slow_version_and_sef_viz_corr(shape, groups):
    from sef.analysis import channel_cosine, group_means
    from sef.groups import group_sizes

    torch.manual_seed(0)
    features = torch.randn(shape)
    within, between = sef.losses.group_correlation(features, groups).tolist()
    slow = slow_group_correlation(features, groups)
    assert_close(within, slow[0]) and assert_close(between, slow[1])
    blocks = group_means(channel_cosine(features).mean(0), group_sizes(shape[1], groups))
    off = ~torch.eye(groups, dtype=torch.bool)
    assert_close(within / shape[0], blocks.diagonal().mean(), rel=1e-4)
    assert_close(between / shape[0], blocks[off].mean(), rel=1e-4)


def test_group_correlation_takes_no_gradient_and_needs_two_groups():
    features = torch.randn(2, 8, 3, 3, requires_grad=True)
    assert not sef.losses.group_correlation(features, 2).requires_grad
    with pytest.raises(ValueError, match="at least 2 groups"):
        sef.losses.group_correlation(features, 1)


def test_groups_count_as_separated_from_a_gap_of_the_separation_gap():
    assert sef.losses.SEPARATION_GAP == 0.2
    assert sef.losses.groups_separated(0.53, 0.14) and sef.losses.groups_separated(0.75, 0.5)
    assert not sef.losses.groups_separated(0.809, 0.808)
    assert not sef.losses.groups_separated(0.69, 0.5)


# ---------------------------------------------------------------- the warm-ups of lam and phi


@pytest.mark.parametrize("schedule", [{"lam_warmup": 2.0}, {"phi_warmup": 1.0}, {"lam_until": 3.0}])
def test_a_schedule_whose_progress_is_never_set_is_warned_of_once(schedule):
    out, target = make_output(), torch.tensor([0, 3, 6, 2])
    loss = sef.SEFLoss(3, lam=0.8, phi=0.6, **schedule)
    with pytest.warns(UserWarning, match="set_progress was never called") as caught:
        loss(out, target)
        loss(out, target)
    assert len(caught) == 1
    told = sef.SEFLoss(3, lam=0.8, phi=0.6, **schedule)
    told.set_progress(0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        told(out, target)
        sef.SEFLoss(3, lam=0.8, phi=0.6)(out, target)  # no schedule: nothing to set


@pytest.mark.parametrize(("progress", "scale"), [(0.0, 0.0), (1.0, 0.25), (4.0, 1.0), (9, 1.0)])
def test_lam_warmup_ramps_the_entropy_term_linearly(progress, scale):
    out, target = make_output(), torch.tensor([0, 3, 6, 2])
    plain = sef.SEFLoss(3, lam=0.8)(out, target)["entropy"]
    loss = sef.SEFLoss(3, lam=0.8, lam_warmup=4.0)
    loss.set_progress(progress)
    assert loss.current_lam == pytest.approx(0.8 * scale)
    assert_close(loss(out, target)["entropy"], scale * plain)


@pytest.mark.parametrize(("progress", "scale"), [(0.0, 0.0), (1.5, 0.5), (3.0, 1.0), (7, 1.0)])
def test_phi_warmup_ramps_the_group_term_linearly_and_leaves_the_others(progress, scale):
    out, target = make_output(), torch.tensor([0, 3, 6, 2])
    plain = sef.SEFLoss(3, phi=0.6, group_variant="paper")(out, target)
    loss = sef.SEFLoss(3, phi=0.6, group_variant="paper", phi_warmup=3.0)
    loss.set_progress(progress)
    assert loss.current_phi == pytest.approx(0.6 * scale) and loss.current_lam == loss.lam
    terms = loss(out, target)
    assert_close(terms["group"], scale * plain["group"])
    for name in ("ce", "entropy", "distill"):
        assert_close(terms[name], plain[name])


@pytest.mark.parametrize(
    ("progress", "lam"), [(0.0, 0.0), (1.0, 0.4), (2.5, 0.8), (3.99, 0.8), (4.0, 0.0), (9, 0.0)]
)
def test_lam_until_turns_the_entropy_term_off_from_then_on_and_leaves_the_others(progress, lam):
    """lam_until = 4 with a 2-epoch warm-up: lam ramps 0 -> 0.8, holds, and is 0 from epoch 4."""
    out, target = make_output(), torch.tensor([0, 3, 6, 2])
    plain = sef.SEFLoss(3, lam=0.8, phi=0.6, group_variant="paper")(out, target)
    loss = sef.SEFLoss(3, lam=0.8, phi=0.6, group_variant="paper", lam_warmup=2.0, lam_until=4.0)
    loss.set_progress(progress)
    assert loss.current_lam == pytest.approx(lam)
    terms = loss(out, target)
    assert_close(terms["entropy"], lam / 0.8 * plain["entropy"])
    for name in ("ce", "distill", "group"):
        assert_close(terms[name], plain[name])


def test_a_lam_warmup_that_would_outlast_lam_until_is_refused():
    from sef.config import apply_values, resolve_config
    from sef.errors import ConfigError

    with pytest.raises(ValueError, match=r"lam_warmup=4\.0 is invalid: it must be under lam_until"):
        sef.SEFLoss(2, lam_warmup=4.0, lam_until=4.0)
    values = {"loss.lam_warmup": 5, "loss.lam_until": 3}
    with pytest.raises(
        ConfigError, match=r"loss.lam_warmup=5.0 is invalid: it must be under lam_until \(3.0\)"
    ):
        apply_values(resolve_config("demo"), values)
    assert sef.SEFLoss(2, lam_warmup=2.0, lam_until=4.0).lam_until == 4.0


def test_lam_warmup_off_keeps_lam_and_negative_is_refused():
    loss = sef.SEFLoss(3, lam=0.8)
    loss.set_progress(0.0)
    assert loss.current_lam == 0.8 and loss.lam_warmup == 0.0
    assert loss.current_phi == loss.phi and loss.phi_warmup == 0.0
    with pytest.raises(ValueError, match="lam_warmup"):
        sef.SEFLoss(3, lam_warmup=-1.0)


@pytest.mark.parametrize(
    ("state", "reference", "paper"),
    [  # G = 5 groups of n = 4 channels; formulas in the comments, n -> infinity where it matters
        ("collapse", 1 / 5, 7.5),  # every channel one map: 1/G; 1/2 G(G-2)
        ("separated", 0.0, -2.5),  # group m = map m: 0; -G/2
        ("orthogonal", 0.375, -0.15625),  # all channels apart: (1 - 1/n)/2 -> 1/2; -G/(2n^2) -> 0
    ],
)
def test_the_two_group_losses_rank_collapse_and_separation_differently(state, reference, paper):
    """Issue 23's arithmetic: the reference loss scores collapse (1/G) below features whose
    channels all differ (~1/2), so from there its way down runs through collapse; Eq. 4 scores
    collapse worst of the three and separation best."""
    positions = {"collapse": [0] * 20, "separated": [c // 4 for c in range(20)],
                 "orthogonal": list(range(20))}[state]  # fmt: skip
    features = one_hot_maps(*positions, size=20).unsqueeze(0)
    assert_close(sef.group_loss(features, 5, "reference"), reference, abs_tol=1e-6)  # float32
    assert_close(sef.group_loss(features, 5, "paper"), paper, abs_tol=1e-6)


def test_the_reference_loss_pulls_within_a_group_2_to_8_times_harder_than_it_pushes_apart():
    """Per pair of channels at G = 5, C = 1280: within group m the weight on cos^2 is
    1/(G n^2); between group m and the earlier ones 1/(P n N_<m), P = G(G-1)/2 pairs."""
    from sef.losses import _weights

    weights = _weights("reference", (256,) * 5, torch.device("cpu"), torch.float64)
    pull = -weights.diagonal()
    push = weights.tril(-1).amax(1)[1:]  # groups 2..5 against all earlier channels
    assert torch.allclose(pull, torch.full((5,), 1 / (5 * 256**2), dtype=torch.float64))
    assert (pull[1:] / push).tolist() == pytest.approx([2.0, 4.0, 6.0, 8.0])


# ------------------------------------------------------------ one home for the loss's options


def test_the_loss_terms_are_named_once_in_losses_and_read_by_the_loop_and_the_figures():
    from sef import viz
    from sef.engine import loop
    from sef.losses import LOSS_TERMS

    out, target = make_output(), torch.tensor([1, 2, 3, 4])
    assert tuple(sef.SEFLoss(3)(out, target)) == LOSS_TERMS
    assert loop.LOSS_TERMS is LOSS_TERMS and viz.LOSS_TERMS is LOSS_TERMS


def test_sefloss_takes_its_defaults_and_options_from_the_loss_config():
    """One set of defaults: every option of the config's loss section is a parameter of SEFLoss
    with the same default, and from_config hands over every one of them."""
    import dataclasses
    import inspect

    from sef.config import LossConfig

    parameters = inspect.signature(sef.SEFLoss).parameters
    fields = dataclasses.fields(LossConfig)
    assert list(parameters)[1:] == [f.name for f in fields]
    assert all(parameters[f.name].default == f.default for f in fields)
    options = LossConfig(lam=0.5, gamma=0.2, phi=0.3, group_variant="paper",
                         detach_teacher=True, lam_warmup=2.0, phi_warmup=3.0,
                         norm_floor=0.01, lam_until=5.0)  # fmt: skip
    loss = sef.SEFLoss.from_config(options, 3)
    assert loss.groups == 3
    assert {f.name: getattr(loss, f.name) for f in fields} == dataclasses.asdict(options)


@pytest.mark.parametrize(
    "option, value",
    [("lam", -1.0), ("gamma", float("nan")), ("phi", float("inf")), ("lam_warmup", -2.0),
     ("phi_warmup", float("nan")), ("norm_floor", 1.0), ("norm_floor", -0.1),
     ("norm_floor", float("nan")), ("lam_until", -1.0), ("group_variant", "mine")],
)  # fmt: skip
def test_the_loss_and_the_config_refuse_the_same_options_by_the_same_rule(option, value):
    from sef.config import apply_values, resolve_config
    from sef.errors import ConfigError

    with pytest.raises(ValueError, match=f"{option}={value!r} is invalid: it must be") as info:
        sef.SEFLoss(2, **{option: value})
    rule = str(info.value).split("it must be ")[1]
    with pytest.raises(ConfigError, match=f"loss.{option}=.* is invalid: it must be {rule}$"):
        apply_values(resolve_config("demo"), {f"loss.{option}": value})


def test_a_one_by_one_map_is_said_to_give_the_group_loss_no_gradient():
    generator = torch.Generator().manual_seed(0)
    features = (torch.rand(4, 6, 1, 1, generator=generator) + 0.5).requires_grad_()  # not near 0
    output = SEFOutput(torch.randn(4, 5), torch.randn(3, 4, 5), features)
    with pytest.warns(UserWarning, match="the feature map is 1 x 1"):
        terms = sef.SEFLoss(3)(output, torch.tensor([0, 1, 2, 3]))
    (gradient,) = torch.autograd.grad(terms["group"], features)
    assert gradient.abs().max() < 1e-5  # the reason for the warning
    with pytest.warns(UserWarning, match="the feature map is 1 x 1"):
        sef.group_loss(features, 3)  # the warning is the group loss's own
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sef.SEFLoss(3, phi=0)(output, torch.tensor([0, 1, 2, 3]))  # no group loss: no warning


def test_a_masked_class_gives_the_terms_of_the_classes_left_and_finite_gradients():
    """A -inf logit (a class masked out) has p = 0: p log p is 0 there, as cross-entropy has it."""
    out = make_output()
    masked = out.logits.clone()
    masked[:, -1] = float("-inf")
    groups = out.group_logits.clone()
    groups[..., -1] = float("-inf")
    logits = masked.requires_grad_()
    target = torch.tensor([1, 2, 3, 4])
    features = out.features.clone().requires_grad_()  # a trained backbone's: no frozen warning
    terms = sef.SEFLoss(3)(SEFOutput(logits, groups, features), target)
    kept = sef.SEFLoss(3)(
        SEFOutput(out.logits[:, :-1], out.group_logits[..., :-1], out.features), target
    )
    for name in sef.losses.LOSS_TERMS:
        assert_close(terms[name].detach(), kept[name])
    soft = soft_targets(4, 6)  # nothing on the masked class: its 0 * log 0 adds 0
    left = SEFOutput(out.logits[:, :-1], out.group_logits[..., :-1], out.features)
    soft_terms = sef.SEFLoss(3)(SEFOutput(masked, groups, features), F.pad(soft, (0, 1)))
    assert_close(soft_terms["ce"].detach(), sef.SEFLoss(3)(left, soft)["ce"])
    terms["total"].backward()
    assert torch.isfinite(logits.grad).all() and not logits.grad[:, -1].any()


def test_the_loss_runs_on_the_meta_device_where_autocast_does_not_exist():
    features = torch.empty(2, 8, 3, 3, device="meta")
    assert sef.group_loss(features, 2, check_finite=False).device.type == "meta"
    output = SEFOutput(
        torch.empty(2, 5, device="meta"), torch.empty(2, 2, 5, device="meta"), features
    )
    terms = sef.SEFLoss(2)(output, torch.zeros(2, dtype=torch.long, device="meta"))
    assert terms["total"].device.type == "meta" and terms["total"].shape == ()
    soft = sef.SEFLoss(2)(output, torch.empty(2, 5, device="meta"))  # values left unread
    assert soft["total"].device.type == "meta"


def test_an_empty_batch_is_refused_by_name_not_reported_as_extreme_values():
    with pytest.raises(ValueError, match="needs at least one image; the features hold none"):
        sef.group_loss(torch.randn(0, 8, 3, 3), 2)
    empty = SEFOutput(torch.randn(0, 5), torch.randn(2, 0, 5), torch.randn(0, 8, 3, 3))
    with pytest.raises(ValueError, match="needs at least one image; the batch is empty"):
        sef.SEFLoss(2)(empty, torch.zeros(0, dtype=torch.long))
