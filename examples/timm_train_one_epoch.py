"""SEF trained by timm's own ``train_one_epoch`` and checked by its ``validate``, from timm's
train.py, on sef's demo set on the CPU: a check that the pieces fit (a few seconds), not a recipe.

timm's wheel does not ship train.py (it is a script at the root of the pytorch-image-models
repository), so pass the path of a clone's train.py; importing it runs no training, only its
imports and argument parser. Its ``main()`` cannot take SEF as it stands: it builds the model
by name with ``timm.create_model`` and the loss from its own flags, so this drives the two
functions ``main()`` calls, with ``timm.task.ClassificationTask(SEF, SEFCriterion)`` as the task.

    python examples/timm_train_one_epoch.py ~/src/pytorch-image-models/train.py
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch
from torch import nn
from torch.utils.data import DataLoader

import sef
from sef import datasets, transforms
from sef.extras import require
from sef.integrations.loops import SEFCriterion


def load_timm_train(path: Path) -> ModuleType:
    """timm's train.py as a module (its ``if __name__ == '__main__'`` does not run)."""
    spec = importlib.util.spec_from_file_location("timm_train", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def timm_args(timm_train: ModuleType) -> argparse.Namespace:
    """train.py's defaults, with what its main() derives set for one process on the CPU."""
    args = timm_train.parser.parse_args([])
    args.prefetcher, args.distributed, args.world_size, args.rank = False, False, 1, 0
    args.device = "cpu"
    return args


def demo_loader(split: str, size: int, per_class: int, train: bool) -> DataLoader:
    make = transforms.train_transform if train else transforms.test_transform
    options = {"per_class": per_class, "test_per_class": per_class, "resolution": size}
    dataset = datasets.load("demo", None, split, transform=make("resize", size), **options)
    return DataLoader(dataset, batch_size=16, shuffle=train)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("train_py", type=Path, help="train.py of a pytorch-image-models clone")
    parser.add_argument("--backbone", default="timm:resnet18")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--per-class", type=int, default=8, help="demo images per class")
    args = parser.parse_args(argv)
    require("timm", "this example", error=SystemExit)
    if not args.train_py.is_file():
        parser.error(f"{args.train_py} is not a file: pass a pytorch-image-models clone's train.py")

    timm_train = load_timm_train(args.train_py)
    from timm.task import ClassificationTask

    torch.manual_seed(0)
    model = sef.SEF(args.backbone, num_classes=8, groups=2)
    task = ClassificationTask(model, SEFCriterion(sef.SEFLoss(groups=2, phi=0.1)), verbose=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    train = demo_loader("trainval", args.image_size, args.per_class, train=True)
    test = demo_loader("test", args.image_size, args.per_class, train=False)
    settings = timm_args(timm_train)
    device = torch.device("cpu")
    for epoch in range(args.epochs):
        trained = timm_train.train_one_epoch(
            epoch, model, train, optimizer, settings, task=task, device=device
        )
        checked = timm_train.validate(
            task.get_eval_model(), test, nn.CrossEntropyLoss(), settings, device=device
        )
        terms = {name: round(value.item(), 4) for name, value in task.criterion.terms.items()}
        print(f"epoch {epoch}: train loss {trained['loss']:.4f} (last step {terms}), "
              f"test top-1 {checked['top1']:.1f} %")  # fmt: skip
    deployable = model.export()  # backbone + global head: what ships
    parameters = sum(p.numel() for p in deployable.parameters())
    print(f"exported the plain network: {parameters:,} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
