"""ShuffleNetV2 (Ma et al., "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture
Design", 2018), widths x0.5, x1.0, x1.5, x2.0.

Stem conv + max pool, three stages of :class:`ShuffleUnit` (channel split, 1x1 -> 3x3 depthwise
-> 1x1 on one half, concatenation, channel shuffle), a 1x1 conv, global average pool, Linear.
Module layout and state_dict keys are torchvision's ``shufflenet_v2_x*``.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from edgecnn.models.registry import ModelSpec, register

STAGE_REPEATS = (4, 8, 4)
# output channels of stem, stage2, stage3, stage4 and the final 1x1 conv (paper Table 5)
WIDTHS = {
    "x0_5": (24, 48, 96, 192, 1024),
    "x1_0": (24, 116, 232, 464, 1024),
    "x1_5": (24, 176, 352, 704, 1024),
    "x2_0": (24, 244, 488, 976, 2048),
}


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` equal groups (ShuffleNet's channel shuffle)."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def conv_bn(in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1,
            depthwise: bool = False, relu: bool = True) -> list[nn.Module]:
    """Conv (no bias) -> BatchNorm [-> ReLU] as a flat list, torchvision's unit-internal layout."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, bias=False,
                  groups=in_chs if depthwise else 1),
        nn.BatchNorm2d(out_chs)]
    return layers + [nn.ReLU(inplace=True)] if relu else layers


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit (torchvision's ``InvertedResidual``).

    Stride 1: split channels in half, transform one half with ``branch2``, concatenate, shuffle.
    Stride 2: both ``branch1`` (3x3 depthwise -> 1x1) and ``branch2`` see the full input, so the
    unit halves the resolution and sets the channel count to ``out_chs``.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int) -> None:
        super().__init__()
        branch_chs = out_chs // 2
        if stride == 1 and in_chs != 2 * branch_chs:
            raise ValueError(f"a stride-1 unit needs in_chs == out_chs, got {in_chs} -> {out_chs}")
        self.stride = stride
        self.branch1 = nn.Sequential(
            *conv_bn(in_chs, in_chs, 3, stride, depthwise=True, relu=False),
            *conv_bn(in_chs, branch_chs)) if stride > 1 else nn.Sequential()
        self.branch2 = nn.Sequential(
            *conv_bn(in_chs if stride > 1 else branch_chs, branch_chs),
            *conv_bn(branch_chs, branch_chs, 3, stride, depthwise=True, relu=False),
            *conv_bn(branch_chs, branch_chs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, widths: tuple[int, ...], num_classes: int = 1000, in_chans: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(*conv_bn(in_chans, widths[0], 3, 2))
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_chs = widths[0]
        for i, (repeats, out_chs) in enumerate(zip(STAGE_REPEATS, widths[1:4])):
            units = [ShuffleUnit(in_chs, out_chs, 2)]
            units += [ShuffleUnit(out_chs, out_chs, 1) for _ in range(repeats - 1)]
            setattr(self, f"stage{i + 2}", nn.Sequential(*units))
            in_chs = out_chs
        self.conv5 = nn.Sequential(*conv_bn(in_chs, widths[-1]))
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.conv5(self.stage4(self.stage3(self.stage2(x))))
        return self.fc(x.mean((2, 3)))


for _width, _channels in WIDTHS.items():
    register(ModelSpec(
        name=f"shufflenet_v2_{_width}", family="shufflenet_v2",
        builder=partial(ShuffleNetV2, _channels), default_res=224, min_res=32,
        aliases=(f"shufflenetv2_{_width}",),
        paper="Ma et al. 2018, arXiv:1807.11164"))
