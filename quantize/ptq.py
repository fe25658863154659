"""Full-integer post-training quantisation (PT2E) of a float PyTorch model for litert-torch.

The recipe: ``torch.export`` the eval-mode model at batch 1, annotate it with litert-torch's
``PT2EQuantizer`` (int8 activations per tensor, int8 weights per output channel, symmetric),
``prepare_pt2e`` (folds BatchNorm, inserts observers), run the real calibration images through
it, ``convert_pt2e`` (observers -> quantize/dequantize pairs), then ``litert_torch.convert`` with
the same quantizer in its ``QuantConfig`` so the converter lowers the q/dq pairs to int8 kernels.

Found on this stack (torch 2.13, torchao 0.18, litert-torch 0.10) and handled here:

* The model is exported with ``strict=True``. Non-strict export (torch 2.13's default) drops the
  ``source_fn_stack`` node metadata that litert-torch's pattern annotators match on, so residual
  ``add``, pooling and ``mul`` stay unannotated and end up as float islands (DEQUANTIZE -> ADD ->
  QUANTIZE) in the .tflite: 9 float ADDs in MobileNetV2. Strict export makes them int8.
* litert-torch fuses ``conv -> relu`` but not ``conv -> relu6``: the conv got its own output
  observer on the pre-activation range and the ReLU6 shared that grid (EfficientNet-Lite0: a
  median 3x, up to 19x coarser than [0, 6] on 255 steps; -4 points top-1). The quantizer here
  annotates conv + ReLU6 as one op (:func:`annotate_conv_relu6`); the file gets CONV_2D with a
  fused RELU6 on a [0, 6] grid.
* ``silu`` and ``hardsigmoid`` are not annotated upstream and each lowers to several TFLite ops
  between one dequantise and one quantise, which then ran in float (MobileNetV3-small's int8 file:
  18 float ops, ADD x9 + MUL x9, its squeeze-excite gates; EfficientNet-B0: every SiLU, LOGISTIC +
  MUL). The quantiser rewrites them before annotating (:mod:`edgecnn.quantize.lowering`:
  ``x * sigmoid(x)``, ``relu6(x + 3) * (1/6)``) and gives each op an int8 grid with a TFLite kernel
  (LOGISTIC on its fixed 1/256 grid, ADD with a fused RELU6, MUL); the files are all-integer.
* The .tflite that litert-torch writes in this mode has **int8 input and int8 output tensors**
  (the first QUANTIZE and last DEQUANTIZE are folded into the signature, with their scale and
  zero point on the tensors). Callers quantise inputs as ``round(x / scale) + zero_point``.
* NHWC interface (``layout="nhwc"``): calibration runs on the NCHW graph; the *quantised* graph is
  then wrapped with ``litert_torch.to_channel_last_io`` and that wrapper is what gets converted.
  TFLite is NHWC inside, so the wrapper's permute cancels the converter's own layout transpose:
  the int8 file has no TRANSPOSE op at all (the NCHW one keeps one at the input).

>>> q = quantize_pt2e(model, calib)            # calib: (N, C, H, W) normalised float images
>>> tflite_bytes = to_tflite(q)                 # or litert_torch.convert(q.module, q.sample_args,
...                                             #                         quant_config=q.quant_config)
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import torch
from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer
from torch import nn
from torch.fx import GraphModule, Node

from edgecnn.console import progress_range
from edgecnn.errors import EdgeCNNError
from edgecnn.quantize.lowering import annotate_gates, batch_norms_as_depthwise, decompose_gates
from edgecnn.quantize.methods import (AUTO_CANDIDATES, AUTO_HOLDOUT, DEFAULT_METHOD, DEFAULT_ROUNDING,  # noqa: F401
                                      METHODS, MIN_AUTO_IMAGES, MIN_CALIB_IMAGES, ROUNDINGS)
from edgecnn.quantize.observers import PercentileObserver

LAYOUTS = ("nhwc", "nchw")


@dataclass
class QuantizedModel:
    """A calibrated, quantised PT2E graph ready for ``litert_torch.convert``.

    ``module`` takes ``sample_args`` (batch 1, in ``layout``); ``quant_config`` must be passed to the
    converter so it lowers the quantize/dequantize pairs to int8 kernels. ``float_graph`` (the
    exported float model) and ``graph`` (the quantised one, NCHW) share node provenance, which the
    per-layer report (:func:`edgecnn.quantize.report.layer_sqnr`) uses to pair their outputs.
    """

    module: nn.Module
    float_graph: GraphModule
    graph: GraphModule
    sample_args: tuple[torch.Tensor, ...]
    quant_config: object  # litert_torch.quantize.quant_config.QuantConfig
    method: str
    layout: str
    per_channel: bool
    calib_images: int
    keep_float: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)
    rounding: str = DEFAULT_ROUNDING
    adaround: dict | None = None  # :func:`edgecnn.quantize.adaround.adaround`'s report

    def simulate(self, x: torch.Tensor) -> torch.Tensor:
        """int8 outputs simulated in PyTorch (q/dq graph) for an NCHW batch, one image at a time."""
        with torch.no_grad():
            return torch.cat([self.graph(x[i:i + 1]) for i in range(x.shape[0])])


def check_method(method: str) -> str:
    """Return ``method`` if it is a known activation-range method, else raise one clear line."""
    if method not in METHODS:
        raise EdgeCNNError(f"unknown quantisation method {method!r}; choose one of "
                           f"{', '.join(METHODS)}")
    return method


def check_rounding(rounding: str) -> str:
    """Return ``rounding`` if it is a known weight-rounding method, else raise one clear line."""
    if rounding not in ROUNDINGS:
        raise EdgeCNNError(f"unknown weight rounding {rounding!r}; choose one of {', '.join(ROUNDINGS)}")
    return rounding


def check_calibration(calib: torch.Tensor, in_chans: int | None, method: str) -> None:
    """Raise a one-line :class:`EdgeCNNError` when ``calib`` cannot calibrate ``method``."""
    if not isinstance(calib, torch.Tensor) or calib.dim() != 4 or not calib.is_floating_point():
        raise EdgeCNNError("calibration images must be a float tensor (N, C, H, W) of normalised "
                           f"pixels, got {getattr(calib, 'shape', type(calib).__name__)}")
    if in_chans is not None and calib.shape[1] != in_chans:
        raise EdgeCNNError(f"calibration images have {calib.shape[1]} channel(s) but the model takes "
                           f"{in_chans} ({'grayscale' if in_chans == 1 else 'RGB'})")
    need = MIN_CALIB_IMAGES[method]
    if calib.shape[0] < need:
        raise EdgeCNNError(f"method {method!r} needs at least {need} calibration images, got "
                           f"{calib.shape[0]}; add images to the calibration folder or pick "
                           f"--method minmax (needs {MIN_CALIB_IMAGES['minmax']})")
    if not torch.isfinite(calib).all():
        raise EdgeCNNError("calibration images contain NaN or infinite values")


def quantization_config(method: str = DEFAULT_METHOD, per_channel: bool = True, is_qat: bool = False):
    """litert-torch's symmetric int8 config with the activation observer chosen by ``method``."""
    from litert_torch.quantize.pt2e_quantizer import get_symmetric_quantization_config
    from torchao.quantization.pt2e.observer import HistogramObserver, MinMaxObserver

    check_method(method)
    base = get_symmetric_quantization_config(is_per_channel=per_channel, is_qat=is_qat)
    if is_qat:
        return base  # fake-quant with moving-average observers; ranges are learned in training
    observer = {"minmax": MinMaxObserver, "histogram": HistogramObserver,
                "percentile": PercentileObserver}[method]
    act = dataclasses.replace(base.input_activation,
                              observer_or_fake_quant_ctr=observer.with_args(eps=2 ** -12))
    return dataclasses.replace(base, input_activation=act, output_activation=act)


class EdgeQuantizer(PT2EQuantizer):
    """litert-torch's ``PT2EQuantizer`` that leaves the modules named in ``keep_float`` in float.

    The upstream ``set_module_name`` filter parses dynamo's old ``L__self___a_b`` keys of
    ``nn_module_stack``; torch 2.13 keys it by object id, so it matches nothing. This filter
    reads the qualified module names that the stack's values carry instead.
    """

    def __init__(self, keep_float: Sequence[str] = ()) -> None:
        super().__init__()
        self.keep_float = tuple(keep_float)

    def _quantized_here(self, node: Node) -> bool:
        names = [v[0] for v in node.meta.get("nn_module_stack", {}).values()]
        return not any(n == k or n.startswith(k + ".") for n in names for k in self.keep_float)

    def transform_for_annotation(self, model: GraphModule) -> GraphModule:
        decompose_gates(model)  # silu, hardsigmoid -> ops with int8 kernels, before scalars become attrs
        batch_norms_as_depthwise(model)  # BatchNorms no conv absorbed -> int8 depthwise convs
        return super().transform_for_annotation(model)

    def _annotate_for_static_quantization_config(self, model: GraphModule) -> GraphModule:
        annotate_conv_relu6(model, self.global_config, self._quantized_here)
        annotate_gates(model, self.global_config, self._quantized_here)
        self._annotate_all_static_patterns(model, self.global_config, self._quantized_here)
        return model


CLAMPS = (torch.ops.aten.hardtanh.default, torch.ops.aten.hardtanh_.default)


def annotate_conv_relu6(model: GraphModule, config, keep) -> None:
    """Annotate each conv whose only user is a ReLU6 (``hardtanh(x, 0, 6)``) as one fused op.

    litert-torch's ``conv_relu`` pattern matches ``relu`` only, so a conv feeding ReLU6 got its
    own output observer: the *pre-activation* range (tens, both signs) set the int8 grid of a
    tensor the clamp then cut to [0, 6]. Fused, only the clamp's output is quantised (TFLite's
    CONV_2D with a RELU6 fused activation). ``keep(node)`` False leaves a node unannotated.
    """
    from litert_torch.quantize.pt2e_quantizer_utils import (_is_annotated, _mark_nodes_as_annotated,
                                                            get_bias_qspec, get_input_act_qspec,
                                                            get_output_act_qspec, get_weight_qspec)
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    for clamp in list(model.graph.nodes):
        if clamp.op != "call_function" or clamp.target not in CLAMPS or tuple(clamp.args[1:3]) != (0.0, 6.0):
            continue
        conv = clamp.args[0]
        if not (isinstance(conv, Node) and conv.target == torch.ops.aten.conv2d.default and len(conv.users) == 1):
            continue
        qspecs = {conv.args[0]: get_input_act_qspec(config), conv.args[1]: get_weight_qspec(config)}
        if len(conv.args) > 2 and isinstance(conv.args[2], Node):
            qspecs[conv.args[2]] = get_bias_qspec(config)
        partition = [clamp, conv, *list(qspecs)[1:]]
        if _is_annotated(partition) or not all(keep(n) for n in partition):
            continue
        conv.meta["quantization_annotation"] = QuantizationAnnotation(input_qspec_map=qspecs, _annotated=True)
        clamp.meta["quantization_annotation"] = QuantizationAnnotation(
            output_qspec=get_output_act_qspec(config), _annotated=True)
        _mark_nodes_as_annotated(partition)


def make_quantizer(method: str = DEFAULT_METHOD, per_channel: bool = True,
                   keep_float: Sequence[str] = (), is_qat: bool = False) -> EdgeQuantizer:
    """The quantizer for ``method``; modules named in ``keep_float`` stay float."""
    return EdgeQuantizer(keep_float).set_global(quantization_config(method, per_channel, is_qat))


def export_for_quantization(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, list[str]]:
    """``torch.export`` at batch 1 for PT2E; strict mode keeps the metadata the annotators need."""
    notes: list[str] = []
    try:
        exported = torch.export.export(model, (example,), strict=True)
    except Exception as exc:  # dynamo cannot trace every model; non-strict still quantises convs
        notes.append(f"strict torch.export failed ({exc.__class__.__name__}); used non-strict "
                     "export, so residual adds and pooling may stay float")
        warnings.warn(notes[-1])
        exported = torch.export.export(model, (example,))
    return exported.module(), notes


def quantize_pt2e(model: nn.Module, calib: torch.Tensor, *, method: str = DEFAULT_METHOD,
                  per_channel: bool = True, layout: str = "nhwc", keep_float: Sequence[str] = (),
                  rounding: str = DEFAULT_ROUNDING, progress: bool = True) -> QuantizedModel:
    """Calibrate and quantise ``model`` with PT2E for litert-torch (full integer, int8).

    ``calib`` holds N calibration images (N, C, H, W), preprocessed exactly as at inference
    (resize, crop, normalise); they run one at a time (the exported graph takes batch 1).
    ``method`` picks the activation ranges (see :data:`METHODS`); weights are symmetric int8,
    per output channel unless ``per_channel=False``. ``layout`` is the interface of the result:
    ``"nhwc"`` (apps' camera frames; ``calib`` stays NCHW) or ``"nchw"`` (the module's own
    interface, unwrapped: any module may be passed, e.g. one that normalises raw pixels inside,
    with ``calib`` in the layout it takes; the channel check applies to zoo models only).
    ``keep_float`` names modules
    (``model.named_modules()`` names, e.g. ``"classifier.1"``) left in float. ``rounding``
    (:data:`ROUNDINGS`): ``"adaround"`` re-rounds the int8 weights of the converted graph on the
    calibration images (:func:`edgecnn.quantize.adaround.adaround`, its report in ``adaround``).
    """
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.utils import _fuse_conv_bn_

    from litert_torch.quantize.quant_config import QuantConfig

    check_method(method)
    check_rounding(rounding)
    if layout not in LAYOUTS:
        raise EdgeCNNError(f"unknown layout {layout!r}; choose nhwc or nchw")
    cfg = getattr(model, "edgecnn_config", None)
    check_calibration(calib, cfg.in_chans if cfg is not None else None, method)
    keep_float = tuple(keep_float)
    known = dict(model.named_modules())
    missing = [n for n in keep_float if n not in known or n == ""]
    if missing:
        raise EdgeCNNError(f"--keep-float: model has no layer {missing[0]!r}; layer names look like "
                           f"{', '.join(n for n, _ in list(model.named_modules())[2:5])}")

    model = model.eval()
    quantizer = make_quantizer(method, per_channel, keep_float)
    graph, notes = export_for_quantization(model, calib[:1])
    float_graph = copy.deepcopy(graph)
    _fuse_conv_bn_(float_graph)  # as prepare_pt2e does, so conv outputs pair up with the int8 graph's
    graph = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for i in progress_range(range(calib.shape[0]), f"calibrating ({method})", progress):
            graph(calib[i:i + 1])
    graph = convert_pt2e(graph, fold_quantize=False)
    report = None
    if rounding == "adaround":
        from edgecnn.quantize.adaround import adaround

        report = adaround(graph, calib, progress=progress)
    module, sample = in_layout(graph, calib[:1], layout)
    return QuantizedModel(module=module, float_graph=float_graph, graph=graph, sample_args=(sample,),
                          quant_config=QuantConfig(pt2e_quantizer=quantizer), method=method,
                          layout=layout, per_channel=per_channel, calib_images=int(calib.shape[0]),
                          keep_float=keep_float, notes=notes, rounding=rounding, adaround=report)


NO_OP_TARGETS = ("dropout", "alias", "clone", "contiguous", "detach", "flatten", "view", "reshape", "getitem",
                 "quantize_per", "dequantize_per")
INT8_IN_TFLITE = ("hardswish",)  # one int8 HARD_SWISH kernel (annotated by edgecnn.quantize.lowering)


def unquantized_layers(q: QuantizedModel, prefix: str = "") -> dict[str, list[str]]:
    """Compute ops the quantiser left unannotated, by op: ``{"layer_norm": ["encoder.layers.0.ln_1", ...]}``.

    The names are ``model.named_modules()`` names (what ``--keep-float`` takes) without ``prefix``
    (the wrapper's, e.g. ``"model."``). The converter runs these in float unless it has a fused
    int8 kernel for the pattern (:data:`INT8_IN_TFLITE` are left out: TFLite has HARD_SWISH). SiLU
    and hardsigmoid are rewritten into annotated ops (:mod:`edgecnn.quantize.lowering`), so they are
    not listed; layer norms, attention matmuls and ``--keep-float`` layers are. The file's own
    float-op count is the truth.
    """
    found: dict[str, list[str]] = {}
    for node in q.graph.graph.nodes:
        if node.op != "call_function" or "quantization_annotation" in node.meta:
            continue
        target = str(node.target)
        if any(k in target for k in NO_OP_TARGETS):
            continue
        op = target.removeprefix("aten.").split(".")[0].rstrip("_")
        if op in INT8_IN_TFLITE:
            continue
        stack = list(node.meta.get("nn_module_stack", {}).values())
        found.setdefault(op, []).append(stack[-1][0].removeprefix(prefix) if stack else node.name)
    return found


def in_layout(graph: nn.Module, sample: torch.Tensor, layout: str) -> tuple[nn.Module, torch.Tensor]:
    """The NCHW quantised ``graph`` and its batch-1 ``sample`` with the interface ``layout`` asks for."""
    if layout != "nhwc":
        return graph, sample.contiguous()
    import litert_torch

    return litert_torch.to_channel_last_io(graph, args=[0]), sample.permute(0, 2, 3, 1).contiguous()


def choose_method(model: nn.Module, calib: torch.Tensor, candidates: Sequence[str] = AUTO_CANDIDATES,
                  holdout: float = AUTO_HOLDOUT, progress: bool = True) -> tuple[str, list[dict]]:
    """``--method auto``: quantise with each candidate on part of ``calib``, keep the best.

    The last ``holdout`` share of the images is held back; each candidate is judged by the top-1
    agreement of its simulated int8 outputs with float there, then by logit SQNR (dB).
    Returns the chosen method and one score dict per candidate.
    """
    from edgecnn.quantize.report import output_metrics

    if calib.shape[0] < MIN_AUTO_IMAGES:
        raise EdgeCNNError(f"--method auto needs at least {MIN_AUTO_IMAGES} calibration images (it holds "
                           f"back {int(100 * holdout)}% to compare methods), got {calib.shape[0]}")
    n_held = max(1, int(round(calib.shape[0] * holdout)))
    fit, held = calib[:-n_held], calib[-n_held:]
    with torch.no_grad():
        ref = torch.cat([model.eval()(held[i:i + 16]) for i in range(0, n_held, 16)]).numpy()
    scores = []
    for method in candidates:
        q = quantize_pt2e(model, fit, method=method, layout="nchw", progress=progress)
        m = output_metrics(ref, q.simulate(held).numpy())
        scores.append({"method": method, "top1_agreement": m["top1_agreement"], "sqnr_db": m["sqnr_db"],
                       "cosine": m["cosine"], "calib_images": int(fit.shape[0]), "judged_on": n_held})
    best = max(scores, key=lambda s: (s["top1_agreement"], s["sqnr_db"]))
    return best["method"], scores


def to_tflite(q: QuantizedModel) -> bytes:
    """Convert a :class:`QuantizedModel` to full-integer ``.tflite`` bytes with litert-torch."""
    import litert_torch

    edge = litert_torch.convert(q.module, q.sample_args, quant_config=q.quant_config)
    return edge.model_content()
