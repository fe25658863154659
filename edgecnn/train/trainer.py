"""The training loop: data -> model -> epochs -> ``best.ckpt``/``last.ckpt`` + ``last.state.pt``.

Output folder (``TrainConfig.out``):

- ``best.ckpt`` / ``last.ckpt``: edgecnn checkpoints (safetensors + metadata: model, knobs,
  num_classes, in_chans, preprocessing, labels, data), ready for ``edgecnn export --weights``.
  With EMA on they hold the averaged weights, which are also what is evaluated.
- ``last.state.pt``: everything ``--resume`` needs (model, optimizer, scheduler, EMA, AMP scaler,
  RNG states, epoch and step, history), readable with ``torch.load(weights_only=True)``.
- ``metrics.csv`` and ``curves.png``.

Every file is written atomically, ``best`` before ``last`` and the resume state last, so a crash or
a full disk at any moment leaves the previous good files in place. Ctrl-C (or SIGTERM, SIGHUP)
inside an epoch saves a state that resumes at the very next step; since sample order and
augmentation are functions of (seed, epoch, position), a resumed run computes exactly what the
uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from edgecnn.checkpoint import CheckpointMeta, save_checkpoint
from edgecnn.data.augment import TrainTransform
from edgecnn.data.datasets import LabelledData, open_dataset
from edgecnn.data.transforms import Preprocess
from edgecnn import limits as L
from edgecnn.errors import EdgeCNNError, shorten
from edgecnn.io import atomic_path
from edgecnn.models import create_model, get_spec
from edgecnn.schema import Doc
from edgecnn.signals import Interrupted, exit_status, handling
from edgecnn.train import batchnorm, distributed
from edgecnn.train.device import resolve_device
from edgecnn.train.config import TrainConfig
from edgecnn.train.evaluate import EvalResult, evaluate, torch_predictor
from edgecnn.train.health import chance_top1, training_warnings
from edgecnn.train.loader import default_workers, eval_loader, train_loader
from edgecnn.train.optim import build_optimizer, build_scheduler
from edgecnn.train.progress import Progress
from edgecnn.train.recipes import recipe_for
from edgecnn.train.report import write_curves_png, write_metrics_csv

STATE_FORMAT = "edgecnn-train-state/1"
STATE_FILE, LAST, BEST = "last.state.pt", "last.ckpt", "best.ckpt"


class TrainingInterrupted(EdgeCNNError):
    """Ctrl-C, SIGTERM or SIGHUP: a resumable state was saved. ``exit_code``: 128 + the signal number."""

    exit_code = 130


@dataclass
class TrainResult:
    """What a run produced. Accuracies are fractions; throughput in images/s; times in seconds."""

    out: Path
    config: TrainConfig
    classes: list[str]
    preprocess: Preprocess
    history: list[dict]
    best_epoch: int
    best_val_top1: float
    test: dict | None = None  # best checkpoint on the data's test split, when it has one apart from val
    unreadable: list[str] = field(default_factory=list)
    train_seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)  # see edgecnn.train.health

    def to_dict(self) -> dict:
        last = self.history[-1] if self.history else {}
        seen = sum(r["train_images"] for r in self.history)
        return {"out": str(self.out), "best": str(self.out / BEST), "last": str(self.out / LAST),
                "model": self.config.model, "knobs": self.config.knobs, "data": self.config.data,
                "classes": self.classes, "preprocess": self.preprocess.to_dict(),
                "epochs": len(self.history), "best_epoch": self.best_epoch,
                "best_val_top1": self.best_val_top1, "last_val_top1": last.get("val_top1"),
                "last_val_top5": last.get("val_top5"), "test": self.test,
                "train_seconds": self.train_seconds,
                "train_images_per_s": seen / self.train_seconds if self.train_seconds else None,
                "eval_images_per_s": last.get("eval_images_per_s"),
                "unreadable_images": len(self.unreadable), "config": self.config.to_dict(),
                "warnings": self.warnings, "history": self.history}


# ---------------------------------------------------------------- setup helpers

def train_transform(cfg: TrainConfig, preprocess: Preprocess) -> TrainTransform:
    """The augmentation ``cfg`` asks for, ending in ``preprocess``'s normalisation."""
    return TrainTransform(preprocess, scale=(cfg.crop_scale, 1.0), hflip=cfg.hflip,
                          color_jitter=cfg.color_jitter, random_erase=cfg.random_erase)


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: bf16 where supported, else fp16 (CUDA/MPS); ``None`` when AMP is off."""
    on = cfg.amp if cfg.amp is not None else device.type == "cuda"
    if not on:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float16 if device.type == "mps" else torch.bfloat16


def choose_res(cfg: TrainConfig, data: LabelledData, model: nn.Module) -> int:
    """``cfg.res``, else small images' own size raised to the model's minimum and the recipe's ``small_res``
    (at most the model's default), else the model's default."""
    spec, default = get_spec(cfg.model), model.edgecnn_config.default_res
    if cfg.res is not None:
        res = cfg.res
    elif data.native_res is not None and data.native_res < default:
        res = min(default, max(data.native_res, spec.min_res, recipe_for(cfg.model).small_res))
    else:
        res = default
    spec.check_res(res)
    try:  # the registry's minimum is a rule of thumb; a real forward pass is the proof
        with torch.no_grad():
            model.eval()(torch.zeros(2, data.in_chans, res, res))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise EdgeCNNError(f"{spec.name} cannot take {res}x{res} inputs ({first}); choose a larger --res") from None
    return res


EMA_EVERY = 4  # optimizer steps per EMA update: ~4% of a small model's step time becomes ~1%


def ema_with_warmup(decay: float, every: int = EMA_EVERY) -> Callable:
    """EMA update for ``AveragedModel`` called every ``every`` optimizer steps: per-step decay
    ``min(decay, (1 + n) / (10 + n))`` after ``n`` steps (timm's warm-up rule, so short runs are not
    dominated by the random initial weights), raised to the power ``every``."""

    @torch.no_grad()
    def update(ema_params: list[torch.Tensor], params: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        if not torch.is_floating_point(ema_params[0]):  # BatchNorm's step counters: keep the latest
            torch._foreach_copy_(ema_params, params)
            return
        n = float(num_averaged) * every
        torch._foreach_lerp_(ema_params, params, 1.0 - min(decay, (1 + n) / (10 + n)) ** every)

    return update


def head_prefix(model: nn.Module) -> str:
    """Module name of the classifier: the owner of the last parameter (e.g. ``classifier.1``)."""
    name = [n for n, _ in model.named_parameters()][-1]
    return name.rpartition(".")[0]


def set_frozen(model: nn.Module, frozen: bool) -> None:
    """Train only the classifier (backbone weights fixed, its BatchNorm statistics too) or everything."""
    head = head_prefix(model)
    model.train()
    for name, p in model.named_parameters():
        p.requires_grad_(not frozen or name.startswith(head + "."))
    if frozen:
        for name, m in model.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not name.startswith(head):
                m.eval()


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def find_state(path: str | Path) -> Path:
    """The resume state of a run folder (or the ``last.state.pt`` path itself)."""
    path = Path(path)
    state = path / STATE_FILE if path.is_dir() else path
    if not state.is_file():
        raise EdgeCNNError(f"no resumable run at {path}: {state} does not exist")
    return state


def load_state(path: str | Path) -> dict[str, Any]:
    """A resume state, loaded with ``torch.load(weights_only=True)`` (nothing but tensors and plain data)."""
    state_path = find_state(path)
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors of a corrupt or foreign file
        raise EdgeCNNError(f"cannot read resume state {state_path}: {exc.__class__.__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise EdgeCNNError(f"{state_path} is not an edgecnn training state")
    check_state(state, str(state_path))
    return state


def check_state(state: dict[str, Any], where: str) -> None:
    """Check a resume state's fields by type and bound before any is used (the file is untrusted)."""
    doc = Doc(state, where)
    TrainConfig.from_dict(state.get("config"), f"{where}: config")
    for key in ("epoch", "step_in_epoch", "best_epoch"):
        doc.get(key, bound=L.COUNT)
    doc.get("best_top1", bound=L.SCORE)
    num_classes = doc.get("num_classes", bound=L.NUM_CLASSES)
    if len(doc.items("classes", str, max_len=num_classes)) != num_classes:
        raise EdgeCNNError(f"{where}: classes must list num_classes={num_classes} names")
    Preprocess.from_dict(state.get("preprocess"), f"{where}: preprocess")
    for key in ("model", "optimizer", "scheduler", "scaler", "rng", "partial"):
        doc.get(key, dict)
    doc.get("ema", dict, None)
    doc.items("history", dict)


# ---------------------------------------------------------------- the run

class _Run:
    """One training run; split out of :func:`train` so the loop reads top to bottom."""

    def __init__(self, cfg: TrainConfig, state: dict | None, progress: Progress,
                 callbacks: Iterable[Callable[[dict], None]], dist: distributed.Dist = distributed.Dist()) -> None:
        self.cfg, self.progress, self.callbacks, self.dist = cfg, progress, list(callbacks), dist
        self.out = Path(cfg.out)
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        self.data = open_dataset(cfg.data, val_split=cfg.val_split, seed=cfg.seed,
                                 max_unreadable=cfg.max_unreadable, max_imbalance=cfg.max_imbalance)
        if state is not None and state["num_classes"] != self.data.num_classes:
            raise EdgeCNNError(
                f"class-count mismatch: the run in {self.out} was trained on {state['num_classes']} classes, "
                f"but {cfg.data} has {self.data.num_classes}")
        if state is not None and state["classes"] != self.data.classes:
            raise EdgeCNNError(f"the classes of {cfg.data} differ from the run being resumed "
                               f"({', '.join(state['classes'][:5])}, ...)")
        self.model = create_model(cfg.model, num_classes=self.data.num_classes,
                                  in_chans=self.data.in_chans, **cfg.knobs)
        if cfg.pretrained and state is None:
            from edgecnn.weights import load_weights

            load_weights(self.model, cfg.pretrained, head="skip")
        self.res = choose_res(cfg, self.data, self.model)
        self.preprocess = Preprocess.from_dict(state["preprocess"]) if state else self._preprocess()
        self.device = dist.device(resolve_device(cfg.device))
        self.model = dist.prepare(self.model, cfg.sync_bn, self.device)
        self.amp = amp_dtype(cfg, self.device)
        self.channels_last = cfg.channels_last is not False  # None (default): on, faster on CPU and GPU
        self.model.to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        train_split = self.data.split("train")
        if len(train_split) < cfg.batch_size:
            raise EdgeCNNError(f"only {len(train_split)} training images, fewer than --batch-size "
                               f"{cfg.batch_size}; lower the batch size")
        workers = cfg.workers if cfg.workers is not None else default_workers()
        pin = self.device.type == "cuda"
        transform = train_transform(cfg, self.preprocess)
        self.loader, self.sampler = train_loader(train_split, transform, dist.local_batch(cfg.batch_size), cfg.seed,
                                                 workers, pin, dist.shard)
        self.val_loader = eval_loader(self.data.split("val"), self.preprocess, cfg.eval_batch_size, workers, pin,
                                      dist.shard)
        self.bn_loader = self._bn_loader(train_split, workers, pin)
        self.steps_per_epoch = len(train_split) // cfg.batch_size
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        self.ema = None
        if cfg.ema_decay:
            from torch.optim.swa_utils import AveragedModel

            self.ema = AveragedModel(self.model, multi_avg_fn=ema_with_warmup(cfg.ema_decay), use_buffers=True)
        self.epoch, self.step_in_epoch, self.history = 0, 0, []
        self.best_top1, self.best_epoch = -1.0, 0
        self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        self.stop_requested = 0  # the signal that asked to stop after this step (0: none)
        self.net, self.net_frozen = self.model, None  # what trains: DDP around the model when distributed
        if state is not None:
            self._restore(state)
        if dist.enabled:
            self._distributed_start(state)

    def _preprocess(self) -> Preprocess:
        """Dataset statistics when training from scratch, the weights' own when fine-tuning; small
        fixed-size images (Fashion-MNIST, CIFAR) are resized whole, photos resized and centre-cropped."""
        model_cfg = self.model.edgecnn_config
        own_stats = self.data.mean is not None and not self.cfg.pretrained
        mean, std = (self.data.mean, self.data.std) if own_stats else (model_cfg.mean, model_cfg.std)
        crop_pct = 1.0 if self.data.native_res is not None else model_cfg.crop_pct
        return Preprocess(res=self.res, mean=tuple(mean), std=tuple(std), crop_pct=crop_pct,
                          in_chans=self.data.in_chans)

    # ---------------------------------------------------------------- state

    def _state(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, "config": self.cfg.to_dict(), "epoch": self.epoch,
                "step_in_epoch": self.step_in_epoch, "num_classes": self.data.num_classes,
                "classes": self.data.classes, "preprocess": self.preprocess.to_dict(),
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "ema": self.ema.state_dict() if self.ema else None,
                "rng": rng_state(), "best_top1": self.best_top1, "best_epoch": self.best_epoch,
                "history": self.history, "partial": dict(self.partial),
                "distributed": self.dist.meta(self.cfg.batch_size)}

    def _restore(self, state: dict[str, Any]) -> None:
        try:
            self._load(state)
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:  # tensors of another run
            first = (str(exc).strip().splitlines() or [""])[0]
            raise EdgeCNNError(f"the resume state in {self.out} does not fit this model: "
                               f"{exc.__class__.__name__}: {shorten(first, 200)}") from None

    def _load(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.best_top1, self.best_epoch = state["best_top1"], state["best_epoch"]
        self.history, self.partial = list(state["history"]), dict(state["partial"])
        set_rng_state(state["rng"])

    def _distributed_start(self, state: dict | None) -> None:
        """Say how the run is split; other ranks draw their own dropout masks; a resumed mid-epoch
        run's partial sums stay with rank 0 (they are added up over the ranks at the epoch's end)."""
        cfg = self.cfg
        rule = "--lr" if cfg.lr is not None else f"{cfg.optimizer} base lr x {cfg.batch_size}/256"
        self.progress.log(self.dist.describe(cfg.batch_size, cfg.peak_lr, rule))
        step = self.epoch * self.steps_per_epoch + self.step_in_epoch
        before = (state or {}).get("distributed", {}).get("world_size", 1)
        if state is not None and before != self.dist.world:
            self.progress.log(f"resuming a run of {before} process(es) with {self.dist.world}: the data is "
                              f"re-sharded; global step {step} of {cfg.epochs * self.steps_per_epoch} carries over")
        if not self.dist.main:
            torch.manual_seed(cfg.seed * 1_000_003 + self.dist.rank * 10_007 + step)
            self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}

    def _meta(self, extra: dict[str, Any]) -> CheckpointMeta:
        cfg = self.model.edgecnn_config
        return CheckpointMeta(model=cfg.name, knobs=dict(cfg.knobs), num_classes=self.data.num_classes,
                              in_chans=self.data.in_chans, preprocess=self.preprocess,
                              labels=list(self.data.classes), data=self.data.source,
                              extra={"ema": self.ema is not None, "val_is_test": self.data.val_is_test,
                                     "train_config": self.cfg.to_dict(),
                                     "distributed": self.dist.meta(self.cfg.batch_size), **extra})

    def _bn_loader(self, train_split, workers: int, pin: bool):
        """The fixed training images (evaluation transform) that precise BN measures on: ``precise_bn``
        of them (None: :data:`~edgecnn.train.batchnorm.PRECISE_BN_IMAGES`), a whole number of
        global batches so every process runs as many batches (SyncBatchNorm's collectives)."""
        want = batchnorm.PRECISE_BN_IMAGES if self.cfg.precise_bn is None else self.cfg.precise_bn
        batch = self.dist.local_batch(self.cfg.batch_size)
        n = min(want, len(train_split)) // self.cfg.batch_size * self.cfg.batch_size
        if not n or not batchnorm.batch_norms(self.model):
            return None
        order = torch.randperm(len(train_split), generator=torch.Generator().manual_seed(self.cfg.seed))
        return eval_loader(train_split.subset(order[:n].tolist()), self.preprocess, batch, workers, pin,
                           self.dist.shard)

    def _precise_bn(self) -> int:
        """Recompute the statistics of the evaluated model's BatchNorms that trained (frozen ones keep
        theirs) when ``precise_bn`` asks (None: while stale, from random weights only: fine-tuning
        starts from the weights' own statistics); returns the images measured (per process), 0 when
        skipped. The random state is put back (a loader draws its seed from it), so training
        continues exactly as without it."""
        steps = self.epoch * self.steps_per_epoch + self.step_in_epoch
        names = batchnorm.updating(self.model)
        auto = not self.cfg.pretrained and batchnorm.stale(self.model, steps)
        if self.bn_loader is None or not names or (self.cfg.precise_bn is None and not auto):
            return 0
        task = self.progress.start("  batchnorm statistics", len(self.bn_loader))

        def batches():
            for x, _ in self.bn_loader:
                yield x
                self.progress.advance(task, 1)

        state = rng_state()
        seen = batchnorm.recompute(self.eval_model, batches(), self.device, names)
        set_rng_state(state)
        self.progress.stop(task)
        return seen

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def save_state(self) -> None:
        with atomic_path(self.out / STATE_FILE) as tmp:
            torch.save(self._state(), tmp)

    # ---------------------------------------------------------------- loop

    def run(self) -> TrainResult:
        cfg = self.cfg
        if self.dist.main:
            self.out.mkdir(parents=True, exist_ok=True)
        if self.data.unreadable:
            self.progress.log(f"skipped {len(self.data.unreadable)} unreadable image(s), e.g. {self.data.unreadable[0]}")
        # distributed ranks cannot agree on a step to stop after: a signal stops them at once
        with contextlib.nullcontext() if self.dist.enabled else handling(self._on_signal):
            while self.epoch < cfg.epochs:
                try:
                    row = self._epoch()
                except KeyboardInterrupt as exc:
                    if self.dist.enabled:  # the other ranks stop at other steps: keep the epoch's start
                        raise TrainingInterrupted(f"interrupted in epoch {self.epoch + 1}; continue from its "
                                                  f"start with --resume {self.out}") from None
                    self.save_state()
                    save_checkpoint(self.out / LAST, self.eval_model, self._meta(
                        {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "interrupted": True}))
                    raise self._interrupted(exit_status(exc)) from None
                self._end_epoch(row)
                if self.stop_requested and self.epoch < cfg.epochs:
                    raise self._interrupted(128 + self.stop_requested)
        return self._finish()

    def _on_signal(self, signum: int) -> None:
        """First SIGINT/SIGTERM/SIGHUP: stop after the current step (weights never half-updated); second: at once."""
        if self.stop_requested:
            raise Interrupted(signum)
        self.stop_requested = signum
        again = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        self.progress.log(f"stopping after this step ({again} again to stop at once) ...")

    def _interrupted(self, status: int) -> TrainingInterrupted:
        """The error that ends an interrupted run; ``status``: the exit status (128 + signal number)."""
        where = (f"epoch {self.epoch + 1}, step {self.step_in_epoch}/{self.steps_per_epoch}"
                 if self.step_in_epoch else f"the end of epoch {self.epoch}")
        exc = TrainingInterrupted(f"interrupted at {where}; saved {self.out / STATE_FILE}; continue with: "
                                  f"edgecnn train {self.cfg.model} --resume {self.out}")
        exc.exit_code = status
        return exc

    def _epoch(self) -> dict:
        cfg, model, p = self.cfg, self.model, self.partial
        frozen = self.epoch < cfg.freeze_epochs
        set_frozen(model, frozen)
        if frozen != self.net_frozen:  # DDP syncs the gradients of what trains at wrapping time
            self.net, self.net_frozen = self.dist.wrap(model, self.device), frozen
        self.sampler.set_epoch(self.epoch, start=self.step_in_epoch * cfg.batch_size)  # global position
        task = self.progress.start(f"epoch {self.epoch + 1}/{cfg.epochs}" + (" (frozen)" if frozen else ""),
                                   self.steps_per_epoch, completed=self.step_in_epoch)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen, t0 = 0, time.perf_counter()
        try:
            for x, y in self.loader:
                if self.step_in_epoch >= self.steps_per_epoch:
                    break
                out, loss = self._step(x, y)
                loss_sum += loss.detach() * len(y)
                correct += (out.detach().argmax(1) == y.to(self.device)).sum()
                seen += len(y)
                self.step_in_epoch += 1
                for callback in self.callbacks:
                    callback({"epoch": self.epoch, "step": self.step_in_epoch,
                              "global_step": self.epoch * self.steps_per_epoch + self.step_in_epoch})
                if self.stop_requested:
                    raise Interrupted(self.stop_requested)
                if self.progress.enabled and self.step_in_epoch % 10 == 0:  # .item() syncs a GPU: not every step
                    n, secs = p["seen"] + seen, p["seconds"] + time.perf_counter() - t0
                    self.progress.advance(task, 10, loss=(p["loss_sum"] + loss_sum.item()) / n,
                                          acc=(p["correct"] + correct.item()) / n, ips=n / secs * self.dist.world)
        finally:  # also on Ctrl-C: the partial epoch's sums go into the resume state
            p["loss_sum"] += loss_sum.item()
            p["correct"] += int(correct.item())
            p["seen"] += seen
            p["seconds"] += time.perf_counter() - t0
            if self.step_in_epoch < self.steps_per_epoch:
                self.progress.stop(task)
        p = self.dist.reduce_partial(p)  # every rank: the sums over all ranks
        bn_images = self._precise_bn()
        self.dist.average_buffers(*dict.fromkeys([self.model, self.eval_model]))  # same order on every rank
        n = max(p["seen"], 1)
        val = self._evaluate(self.val_loader, "val")
        row = {"epoch": self.epoch + 1, "lr": self.optimizer.param_groups[0]["lr"],
               "train_loss": p["loss_sum"] / n, "train_top1": p["correct"] / n, "train_images": p["seen"],
               "val_loss": val.loss, "val_top1": val.top1, "val_top5": val.top5,
               "train_images_per_s": p["seen"] / max(p["seconds"], 1e-9),
               "eval_images_per_s": val.images_per_s, "epoch_s": p["seconds"], "train_seconds": p["seconds"],
               "precise_bn_images": bn_images * self.dist.world}
        self.progress.finish(task, f"epoch {row['epoch']}/{cfg.epochs}  val {100 * val.top1:.2f}%",
                             loss=row["train_loss"], acc=row["train_top1"], ips=row["train_images_per_s"])
        return row

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            out = self.net(x)
            loss = self.criterion(out, y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.clip_grad:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None and (self.epoch * self.steps_per_epoch + self.step_in_epoch + 1) % EMA_EVERY == 0:
            self.ema.update_parameters(self.model)
        return out, loss

    def _evaluate(self, loader, what: str) -> EvalResult:
        predict = torch_predictor(self.eval_model, self.device, self.channels_last, self.amp)
        return self.dist.reduce_eval(evaluate(predict, loader, self.data.num_classes, self.progress,
                                              description=f"  {what}"))

    def _end_epoch(self, row: dict) -> None:
        improved = row["val_top1"] > self.best_top1
        row["best"] = int(improved)
        self.epoch += 1
        self.step_in_epoch = 0
        self.partial = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        self.history.append(row)
        meta = self._meta({"epoch": self.epoch, "val_top1": row["val_top1"], "val_top5": row["val_top5"]})
        if improved:  # best first, the resume state last: a failure leaves a consistent older state
            if self.dist.main:
                save_checkpoint(self.out / BEST, self.eval_model, meta)
            self.best_top1, self.best_epoch = row["val_top1"], self.epoch
        if not self.dist.main:  # rank 0 writes every file
            return
        save_checkpoint(self.out / LAST, self.eval_model, meta)
        self.save_state()
        write_metrics_csv(self.out / "metrics.csv", self.history)
        write_curves_png(self.out / "curves.png", self.history,
                         " ".join([self.cfg.model, *(f"{k}={v}" for k, v in self.cfg.knobs.items()),
                                   f"on {self.data.source} at {self.res} px"]))

    def _finish(self) -> TrainResult:
        test = None
        if "test" in self.data.splits and not self.data.val_is_test and self.dist.main:
            from edgecnn.weights import load_checkpoint

            best, meta = load_checkpoint(self.out / BEST)
            best.to(self.device)
            loader = eval_loader(self.data.split("test"), self.preprocess, self.cfg.eval_batch_size,
                                 self.val_loader.num_workers)
            predict = torch_predictor(best, self.device, self.channels_last, self.amp)
            result = evaluate(predict, loader, self.data.num_classes, self.progress, "  test")
            test = result.to_dict(self.data.classes)
            meta.extra["test_top1"], meta.extra["test_top5"] = result.top1, result.top5
            save_checkpoint(self.out / BEST, best, meta)
        warnings = training_warnings(self.history, chance_top1(self.data.split("val").labels))
        return TrainResult(out=self.out, config=self.cfg, classes=self.data.classes,
                           preprocess=self.preprocess, history=self.history, best_epoch=self.best_epoch,
                           best_val_top1=self.best_top1, test=test, unreadable=self.data.unreadable,
                           train_seconds=sum(r["train_seconds"] for r in self.history), warnings=warnings)


def train(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False, progress: bool = True,
          callbacks: Iterable[Callable[[dict], None]] = ()) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.data`` into ``cfg.out`` (see the module docstring for the files).

    ``resume`` continues the run saved in ``cfg.out`` with its own settings (only ``epochs`` and
    ``data`` may differ from what was saved; pass the saved config otherwise). ``callbacks`` are
    called after every optimizer step with ``{"epoch", "step", "global_step"}``. Under torchrun
    (``WORLD_SIZE`` > 1) this is one process of a DistributedDataParallel run: see
    :mod:`edgecnn.train.distributed`; rank 0 reads the run folder and writes every file.
    """
    with distributed.session(cfg.device) as dist:
        state = None
        if dist.main:  # on several machines only rank 0 needs to see the run folder
            cfg, state = _prepare(cfg, resume, overwrite)
        cfg, state = dist.broadcast((cfg, state))
        bar = Progress(progress and dist.main)
        run = _Run(cfg, state, bar, callbacks, dist)  # data and model checks fail before any progress bar shows
        with bar:
            return run.run()


def _prepare(cfg: TrainConfig, resume: bool, overwrite: bool) -> tuple[TrainConfig, dict | None]:
    """The config to run (on ``resume``: the saved one) and the resume state, checked."""
    state = None
    if resume:
        state = load_state(cfg.out)
        saved = TrainConfig.from_dict({**state["config"], "epochs": cfg.epochs, "data": cfg.data,
                                       "out": cfg.out, "workers": cfg.workers, "device": cfg.device})
        if get_spec(saved.model).name != get_spec(cfg.model).name:
            raise EdgeCNNError(f"{cfg.out} holds a run of {saved.model}, not {cfg.model}")
        if cfg.knobs and cfg.knobs != {k: v for k, v in saved.knobs.items() if k in cfg.knobs}:
            raise EdgeCNNError(f"{cfg.out} holds a run with {saved.knobs}; resume it without other knobs")
        if cfg.epochs < state["epoch"]:
            raise EdgeCNNError(f"{cfg.out} already ran {state['epoch']} epochs; --epochs {cfg.epochs} is fewer")
        cfg = saved
    elif (Path(cfg.out) / STATE_FILE).exists() and not overwrite:
        raise EdgeCNNError(f"{cfg.out} already holds a run; continue it with --resume {cfg.out}, "
                           f"or pass --overwrite to start over")
    return cfg, state
