"""What the ImageNet-photo studies share (``lite0_int8.py``, ``imagenet_int8.py``): the pretrained
weights they quantise and their photo-folder flags. Not a study itself; imported by them."""

from __future__ import annotations

import argparse
from pathlib import Path

ASSETS = Path.home() / ".cache" / "edgecnn" / "test-assets"
WEIGHTS = {"mobilenet_v2": ASSETS / "mobilenet_v2-b0353104.pth",
           "efficientnet_lite0": ASSETS / "efficientnet-lite0-57934424.pth"}


def add_photo_args(p: argparse.ArgumentParser) -> None:
    """``--calib``/``--eval`` (flat folders of ``<wnid>_*.JPEG``), how many of each, ``--models``."""
    p.add_argument("--calib", type=Path, required=True, help="flat folder of <wnid>_*.JPEG calibration photos")
    p.add_argument("--eval", type=Path, required=True, help="flat folder of <wnid>_*.JPEG evaluation photos")
    p.add_argument("--calib-samples", type=int, default=250)
    p.add_argument("--eval-samples", type=int, default=250)
    p.add_argument("--models", default=",".join(WEIGHTS))
