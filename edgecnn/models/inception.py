"""Inception v3 (Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", 2016).

Module layout and state_dict keys are torchvision's ``inception_v3`` (27,161,264 parameters with the
auxiliary classifier, 23,834,568 without). The auxiliary head exists only with ``aux_logits=True``
and runs only in training (the forward then returns ``InceptionOutputs``); its 5x5 stride-3 pool and
5x5 conv need the 17x17 grid whole, so training with it takes 299 px inputs. Inference accepts
75 px and up. As for GoogLeNet, the released weights expect inputs scaled to [-1, 1], recorded here
as mean = std = 0.5 instead of torchvision's in-model ``transform_input``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from edgecnn.errors import EdgeCNNError
from edgecnn.models.layers import BasicConv2d, check_rate, init_weights
from edgecnn.models.registry import ModelSpec, register

F = nn.functional


def _conv_1xn(in_chs: int, out_chs: int, n: int, vertical: bool) -> BasicConv2d:
    """A factorised 1xn (or nx1 when ``vertical``) convolution with "same" padding."""
    k, p = ((n, 1), (n // 2, 0)) if vertical else ((1, n), (0, n // 2))
    return BasicConv2d(in_chs, out_chs, k, padding=p)


class InceptionA(nn.Module):
    """35x35 module: 1x1 | 1x1->5x5 | 1x1->3x3->3x3 | avg pool->1x1."""

    def __init__(self, in_chs: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_chs, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_chs, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_chs, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_chs, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(F.avg_pool2d(x, 3, 1, 1)),
        ], 1)


class InceptionB(nn.Module):
    """35 -> 17 grid reduction: 3x3/2 | 1x1->3x3->3x3/2 | max pool/2."""

    def __init__(self, in_chs: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_chs, 384, 3, 2)
        self.branch3x3dbl_1 = BasicConv2d(in_chs, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, 3, 2),
        ], 1)


class InceptionC(nn.Module):
    """17x17 module with 7x7 convolutions factorised into 1x7 and 7x1."""

    def __init__(self, in_chs: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_chs, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_chs, c7, 1)
        self.branch7x7_2 = _conv_1xn(c7, c7, 7, vertical=False)
        self.branch7x7_3 = _conv_1xn(c7, 192, 7, vertical=True)
        self.branch7x7dbl_1 = BasicConv2d(in_chs, c7, 1)
        self.branch7x7dbl_2 = _conv_1xn(c7, c7, 7, vertical=True)
        self.branch7x7dbl_3 = _conv_1xn(c7, c7, 7, vertical=False)
        self.branch7x7dbl_4 = _conv_1xn(c7, c7, 7, vertical=True)
        self.branch7x7dbl_5 = _conv_1xn(c7, 192, 7, vertical=False)
        self.branch_pool = BasicConv2d(in_chs, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for i in range(2, 6):
            bd = getattr(self, f"branch7x7dbl_{i}")(bd)
        return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(F.avg_pool2d(x, 3, 1, 1))], 1)


class InceptionD(nn.Module):
    """17 -> 8 grid reduction: 1x1->3x3/2 | 1x1->1x7->7x1->3x3/2 | max pool/2."""

    def __init__(self, in_chs: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_chs, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, 2)
        self.branch7x7x3_1 = BasicConv2d(in_chs, 192, 1)
        self.branch7x7x3_2 = _conv_1xn(192, 192, 7, vertical=False)
        self.branch7x7x3_3 = _conv_1xn(192, 192, 7, vertical=True)
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7x3_1(x)
        for i in range(2, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, 2)], 1)


class InceptionE(nn.Module):
    """8x8 module with expanded filter banks (parallel 1x3 and 3x1 outputs)."""

    def __init__(self, in_chs: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_chs, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_chs, 384, 1)
        self.branch3x3_2a = _conv_1xn(384, 384, 3, vertical=False)
        self.branch3x3_2b = _conv_1xn(384, 384, 3, vertical=True)
        self.branch3x3dbl_1 = BasicConv2d(in_chs, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _conv_1xn(384, 384, 3, vertical=False)
        self.branch3x3dbl_3b = _conv_1xn(384, 384, 3, vertical=True)
        self.branch_pool = BasicConv2d(in_chs, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(b3), self.branch3x3_2b(b3),
            self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd),
            self.branch_pool(F.avg_pool2d(x, 3, 1, 1)),
        ], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier on the 17x17 grid: 5x5/3 average pool -> 1x1 -> 5x5 conv -> FC."""

    def __init__(self, in_chs: int, num_classes: int) -> None:
        super().__init__()
        self.conv0 = BasicConv2d(in_chs, 128, 1)
        self.conv1 = BasicConv2d(128, 768, 5)
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < 17:
            raise EdgeCNNError("inception_v3's auxiliary head needs inputs of at least 299 px; "
                               "train smaller inputs with aux_logits=False")
        x = self.conv1(self.conv0(F.avg_pool2d(x, 5, 3)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class InceptionOutputs(NamedTuple):
    logits: torch.Tensor
    aux_logits: torch.Tensor


# (module name, class, constructor arguments after in_chs, output channels)
STAGES = (
    ("Mixed_5b", InceptionA, (32,), 256),
    ("Mixed_5c", InceptionA, (64,), 288),
    ("Mixed_5d", InceptionA, (64,), 288),
    ("Mixed_6a", InceptionB, (), 768),
    ("Mixed_6b", InceptionC, (128,), 768),
    ("Mixed_6c", InceptionC, (160,), 768),
    ("Mixed_6d", InceptionC, (160,), 768),
    ("Mixed_6e", InceptionC, (192,), 768),
    ("Mixed_7a", InceptionD, (), 1280),
    ("Mixed_7b", InceptionE, (), 2048),
    ("Mixed_7c", InceptionE, (), 2048),
)
AUX_AFTER = "Mixed_6e"


class InceptionV3(nn.Module):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, aux_logits: bool = False,
                 dropout: float = 0.5) -> None:
        super().__init__()
        if not isinstance(aux_logits, bool):
            raise EdgeCNNError(f"aux_logits must be True or False, got {aux_logits!r}")
        dropout = check_rate("dropout", dropout)
        self.aux_logits = aux_logits
        self.Conv2d_1a_3x3 = BasicConv2d(in_chans, 32, 3, 2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.maxpool1 = nn.MaxPool2d(3, 2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.maxpool2 = nn.MaxPool2d(3, 2)
        in_chs = 192
        for name, cls, args, out_chs in STAGES:
            self.add_module(name, cls(in_chs, *args))
            in_chs = out_chs
            if aux_logits and name == AUX_AFTER:
                self.AuxLogits = InceptionAux(in_chs, num_classes)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_chs, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor | InceptionOutputs:
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
                     "Conv2d_4a_3x3", "maxpool2"):
            x = getattr(self, name)(x)
        aux = None
        for name, *_ in STAGES:
            x = getattr(self, name)(x)
            if self.aux_logits and self.training and name == AUX_AFTER:
                aux = self.AuxLogits(x)
        logits = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        return logits if aux is None else InceptionOutputs(logits, aux)


register(ModelSpec(
    name="inception_v3", family="inception_v3", builder=InceptionV3, default_res=299, min_res=75,
    tunable={"aux_logits": False}, aliases=("inceptionv3",),
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
    paper="Szegedy et al. 2016, arXiv:1512.00567"))
