"""Activation observers that PT2E lacks, built on its own observer classes."""

from __future__ import annotations

import torch
from torchao.quantization.pt2e.observer import HistogramObserver


class PercentileObserver(HistogramObserver):
    """Activation range = the ``percentile`` and ``100 - percentile`` points of the histogram.

    Collects the same running histogram as :class:`HistogramObserver` (2048 bins over the observed
    min..max) and clips each tail holding ``(100 - percentile)`` % of the values, instead of
    searching for the L2-optimal range. 99.99 is the usual choice for CNN activations.
    """

    def __init__(self, *args, percentile: float = 99.99, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not 50.0 < percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {percentile}")
        self.percentile = percentile

    def _non_linear_param_search(self) -> tuple[torch.Tensor, torch.Tensor]:
        hist = self.histogram.to(torch.float64)
        total = hist.sum()
        if total <= 0:
            return self.min_val, self.max_val
        tail = total * (100.0 - self.percentile) / 100.0
        cdf = torch.cumsum(hist, 0)
        lo_bin = int(torch.searchsorted(cdf, tail, right=True))
        hi_bin = int(torch.searchsorted(cdf, total - tail, right=False))
        width = (self.max_val - self.min_val) / self.bins
        new_min = self.min_val + width * lo_bin
        new_max = self.min_val + width * min(self.bins, hi_bin + 1)
        # Keep zero representable: clipping a ReLU output's lower tail above 0 would shift it.
        return torch.minimum(new_min, torch.zeros_like(new_min)), torch.maximum(new_max, torch.zeros_like(new_max))
