"""LeNet-5 (LeCun et al., "Gradient-Based Learning Applied to Document Recognition", Proc. IEEE 1998).

Two registered variants, one builder:

- ``lenet5`` is the paper's network: 32x32 input; C1 (6 maps, 5x5); S2, S4 subsampling layers that
  average each 2x2 block, multiply it by a trainable coefficient and add a trainable bias per map;
  C3 (16 maps, 5x5) connected to the S2 maps only through the sparse table of the paper's Table I;
  C5 (120 maps, 5x5 conv, 1x1 output); F6 (84 units); every layer up to F6 squashed by
  f(a) = 1.7159 tanh(2a/3); Euclidean RBF outputs whose +-1 parameter vectors are fixed. Its
  trainable parameters are 156 + 12 + 1,516 + 32 + 48,120 + 10,164 = 60,000, the paper's count
  exactly: the paper's output vectors were 7x12 bitmaps of the characters "chosen by hand and kept
  fixed", so they are a buffer here, not parameters. The bitmaps themselves are not published in a
  usable form; edgecnn uses fixed pseudo-random +-1 codes (seeded, stored in the state_dict) and
  returns the negative squared distances as logits, so argmax and cross-entropy work as usual.
- ``lenet5_dense`` is the common modern reading: C3 sees all six S2 maps, ReLU, 2x2 max pooling and a
  linear classifier: 61,706 parameters at 10 classes.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import nn

from edgecnn.models.layers import init_weights
from edgecnn.models.registry import ModelSpec, register

# Table I of the paper: the S2 maps each C3 map reads (six of three, nine of four, one of all six).
C3_TABLE = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)
RBF_SEED = 1998


class ScaledTanh(nn.Module):
    """The paper's squashing function f(a) = 1.7159 tanh(2a/3) (f(+-1) = +-1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))


class SparseConv2d(nn.Module):
    """A convolution where output map ``i`` reads only the input maps ``table[i]``.

    Consecutive outputs with the same fan-in form one grouped convolution over their input maps,
    gathered by static channel slices (no integer index tensors, which int8 quantisers choke on),
    so only the table's connections hold weights and count MACs.
    """

    def __init__(self, table: tuple[tuple[int, ...], ...], kernel_size: int) -> None:
        super().__init__()
        runs: list[list[tuple[int, ...]]] = []
        for row in table:
            if runs and len(runs[-1][0]) == len(row):
                runs[-1].append(row)
            else:
                runs.append([row])
        self.convs = nn.ModuleList(
            nn.Conv2d(len(run) * len(run[0]), len(run), kernel_size, groups=len(run)) for run in runs)
        self.slices = [_channel_slices([c for row in run for c in row]) for run in runs]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([conv(torch.cat([x[:, a:b] for a, b in slices], 1))
                          for conv, slices in zip(self.convs, self.slices)], 1)


def _channel_slices(channels: list[int]) -> list[tuple[int, int]]:
    """``[0, 1, 2, 4, 5, 0]`` -> ``[(0, 3), (4, 6), (0, 1)]``: the fewest slices, in order."""
    slices: list[list[int]] = []
    for c in channels:
        if slices and slices[-1][1] == c:
            slices[-1][1] += 1
        else:
            slices.append([c, c + 1])
    return [(a, b) for a, b in slices]


class RBFOutput(nn.Module):
    """Euclidean RBF units with fixed +-1 centres; returns -||x - centre||^2 per class (logits).

    Computed as 2 x.c - ||c||^2 (one linear layer) plus -||x||^2 (a linear layer of -1s on x * x):
    only linear, mul and add, which int8 quantisers cover (a SUM or SUB would stay float)."""

    def __init__(self, in_features: int, num_classes: int, seed: int = RBF_SEED) -> None:
        super().__init__()
        rng = random.Random(seed)
        codes = [[rng.choice((-1.0, 1.0)) for _ in range(in_features)] for _ in range(num_classes)]
        self.register_buffer("centers", torch.tensor(codes))
        # derived constants, not saved: refreshed from ``centers`` whenever a state_dict is loaded
        self.register_buffer("_weight", torch.empty(num_classes, in_features), persistent=False)
        self.register_buffer("_bias", torch.empty(num_classes), persistent=False)
        self.register_buffer("_minus_ones", -torch.ones(1, in_features), persistent=False)
        self._derive()
        self.register_load_state_dict_post_hook(lambda module, _keys: module._derive())

    @torch.no_grad()
    def _derive(self) -> None:
        self._weight.copy_(2.0 * self.centers)
        self._bias.copy_(-(self.centers * self.centers).sum(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self._weight, self._bias) + F.linear(x * x, self._minus_ones)


def _subsample(chs: int, faithful: bool) -> nn.Sequential:
    """S2/S4: the 2x2 mean times a trainable per-map coefficient plus bias (a depthwise 1x1 conv),
    then the squashing function; the dense variant max-pools instead."""
    if not faithful:
        return nn.Sequential(nn.MaxPool2d(2))
    return nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(chs, chs, 1, groups=chs), ScaledTanh())


class LeNet5(nn.Module):
    def __init__(self, num_classes: int = 10, in_chans: int = 1, faithful: bool = True) -> None:
        super().__init__()
        act = ScaledTanh if faithful else nn.ReLU
        self.c1 = nn.Sequential(nn.Conv2d(in_chans, 6, 5), act())
        self.s2 = _subsample(6, faithful)
        self.c3 = nn.Sequential(SparseConv2d(C3_TABLE, 5) if faithful else nn.Conv2d(6, 16, 5), act())
        self.s4 = _subsample(16, faithful)
        self.c5 = nn.Sequential(nn.Conv2d(16, 120, 5), act())
        self.f6 = nn.Sequential(nn.Linear(120, 84), act())
        self.output = RBFOutput(84, num_classes) if faithful else nn.Linear(84, num_classes)
        init_weights(self, linear_std=0.1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.c5(self.s4(self.c3(self.s2(self.c1(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.f6(torch.flatten(self.forward_features(x), 1)))


_COMMON = dict(family="lenet", builder=LeNet5, default_res=32, min_res=32, fixed_res=True,
               default_in_chans=1, default_num_classes=10, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
               crop_pct=1.0,
               paper="LeCun et al. 1998, Proc. IEEE 86(11):2278-2324")
register(ModelSpec(name="lenet5", knobs={"faithful": True}, aliases=("lenet",), **_COMMON))
register(ModelSpec(name="lenet5_dense", knobs={"faithful": False}, **_COMMON))
