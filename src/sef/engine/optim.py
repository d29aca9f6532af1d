"""The optimizer and the learning-rate schedule, re-planned when a resume changes the length."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sef.config import Config


def create_optimizer(model: nn.Module, config: Config) -> torch.optim.Optimizer:
    """SGD with momentum (the paper) or AdamW, over the parameters that train."""
    o = config.optim
    parameters = [p for p in model.parameters() if p.requires_grad]
    if o.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.SGD(parameters, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


def create_scheduler(optimizer: torch.optim.Optimizer, config: Config) -> Any:
    """StepLR x lr_decay every step_size epochs (the paper), cosine, or a constant rate."""
    o = config.optim
    if o.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, o.step_size, gamma=o.lr_decay)
    if o.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=o.epochs)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def planned_scheduler(config: Config, epoch: int) -> Any:
    """The scheduler of a run planned for ``config.optim.epochs`` from the start, as it stands
    after ``epoch`` epochs. Resuming with another length loads its state and learning rate, so
    the remaining epochs follow the new plan exactly: step and constant schedules go on as
    before, a cosine schedule takes the value the longer (or shorter) cosine has at this epoch."""
    weight = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([weight], lr=config.optim.lr)
    scheduler = create_scheduler(optimizer, config)
    for _ in range(epoch):
        optimizer.step()  # no gradient: changes nothing, keeps the scheduler's order check quiet
        scheduler.step()
    return scheduler
