"""Gates that litert-torch's PT2E quantiser leaves float, rewritten and annotated so they run in int8.

litert-torch 0.10 annotates conv, linear, add, mul, cat, pooling and (fixed-range) sigmoid/softmax.
``aten.silu`` and ``aten.hardsigmoid`` are not annotated, and the converter lowers each to several
TFLite ops (LOGISTIC + MUL; ADD + MUL) between one dequantise and one quantise, so the ops inside
ran in float: 18 float ops (ADD x9, MUL x9) in MobileNetV3-small's int8 file, 2 per SiLU in
EfficientNet. Here, on the exported graph before annotation (:func:`decompose_gates`, called from
the quantiser's ``transform_for_annotation``, so PTQ and QAT both get it):

* ``silu(x)`` becomes ``x * sigmoid(x)``;
* ``hardsigmoid(x)`` becomes ``hardtanh(x + 3, 0, 6) * (1/6)`` (ReLU6 of ``x + 3``, scaled).

Both are the same function in float (to the last bit or one rounding of the scale). Then
:func:`annotate_gates` gives every op of them an int8 grid TFLite has a kernel for:

* ``sigmoid`` takes its input on the activation grid and outputs on LOGISTIC's fixed int8 grid
  (scale 1/256, zero point -128); a ``mul`` by a sigmoid (SiLU's, and a squeeze-excite gate's)
  reads that grid as it is (litert-torch's own ``mul`` annotation re-quantised it: a QUANTIZE op and
  a second rounding);
* ``add -> ReLU6`` is one op, observed after the clamp only (TFLite's ADD with a fused RELU6; the
  pre-clamp range would waste the grid, as for :func:`~edgecnn.quantize.ptq.annotate_conv_relu6`);
  the ``* (1/6)`` is an int8 MUL by an int8 constant;
* ``hardswish`` (one int8 HARD_SWISH kernel) gets its input and output grids here instead of
  borrowing its consumer's;
* ``softmax`` gets SOFTMAX's fixed int8 output grid (1/256, -128) whatever feeds it: litert-torch
  annotates it only when its input node itself has an output grid, so after a flatten (SqueezeNet:
  pool -> flatten -> softmax) it stayed float.

A BatchNorm that follows no conv (DenseNet's pre-activation ``concat -> BN -> ReLU -> conv``) is not
folded by ``prepare_pt2e`` and no annotator knows it: the converter wrote it as four float ops (SUB,
MUL, MUL, ADD), 248 in DenseNet-121's int8 file. :func:`batch_norms_as_depthwise` rewrites each such
eval-mode BatchNorm into the per-channel affine map it is, a 1x1 depthwise conv (weight
``gamma / sqrt(var + eps)``, bias ``beta - mean * weight``): an int8 DEPTHWISE_CONV_2D with one
per-channel weight each (exact on its int8 grid), the ReLU after it fused.

The float model and the float graph kept for the per-layer report are not touched (the rewrite runs
inside ``prepare_pt2e``); the last node of each rewrite keeps the original node's provenance, so the
report pairs ``silu``/``hardsigmoid`` in float with its int8 replacement.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
from torch.fx import GraphModule, Node

aten = torch.ops.aten
SILU = (aten.silu.default, aten.silu_.default)
HARDSIGMOID = (aten.hardsigmoid.default, aten.hardsigmoid_.default)
HARDSWISH = (aten.hardswish.default, aten.hardswish_.default)
SIGMOID = (aten.sigmoid.default, aten.sigmoid_.default)
SOFTMAX = (aten._softmax.default, aten.softmax.int)
ADD = (aten.add.Tensor, aten.add_.Tensor)
MUL = (aten.mul.Tensor, aten.mul_.Tensor)
CLAMPS = (aten.hardtanh.default, aten.hardtanh_.default)
INPLACE = (aten.silu_.default, aten.hardsigmoid_.default)
# provenance the numeric debugger and the per-layer report follow: only the node that replaces the
# original keeps it, so one float node pairs with one int8 node
PROVENANCE = ("from_node", "custom")


def _insert(gm: GraphModule, target, args: tuple, like: Node, last: bool) -> Node:
    node = gm.graph.call_function(target, args)
    node.meta.update({k: v for k, v in like.meta.items() if last or k not in PROVENANCE})
    return node


def _constant(gm: GraphModule, value: float, like: Node) -> Node | float:
    """``value`` as a buffer of ``like``'s rank (all sizes 1), or the plain number if the rank is unknown.

    A 0-d constant (what litert-torch makes of a Python scalar) keeps the converter's layout pass
    from running the op in NHWC: it wraps the op in layout changes (RESHAPE on a squeeze-excite's
    1x1 map, TRANSPOSE on a larger one). A (1, 1, 1, 1) constant broadcasts in either layout.
    """
    val = like.meta.get("val")
    if not isinstance(val, torch.Tensor):
        return value
    return _buffer(gm, "_edgecnn_gate_constant_", torch.full((1,) * val.dim(), value, dtype=val.dtype),
                   val.new_full((1,) * val.dim(), value))


def _buffer(gm: GraphModule, prefix: str, value: torch.Tensor, meta_val: torch.Tensor) -> Node:
    """A ``get_attr`` node reading ``value``, registered on ``gm`` as a new buffer named ``prefix<n>``
    (``meta_val``: what the graph's shape propagation sees for it, fake like its neighbours')."""
    from torchao.quantization.pt2e.utils import get_new_attr_name_with_prefix

    name = get_new_attr_name_with_prefix(prefix)(gm)
    gm.register_buffer(name, value)
    node = gm.graph.get_attr(name)
    node.meta["val"] = meta_val
    return node


def _replace(gm: GraphModule, node: Node, new: Node) -> None:
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)


def _recompiled(gm: GraphModule, rewritten: int) -> int:
    """``rewritten``, after checking and recompiling ``gm`` if anything was."""
    if rewritten:
        gm.graph.lint()
        gm.recompile()
    return rewritten


def decompose_gates(gm: GraphModule) -> int:
    """Rewrite ``silu`` and ``hardsigmoid`` of ``gm`` into ops with int8 TFLite kernels (in place).

    ``silu(x) -> x * sigmoid(x)``; ``hardsigmoid(x) -> hardtanh(x + 3, 0, 6) * (1/6)``. Every new
    node carries the original's module stack (so ``--keep-float`` and the layer names still apply).
    Returns how many nodes were rewritten.
    """
    rewritten = 0
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in SILU + HARDSIGMOID:
            continue
        x = node.args[0]
        with gm.graph.inserting_before(node):
            if node.target in SILU:
                gate = _insert(gm, aten.sigmoid.default, (x,), node, last=False)
                out = _insert(gm, aten.mul.Tensor, (x, gate), node, last=True)
            else:
                shifted = _insert(gm, aten.add.Tensor, (x, _constant(gm, 3.0, node)), node, last=False)
                clamped = _insert(gm, aten.hardtanh.default, (shifted, 0.0, 6.0), node, last=False)
                out = _insert(gm, aten.mul.Tensor, (clamped, _constant(gm, 1.0 / 6.0, node)), node,
                              last=True)
        if node.target in INPLACE and isinstance(x, Node):  # later readers of x saw the mutated tensor
            for user in [u for u in x.users if order.get(u, -1) > order[node]]:
                user.replace_input_with(x, out)
        _replace(gm, node, out)
        rewritten += 1
    return _recompiled(gm, rewritten)


BATCH_NORM = aten.batch_norm.default


def _attr(gm: GraphModule, node: Node) -> torch.Tensor:
    """The tensor a ``get_attr`` node reads."""
    return functools.reduce(getattr, node.target.split("."), gm)


def batch_norms_as_depthwise(gm: GraphModule) -> int:
    """Rewrite every eval-mode 4-D ``batch_norm`` left in ``gm`` as a 1x1 depthwise conv (in place).

    Runs after ``prepare_pt2e`` folded the BatchNorms that follow a conv, so what is left stands
    alone. Training-mode BatchNorms (QAT) are left as they are. Returns how many were rewritten.
    """
    rewritten = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target != BATCH_NORM:
            continue
        x, *tensors, training, _, eps = node.args[:8]
        weight, bias, mean, var = tensors
        val = node.meta.get("val")
        if training or not isinstance(val, torch.Tensor) or val.dim() != 4 \
                or not all(isinstance(a, Node) and a.op == "get_attr" for a in (mean, var)):
            continue
        with torch.no_grad():
            weight, bias, mean, var = (None if a is None else _attr(gm, a) for a in tensors)
            scale = torch.rsqrt(var + eps) * (1.0 if weight is None else weight)
            shift = (0.0 if bias is None else bias) - mean * scale
        channels = scale.numel()
        with gm.graph.inserting_before(node):
            attrs = [_buffer(gm, prefix, value.detach().clone(), val.new_empty(value.shape))
                     for prefix, value in (("_edgecnn_bn_weight_", scale.reshape(channels, 1, 1, 1)),
                                           ("_edgecnn_bn_bias_", shift.reshape(channels)))]
            conv = _insert(gm, aten.conv2d.default, (x, *attrs, [1, 1], [0, 0], [1, 1], channels), node,
                           last=True)
        _replace(gm, node, conv)
        for stale in (a for a in tensors if isinstance(a, Node) and not a.users):
            gm.graph.erase_node(stale)
        rewritten += 1
    return _recompiled(gm, rewritten)


def _is_relu6(node: object) -> bool:
    return isinstance(node, Node) and node.op == "call_function" and node.target in CLAMPS \
        and tuple(node.args[1:3]) == (0.0, 6.0)


def annotate_gates(model: GraphModule, config, keep: Callable[[Node], bool]) -> None:
    """Annotate sigmoid, softmax, mul-by-sigmoid, add -> ReLU6 and hardswish (see the module doc).

    Runs before litert-torch's own annotators, which skip what is annotated here. ``keep(node)``
    False leaves a node unannotated (``--keep-float``).
    """
    from litert_torch.quantize.pt2e_quantizer_utils import (_is_annotated, _mark_nodes_as_annotated,
                                                            get_fixed_qparams_qspec, get_input_act_qspec,
                                                            get_output_act_qspec)
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, SharedQuantizationSpec

    act_in, act_out, fixed = get_input_act_qspec(config), get_output_act_qspec(config), get_fixed_qparams_qspec(config)
    if act_in is None or act_out is None:
        return

    def free(nodes: list[Node]) -> bool:
        return not _is_annotated(nodes) and all(keep(n) for n in nodes)

    def inputs(node: Node, shared: dict[Node, object]) -> dict[Node, object]:
        return {a: shared.get(a, act_in) for a in node.args if isinstance(a, Node)}

    nodes = [n for n in model.graph.nodes if n.op == "call_function"]
    sigmoids = set()
    for node in nodes:
        if node.target in SIGMOID + SOFTMAX and fixed is not None and isinstance(node.args[0], Node) \
                and free([node]):
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map={node.args[0]: act_in}, output_qspec=fixed, _annotated=True)
            _mark_nodes_as_annotated([node])
            if node.target in SIGMOID:
                sigmoids.add(node)
        elif node.target in HARDSWISH and isinstance(node.args[0], Node) and free([node]):
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map={node.args[0]: act_in}, output_qspec=act_out, _annotated=True)
            _mark_nodes_as_annotated([node])
    for node in nodes:
        if node.target in ADD and len(node.users) == 1 and _is_relu6(clamp := next(iter(node.users))) \
                and free([node, clamp]):
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map=inputs(node, {}), _annotated=True)
            clamp.meta["quantization_annotation"] = QuantizationAnnotation(output_qspec=act_out, _annotated=True)
            _mark_nodes_as_annotated([node, clamp])
        elif node.target in MUL and free([node]) and any(a in sigmoids or _is_relu6(a) for a in node.args):
            # x * sigmoid(.) and relu6(.) * (1/6): read the gate's own int8 grid, no re-quantising
            shared = {a: SharedQuantizationSpec(a) for a in node.args if a in sigmoids}
            node.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map=inputs(node, shared), output_qspec=act_out, _annotated=True)
            _mark_nodes_as_annotated([node])
