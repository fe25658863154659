"""``edgecnn eval``: top-1/top-5 and per-class accuracy of a checkpoint or a .tflite file on labelled data."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from edgecnn import limits as L
from edgecnn.cli.common import add_wide_arg, bounded
from edgecnn.console import emit_json, print_table
from edgecnn.data.transforms import Preprocess
from edgecnn.errors import EdgeCNNError

# floor of a .tflite file's probabilities before the log (int8 softmax outputs are multiples of 1/256, often 0)
PROB_FLOOR = 1e-7

EPILOG = """examples:
  edgecnn eval runs/fmnist/best.ckpt --data fashion-mnist
  edgecnn eval runs/fmnist/best.ckpt --split val --json
  edgecnn eval exports/model_int8.tflite --data fashion-mnist --threads 2
  edgecnn eval model.tflite --data ./photos --mean 0.5 --std 0.5 --crop-pct 1.0   (a file without metadata)

A checkpoint brings its own resolution, normalisation, classes and training data (the default --data).
A .tflite file brings its input size and, when it has TFLite metadata, its normalisation and labels;
otherwise give --mean/--std. The file is checked in a separate process before it is loaded.
Files exported with --scores softmax (the default) output probabilities: the loss is then the mean
-log(probability of the true class), floored at 1e-7."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="accuracy of a checkpoint or .tflite file on labelled data",
        description="Evaluate an edgecnn checkpoint (.ckpt) or an exported .tflite on a labelled dataset: "
                    "top-1, top-5, per-class accuracy, loss and images/s.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_file", metavar="FILE", help="an edgecnn checkpoint (.ckpt) or a .tflite file")
    p.add_argument("--data", metavar="DATA",
                   help="fashion-mnist, cifar-10, a folder with class sub-folders, or a flat folder of "
                        "ImageNet photos named <wnid>_*.JPEG (1000 classes) (default: the checkpoint's "
                        "training data); e.g. --data ./my_photos")
    p.add_argument("--split", choices=("test", "val", "train"), default=None,
                   help="which split (default: test when the data has one, else val); e.g. --split val")
    p.add_argument("--val-split", type=bounded(L.FRACTION), default=None, metavar="F",
                   help="for data without a val split: the held-out fraction (default: the checkpoint's "
                        "training setting, else 0.1); e.g. --val-split 0.2")
    p.add_argument("--seed", type=bounded(L.SEED), default=None, metavar="S",
                   help="seed of that held-out split (default: the checkpoint's, else 0); e.g. --seed 0")
    p.add_argument("--limit", type=bounded(L.IMAGES), default=None, metavar="N",
                   help="evaluate only the first N images of the split; e.g. --limit 1000")
    p.add_argument("--batch-size", type=bounded(L.BATCH_SIZE), default=256, metavar="B",
                   help="images per batch (default 256); e.g. --batch-size 64")
    p.add_argument("--workers", type=bounded(L.WORKERS), default=None, metavar="N",
                   help="DataLoader worker processes (default: CPU cores - 1, at most 8); e.g. --workers 0")
    p.add_argument("--device", default="auto", metavar="D",
                   help="for checkpoints: auto, cpu, cuda, mps (default auto); e.g. --device cpu")
    t = p.add_argument_group(".tflite files")
    t.add_argument("--threads", type=bounded(L.THREADS), default=None, metavar="N",
                   help="interpreter threads (default: the runtime's); e.g. --threads 2")
    t.add_argument("--mean", type=bounded(L.MEAN), nargs="+", default=None, metavar="M",
                   help="per-channel mean on [0, 1] pixels when the file has no normalisation metadata; "
                        "e.g. --mean 0.485 0.456 0.406")
    t.add_argument("--std", type=bounded(L.STD), nargs="+", default=None, metavar="S",
                   help="per-channel std on [0, 1] pixels, likewise; e.g. --std 0.229 0.224 0.225")
    t.add_argument("--crop-pct", type=bounded(L.CROP_PCT), default=None, metavar="F",
                   help="resize to res/F then centre-crop (default 1.0 for small fixed-size datasets such "
                        "as Fashion-MNIST, else 0.875); e.g. --crop-pct 1.0")
    p.add_argument("--json", action="store_true", help="print one JSON object (no progress bar)")
    add_wide_arg(p)
    p.set_defaults(func=run_eval)


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


def _tflite_setup(path: Path, args: argparse.Namespace):  # noqa: ANN202
    from edgecnn.converters.inspect import validate_tflite
    from edgecnn.converters.metadata import read_metadata
    from edgecnn.converters.tflite_runtime import TFLiteModel

    validate_tflite(path)
    model = TFLiteModel(path, num_threads=args.threads)
    meta = read_metadata(path.read_bytes())
    mean, std = args.mean or meta.get("mean"), args.std or meta.get("std")
    if mean is None or std is None:
        raise EdgeCNNError(f"{path} has no normalisation metadata: give --mean and --std (on [0, 1] pixels)")
    mean, std = (list(v) * model.in_chans if len(v) == 1 else list(v) for v in (mean, std))
    if len(mean) != model.in_chans or len(std) != model.in_chans:
        raise EdgeCNNError(f"--mean/--std need {model.in_chans} values (the model's input channels)")
    h, w = model.input_hw
    if h != w:
        raise EdgeCNNError(f"{path} takes {h}x{w} inputs; edgecnn evaluates square inputs only")
    return model, meta, (h, tuple(mean), tuple(std))


def run_eval(args: argparse.Namespace) -> int:
    from edgecnn.train.evaluate import evaluate, torch_predictor
    from edgecnn.train.loader import default_workers, eval_loader
    from edgecnn.train.progress import Progress

    path = Path(args.model_file)
    if not path.is_file():
        raise EdgeCNNError(f"{path} does not exist")
    workers = args.workers if args.workers is not None else default_workers()
    if path.suffix.lower() == ".tflite":
        if not args.data:
            raise EdgeCNNError("--data is required for a .tflite file (it does not record its training data)")
        tfl, meta, (res, mean, std) = _tflite_setup(path, args)
        data = args.data
        dataset, split_name, split = _open_data(data, args.val_split if args.val_split is not None else 0.1,
                                                args.seed or 0, args.split, args.limit)
        crop = args.crop_pct or (1.0 if dataset.native_res is not None else 0.875)
        preprocess = Preprocess(res=res, mean=mean, std=std, crop_pct=crop, in_chans=tfl.in_chans)
        labels = meta.get("labels") or dataset.classes
        num_classes = tfl.num_classes
        transform = PixelTransform(preprocess)
        predict = lambda pixels: tfl.predict_pixels(pixels.numpy(), preprocess)  # noqa: E731
        if meta.get("scores") == "softmax":  # probabilities: their log is what the loss takes as logits
            probs = predict
            predict = lambda pixels: np.log(np.maximum(probs(pixels), PROB_FLOOR))  # noqa: E731
        kind = "tflite"
    else:
        from edgecnn.weights import load_checkpoint
        from edgecnn.train.device import resolve_device

        model, meta = load_checkpoint(path)
        train_cfg = meta.extra.get("train_config") or {}
        data = args.data or meta.data
        if not data:
            raise EdgeCNNError(f"{path} records no training data: pass --data")
        val_split = args.val_split if args.val_split is not None else train_cfg.get("val_split", 0.1)
        seed = args.seed if args.seed is not None else train_cfg.get("seed", 0)
        dataset, split_name, split = _open_data(data, val_split, seed, args.split, args.limit)
        preprocess, labels, num_classes = meta.preprocess, meta.labels, meta.num_classes
        if dataset.in_chans != meta.in_chans and meta.in_chans == 1:
            raise EdgeCNNError(f"{path} takes grayscale images; {data} is RGB")
        device = resolve_device(args.device)
        predict = torch_predictor(model.to(device), device)
        transform = preprocess
        kind = "checkpoint"
    if num_classes != dataset.num_classes:
        raise EdgeCNNError(f"{path} has {num_classes} classes but {data} has "
                           f"{dataset.num_classes}: evaluate it on the data it was trained for")
    loader = eval_loader(split, transform, args.batch_size, workers)
    with Progress(not args.json) as bar:
        result = evaluate(predict, loader, num_classes, bar, description=f"eval {split_name}")
    report = {"file": str(path), "kind": kind, "data": dataset.source, "split": split_name,
              "input": [preprocess.in_chans, preprocess.res, preprocess.res],
              **result.to_dict(list(labels) if len(labels) == num_classes else dataset.classes)}
    if args.json:
        emit_json(report)
        return 0
    names = list(report["per_class"])
    print_table(f"{path.name} on {dataset.source} ({split_name}, {result.images} images)",
                ["class", "top-1", "images"],
                [[n, f"{100 * report['per_class'][n]['top1']:.2f}%", report["per_class"][n]["images"]]
                 for n in names], justify=["left", "right", "right"], wide=args.wide)
    print(f"top-1 {100 * result.top1:.2f}%  top-5 {100 * result.top5:.2f}%  loss {result.loss:.4f}  "
          f"{result.images_per_s:.0f} images/s (model), {result.end_to_end_images_per_s:.0f} images/s "
          f"(with loading)")
    return 0
