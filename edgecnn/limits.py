"""Every numeric bound edgecnn accepts, in one place: command-line flags and untrusted files alike.

The CLI's argparse types (``edgecnn.cli.common.bounded``) and the load-time checks of checkpoint
metadata, export reports and resume states (:mod:`edgecnn.schema`) use the same :class:`Bound`, so a
value a flag refuses is refused in a file too. A comment beside each bound says why it is there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgecnn.errors import EdgeCNNError


@dataclass(frozen=True)
class Bound:
    """An interval of allowed values (``integer``: int only, else int or float)."""

    what: str
    lo: float
    hi: float
    integer: bool = False
    lo_open: bool = False
    hi_open: bool = False

    @property
    def interval(self) -> str:
        """``(0, 4]``, ``[1, 2048]``: what the error messages state."""
        lo, hi = (f"{v:d}" if self.integer else f"{v:g}" for v in (self.lo, self.hi))
        return f"{'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"

    def allows(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int if self.integer else (int, float)):
            return False
        if not math.isfinite(value):
            return False
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return above and below

    def message(self, value: object, hint: str = "", typed: bool = False) -> str:
        """The error for ``value`` (``typed``: a string as the user typed it, shown without quotes)."""
        kind = "an integer" if self.integer else "a number"
        got = value if typed else repr(value)
        return f"{self.what} must be {kind} in {self.interval}, got {got}" + (f" ({hint})" if hint else "")

    def check(self, value: object, hint: str = "") -> int | float:
        """``value`` when allowed, else :class:`EdgeCNNError` with a one-line message naming the range."""
        if not self.allows(value):
            raise EdgeCNNError(self.message(value, hint))
        return value


# ---------------------------------------------------------------- the model

PUBLISHED_ALPHAS = {"mobilenet_v1": (0.25, 0.5, 0.75, 1.0), "mobilenet_v2": (0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
                    "mobilenet_v3": (0.75, 1.0)}
# published values go up to 1.4; 4 means ~16x the MACs of 1.0 (MACs grow with alpha^2)
ALPHA = Bound("alpha (width multiplier)", 0, 4, lo_open=True)
# B0 is 0, B7 is about 7; phi 8 means 685 px inputs, 2.1x B0's width and 4.3x its depth
PHI = Bound("phi (EfficientNet compound coefficient)", -4, 8)
# Vision Transformer shape knobs (vit.py): ViT-H/14 is 32 layers of width 1280, 16 heads, MLP 5120;
# the bounds leave 1.5-3x headroom. A patch of 2 px on a 224 px input is already 12,544 tokens.
PATCH_SIZE = Bound("patch_size (px)", 2, 64, integer=True)
NUM_LAYERS = Bound("num_layers", 1, 64, integer=True)
NUM_HEADS = Bound("num_heads", 1, 64, integer=True)
HIDDEN_DIM = Bound("hidden_dim (width)", 8, 4096, integer=True)
MLP_DIM = Bound("mlp_dim", 8, 16384, integer=True)
# what an out-of-range value's error adds (and the flag's help)
KNOB_HINTS = {"alpha": "published values are " + "; ".join(
    f"{family} {', '.join(map(str, values))}" for family, values in PUBLISHED_ALPHAS.items())}
# every model needs more than 8 px (the registry names each one's minimum); 2048 px is 2.5x the largest
# published input (EfficientNet-L2, 800 px), where VGG's first feature map alone is 1 GiB in fp32
RES = Bound("resolution (px)", 8, 2048, integer=True)
KNOBS = {"alpha": ALPHA, "phi": PHI, "patch_size": PATCH_SIZE, "num_layers": NUM_LAYERS, "num_heads": NUM_HEADS,
         "hidden_dim": HIDDEN_DIM, "mlp_dim": MLP_DIM, "image_size": RES}
# ImageNet-21k has 21,843 classes
NUM_CLASSES = Bound("num_classes", 1, 100_000, integer=True)
# 1 grayscale, 3 RGB, 4 RGBA
IN_CHANS = Bound("in_chans", 1, 4, integer=True)
# per channel, of pixels scaled to [0, 1]
MEAN = Bound("normalisation mean", 0, 1)
# per channel, of pixels scaled to [0, 1]
STD = Bound("normalisation std", 0.001, 10)
# published eval recipes centre-crop 0.875 to 1.0 of the image
CROP_PCT = Bound("crop fraction", 0.5, 1)

# ---------------------------------------------------------------- data and compute

# NumPy's seed range
SEED = Bound("seed", 0, 2**32 - 1, integer=True)
# each is a process; the default is at most 8
WORKERS = Bound("workers", 0, 64, integer=True)
# more than the hardware threads of any current machine (2x 192-core EPYC: 768)
THREADS = Bound("threads", 1, 1024, integer=True)
# training processes on one machine (train --nproc): one per GPU or per few cores
PROCESSES = Bound("processes", 1, 1024, integer=True)
# 100x ImageNet-1k's training set
IMAGES = Bound("image count", 1, 100_000_000, integer=True)
# these images are held in memory: 10,000 at 224 px are 1.5 GB
HELD_IMAGES = Bound("image count", 1, 10_000, integer=True)
# per-layer statistics of every layer are kept
LAYER_IMAGES = Bound("image count", 0, 1_000, integer=True)
# the largest published ImageNet batch is 65,536
BATCH_SIZE = Bound("batch size", 1, 65_536, integer=True)
FRACTION = Bound("fraction", 0, 1, hi_open=True)
PROBABILITY = Bound("probability", 0, 1)
RATIO = Bound("ratio", 1, 1e9)
# a fraction of the image area
CROP_SCALE = Bound("crop scale", 0, 1, lo_open=True)

# ---------------------------------------------------------------- optimisation

EPOCHS = Bound("epochs", 1, 10_000, integer=True)
WARMUP_EPOCHS = Bound("warm-up epochs", 0, 10_000)
FREEZE_EPOCHS = Bound("freeze epochs", 0, 10_000, integer=True)
# published recipes peak at 0.1-5
LR = Bound("learning rate", 0, 10, lo_open=True)
WEIGHT_DECAY = Bound("weight decay", 0, 1)
MOMENTUM = Bound("momentum", 0, 1, hi_open=True)
EMA_DECAY = Bound("EMA decay", 0, 1, lo_open=True, hi_open=True)
CLIP_GRAD = Bound("gradient norm", 0, 1e6, lo_open=True)
# images run forward to recompute BatchNorm statistics (0: off); streamed, not held
PRECISE_BN = Bound("precise-BN images", 0, 100_000_000, integer=True)

# ---------------------------------------------------------------- benchmarks

COUNT = Bound("count", 0, 2**53, integer=True)  # epochs done, steps, images seen: what a float counts exactly
SCORE = Bound("score", -1, 1)  # an accuracy fraction; -1 marks "none yet"
RUNS = Bound("runs", 1, 1_000_000, integer=True)
# at most a day
SECONDS = Bound("seconds", 0, 86_400, lo_open=True)
BUDGET_MIN = Bound("training budget (minutes)", 0, 10_080, lo_open=True)  # a week per variant at most
LATENCY_MS = Bound("latency budget (ms)", 0, 3_600_000, lo_open=True)  # positive; an hour per image at most
