"""Which images calibrate (and verify) an int8 export, and where they came from.

The order of preference, first match wins:

1. ``--calib-data DIR``: a folder of images, or of class sub-folders (searched recursively);
   unreadable files are skipped and counted, a folder without any readable image is an error
   that names the first bad file;
2. the training data recorded in an edgecnn checkpoint (a folder, or a dataset name such as
   ``fashion-mnist``), when it is available on this machine;
3. real photos shipped by installed packages (:func:`edgecnn.data.photos.sample_photos`);
4. synthetic images, with a loud warning: accuracy after int8 quantisation is then unknown
   (noise-calibrated MobileNets agree with float on ~0% of real photos).

Images are resized and centre-cropped with the model's :class:`Preprocess`; the result is uint8
pixels (N, H, W, C), what an app feeds, normalised later by whoever needs floats.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecnn.data.photos import sample_photos
from edgecnn.data.transforms import Preprocess, list_images, load_image
from edgecnn.errors import EdgeCNNError

SOURCES = ("folder", "checkpoint", "photos", "synthetic")


class SyntheticCalibrationWarning(UserWarning):
    """Calibration fell back to synthetic images: int8 accuracy is unknown."""


@dataclass(frozen=True)
class CalibrationSet:
    """uint8 pixels (N, H, W, C) after resize/crop, and a sentence saying where they came from.

    ``kind`` is one of :data:`SOURCES`; ``skipped`` counts unreadable files left out.
    """

    pixels: np.ndarray
    kind: str
    source: str
    skipped: int = 0

    def to_dict(self) -> dict:
        return {"images": int(len(self.pixels)), "kind": self.kind, "source": self.source,
                "skipped": self.skipped}


def _folder_images(folder: Path, n: int, preprocess: Preprocess, seed: int, kind: str) -> CalibrationSet:
    files = list_images(folder)
    if not files:
        raise EdgeCNNError(f"calibration folder {folder} holds no image files "
                           f"(looked for .jpg/.png/... recursively)")
    order = files[:]
    random.Random(seed).shuffle(order)  # spread the pick over class sub-folders
    pixels, bad = [], []
    for path in order:
        if len(pixels) == n:
            break
        try:
            pixels.append(preprocess.to_uint8(load_image(path)))
        except EdgeCNNError:
            bad.append(path)
    if not pixels:
        raise EdgeCNNError(f"calibration folder {folder} has no readable image; first bad file: {bad[0]}")
    source = f"{len(pixels)} images from {folder}"
    if bad:
        source += f" ({len(bad)} unreadable skipped, first: {bad[0].name})"
    return CalibrationSet(np.stack(pixels), kind, source, skipped=len(bad))


def synthetic_pixels(n: int, preprocess: Preprocess, seed: int = 0) -> np.ndarray:
    """``n`` smooth random images (N, H, W, C) uint8: blurred colour fields, not white noise."""
    rng = np.random.default_rng(seed)
    res, c = preprocess.res, preprocess.in_chans
    coarse = rng.uniform(0, 255, size=(n, 8, 8, c))
    idx = np.linspace(0, 7, res).round().astype(int)
    smooth = coarse[:, idx][:, :, idx]
    return np.clip(smooth + rng.normal(0, 12, size=smooth.shape), 0, 255).astype(np.uint8)


def calibration_images(preprocess: Preprocess, n: int, *, calib_data: str | Path | None = None,
                       checkpoint_data: str | None = None, seed: int = 0) -> CalibrationSet:
    """``n`` calibration images from the best source available (see the module docstring)."""
    if n < 1:
        raise EdgeCNNError(f"calibration needs at least one image, got {n}")
    if calib_data is not None:
        folder = Path(calib_data).expanduser()
        if not folder.is_dir():
            raise EdgeCNNError(f"--calib-data {folder} does not exist or is not a directory")
        return _folder_images(folder, n, preprocess, seed, "folder")
    unusable = None
    folder = Path(checkpoint_data).expanduser() if checkpoint_data else None
    if folder is not None and folder.is_dir() and list_images(folder):
        return _folder_images(folder, n, preprocess, seed, "checkpoint")
    if checkpoint_data:  # an IDX or CIFAR folder, or a dataset name such as "fashion-mnist"
        from edgecnn.data.datasets import sample_images

        try:
            images = sample_images(checkpoint_data, n, seed=seed)
        except EdgeCNNError as exc:
            unusable = str(exc)
        else:
            return CalibrationSet(np.stack([preprocess.to_uint8(im) for im in images]), "checkpoint",
                                  f"{len(images)} images of the checkpoint's training data {checkpoint_data!r}")
    photos = sample_photos(n, seed=seed)
    if photos:
        real = min(n, len(sample_photos()))
        note = f"{n} real photos from installed packages"
        if n > real:
            note = f"{real} real photos from installed packages, extended to {n} by seeded random crops"
        if unusable:
            note += f" (the checkpoint's training data {checkpoint_data!r} is not usable here: {unusable})"
        return CalibrationSet(np.stack([preprocess.to_uint8(im) for im in photos]), "photos", note)
    warnings.warn("no calibration images: neither --calib-data, nor checkpoint training data, nor a package "
                  "with photos (pip install scikit-image); calibrating int8 on SYNTHETIC images, so its "
                  "accuracy is UNKNOWN", SyntheticCalibrationWarning, stacklevel=2)
    return CalibrationSet(synthetic_pixels(n, preprocess, seed), "synthetic",
                          f"{n} synthetic images (WARNING: int8 accuracy unknown)")
