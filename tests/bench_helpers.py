"""Small real models for the bench tests: a tiny CNN as .tflite (litert-torch) and .onnx (torch.onnx).

The .tflite is converted once per machine and cached beside the other test assets (the conversion
costs ~10 s); the file name carries the litert-torch version so a new converter re-converts.
"""

from __future__ import annotations

import os
from importlib.metadata import version
from pathlib import Path

import torch
from torch import nn

ASSET_DIR = Path(os.environ.get("EDGECNN_TEST_ASSETS", Path.home() / ".cache" / "edgecnn" / "test-assets"))
RES = 32


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()


def tiny_tflite() -> Path:
    """A float32 .tflite of :func:`tiny_cnn` (NCHW 1x3x32x32 input)."""
    target = ASSET_DIR / f"bench_tiny_cnn_litert_torch_{version('litert-torch')}.tflite"
    if not target.is_file():
        import litert_torch

        ASSET_DIR.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.part")
        litert_torch.convert(tiny_cnn(), (torch.randn(1, 3, RES, RES),)).export(str(tmp))
        tmp.replace(target)
    return target


def tiny_onnx(path: Path) -> Path:
    """:func:`tiny_cnn` as a float32 .onnx at ``path``."""
    torch.onnx.export(tiny_cnn(), (torch.randn(1, 3, RES, RES),), str(path), input_names=["input"],
                      opset_version=17, dynamo=False)
    return path
