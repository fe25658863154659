"""bench and eval as Python APIs (edgecnn.pipelines), the one point constructor and the Target protocol.

The ssh and adb targets' prepare() shapes are tested beside their servers (test_bench_ssh.py, a real
sshd; test_bench_adb.py, a fake adb answering with a real phone's properties).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from bench_helpers import tiny_cnn, tiny_tflite
from edgecnn.benchmarks.measure import Protocol
from edgecnn.benchmarks.remote_adb import AdbTarget
from edgecnn.benchmarks.remote_ssh import SSHTarget
from edgecnn.benchmarks.runtimes import point_key
from edgecnn.benchmarks.sweep import file_fields, make_points
from edgecnn.benchmarks.target import MACHINE_FIELDS, LocalTarget, machine
from edgecnn.errors import EdgeCNNError
from edgecnn.pipelines.bench import bench, bench_files, target_from_url
from edgecnn.pipelines.evaluate import EvalOptions, evaluate

QUICK = Protocol(num_runs=5, min_secs=0.01, warmup_runs=1, warmup_min_secs=0.01)


def test_one_constructor_applies_the_gpu_rule_to_local_and_remote_points(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3 not really")
    assert [p["threads"] for p in make_points("litert", [1, 2], QUICK, path=str(model))] == [1, 2]
    assert [p["threads"] for p in make_points("torch-cuda", [1, 2], QUICK, model="m")] == [None]
    phone_gpu = AdbTarget(tmp_path / "benchmark_model", serial="emu-5554", use_gpu=True)
    phone_cpu = AdbTarget(tmp_path / "benchmark_model", use_nnapi=True)
    board = SSHTarget.parse("ssh://pi@raspberrypi.local")
    [gpu] = phone_gpu.points([model], [1, 4], QUICK)
    assert gpu["threads"] is None and gpu["runtime"] == "benchmark_model" and gpu["target"] == "adb:emu-5554"
    assert [p["threads"] for p in phone_cpu.points([model], [1, 4], QUICK)] == [1, 4]
    ssh = board.points([model], [1, 4], QUICK)
    assert [(p["runtime"], p["threads"], p["target"]) for p in ssh] == [("litert", 1, "ssh://pi@raspberrypi.local"),
                                                                        ("litert", 4, "ssh://pi@raspberrypi.local")]
    local = LocalTarget().points([model], [1, 4], QUICK)
    assert [(p["runtime"], p["threads"]) for p in local] == [("litert", 1), ("litert", 4)]
    # every point of a file carries the same fields; remote ones add where and how they run
    for p in (gpu, ssh[0]):
        assert set(p) == set(local[0]) | {"target", "options"}
        same = set(local[0]) - {"threads", "runtime"}
        assert {k: p[k] for k in same} == {k: local[0][k] for k in same}
    assert gpu["options"] == {"use_xnnpack": True, "use_gpu": True, "use_nnapi": False}
    # a local point's identity is that of the dicts of earlier results files (resume keeps working)
    old = {"runtime": "litert", "threads": 1, "protocol": QUICK.to_dict(), **file_fields(model)}
    assert point_key(local[0]) == point_key(old)


def test_local_target_prepares_the_one_machine_shape():
    found = LocalTarget().prepare()
    assert tuple(found) == MACHINE_FIELDS
    assert found["cores"] == os.cpu_count() and found["cpu"] and found["os"] and found["device"] is None


# Excerpts of /proc/cpuinfo: two x86 machines sold under one name, and a Raspberry Pi 5.
ZEN3 = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC\n" \
       "flags\t\t: fpu sse2 avx fma avx2 bmi2 sha_ni\n"
ZEN5 = ZEN3.replace("25", "26").replace("model\t\t: 1", "model\t\t: 2").replace(
    "sha_ni", "avx512f avx512bw avx512_vnni avx_vnni")
PI5 = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes crc32 atomics asimdrdm " \
      "asimddp lrcpc\nCPU part\t: 0xd0b\n\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n"


def test_results_name_the_cpu_generation_and_simd_level():
    """One marketing name ("AMD EPYC") covered a 5x latency difference here: results carry both."""
    from edgecnn.benchmarks.measure import cpu_name

    assert cpu_name(ZEN3) == "AMD EPYC (family 25 model 1; avx2)"
    assert cpu_name(ZEN5) == "AMD EPYC (family 26 model 2; avx512_vnni avx512f avx_vnni)"
    assert cpu_name(PI5) == "Raspberry Pi 5 Model B Rev 1.0 (asimddp asimd)"
    assert cpu_name("", "x86_64") == "x86_64"


def test_an_untrusted_machine_description_is_reduced_to_the_shape():
    got = machine({"cores": "8; rm -rf", "cores_usable": True, "load_1min": float("nan"), "cpu": ["x"],
                   "os": "Raspbian", "extra": "dropped"})
    assert tuple(got) == MACHINE_FIELDS
    assert got["cores"] is None and got["cores_usable"] is None and got["load_1min"] is None
    assert got["cpu"] is None and got["os"] == "Raspbian"
    assert machine(["not", "a", "dict"]) == dict.fromkeys(MACHINE_FIELDS)


def test_target_from_url(tmp_path):
    assert isinstance(target_from_url("local"), LocalTarget)
    ssh = target_from_url("ssh://pi@10.0.0.7:2222", remote_python="/opt/py")
    assert isinstance(ssh, SSHTarget) and ssh.label == "ssh://pi@10.0.0.7:2222" and ssh.python == "/opt/py"
    adb = target_from_url("adb:192.168.1.7:5555", benchmark_binary=tmp_path / "bm", use_gpu=True)
    assert isinstance(adb, AdbTarget) and adb.serial == "192.168.1.7:5555" and adb.device == "gpu"
    assert target_from_url("adb", benchmark_binary=tmp_path / "bm", serial="emu-1").label == "adb:emu-1"
    for url, kwargs, why in (("adb:$(reboot)", {"benchmark_binary": tmp_path / "bm"}, "bad --serial"),
                             ("adb:a", {"benchmark_binary": tmp_path / "bm", "serial": "b"}, "different devices"),
                             ("adb", {}, "needs --benchmark-binary"),
                             ("ssh://-oProxyCommand=x@h", {}, "bad ssh user"),
                             ("ftp://host", {}, "bad --target")):
        with pytest.raises(EdgeCNNError, match=why):
            target_from_url(url, **kwargs)


@pytest.mark.slow
def test_bench_from_python_measures_a_file_and_resumes(tmp_path):
    model = tiny_tflite()
    results = tmp_path / "r.jsonl"
    result = bench([model], "local", threads=[1], protocol=QUICK, results=results, csv=tmp_path / "t.csv")
    [row] = result.rows
    assert row["status"] == "ok" and row["runtime"] == "litert" and row["threads"] == 1 and row["runs"] >= 5
    assert row["precision"] == "float32" and row["file_bytes"] == model.stat().st_size
    assert result.failed == [] and result.fastest[model.stem]["float32"] == row
    assert tuple(result.machine) == MACHINE_FIELDS
    report = json.loads(json.dumps(result.to_dict(), default=str))
    assert set(report) == {"target", "machine", "protocol", "rows", "fastest", "results", "csv", "plot"}
    assert report["target"] == "local" and report["protocol"]["num_runs"] == 5
    assert (tmp_path / "t.csv").read_text().count("\n") == 2
    # the same call again: the measured point is read back from the results file, not measured again
    assert bench_files([model], LocalTarget(), [1], QUICK, results=results) == [row]


def test_bench_from_python_refuses_bad_input_in_one_line(tmp_path):
    with pytest.raises(EdgeCNNError, match="no such file"):
        bench([tmp_path / "missing.tflite"])
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    with pytest.raises(EdgeCNNError, match="remote targets run .tflite files only"):
        bench([onnx], "ssh://pi@127.0.0.1:1")  # refused before any ssh runs
    with pytest.raises(EdgeCNNError, match="nothing to measure"):
        bench([onnx], runtimes=["litert"])


@pytest.mark.slow
def test_evaluate_from_python_agrees_with_the_torch_model_it_was_converted_from(fmnist_small):
    """The tiny .tflite (seed-0 weights of tiny_cnn, no metadata) on real Fashion-MNIST images, RGB 32 px."""
    options = EvalOptions(limit=60, workers=0, mean=(0.5,), std=(0.25,), crop_pct=1.0, threads=1)
    report = evaluate(tiny_tflite(), str(fmnist_small), options)
    result = report.result
    assert (report.kind, report.split, report.input, result.images) == ("tflite", "test", (3, 32, 32), 60)
    assert sum(c["images"] for c in report.to_dict()["per_class"].values()) == 60
    # the same images through the PyTorch model: same loss and top-1 (float32 rounding between the
    # runtimes is ~1e-6 of a logit: 1e-3 on the mean loss is a 1000x margin; a near-tie may flip one image)
    from edgecnn.data.datasets import open_dataset
    from edgecnn.data.transforms import Preprocess, stack

    data = open_dataset(str(fmnist_small), val_split=0.1, seed=0, max_imbalance=math.inf)
    split = data.split("test").subset(range(60))
    pre = Preprocess(res=32, mean=(0.5,) * 3, std=(0.25,) * 3, crop_pct=1.0, in_chans=3)
    with torch.no_grad():
        logits = tiny_cnn()(stack(pre, [split.image(i) for i in range(60)]))
    labels = torch.as_tensor(split.labels)
    assert result.loss == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), abs=1e-3)
    assert abs(result.top1 - (logits.argmax(1) == labels).float().mean().item()) <= 1 / 60
    assert math.isfinite(result.images_per_s)


def test_evaluate_from_python_refuses_bad_input_in_one_line(tmp_path):
    with pytest.raises(EdgeCNNError, match="does not exist"):
        evaluate(tmp_path / "missing.tflite", "fashion-mnist")
    with pytest.raises(EdgeCNNError, match="--data is required"):
        evaluate(tiny_tflite())
    with pytest.raises(EdgeCNNError, match="no normalisation metadata"):
        evaluate(tiny_tflite(), str(Path(tmp_path)))
