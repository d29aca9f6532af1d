"""SEF: semantically enhanced features for fine-grained image classification, on any CNN."""

from sef import datasets, transforms
from sef.backbones import available_backbones, create_backbone
from sef.checkpoint import load_checkpoint, save_checkpoint
from sef.config import Config, resolve_config
from sef.engine import evaluate, fit
from sef.errors import SEFError
from sef.groups import group_sizes
from sef.losses import SEFLoss, group_loss
from sef.metrics import paper_scores
from sef.model import SEF, SEFOutput, TrainedModel, load_trained_model

__version__ = "0.1.0"

__all__ = [
    "Config",
    "SEF",
    "SEFError",
    "SEFLoss",
    "SEFOutput",
    "TrainedModel",
    "available_backbones",
    "create_backbone",
    "datasets",
    "evaluate",
    "fit",
    "group_loss",
    "group_sizes",
    "load_checkpoint",
    "load_trained_model",
    "paper_scores",
    "resolve_config",
    "save_checkpoint",
    "transforms",
]
