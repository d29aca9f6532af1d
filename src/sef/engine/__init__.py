"""Training and evaluation, one concept per module:

- :mod:`~sef.engine.run`: ``fit(config)``, a whole run, and all of resume
- :mod:`~sef.engine.loop`: ``train_one_epoch``, the training loop
- :mod:`~sef.engine.evaluation`: ``evaluate``, ``evaluate_checkpoint``, ``write_predictions``
- :mod:`~sef.engine.optim`: the optimizer and the learning-rate schedule
- :mod:`~sef.engine.data`: the run's datasets, the bad-image policy and the training loader
- :mod:`~sef.engine.folders`: run folders (runs/<name>, -2, ...)
- :mod:`~sef.engine.log`: metrics.jsonl, TensorBoard and the line per epoch
- :mod:`~sef.engine.device`: batches on the device, mixed precision
"""

from sef.engine.data import Data, load_data, train_loader
from sef.engine.evaluation import EvalResult, evaluate, evaluate_checkpoint, write_predictions
from sef.engine.loop import CHECK_EVERY, train_one_epoch
from sef.engine.optim import planned_scheduler
from sef.engine.run import RESUMABLE_CHANGES, FitResult, fit

__all__ = [
    "CHECK_EVERY",
    "RESUMABLE_CHANGES",
    "Data",
    "EvalResult",
    "FitResult",
    "evaluate",
    "evaluate_checkpoint",
    "fit",
    "load_data",
    "planned_scheduler",
    "train_loader",
    "train_one_epoch",
    "write_predictions",
]
