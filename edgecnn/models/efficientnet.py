"""EfficientNet (Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks", 2019): B0-B7, your own compound-scaled variant, and the edge variant EfficientNet-Lite0-4.

Every model is B0's block table (:data:`BLOCKS`) scaled by a width multiplier (channels rounded with
:func:`make_divisible`), a depth multiplier (``ceil(repeats * depth)``) and an input resolution:

- B0-B7 use the official builder's (width, depth, resolution, dropout) per model
  (:data:`B_VARIANTS`), not the rounded alpha/beta/gamma formula. MBConv blocks with squeeze-excite
  (squeeze width ``in_chs // 4``) and SiLU ("swish"), stochastic depth rising linearly to 0.2 over
  the blocks (in the int8 ``.tflite`` of the litert back end SiLU is LOGISTIC + MUL and the
  squeeze-excite gate LOGISTIC + MUL, all integer: :mod:`edgecnn.quantize.lowering`). Module layout and
  state_dict keys are torchvision's ``efficientnet_b*``
  (``features.N.M.block...``), BatchNorm eps/momentum as torchvision (TF's 1e-3/0.01 for B5-B7,
  whose weights torchvision ported from TF).
- ``efficientnet`` with compound coefficient ``phi`` (any real number in [-4, 8]): width 1.1**phi,
  depth 1.2**phi, resolution round(224 * 1.15**phi) (the paper's beta, alpha, gamma), dropout 0.2.
  ``phi=0`` is exactly B0.
- Lite0-4 (TF's ``efficientnet_lite_builder``): ReLU6, no squeeze-excite, stem (32 channels) and
  head (1280 channels) never scaled, and neither are the repeats of the first and last stages.
  BatchNorm eps 1e-3 / momentum 0.01 (TF's). Inputs normalised as TF does: (pixel - 127) / 128.
  Shapes match the TF-ported Lite0 checkpoint (lukemelas-style ``_blocks.N._depthwise_conv`` ...)
  one-to-one in order, under torchvision-style names.

Padding is symmetric ((k - 1) // 2 on every side, torchvision style). TF's "same" padding pads a
stride-2 conv on an even input only at the bottom/right, so TF-trained weights (Lite, B5-B7) see
features shifted by one pixel at each stride-2 layer: output sizes and MACs are identical, logits
differ slightly from TF's (torchvision reports its symmetric-padding B5-B7 ports within ~0.2% top-1
of TF's numbers).
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from edgecnn.limits import PHI
from edgecnn.models.layers import ConvBNAct, MBConv, init_weights, make_divisible
from edgecnn.models.registry import ModelSpec, register

# expand ratio, kernel, stride, input channels, output channels, repeats (B0, paper Table 1)
BLOCKS = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)
# name: (width, depth, resolution, dropout), TF's efficientnet_builder / efficientnet_lite_builder
B_VARIANTS = {
    "b0": (1.0, 1.0, 224, 0.2), "b1": (1.0, 1.1, 240, 0.2), "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3), "b4": (1.4, 1.8, 380, 0.4), "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5), "b7": (2.0, 3.1, 600, 0.5),
}
LITE_VARIANTS = {
    "lite0": (1.0, 1.0, 224, 0.2), "lite1": (1.0, 1.1, 240, 0.2), "lite2": (1.1, 1.2, 260, 0.3),
    "lite3": (1.2, 1.4, 280, 0.3), "lite4": (1.4, 1.8, 300, 0.3),
}
TF_BN = {"bn_eps": 1e-3, "bn_momentum": 0.01}
TORCH_BN = {"bn_eps": 1e-5, "bn_momentum": 0.1}
LITE_STEM, LITE_HEAD = 32, 1280
# the paper's compound-scaling bases: depth alpha, width beta, resolution gamma
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15
# TF's EfficientNet-Lite preprocessing: (pixel - 127) / 128 on 0-255 pixels
LITE_MEAN = (127 / 255,) * 3
LITE_STD = (128 / 255,) * 3


class EfficientNet(nn.Module):
    """B0's block table scaled by ``width`` and ``depth``; ``lite`` selects the Lite recipe."""

    def __init__(self, width: float, depth: float, dropout: float, num_classes: int = 1000,
                 in_chans: int = 3, lite: bool = False, drop_path: float = 0.2,
                 bn_eps: float = 1e-5, bn_momentum: float = 0.1) -> None:
        super().__init__()
        bn = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        act = nn.ReLU6 if lite else nn.SiLU
        in_chs = LITE_STEM if lite else make_divisible(BLOCKS[0][3] * width)
        features: list[nn.Module] = [ConvBNAct(in_chans, in_chs, 3, 2, act_layer=act, **bn)]
        fixed_repeats = {0, len(BLOCKS) - 1} if lite else set()
        repeats = [n if i in fixed_repeats else math.ceil(n * depth) for i, (*_, n) in enumerate(BLOCKS)]
        total, block_id = sum(repeats), 0
        for (expand, kernel, stride, _, out, _), n in zip(BLOCKS, repeats):
            out_chs = make_divisible(out * width)
            stage = []
            for i in range(n):
                stage.append(MBConv(
                    in_chs, make_divisible(in_chs * expand), out_chs, kernel, stride if i == 0 else 1,
                    act, se_chs=None if lite else max(1, in_chs // 4), se_act=nn.SiLU,
                    drop_path=drop_path * block_id / total, **bn))
                in_chs, block_id = out_chs, block_id + 1
            features.append(nn.Sequential(*stage))
        head_chs = LITE_HEAD if lite else 4 * in_chs
        features.append(ConvBNAct(in_chs, head_chs, 1, act_layer=act, **bn))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout, inplace=True), nn.Linear(head_chs, num_classes))
        init_weights(self, conv_mode="fan_in")
        # torchvision draws EfficientNet's classifier from U(+-1/sqrt(classes)): 0.032 for ImageNet's 1000,
        # but 0.32 for 10 classes, whose initial logits then have std 4.6 (cross-entropy 5.3, not 2.3) and
        # a one-epoch Fashion-MNIST run of B0 ended at 44% (68.5% with this). U(+-1/sqrt(max(classes,
        # features))): 0.028 for 1000 classes on B0's 1280 features, 1/sqrt(classes) above that.
        bound = 1.0 / math.sqrt(max(num_classes, head_chs))
        nn.init.uniform_(self.classifier[1].weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def check_phi(phi: object) -> float:
    """Validate a compound coefficient (:data:`edgecnn.limits.PHI`)."""
    return float(PHI.check(phi))


def phi_resolution(knobs: dict) -> int:
    """Input resolution of the ``efficientnet`` variant with compound coefficient ``knobs['phi']``."""
    return round(224 * GAMMA ** check_phi(knobs["phi"]))


def efficientnet_phi(num_classes: int = 1000, in_chans: int = 3, phi: float = 0.0) -> EfficientNet:
    """EfficientNet scaled from B0 by compound coefficient ``phi`` (width 1.1**phi, depth 1.2**phi)."""
    phi = check_phi(phi)
    return EfficientNet(BETA ** phi, ALPHA ** phi, 0.2, num_classes=num_classes, in_chans=in_chans)


_PAPER = "Tan & Le 2019, arXiv:1905.11946"
for _name, (_width, _depth, _res, _dropout) in B_VARIANTS.items():
    register(ModelSpec(
        name=f"efficientnet_{_name}", family="efficientnet",
        builder=partial(EfficientNet, _width, _depth, _dropout,
                        **(TF_BN if _name in ("b5", "b6", "b7") else TORCH_BN)),
        default_res=_res, min_res=32, crop_pct=_res / (_res + 32), aliases=(f"efficientnet{_name}",),
        paper=_PAPER))
register(ModelSpec(
    name="efficientnet", family="efficientnet", builder=efficientnet_phi, default_res=224, min_res=32,
    tunable={"phi": 0.0}, res_for=phi_resolution, paper=_PAPER))
for _name, (_width, _depth, _res, _dropout) in LITE_VARIANTS.items():
    register(ModelSpec(
        name=f"efficientnet_{_name}", family="efficientnet_lite",
        builder=partial(EfficientNet, _width, _depth, _dropout, lite=True, **TF_BN),
        default_res=_res, min_res=32, crop_pct=_res / (_res + 32), aliases=(f"efficientnet{_name}",),
        mean=LITE_MEAN, std=LITE_STD,
        paper=f"{_PAPER}; Lite: github.com/tensorflow/tpu models/official/efficientnet/lite (2020)"))
