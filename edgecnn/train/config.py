"""The knobs of one training run, stored in every checkpoint and resume state."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from edgecnn import limits as L
from edgecnn.errors import EdgeCNNError
from edgecnn.schema import REQUIRED, Doc, check_knobs
from edgecnn.train.recipes import SHORT_RUN_EPOCHS, recipe_defaults, recipe_for

OPTIMIZERS = ("sgd", "adamw")
# for an optimizer other than the family recipe's (see edgecnn.train.recipes)
DEFAULT_LR = {"sgd": 0.1, "adamw": 0.002}  # per 256 images in a batch (linear scaling)
DEFAULT_WD = {"sgd": 5e-5, "adamw": 0.05}
BOUNDS = {"res": L.RES, "epochs": L.EPOCHS, "batch_size": L.BATCH_SIZE, "lr": L.LR, "momentum": L.MOMENTUM,
          "weight_decay": L.WEIGHT_DECAY, "warmup_epochs": L.WARMUP_EPOCHS, "min_lr_ratio": L.PROBABILITY,
          "label_smoothing": L.FRACTION, "clip_grad": L.CLIP_GRAD, "ema_decay": L.EMA_DECAY,
          "precise_bn": L.PRECISE_BN,
          "dropout": L.FRACTION, "seed": L.SEED, "workers": L.WORKERS, "freeze_epochs": L.FREEZE_EPOCHS,
          "val_split": L.FRACTION, "crop_scale": L.CROP_SCALE, "color_jitter": L.FRACTION,
          "random_erase": L.PROBABILITY, "max_unreadable": L.FRACTION, "max_imbalance": L.RATIO,
          "eval_batch_size": L.BATCH_SIZE}


@dataclass
class TrainConfig:
    """Everything that decides a training run (lr: learning rate at its peak; epochs may be fractional
    only for warm-up). Fields left at ``None`` take the model family's recipe
    (:mod:`edgecnn.train.recipes`) when the config is made, so a saved config holds the values used."""

    model: str
    data: str
    out: str
    knobs: dict[str, Any] = field(default_factory=dict)
    res: int | None = None  # pixels; None: small images at the recipe's small_res, others at the model's default
    epochs: int = 10
    batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None  # None: the recipe's (or DEFAULT_LR[optimizer]) per 256 images * batch_size / 256
    momentum: float = 0.9
    weight_decay: float | None = None  # None: the recipe's (or DEFAULT_WD[optimizer]); never on BN or biases
    warmup_epochs: float | None = None  # None: the recipe's warm-up fraction of the run
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of lr
    label_smoothing: float | None = None
    clip_grad: float | None = None  # max global gradient L2 norm
    ema_decay: float | None = None  # e.g. 0.999; evaluates and saves the averaged weights
    # training images whose statistics replace the BatchNorm running ones before each evaluation;
    # None: 4096 while the running ones are stale (edgecnn.train.batchnorm), 0: never
    precise_bn: int | None = None
    dropout: float | None = None  # None: the model's default
    seed: int = 0
    workers: int | None = None  # None: up to (CPU cores - 1), at most 8
    device: str = "auto"
    amp: bool | None = None  # None: on for CUDA
    channels_last: bool | None = None  # None: on (NHWC trained MobileNetV2 1.9x faster on a 2-core CPU)
    sync_bn: bool = False  # distributed runs on CUDA: BatchNorm statistics over the global batch
    pretrained: str | None = None  # "imagenet" or a weights file; the classifier is re-initialised
    freeze_epochs: int = 0  # epochs that train only the classifier (needs pretrained)
    val_split: float = 0.1
    crop_scale: float | None = None  # smallest random crop, as a fraction of the image area
    hflip: bool = True
    color_jitter: float = 0.0
    random_erase: float = 0.0  # probability of erasing one random rectangle (Zhong et al. 2017)
    max_unreadable: float = 0.05
    max_imbalance: float = 10.0
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        """Check every field by type and :mod:`edgecnn.limits` bound (a resume state is an untrusted file)."""
        from edgecnn.models import get_spec

        doc = Doc(vars(self), "training config")
        spec = get_spec(doc.get("model", str))  # a known model
        optional = {f.name for f in fields(self) if f.default is None}
        for name, bound in BOUNDS.items():
            doc.get(name, default=None if name in optional else REQUIRED, bound=bound)
        for name, value in recipe_defaults(self.model, self.epochs).items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        for name in ("model", "data", "out", "device", "pretrained"):
            doc.get(name, str, None if name in optional else REQUIRED)
        for name in ("amp", "channels_last", "hflip"):
            doc.get(name, bool, None if name in optional else REQUIRED)
        doc.get("optimizer", str, choices=OPTIMIZERS)
        check_knobs(doc, "knobs", spec.tunable)
        too_long = [n for n in ("warmup_epochs", "freeze_epochs") if getattr(self, n) > self.epochs]
        if too_long:
            raise EdgeCNNError(f"invalid {too_long[0]}={getattr(self, too_long[0])!r} "
                               f"(warmup_epochs and freeze_epochs must fit within epochs={self.epochs})")
        if self.freeze_epochs and not self.pretrained:
            raise EdgeCNNError("--freeze-epochs needs --pretrained: a random backbone is not worth freezing")

    @property
    def peak_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        recipe = recipe_for(self.model)
        short = recipe.short_lr and self.epochs <= SHORT_RUN_EPOCHS and not self.pretrained
        per_256 = (recipe.short_lr if short else recipe.lr) if self.optimizer == recipe.optimizer \
            else DEFAULT_LR[self.optimizer]
        return per_256 * self.batch_size / 256

    @property
    def decay(self) -> float:
        if self.weight_decay is not None:
            return self.weight_decay
        recipe = recipe_for(self.model)
        return recipe.weight_decay if self.optimizer == recipe.optimizer else DEFAULT_WD[self.optimizer]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: object, where: str = "training config") -> "TrainConfig":
        """A config read back from a file (``where`` names it in errors); unknown keys are ignored."""
        doc = Doc(d, where)
        names = {f.name for f in fields(cls)}
        for f in fields(cls):  # required fields first: a clear "missing" rather than a TypeError
            if f.default is MISSING and f.default_factory is MISSING:
                doc.get(f.name)
        try:
            return cls(**{k: v for k, v in doc.data.items() if k in names})
        except EdgeCNNError as exc:
            raise EdgeCNNError(f"{where}: {exc}") from None
