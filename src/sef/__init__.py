"""SEF: semantically enhanced features for fine-grained image classification, on any CNN."""

from sef import datasets, transforms
from sef.backbones import available_backbones, create_backbone
from sef.errors import SEFError
from sef.groups import group_sizes
from sef.losses import SEFLoss, group_loss
from sef.model import SEF, SEFOutput

__version__ = "0.1.0"

__all__ = [
    "SEF",
    "SEFError",
    "SEFLoss",
    "SEFOutput",
    "available_backbones",
    "create_backbone",
    "datasets",
    "group_loss",
    "group_sizes",
    "transforms",
]
