"""MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", 2018).

Width multiplier ``alpha`` scales every layer's channels, rounded with :func:`make_divisible` to a
multiple of 8 as in the reference code; the 1280-channel head is only ever widened (alpha > 1).
Module layout and state_dict keys are torchvision's ``mobilenet_v2``.
"""

from __future__ import annotations

import torch
from torch import nn

from edgecnn.limits import PUBLISHED_ALPHAS
from edgecnn.models.layers import ConvBNAct, InvertedResidual, check_alpha, init_weights, make_divisible
from edgecnn.models.registry import ModelSpec, register

# t (expansion), c (output channels at alpha 1), n (repeats), s (stride of the first repeat)
BLOCKS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, alpha: float = 1.0,
                 dropout: float = 0.2) -> None:
        super().__init__()
        alpha = check_alpha(alpha, PUBLISHED_ALPHAS["mobilenet_v2"])
        in_chs = make_divisible(32 * alpha)
        self.last_channel = make_divisible(1280 * max(1.0, alpha))
        features: list[nn.Module] = [ConvBNAct(in_chans, in_chs, 3, 2, act_layer=nn.ReLU6)]
        for t, c, n, s in BLOCKS:
            out_chs = make_divisible(c * alpha)
            for i in range(n):
                features.append(InvertedResidual(in_chs, out_chs, s if i == 0 else 1, t))
                in_chs = out_chs
        features.append(ConvBNAct(in_chs, self.last_channel, 1, act_layer=nn.ReLU6))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes))
        init_weights(self, conv_mode="fan_in")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


register(ModelSpec(
    name="mobilenet_v2", family="mobilenet_v2", builder=MobileNetV2, default_res=224, min_res=32,
    tunable={"alpha": 1.0}, aliases=("mobilenetv2",),
    paper="Sandler et al. 2018, arXiv:1801.04381"))
