"""MobileViT (Mehta & Rastegari, "MobileViT: Light-weight, General-purpose, and Mobile-friendly
Vision Transformer", ICLR 2022): XXS, XS and S.

A MobileNetV2 body (inverted residuals with SiLU) whose last three stages end in a MobileViT block:
3x3 conv -> 1x1 conv to the transformer width ``d`` -> unfold into 2x2 patches -> ``L`` transformer
layers (attention across the patches that share a pixel position, 4 heads, MLP 2d with SiLU) ->
LayerNorm -> fold back -> 1x1 conv to the stage width -> concatenated with the block's input -> 3x3
fusion conv. Channel and layer counts are the paper's Table 4 (and Apple's ml-cvnets configs); the
parameter counts equal timm's ``mobilevit_xxs/xs/s`` for 1000 classes (1,272,024 / 2,317,848 /
5,578,632; the paper rounds to 1.3M / 2.3M / 5.6M).

Default input 256 px (the paper's). A feature map whose side is odd at a MobileViT block (e.g.
7x7 at a 224 px input) is resized bilinearly to the next even size and back, as the reference code
does. MACs (:func:`edgecnn.stats.model_stats`) include the attention matmuls. Inputs are pixels in
[0, 1] without mean/std normalisation, as the paper trains.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from edgecnn.models.layers import ConvBNAct, InvertedResidual, TransformerBlock, init_weights
from edgecnn.models.registry import ModelSpec, register

PATCH = 2  # patch height and width of every MobileViT block
HEADS = 4
# name: (stem, layer1, layer2, (layer3, 4, 5 channels), (transformer widths d), MV2 expansion, head)
CONFIGS = {
    "mobilevit_xxs": (16, 16, 24, (48, 64, 80), (64, 80, 96), 2, 320),
    "mobilevit_xs": (16, 32, 48, (64, 80, 96), (96, 120, 144), 4, 384),
    "mobilevit_s": (16, 32, 64, (96, 128, 160), (144, 192, 240), 4, 640),
}
DEPTHS = (2, 4, 3)  # transformer layers L in the blocks of layers 3, 4, 5
LAYER2_BLOCKS = 3


class MobileViTBlock(nn.Module):
    """Local 3x3 + 1x1 convs, global attention over 2x2-patch positions, projection and fusion."""

    def __init__(self, chs: int, dim: int, depth: int) -> None:
        super().__init__()
        self.conv_kxk = ConvBNAct(chs, chs, 3, act_layer=nn.SiLU)
        self.conv_1x1 = nn.Conv2d(chs, dim, 1, bias=False)
        self.transformer = nn.Sequential(*(
            TransformerBlock(dim, HEADS, 2 * dim, act_layer=nn.SiLU, norm_eps=1e-5) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.conv_proj = ConvBNAct(dim, chs, 1, act_layer=nn.SiLU)
        self.conv_fusion = ConvBNAct(2 * chs, chs, 3, act_layer=nn.SiLU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_1x1(self.conv_kxk(x))
        b, d, h, w = y.shape
        eh, ew = h + h % PATCH, w + w % PATCH
        if (eh, ew) != (h, w):
            y = nn.functional.interpolate(y, size=(eh, ew), mode="bilinear", align_corners=False)
        y = fold(self.norm(self.transformer(unfold(y))), b, eh // PATCH, ew // PATCH)
        if (eh, ew) != (h, w):
            y = nn.functional.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
        return self.conv_fusion(torch.cat([x, self.conv_proj(y)], dim=1))


def unfold(x: torch.Tensor) -> torch.Tensor:
    """(b, d, h, w) -> (b * 4, h * w / 4, d): one sequence of patches per position inside a 2x2 patch.

    Written as transposes of at most 5 dimensions (LiteRT's limit on some delegates is 5 or 6).
    """
    b, d, h, w = x.shape
    gh, gw = h // PATCH, w // PATCH
    x = x.permute(0, 2, 3, 1).reshape(b, gh, PATCH, gw, PATCH * d)  # (b, gh, ph, gw, pw*d)
    x = x.permute(0, 2, 1, 3, 4).reshape(b * PATCH, gh * gw, PATCH, d)  # (b*ph, gh*gw, pw, d)
    return x.permute(0, 2, 1, 3).reshape(b * PATCH * PATCH, gh * gw, d)


def fold(y: torch.Tensor, b: int, gh: int, gw: int) -> torch.Tensor:
    """The inverse of :func:`unfold`: (b * 4, gh * gw, d) back to (b, d, 2 * gh, 2 * gw)."""
    d = y.shape[-1]
    y = y.reshape(b * PATCH, PATCH, gh * gw, d).permute(0, 2, 1, 3)  # (b*ph, gh*gw, pw, d)
    y = y.reshape(b, PATCH, gh, gw, PATCH * d).permute(0, 2, 1, 3, 4)  # (b, gh, ph, gw, pw*d)
    return y.reshape(b, gh * PATCH, gw * PATCH, d).permute(0, 3, 1, 2)


class MobileViT(nn.Module):
    def __init__(self, stem: int, layer1: int, layer2: int, chs: tuple[int, int, int],
                 dims: tuple[int, int, int], expansion: int, head: int, num_classes: int = 1000,
                 in_chans: int = 3, dropout: float = 0.1) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            ConvBNAct(in_chans, stem, 3, 2, act_layer=nn.SiLU),
            InvertedResidual(stem, layer1, 1, expansion, act_layer=nn.SiLU),
            nn.Sequential(*(InvertedResidual(layer1 if i == 0 else layer2, layer2, 2 if i == 0 else 1,
                                             expansion, act_layer=nn.SiLU) for i in range(LAYER2_BLOCKS)))]
        in_chs = layer2
        for out_chs, dim, depth in zip(chs, dims, DEPTHS):
            layers.append(nn.Sequential(InvertedResidual(in_chs, out_chs, 2, expansion, act_layer=nn.SiLU),
                                        MobileViTBlock(out_chs, dim, depth)))
            in_chs = out_chs
        layers.append(ConvBNAct(in_chs, head, 1, act_layer=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(head, num_classes))
        init_weights(self, linear_std=0.02, conv_mode="fan_in")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


for _name, _cfg in CONFIGS.items():
    register(ModelSpec(
        name=_name, family="mobilevit", builder=partial(MobileViT, *_cfg),
        default_res=256, min_res=32, crop_pct=0.9, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
        paper="Mehta & Rastegari 2022, arXiv:2110.02178"))
