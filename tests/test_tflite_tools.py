"""The shared TFLite plumbing: runner, inspector (in a child process), C array writer.

Small real models are converted with litert-torch once per module (float32 NCHW, float32 NHWC,
PT2E int8 NHWC); the checks compare them with the PyTorch model they came from.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from edgecnn.converters.c_array import write_c_array
from edgecnn.converters.inspect import inspect_tflite, inspect_tflite_safe, validate_tflite
from edgecnn.converters.tflite_runtime import TFLiteModel, infer_layout, load_interpreter
from edgecnn.data.transforms import Preprocess
from edgecnn.errors import EdgeCNNError

RES = 32
# one xdist worker builds the module's converted models once (tests/run.sh uses --dist loadgroup)
pytestmark = pytest.mark.xdist_group("tflite_tiny")
NUM_CLASSES = 5


def _tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, 2, 1, groups=8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, NUM_CLASSES)).eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(torch model, {kind: path}) for float32 NCHW, float32 NHWC and PT2E int8 NHWC files."""
    import litert_torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    out = tmp_path_factory.mktemp("tiny")
    model = _tiny_cnn()
    x = torch.randn(1, 3, RES, RES)
    paths = {k: out / f"{k}.tflite" for k in ("float32_nchw", "float32_nhwc", "int8_nhwc")}
    litert_torch.convert(model, (x,)).export(str(paths["float32_nchw"]))
    nhwc = litert_torch.to_channel_last_io(model, args=[0])
    xc = x.permute(0, 2, 3, 1).contiguous()
    litert_torch.convert(nhwc, (xc,)).export(str(paths["float32_nhwc"]))
    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(nhwc, (xc,)).module(), quantizer)
    gen = torch.Generator().manual_seed(1)
    for _ in range(16):
        prepared(torch.randn(1, RES, RES, 3, generator=gen))
    quantized = convert_pt2e(prepared, fold_quantize=False)
    litert_torch.convert(quantized, (xc,), quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(
        str(paths["int8_nhwc"]))
    return model, paths


def _one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg and "Traceback" not in msg
    return msg


# --- runner -------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,in_chans,layout", [
    ((1, 224, 224, 3), None, "NHWC"), ((1, 3, 224, 224), None, "NCHW"), ((1, 28, 28, 1), None, "NHWC"),
    ((1, 1, 28, 28), None, "NCHW"), ((1, 3, 3, 3), 3, "NHWC"), ((1, 4, 32, 4), None, "NHWC"),
    ((2, 3, 64, 48), 3, "NCHW"), ((1, 64, 48, 3), 3, "NHWC")])
def test_infer_layout(shape, in_chans, layout):
    assert infer_layout(shape, in_chans) == layout


def test_infer_layout_rejects_non_image():
    with pytest.raises(EdgeCNNError, match="4-D"):
        infer_layout((1, 1000))


def test_load_interpreter_rejects_bad_input(tmp_path):
    with pytest.raises(EdgeCNNError) as e:
        load_interpreter(tmp_path / "missing.tflite")
    assert "does not exist" in _one_line_error(e)
    with pytest.raises(EdgeCNNError) as e:
        load_interpreter(b"\x00" * 64)
    assert "cannot load" in _one_line_error(e)


def test_runtime_fallback_order(monkeypatch):
    """The first importable runtime wins; a broken one (old NumPy-1 wheels fail oddly) is skipped."""
    import types

    from edgecnn.converters import tflite_runtime

    broken = types.ModuleType("edgecnn_broken_rt")
    broken.__getattr__ = lambda name: (_ for _ in ()).throw(AttributeError("_ARRAY_API not found"))
    fallback = types.ModuleType("edgecnn_fallback_rt")
    fallback.Interpreter = type("Interpreter", (), {})
    monkeypatch.setitem(sys.modules, "edgecnn_broken_rt", broken)
    monkeypatch.setitem(sys.modules, "edgecnn_fallback_rt", fallback)
    monkeypatch.setattr(tflite_runtime, "RUNTIMES", (("edgecnn_missing_rt", "Interpreter"),
                                                     ("edgecnn_broken_rt", "Interpreter"),
                                                     ("edgecnn_fallback_rt", "Interpreter")))
    assert tflite_runtime.interpreter_class() is fallback.Interpreter
    monkeypatch.setattr(tflite_runtime, "RUNTIMES", (("edgecnn_missing_rt", "Interpreter"),))
    with pytest.raises(EdgeCNNError) as e:
        tflite_runtime.interpreter_class()
    assert "pip install ai-edge-litert" in _one_line_error(e)


@pytest.mark.slow
@pytest.mark.parametrize("kind,layout", [("float32_nchw", "NCHW"), ("float32_nhwc", "NHWC")])
def test_float_predict_matches_torch(tiny, kind, layout):
    model, paths = tiny
    tfl = TFLiteModel(paths[kind])
    assert tfl.layout == layout and tfl.in_chans == 3 and tfl.input_hw == (RES, RES)
    assert tfl.inputs[0].dtype == np.float32 and tfl.num_classes == NUM_CLASSES
    x = torch.randn(3, 3, RES, RES)  # batch 3 through a batch-1 file: one image at a time
    got = tfl.predict(x)
    want = model(x).detach().numpy()
    assert got.shape == (3, NUM_CLASSES) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)  # float32 rounding: 6e-8 measured, 1000x margin
    np.testing.assert_allclose(tfl.predict(x.numpy()), got)  # numpy in, same answer


@pytest.mark.slow
def test_int8_predict_quantises_input_and_dequantises_output(tiny):
    model, paths = tiny
    tfl = TFLiteModel(paths["int8_nhwc"])
    assert tfl.inputs[0].dtype == np.int8 and tfl.inputs[0].scale > 0
    assert tfl.outputs[0].dtype == np.int8
    x = torch.randn(4, 3, RES, RES, generator=torch.Generator().manual_seed(2))
    got, want = tfl.predict(x), model(x).detach().numpy()
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() > 0.98, cos  # measured 0.99995: 1 - cos is 5e-5 of the 0.02 allowed
    # the quantised input really is what the graph sees: feeding pre-quantised values agrees
    info = tfl.inputs[0]
    q = info.quantize(x.permute(0, 2, 3, 1).numpy())
    np.testing.assert_allclose(tfl.predict(torch.from_numpy(info.dequantize(q)).permute(0, 3, 1, 2)), got)


@pytest.mark.slow
def test_predict_pixels_normalises_with_preprocess(tiny):
    model, paths = tiny
    tfl = TFLiteModel(paths["float32_nhwc"])
    pre = Preprocess(RES, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    pixels = np.random.default_rng(0).integers(0, 256, (2, RES, RES, 3), dtype=np.uint8)
    want = model(pre.normalize(pixels)).detach().numpy()  # float32 file: rounding only (6e-8 above)
    np.testing.assert_allclose(tfl.predict_pixels(pixels, pre), want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(tfl.predict_pixels(pixels[0], pre), want[:1], rtol=1e-4, atol=1e-4)
    with pytest.raises(EdgeCNNError) as e:  # no metadata, no preprocess: nothing to normalise with
        tfl.predict_pixels(pixels)
    assert "Preprocess" in _one_line_error(e)
    with pytest.raises(EdgeCNNError):
        tfl.predict_pixels(pixels.astype(np.float32), pre)


# --- inspector ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_inspect_counts_float_and_int8_files(tiny):
    _, paths = tiny
    f32 = inspect_tflite(paths["float32_nhwc"])
    assert f32["precision"] == "float32" and f32["float_ops"] == f32["op_count"] > 0
    assert f32["inputs"][0]["shape"] == [1, RES, RES, 3] and f32["inputs"][0]["dtype"] == "float32"
    assert f32["bytes"] == paths["float32_nhwc"].stat().st_size
    assert f32["metadata"]["present"] is False
    nchw = inspect_tflite(paths["float32_nchw"])
    assert nchw["inputs"][0]["shape"] == [1, 3, RES, RES]

    q = inspect_tflite_safe(paths["int8_nhwc"])  # through the child process
    assert q["precision"] == "int8" and q["float_ops"] == 0 and q["dequantize"] == 0
    assert q["tensor_types"].get("FLOAT32", 0) == 0 and q["tensor_types"]["INT8"] > 0
    assert q["ops"]["CONV_2D"] == 1 and q["ops"]["DEPTHWISE_CONV_2D"] == 1 and q["ops"]["FULLY_CONNECTED"] == 1
    assert q["inputs"][0]["dtype"] == "int8" and q["inputs"][0]["scale"] > 0
    assert isinstance(q["inputs"][0]["zero_point"], int)
    assert validate_tflite(paths["int8_nhwc"])["validated"] is True


def test_inspect_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(EdgeCNNError) as e:
        inspect_tflite_safe(tmp_path / "nope.tflite")
    assert "does not exist" in _one_line_error(e)
    png = tmp_path / "photo.tflite"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(EdgeCNNError) as e:
        inspect_tflite_safe(png)
    assert "not a TFLite model" in _one_line_error(e)
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    with pytest.raises(EdgeCNNError, match="not a TFLite model"):
        validate_tflite(empty)


@pytest.mark.slow
def test_inspect_rejects_truncated_and_corrupt_files(tiny, tmp_path):
    _, paths = tiny
    data = paths["int8_nhwc"].read_bytes()
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(EdgeCNNError) as e:
        inspect_tflite_safe(truncated)
    assert "truncated" in _one_line_error(e) or "corrupt" in str(e.value)
    garbage = tmp_path / "garbage.tflite"  # right identifier, random tables
    garbage.write_bytes(data[:8] + np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    for check in (inspect_tflite_safe, validate_tflite):
        with pytest.raises(EdgeCNNError) as e:
            check(garbage)
        _one_line_error(e)


@pytest.mark.slow
def test_validate_catches_what_parsing_cannot(tiny, tmp_path):
    """A conv pointing at a tensor that does not exist parses fine; the interpreter refuses it."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as tfl

    _, paths = tiny
    model = tfl.ModelT.InitFromPackedBuf(paths["int8_nhwc"].read_bytes(), 0)
    conv = next(op for op in model.subgraphs[0].operators
                if model.operatorCodes[op.opcodeIndex].builtinCode == tfl.BuiltinOperator.CONV_2D)
    conv.inputs = np.array([conv.inputs[0], 999, conv.inputs[2]], dtype=np.int32)
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), b"TFL3")
    bad = tmp_path / "dangling.tflite"
    bad.write_bytes(bytes(builder.Output()))
    assert inspect_tflite_safe(bad)["ops"]["CONV_2D"] == 1
    with pytest.raises(EdgeCNNError) as e:
        validate_tflite(bad)
    assert "tensor index 999" in _one_line_error(e)


def test_crashing_child_is_reported_not_fatal(tmp_path, monkeypatch):
    """The child really dies of SIGSEGV (a sitecustomize that segfaults at start-up); we get one line."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text("import faulthandler\nfaulthandler._sigsegv()\n")
    monkeypatch.setenv("PYTHONPATH", str(hook))
    monkeypatch.setenv("PYTHONFAULTHANDLER", "")
    model = tmp_path / "ok.tflite"
    model.write_bytes(bytes(4) + b"TFL3" + bytes(64))
    with pytest.raises(EdgeCNNError) as e:
        validate_tflite(model)
    assert "SIGSEGV" in _one_line_error(e)


def test_inspect_cli_prints_one_json_object_or_one_error_line(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_text("hello")
    proc = subprocess.run([sys.executable, "-m", "edgecnn.converters.inspect", str(bad), "--json"],
                          capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 2 and proc.stdout == ""
    assert "not a TFLite model" in proc.stderr.strip().splitlines()[-1]


# --- C array ------------------------------------------------------------------------------------

MAIN_CC = r"""
#include <cstdint>
#include <cstring>
#include "model_data.h"
int main() {
  if (g_model_len != EXPECTED_LEN) return 1;
  if (std::memcmp(g_model + 4, "TFL3", 4) != 0) return 2;
  if (reinterpret_cast<std::uintptr_t>(g_model) % 16 != 0) return 3;
  if (g_model[g_model_len - 1] != LAST_BYTE) return 4;
  return 0;
}
"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_c_array_compiles_and_holds_the_model(tiny, tmp_path):
    _, paths = tiny
    data = paths["float32_nhwc"].read_bytes()
    header, source = write_c_array(paths["float32_nhwc"], tmp_path / "fw")
    assert (header.name, source.name) == ("model_data.h", "model_data.cc")
    text = header.read_text()
    assert "#ifndef EDGECNN_MODEL_DATA_H_" in text and "extern const unsigned char g_model[];" in text
    assert "alignas(16) const unsigned char g_model[]" in source.read_text()
    (tmp_path / "fw" / "main.cc").write_text(MAIN_CC)
    exe = tmp_path / "fw" / "check"
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Werror", f"-DEXPECTED_LEN={len(data)}",
                    f"-DLAST_BYTE={data[-1]}", "-o", str(exe), str(source), str(tmp_path / "fw" / "main.cc")],
                   check=True, capture_output=True)
    assert subprocess.run([str(exe)]).returncode == 0
    assert sorted(p.name for p in (tmp_path / "fw").iterdir()) == ["check", "main.cc", "model_data.cc", "model_data.h"]


def test_c_array_rejects_bad_input(tmp_path):
    foreign = tmp_path / "x.tflite"
    foreign.write_bytes(b"not a model at all")
    with pytest.raises(EdgeCNNError) as e:
        write_c_array(foreign, tmp_path / "out")
    assert "not a TFLite model" in _one_line_error(e)
    model = tmp_path / "m.tflite"
    model.write_bytes(bytes(4) + b"TFL3" + bytes(8))
    with pytest.raises(EdgeCNNError, match="C identifier"):
        write_c_array(model, tmp_path / "out", name="model-data")
    with pytest.raises(EdgeCNNError, match="C identifier"):
        write_c_array(model, tmp_path / "out", symbol="1model")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
