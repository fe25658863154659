"""A training time budget as a number of epochs (``edgecnn pareto --budget-min``).

Every variant of a trade-off run gets the same wall-clock budget; a bigger variant then trains for
fewer epochs. The count comes from a probe before the run: a few optimizer steps of the variant's
model (its recipe's optimizer, batch size and input size) on random images, timed on this machine's
training device. Data loading is not in the probe, so a run may take somewhat longer than its
budget; a budget shorter than one epoch still trains one (the schedule is laid out per epoch).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from edgecnn.data.datasets import open_dataset
from edgecnn.models import create_model
from edgecnn.train.config import TrainConfig
from edgecnn.train.device import resolve_device
from edgecnn.train.optim import build_optimizer
from edgecnn.train.trainer import choose_res

PROBE_STEPS = 5  # timed steps (the median counts), after WARMUP_STEPS untimed ones
WARMUP_STEPS = 2  # the first steps of a process allocate and pick kernels: tens of times slower


@dataclass(frozen=True)
class BudgetPlan:
    """``epochs`` that fit ``budget_s`` seconds at the probed ``step_s`` (seconds per optimizer step of
    ``batch_size`` images), ``steps_per_epoch`` steps each."""

    budget_s: float
    step_s: float
    steps_per_epoch: int
    batch_size: int
    epochs: int

    def to_dict(self) -> dict:
        return {"budget_s": self.budget_s, "step_s": self.step_s, "steps_per_epoch": self.steps_per_epoch,
                "batch_size": self.batch_size, "epochs": self.epochs,
                "estimated_train_s": round(self.epochs * self.steps_per_epoch * self.step_s, 1)}


def time_step(model: nn.Module, cfg: TrainConfig, shape: tuple[int, ...], num_classes: int,
              device: torch.device) -> float:
    """Median seconds of one optimizer step (forward, loss, backward, update) on random images of ``shape``."""
    model.to(device).train()
    optimizer = build_optimizer(model, cfg)
    x = torch.rand(shape, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (shape[0],), device=device)
    loss_fn = nn.CrossEntropyLoss()
    times = []
    for _ in range(WARMUP_STEPS + PROBE_STEPS):
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    timed = sorted(times[WARMUP_STEPS:])
    return timed[len(timed) // 2]


def plan_epochs(cfg: TrainConfig, budget_s: float) -> BudgetPlan:
    """The whole epochs of ``cfg``'s run that fit ``budget_s`` seconds of training (at least 1)."""
    data = open_dataset(cfg.data, val_split=cfg.val_split, seed=cfg.seed, max_unreadable=cfg.max_unreadable,
                        max_imbalance=cfg.max_imbalance)
    model = create_model(cfg.model, num_classes=data.num_classes, in_chans=data.in_chans, **cfg.knobs)
    res = choose_res(cfg, data, model)
    step_s = time_step(model, cfg, (cfg.batch_size, data.in_chans, res, res), data.num_classes,
                       resolve_device(cfg.device))
    steps = max(1, len(data.split("train")) // cfg.batch_size)
    return BudgetPlan(budget_s=budget_s, step_s=step_s, steps_per_epoch=steps, batch_size=cfg.batch_size,
                      epochs=epochs_within(budget_s, steps, step_s))


def epochs_within(budget_s: float, steps_per_epoch: int, step_s: float) -> int:
    """Whole epochs of ``steps_per_epoch`` steps of ``step_s`` seconds within ``budget_s`` seconds, at least 1."""
    return max(1, int(budget_s // (steps_per_epoch * step_s)))
