"""Quantisation-aware fine-tuning (PT2E QAT): for models whose post-training int8 loses too much.

1. A copy of the float model gets each BatchNorm folded into its convolution
   (:func:`~edgecnn.quantize.equalize.fold_batchnorm`). litert-torch 0.10's conv+BatchNorm QAT
   annotators do not build on torch 2.13 (torchao hands ``torch.export`` a function where it wants a
   module), and a folded graph needs only the conv patterns, which are also what the ``.tflite`` has.
2. The model as the files see it (:class:`~edgecnn.wrappers.PixelInput`: pixels 0-255,
   normalisation inside) is exported at the training batch size and prepared with
   ``prepare_qat_pt2e`` and litert-torch's QAT config: fake-quantised per-channel symmetric int8
   weights and per-tensor int8 activations whose ranges are moving averages learned in training.
3. Fine-tuning on labelled training data with the augmentation of the checkpoint's own training run
   (or edgecnn train's defaults), AdamW with a cosine schedule; the normalisation stays frozen and
   the activation ranges are frozen for the last epoch (when there is more than one).
4. The trained weights and ranges move into a batch-1 export of the same graph (same nodes, same
   fake-quant modules) and ``convert_pt2e`` gives a :class:`~edgecnn.quantize.ptq.QuantizedModel`
   that litert-torch converts exactly like a post-training one, with the ranges QAT learned.

The fine-tuned float model (BatchNorm folded) is returned too: it is the reference the int8 file is
verified against, and :func:`unfold_into` writes it back into the zoo architecture (BatchNorm as an
exact identity plus bias) so it saves as an ordinary edgecnn checkpoint that either back end exports.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edgecnn.data.transforms import Preprocess
from edgecnn.errors import EdgeCNNError
from edgecnn.quantize.ptq import EdgeQuantizer, quantization_config

DEFAULT_LR = 1e-4  # AdamW peak for fine-tuning an already trained model
DEFAULT_BATCH = 64


@dataclass
class QATResult:
    """A fine-tuned float model (BatchNorm folded), its int8 graph with learned ranges, and the log.

    ``history`` has one dict per epoch: ``loss``, ``train_top1`` (fake-quantised, augmented),
    ``val_top1`` (fake-quantised int8 on the validation split), ``images_per_s``, ``seconds``.
    """

    model: nn.Module
    quantized: Any  # edgecnn.quantize.ptq.QuantizedModel
    folded: list[tuple[str, str]]
    float_val_top1: float
    history: list[dict] = field(default_factory=list)
    data: str = ""
    val_source: str = ""
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"data": self.data, "val": self.val_source, "float_val_top1": self.float_val_top1,
                "qat_val_top1": self.history[-1]["val_top1"] if self.history else None,
                "history": self.history, **self.settings}


class FoldedQATQuantizer(EdgeQuantizer):
    """litert-torch's quantiser in QAT mode without its conv+BatchNorm annotators (BN is folded first)."""

    STATIC_QAT_ONLY_OPS: list[str] = []


def qat_quantizer(per_channel: bool = True) -> FoldedQATQuantizer:
    """Fake-quant config: symmetric int8 weights (per channel), int8 activations with learned ranges."""
    return FoldedQATQuantizer().set_global(quantization_config(per_channel=per_channel, is_qat=True))


def check_training_data(data: Any, num_classes: int, in_chans: int, labels: list[str] | None, where: str) -> None:
    """Raise one clear line when ``data`` (a LabelledData) cannot fine-tune this model."""
    if data.num_classes != num_classes:
        raise EdgeCNNError(f"{where} has {data.num_classes} classes but the model has {num_classes}")
    if data.in_chans != in_chans:
        raise EdgeCNNError(f"{where} is {'grayscale' if data.in_chans == 1 else 'RGB'} but the model takes "
                           f"{in_chans} channel(s)")
    numbered = data.classes == [str(i) for i in range(data.num_classes)]  # IDX/CIFAR folders: by index
    if labels and not numbered and [c.lower() for c in data.classes] != [c.lower() for c in labels]:
        diff = next(i for i, (a, b) in enumerate(zip(data.classes, labels)) if a.lower() != b.lower())
        raise EdgeCNNError(f"{where} class {diff} is {data.classes[diff]!r} but the model's is {labels[diff]!r}; "
                           f"fine-tune on the data the model was trained for")


def unfold_into(target: nn.Module, folded: nn.Module, pairs: list[tuple[str, str]]) -> nn.Module:
    """Write ``folded``'s weights into ``target`` (same architecture, BatchNorm not folded), in place.

    Each folded conv's weight goes to the conv; its bias to the BatchNorm's bias, whose weight, mean
    and variance make it an exact identity in eval mode (``running_var = 1 - eps``).
    """
    wanted = target.state_dict().keys()
    state = {k: v for k, v in folded.state_dict().items() if k in wanted}
    with torch.no_grad():
        for conv_name, bn_name in pairs:
            conv, bn = folded.get_submodule(conv_name), target.get_submodule(bn_name)
            bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
            state[f"{conv_name}.weight"] = conv.weight.detach().clone()
            if target.get_submodule(conv_name).bias is not None:
                state[f"{conv_name}.bias"] = torch.zeros_like(bias)
            state.update({f"{bn_name}.weight": torch.ones_like(bias), f"{bn_name}.bias": bias.detach().clone(),
                          f"{bn_name}.running_mean": torch.zeros_like(bias),
                          f"{bn_name}.running_var": torch.full_like(bias, 1.0 - bn.eps)})
    target.load_state_dict(state, strict=False)
    return target.eval()


def _to_pixels(x: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """Normalised images back to pixel values 0-255 (what :class:`PixelInput` graphs take)."""
    mean = torch.tensor(preprocess.mean).reshape(1, -1, 1, 1)
    std = torch.tensor(preprocess.std).reshape(1, -1, 1, 1)
    return (x * std + mean) * 255.0


@torch.no_grad()
def _top1(predict: Any, loader: Any, preprocess: Preprocess, batch: int) -> float:
    """Top-1 of pixel-input ``predict`` over ``loader``; the last batch is padded to ``batch`` (fixed shapes)."""
    right = seen = 0
    for x, y in loader:
        n = x.shape[0]
        x = _to_pixels(x, preprocess)
        if n < batch:
            x = torch.cat([x, x[-1:].expand(batch - n, *x.shape[1:])])
        right += int((predict(x)[:n].argmax(1) == y).sum())
        seen += n
    return right / max(seen, 1)


@dataclass
class _QATData:
    """What QAT trains and validates on: loaders, the augmentation and the label smoothing used."""

    loader: Any
    sampler: Any
    val_loader: Any
    aug: Any
    smoothing: float
    train_images: int
    val_source: str


def _qat_data(model: nn.Module, preprocess: Preprocess, data: str, batch_size: int, labels: list[str] | None,
              train_config: dict | None, workers: int, seed: int) -> _QATData:
    """Open ``data`` with the checkpoint's recorded split, augmentation and smoothing (defaults without one)."""
    from edgecnn.data.datasets import open_dataset
    from edgecnn.train.config import TrainConfig
    from edgecnn.train.loader import eval_loader, train_loader
    from edgecnn.train.trainer import train_transform

    cfg = model.edgecnn_config
    recorded = TrainConfig.from_dict(train_config) if train_config else None
    dataset = open_dataset(data, val_split=recorded.val_split if recorded else 0.1,
                           seed=recorded.seed if recorded else 0)
    check_training_data(dataset, cfg.num_classes, cfg.in_chans, labels, f"--train-data {data}")
    train_split, val = dataset.split("train"), dataset.split("val")
    if len(train_split) < batch_size:
        raise EdgeCNNError(f"--train-data {data} has {len(train_split)} training images, fewer than the QAT "
                           f"batch size {batch_size}")
    aug = train_transform(recorded or TrainConfig(model=cfg.name, data=str(data), out=""), preprocess)
    loader, sampler = train_loader(train_split, aug, batch_size, seed, workers)
    return _QATData(loader=loader, sampler=sampler, val_loader=eval_loader(val, preprocess, batch_size, workers),
                    aug=aug, smoothing=recorded.label_smoothing if recorded else 0.1,
                    train_images=len(train_split),
                    val_source=f"{len(val)} images ({dataset.source} "
                               f"{'test' if dataset.val_is_test else 'validation'} split)")


def _train_epochs(qat: nn.Module, d: _QATData, preprocess: Preprocess, epochs: int, lr: float, batch_size: int,
                  progress: bool) -> list[dict]:
    """Fake-quantised fine-tuning with AdamW and a cosine schedule; one history entry per epoch."""
    from torchao.quantization.pt2e import (disable_observer, move_exported_model_to_eval,
                                           move_exported_model_to_train)

    from edgecnn.train.progress import Progress

    params = [p for n, p in qat.named_parameters() if not n.startswith("normalize.")]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    steps = epochs * len(d.loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    criterion = nn.CrossEntropyLoss(label_smoothing=d.smoothing)
    history = []
    with Progress(progress) as bar:
        for epoch in range(epochs):
            if epoch == epochs - 1 and epochs > 1:
                qat.apply(disable_observer)  # the last epoch trains weights against fixed ranges
            move_exported_model_to_train(qat)
            d.sampler.set_epoch(epoch)
            task = bar.start(f"QAT epoch {epoch + 1}/{epochs}", len(d.loader))
            seen = right = 0
            loss_sum, start = 0.0, time.perf_counter()
            for x, y in d.loader:
                out = qat(_to_pixels(x, preprocess))
                loss = criterion(out, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                seen += len(y)
                right += int((out.argmax(1) == y).sum())
                loss_sum += float(loss.detach()) * len(y)
                bar.advance(task, 1, loss=loss_sum / seen, acc=right / seen,
                            ips=seen / (time.perf_counter() - start))
            seconds = time.perf_counter() - start
            move_exported_model_to_eval(qat)
            val_top1 = _top1(qat, d.val_loader, preprocess, batch_size)
            history.append({"epoch": epoch + 1, "loss": loss_sum / seen, "train_top1": right / seen,
                            "val_top1": val_top1, "images_per_s": seen / seconds, "seconds": seconds})
            bar.finish(task, f"QAT epoch {epoch + 1}/{epochs}  int8 val {100 * val_top1:.2f}%",
                       loss=loss_sum / seen, acc=right / seen, ips=seen / seconds)
    return history


def _batch_one_int8(graph: nn.Module, trained: dict, preprocess: Preprocess, layout: str, calib_images: int,
                    notes: list[str]) -> Any:
    """The learned weights and ranges moved into a batch-1 int8 graph (:class:`QuantizedModel`)."""
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    from edgecnn.quantize.ptq import QuantizedModel, export_for_quantization, in_layout

    graph.load_state_dict({k: v for k, v in trained.items() if k in graph.state_dict()})
    one = torch.full((1, preprocess.in_chans, preprocess.res, preprocess.res), 128.0)
    single, _ = export_for_quantization(graph, one)
    float_graph = copy.deepcopy(single)
    quantizer = qat_quantizer()
    single = prepare_qat_pt2e(single, quantizer)
    single.load_state_dict(trained)
    move_exported_model_to_eval(single)
    int8 = convert_pt2e(single, fold_quantize=False)
    module, sample = in_layout(int8, one, layout)
    return QuantizedModel(module=module, float_graph=float_graph, graph=int8, sample_args=(sample,),
                          quant_config=QuantConfig(pt2e_quantizer=quantizer), method="qat", layout=layout,
                          per_channel=True, calib_images=calib_images, notes=notes)


def qat_finetune(model: nn.Module, preprocess: Preprocess, data: str, *, epochs: int, lr: float = DEFAULT_LR,
                 batch_size: int = DEFAULT_BATCH, layout: str = "nhwc", labels: list[str] | None = None,
                 train_config: dict | None = None, workers: int = 0, seed: int = 0,
                 progress: bool = True) -> QATResult:
    """Fine-tune ``model`` for ``epochs`` with fake-quantised int8 weights and activations.

    ``data`` is what ``edgecnn train --data`` takes (a dataset name or folder); its classes must be
    the model's. ``train_config`` (a checkpoint's recorded TrainConfig) sets the augmentation,
    validation split and label smoothing; ``layout`` is the interface of the returned int8 graph.
    ``workers``: DataLoader processes (they start with spawn: the converter stack imported here runs
    JAX threads, see :func:`~edgecnn.train.loader.worker_start_method`); 0 loads in this process,
    which costs little next to a fake-quantised training step.
    """
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    from edgecnn.quantize.equalize import fold_batchnorm
    from edgecnn.quantize.ptq import export_for_quantization
    from edgecnn.wrappers import PixelInput

    if epochs < 1 or batch_size < 2 or not lr > 0:
        raise EdgeCNNError(f"QAT needs epochs >= 1, batch size >= 2 and lr > 0 (got {epochs}, {batch_size}, {lr})")
    d = _qat_data(model, preprocess, data, batch_size, labels, train_config, workers, seed)
    torch.manual_seed(seed)
    floating = copy.deepcopy(model).eval()
    folded = fold_batchnorm(floating)
    graph = PixelInput(floating, preprocess).eval()
    for p in graph.normalize.parameters():
        p.requires_grad_(False)
    float_top1 = _top1(graph, d.val_loader, preprocess, batch_size)
    example = torch.full((batch_size, preprocess.in_chans, preprocess.res, preprocess.res), 128.0)
    exported, notes = export_for_quantization(graph, example)
    qat = prepare_qat_pt2e(exported, qat_quantizer())
    history = _train_epochs(qat, d, preprocess, epochs, lr, batch_size, progress)
    quantized = _batch_one_int8(graph, qat.state_dict(), preprocess, layout, d.train_images * epochs, notes)
    settings = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "label_smoothing": d.smoothing,
                "augmentation": {"crop_scale": d.aug.scale[0], "hflip": d.aug.hflip,
                                 "color_jitter": d.aug.color_jitter, "random_erase": d.aug.random_erase},
                "train_images": d.train_images}
    return QATResult(model=floating, quantized=quantized, folded=folded, float_val_top1=float_top1,
                     history=history, data=str(data), val_source=d.val_source, settings=settings)
