"""The app-facing interface of an exported classifier: pixel inputs and uint8 camera-byte I/O.

Two facts, measured with MediaPipe Tasks 0.10's ``ImageClassifier`` on this project's files, decide
what an app-ready ``.tflite`` looks like:

- MediaPipe applies ONE mean/std to all channels. Metadata with ImageNet's per-channel values is
  refused ("Per-channel image normalization is not available"). So a model trained on
  ``(pixel / 255 - mean) / std`` per channel is exported with that normalisation inside the graph
  (:class:`PixelInput`): the file takes pixel values 0-255, and its metadata says
  ``mean_255 = 0, std_255 = 1`` (:data:`PIXEL_MEAN`, :data:`PIXEL_STD` on the [0, 1] scale that
  :func:`edgecnn.converters.metadata.add_metadata` takes).
- MediaPipe accepts only uint8 or float32 inputs, and feeds uint8 models the raw bytes. litert-torch
  PT2E and ai-edge-quantizer both emit int8 inputs/outputs directly, and TFLite's own interface
  modifier (``_pywrap_modify_model_interface``) only rewrites *float* inputs that feed a QUANTIZE op,
  so it leaves such files unchanged. :func:`int8_to_uint8_io` does the int8 -> uint8 step the same
  way TFLite's modifier does it for float files: a uint8 tensor with the same scale and
  ``zero_point + 128`` and a QUANTIZE op between it and the int8 graph (and the reverse at the
  outputs). The values are unchanged (a shift by 128), so the uint8 file computes exactly what the
  int8 one does. With :class:`PixelInput`, the uint8 input's quantisation maps camera bytes to pixel
  values (``scale`` ~ 1, ``zero_point`` 0 after calibration on real photos).

The edit uses the generated ``tflite`` schema object API (``ModelT``) from ``ai_edge_litert``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from edgecnn.errors import EdgeCNNError

# add_metadata(mean=..., std=...) for a PixelInput file: input = (pixel - 0) / 1 in 0-255 units
PIXEL_MEAN = (0.0, 0.0, 0.0)
PIXEL_STD = (1.0 / 255.0, 1.0 / 255.0, 1.0 / 255.0)


def pixel_metadata_normalization(in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) to pass to ``add_metadata`` for a :class:`PixelInput` model with ``in_chans``."""
    return PIXEL_MEAN[:1] * in_chans, PIXEL_STD[:1] * in_chans


class PixelInput(nn.Module):
    """``model`` behind its own normalisation: takes NCHW pixel values 0-255 (float).

    ``forward(x) = model((x / 255 - mean) / std)``, as one per-channel multiply-add (a MUL/ADD pair
    at the input of the converted graph). ``mean``/``std`` are for pixels scaled to [0, 1].
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise EdgeCNNError(f"mean/std need one positive std per mean, got {list(mean)}, {list(std)}")
        self.model = model
        mean_t, std_t = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
        self.register_buffer("scale", (1.0 / (255.0 * std_t)).view(1, -1, 1, 1))
        self.register_buffer("shift", (-mean_t / std_t).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x * self.scale + self.shift)


def int8_to_uint8_io(model_bytes: bytes, inputs: bool = True, outputs: bool = True) -> bytes:
    """A copy of an int8-I/O ``.tflite`` whose int8 graph inputs/outputs are uint8 (camera bytes).

    Each int8 input (scale s, zero point z) becomes a uint8 tensor (s, z + 128) feeding a QUANTIZE
    op into the original tensor; each int8 output gets a QUANTIZE op into a new uint8 tensor. Signature
    definitions follow. Non-int8 inputs/outputs are left as they are; a file with none raises.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as tfl

    from edgecnn.converters.metadata import TFLITE_IDENTIFIER, _model_root, _split_zip

    flat, files = _split_zip(bytes(model_bytes))
    if files:
        raise EdgeCNNError("convert the I/O types before adding metadata (the file carries associated files)")
    model = tfl.ModelT.InitFromObj(_model_root(tfl, flat))
    graph = model.subgraphs[0]
    graph.inputs, graph.outputs = [int(i) for i in graph.inputs], [int(i) for i in graph.outputs]
    quantize = _opcode_index(tfl, model, tfl.BuiltinOperator.QUANTIZE)
    changed = {}  # old tensor index -> new tensor index

    def uint8_twin(index: int, suffix: str) -> int:
        old = graph.tensors[index]
        new = tfl.TensorT()
        new.shape, new.shapeSignature = old.shape, old.shapeSignature
        new.type, new.buffer = tfl.TensorType.UINT8, 0
        new.name = old.name
        old.name = (old.name.decode() if isinstance(old.name, bytes) else old.name) + suffix
        new.quantization = tfl.QuantizationParametersT()
        new.quantization.scale = [float(old.quantization.scale[0])]
        new.quantization.zeroPoint = [int(old.quantization.zeroPoint[0]) + 128]
        graph.tensors.append(new)
        changed[index] = len(graph.tensors) - 1
        return changed[index]

    def is_int8(index: int) -> bool:
        t = graph.tensors[index]
        q = t.quantization
        return t.type == tfl.TensorType.INT8 and q is not None and q.scale is not None and len(q.scale) == 1

    def quantize_op(src: int, dst: int) -> Any:
        op = tfl.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = quantize, [src], [dst]
        return op

    if inputs:
        for pos, index in enumerate(list(graph.inputs)):
            if is_int8(index):
                new = uint8_twin(index, "_int8")
                graph.inputs[pos] = new
                graph.operators.insert(0, quantize_op(new, index))
    if outputs:
        for pos, index in enumerate(list(graph.outputs)):
            if is_int8(index):
                new = uint8_twin(index, "_int8")
                graph.outputs[pos] = new
                graph.operators.append(quantize_op(index, new))
    if not changed:
        raise EdgeCNNError("the model has no int8 inputs or outputs to turn into uint8")
    for sig in model.signatureDefs or []:
        for tensor_map in (sig.inputs or []) + (sig.outputs or []):
            tensor_map.tensorIndex = changed.get(tensor_map.tensorIndex, tensor_map.tensorIndex)
    builder = flatbuffers.Builder(len(flat) + 4096)
    builder.Finish(model.Pack(builder), TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def _opcode_index(tfl: Any, model: Any, builtin: int) -> int:
    """Index of ``builtin`` in the model's operator codes, appended (version 2: int8/uint8) if absent."""
    for i, code in enumerate(model.operatorCodes or []):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            code.version = max(code.version, 2)
            return i
    code = tfl.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 2
    model.operatorCodes = list(model.operatorCodes or []) + [code]
    return len(model.operatorCodes) - 1

