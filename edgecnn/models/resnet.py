"""ResNet (He et al., "Deep Residual Learning for Image Recognition", 2016) and SE-ResNet-50
(Hu et al., "Squeeze-and-Excitation Networks", 2018).

Module layout and state_dict keys are torchvision's ``resnet*``; torchvision puts the stride of a
bottleneck on its 3x3 convolution ("ResNet v1.5", 4.09 GMACs for ResNet-50). SE-ResNet-50 follows
the SENet paper's released Caffe model instead: stride on the first 1x1 convolution (as in the
original ResNet paper, 3.86 GMACs) plus a squeeze-and-excitation gate (reduction 16) on each
residual branch before the addition, giving the paper's 28.09M parameters and 3.87 GMACs.
"""

from __future__ import annotations

import torch
from torch import nn

from edgecnn.models.layers import SqueezeExcite, init_weights
from edgecnn.models.registry import ModelSpec, register

# name: (block type, blocks per stage, SE reduction or 0, stride on the first 1x1 conv)
CONFIGS = {
    "resnet18": ("basic", (2, 2, 2, 2), 0, False),
    "resnet34": ("basic", (3, 4, 6, 3), 0, False),
    "resnet50": ("bottleneck", (3, 4, 6, 3), 0, False),
    "resnet101": ("bottleneck", (3, 4, 23, 3), 0, False),
    "resnet152": ("bottleneck", (3, 8, 36, 3), 0, False),
    "se_resnet50": ("bottleneck", (3, 4, 6, 3), 16, True),
}


def _downsample(in_chs: int, out_chs: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and in_chs == out_chs:
        return None
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride, bias=False), nn.BatchNorm2d(out_chs))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, in_chs: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _downsample(in_chs, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 -> 1x1 expand (x4), optionally gated by squeeze-and-excitation."""

    expansion = 4

    def __init__(self, in_chs: int, planes: int, stride: int = 1, se_reduction: int = 0,
                 stride_in_1x1: bool = False) -> None:
        super().__init__()
        out_chs = planes * self.expansion
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(in_chs, planes, 1, s1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, s3, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_chs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.se = SqueezeExcite(out_chs, out_chs // se_reduction) if se_reduction else None
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_chs, out_chs, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        return self.relu(out + shortcut)


class ResNet(nn.Module):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, block: str = "basic",
                 layers: tuple[int, ...] = (2, 2, 2, 2), se_reduction: int = 0,
                 stride_in_1x1: bool = False) -> None:
        super().__init__()
        block_cls = BasicBlock if block == "basic" else Bottleneck
        extra = {} if block == "basic" else {"se_reduction": se_reduction, "stride_in_1x1": stride_in_1x1}
        self.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_chs = 64
        for i, n in enumerate(layers):
            planes = 64 * 2 ** i
            blocks = []
            for j in range(n):
                blocks.append(block_cls(in_chs, planes, 2 if i > 0 and j == 0 else 1, **extra))
                in_chs = planes * block_cls.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_chs, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.forward_features(x)), 1))


for _name, (_block, _layers, _se, _s1x1) in CONFIGS.items():
    register(ModelSpec(
        name=_name, family="resnet", builder=ResNet, default_res=224,
        # Padded everywhere, so any size runs; below the total stride of 32 the last stage sees
        # little but padding, hence 32 as for the other stride-32 families.
        min_res=32,
        knobs={"block": _block, "layers": _layers, "se_reduction": _se, "stride_in_1x1": _s1x1},
        aliases=(_name.replace("_", ""),) if _se else (),
        paper="Hu et al. 2018, arXiv:1709.01507" if _se else "He et al. 2016, arXiv:1512.03385"))
