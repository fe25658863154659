"""The runtimes ``edgecnn bench`` measures, and running one measurement point in its own process.

A *point* is a JSON-ready dict, made only by :func:`edgecnn.benchmarks.sweep.make_points` (local,
ssh and adb points alike): ``runtime`` (a key of :data:`RUNTIMES`, or a remote target's runtime),
``threads`` (None off the CPU), ``protocol`` (:class:`~edgecnn.benchmarks.measure.Protocol` as a
dict), for remote points ``target`` and ``options``, and what to run: ``path`` (a ``.tflite``/``.onnx``
file) and/or ``spec`` (a zoo model: ``name``, ``knobs``, ``res``, ``num_classes``, ``in_chans``), plus
descriptive fields carried into the result row (``model``, ``precision``, ``res``, ``macs``,
``accuracy``). It stays a dict because it crosses process boundaries as JSON (worker stdin, results
files) and the worker's loaders fill in what they learn (``precision``, ``file_bytes``).

:func:`run_point` starts ``python -m edgecnn.benchmarks.worker`` for every point: a runtime that
crashes or hangs on a bad model becomes an error row and cannot take the harness down, and the
RSS increase measured in the worker belongs to that one model.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np

from edgecnn.benchmarks.measure import Init, gmacs_per_s, interpreter_runner, random_input, tflite_precision


@dataclass(frozen=True)
class Runtime:
    """A way to run a model. ``suffix``: the file it runs (None: it builds the zoo model itself);
    ``from_spec``: it can run a zoo model without a file; ``device``: "cpu" or "cuda".

    ``loader(point)`` runs in the worker and returns the init that :func:`measure` times; an
    ``after`` attribute on that init, if any, runs once the measurement is done (untimed).
    """

    name: str
    label: str
    suffix: str | None
    device: str
    from_spec: bool
    loader: Callable[[dict], Init]
    precision: str | None = None  # fixed by the runtime (PyTorch), else the file's

    @property
    def threaded(self) -> bool:
        return self.device == "cpu"


# ---------------------------------------------------------------- loaders (run inside the worker)

def _litert(point: dict) -> Init:
    from edgecnn.converters.tflite_runtime import load_interpreter

    loaded = []

    def init():
        loaded.append(load_interpreter(point["path"], num_threads=point["threads"]))
        return interpreter_runner(loaded[0])

    def after() -> None:  # reading the graph's tensor types takes ms: outside the timed init
        if not point.get("precision"):
            point["precision"] = tflite_precision(loaded[0])

    init.after = after
    return init


ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
              "tensor(uint8)": np.uint8, "tensor(int8)": np.int8, "tensor(int32)": np.int32,
              "tensor(int64)": np.int64, "tensor(bool)": np.bool_}


def _onnx_bytes_from_spec(spec: dict) -> bytes:
    """Export the zoo model to ONNX in memory (torch.onnx, opset 17), for ONNX Runtime points."""
    import io

    import torch

    model, x = _torch_model(spec)
    buf = io.BytesIO()
    torch.onnx.export(model, (x,), buf, input_names=["input"], output_names=["logits"],
                      opset_version=17, dynamo=False)
    return buf.getvalue()


def _onnx_precision(data: bytes) -> str:
    import onnx

    model = onnx.load_model_from_string(data)
    quant_ops = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger", "MatMulInteger"}
    if any(n.op_type in quant_ops for n in model.graph.node):
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
        return "float16"
    return "float32"


def _ort(provider: str) -> Callable[[dict], Init]:
    def loader(point: dict) -> Init:
        import onnxruntime as ort

        if point.get("path"):
            with open(point["path"], "rb") as f:
                data = f.read()
        else:
            data = _onnx_bytes_from_spec(point["spec"])
            point["file_bytes"] = len(data)
        if not point.get("precision"):
            point["precision"] = _onnx_precision(data)

        def init():
            opts = ort.SessionOptions()
            if point.get("threads"):
                opts.intra_op_num_threads = point["threads"]
                opts.inter_op_num_threads = 1
            try:
                session = ort.InferenceSession(data, opts, providers=[provider])
            except Exception as exc:  # ORT raises its own exception types for bad files
                first = str(exc).strip().splitlines()[0]
                raise ValueError(f"ONNX Runtime cannot load this model: {first}") from None
            rng = np.random.default_rng(0)
            feeds = {}
            for inp in session.get_inputs():
                shape = list(inp.shape)
                if shape and not isinstance(shape[0], int):
                    shape[0] = 1  # a symbolic batch dimension: feed one image
                if not all(isinstance(s, int) and s > 0 for s in shape):
                    raise ValueError(f"input {inp.name!r} has unknown dimensions {inp.shape}: only "
                                     "the batch may be symbolic; export with a fixed input size")
                if inp.type not in ORT_DTYPES:
                    raise ValueError(f"input {inp.name!r} has type {inp.type}, which cannot be fed")
                feeds[inp.name] = random_input(shape, ORT_DTYPES[inp.type], rng)
            return lambda: session.run(None, feeds)

        return init

    return loader


def _torch_model(spec: dict):
    """The zoo model of ``spec`` in eval mode and a batch-1 input (random weights: latency only)."""
    import torch

    from edgecnn.models import create_model

    model = create_model(spec["name"], num_classes=spec.get("num_classes") or 1000,
                         in_chans=spec.get("in_chans"), **spec.get("knobs", {})).eval()
    in_chans = model.edgecnn_config.in_chans
    return model, torch.randn(1, in_chans, spec["res"], spec["res"])


def _torch(device: str, half: bool = False, channels_last: bool = False) -> Callable[[dict], Init]:
    def loader(point: dict) -> Init:
        import torch

        if point.get("threads"):
            torch.set_num_threads(point["threads"])

        def init():
            model, x = _torch_model(point["spec"])
            model, x = model.to(device), x.to(device)
            if half:
                model, x = model.half(), x.half()
            if channels_last:
                model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
            sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

            def run():
                with torch.inference_mode():
                    model(x)
                sync()

            return run

        return init

    return loader


RUNTIMES: dict[str, Runtime] = {r.name: r for r in (
    Runtime("litert", "LiteRT Interpreter + XNNPACK", ".tflite", "cpu", False, _litert),
    Runtime("onnxruntime", "ONNX Runtime CPU", ".onnx", "cpu", True, _ort("CPUExecutionProvider")),
    Runtime("torch", "PyTorch eager", None, "cpu", True, _torch("cpu"), "float32"),
    Runtime("torch-cuda", "PyTorch CUDA", None, "cuda", True, _torch("cuda"), "float32"),
    Runtime("torch-cuda-fp16", "PyTorch CUDA fp16", None, "cuda", True, _torch("cuda", half=True),
            "float16"),
    Runtime("torch-cuda-fp16-cl", "PyTorch CUDA fp16 channels_last", None, "cuda", True,
            _torch("cuda", half=True, channels_last=True), "float16"),
    Runtime("onnxruntime-cuda", "ONNX Runtime CUDA provider", ".onnx", "cuda", True,
            _ort("CUDAExecutionProvider")),
)}


# ---------------------------------------------------------------- availability (in the parent)

def unavailable_reason(name: str) -> str | None:
    """Why runtime ``name`` cannot run on this machine, or None when it can."""
    if name == "litert":
        if not any(importlib.util.find_spec(m) for m in ("ai_edge_litert", "tflite_runtime", "tensorflow")):
            return "no TFLite runtime installed (pip install ai-edge-litert)"
        return None
    if name.startswith("onnxruntime"):
        if not importlib.util.find_spec("onnxruntime"):
            return "onnxruntime is not installed (pip install onnxruntime)"
        if name == "onnxruntime-cuda":
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                return "onnxruntime has no CUDAExecutionProvider here (needs onnxruntime-gpu and CUDA)"
        return None
    import torch

    if RUNTIMES[name].device == "cuda" and not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    return None


# ---------------------------------------------------------------- one point, one process

def point_key(point: dict) -> str:
    """The identity of a point in a results file: what runs, where, how (resume skips known keys)."""
    keep = {k: point.get(k) for k in ("target", "path", "spec", "runtime", "precision", "threads",
                                      "protocol", "options")}
    return json.dumps(keep, sort_keys=True, default=str)


def finish_row(point: dict, result: dict) -> dict:
    """A result row: the point's fields, the measurement, GMAC/s and its status."""
    row = {k: v for k, v in point.items() if k != "protocol"}
    row.update(result)
    row.setdefault("status", "ok")
    row["key"] = point_key(point)
    row["gmacs_per_s"] = gmacs_per_s(row.get("macs"), row.get("median_ms"))
    return row


def error_row(point: dict, message: str, status: str = "error") -> dict:
    """A row for a point that could not be measured (``status`` 'error' or 'skipped')."""
    return finish_row(point, {"status": status, "error": message})


def run_point(point: dict, timeout: float = 600.0, python: str = sys.executable) -> dict:
    """Measure ``point`` in a fresh ``python -m edgecnn.benchmarks.worker`` process; returns its row.

    A crash, a timeout or a worker error becomes a row with ``status`` 'error' and a one-line
    ``error``; it never raises for a bad model.
    """
    try:
        proc = subprocess.run([python, "-m", "edgecnn.benchmarks.worker"], input=json.dumps(point),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return error_row(point, f"timed out after {timeout:g} s (the worker was killed)")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if lines:
        try:
            return finish_row(point, json.loads(lines[-1]))
        except json.JSONDecodeError:
            pass
    err = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
    tail = f": {err[-1][:300]}" if err else ""
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name
        return error_row(point, f"the runtime crashed ({sig}) while running this model{tail}")
    return error_row(point, f"the benchmark worker failed (exit {proc.returncode}){tail}")

