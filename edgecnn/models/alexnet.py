"""AlexNet (Krizhevsky et al., "ImageNet Classification with Deep Convolutional Neural Networks",
2012) and ZFNet (Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", 2014).

``alexnet`` is torchvision's single-tower variant (the "one weird trick" channel counts 64-192-384-
256-256, no local response normalisation), with torchvision's state_dict keys, so its released
checkpoint loads. ``zfnet`` is the paper's Figure 3 model: 7x7 stride-2 first conv with 96 filters,
5x5 stride-2 second conv, 3x3 overlapping max pools and cross-channel contrast normalisation
(local response normalisation with AlexNet's constants) after the first two stages; its pools use
ceil rounding so the feature maps are the paper's 110-55-26-13-13-13-6. Both end in an adaptive
6x6 average pool (an identity at 224 px) so that other input sizes also reach the classifier.
"""

from __future__ import annotations

from torch import nn

from edgecnn.models.layers import PooledClassifier, check_rate, init_weights
from edgecnn.models.registry import ModelSpec, register

# Per conv layer: (out channels, kernel, stride, padding, max pool after, LRN after)
CONFIGS = {
    "alexnet": ((64, 11, 4, 2, True, False), (192, 5, 1, 2, True, False), (384, 3, 1, 1, False, False),
                (256, 3, 1, 1, False, False), (256, 3, 1, 1, True, False)),
    "zfnet": ((96, 7, 2, 1, True, True), (256, 5, 2, 0, True, True), (384, 3, 1, 1, False, False),
              (384, 3, 1, 1, False, False), (256, 3, 1, 1, True, False)),
}


class AlexNet(PooledClassifier):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3,
                 convs: tuple[tuple, ...] = CONFIGS["alexnet"], ceil_pools: bool = False,
                 dropout: float = 0.5) -> None:
        super().__init__()
        dropout = check_rate("dropout", dropout)
        layers: list[nn.Module] = []
        in_chs = in_chans
        for out_chs, k, s, p, pool, lrn in convs:
            layers += [nn.Conv2d(in_chs, out_chs, k, s, p), nn.ReLU(inplace=True)]
            if pool:
                layers.append(nn.MaxPool2d(3, 2, ceil_mode=ceil_pools))
            if lrn:
                layers.append(nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0))
            in_chs = out_chs
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(in_chs * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes))
        init_weights(self)


register(ModelSpec(
    name="alexnet", family="alexnet", builder=AlexNet, default_res=224, min_res=63,
    knobs={"convs": CONFIGS["alexnet"], "ceil_pools": False},
    paper="Krizhevsky et al. 2012, NeurIPS; torchvision layout from Krizhevsky 2014, arXiv:1404.5997"))
register(ModelSpec(
    name="zfnet", family="alexnet", builder=AlexNet, default_res=224, min_res=47,
    knobs={"convs": CONFIGS["zfnet"], "ceil_pools": True},
    paper="Zeiler & Fergus 2014, ECCV, arXiv:1311.2901"))
