"""VGG (Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
2015): stacks of 3x3 convolutions and 2x2 max pools, then three fully connected layers.

Configurations A/B/D/E of the paper are ``vgg11/13/16/19``; ``_bn`` adds BatchNorm after every
convolution. Module layout and state_dict keys are torchvision's ``vgg*`` (one flat ``features``
Sequential, adaptive 7x7 average pool, ``classifier``), so its released checkpoints load.
"""

from __future__ import annotations

from torch import nn

from edgecnn.models.layers import PooledClassifier, check_rate, init_weights
from edgecnn.models.registry import ModelSpec, register

POOL = "M"
# The paper's Table 1: output channels of each 3x3 conv, "M" for a 2x2 max pool.
CONFIGS = {
    "vgg11": (64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL),
    "vgg13": (64, 64, POOL, 128, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL),
    "vgg16": (64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL,
              512, 512, 512, POOL),
    "vgg19": (64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL, 512, 512, 512, 512, POOL,
              512, 512, 512, 512, POOL),
}


class VGG(PooledClassifier):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3,
                 cfg: tuple[int | str, ...] = CONFIGS["vgg16"], batch_norm: bool = False,
                 dropout: float = 0.5) -> None:
        super().__init__()
        dropout = check_rate("dropout", dropout)
        layers: list[nn.Module] = []
        in_chs = in_chans
        for v in cfg:
            if v == POOL:
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers.append(nn.Conv2d(in_chs, v, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=True))
            in_chs = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(in_chs * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(dropout),
            nn.Linear(4096, num_classes))
        init_weights(self)


for _name, _cfg in CONFIGS.items():
    for _bn in (False, True):
        register(ModelSpec(
            name=_name + "_bn" * _bn, family="vgg", builder=VGG, default_res=224,
            # Five 2x2 max pools without padding: 32 px is the smallest input that survives them.
            min_res=32, knobs={"cfg": _cfg, "batch_norm": _bn},
            paper="Simonyan & Zisserman 2015, arXiv:1409.1556"))
