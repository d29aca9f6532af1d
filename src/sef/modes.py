"""Evaluation mode for a moment, every submodule's own mode back afterwards.

``module.train(was_training)`` sets every submodule to the top module's flag, so a BatchNorm a
user froze with ``.eval()`` (usual when fine-tuning) would train again after sef looked at the
model once; :func:`evaluation_mode` puts each submodule back as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def evaluation_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode inside the block; each submodule's mode restored on leaving it,
    on an exception too."""
    modes = [(part, part.training) for part in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for part, training in modes:
            part.training = training
