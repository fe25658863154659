"""ai-edge-quantizer's static int8 of a float .tflite, and the alternating latency rounds that compare files.

Both serve ``benchmarks/studies/imagenet_int8.py`` (issue 15's table); real converters, real runtime.
"""

from __future__ import annotations

import numpy as np

from bench_helpers import RES, tiny_tflite
from edgecnn.benchmarks.measure import Protocol
from edgecnn.converters.inspect import inspect_tflite
from edgecnn.converters.litert import ai_edge_static_int8
from edgecnn.converters.tflite_runtime import TFLiteModel
from edgecnn.pipelines.bench import alternating_latency

QUICK = Protocol(num_runs=5, min_secs=0.01, warmup_runs=1, warmup_min_secs=0.01)


def test_ai_edge_static_int8_is_all_integer_and_close_to_float(tmp_path):
    float_path = tiny_tflite()  # NCHW 1x3x32x32, random weights
    rng = np.random.default_rng(0)
    calib = rng.normal(size=(32, 3, RES, RES)).astype(np.float32)
    data = ai_edge_static_int8(float_path.read_bytes(), calib)
    int8_path = tmp_path / "tiny_int8.tflite"
    int8_path.write_bytes(data)
    info = inspect_tflite(int8_path)
    assert info["float_ops"] == 0 and info["constant_types"].get("INT8")
    assert info["quantize"] >= 1 and info["dequantize"] >= 1  # float I/O kept at the boundary
    x = rng.normal(size=(16, 3, RES, RES)).astype(np.float32)  # images that did not calibrate it
    ref, out = TFLiteModel(float_path).predict(x), TFLiteModel(int8_path).predict(x)
    cosine = np.sum(ref * out, 1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1))
    assert cosine.min() > 0.95  # 8-bit noise on a 3-layer net: measured ~0.999

    timing = alternating_latency([float_path, int8_path], rounds=2, threads=1, protocol=QUICK)
    assert list(timing) == [str(float_path), str(int8_path)]
    for entry in timing.values():
        assert len(entry["ms"]) == 2 and min(entry["ms"]) <= entry["median_ms"] <= max(entry["ms"])
