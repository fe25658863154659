"""Run a ``.tflite`` file from Python: one loader for every runtime, one runner for every I/O type.

:func:`load_interpreter` tries ``ai_edge_litert`` (XNNPACK on by default), then the legacy
``tflite_runtime`` (old device images with NumPy 1), then ``tensorflow.lite``; each is imported
only when needed.

:class:`TFLiteModel` hides the differences between exported files:

- **layout**: NHWC files (what apps feed) and NCHW files (PyTorch's) both take the NCHW batch a
  PyTorch model takes; the runner transposes.
- **input types**: float32 inputs get the values as they are; int8/uint8 inputs get them quantised
  with the input tensor's scale and zero point, ``q = round(x / scale) + zero_point``.
- **camera bytes**: :meth:`TFLiteModel.predict_pixels` feeds raw uint8 HWC pixels the way an app
  (and MediaPipe Tasks) does. A uint8-input model receives the bytes unchanged: its input
  quantisation, ``real = scale * (byte - zero_point)``, *is* the mapping from camera bytes to the
  values its graph computes with (for a model that normalises inside the graph this is
  ``scale = 1``, ``zero_point = 0``). Float and int8 inputs get the pixels normalised first, with
  the normalisation embedded in the file's TFLite metadata when it has one (as MediaPipe does),
  else with ``preprocess``.
- **batching**: a batch-1 model runs one image at a time; a dynamic-batch model is resized.
- **outputs**: dequantised to float32 logits of shape (N, classes).

The interpreter parses the file in-process: check untrusted files with
:func:`edgecnn.converters.inspect.validate_tflite` (a subprocess) before loading them here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecnn.errors import EdgeCNNError

if TYPE_CHECKING:
    from edgecnn.data.transforms import Preprocess

# module, attribute holding the Interpreter class; tried in this order
RUNTIMES = (
    ("ai_edge_litert.interpreter", "Interpreter"),
    ("tflite_runtime.interpreter", "Interpreter"),
    ("tensorflow.lite", "Interpreter"),
)
QUANTIZED_DTYPES = (np.int8, np.uint8, np.int16)


def interpreter_class() -> type:
    """The first TFLite ``Interpreter`` class that imports; raises if no runtime is installed."""
    failures = []
    for module, attr in RUNTIMES:
        try:
            return getattr(importlib.import_module(module), attr)
        except Exception as exc:  # ImportError, or NumPy-ABI errors of old tflite_runtime wheels
            failures.append(f"{module} ({exc.__class__.__name__})")
    raise EdgeCNNError("no TFLite runtime could be imported: tried " + ", ".join(failures)
                       + "; install one with: pip install ai-edge-litert")


def load_interpreter(model: str | Path | bytes, num_threads: int | None = None) -> Any:
    """An interpreter with its tensors allocated, from a ``.tflite`` path or the file's bytes.

    ``num_threads`` None leaves the runtime's default. A missing or unloadable file raises
    :class:`EdgeCNNError` with one line.
    """
    cls = interpreter_class()
    if isinstance(model, (bytes, bytearray, memoryview)):
        kwargs, what = {"model_content": bytes(model)}, "the given .tflite bytes"
    else:
        path = Path(model)
        if not path.is_file():
            raise EdgeCNNError(f"TFLite model {path} does not exist or is not a file")
        kwargs, what = {"model_path": str(path)}, str(path)
    try:
        interpreter = cls(num_threads=num_threads, **kwargs)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise EdgeCNNError(f"cannot load {what} as a TFLite model: {first}") from None
    return interpreter


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of a TFLite graph.

    ``scale``/``zero_point`` are the per-tensor quantisation (``real = scale * (q - zero_point)``);
    0.0/0 for float tensors. ``shape_signature`` has -1 for dynamic dimensions.
    """

    name: str
    index: int
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]
    dtype: np.dtype
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.dtype in QUANTIZED_DTYPES and self.scale != 0.0

    @classmethod
    def from_detail(cls, d: dict) -> "TensorInfo":
        scale, zero_point = d.get("quantization", (0.0, 0))
        sig = d.get("shape_signature", d["shape"])
        return cls(name=d["name"], index=int(d["index"]), shape=tuple(int(s) for s in d["shape"]),
                   shape_signature=tuple(int(s) for s in sig), dtype=np.dtype(d["dtype"]),
                   scale=float(scale), zero_point=int(zero_point))

    def to_dict(self) -> dict:
        """JSON-ready description (dtype as a string) for reports."""
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype.name,
                "scale": self.scale, "zero_point": self.zero_point}

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Float values -> this tensor's integer type (round to nearest, saturate)."""
        info = np.iinfo(self.dtype)
        q = np.round(x / self.scale) + self.zero_point
        return np.clip(q, info.min, info.max).astype(self.dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        """This tensor's values as float32 (unchanged for float tensors)."""
        if not self.quantized:
            return q.astype(np.float32)
        return ((q.astype(np.float32) - self.zero_point) * self.scale).astype(np.float32)


def infer_layout(shape: tuple[int, ...], in_chans: int | None = None) -> str:
    """"NHWC" or "NCHW" for a 4-D image input shape; the channel count decides when given.

    Without ``in_chans``, a small last dimension (<= 4) next to a larger second one means NHWC,
    and the reverse NCHW; for square images, equal H and W settle the rest. Default NHWC.
    """
    if len(shape) != 4:
        raise EdgeCNNError(f"expected a 4-D image input (N, H, W, C) or (N, C, H, W), got shape {list(shape)}")
    _, a, b, c = shape
    if in_chans is not None:
        if c == in_chans and a != in_chans:
            return "NHWC"
        if a == in_chans and c != in_chans:
            return "NCHW"
    if c <= 4 < a:
        return "NHWC"
    if a <= 4 < c:
        return "NCHW"
    if b == c and a != b:
        return "NCHW"
    return "NHWC"


class TFLiteModel:
    """A single-input image classifier in a ``.tflite`` file, called like the PyTorch model.

    >>> m = TFLiteModel("exports/mobilenet_v2_1.00_224/mobilenet_v2_1.00_224_int8.tflite")
    >>> m.layout, m.inputs[0].dtype, m.num_classes
    ('NHWC', dtype('uint8'), 1000)
    >>> logits = m.predict(torch_batch_nchw)              # (N, 1000) float32
    >>> logits = m.predict_pixels(hwc_uint8, preprocess)  # what an app feeds
    """

    def __init__(self, model: str | Path | bytes, *, num_threads: int | None = None,
                 in_chans: int | None = None) -> None:
        self.source = model if isinstance(model, (bytes, bytearray)) else Path(model)
        self.interpreter = load_interpreter(model, num_threads=num_threads)
        self.inputs = [TensorInfo.from_detail(d) for d in self.interpreter.get_input_details()]
        self.outputs = [TensorInfo.from_detail(d) for d in self.interpreter.get_output_details()]
        if len(self.inputs) != 1:
            raise EdgeCNNError(f"expected an image classifier with one input, this model has {len(self.inputs)}")
        self.layout = infer_layout(self.inputs[0].shape, in_chans)
        shape = self.inputs[0].shape
        self.in_chans = shape[3] if self.layout == "NHWC" else shape[1]
        self.input_hw = (shape[1], shape[2]) if self.layout == "NHWC" else (shape[2], shape[3])
        self._metadata: dict | None = None  # read on first use

    @property
    def num_classes(self) -> int:
        return int(np.prod(self.outputs[0].shape[1:]))

    @property
    def metadata(self) -> dict:
        """The file's TFLite metadata (:func:`edgecnn.converters.metadata.read_metadata`; {} if none)."""
        if self._metadata is None:
            from edgecnn.converters.metadata import read_metadata  # local: only files that need it

            data = self.source.read_bytes() if isinstance(self.source, Path) else bytes(self.source)
            self._metadata = read_metadata(data)
        return self._metadata

    @property
    def metadata_normalization(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(mean, std) in 0-255 pixel units from the file's TFLite metadata, or None without it."""
        if self.metadata.get("mean_255") is None:
            return None
        return np.asarray(self.metadata["mean_255"], np.float32), np.asarray(self.metadata["std_255"], np.float32)

    def predict(self, x: Any) -> np.ndarray:
        """Float32 logits (N, classes) for a float NCHW batch (torch tensor or numpy).

        ``x`` holds the values the graph's float input stands for (the normalised tensor a PyTorch
        model takes); int8/uint8 inputs receive them quantised with the input's scale/zero point.
        """
        x = _as_numpy(x).astype(np.float32, copy=False)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4:
            raise EdgeCNNError(f"expected an NCHW batch, got shape {list(x.shape)}")
        if self.layout == "NHWC":
            x = x.transpose(0, 2, 3, 1)
        info = self.inputs[0]
        return self._run(info.quantize(x) if info.quantized else x)

    def predict_pixels(self, pixels: Any, preprocess: "Preprocess | None" = None) -> np.ndarray:
        """Float32 logits (N, classes) for raw uint8 pixels, HWC or NHWC, as an app feeds them.

        A uint8-input model gets the bytes unchanged (camera-byte contract, see the module doc).
        Other models get ``(pixel - mean_255) / std_255`` with the normalisation of the file's
        TFLite metadata, or ``preprocess`` (mean/std on [0, 1] pixels) when it has none.
        """
        pixels = np.asarray(_as_numpy(pixels))
        if pixels.dtype != np.uint8:
            raise EdgeCNNError(f"predict_pixels takes uint8 pixels, got {pixels.dtype}")
        if pixels.ndim == 3:
            pixels = pixels[None]
        if pixels.ndim != 4 or pixels.shape[3] != self.in_chans:
            raise EdgeCNNError(f"expected NHWC pixels with {self.in_chans} channels, got shape {list(pixels.shape)}")
        info = self.inputs[0]
        if info.dtype == np.uint8:
            x = pixels if self.layout == "NHWC" else pixels.transpose(0, 3, 1, 2)
            return self._run(np.ascontiguousarray(x))
        norm = self.metadata_normalization
        if norm is None:
            if preprocess is None:
                raise EdgeCNNError("this model has no normalisation metadata: pass the Preprocess it was trained with")
            norm = (np.asarray(preprocess.mean, np.float32) * 255, np.asarray(preprocess.std, np.float32) * 255)
        x = (pixels.astype(np.float32) - norm[0]) / norm[1]
        return self.predict(x.transpose(0, 3, 1, 2))

    def _run(self, x: np.ndarray) -> np.ndarray:
        """Run a batch already in the input's layout and dtype; dequantised (N, classes) float32."""
        info, n = self.inputs[0], x.shape[0]
        expected = self.inputs[0].shape[1:]
        if tuple(x.shape[1:]) != expected:
            raise EdgeCNNError(f"input of shape {list(x.shape)} does not fit the model's {list(info.shape)}")
        interp = self.interpreter
        if info.shape_signature[0] == -1 and info.shape[0] != n:
            interp.resize_tensor_input(info.index, [n, *expected])
            interp.allocate_tensors()
            self.inputs[0] = TensorInfo.from_detail(interp.get_input_details()[0])
            info = self.inputs[0]
        step = info.shape[0]
        if n % step:
            raise EdgeCNNError(f"batch of {n} does not divide into the model's fixed batch of {step}")
        out = []
        for i in range(0, n, step):
            interp.set_tensor(info.index, np.ascontiguousarray(x[i:i + step]))
            interp.invoke()
            out.append(self.outputs[0].dequantize(interp.get_tensor(self.outputs[0].index)).reshape(step, -1))
        return np.concatenate(out, axis=0)


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    return np.asarray(x)
