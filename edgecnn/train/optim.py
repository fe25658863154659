"""Optimizer and learning-rate schedule: no weight decay on norms/biases/position embeddings, linear
warm-up, then cosine."""

from __future__ import annotations

import math

import torch
from torch import nn

from edgecnn.train.config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights of convolutions/linears decay; 1-D tensors (norm scales/shifts, biases) do
    not, nor do the tensors a module names in its ``no_weight_decay()`` (a ViT's position embedding
    and class token, the DeiT recipe)."""
    exempt = {id(p) for m in model.modules() if hasattr(m, "no_weight_decay")
              for name, p in m.named_parameters() if name in m.no_weight_decay()}
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 or id(p) in exempt else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.peak_lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.peak_lr)


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float = 0.0):
    """Multiplier of the peak lr at optimizer step ``s``: linear from ~0 to 1, then cosine to ``min_ratio``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Stepped once per optimizer step."""
    total = cfg.epochs * steps_per_epoch
    warmup = min(total, int(round(cfg.warmup_epochs * steps_per_epoch)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total, warmup, cfg.min_lr_ratio))
