"""Paired accuracy comparisons: two models judged on the same labelled images.

With a few hundred images one image is a large step (0.2 points of 500), so a difference of
top-1 accuracy is reported with what resolves it: the images that flip each way, an exact
two-sided McNemar test on those flips, and a percentile-bootstrap interval of the difference
(images resampled with replacement, both models' results kept paired).
"""

from __future__ import annotations

import base64
import math
from dataclasses import asdict, dataclass

import numpy as np

BOOTSTRAP_RESAMPLES = 10_000


@dataclass(frozen=True)
class PairedDifference:
    """Top-1 of ``b`` minus top-1 of ``a`` on the same ``images``, in percentage points.

    ``low``/``high``: the ``confidence`` bootstrap interval (points); ``a_only``: images ``a`` got
    right and ``b`` wrong; ``b_only``: the reverse; ``p_value``: exact two-sided McNemar.
    """

    images: int
    a_top1: float
    b_top1: float
    diff: float
    low: float
    high: float
    confidence: float
    a_only: int
    b_only: int
    p_value: float

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return (f"{self.diff:+.2f} points [{100 * self.confidence:.0f}% CI {self.low:+.2f}, {self.high:+.2f}]"
                f" on {self.images} images; {self.a_only} lost, {self.b_only} gained, "
                f"McNemar p={self.p_value:.3g}")


def mcnemar_p(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar p-value: discordant pairs ~ Binomial(a_only + b_only, 1/2)."""
    n, k = a_only + b_only, min(a_only, b_only)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / (1 << n)  # exact integers: 2.0 ** n overflows past 1023
    return min(1.0, 2.0 * tail)


def paired_difference(a_correct, b_correct, confidence: float = 0.95,
                      resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> PairedDifference:
    """Compare per-image correctness (bool arrays, same images in the same order) of ``a`` and ``b``."""
    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"need two equal-length, non-empty 1-D arrays, got {a.shape} and {b.shape}")
    delta = b.astype(np.int8) - a.astype(np.int8)  # +1 gained, -1 lost, 0 same
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 1000):  # bounded memory: 1000 x N int8 at a time
        idx = rng.integers(0, len(delta), size=(min(1000, resamples - start), len(delta)))
        means[start:start + len(idx)] = delta[idx].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    a_only, b_only = int(np.sum(delta < 0)), int(np.sum(delta > 0))
    return PairedDifference(images=len(a), a_top1=100 * float(a.mean()), b_top1=100 * float(b.mean()),
                            diff=100 * float(delta.mean()), low=100 * float(low), high=100 * float(high),
                            confidence=confidence, a_only=a_only, b_only=b_only,
                            p_value=mcnemar_p(a_only, b_only))


def change_text(change: dict | None, digits: int = 2) -> str:
    """``{"points", "low", "high"}`` (a paired difference in points) as ``+0.20 [-0.10, +0.50]``."""
    if not change:
        return "-"
    return f"{change['points']:+.{digits}f} [{change['low']:+.{digits}f}, {change['high']:+.{digits}f}]"


def pack_hits(correct) -> str:
    """Per-image correctness (bool array) as compact text for a JSON row (1 bit per image, base64)."""
    return base64.b64encode(np.packbits(np.asarray(correct, dtype=bool)).tobytes()).decode("ascii")


def unpack_hits(text: str, images: int) -> np.ndarray:
    """The bool array :func:`pack_hits` packed, ``images`` long."""
    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:images].astype(bool)
