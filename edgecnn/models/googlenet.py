"""GoogLeNet / Inception v1 (Szegedy et al., "Going Deeper with Convolutions", 2015).

Module layout and state_dict keys are torchvision's ``googlenet``: BatchNorm after every convolution
(:class:`BasicConv2d`), and - like torchvision, to keep its checkpoint loadable - a 3x3 convolution
where the paper's "5x5" branch has a 5x5. The two auxiliary classifiers exist only with
``aux_logits=True``; they are used in training (the forward returns ``GoogLeNetOutputs``) and skipped
in eval/export, where the forward returns the logits alone.

Preprocessing: the released weights are Google's, trained on inputs scaled to [-1, 1]; torchvision
re-scales ImageNet-normalised inputs inside the model (``transform_input``). edgecnn instead records
mean = std = 0.5 for this model, so the exported graph carries no extra arithmetic.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from edgecnn.errors import EdgeCNNError
from edgecnn.models.layers import BasicConv2d, check_rate, init_weights
from edgecnn.models.registry import ModelSpec, register

POOL = "M"
# Table 1 of the paper, per inception module: name, (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5,
# pool proj); "M" is a 3x3 stride-2 max pool (2x2 before inception 5a, as torchvision has it).
STAGES = (
    ("inception3a", (64, 96, 128, 16, 32, 32)),
    ("inception3b", (128, 128, 192, 32, 96, 64)),
    ("maxpool3", POOL),
    ("inception4a", (192, 96, 208, 16, 48, 64)),
    ("inception4b", (160, 112, 224, 24, 64, 64)),
    ("inception4c", (128, 128, 256, 24, 64, 64)),
    ("inception4d", (112, 144, 288, 32, 64, 64)),
    ("inception4e", (256, 160, 320, 32, 128, 128)),
    ("maxpool4", POOL),
    ("inception5a", (256, 160, 320, 32, 128, 128)),
    ("inception5b", (384, 192, 384, 48, 128, 128)),
)
AUX_AFTER = {"inception4a": "aux1", "inception4d": "aux2"}


class GoogLeNetOutputs(NamedTuple):
    logits: torch.Tensor
    aux_logits2: torch.Tensor
    aux_logits1: torch.Tensor


class Inception(nn.Module):
    """Four parallel branches (1x1; 1x1->3x3; 1x1->3x3; 3x3 max pool->1x1), concatenated."""

    def __init__(self, in_chs: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int,
                 ch5x5: int, pool_proj: int) -> None:
        super().__init__()
        self.branch1 = BasicConv2d(in_chs, ch1x1, 1)
        self.branch2 = nn.Sequential(BasicConv2d(in_chs, ch3x3red, 1),
                                     BasicConv2d(ch3x3red, ch3x3, 3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(in_chs, ch5x5red, 1),
                                     BasicConv2d(ch5x5red, ch5x5, 3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True),
                                     BasicConv2d(in_chs, pool_proj, 1))
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier: 4x4 average pool -> 1x1 conv 128 -> FC 1024 -> dropout -> FC."""

    def __init__(self, in_chs: int, num_classes: int, dropout: float = 0.7) -> None:
        super().__init__()
        self.conv = BasicConv2d(in_chs, 128, 1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.conv(nn.functional.adaptive_avg_pool2d(x, (4, 4))), 1)
        return self.fc2(self.dropout(nn.functional.relu(self.fc1(x), inplace=True)))


class GoogLeNet(nn.Module):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, aux_logits: bool = False,
                 dropout: float = 0.2, aux_dropout: float = 0.7) -> None:
        super().__init__()
        if not isinstance(aux_logits, bool):
            raise EdgeCNNError(f"aux_logits must be True or False, got {aux_logits!r}")
        dropout, aux_dropout = check_rate("dropout", dropout), check_rate("aux_dropout", aux_dropout)
        self.aux_logits = aux_logits
        self.conv1 = BasicConv2d(in_chans, 64, 7, 2, 3)
        self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, 1)
        self.conv3 = BasicConv2d(64, 192, 3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        in_chs = 192
        self.stages: list[str] = []
        aux_in: dict[str, int] = {}
        for name, cfg in STAGES:
            if cfg == POOL:
                pool = nn.MaxPool2d(2 if name == "maxpool4" else 3, 2, ceil_mode=True)
                self.add_module(name, pool)
            else:
                self.add_module(name, Inception(in_chs, *cfg))
                in_chs = getattr(self, name).out_channels
                if name in AUX_AFTER:
                    aux_in[AUX_AFTER[name]] = in_chs
            self.stages.append(name)
        if aux_logits:  # registered after the trunk, as in torchvision's state_dict
            for aux_name, chs in sorted(aux_in.items()):
                self.add_module(aux_name, InceptionAux(chs, num_classes, aux_dropout))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_chs, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor | GoogLeNetOutputs:
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        aux: dict[str, torch.Tensor] = {}
        for name in self.stages:
            x = getattr(self, name)(x)
            if self.aux_logits and self.training and name in AUX_AFTER:
                aux[AUX_AFTER[name]] = getattr(self, AUX_AFTER[name])(x)
        logits = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        if aux:
            return GoogLeNetOutputs(logits, aux["aux2"], aux["aux1"])
        return logits


register(ModelSpec(
    name="googlenet", family="googlenet", builder=GoogLeNet, default_res=224, min_res=15,
    tunable={"aux_logits": False},
    aliases=("inception_v1", "inceptionv1"), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
    paper="Szegedy et al. 2015, arXiv:1409.4842"))
