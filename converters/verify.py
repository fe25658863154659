"""Check an exported ``.tflite`` against the PyTorch float model on real images.

Each file runs through :class:`~edgecnn.converters.tflite_runtime.TFLiteModel.predict_pixels`,
the way an app feeds it (uint8 pixels; float inputs normalised with the file's own metadata, uint8
inputs given the bytes unchanged), and its logits are compared with PyTorch's on the same pixels:

- ``max_rel_error`` = max |tflite - torch| / max |torch|, over every logit of every image (the error
  relative to the largest logit magnitude, so that near-zero logits do not blow it up);
- ``top1_agreement``: fraction of images whose arg-max class matches;
- ``cosine``: mean over images of the cosine similarity of the two logit vectors (0 where exactly
  one of them is all zeros).

Pass criteria (:data:`CHECKS`): float32 must match to ``max_rel_error <= 1e-3``; float16, dynamic and
int8 are judged by the logit cosine and top-1 agreement. With random weights only float32 and
float16 are judged (by error and cosine): their logits are too small and too close for int8.
A failure raises :class:`VerificationError` naming the file and the number.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgecnn.data.transforms import Preprocess
from edgecnn.errors import VerificationError

# precision -> (metric, bound, "max" | "min"); top-1 bounds apply to trained weights only
CHECKS: dict[str, list[tuple[str, float, str]]] = {
    "float32": [("max_rel_error", 1e-3, "max")],
    "float16": [("cosine", 0.999, "min"), ("top1_agreement", 0.9, "min")],
    "dynamic": [("cosine", 0.95, "min"), ("top1_agreement", 0.6, "min")],
    "int8": [("cosine", 0.9, "min"), ("top1_agreement", 0.5, "min")],
}
# Random-init zoo models give logits of ~1e-8 that int8 cannot represent: measured, not judged.
UNTRAINED_UNJUDGED = ("dynamic", "int8")


@dataclass(frozen=True)
class Verification:
    """The comparison of one file with PyTorch on ``images`` real images."""

    images: int
    max_rel_error: float
    top1_agreement: float
    cosine: float
    checks: list[dict]
    passed: bool

    def to_dict(self) -> dict:
        return {"images": self.images, "max_rel_error": self.max_rel_error,
                "top1_agreement": self.top1_agreement, "cosine": self.cosine,
                "checks": self.checks, "passed": self.passed}


def reference_logits(model: nn.Module, preprocess: Preprocess, pixels: np.ndarray) -> np.ndarray:
    """PyTorch float32 logits (N, classes) for uint8 pixels (N, H, W, C)."""
    model.eval()
    with torch.no_grad():
        return model(preprocess.normalize(pixels)).float().numpy()


def compare(logits: np.ndarray, ref: np.ndarray) -> dict:
    """``max_rel_error``, ``top1_agreement`` and ``cosine`` of ``logits`` against ``ref`` (N, classes)."""
    scale = float(np.abs(ref).max()) or 1.0
    a, b = logits.astype(np.float64), ref.astype(np.float64)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = (np.abs(a).max(axis=1) == 0) & (np.abs(b).max(axis=1) == 0)
    cos = np.where(denom > 0, (a * b).sum(axis=1) / np.maximum(denom, 1e-300), both_zero.astype(float))
    return {"max_rel_error": float(np.abs(a - b).max() / scale),
            "top1_agreement": float((a.argmax(1) == b.argmax(1)).mean()),
            "cosine": float(cos.mean())}


def verify_file(path: str | Path, precision: str, ref: np.ndarray, pixels: np.ndarray,
                preprocess: Preprocess, *, trained: bool) -> Verification:
    """Run ``path`` on ``pixels`` and judge it against ``ref`` by the :data:`CHECKS` of ``precision``."""
    from edgecnn.converters.tflite_runtime import TFLiteModel

    tfl = TFLiteModel(path, num_threads=2, in_chans=preprocess.in_chans)
    metrics = compare(tfl.predict_pixels(pixels, preprocess), ref)
    checks = []
    for metric, bound, kind in CHECKS[precision]:
        if not trained and (metric == "top1_agreement" or precision in UNTRAINED_UNJUDGED):
            continue  # random weights: tiny, near-tied logits say nothing about a quantised file
        value = metrics[metric]
        ok = value <= bound if kind == "max" else value >= bound
        checks.append({"metric": metric, "value": value, "bound": bound, "kind": kind, "passed": bool(ok)})
    return Verification(images=len(pixels), checks=checks, passed=all(c["passed"] for c in checks), **metrics)


def raise_if_failed(name: str, result: Verification) -> None:
    """:class:`VerificationError` naming the file and the first failed number."""
    for c in result.checks:
        if not c["passed"]:
            rel = "above" if c["kind"] == "max" else "below"
            raise VerificationError(f"{name} failed verification: {c['metric']} {c['value']:.4g} is {rel} "
                                    f"the bound {c['bound']:g} (on {result.images} real images vs PyTorch)")
