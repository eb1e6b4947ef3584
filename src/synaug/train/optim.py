"""Optimizers and learning-rate schedules (stateless: the lr is a function of the epoch,
so resuming needs only the epoch number)."""
from __future__ import annotations

import math
from typing import Iterable

import torch

from .config import OptimConfig, ScheduleConfig


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: OptimConfig, lr: float | None = None,
                    weight_decay: float | None = None) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov) or AdamW over ``params``."""
    lr = cfg.lr if lr is None else lr
    wd = cfg.weight_decay if weight_decay is None else weight_decay
    params = [p for p in params if p.requires_grad]
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=wd,
                               nesterov=cfg.nesterov and cfg.momentum > 0)
    return torch.optim.AdamW(params, lr=lr, betas=tuple(cfg.betas), weight_decay=wd)


def lr_at(epoch: int, base_lr: float, epochs: int, cfg: ScheduleConfig) -> float:
    """Learning rate of (0-based) ``epoch``.

    Linear warmup ``base_lr * (epoch + 1) / warmup_epochs`` for the first epochs (as in
    LDAM-DRW), then ``multistep`` (``base_lr * factor`` of the last milestone reached; fractional
    milestones are fractions of ``epochs``),
    ``cosine`` (from ``base_lr`` to ``min_lr`` over the remaining epochs) or ``constant``.
    """
    if epoch < cfg.warmup_epochs:
        return base_lr * (epoch + 1) / cfg.warmup_epochs
    if cfg.name == "multistep":
        factor = 1.0
        for m, f in zip(cfg.milestone_epochs(epochs), cfg.factors, strict=True):
            if epoch >= m:
                factor = f
        return base_lr * factor
    if cfg.name == "cosine":
        span = max(epochs - cfg.warmup_epochs, 1)
        t = min((epoch - cfg.warmup_epochs) / span, 1.0)
        return cfg.min_lr + (base_lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * t))
    return base_lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr
