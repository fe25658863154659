"""MobileNetV1 (Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
Applications", 2017).

A 3x3 stem then 13 depthwise-separable layers (3x3 depthwise conv-BN-act, 1x1 pointwise conv-BN-act),
global average pool, dropout, fully connected classifier. Layout follows TF-slim's
``mobilenet_v1.py``, the source of the published parameter / MAC table:

- activation ReLU6 (TF-slim and its released checkpoints; the paper says ReLU), BN epsilon 1e-3;
- width multiplier ``alpha`` scales every layer as ``max(int(channels * alpha), 8)`` (TF-slim's
  ``depth_multiplier`` with ``min_depth=8``; no rounding to multiples of 8);
- dropout 0.001 before the classifier (TF-slim's ``dropout_keep_prob=0.999``);
- TF-slim's classifier is a 1x1 conv over 1001 classes (background + ImageNet); here it is an
  ``nn.Linear`` over ``num_classes`` (same parameters and MACs for the same class count).

There is no torchvision MobileNetV1, so key names are edgecnn's own: ``features.0`` (stem),
``features.N.dw`` / ``features.N.pw`` (each a :class:`ConvBNAct`), ``classifier.1`` (the Linear).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from edgecnn.limits import PUBLISHED_ALPHAS
from edgecnn.models.layers import ConvBNAct, check_alpha, init_weights
from edgecnn.models.registry import ModelSpec, register

STEM_CHANNELS = 32
# (output channels at alpha 1, stride) of the 13 depthwise-separable layers (paper Table 1)
LAYERS = (
    (64, 1),
    (128, 2), (128, 1),
    (256, 2), (256, 1),
    (512, 2), (512, 1), (512, 1), (512, 1), (512, 1), (512, 1),
    (1024, 2), (1024, 1),
)
MIN_DEPTH = 8
BN_EPS = 1e-3


def scaled(channels: int, alpha: float) -> int:
    """TF-slim's width scaling: ``max(int(channels * alpha), 8)``."""
    return max(int(channels * alpha), MIN_DEPTH)


def depthwise_separable(in_chs: int, out_chs: int, stride: int) -> nn.Sequential:
    """3x3 depthwise conv-BN-ReLU6 (``dw``) then 1x1 pointwise conv-BN-ReLU6 (``pw``)."""
    return nn.Sequential(OrderedDict(
        dw=ConvBNAct(in_chs, in_chs, 3, stride, groups=in_chs, act_layer=nn.ReLU6, bn_eps=BN_EPS),
        pw=ConvBNAct(in_chs, out_chs, 1, act_layer=nn.ReLU6, bn_eps=BN_EPS),
    ))


class MobileNetV1(nn.Module):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, alpha: float = 1.0,
                 dropout: float = 0.001) -> None:
        super().__init__()
        alpha = check_alpha(alpha, PUBLISHED_ALPHAS["mobilenet_v1"])
        in_chs = scaled(STEM_CHANNELS, alpha)
        features: list[nn.Module] = [ConvBNAct(in_chans, in_chs, 3, 2, act_layer=nn.ReLU6, bn_eps=BN_EPS)]
        for channels, stride in LAYERS:
            out_chs = scaled(channels, alpha)
            features.append(depthwise_separable(in_chs, out_chs, stride))
            in_chs = out_chs
        self.features = nn.Sequential(*features)
        self.num_features = in_chs
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_chs, num_classes))
        init_weights(self, conv_mode="fan_in")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


register(ModelSpec(
    name="mobilenet_v1", family="mobilenet_v1", builder=MobileNetV1, default_res=224, min_res=32,
    tunable={"alpha": 1.0}, aliases=("mobilenet", "mobilenetv1"),
    paper="Howard et al. 2017, arXiv:1704.04861"))
