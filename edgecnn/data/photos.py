"""Real natural photos that installed packages ship: the default calibration and verification set.

scikit-image carries a handful of real photographs (a cat, coffee, a rocket, motorcycles, an
astronaut, ...); scikit-learn, when installed, adds two more. Where more images are needed than
exist, seeded random crops of the same photos are used: still real image statistics, unlike noise
(noise-calibrated int8 MobileNets agree with float on ~0% of real photos).
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

from PIL import Image

from edgecnn.data.transforms import load_image

# scikit-image file name -> what it shows; photographs only (no synthetic or microscopy images)
SKIMAGE_PHOTOS = {
    "chelsea.png": "cat",
    "coffee.png": "espresso",
    "rocket.jpg": "space shuttle",
    "motorcycle_left.png": "moped",
    "motorcycle_right.png": "moped",
    "astronaut.png": "astronaut",
    "camera.png": "cameraman (grayscale)",
    "brick.png": "brick wall (grayscale)",
    "grass.png": "grass (grayscale)",
    "gravel.png": "gravel (grayscale)",
    "moon.png": "moon surface (grayscale)",
    "coins.png": "coins (grayscale)",
    "hubble_deep_field.jpg": "galaxies",
}
SKLEARN_PHOTOS = {"china.jpg": "temple", "flower.jpg": "flower"}


def _package_dir(package: str, sub: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / sub


def photo_paths() -> list[Path]:
    """Paths of the real photos available on this machine (may be empty)."""
    paths = []
    for package, sub, names in (("skimage", "data", SKIMAGE_PHOTOS),
                                ("sklearn", "datasets/images", SKLEARN_PHOTOS)):
        folder = _package_dir(package, sub)
        if folder is not None:
            paths += [folder / n for n in names if (folder / n).is_file()]
    return paths


def sample_photos(n: int | None = None, seed: int = 0) -> list[Image.Image]:
    """``n`` real photos (all of them when ``n`` is None), extended by seeded random crops.

    Returns an empty list when no package with photos is installed.
    """
    photos = [load_image(p).convert("RGB") for p in photo_paths()]
    if not photos or n is None:
        return photos
    out = photos[:n]
    rng = random.Random(seed)
    while len(out) < n:
        im = photos[len(out) % len(photos)]
        w, h = im.size
        side = int(min(w, h) * rng.uniform(0.4, 0.9))
        left, top = rng.randint(0, w - side), rng.randint(0, h - side)
        crop = im.crop((left, top, left + side, top + side))
        out.append(crop.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop)
    return out
