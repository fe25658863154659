"""The fidelity report of an int8 model: how far it is from the float model, and where it lost.

- **Outputs** (the ``.tflite`` run with :class:`edgecnn.converters.tflite_runtime.TFLiteModel`
  against the float PyTorch model, on evaluation images that did not calibrate): top-1
  agreement, mean logit cosine similarity, SQNR of the logits in dB
  (``10 log10(sum ref^2 / sum (ref - int8)^2)``), softmax KL divergence; with labels, top-1/top-5
  of both and the paired top-1 change with its interval (:mod:`edgecnn.paired`).
- **Per layer** (PT2E numeric debugger, ``torchao.quantization.pt2e``: loggers on the float and the
  quantised graph, paired by node provenance): each conv/linear/add/pool output's SQNR int8 vs
  float over the images, and ``loss_db``, how many dB the layer itself lost relative to its
  worst input -- the column that tells which layers hurt. Sorted worst first.

Written as a rich table, a JSON file and a bar chart PNG of per-layer SQNR.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from edgecnn.console import finite
from edgecnn.io import atomic_path, write_text

# aten ops whose outputs the per-layer table lists (activations fold into their producer).
LAYER_OPS = ("conv2d", "linear", "add", "mul", "cat", "mean", "adaptive_avg_pool2d", "avg_pool2d",
             "max_pool2d", "addmm")


def sqnr_db(ref: np.ndarray, out: np.ndarray) -> float:
    """Signal-to-quantisation-noise ratio in dB; +inf when equal."""
    ref, out = np.asarray(ref, np.float64), np.asarray(out, np.float64)
    noise = float(np.sum((ref - out) ** 2))
    signal = float(np.sum(ref ** 2))
    return math.inf if noise == 0 else 10.0 * math.log10(max(signal, 1e-30) / noise)


def _topk(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Top-k accuracy; ties (common in int8 logits) go to the lowest class index, as ``argmax`` does."""
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float(np.mean([labels[i] in top[i] for i in range(len(labels))]))


def output_metrics(ref: np.ndarray, out: np.ndarray, labels: np.ndarray | None = None) -> dict[str, Any]:
    """Agreement, cosine and SQNR of ``out`` logits (N, K) against ``ref``; accuracies with ``labels``."""
    ref, out = np.asarray(ref, np.float32), np.asarray(out, np.float32)
    cos = np.sum(ref * out, 1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1), 1e-12)
    m: dict[str, Any] = {
        "images": int(len(ref)),
        "top1_agreement": float(np.mean(ref.argmax(1) == out.argmax(1))),
        "cosine": float(np.mean(cos)),
        "cosine_min": float(np.min(cos)),
        "sqnr_db": sqnr_db(ref, out),
    }
    m["kl_divergence"] = kl_divergence(ref, out)
    if labels is not None:
        from edgecnn.paired import paired_difference

        labels = np.asarray(labels)
        k = min(5, ref.shape[1])
        m.update(float_top1=_topk(ref, labels, 1), int8_top1=_topk(out, labels, 1),
                 float_top5=_topk(ref, labels, k), int8_top5=_topk(out, labels, k),
                 top1_change=paired_difference(ref.argmax(1) == labels, out.argmax(1) == labels).to_dict())
    return m


def kl_divergence(ref: np.ndarray, out: np.ndarray) -> float:
    """Mean KL(softmax(ref) || softmax(out)) over images (nats): how far int8 moved the class scores."""
    ref, out = np.asarray(ref, np.float64), np.asarray(out, np.float64)
    log_p = ref - ref.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    log_q = out - out.max(1, keepdims=True)
    log_q -= np.log(np.exp(log_q).sum(1, keepdims=True))
    return float(np.mean(np.sum(np.exp(log_p) * (log_p - log_q), axis=1)))


@dataclass
class LayerFidelity:
    """One layer's output error: ``sqnr_db`` int8 vs float (dB), ``loss_db`` lost at this layer."""

    name: str
    op: str
    sqnr_db: float
    loss_db: float


def _layer_name(node) -> str:
    """The module that owns ``node`` (``model.`` of a pixel-input wrapper stripped)."""
    stack = node.meta.get("nn_module_stack") or {}
    owner = list(stack.values())[-1][0] if stack else ""
    return (owner.removeprefix("model.") if owner.startswith("model.") else owner) or node.name


def _copying_loggers(model: torch.nn.Module) -> torch.nn.Module:
    """Make the numeric debugger's output loggers keep a copy of each output.

    They keep ``x.detach()``, which shares storage: an in-place op after the logged node (``silu_``,
    ``hardtanh_`` of ``inplace=True`` activations) overwrote the log, so a conv's entry held its
    activation's output. The float and int8 graphs matched only while both ran the same in-place op.
    """
    from torchao.quantization.pt2e._numeric_debugger import OutputLogger

    def log_copy(logger: OutputLogger, x: Any) -> Any:
        logger.stats.append(x.detach().clone() if isinstance(x, torch.Tensor) else x)
        return x

    for mod in model.modules():
        if isinstance(mod, OutputLogger):
            mod.forward = functools.partial(log_copy, mod)
    return model


def layer_sqnr(q, images: torch.Tensor, progress: bool = False) -> list[LayerFidelity]:
    """Per-layer SQNR of a :class:`~edgecnn.quantize.ptq.QuantizedModel` on ``images`` (N, C, H, W).

    Runs the float and the quantised PT2E graphs with the numeric debugger's output loggers, one
    image at a time (bounded memory), accumulating signal and noise energy per layer.
    """
    from torchao.quantization.pt2e._numeric_debugger import (OutputLogger, extract_results_from_loggers,
                                                             prepare_for_propagation_comparison)

    ref_model = _copying_loggers(prepare_for_propagation_comparison(q.float_graph))
    act_model = _copying_loggers(prepare_for_propagation_comparison(q.graph))
    # the layer each logged node belongs to, and the logged nodes feeding it
    info, inputs = {}, {}
    for node in ref_model.graph.nodes:
        if node.op == "call_module" and isinstance(getattr(ref_model, node.target), OutputLogger):
            logger = getattr(ref_model, node.target)
            producer = node.args[0]
            op = getattr(producer.target, "__name__", str(producer.target)).split(".")[0]
            info[logger.debug_info] = (_layer_name(producer), op)
            inputs[logger.debug_info] = [getattr(ref_model, a.target).debug_info for a in producer.args
                                         if getattr(a, "op", None) == "call_module"
                                         and isinstance(getattr(ref_model, a.target), OutputLogger)]
    signal: dict[Any, float] = {}
    noise: dict[Any, float] = {}
    from edgecnn.console import progress_range

    with torch.no_grad():
        for i in progress_range(range(images.shape[0]), "per-layer SQNR", progress):
            ref_model(images[i:i + 1])
            act_model(images[i:i + 1])
            ref, act = extract_results_from_loggers(ref_model), extract_results_from_loggers(act_model)
            for key, (_, _, ref_stats) in ref.items():
                if key not in act or not isinstance(ref_stats[-1], torch.Tensor):
                    continue
                r, a = ref_stats[-1].double(), act[key][2][-1]
                if not isinstance(a, torch.Tensor) or a.shape != r.shape:
                    continue
                signal[key] = signal.get(key, 0.0) + float(r.pow(2).sum())
                noise[key] = noise.get(key, 0.0) + float((r - a.double()).pow(2).sum())
            for m in (ref_model, act_model):
                for mod in m.modules():
                    if isinstance(mod, OutputLogger):
                        mod.stats.clear()
    sqnr = {k: (math.inf if noise[k] == 0 else 10 * math.log10(max(signal[k], 1e-30) / noise[k]))
            for k in signal}

    def upstream(key, seen=()) -> float:
        """The worst SQNR among the nearest measured inputs of ``key`` (inf at the graph input)."""
        values = []
        for k in inputs.get(key, []):
            if k in seen:
                continue
            values.append(sqnr[k] if k in sqnr else upstream(k, seen + (k,)))
        return min(values, default=math.inf)

    layers = []
    for key, value in sqnr.items():
        name, op = info[key]
        if op in LAYER_OPS:
            before = upstream(key)  # inf at the graph input: nothing lost before this layer
            loss = (before - value) if math.isfinite(before) and math.isfinite(value) else 0.0
            layers.append(LayerFidelity(name, op, value, loss))
    return sorted(layers, key=lambda l: l.sqnr_db)


@dataclass
class FidelityReport:
    """Everything the fidelity report says; ``to_dict`` is the JSON written beside the model."""

    model: str
    method: str
    calib_images: int
    outputs: dict[str, Any]
    layers: list[LayerFidelity] = field(default_factory=list)
    layer_images: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "method": self.method, "calib_images": self.calib_images,
                "outputs": self.outputs, "layer_images": self.layer_images,
                "layers": [asdict(l) for l in self.layers], **self.extra}


PROPOSE_MIN_LOSS_DB = 3.0  # a layer that loses this much by itself is worth keeping float (red in the plot)
PROPOSE_MAX_LAYERS = 2


def propose_keep_float(layers: Sequence[LayerFidelity], modules: Sequence[str]) -> list[dict]:
    """The ``--keep-float`` proposal: the (at most :data:`PROPOSE_MAX_LAYERS`) layers that lost the most
    dB themselves, at least :data:`PROPOSE_MIN_LOSS_DB`, among ``modules`` (the names ``--keep-float``
    takes); ``[{"layer", "op", "lost_db"}]``, worst first. Empty when no layer stands out."""
    known = set(modules)
    worst = sorted((l for l in layers if l.name in known and math.isfinite(l.loss_db)), key=lambda l: -l.loss_db)
    chosen: list[dict] = []
    for l in worst:
        if l.loss_db < PROPOSE_MIN_LOSS_DB or len(chosen) == PROPOSE_MAX_LAYERS:
            break
        if l.name not in (c["layer"] for c in chosen):
            chosen.append({"layer": l.name, "op": l.op, "lost_db": round(l.loss_db, 2)})
    return chosen


def plot_layer_sqnr(layers: Sequence[LayerFidelity], path: str | Path, title: str = "") -> Path:
    """Bar chart PNG of per-layer SQNR (dB) in network order of the report list, worst first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [l for l in layers if math.isfinite(l.sqnr_db)]
    fig, ax = plt.subplots(figsize=(10, max(3.0, 0.22 * len(shown) + 1)))
    ax.barh([f"{l.name} ({l.op})" for l in shown][::-1], [l.sqnr_db for l in shown][::-1],
            color=["#c0392b" if l.loss_db >= 3 else "#2e86c1" for l in shown][::-1])
    ax.set_xlabel("output SQNR int8 vs float (dB); red: lost >= 3 dB at this layer")
    ax.set_title(title or "per-layer SQNR, worst first")
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return Path(path)


def write_report(report: FidelityReport, out_dir: str | Path, stem: str = "fidelity") -> dict[str, Path]:
    """``<stem>.json`` and (with layers) ``<stem>_layers.png`` in ``out_dir``, written atomically."""
    out_dir = Path(out_dir)
    paths = {"json": write_text(out_dir / f"{stem}.json", json.dumps(finite(report.to_dict()), indent=2) + "\n")}
    if report.layers:
        paths["png"] = plot_layer_sqnr(report.layers, out_dir / f"{stem}_layers.png",
                                       f"{report.model}: per-layer SQNR ({report.method})")
    return paths
