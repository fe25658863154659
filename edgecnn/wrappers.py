"""What wraps a zoo classifier for deployment, shared by quantisation, conversion and verification:
normalisation moved inside the graph (:class:`PixelInput`) and softmax scores (:class:`SoftmaxScores`)."""

from __future__ import annotations

import torch
from torch import nn

from edgecnn.data.transforms import Preprocess
from edgecnn.errors import EdgeCNNError

# what the files output: class probabilities (softmax inside the graph, as Keras Applications) or raw logits
SCORES = ("softmax", "logits")


class PixelInput(nn.Module):
    """``model`` fed raw pixel values 0-255 (float, NCHW), normalising inside: ``(x / 255 - mean) / std``.

    The normalisation is a 1x1 depthwise convolution (weight ``1 / (255 std)``, bias ``-mean / std``),
    so quantisers treat it like any conv: the graph input itself gets quantised (scale ~1 for pixels
    0-255) and the op runs in int8. Apps (and MediaPipe, which refuses per-channel normalisation
    of float inputs) then feed pixels as they are.
    """

    def __init__(self, model: nn.Module, preprocess: Preprocess) -> None:
        super().__init__()
        self.model = model
        c = preprocess.in_chans
        self.normalize = nn.Conv2d(c, c, kernel_size=1, groups=c, bias=True)
        std, mean = torch.tensor(preprocess.std), torch.tensor(preprocess.mean)
        with torch.no_grad():
            self.normalize.weight.copy_((1.0 / (255.0 * std)).reshape(c, 1, 1, 1))
            self.normalize.bias.copy_(-mean / std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))


class SoftmaxScores(nn.Module):
    """``model`` with a softmax over its classes: probabilities in [0, 1] summing to 1 per image.

    Converted as part of the graph (TFLite SOFTMAX; in int8 files with TFLite's fixed output
    quantisation, scale 1/256 and zero point -128), so apps' ``score_threshold`` means a probability.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        if torch.compiler.is_exporting():  # torch.export (litert): the op PT2E annotates with that fixed range
            return torch.ops.aten._softmax.default(logits, -1, False)
        return torch.softmax(logits, dim=-1)  # eager and torch.onnx (which has no aten::_softmax)


def with_scores(model: nn.Module, scores: str) -> nn.Module:
    """``model`` giving ``scores`` (:data:`SCORES`): wrapped in :class:`SoftmaxScores`, or as it is."""
    if scores not in SCORES:
        raise EdgeCNNError(f"--scores takes {' or '.join(SCORES)}, got {scores!r}")
    return SoftmaxScores(model) if scores == "softmax" else model
