"""Default training recipe of each model family: what ``edgecnn train`` uses for a knob left unset.

A recipe is data (:data:`RECIPES`), applied by :meth:`edgecnn.train.config.TrainConfig.__post_init__`
to the fields left at ``None``; an explicit value (a CLI flag, a config field) always wins. The
numbers were measured with ``benchmarks/studies/train_defaults.py`` (Fashion-MNIST, one epoch on a
2-core CPU; results in ``benchmarks/results/train_defaults.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class Recipe:
    """One family's defaults.

    ``lr`` is the peak learning rate per 256 images of the (global) batch, for ``optimizer`` only
    (another optimizer takes :data:`edgecnn.train.config.DEFAULT_LR`); ``weight_decay`` likewise.
    ``warmup`` is the linear warm-up as a fraction of the run's optimizer steps (then cosine to 0).
    ``small_res`` (pixels) is the input size of images smaller than the model's default resolution
    (28 px Fashion-MNIST, 32 px CIFAR-10): they are upscaled to it (never downscaled).
    ``crop_scale`` is the smallest random crop (fraction of the image area) of runs longer than
    :data:`SHORT_RUN_EPOCHS`; shorter runs take :data:`SHORT_RUN` instead. ``short_lr``: the peak
    learning rate per 256 images of runs of at most :data:`SHORT_RUN_EPOCHS` epochs from random
    weights (None: ``lr``); fine-tuning keeps ``lr``.
    """

    optimizer: str
    lr: float
    weight_decay: float
    warmup: float
    batch_size: int
    small_res: int
    crop_scale: float
    label_smoothing: float
    short_lr: float | None = None


# Networks with BatchNorm: AdamW at 0.008 per 256 images, warm-up 10% of the steps, batch 128. Measured on
# MobileNetV2 0.35, one 60k-image epoch of Fashion-MNIST at 48 px, test top-1: this 83.0%; half the lr
# 80.0%; batch 64 at the same lr per 256 images 81.5%; SGD-Nesterov 0.4 per 256 images 79.4%. The old
# default (SGD 0.1 per 256, a one-epoch warm-up, 25% crops, 32 px) reached 63.2%.
_BN = Recipe(optimizer="adamw", lr=0.008, weight_decay=0.01, warmup=0.1, batch_size=128, small_res=32,
             crop_scale=0.25, label_smoothing=0.1)
# Networks without normalisation layers diverge at that rate (LeNet-5 with SGD at 0.1 per 256: loss 35):
# AdamW at a quarter of it.
_NO_NORM = replace(_BN, lr=0.002)
# MobileNets shrink their input 32x: 32 px ends in a 1x1 map. At 48 px MobileNetV2 0.35 gained 7.7 points
# per epoch over 32 px (benchmarks/studies/train_fashion_mnist.py's trials) for ~1.5x the time per image; at 64 px
# it reached 84.2% in one epoch against 83.0% at 48 px (1.8x the pixels). MobileNetV3-Small at 48 px: 86.0%.
_MOBILE = replace(_BN, small_res=48)
# One 60k-image epoch of MobileNetV2 0.35 at 64 px (benchmarks/results/train_defaults.md, trials), by
# peak lr per 256 images: 0.008 84.2%, 0.016 85.5%, 0.032 87.1%, 0.064 87.8%, 0.128 87.8% (0.064 at
# batch 64: 87.5%; without label smoothing 87.1%). Short runs take 0.064, the low end of the plateau;
# longer ones keep 0.008. At 80 px (0.064): 88.1%, for ~1.6x the pixels of 64 px.
_MOBILE_V2 = replace(_BN, small_res=80, short_lr=0.064)
# Transformers train with AdamW and decay 0.05 in their papers (ViT, DeiT, MobileViT); attention without
# pretraining is unstable at the BatchNorm rate, so the LayerNorm rate; not tuned on a short run.
_TRANSFORMER = replace(_NO_NORM, weight_decay=0.05)

RECIPES: dict[str, Recipe] = {
    "mobilenet_v1": _MOBILE,
    "mobilenet_v2": _MOBILE_V2,
    "mobilenet_v3": _MOBILE,
    "efficientnet": _BN,
    "efficientnet_lite": _BN,
    "shufflenet_v2": _BN,
    "googlenet": _BN,
    "inception_v3": _BN,
    "resnet": _BN,
    "densenet": _BN,
    "convnext": _NO_NORM,  # LayerNorm; AdamW's usual lr per 256 images is far lower (4e-3 per 4096)
    "lenet": _NO_NORM,
    "alexnet": _NO_NORM,
    "vgg": _NO_NORM,  # vgg*_bn too: one recipe per family
    "squeezenet": _NO_NORM,
    "vit": _TRANSFORMER,
    "mobilevit": _TRANSFORMER,
}

# Runs of at most this many epochs underfit rather than overfit: no random crops (flips only).
SHORT_RUN_EPOCHS = 3
SHORT_RUN = {"crop_scale": 1.0}


def recipe_for(model: str) -> Recipe:
    """The recipe of ``model``'s family (a registered name or alias)."""
    from edgecnn.models import get_spec

    return RECIPES[get_spec(model).family]


def recipe_defaults(model: str, epochs: int) -> dict[str, object]:
    """:class:`~edgecnn.train.config.TrainConfig` field -> default for a run of ``epochs`` epochs of ``model``
    (``lr``, ``weight_decay`` and ``res`` are not here: they also depend on the optimizer and the data)."""
    r = recipe_for(model)
    short = SHORT_RUN if epochs <= SHORT_RUN_EPOCHS else {}
    return {"optimizer": r.optimizer, "batch_size": r.batch_size, "warmup_epochs": r.warmup * epochs,
            "label_smoothing": r.label_smoothing, "crop_scale": r.crop_scale, **short}


def describe() -> str:
    """The table of recipes, one line per family, for ``edgecnn train --help``."""
    names = [f.name for f in fields(Recipe)]
    rows = [["family", *names]] + [[family, *(str(getattr(r, n)) for n in names)] for family, r in RECIPES.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(names) + 1)]
    return "\n".join("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows)
