"""How hard each loss term pulls on the feature map of a fine-tuned network: the gradient norms
behind the group study's threshold in φ (a diagnostic that explains; it judges nothing).

For a model, the birds32 preset at its ImageNet start or a trained checkpoint, on 128 fixed
training images (the test transform, batches of 32, the network in eval mode so that nothing
moves), the norm of the gradient of each term of Eq. 8 at weight 1 (cross-entropy, the entropy
term, the distillation, the reference group loss and the paper's Eq. 4) with respect to the
backbone's parameters, which every term moves only through the feature map X: the gradient on X
itself is no measure, since the many channels a ReLU6 holds at 0 take huge group-loss gradients
(a cosine's 1 / |x|) that never pass the ReLU. Then the φ at which each group loss pulls as hard
as cross-entropy (φ* = |d CE| / |d group|), the cosines of cross-entropy's and the entropy
term's pulls with each group loss's, and the mean channel norm of X (the cosine divides by it).
The group losses use the checkpoint's `loss.norm_floor`, as its run did.

    python benchmarks/group_gradients.py                       # the ImageNet start
    python benchmarks/group_gradients.py --checkpoints runs/group-study/*/last.pt
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from common import RESULTS_DIR, flat_gradient, parse_arguments, write_report

import sef
from sef import datasets
from sef.config import apply_overrides, resolve_config
from sef.trained import TrainedModel, create_model, load_trained_model
from sef.transforms import Preprocessing
from sef.viz import image_batches, pick_indices

PRESET = "birds32-mobilenet_v2"
TERMS = ("ce", "entropy", "distill", "group_reference", "group_paper")
IMAGES, BATCH = 128, 32
QUICK = [
    "data.options.per_class=2", "data.options.test_per_class=2", "data.options.resolution=32",
    "data.image_size=32", "model.weights=null",
]  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", type=Path, nargs="*", default=[])
    parser.add_argument("--no-start", action="store_true", help="skip the ImageNet start")
    parser.add_argument("--images", type=int, default=IMAGES)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "group_gradients.json")
    parser.add_argument("--quick", action="store_true", help="tiny data, random init: a smoke test")
    args = parse_arguments(parser, argv, {})
    args.overrides = QUICK if args.quick else []
    if args.quick:
        args.images = 8
    return args


def start_model(overrides: list[str]) -> TrainedModel:
    """The preset's network as training starts it (seed 0): ImageNet backbone, new heads."""
    config = apply_overrides(resolve_config(PRESET), overrides)
    torch.manual_seed(config.run.seed)
    preprocessing = Preprocessing(config.data.image_size, config.data.recipe)
    classes = datasets.read_split(config.data, "train", seed=config.run.seed).classes
    model = create_model(config, len(classes)).eval()
    return TrainedModel(model, list(classes), config, preprocessing)


def pulls(trained: TrainedModel, images: int) -> dict[str, list[float]]:
    """Per batch: |d term / d weights| of every term, the cosines of CE's and the entropy term's
    pulls with each group loss's, and the feature map's mean channel norm. The group losses
    divide by the norm as the run did (its `loss.norm_floor`)."""
    model, groups = trained.model, trained.model.groups
    floor = trained.config.loss.norm_floor
    losses = {
        variant: sef.SEFLoss(
            groups, lam=1.0, gamma=1.0, phi=1.0, group_variant=variant, norm_floor=floor
        )
        for variant in ("reference", "paper")
    }
    weights = [p for p in model.backbone.parameters() if p.requires_grad]
    dataset = trained.dataset("train")
    indices = pick_indices(len(dataset), images, seed=0)
    labels = torch.tensor([dataset.samples[i][1] for i in indices]).split(BATCH)
    found: dict[str, list[float]] = {}
    for batch, target in zip(image_batches(dataset, indices, BATCH, False), labels, strict=True):
        output = model.forward_sef(batch)
        by_variant = {variant: loss(output, target) for variant, loss in losses.items()}
        terms = {k: by_variant["paper"][k] for k in ("ce", "entropy", "distill")}
        terms |= {f"group_{variant}": found["group"] for variant, found in by_variant.items()}
        grads = {name: flat_gradient(terms[name], weights) for name in TERMS}
        for name in TERMS:
            found.setdefault(f"norm_{name}", []).append(grads[name].norm().item())
        for name in ("group_reference", "group_paper"):
            for other in ("ce", "entropy"):
                cosine = F.cosine_similarity(grads[other], grads[name], dim=0)
                found.setdefault(f"cosine_{other}_{name}", []).append(cosine.item())
        channel_norms = output.features.detach().flatten(2).norm(dim=2)
        found.setdefault("channel_norm", []).append(channel_norms.mean().item())
    return found


def summarise(found: dict[str, list[float]]) -> dict:
    means = {name: statistics.fmean(values) for name, values in found.items()}
    ce = means["norm_ce"]
    return means | {
        f"phi_star_{v}": ce / means[f"norm_group_{v}"] if means[f"norm_group_{v}"] else None
        for v in ("reference", "paper")
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    models = {} if args.no_start else {"imagenet start": lambda: start_model(args.overrides)}
    for path in args.checkpoints:
        models[str(path)] = lambda path=path: load_trained_model(path)
    results = {}
    for name, load in models.items():
        trained = load()
        if trained.model.groups < 2:
            print(f"{name}: one group, skipped")
            continue
        r = summarise(pulls(trained, args.images))
        results[name] = r | {"norm_floor": trained.config.loss.norm_floor}
        print(
            f"{name}: |dCE| {r['norm_ce']:.3g}, entropy {r['norm_entropy']:.3g}, group reference"
            f" {r['norm_group_reference']:.3g} (phi* {r['phi_star_reference']:.3g}), Eq. 4 "
            f"{r['norm_group_paper']:.3g} (phi* {r['phi_star_paper']:.3g}; cosine with entropy "
            f"{r['cosine_entropy_group_paper']:+.2f}), channel norm {r['channel_norm']:.3g}"
        )
    payload = {"preset": PRESET, "images": args.images, "terms": TERMS, "models": results}
    write_report(args.out, payload, torch.device("cpu"), [__file__, *argv])
    return 0


if __name__ == "__main__":
    sys.exit(main())
