"""edgecnn.train: train or fine-tune a zoo model on labelled images, with resumable checkpoints."""

from edgecnn.train.config import TrainConfig
from edgecnn.train.trainer import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
