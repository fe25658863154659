"""``edgecnn eval`` as a Python API: accuracy of a checkpoint or a .tflite file on labelled data.

    from edgecnn.pipelines.evaluate import EvalOptions, evaluate
    report = evaluate("exports/m/m_int8.tflite", "fashion-mnist", EvalOptions(limit=1000, threads=2))
    report.result.top1, report.to_dict()          # the second is the --json object

A checkpoint brings its resolution, normalisation, classes and training data (the default ``data``);
a .tflite file brings its input size and, with TFLite metadata, its normalisation and labels (else
``mean``/``std`` are needed). The file is checked in a separate process before it is loaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from edgecnn.data.transforms import Preprocess
from edgecnn.errors import EdgeCNNError
from edgecnn.train.evaluate import EvalResult

# floor of a .tflite file's probabilities before the log (int8 softmax outputs are multiples of 1/256, often 0)
PROB_FLOOR = 1e-7


@dataclass(frozen=True)
class EvalOptions:
    """How to evaluate. ``split``: test/val/train (default test when the data has one, else val);
    ``val_split``/``seed``: the held-out fraction and its seed for data without a val split (default:
    a checkpoint's training settings, else 0.1 and 0); ``limit``: only the first N images;
    ``batch_size``, ``workers`` (DataLoader processes; None: CPU cores - 1, at most 8); ``device``:
    for checkpoints (auto, cpu, cuda, mps). For .tflite files: ``threads`` (None: the runtime's),
    ``mean``/``std`` on [0, 1] pixels when the file has no normalisation metadata, ``crop_pct``
    (resize to res/F then centre-crop; default 1.0 for small fixed-size datasets, else 0.875)."""

    split: str | None = None
    val_split: float | None = None
    seed: int | None = None
    limit: int | None = None
    batch_size: int = 256
    workers: int | None = None
    device: str = "auto"
    threads: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    crop_pct: float | None = None


@dataclass(frozen=True)
class EvalReport:
    """One evaluation: the ``file``, its ``kind`` (tflite or checkpoint), the ``data`` source, the
    ``split``, the ``input`` (channels, height, width), the :class:`EvalResult` and the class names."""

    file: str
    kind: str
    data: str
    split: str
    input: tuple[int, int, int]
    result: EvalResult
    classes: tuple[str, ...]

    def to_dict(self) -> dict:
        """The ``edgecnn eval --json`` object."""
        return {"file": self.file, "kind": self.kind, "data": self.data, "split": self.split,
                "input": list(self.input), **self.result.to_dict(list(self.classes))}


@dataclass
class _Setup:
    """What one model kind hands the shared evaluation loop."""

    predict: Callable
    transform: Callable
    preprocess: Preprocess
    labels: list[str]
    num_classes: int
    dataset: object
    split_name: str
    split: object
    data: str


class PixelTransform:
    """PIL image -> HWC uint8 tensor at the model's input size (what an app feeds a .tflite)."""

    def __init__(self, preprocess: Preprocess) -> None:
        self.preprocess = preprocess

    def __call__(self, image) -> torch.Tensor:  # noqa: ANN001 (PIL image)
        return torch.from_numpy(np.array(self.preprocess.to_uint8(image)))


def _open_data(data: str, val_split: float, seed: int, split: str | None, limit: int | None):  # noqa: ANN202
    from edgecnn.data.datasets import open_dataset

    dataset = open_dataset(data, val_split=val_split, seed=seed, max_imbalance=float("inf"))
    name = split or ("test" if "test" in dataset.splits else "val")
    part = dataset.split(name)
    if limit is not None:
        part = part.subset(range(min(limit, len(part))))
    return dataset, name, part


def _tflite_model(path: Path, opts: EvalOptions):  # noqa: ANN202
    """The checked, loaded .tflite, its metadata, and (res, mean, std) of its input."""
    from edgecnn.converters.inspect import validate_tflite
    from edgecnn.converters.metadata import read_metadata
    from edgecnn.converters.tflite_runtime import TFLiteModel

    validate_tflite(path)
    model = TFLiteModel(path, num_threads=opts.threads)
    meta = read_metadata(path.read_bytes())
    mean, std = opts.mean or meta.get("mean"), opts.std or meta.get("std")
    if mean is None or std is None:
        raise EdgeCNNError(f"{path} has no normalisation metadata: give --mean and --std (on [0, 1] pixels)")
    mean, std = (list(v) * model.in_chans if len(v) == 1 else list(v) for v in (mean, std))
    if len(mean) != model.in_chans or len(std) != model.in_chans:
        raise EdgeCNNError(f"--mean/--std need {model.in_chans} values (the model's input channels)")
    h, w = model.input_hw
    if h != w:
        raise EdgeCNNError(f"{path} takes {h}x{w} inputs; edgecnn evaluates square inputs only")
    return model, meta, (h, tuple(mean), tuple(std))


def _tflite_setup(path: Path, data: str | None, opts: EvalOptions) -> _Setup:
    if not data:
        raise EdgeCNNError("--data is required for a .tflite file (it does not record its training data)")
    tfl, meta, (res, mean, std) = _tflite_model(path, opts)
    dataset, split_name, split = _open_data(data, opts.val_split if opts.val_split is not None else 0.1,
                                            opts.seed or 0, opts.split, opts.limit)
    crop = opts.crop_pct or (1.0 if dataset.native_res is not None else 0.875)
    preprocess = Preprocess(res=res, mean=mean, std=std, crop_pct=crop, in_chans=tfl.in_chans)

    def predict(pixels: torch.Tensor) -> np.ndarray:
        scores = tfl.predict_pixels(pixels.numpy(), preprocess)
        if meta.get("scores") == "softmax":  # probabilities: their log is what the loss takes as logits
            return np.log(np.maximum(scores, PROB_FLOOR))
        return scores

    return _Setup(predict, PixelTransform(preprocess), preprocess, meta.get("labels") or dataset.classes,
                  tfl.num_classes, dataset, split_name, split, data)


def _checkpoint_setup(path: Path, data: str | None, opts: EvalOptions) -> _Setup:
    from edgecnn.train.device import resolve_device
    from edgecnn.train.evaluate import torch_predictor
    from edgecnn.weights import load_checkpoint

    model, meta = load_checkpoint(path)
    train_cfg = meta.extra.get("train_config") or {}
    data = data or meta.data
    if not data:
        raise EdgeCNNError(f"{path} records no training data: pass --data")
    val_split = opts.val_split if opts.val_split is not None else train_cfg.get("val_split", 0.1)
    seed = opts.seed if opts.seed is not None else train_cfg.get("seed", 0)
    dataset, split_name, split = _open_data(data, val_split, seed, opts.split, opts.limit)
    if dataset.in_chans != meta.in_chans and meta.in_chans == 1:
        raise EdgeCNNError(f"{path} takes grayscale images; {data} is RGB")
    device = resolve_device(opts.device)
    return _Setup(torch_predictor(model.to(device), device), meta.preprocess, meta.preprocess, meta.labels,
                  meta.num_classes, dataset, split_name, split, data)


def evaluate(path: str | os.PathLike, data: str | None = None, options: EvalOptions = EvalOptions(),
             progress: bool = False) -> EvalReport:
    """Top-1/top-5, per-class accuracy, loss and images/s of the checkpoint or .tflite at ``path`` on
    ``data`` (fashion-mnist, cifar-10, a folder with class sub-folders, a flat folder of ImageNet
    photos; default for a checkpoint: its training data). ``progress``: a progress bar on stderr.
    Bad input raises :class:`~edgecnn.errors.EdgeCNNError` (one line)."""
    from edgecnn.train.evaluate import evaluate as run_batches
    from edgecnn.train.loader import default_workers, eval_loader
    from edgecnn.train.progress import Progress

    path = Path(path)
    if not path.is_file():
        raise EdgeCNNError(f"{path} does not exist")
    workers = options.workers if options.workers is not None else default_workers()
    tflite = path.suffix.lower() == ".tflite"
    s = (_tflite_setup if tflite else _checkpoint_setup)(path, data, options)
    if s.num_classes != s.dataset.num_classes:
        raise EdgeCNNError(f"{path} has {s.num_classes} classes but {s.data} has "
                           f"{s.dataset.num_classes}: evaluate it on the data it was trained for")
    loader = eval_loader(s.split, s.transform, options.batch_size, workers)
    with Progress(progress) as bar:
        result = run_batches(s.predict, loader, s.num_classes, bar, description=f"eval {s.split_name}")
    labels = list(s.labels) if len(s.labels) == s.num_classes else s.dataset.classes
    p = s.preprocess
    return EvalReport(str(path), "tflite" if tflite else "checkpoint", s.dataset.source, s.split_name,
                      (p.in_chans, p.res, p.res), result, tuple(labels))
