"""MobileNetV3 (Howard et al., "Searching for MobileNetV3", 2019), Large and Small.

Inverted residual blocks (:class:`MBConv`) with ReLU or hard-swish, squeeze-excite gated by a
hard-sigmoid (squeeze width ``make_divisible(expanded / 4)``), a hard-swish 1x1 head conv to 6x the
last block width, then pool -> Linear -> hard-swish -> dropout -> Linear. BatchNorm eps 1e-3,
momentum 0.01. Width multiplier ``alpha`` scales every layer (including the last Linear's 1280/1024
units) with :func:`make_divisible`, as torchvision's ``width_mult``. Module layout and state_dict keys
are torchvision's ``mobilenet_v3_large`` / ``mobilenet_v3_small``. In the int8 ``.tflite`` (litert back
end) every op is integer: hard-swish is HARD_SWISH, each hard-sigmoid gate ADD (fused RELU6) + MUL
(:mod:`edgecnn.quantize.lowering`).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from edgecnn.limits import PUBLISHED_ALPHAS
from edgecnn.models.layers import ConvBNAct, MBConv, check_alpha, init_weights, make_divisible
from edgecnn.models.registry import ModelSpec, register

# kernel, expanded channels, output channels, squeeze-excite, activation ("RE" ReLU / "HS" hard-swish),
# stride; channels at alpha 1 (paper Tables 1 and 2). Every block's input is the previous output;
# the first block's is the 16-channel stem.
LARGE = (
    (3, 16, 16, False, "RE", 1),
    (3, 64, 24, False, "RE", 2),
    (3, 72, 24, False, "RE", 1),
    (5, 72, 40, True, "RE", 2),
    (5, 120, 40, True, "RE", 1),
    (5, 120, 40, True, "RE", 1),
    (3, 240, 80, False, "HS", 2),
    (3, 200, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 480, 112, True, "HS", 1),
    (3, 672, 112, True, "HS", 1),
    (5, 672, 160, True, "HS", 2),
    (5, 960, 160, True, "HS", 1),
    (5, 960, 160, True, "HS", 1),
)
SMALL = (
    (3, 16, 16, True, "RE", 2),
    (3, 72, 24, False, "RE", 2),
    (3, 88, 24, False, "RE", 1),
    (5, 96, 40, True, "HS", 2),
    (5, 240, 40, True, "HS", 1),
    (5, 240, 40, True, "HS", 1),
    (5, 120, 48, True, "HS", 1),
    (5, 144, 48, True, "HS", 1),
    (5, 288, 96, True, "HS", 2),
    (5, 576, 96, True, "HS", 1),
    (5, 576, 96, True, "HS", 1),
)
STEM_CHANNELS = 16
ACTIVATIONS = {"RE": nn.ReLU, "HS": nn.Hardswish}
BN = {"bn_eps": 1e-3, "bn_momentum": 0.01}


class MobileNetV3(nn.Module):
    def __init__(self, blocks: tuple[tuple, ...], last_channel: int, num_classes: int = 1000,
                 in_chans: int = 3, alpha: float = 1.0, dropout: float = 0.2) -> None:
        super().__init__()
        alpha = check_alpha(alpha, PUBLISHED_ALPHAS["mobilenet_v3"])
        in_chs = make_divisible(STEM_CHANNELS * alpha)
        features: list[nn.Module] = [ConvBNAct(in_chans, in_chs, 3, 2, act_layer=nn.Hardswish, **BN)]
        for kernel, exp, out, se, act, stride in blocks:
            exp_chs, out_chs = make_divisible(exp * alpha), make_divisible(out * alpha)
            features.append(MBConv(
                in_chs, exp_chs, out_chs, kernel, stride, ACTIVATIONS[act],
                se_chs=make_divisible(exp_chs // 4) if se else None, se_gate=nn.Hardsigmoid, **BN))
            in_chs = out_chs
        head_chs = 6 * in_chs
        features.append(ConvBNAct(in_chs, head_chs, 1, act_layer=nn.Hardswish, **BN))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        last_channel = make_divisible(last_channel * alpha)
        self.classifier = nn.Sequential(
            nn.Linear(head_chs, last_channel),
            nn.Hardswish(inplace=True),
            nn.Dropout(dropout, inplace=True),
            nn.Linear(last_channel, num_classes),
        )
        init_weights(self, conv_mode="fan_in")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


for _name, _blocks, _last in (("mobilenet_v3_large", LARGE, 1280), ("mobilenet_v3_small", SMALL, 1024)):
    register(ModelSpec(
        name=_name, family="mobilenet_v3", builder=partial(MobileNetV3, _blocks, _last),
        default_res=224, min_res=32, tunable={"alpha": 1.0},
        aliases=(_name.replace("_v3_", "v3_"), _name.replace("mobilenet_v3_", "mobilenetv3")),
        paper="Howard et al. 2019, arXiv:1905.02244"))
