"""Warnings about a run that went wrong: a non-finite loss, or validation accuracy at chance level."""

from __future__ import annotations

import math

import numpy as np

# Validation top-1 (fraction) within this of always answering the most common class counts as chance.
CHANCE_MARGIN = 0.02


def chance_top1(labels: np.ndarray) -> float | None:
    """Top-1 of always answering the most common class of ``labels`` (None when there are none)."""
    labels = np.asarray(labels)
    return float(np.bincount(labels).max() / len(labels)) if len(labels) else None


def training_warnings(history: list[dict], chance: float | None) -> list[str]:
    """One line per problem seen in ``history`` (the per-epoch rows of a run)."""
    warnings = []
    bad = next((r for r in history if not (math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]))), None)
    if bad is not None:
        warnings.append(f"the loss became non-finite in epoch {bad['epoch']} (train {bad['train_loss']:g}, val "
                        f"{bad['val_loss']:g}): training diverged; lower --lr or try --optimizer adamw")
    best = max((r["val_top1"] for r in history), default=None)
    if chance is not None and best is not None and best <= chance + CHANCE_MARGIN:
        warnings.append(f"validation top-1 stayed at chance level (best {100 * best:.2f}%; always answering the "
                        f"most common class scores {100 * chance:.2f}%): the model did not learn; lower --lr, "
                        f"try --optimizer adamw or train longer")
    return warnings
