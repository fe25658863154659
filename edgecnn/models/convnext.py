"""ConvNeXt (Liu et al., "A ConvNet for the 2020s", 2022): a ResNet modernised towards vision
transformers - patchify stem, 7x7 depthwise convolutions, inverted bottleneck MLPs with GELU,
LayerNorm, layer scale and stochastic depth.

Module layout and state_dict keys are torchvision's ``convnext_*``. ``drop_path_rate`` is the
stochastic-depth probability of the last block (rising linearly from 0 over the blocks), fixed per
variant at the paper's training values, 0.1/0.4/0.5 for T/S/B; ``layer_scale`` initialises the
per-channel residual scale.
"""

from __future__ import annotations

import torch
from torch import nn

from edgecnn.errors import EdgeCNNError
from edgecnn.models.layers import DropPath, check_rate
from edgecnn.models.registry import ModelSpec, register

# name: (channels per stage, blocks per stage, paper's drop-path rate)
CONFIGS = {
    "convnext_tiny": ((96, 192, 384, 768), (3, 3, 9, 3), 0.1),
    "convnext_small": ((96, 192, 384, 768), (3, 3, 27, 3), 0.4),
    "convnext_base": ((128, 256, 512, 1024), (3, 3, 27, 3), 0.5),
}


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = nn.functional.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Permute(nn.Module):
    def __init__(self, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


class CNBlock(nn.Module):
    """7x7 depthwise conv -> LayerNorm -> Linear 4x -> GELU -> Linear, scaled, plus the input."""

    def __init__(self, dim: int, layer_scale: float, drop_path: float) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, 7, padding=3, groups=dim), Permute((0, 2, 3, 1)),
            nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim),
            Permute((0, 3, 1, 2)))
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), layer_scale))
        self.stochastic_depth = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.stochastic_depth(self.layer_scale * self.block(x))


class ConvNeXt(nn.Module):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3,
                 dims: tuple[int, ...] = (96, 192, 384, 768), depths: tuple[int, ...] = (3, 3, 9, 3),
                 drop_path_rate: float = 0.1, layer_scale: float = 1e-6) -> None:
        super().__init__()
        drop_path_rate = check_rate("drop_path_rate", drop_path_rate)
        if isinstance(layer_scale, bool) or not isinstance(layer_scale, (int, float)) or layer_scale <= 0:
            raise EdgeCNNError(f"layer_scale must be > 0, got {layer_scale!r}")
        features: list[nn.Module] = [nn.Sequential(nn.Conv2d(in_chans, dims[0], 4, 4),
                                                   LayerNorm2d(dims[0], eps=1e-6))]
        total, index = sum(depths), 0
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            blocks = []
            for _ in range(depth):
                blocks.append(CNBlock(dim, layer_scale, drop_path_rate * index / max(total - 1, 1)))
                index += 1
            features.append(nn.Sequential(*blocks))
            if i + 1 < len(dims):
                features.append(nn.Sequential(LayerNorm2d(dim, eps=1e-6),
                                              nn.Conv2d(dim, dims[i + 1], 2, 2)))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(LayerNorm2d(dims[-1], eps=1e-6), nn.Flatten(1),
                                        nn.Linear(dims[-1], num_classes))
        for m in self.modules():  # the paper's initialisation: truncated normal, std 0.02
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.avgpool(self.features(x)))


for _name, (_dims, _depths, _dpr) in CONFIGS.items():
    register(ModelSpec(
        name=_name, family="convnext", builder=ConvNeXt, default_res=224,
        # Unpadded 4x4/4 stem and three 2x2/2 downsamplers: 32 px is the smallest input.
        min_res=32, knobs={"dims": _dims, "depths": _depths, "drop_path_rate": _dpr},
        paper="Liu et al. 2022, arXiv:2201.03545"))
