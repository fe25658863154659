"""ai-edge-quantizer's static int8 of a float .tflite, and the alternating latency rounds that compare files.

Both serve ``benchmarks/studies/imagenet_int8.py`` (issue 15's table); real converters, real runtime.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bench_helpers import RES, tiny_tflite
from edgecnn.benchmarks.measure import Protocol
from edgecnn.converters.inspect import inspect_tflite
from edgecnn.converters.litert import ai_edge_static_int8
from edgecnn.converters.tflite_runtime import TFLiteModel
from edgecnn.pipelines.bench import alternating_latency

QUICK = Protocol(num_runs=5, min_secs=0.01, warmup_runs=1, warmup_min_secs=0.01)


def wide_cnn() -> nn.Module:
    """A small CNN with over 256 KB of weights: ai-edge-quantizer then stores them after the flatbuffer."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 1024), nn.ReLU(), nn.Linear(1024, 300)).eval()


def test_ai_edge_static_int8_is_all_integer_and_close_to_float(tmp_path):
    import litert_torch

    float_path = tmp_path / "wide_float32.tflite"
    litert_torch.convert(wide_cnn(), (torch.randn(1, 3, RES, RES),)).export(str(float_path))
    rng = np.random.default_rng(0)
    calib = rng.normal(size=(32, 3, RES, RES)).astype(np.float32)
    data = ai_edge_static_int8(float_path.read_bytes(), calib)
    int8_path = tmp_path / "wide_int8.tflite"
    int8_path.write_bytes(data)
    info = inspect_tflite(int8_path)  # checks every buffer lies inside the file (float_io once cut them off)
    assert info["float_ops"] == 0 and info["constant_types"].get("INT8") and info["bytes"] > 300_000
    assert info["inputs"][0]["dtype"] == info["outputs"][0]["dtype"] == "float32"  # float I/O, as edgecnn's int8
    x = rng.normal(size=(16, 3, RES, RES)).astype(np.float32)  # inputs that did not calibrate it
    ref, out = TFLiteModel(float_path).predict(x), TFLiteModel(int8_path).predict(x)
    cosine = np.sum(ref * out, 1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1))
    assert cosine.min() > 0.95  # 8-bit noise on a 4-layer net

    tiny = tiny_tflite()
    timing = alternating_latency([tiny, int8_path], rounds=2, threads=1, protocol=QUICK)
    assert list(timing) == [str(tiny), str(int8_path)]
    for entry in timing.values():
        assert len(entry["ms"]) == 2 and min(entry["ms"]) <= entry["median_ms"] <= max(entry["ms"])
