"""Training augmentation: random resized crop, horizontal flip, optional colour jitter, random erasing.

Each sample's randomness comes from its own seed (see :class:`edgecnn.train.loader.EpochSampler`),
not from a worker's global RNG, so an epoch's augmented images are identical whatever the number of
DataLoader workers and whether or not the run was resumed halfway. The result is normalised by the
same :class:`~edgecnn.data.transforms.Preprocess` the evaluation path uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageEnhance

from edgecnn.data.transforms import Preprocess


@dataclass(frozen=True)
class TrainTransform:
    """PIL image + seed -> augmented CHW float tensor at ``preprocess.res``.

    ``scale`` bounds the crop's area as a fraction of the image, ``ratio`` its aspect ratio (as in
    Inception/torchvision's RandomResizedCrop); ``color_jitter`` is the strength of random
    brightness, contrast and saturation changes (factor drawn from [1 - j, 1 + j]; 0 = off).
    ``random_erase`` is the probability of random erasing (Zhong et al. 2017): one rectangle of
    2-33% of the image, aspect 0.3-3.3, set to the mean (0 after normalisation); 0 = off.
    """

    preprocess: Preprocess
    scale: tuple[float, float] = (0.25, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: bool = True
    color_jitter: float = 0.0
    random_erase: float = 0.0

    def crop_box(self, width: int, height: int, g: torch.Generator) -> tuple[float, float, float, float]:
        """A random (left, top, right, bottom) box; the whole image when ten tries do not fit."""
        area = width * height
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            u = torch.rand(4, generator=g).tolist()
            target = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * u[0])
            aspect = math.exp(log_lo + (log_hi - log_lo) * u[1])
            w, h = math.sqrt(target * aspect), math.sqrt(target / aspect)
            if w <= width and h <= height:
                left, top = (width - w) * u[2], (height - h) * u[3]
                return left, top, left + w, top + h
        return 0.0, 0.0, float(width), float(height)

    def __call__(self, image: Image.Image, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(seed))
        p = self.preprocess
        image = image.convert("L" if p.in_chans == 1 else "RGB")
        box = self.crop_box(*image.size, g)
        image = image.resize((p.res, p.res), Image.BILINEAR, box=box)
        if self.hflip and torch.rand(1, generator=g).item() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        if self.color_jitter > 0:
            enhancers = (ImageEnhance.Brightness, ImageEnhance.Contrast) + (
                (ImageEnhance.Color,) if p.in_chans == 3 else ())
            factors = 1 + self.color_jitter * (2 * torch.rand(len(enhancers), generator=g) - 1)
            for enhancer, factor in zip(enhancers, factors.tolist()):
                image = enhancer(image).enhance(factor)
        arr = np.asarray(image, dtype=np.uint8)
        x = p.normalize(arr[:, :, None] if arr.ndim == 2 else arr)[0]
        if self.random_erase > 0 and torch.rand(1, generator=g).item() < self.random_erase:
            x = erase(x, g)
        return x


def erase(x: torch.Tensor, g: torch.Generator, scale: tuple[float, float] = (0.02, 1 / 3),
          ratio: tuple[float, float] = (0.3, 3.3)) -> torch.Tensor:
    """``x`` (C, H, W) with one random rectangle zeroed (the dataset mean once normalised)."""
    _, h, w = x.shape
    for _ in range(10):
        u = torch.rand(4, generator=g).tolist()
        area = h * w * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[1])
        eh, ew = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if 0 < eh < h and 0 < ew < w:
            top, left = int(u[2] * (h - eh + 1)), int(u[3] * (w - ew + 1))
            x = x.clone()
            x[:, top:top + eh, left:left + ew] = 0
            return x
    return x
