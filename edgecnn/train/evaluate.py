"""Accuracy of any classifier (PyTorch module or .tflite runner) over a DataLoader: top-1/top-5, per class."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch

from edgecnn.train.progress import Progress


@dataclass
class EvalResult:
    """Accuracies are fractions in [0, 1]; ``loss`` is mean cross-entropy (nats); throughputs in images/s.

    ``images_per_s`` counts the model's time only; ``end_to_end_images_per_s`` includes loading and
    preprocessing. ``correct``: per-image top-1 hits in the loader's order (for paired comparisons of
    two models on the same images, :func:`edgecnn.paired.paired_difference`).
    """

    images: int
    top1: float
    top5: float
    loss: float
    per_class: list[float]
    per_class_images: list[int]
    images_per_s: float
    end_to_end_images_per_s: float
    correct: np.ndarray | None = None

    def to_dict(self, classes: list[str] | None = None) -> dict:
        names = classes or [str(i) for i in range(len(self.per_class))]
        return {"images": self.images, "top1": self.top1, "top5": self.top5, "loss": self.loss,
                "images_per_s": self.images_per_s, "end_to_end_images_per_s": self.end_to_end_images_per_s,
                "per_class": {n: {"top1": a, "images": c}
                              for n, a, c in zip(names, self.per_class, self.per_class_images)}}


def evaluate(predict: Callable[[torch.Tensor], torch.Tensor | np.ndarray], batches: Iterable,
             num_classes: int, progress: Progress | None = None, description: str = "eval") -> EvalResult:
    """Run ``predict`` (NCHW float batch -> logits) over ``(images, labels)`` batches."""
    correct1 = correct5 = seen = 0
    loss_sum, model_s = 0.0, 0.0
    hits = np.zeros(num_classes, dtype=np.int64)
    counts = np.zeros(num_classes, dtype=np.int64)
    hit_list = []
    k = min(5, num_classes)
    start = time.perf_counter()
    total = len(batches.sampler) if hasattr(batches, "sampler") else None  # a shard: not the whole dataset
    task = progress.start(description, total) if progress else None
    for x, y in batches:
        t0 = time.perf_counter()
        logits = predict(x)
        logits = torch.as_tensor(logits).float().cpu()
        model_s += time.perf_counter() - t0
        y = torch.as_tensor(y).cpu()
        loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
        top = logits.topk(k, dim=1).indices
        ok1 = top[:, 0] == y
        correct1 += int(ok1.sum())
        hit_list.append(ok1.numpy())
        correct5 += int((top == y[:, None]).any(dim=1).sum())
        hits += np.bincount(y[ok1].numpy(), minlength=num_classes)
        counts += np.bincount(y.numpy(), minlength=num_classes)
        seen += len(y)
        if progress:
            progress.advance(task, len(y), acc=correct1 / seen, ips=seen / max(model_s, 1e-9))
    if progress:
        progress.stop(task)
    wall = time.perf_counter() - start
    per_class = [float(h / c) if c else float("nan") for h, c in zip(hits, counts)]
    n = max(seen, 1)
    return EvalResult(images=seen, top1=correct1 / n, top5=correct5 / n, loss=loss_sum / n,
                      per_class=per_class, per_class_images=counts.tolist(),
                      images_per_s=seen / max(model_s, 1e-9), end_to_end_images_per_s=seen / max(wall, 1e-9),
                      correct=np.concatenate(hit_list) if hit_list else np.zeros(0, dtype=bool))


def torch_predictor(model: torch.nn.Module, device: torch.device, channels_last: bool = True,
                    amp_dtype: torch.dtype | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """A ``predict`` for :func:`evaluate`: eval mode, no grad, on ``device``, NHWC memory by default."""
    model.eval()
    if channels_last:
        model.to(memory_format=torch.channels_last)

    @torch.no_grad()
    def predict(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out = model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    return predict
