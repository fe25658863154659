"""SqueezeNet (Iandola et al., "SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and
<0.5MB model size", 2016), versions 1.0 (the paper's) and 1.1 (2.4x fewer MACs, same accuracy).

A stem conv, :class:`Fire` modules separated by ceil-mode max pools, then dropout -> 1x1 conv to
``num_classes`` -> ReLU -> global average pool (no fully connected layer). Module layout and
state_dict keys are torchvision's ``squeezenet1_0`` / ``squeezenet1_1``.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from edgecnn.models.layers import Fire
from edgecnn.models.registry import ModelSpec, register

POOL = "M"  # 3x3 stride-2 ceil-mode max pool
# stem (channels, kernel), then fire modules (squeeze, expand 1x1, expand 3x3) and pools
VERSIONS = {
    "1_0": ((96, 7), (POOL, (16, 64, 64), (16, 64, 64), (32, 128, 128), POOL, (32, 128, 128),
                      (48, 192, 192), (48, 192, 192), (64, 256, 256), POOL, (64, 256, 256))),
    "1_1": ((64, 3), (POOL, (16, 64, 64), (16, 64, 64), POOL, (32, 128, 128), (32, 128, 128), POOL,
                      (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256))),
}


class SqueezeNet(nn.Module):
    def __init__(self, version: str, num_classes: int = 1000, in_chans: int = 3,
                 dropout: float = 0.5) -> None:
        super().__init__()
        (stem_chs, stem_kernel), layers = VERSIONS[version]
        features: list[nn.Module] = [nn.Conv2d(in_chans, stem_chs, stem_kernel, stride=2),
                                     nn.ReLU(inplace=True)]
        in_chs = stem_chs
        for layer in layers:
            if layer == POOL:
                features.append(nn.MaxPool2d(3, 2, ceil_mode=True))
            else:
                features.append(Fire(in_chs, *layer))
                in_chs = layer[1] + layer[2]
        self.features = nn.Sequential(*features)
        final_conv = nn.Conv2d(in_chs, num_classes, 1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), final_conv, nn.ReLU(inplace=True),
                                        nn.AdaptiveAvgPool2d(1))
        # torchvision's initialisation: Kaiming-uniform convs, N(0, 0.01) classifier, zero biases
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m is final_conv:
                    nn.init.normal_(m.weight, 0.0, 0.01)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


for _version, _min_res in (("1_0", 21), ("1_1", 17)):  # smallest input whose last fire map is >= 1x1
    register(ModelSpec(
        name=f"squeezenet{_version}", family="squeezenet", builder=partial(SqueezeNet, _version),
        default_res=224, min_res=_min_res, aliases=(f"squeezenet_{_version}",),
        paper="Iandola et al. 2016, arXiv:1602.07360"))
