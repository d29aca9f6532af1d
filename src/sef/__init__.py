"""SEF: semantically enhanced features for fine-grained image classification, on any CNN.

The public names below resolve on first use (:mod:`sef.lazy`): ``import sef`` loads no torch.
"""

from typing import TYPE_CHECKING

from sef.lazy import lazy_attributes

if TYPE_CHECKING:  # what type checkers and editors see; a test keeps it equal to _HOMES
    from sef.backbones import available_backbones, create_backbone
    from sef.checkpoint import load_checkpoint, save_checkpoint
    from sef.config import Config, resolve_config
    from sef.engine import evaluate, fit
    from sef.errors import SEFError
    from sef.export import load_safetensors
    from sef.groups import group_sizes
    from sef.losses import SEFLoss, group_loss
    from sef.metrics import paper_scores
    from sef.model import SEF, SEFOutput
    from sef.trained import TrainedModel, load_trained_model
    from sef.version import __version__ as __version__


_HOMES = {
    "Config": "sef.config",
    "resolve_config": "sef.config",
    "SEF": "sef.model",
    "SEFOutput": "sef.model",
    "TrainedModel": "sef.trained",
    "load_trained_model": "sef.trained",
    "SEFError": "sef.errors",
    "SEFLoss": "sef.losses",
    "group_loss": "sef.losses",
    "available_backbones": "sef.backbones",
    "create_backbone": "sef.backbones",
    "evaluate": "sef.engine",
    "fit": "sef.engine",
    "group_sizes": "sef.groups",
    "load_checkpoint": "sef.checkpoint",
    "save_checkpoint": "sef.checkpoint",
    "paper_scores": "sef.metrics",
    "load_safetensors": "sef.export",
    "__version__": "sef.version",
}
__getattr__ = lazy_attributes(__name__, _HOMES)

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
    "load_safetensors",
    "load_trained_model",
    "paper_scores",
    "resolve_config",
    "save_checkpoint",
    "transforms",
]


def __dir__() -> list[str]:
    """The names loaded on first use too, for completion in IPython and IDEs."""
    return sorted({*globals(), *__all__})
