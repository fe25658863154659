"""``edgecnn train``: train or fine-tune a zoo model on labelled images into exportable checkpoints."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgecnn import limits as L
from edgecnn.cli.common import add_model_args, add_wide_arg, bounded, model_knobs
from edgecnn.console import emit_json, print_table
from edgecnn.errors import EdgeCNNError

EPILOG = """examples:
  edgecnn train mobilenet_v2 --alpha 0.35 --data fashion-mnist --epochs 10 --out runs/fmnist
  edgecnn train mobilenet_v2 --data ./my_photos --pretrained imagenet --res 160 --epochs 15 --freeze-epochs 2
  edgecnn train mobilenet_v2 --resume runs/fmnist --epochs 20      continue (or extend) a run
  edgecnn train mobilenet_v2 --alpha 0.35 --data fashion-mnist --nproc 2     2 processes (DDP) here
  torchrun --nproc-per-node 4 -m edgecnn train mobilenet_v2 --data ./my_photos --batch-size 512
                                               4 GPUs, 128 images each per step (NCCL; gloo on CPUs)
  edgecnn eval runs/fmnist/best.ckpt --data fashion-mnist
  edgecnn export mobilenet_v2 --weights runs/fmnist/best.ckpt

--data takes: fashion-mnist (Debian's dataset-fashion-mnist IDX files, found automatically), cifar-10
(the official python batches in ~/.cache/edgecnn/datasets/cifar-10-batches-py or $EDGECNN_CIFAR10), a
folder of IDX files or CIFAR batches, or an image folder: DATA/train/<class>/* and DATA/val/<class>/*
(optional DATA/test/<class>/*), or DATA/<class>/* split per class with --val-split and --seed.

writes into --out: best.ckpt and last.ckpt (edgecnn checkpoints: safetensors weights + model, knobs,
classes, resolution, normalisation), last.state.pt (resume state, torch.load(weights_only=True)),
metrics.csv and curves.png. Ctrl-C saves a resumable state; files are replaced atomically.

several processes (torchrun, or --nproc): DistributedDataParallel; --batch-size is the global batch,
split evenly among the processes, so steps, schedule and learning rate are those of one process and
a run resumes with any number of processes; rank 0 writes the files; if one process fails, all stop.
Collectives give up after $EDGECNN_DIST_TIMEOUT_S seconds (default 600).

default recipe per model family (edgecnn.train.recipes): a flag you pass wins over it. lr is the peak per
256 images of the batch (scaled linearly with --batch-size), for the recipe's optimizer (another
optimizer: sgd 0.1, weight decay 5e-5; adamw 0.002, 0.05); warmup is the fraction of the run's steps
(then cosine to 0); small_res is the input size of images smaller than the model's default (28 px
Fashion-MNIST, 32 px CIFAR-10); runs of at most {short} epochs use {short_run} (they underfit: flips only)
and, from random weights, short_lr instead of lr where a family has one.
{table}"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train or fine-tune a model on your images (checkpoints export in one step)",
        description="Train a zoo model from scratch, or fine-tune it from ImageNet weights with a new "
                    "classifier for your classes. SGD-momentum or AdamW, linear warm-up then cosine "
                    "decay, label smoothing, no weight decay on BatchNorm/biases, optional gradient "
                    "clipping and weight EMA; channels_last memory, AMP on GPUs; seeded and resumable.",
        epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p, weights=False)
    for action in p._actions:  # the shared model flags, as train reads them
        if action.dest in ("num_classes", "in_chans"):
            action.help = argparse.SUPPRESS  # classes and channels follow the data
        elif action.dest == "res":
            action.help = ("square input resolution in pixels (default: images smaller than the model's "
                           "default at the family recipe's small_res, e.g. 64 for Fashion-MNIST on MobileNetV2, "
                           "see below; photos at the model's default, e.g. 224); e.g. --res 160")
    d = p.add_argument_group("data")
    d.add_argument("--data", metavar="DATA",
                   help="fashion-mnist, cifar-10, or a folder (see below); e.g. --data ./my_photos "
                        "(on --resume: default the run's own)")
    d.add_argument("--val-split", type=bounded(L.FRACTION), default=0.1, metavar="F",
                   help="fraction of each class held out for validation when the data has no val split "
                        "(default 0.1); for fashion-mnist/cifar-10, 0 validates on the official test set; "
                        "e.g. --val-split 0.2")
    d.add_argument("--max-unreadable", type=bounded(L.FRACTION), default=0.05, metavar="F",
                   help="unreadable images are skipped and counted; fail when more than this fraction "
                        "is (default 0.05); e.g. --max-unreadable 0.2")
    d.add_argument("--max-imbalance", type=bounded(L.RATIO), default=10.0, metavar="R",
                   help="fail when the largest class has more than R times the images of the smallest "
                        "(default 10); e.g. --max-imbalance 50")
    d.add_argument("--crop-scale", type=bounded(L.CROP_SCALE), default=None, metavar="S",
                   help="augmentation: smallest random crop as a fraction of the image area (1 = no crop; "
                        "default: the family recipe's, below, 1 for runs of at most 3 epochs); e.g. --crop-scale 0.5")
    d.add_argument("--no-hflip", dest="hflip", action="store_false",
                   help="augmentation: no random horizontal flips (for text, digits, asymmetric signs)")
    d.add_argument("--color-jitter", type=bounded(L.FRACTION), default=0.0, metavar="J",
                   help="augmentation: random brightness/contrast/saturation in [1-J, 1+J] (default 0 = off); "
                        "e.g. --color-jitter 0.3")
    d.add_argument("--random-erase", type=bounded(L.PROBABILITY), default=0.0, metavar="P",
                   help="augmentation: probability of blanking one random rectangle (2-33%% of the image; "
                        "random erasing, Zhong et al. 2017; default 0 = off); e.g. --random-erase 0.5")
    d.add_argument("--workers", type=bounded(L.WORKERS), default=None, metavar="N",
                   help="DataLoader worker processes (default: CPU cores - 1, at most 8; 0 = load in the "
                        "training process: ~5%% faster for Fashion-MNIST on 2 cores); e.g. --workers 0")
    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=bounded(L.EPOCHS), default=None, metavar="N",
                   help="epochs to train (default 10; on --resume: the run's, or more to extend it); e.g. --epochs 15")
    o.add_argument("--batch-size", type=bounded(L.BATCH_SIZE), default=None, metavar="B",
                   help="images per optimizer step, in total over all processes of a distributed run "
                        "(the global batch; each process takes B/N) (default: the family recipe's, below); e.g. --batch-size 64")
    o.add_argument("--optimizer", choices=("sgd", "adamw"), default=None,
                   help="sgd (Nesterov momentum) or adamw (default: the family recipe's, below); e.g. --optimizer sgd")
    o.add_argument("--lr", type=bounded(L.LR), default=None, metavar="LR",
                   help="peak learning rate (default: the family recipe's, below lr per 256 images times batch-size/256, "
                        "the global batch); e.g. --lr 0.05")
    o.add_argument("--momentum", type=bounded(L.MOMENTUM), default=0.9, metavar="M",
                   help="SGD momentum (default 0.9); e.g. --momentum 0.95")
    o.add_argument("--weight-decay", type=bounded(L.WEIGHT_DECAY), default=None, metavar="WD",
                   help="decoupled/L2 weight decay on conv and linear weights only (default: the family recipe's, below); "
                        "e.g. --weight-decay 1e-4")
    o.add_argument("--warmup-epochs", type=bounded(L.WARMUP_EPOCHS), default=None, metavar="E",
                   help="linear learning-rate warm-up, then cosine decay to 0 (default: the family recipe's, below fraction "
                        "of --epochs; fractions allowed); e.g. --warmup-epochs 0.5")
    o.add_argument("--label-smoothing", type=bounded(L.FRACTION), default=None, metavar="E",
                   help="label smoothing of the cross-entropy loss (default: the family recipe's, below); e.g. --label-smoothing 0")
    o.add_argument("--clip-grad", type=bounded(L.CLIP_GRAD), default=None, metavar="NORM",
                   help="clip the global gradient L2 norm (default off); e.g. --clip-grad 5")
    o.add_argument("--ema", type=bounded(L.EMA_DECAY), default=None, metavar="DECAY", dest="ema_decay",
                   help="keep an exponential moving average of the weights, evaluated and saved instead "
                        "of the raw ones (default off); e.g. --ema 0.999")
    o.add_argument("--precise-bn", type=bounded(L.PRECISE_BN), default=None, metavar="N",
                   help="before each evaluation, recompute BatchNorm running statistics from N fixed "
                        "training images (default: 4096 in runs from random weights while the running "
                        "averages still weigh their initial values more than e^-5, as after a short run of "
                        "MobileNetV3 or EfficientNet-Lite, whose momentum is 0.01; 0: never); "
                        "e.g. --precise-bn 0")
    o.add_argument("--seed", type=bounded(L.SEED), default=0, metavar="S",
                   help="seed of initialisation, split, order and augmentation (default 0); e.g. --seed 1")
    f = p.add_argument_group("fine-tuning")
    f.add_argument("--pretrained", metavar="W",
                   help="start from 'imagenet' (the released weights, SHA-256 checked) or a weights file/"
                        "checkpoint; the classifier gets a new head for your classes; e.g. --pretrained imagenet")
    f.add_argument("--freeze-epochs", type=bounded(L.FREEZE_EPOCHS), default=0, metavar="N",
                   help="first train only the new classifier for N epochs (needs --pretrained); e.g. --freeze-epochs 2")
    h = p.add_argument_group("hardware")
    h.add_argument("--device", default="auto", metavar="D",
                   help="auto (CUDA, then Apple MPS, then CPU), cpu, cuda, cuda:1, mps; e.g. --device cpu")
    h.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision (bf16, else fp16 with loss scaling; default: on for CUDA); e.g. --no-amp")
    h.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="NHWC memory format (default: on; measured 1.0-2.1x faster training on CPU); "
                        "e.g. --no-channels-last")
    h.add_argument("--nproc", type=bounded(L.PROCESSES), default=None, metavar="N",
                   help="train in N processes on this machine with DistributedDataParallel (runs torchrun: "
                        "one per GPU with NCCL, else CPU processes with gloo sharing the cores); for several "
                        "machines start torchrun yourself (see the examples); e.g. --nproc 2")
    h.add_argument("--sync-bn", action="store_true",
                   help="distributed runs on CUDA: BatchNorm statistics over the global batch instead of "
                        "each process's share (SyncBatchNorm; no CPU implementation)")
    r = p.add_argument_group("output")
    r.add_argument("--out", metavar="DIR",
                   help="run folder (default runs/MODEL-DATA); e.g. --out runs/fmnist")
    r.add_argument("--resume", nargs="?", const=True, default=None, metavar="DIR",
                   help="continue the run in DIR (default: --out) exactly where it stopped; e.g. --resume runs/fmnist")
    r.add_argument("--overwrite", action="store_true", help="start over in a --out that already holds a run")
    r.add_argument("--json", action="store_true", help="print one JSON object (no progress bars)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    add_wide_arg(r)
    p.set_defaults(func=run_train)


def _epilog() -> str:
    from edgecnn.train import recipes

    short_run = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in recipes.SHORT_RUN.items())
    return EPILOG.format(short=recipes.SHORT_RUN_EPOCHS, short_run=short_run, table=recipes.describe())


def _default_out(model: str, data: str) -> str:
    return str(Path("runs") / f"{model}-{Path(str(data).rstrip('/')).name or 'data'}")


def build_config(args: argparse.Namespace):  # noqa: ANN201 (TrainConfig, imported lazily)
    """A :class:`TrainConfig` from the flags (on ``--resume``: the saved one, with the allowed overrides)."""
    from edgecnn.train import TrainConfig
    from edgecnn.train.trainer import load_state

    if args.resume:
        out = args.out if args.resume is True else args.resume
        if out is None:
            raise EdgeCNNError("--resume needs the run folder: --resume runs/NAME (or --out runs/NAME --resume)")
        saved = TrainConfig.from_dict(load_state(out)["config"]).to_dict()  # checked, defaults filled in
        return TrainConfig.from_dict({**saved, "model": args.model, "knobs": model_knobs(args),
                                      "out": str(out), "epochs": args.epochs or saved["epochs"],
                                      "data": args.data or saved["data"], "workers": args.workers,
                                      "device": args.device})
    if not args.data:
        raise EdgeCNNError("--data is required: fashion-mnist, cifar-10 or a folder of class sub-folders")
    if args.num_classes is not None or args.in_chans is not None:
        raise EdgeCNNError("--num-classes and --in-chans follow the data (its classes, grayscale or RGB); "
                           "leave them out")
    return TrainConfig(
        model=args.model, data=args.data, out=args.out or _default_out(args.model, args.data),
        knobs=model_knobs(args), res=args.res, epochs=args.epochs or 10, batch_size=args.batch_size,
        optimizer=args.optimizer, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
        warmup_epochs=args.warmup_epochs, label_smoothing=args.label_smoothing, clip_grad=args.clip_grad,
        ema_decay=args.ema_decay, precise_bn=args.precise_bn, seed=args.seed, workers=args.workers,
        device=args.device, amp=args.amp,
        channels_last=args.channels_last, pretrained=args.pretrained, freeze_epochs=args.freeze_epochs,
        val_split=args.val_split, crop_scale=args.crop_scale, hflip=args.hflip,
        color_jitter=args.color_jitter, random_erase=args.random_erase, max_unreadable=args.max_unreadable,
        max_imbalance=args.max_imbalance, sync_bn=args.sync_bn)


def _launch(args: argparse.Namespace, cfg) -> bool:  # noqa: ANN001 (TrainConfig)
    """With ``--nproc`` outside torchrun: run this same command in N processes; True when it did."""
    import os

    from edgecnn.train import distributed

    if args.nproc is None:
        return False
    if "LOCAL_WORLD_SIZE" in os.environ:  # a worker that --nproc (or torchrun itself) started
        if args.nproc != int(os.environ["LOCAL_WORLD_SIZE"]):
            raise EdgeCNNError(f"--nproc {args.nproc} under torchrun, which started "
                               f"{os.environ['LOCAL_WORLD_SIZE']} processes here: leave --nproc out")
        return False
    if args.nproc == 1:
        return False
    distributed.Dist(world=args.nproc).local_batch(cfg.batch_size)  # fail here, before any process starts
    distributed.launch(args.nproc, args.argv)
    return True


def run_train(args: argparse.Namespace) -> int:
    from edgecnn.train import train
    from edgecnn.train.distributed import rank_from_env

    cfg = build_config(args)
    if _launch(args, cfg):
        return 0
    result = train(cfg, resume=bool(args.resume), overwrite=args.overwrite,
                   progress=not (args.json or args.quiet))
    if rank_from_env() != 0:  # rank 0 reports for the run
        return 0
    summary = result.to_dict()
    for line in result.warnings:  # also in the summary's "warnings"
        print(f"WARNING: {line}", file=sys.stderr)
    if args.json:
        emit_json(summary)
        return 0
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    rows = [["best val top-1", f"{pct(result.best_val_top1)} (epoch {result.best_epoch})"],
            ["last val top-1 / top-5", f"{pct(summary['last_val_top1'])} / {pct(summary['last_val_top5'])}"]]
    if result.test:
        rows.append([f"test top-1 / top-5 (best.ckpt, {result.test['images']} images)",
                     f"{pct(result.test['top1'])} / {pct(result.test['top5'])}"])
    rows += [["train throughput", f"{summary['train_images_per_s'] or 0:.0f} images/s "
                                  f"({summary['train_seconds']:.0f} s of training)"],
             ["eval throughput", f"{summary['eval_images_per_s'] or 0:.0f} images/s"],
             ["input", f"{result.preprocess.res}x{result.preprocess.res}x{result.preprocess.in_chans}, "
                       f"{len(result.classes)} classes"],
             ["unreadable images skipped", len(result.unreadable)],
             ["files", f"{summary['best']}, {summary['last']}, metrics.csv, curves.png"]]
    print_table(f"{cfg.model} on {cfg.data}", ["", ""], rows, wide=args.wide)
    print(f"next: edgecnn export {cfg.model} --weights {summary['best']}")
    return 0
