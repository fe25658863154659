"""Blocks shared by the model families, written once.

Module layouts (the order of children inside each ``nn.Sequential``) follow torchvision, so that
state_dict keys match torchvision's released checkpoints wherever a family has one.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from edgecnn.errors import EdgeCNNError
from edgecnn.limits import ALPHA

ActLayer = Callable[..., nn.Module]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to the nearest multiple of ``divisor`` without losing more than 10%.

    This is the rounding of the MobileNetV2 reference code, reused by V3, EfficientNet and others.
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBNAct(nn.Sequential):
    """Conv2d -> BatchNorm2d -> activation ("same" padding), torchvision's ``Conv2dNormActivation``.

    ``act_layer=None`` leaves the activation out (a linear bottleneck); ``norm=False`` drops the
    BatchNorm and gives the convolution a bias.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1,
                 groups: int = 1, act_layer: ActLayer | None = nn.ReLU, norm: bool = True,
                 dilation: int = 1, padding: int | None = None, bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1, inplace: bool | None = True) -> None:
        if padding is None:
            padding = (kernel_size - 1) // 2 * dilation
        layers: list[nn.Module] = [nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding,
                                             dilation=dilation, groups=groups, bias=not norm)]
        if norm:
            layers.append(nn.BatchNorm2d(out_chs, eps=bn_eps, momentum=bn_momentum))
        if act_layer is not None:
            layers.append(act_layer(inplace=inplace) if inplace is not None else act_layer())
        super().__init__(*layers)
        self.out_channels = out_chs


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018), torchvision's ``SqueezeExcitation`` layout.

    Global average pool -> 1x1 conv ``fc1`` to ``squeeze_chs`` -> act -> 1x1 conv ``fc2`` -> gate.
    """

    def __init__(self, in_chs: int, squeeze_chs: int, act_layer: ActLayer = nn.ReLU,
                 gate_layer: ActLayer = nn.Sigmoid) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(in_chs, squeeze_chs, 1)
        self.fc2 = nn.Conv2d(squeeze_chs, in_chs, 1)
        self.activation = act_layer()
        self.scale_activation = gate_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return x * scale


class DropPath(nn.Module):
    """Stochastic depth per sample (Huang et al. 2016): zero a residual branch with probability ``p``.

    Same behaviour as torchvision's ``StochasticDepth(p, "row")``; an identity at eval time.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class InvertedResidual(nn.Module):
    """MobileNetV2's inverted residual with linear bottleneck (torchvision layout: ``self.conv``).

    1x1 expand (skipped when ``expand_ratio == 1``) -> 3x3 depthwise -> 1x1 linear projection;
    identity shortcut when stride is 1 and channel counts match.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, expand_ratio: float,
                 act_layer: ActLayer = nn.ReLU6) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = int(round(in_chs * expand_ratio))
        self.use_res_connect = stride == 1 and in_chs == out_chs
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(in_chs, hidden, 1, act_layer=act_layer))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act_layer=act_layer),
            nn.Conv2d(hidden, out_chs, 1, bias=False),
            nn.BatchNorm2d(out_chs),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


def init_weights(model: nn.Module, linear_std: float = 0.01, conv_mode: str = "fan_out") -> None:
    """torchvision's initialisation: convs Kaiming-normal over ``conv_mode``; BatchNorm ones and
    zeros; Linear normal(0, ``linear_std``).

    The depthwise families pass ``conv_mode="fan_in"`` (He et al. 2015's forward rule): PyTorch
    counts a grouped conv's fan-out over all its output channels, so torchvision's fan-out rule gives
    a C-channel depthwise 3x3 conv std sqrt(2 / 9C) instead of sqrt(2 / 9), and with eval-mode
    BatchNorm (running variance 1) a random MobileNetV1 gave logits of ~1e-18.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode=conv_mode)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, linear_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class BasicConv2d(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d (eps 1e-3) -> ReLU with torchvision's Inception key names.

    GoogLeNet and Inception v3 name the parts ``conv`` and ``bn`` (not ``0``/``1`` as in
    :class:`ConvBNAct`), so their released checkpoints need this layout.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int | tuple[int, int] = 1,
                 stride: int = 1, padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_chs, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.relu(self.bn(self.conv(x)), inplace=True)


def check_rate(what: str, value: object) -> float:
    """Validate a dropout / drop-path probability in [0, 1) and return it as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise EdgeCNNError(f"{what} must be a probability in [0, 1), got {value!r}")
    return float(value)


def check_alpha(alpha: object, published: tuple[float, ...]) -> float:
    """Validate a width multiplier (:data:`edgecnn.limits.ALPHA`); the error names the published values."""
    return float(ALPHA.check(alpha, f"published values are {', '.join(map(str, published))}"))


class MBConv(nn.Module):
    """Mobile inverted bottleneck of MnasNet, MobileNetV3 and EfficientNet (torchvision layout).

    ``self.block``: 1x1 expand to ``exp_chs`` (skipped when equal to ``in_chs``) -> k x k depthwise
    -> optional squeeze-excite with ``se_chs`` channels -> 1x1 linear projection. Identity shortcut
    (through :class:`DropPath` with probability ``drop_path``) when stride is 1 and channels match.
    """

    def __init__(self, in_chs: int, exp_chs: int, out_chs: int, kernel_size: int, stride: int,
                 act_layer: ActLayer, se_chs: int | None = None, se_act: ActLayer = nn.ReLU,
                 se_gate: ActLayer = nn.Sigmoid, drop_path: float = 0.0, bn_eps: float = 1e-5,
                 bn_momentum: float = 0.1) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        bn = {"bn_eps": bn_eps, "bn_momentum": bn_momentum}
        layers: list[nn.Module] = []
        if exp_chs != in_chs:
            layers.append(ConvBNAct(in_chs, exp_chs, 1, act_layer=act_layer, **bn))
        layers.append(ConvBNAct(exp_chs, exp_chs, kernel_size, stride, groups=exp_chs,
                                act_layer=act_layer, **bn))
        if se_chs:
            layers.append(SqueezeExcite(exp_chs, se_chs, act_layer=se_act, gate_layer=se_gate))
        layers.append(ConvBNAct(exp_chs, out_chs, 1, act_layer=None, **bn))
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = DropPath(drop_path)
        self.use_res_connect = stride == 1 and in_chs == out_chs
        self.out_channels = out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + self.stochastic_depth(out) if self.use_res_connect else out


class Fire(nn.Module):
    """SqueezeNet's fire module (Iandola et al. 2016), torchvision layout.

    1x1 ``squeeze`` conv -> ReLU, then 1x1 ``expand1x1`` and 3x3 ``expand3x3`` convs (each -> ReLU)
    concatenated along channels: ``expand1x1_chs + expand3x3_chs`` output channels.
    """

    def __init__(self, in_chs: int, squeeze_chs: int, expand1x1_chs: int, expand3x3_chs: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(in_chs, squeeze_chs, 1)
        self.squeeze_activation = nn.ReLU(inplace=True)
        self.expand1x1 = nn.Conv2d(squeeze_chs, expand1x1_chs, 1)
        self.expand1x1_activation = nn.ReLU(inplace=True)
        self.expand3x3 = nn.Conv2d(squeeze_chs, expand3x3_chs, 3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([self.expand1x1_activation(self.expand1x1(x)),
                          self.expand3x3_activation(self.expand3x3(x))], 1)


class PooledClassifier(nn.Module):
    """Base for torchvision's ``features`` -> ``avgpool`` -> flatten -> ``classifier`` networks
    (AlexNet, VGG); subclasses build those three modules."""

    features: nn.Module
    avgpool: nn.Module
    classifier: nn.Module

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class SelfAttention(nn.Module):
    """Multi-head self-attention written with plain matmuls and a softmax (no fused kernels).

    Parameters and state_dict keys are ``nn.MultiheadAttention``'s (``in_proj_weight`` stacking the
    query, key and value projections, ``in_proj_bias``, ``out_proj``), so torchvision's ViT weights
    load unchanged, but the graph is linear -> reshape/transpose -> batched matmul -> softmax ->
    batched matmul -> linear, which LiteRT lowers op by op. Input and output (batch, tokens, dim).
    The two token-by-token matmuls cost ``2 * tokens**2 * dim`` MACs per image, counted by
    :func:`edgecnn.stats.model_stats` like any matrix product.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise EdgeCNNError(f"the width ({dim}) must be a multiple of the number of heads ({num_heads})")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)  # nn.MultiheadAttention's initialisation
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        h = self.num_heads
        q, k, v = nn.functional.linear(x, self.in_proj_weight, self.in_proj_bias).split(c, dim=-1)
        q = (q * self.scale).reshape(b, n, h, c // h).permute(0, 2, 1, 3)  # (b, h, n, c/h)
        k = k.reshape(b, n, h, c // h).permute(0, 2, 3, 1)  # (b, h, c/h, n): no second transpose
        v = v.reshape(b, n, h, c // h).permute(0, 2, 1, 3)
        attn = torch.matmul(q, k).softmax(dim=-1)  # (b, h, n, n)
        out = torch.matmul(attn, v).permute(0, 2, 1, 3).reshape(b, n, c)
        return self.out_proj(out)


class TransformerBlock(nn.Module):
    """Pre-norm transformer encoder layer, torchvision's ViT ``EncoderBlock`` layout.

    ``x + attention(ln_1(x))``, then ``+ mlp(ln_2(x))`` with ``mlp`` = Linear(dim, mlp_dim) -> act
    -> Dropout -> Linear(mlp_dim, dim) -> Dropout (keys ``mlp.0``, ``mlp.3``).
    """

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, dropout: float = 0.0,
                 act_layer: ActLayer = nn.GELU, norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=norm_eps)
        self.self_attention = SelfAttention(dim, num_heads)
        self.dropout = nn.Dropout(dropout)
        self.ln_2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), act_layer(), nn.Dropout(dropout),
                                 nn.Linear(mlp_dim, dim), nn.Dropout(dropout))
        for m in self.mlp:
            if isinstance(m, nn.Linear):  # torchvision's MLPBlock initialisation
                nn.init.xavier_uniform_(m.weight)
                nn.init.normal_(m.bias, std=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.self_attention(self.ln_1(x)))
        return x + self.mlp(self.ln_2(x))
