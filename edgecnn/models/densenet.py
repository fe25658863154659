"""DenseNet (Huang et al., "Densely Connected Convolutional Networks", 2017): DenseNet-BC, where each
layer is BN-ReLU-1x1 (``bn_size`` x growth) then BN-ReLU-3x3 (growth) and sees every earlier feature
map of its block; transitions halve channels and resolution.

Module layout and state_dict keys are torchvision's current ``densenet*`` (``norm1``, ``conv1``, ...).
torchvision's released files use the older ``norm.1``-style names; renaming them is the weight
loader's job.
"""

from __future__ import annotations

import torch
from torch import nn

from edgecnn.models.layers import check_rate, init_weights
from edgecnn.models.registry import ModelSpec, register

# name: (growth rate, layers per dense block, stem channels)
CONFIGS = {
    "densenet121": (32, (6, 12, 24, 16), 64),
    "densenet161": (48, (6, 12, 36, 24), 96),
    "densenet169": (32, (6, 12, 32, 32), 64),
    "densenet201": (32, (6, 12, 48, 32), 64),
}


class DenseLayer(nn.Module):
    def __init__(self, in_chs: int, growth_rate: int, bn_size: int, drop_rate: float) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_chs)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_chs, bn_size * growth_rate, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, padding=1, bias=False)
        self.drop_rate = drop_rate

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))
        x = self.conv2(self.relu2(self.norm2(x)))
        return nn.functional.dropout(x, self.drop_rate, self.training) if self.drop_rate else x


class DenseBlock(nn.ModuleDict):
    def __init__(self, n: int, in_chs: int, growth_rate: int, bn_size: int, drop_rate: float) -> None:
        super().__init__({f"denselayer{i + 1}": DenseLayer(in_chs + i * growth_rate, growth_rate,
                                                            bn_size, drop_rate) for i in range(n)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_chs)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.pool = nn.AvgPool2d(2, 2)


class DenseNet(nn.Module):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, growth_rate: int = 32,
                 block_config: tuple[int, ...] = (6, 12, 24, 16), num_init_features: int = 64,
                 bn_size: int = 4, drop_rate: float = 0.0) -> None:
        super().__init__()
        drop_rate = check_rate("drop_rate", drop_rate)
        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv2d(in_chans, num_init_features, 7, 2, 3, bias=False))
        self.features.add_module("norm0", nn.BatchNorm2d(num_init_features))
        self.features.add_module("relu0", nn.ReLU(inplace=True))
        self.features.add_module("pool0", nn.MaxPool2d(3, 2, 1))
        chs = num_init_features
        for i, n in enumerate(block_config):
            self.features.add_module(f"denseblock{i + 1}",
                                     DenseBlock(n, chs, growth_rate, bn_size, drop_rate))
            chs += n * growth_rate
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}", Transition(chs, chs // 2))
                chs //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(chs))
        self.classifier = nn.Linear(chs, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.relu(self.features(x), inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.forward_features(x), 1)
        return self.classifier(torch.flatten(x, 1))


for _name, (_growth, _blocks, _init) in CONFIGS.items():
    register(ModelSpec(
        name=_name, family="densenet", builder=DenseNet, default_res=224,
        # Three unpadded 2x2 average pools after the stride-4 stem: 29 px is the smallest input
        # that leaves them a 2x2 map (29 -> 15 -> 8 -> 4 -> 2 -> 1).
        min_res=29,
        knobs={"growth_rate": _growth, "block_config": _blocks, "num_init_features": _init},
        paper="Huang et al. 2017, arXiv:1608.06993"))
