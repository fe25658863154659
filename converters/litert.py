"""The default back end: ``litert-torch`` (PyTorch -> TFLite directly, no ONNX in between).

- float32: ``litert_torch.convert``; NHWC input through ``litert_torch.to_channel_last_io``.
- float16 and dynamic-range int8: ``ai-edge-quantizer`` on the float32 file (fp16 weights by float
  casting; int8 per-channel weights with float activations).
- full int8: PT2E post-training quantisation (:mod:`edgecnn.quantize.ptq`: per-channel symmetric
  weights, per-tensor activations, the chosen range method) calibrated on real images, then
  ``litert_torch.convert`` with that quantiser. SiLU and hard-sigmoid are rewritten into ops with
  int8 kernels first (:mod:`edgecnn.quantize.lowering`), so MobileNetV3 and EfficientNet files are
  all-integer too.

litert-torch 0.10 gives a PT2E model int8 inputs and outputs (the boundary quantise ops are folded
into the graph's I/O). The ``_int8`` file with float I/O gets that boundary back: one QUANTIZE op
before the graph and one DEQUANTIZE after it, added with the ``tflite`` schema object API (the
way the TFLite metadata writer edits models). uint8 I/O then comes from TFLite's own
model-interface modifier (:func:`~edgecnn.converters.base.set_int_io`).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from edgecnn.converters.base import ConvertJob, Converted, Converter, Variant, set_int_io, timed


def _tflite_module(model: nn.Module, layout: str) -> nn.Module:
    import litert_torch

    return (litert_torch.to_channel_last_io(model, args=[0]) if layout == "nhwc" else model).eval()


def _convert(module: nn.Module, sample: torch.Tensor) -> bytes:
    import litert_torch

    return bytes(litert_torch.convert(module, (sample,)).model_content())


def _pt2e_int8(module: nn.Module, calib: torch.Tensor, layout: str, method: str) -> bytes:
    """Full-integer PT2E quantisation (:func:`edgecnn.quantize.ptq.quantize_pt2e`) and conversion.

    ``calib`` (N, C, H, W) is what the NCHW ``module`` takes; ``layout="nhwc"`` gives the file HWC
    input. The file has int8 inputs and outputs.
    """
    from edgecnn.quantize.ptq import quantize_pt2e, to_tflite

    return bytes(to_tflite(quantize_pt2e(module, calib, method=method, layout=layout, progress=False)))


def _ai_edge_quantize(float_model: bytes, precision: str) -> bytes:
    """float16 (weights cast to fp16) or dynamic-range int8 (int8 weights, float activations)."""
    from ai_edge_quantizer import qtyping, quantizer, recipe

    q = quantizer.Quantizer(float_model)
    if precision == "float16":
        q.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                 num_bits=16, algorithm_key="float_casting")
    else:
        q.load_quantization_recipe(recipe.dynamic_wi8_afp32())
    return bytes(q.quantize().quantized_model)


def ai_edge_static_int8(float_model: bytes, calib: Sequence, num_threads: int = 1) -> bytes:
    """Full int8 by ai-edge-quantizer's ``static_wi8_ai8`` recipe (per-channel int8 weights, int8
    activations on min/max ranges) on a float32 ``.tflite`` of one input.

    ``calib``: the calibration images as that file takes them (each (H, W, C) or (C, H, W) float32,
    batch dimension left out). ai-edge-quantizer writes int8 I/O; the file gets float I/O back
    (:func:`float_io`: QUANTIZE in, DEQUANTIZE out), the interface of edgecnn's own int8 files. This
    is ai-edge-quantizer's own path, offered for comparison with edgecnn's PT2E int8.
    """
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe

    ((key, signature),) = Interpreter(model_content=float_model).get_signature_list().items()
    (name,) = signature["inputs"]
    q = quantizer.Quantizer(float_model)
    q.load_quantization_recipe(recipe.static_wi8_ai8())
    data = {key: [{name: np.asarray(x, dtype=np.float32)[None]} for x in calib]}
    ranges = q.calibrate(data, num_threads=num_threads)
    return float_io(bytes(q.quantize(ranges, enable_progress_report=False).quantized_model))


def float_io(int8_io_model: bytes) -> bytes:
    """A fully quantised model with int8 I/O given float32 I/O: QUANTIZE in, DEQUANTIZE out.

    The new float tensors take the names of the old I/O tensors (plus ``_float``); signature defs
    are pointed at them, so runtimes see an ordinary float-interface model.
    """
    import flatbuffers
    import numpy as np
    from ai_edge_litert import schema_py_generated as tfl

    model = tfl.ModelT.InitFromPackedBuf(int8_io_model, 0)
    graph = model.subgraphs[0]
    for buf in model.buffers or []:  # data stored after the flatbuffer (ai-edge-quantizer does): inline it,
        if buf.offset > 1:           # since packing writes a new flatbuffer and drops what followed the old one
            buf.data = np.frombuffer(int8_io_model, np.uint8, count=buf.size, offset=buf.offset)
            buf.offset = buf.size = 0

    def opcode(builtin: int) -> int:
        for i, oc in enumerate(model.operatorCodes):
            if max(oc.builtinCode, oc.deprecatedBuiltinCode) == builtin:
                return i
        oc = tfl.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = builtin, min(builtin, 127), 1
        model.operatorCodes.append(oc)
        return len(model.operatorCodes) - 1

    def float_twin(index: int) -> int:
        old = graph.tensors[index]
        t = tfl.TensorT()
        t.shape, t.shapeSignature, t.type, t.buffer = old.shape, old.shapeSignature, tfl.TensorType.FLOAT32, 0
        t.name = (old.name.decode() if isinstance(old.name, bytes) else old.name) + "_float"
        graph.tensors.append(t)
        return len(graph.tensors) - 1

    def op(builtin: int, options_type: int, options: object, src: int, dst: int) -> object:
        o = tfl.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = opcode(builtin), [src], [dst]
        o.builtinOptionsType, o.builtinOptions = options_type, options
        return o

    remap = {}
    for index in list(graph.inputs):
        if graph.tensors[index].type in (tfl.TensorType.INT8, tfl.TensorType.UINT8):
            remap[index] = float_twin(index)
            graph.operators.insert(0, op(tfl.BuiltinOperator.QUANTIZE, tfl.BuiltinOptions.QuantizeOptions,
                                         tfl.QuantizeOptionsT(), remap[index], index))
    for index in list(graph.outputs):
        if graph.tensors[index].type in (tfl.TensorType.INT8, tfl.TensorType.UINT8):
            remap[index] = float_twin(index)
            graph.operators.append(op(tfl.BuiltinOperator.DEQUANTIZE, tfl.BuiltinOptions.DequantizeOptions,
                                      tfl.DequantizeOptionsT(), index, remap[index]))
    graph.inputs = [remap.get(i, i) for i in graph.inputs]
    graph.outputs = [remap.get(i, i) for i in graph.outputs]
    for sig in model.signatureDefs or []:
        for entry in list(sig.inputs or []) + list(sig.outputs or []):
            entry.tensorIndex = remap.get(entry.tensorIndex, entry.tensorIndex)
    builder = flatbuffers.Builder(len(int8_io_model) + 4096)
    builder.Finish(model.Pack(builder), b"TFL3")
    return bytes(builder.Output())


class LiteRTConverter(Converter):
    name, other, library = "litert", "onnx2tf", "litert-torch"

    def convert(self, job: ConvertJob, wanted: Sequence[Variant]) -> tuple[list[Converted], dict[str, bytes]]:
        done: dict[Variant, Converted] = {}
        graph, calib = job.graph(), job.inputs()
        float_variants = [v for v in wanted if v.precision != "int8"]
        if float_variants:
            with self.stage(job, "converting the float32 model"):
                f32, sec = timed(_convert, _tflite_module(graph, job.layout), job.in_layout(calib[:1]))
            done[Variant("float32")] = Converted(Variant("float32"), f32, sec)
            for v in float_variants:
                if v.precision != "float32":
                    with self.stage(job, f"quantising to {v.suffix} with ai-edge-quantizer"):
                        data, s = timed(_ai_edge_quantize, f32, v.precision)
                    done[v] = Converted(v, data, s)
        for mixed, graph_q in ((False, job.quantized), (True, job.mixed)):
            int8 = [v for v in wanted if v.precision == "int8" and v.mixed == mixed]
            if int8:
                done.update(self._int8(job, int8, graph, calib, graph_q))
        return [done[v] for v in wanted], {}

    def _int8(self, job: ConvertJob, int8: Sequence[Variant], graph: nn.Module, calib: torch.Tensor,
              ready: object) -> dict[Variant, Converted]:
        """The full-integer files of ``int8`` (one per interface): from the ``ready`` PT2E graph, or
        calibrated here."""
        if ready is not None:
            from edgecnn.quantize.ptq import to_tflite

            with self.stage(job, "converting the ready int8 graph"):
                native, sec = timed(to_tflite, ready)
        else:
            with self.stage(job, "quantising to full int8 with PT2E"):
                native, sec = timed(_pt2e_int8, graph, calib, job.layout, job.calib_method)
        with self.stage(job, "int8 interfaces"):
            native = bytes(native)
            with_float_io = float_io(native)
            # litert-torch writes int8 I/O; the others start from float I/O
            return {v: Converted(v, native if v.io == "int8" else set_int_io(with_float_io, v.io, job.scratch), sec)
                    for v in int8}
