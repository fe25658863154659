"""What is inside a ``.tflite`` file: I/O tensors, op histogram, int8 leftovers, metadata.

:func:`inspect_tflite` parses the flatbuffer with the generated ``tflite`` schema that
``ai_edge_litert`` ships (pure Python, no interpreter). Files from elsewhere go through
:func:`inspect_tflite_safe` and :func:`validate_tflite`, which do the work in a child process
(``python -m edgecnn.converters.inspect PATH --json [--validate]``) with a timeout, so that a
crash in native code (the interpreter on a corrupt file) cannot take the caller down; every
failure becomes one :class:`EdgeCNNError` line.

The int8 counts show why an "int8" file may not be fast: ``transpose`` (layout shuffles left by
the converter), ``quantize``/``dequantize`` (boundaries between integer and float islands) and
``float_ops`` (ops other than QUANTIZE/DEQUANTIZE whose output is float32/float16).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from edgecnn.errors import EdgeCNNError

TFLITE_IDENTIFIER = b"TFL3"
FLOAT_TYPES = ("FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16")
BOUNDARY_OPS = ("QUANTIZE", "DEQUANTIZE")
DEFAULT_TIMEOUT_S = 120.0
_ERROR_MARK = "edgecnn-inspect-error: "


def check_tflite_file(path: str | Path) -> Path:
    """``path`` if it is a readable file that starts like a TFLite flatbuffer, else raise one line."""
    path = Path(path)
    if not path.is_file():
        raise EdgeCNNError(f"TFLite model {path} does not exist or is not a file")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise EdgeCNNError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(head) < 8 or head[4:8] != TFLITE_IDENTIFIER:
        found = head[4:8] if len(head) >= 8 else b""
        raise EdgeCNNError(f"{path} is not a TFLite model (file identifier {found!r}, expected b'TFL3')")
    return path


def _enum_names(enum_class: Any) -> dict[int, str]:
    return {v: k for k, v in vars(enum_class).items() if not k.startswith("_") and isinstance(v, int)}


def _tensor_info(tensor: Any, type_names: dict[int, str]) -> dict:
    q = tensor.Quantization()
    scales = q.ScaleAsNumpy() if q is not None and q.ScaleLength() else []
    zero_points = q.ZeroPointAsNumpy() if q is not None and q.ZeroPointLength() else []
    info = {"name": (tensor.Name() or b"").decode("utf-8", "replace"),
            "shape": [int(s) for s in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else [],
            "dtype": type_names.get(tensor.Type(), str(tensor.Type())).lower(),
            "scale": float(scales[0]) if len(scales) == 1 else None,
            "zero_point": int(zero_points[0]) if len(zero_points) == 1 else None}
    if len(scales) > 1:
        info["per_channel"] = len(scales)
    return info


def _precision(ops: Counter, float_ops: int, const_types: Counter) -> str:
    """A one-word summary: float32, float16, dynamic_int8, int8, or mixed (int8 with float islands)."""
    compute = sum(n for op, n in ops.items() if op not in BOUNDARY_OPS)
    int_weights = const_types["INT8"] + const_types["INT4"]
    if compute and float_ops == 0:
        return "int8"
    if int_weights and float_ops < compute:
        return "mixed"
    if int_weights:
        return "dynamic_int8"
    if const_types["FLOAT16"]:
        return "float16"
    return "float32"


def inspect_tflite(path: str | Path) -> dict:
    """Describe a ``.tflite`` file (in this process; use :func:`inspect_tflite_safe` for untrusted files).

    Returns a JSON-ready dict: ``path, bytes`` (file size), ``inputs``/``outputs`` (name, shape,
    dtype, scale, zero_point), ``ops`` (builtin op name -> count, main subgraph), ``op_count``,
    ``transpose, quantize, dequantize, float_ops`` (counts), ``float_op_names``, ``tensor_types``
    (all tensors), ``constant_types`` (tensors backed by data), ``precision``, ``metadata``
    (``present``, ``names``, ``labels_file``, ``labels``, model ``name``/``version``),
    ``associated_files``.
    """
    path = check_tflite_file(path)
    data = path.read_bytes()
    try:
        return _describe(path, data)
    except EdgeCNNError:
        raise
    except Exception as exc:  # out-of-range offsets in a truncated or corrupt flatbuffer
        raise EdgeCNNError(f"{path} is a corrupt or truncated TFLite file "
                           f"({exc.__class__.__name__} while parsing it)") from None


def _check_buffers(path: Path, data: bytes, model: Any) -> None:
    """Raise when a buffer of the flatbuffer ``model`` lies (partly) outside the file's ``data``."""
    for i in range(model.BuffersLength()):
        buf = model.Buffers(i)
        offset = buf.Offset() if hasattr(buf, "Offset") else 0
        if offset > 1 and offset + buf.Size() > len(data):  # data stored after the flatbuffer
            raise EdgeCNNError(f"{path} is truncated: buffer {i} ends at byte {offset + buf.Size()} of {len(data)}")
        if buf.DataLength():
            buf.DataAsNumpy()  # raises when the vector runs past the end of the file


def _op_codes(model: Any, op_names: dict[int, str]) -> list[str]:
    """The operator-code table: builtin names, ``CUSTOM:<name>`` for custom ops."""
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        name = op_names.get(code, f"BUILTIN_{code}")
        codes.append(f"CUSTOM:{oc.CustomCode().decode('utf-8', 'replace')}" if name == "CUSTOM" and oc.CustomCode() else name)
    return codes


def _metadata_summary(data: bytes, names: list[str]) -> tuple[dict[str, Any], list[str]]:
    """(what the file's TFLite metadata says, its associated file names)."""
    from edgecnn.converters.metadata import METADATA_NAME, read_metadata

    meta: dict[str, Any] = {"present": METADATA_NAME in names, "names": names, "labels_file": None,
                            "labels": None, "name": None, "version": None}
    associated: list[str] = []
    if meta["present"]:
        try:
            md = read_metadata(data)
        except EdgeCNNError as exc:  # e.g. mediapipe's schema is not installed: say so, keep the rest
            meta["error"] = str(exc)
        else:
            associated = md["associated_files"]
            meta.update({k: md[k] for k in ("labels_file", "name", "version")},
                        labels=len(md["labels"]) if md["labels"] is not None else None)
    return meta, associated


def _describe(path: Path, data: bytes) -> dict:
    from ai_edge_litert import schema_py_generated as tfl

    op_names, type_names = _enum_names(tfl.BuiltinOperator), _enum_names(tfl.TensorType)
    model = tfl.Model.GetRootAs(data, 0)
    if model.SubgraphsLength() < 1:
        raise EdgeCNNError(f"{path} has no subgraph")
    _check_buffers(path, data, model)
    codes = _op_codes(model, op_names)
    graph = model.Subgraphs(0)
    tensors = [graph.Tensors(i) for i in range(graph.TensorsLength())]
    tensor_types, const_types = Counter(), Counter()
    for t in tensors:
        type_name = type_names.get(t.Type(), str(t.Type()))
        tensor_types[type_name] += 1
        if t.Buffer() > 0 and t.Buffer() < model.BuffersLength():
            buf = model.Buffers(t.Buffer())
            if buf.DataLength() or (hasattr(buf, "Size") and buf.Size()):
                const_types[type_name] += 1
    ops, float_ops = Counter(), Counter()
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        name = codes[op.OpcodeIndex()]
        ops[name] += 1
        outputs = [j for j in (op.OutputsAsNumpy() if op.OutputsLength() else []) if j >= 0]
        if name not in BOUNDARY_OPS and outputs and \
                type_names.get(tensors[outputs[0]].Type()) in FLOAT_TYPES:
            float_ops[name] += 1

    inputs = [_tensor_info(tensors[j], type_names) for j in graph.InputsAsNumpy()]
    outputs = [_tensor_info(tensors[j], type_names) for j in graph.OutputsAsNumpy()]
    names = [(model.Metadata(i).Name() or b"").decode("utf-8", "replace") for i in range(model.MetadataLength())]
    meta, associated = _metadata_summary(data, names)
    return {
        "path": str(path), "bytes": len(data), "schema_version": model.Version(),
        "subgraphs": model.SubgraphsLength(), "inputs": inputs, "outputs": outputs,
        "ops": dict(ops.most_common()), "op_count": sum(ops.values()),
        "transpose": ops["TRANSPOSE"], "quantize": ops["QUANTIZE"], "dequantize": ops["DEQUANTIZE"],
        "float_ops": sum(float_ops.values()), "float_op_names": dict(float_ops.most_common()),
        "tensor_types": dict(tensor_types.most_common()), "constant_types": dict(const_types.most_common()),
        "precision": _precision(ops, sum(float_ops.values()), const_types),
        "metadata": meta, "associated_files": associated,
    }


def _validate(path: Path) -> dict:
    """Load ``path`` with the interpreter, allocate its tensors and run it once on zeros."""
    import numpy as np

    from edgecnn.converters.tflite_runtime import load_interpreter

    interpreter = load_interpreter(path)
    for d in interpreter.get_input_details():
        interpreter.set_tensor(d["index"], np.zeros(d["shape"], dtype=d["dtype"]))
    interpreter.invoke()
    return {"allocated": True, "invoked": True}


def _run_child(path: Path, validate: bool, timeout_s: float) -> dict:
    cmd = [sys.executable, "-m", "edgecnn.converters.inspect", str(path), "--json"]
    if validate:
        cmd.append("--validate")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", GLOG_minloglevel="3")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        raise EdgeCNNError(f"inspecting {path} timed out after {timeout_s:g} s") from None
    if proc.returncode < 0:
        try:
            sig = signal.Signals(-proc.returncode).name
        except ValueError:
            sig = f"signal {-proc.returncode}"
        what = "loading" if validate else "parsing"
        raise EdgeCNNError(f"{path} crashed the TFLite runtime while {what} it ({sig}); the file is corrupt")
    marked = [line[len(_ERROR_MARK):] for line in proc.stderr.splitlines() if line.startswith(_ERROR_MARK)]
    if proc.returncode != 0 or marked:
        tail = marked[-1] if marked else (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgeCNNError(tail if marked else f"inspecting {path} failed (exit {proc.returncode}): {tail}")
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise EdgeCNNError(f"inspecting {path} printed no JSON report") from None


def inspect_tflite_safe(path: str | Path, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict:
    """:func:`inspect_tflite` in a child process; any failure (crash, timeout) raises one line."""
    return _run_child(check_tflite_file(path), validate=False, timeout_s=timeout_s)


def validate_tflite(path: str | Path, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict:
    """Inspect ``path`` and also load it with the interpreter (allocate tensors, run once on zeros),
    all in a child process: a file that parses but would crash the runtime raises one line.

    Returns the :func:`inspect_tflite` dict with ``validated: True``.
    """
    return _run_child(check_tflite_file(path), validate=True, timeout_s=timeout_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgecnn.converters.inspect",
        description="Describe a .tflite file (I/O, op histogram, int8 leftovers, metadata). "
                    "Example: python -m edgecnn.converters.inspect model.tflite --json --validate")
    parser.add_argument("path", help="the .tflite file")
    parser.add_argument("--json", action="store_true", help="print one JSON object (default: indented)")
    parser.add_argument("--validate", action="store_true",
                        help="also load the file with the interpreter and run it once on zeros")
    args = parser.parse_args(argv)
    try:
        report = inspect_tflite(args.path)
        if args.validate:
            report["validated"] = _validate(Path(args.path))["invoked"]
    except EdgeCNNError as exc:
        print(_ERROR_MARK + str(exc), file=sys.stderr)
        return exc.exit_code
    print(json.dumps(report) if args.json else json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
