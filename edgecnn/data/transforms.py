"""Preprocessing, the model's input contract: image loading, resize, crop, normalise.

Everything is torch + Pillow (torchvision cannot load here). The evaluation recipe is
torchvision's: resize the shorter side to ``res / crop_pct`` (bilinear), centre-crop ``res``,
scale to [0, 1], subtract ``mean`` and divide by ``std`` per channel. :class:`Preprocess` records
those numbers so that calibration, verification, export metadata and apps all use the same ones.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from edgecnn.errors import EdgeCNNError
from edgecnn.limits import CROP_PCT, IN_CHANS, MEAN, RES, STD
from edgecnn.schema import Doc

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


@dataclass(frozen=True)
class Preprocess:
    """The evaluation transform of a model: resolution (px), crop fraction, per-channel mean/std.

    ``mean`` and ``std`` apply to pixel values scaled to [0, 1]; ``in_chans`` is 1 (grayscale) or 3
    (RGB).
    """

    res: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float = 0.875
    in_chans: int = 3

    @classmethod
    def for_model(cls, model: torch.nn.Module, res: int | None = None) -> "Preprocess":
        """The recipe recorded on a zoo model (``model.edgecnn_config``), at ``res`` if given."""
        cfg = model.edgecnn_config
        return cls(res=res or cfg.default_res, mean=tuple(cfg.mean), std=tuple(cfg.std),
                   crop_pct=cfg.crop_pct, in_chans=cfg.in_chans)

    def __post_init__(self) -> None:
        """Refuse what no image can be fed with (the numbers also come from files: see :meth:`from_dict`)."""
        RES.check(self.res)
        IN_CHANS.check(self.in_chans)
        CROP_PCT.check(self.crop_pct)
        for name, bound in (("mean", MEAN), ("std", STD)):
            values = tuple(float(v) if isinstance(v, numbers.Real) else v for v in getattr(self, name))
            if len(values) != self.in_chans:
                raise EdgeCNNError(f"{bound.what} needs {self.in_chans} values (one per input channel), "
                                   f"got {len(values)}")
            for v in values:
                bound.check(v)
            object.__setattr__(self, name, values)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: object, where: str = "preprocess") -> "Preprocess":
        """The recipe a file recorded (``where`` names it in errors); every field is checked."""
        doc = Doc(d, where)
        fields = {"res": doc.get("res", bound=RES), "crop_pct": doc.get("crop_pct", default=0.875, bound=CROP_PCT),
                  "in_chans": doc.get("in_chans", default=3, bound=IN_CHANS),
                  "mean": tuple(doc.items("mean", bound=MEAN, max_len=IN_CHANS.hi)),
                  "std": tuple(doc.items("std", bound=STD, max_len=IN_CHANS.hi))}
        try:
            return cls(**fields)
        except EdgeCNNError as exc:
            raise EdgeCNNError(f"{where}: {exc}") from None

    def resize_crop(self, image: Image.Image) -> Image.Image:
        """Resize the shorter side to ``res / crop_pct`` and centre-crop ``res`` x ``res``."""
        image = image.convert("L" if self.in_chans == 1 else "RGB")
        scale_to = max(self.res, int(round(self.res / self.crop_pct)))
        w, h = image.size
        if w <= h:
            new_w, new_h = scale_to, max(1, int(round(h * scale_to / w)))
        else:
            new_w, new_h = max(1, int(round(w * scale_to / h))), scale_to
        image = image.resize((new_w, new_h), Image.BILINEAR)
        left, top = (new_w - self.res) // 2, (new_h - self.res) // 2
        return image.crop((left, top, left + self.res, top + self.res))

    def to_uint8(self, image: Image.Image) -> np.ndarray:
        """HWC uint8 pixels after resize/crop: what a camera app would feed a uint8 model."""
        arr = np.array(self.resize_crop(image), dtype=np.uint8)  # a writable copy
        return arr[:, :, None] if arr.ndim == 2 else arr

    def normalize(self, pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
        """HWC or NHWC uint8 pixels -> NCHW float32 normalised tensor."""
        x = torch.as_tensor(np.array(pixels), dtype=torch.float32) / 255.0  # a writable copy
        if x.dim() == 3:
            x = x.unsqueeze(0)
        mean = torch.tensor(self.mean, dtype=torch.float32)
        std = torch.tensor(self.std, dtype=torch.float32)
        return ((x - mean) / std).permute(0, 3, 1, 2).contiguous()

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """PIL image -> CHW float32 tensor ready for the model."""
        return self.normalize(self.to_uint8(image))[0]


def load_image(path: str | Path) -> Image.Image:
    """Open an image file fully; an unreadable or non-image file raises :class:`EdgeCNNError`."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise EdgeCNNError(f"cannot read image {path}: {exc.__class__.__name__}: {exc}") from None


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursively, sorted), by suffix."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EdgeCNNError(f"image folder {folder} does not exist or is not a directory")
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def stack(preprocess: Preprocess, images: Sequence[Image.Image]) -> torch.Tensor:
    """A batch (N, C, H, W) from PIL images."""
    return torch.stack([preprocess(im) for im in images])
