"""``edgecnn eval``: top-1/top-5 and per-class accuracy of a checkpoint or a .tflite file on labelled data."""

from __future__ import annotations

import argparse
from pathlib import Path

from edgecnn import limits as L
from edgecnn.cli.common import add_wide_arg, bounded
from edgecnn.console import emit_json, print_table

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


def run_eval(args: argparse.Namespace) -> int:
    from edgecnn.pipelines.evaluate import EvalOptions, evaluate

    options = EvalOptions(split=args.split, val_split=args.val_split, seed=args.seed, limit=args.limit,
                          batch_size=args.batch_size, workers=args.workers, device=args.device,
                          threads=args.threads, mean=args.mean and tuple(args.mean),
                          std=args.std and tuple(args.std), crop_pct=args.crop_pct)
    report = evaluate(args.model_file, args.data, options, progress=not args.json)
    if args.json:
        emit_json(report.to_dict())
        return 0
    result = report.result
    per_class = report.to_dict()["per_class"]
    print_table(f"{Path(report.file).name} on {report.data} ({report.split}, {result.images} images)",
                ["class", "top-1", "images"],
                [[n, f"{100 * c['top1']:.2f}%", c["images"]] for n, c in per_class.items()],
                justify=["left", "right", "right"], wide=args.wide)
    print(f"top-1 {100 * result.top1:.2f}%  top-5 {100 * result.top5:.2f}%  loss {result.loss:.4f}  "
          f"{result.images_per_s:.0f} images/s (model), {result.end_to_end_images_per_s:.0f} images/s "
          f"(with loading)")
    return 0
