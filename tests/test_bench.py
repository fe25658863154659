"""edgecnn bench, locally: the method, one process per point, resumable sweeps, outputs, bad input.

No test asserts a timing: the machine is shared. Counts, fields, memory and failure handling are
asserted instead.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import numpy as np
import pytest

from bench_helpers import tiny_onnx, tiny_tflite
from edgecnn.benchmarks import measure
from edgecnn.benchmarks.runtimes import point_key, run_point
from edgecnn.benchmarks.sweep import fastest, load_rows, plot, run_sweep, sort_rows, write_csv

QUICK = ["--runs", "5", "--min-secs", "0.01", "--warmup-runs", "1", "--warmup-secs", "0.01"]
QUICK_PROTOCOL = measure.Protocol(num_runs=5, min_secs=0.01, warmup_runs=1, warmup_min_secs=0.01).to_dict()
ROW_FIELDS = ("init_ms", "first_ms", "warmup_ms", "runs", "mean_ms", "median_ms", "p90_ms", "p99_ms",
              "std_ms", "min_ms", "max_ms", "peak_memory_bytes", "machine", "precision")


@pytest.fixture(scope="module")
def tflite_file() -> Path:
    return tiny_tflite()


def test_summarize_statistics_of_known_samples():
    s = measure.summarize([float(v) for v in range(1, 101)])
    assert s["runs"] == 100 and s["mean_ms"] == 50.5 and s["median_ms"] == 50.5
    assert s["p90_ms"] == pytest.approx(90.1) and s["p99_ms"] == pytest.approx(99.01)
    assert s["std_ms"] == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    assert (s["min_ms"], s["max_ms"]) == (1.0, 100.0)


def test_measure_follows_the_protocol_and_sees_memory_of_init():
    calls = []

    def init():
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        return lambda: calls.append(block[0])

    r = measure.measure(init, measure.Protocol(num_runs=7, min_secs=0.0, warmup_runs=3,
                                               warmup_min_secs=0.0))
    assert r["warmup_runs"] == 3 and r["runs"] == 7 and len(calls) == 10
    assert r["init_memory_bytes"] >= 60 * 2**20 and r["peak_memory_bytes"] >= r["init_memory_bytes"]
    assert r["first_ms"] >= 0 and r["min_ms"] <= r["median_ms"] <= r["max_ms"]


def test_random_input_has_the_shape_dtype_and_range():
    rng = np.random.default_rng(0)
    u8 = measure.random_input([1, 8, 8, 3], np.uint8, rng)
    i8 = measure.random_input((1, 3, 8, 8), np.int8, rng)
    f = measure.random_input((2, 5), np.float32, rng)
    assert u8.shape == (1, 8, 8, 3) and u8.dtype == np.uint8 and u8.max() > 200
    assert i8.dtype == np.int8 and i8.min() < -100
    assert f.dtype == np.float32 and -1 <= f.min() and f.max() <= 1
    with pytest.raises(ValueError):
        measure.random_input((1,), np.dtype("U4"), rng)


def test_gmacs_and_machine_description():
    assert measure.gmacs_per_s(300_000_000, 2.0) == pytest.approx(150.0)
    assert measure.gmacs_per_s(None, 2.0) is None
    info = measure.machine_info()
    assert info["cores"] >= 1 and info["cpu"] and info["os"] and info["arch"]


@pytest.mark.slow
def test_bench_tflite_threads_json(cli, tflite_file):
    r = cli("bench", tflite_file, "--threads", "1,2", *QUICK, "--json")
    assert r.code == 0, r
    report = json.loads(r.out)
    rows = report["rows"]
    assert [(x["runtime"], x["threads"]) for x in rows] == [("litert", 1), ("litert", 2)]
    for row in rows:
        assert row["status"] == "ok" and all(row.get(k) is not None for k in ROW_FIELDS)
        assert row["runs"] >= 5 and row["precision"] == "float32"
        assert row["file_bytes"] == tflite_file.stat().st_size
    assert report["fastest"][tflite_file.stem]["float32"]["runtime"] == "litert"
    assert report["machine"]["cores"] >= 1 and report["protocol"]["num_runs"] == 5


@pytest.mark.slow
def test_bench_table_has_the_measured_row(cli, tflite_file):
    r = cli("bench", tflite_file, "--threads", "1", *QUICK)
    assert r.code == 0, r
    assert "litert" in r.out and "float32" in r.out and f"fastest for {tflite_file.stem}" in r.out


@pytest.mark.slow
def test_onnxruntime_fp32_and_int8_qdq(tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    fp32 = tiny_onnx(tmp_path / "tiny.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.batches = iter([{"input": rng.standard_normal((1, 3, 32, 32), dtype=np.float32)}
                                 for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    int8 = tmp_path / "tiny_qdq.onnx"
    quantize_static(str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ)
    for path, precision in ((fp32, "float32"), (int8, "int8")):
        row = run_point({"runtime": "onnxruntime", "path": str(path), "threads": 1,
                         "protocol": QUICK_PROTOCOL})
        assert row["status"] == "ok", row
        assert row["precision"] == precision and row["runs"] >= 5


@pytest.mark.slow
def test_pytorch_from_a_zoo_name_and_gpu_rows_skipped_with_reason(cli):
    import torch

    r = cli("bench", "mobilenet_v2", "--alpha", "0.35", "--res", "32", "--num-classes", "10",
            "--runtime", "torch,torch-cuda,onnxruntime-cuda", "--threads", "1", *QUICK, "--json")
    rows = {x["runtime"]: x for x in json.loads(r.out)["rows"]}
    assert rows["torch"]["status"] == "ok" and rows["torch"]["precision"] == "float32"
    assert rows["torch"]["model"] == "mobilenet_v2_0.35_32" and rows["torch"]["macs"] > 0
    assert rows["torch"]["gmacs_per_s"] > 0
    if not torch.cuda.is_available():
        assert rows["torch-cuda"]["status"] == "skipped"
        assert "no CUDA device" in rows["torch-cuda"]["error"]
        assert rows["onnxruntime-cuda"]["status"] == "skipped"
        assert "CUDAExecutionProvider" in rows["onnxruntime-cuda"]["error"]


@pytest.mark.slow
def test_corrupt_file_is_one_error_row_and_other_points_survive(cli, tflite_file, tmp_path):
    bad = tmp_path / "not a model $x.tflite"
    bad.write_bytes(b"this is not a flatbuffer" * 10)
    r = cli("bench", tflite_file, bad, "--threads", "1", *QUICK, "--json")
    assert r.code == 2
    rows = {Path(x["path"]).name: x for x in json.loads(r.out)["rows"]}
    assert rows[tflite_file.name]["status"] == "ok"
    assert rows[bad.name]["status"] == "error"
    assert "cannot load" in rows[bad.name]["error"] and "\n" not in rows[bad.name]["error"]
    errors = [ln for ln in r.err.splitlines() if ln.startswith("edgecnn: error:")]
    assert len(errors) == 1 and "Traceback" not in r.err


def test_missing_and_wrong_type_files_fail_with_one_line(cli, tmp_path):
    r = cli("bench", tmp_path / "nope.tflite")
    assert r.code == 2 and r.err.strip() == f"edgecnn: error: {tmp_path / 'nope.tflite'}: no such file"
    txt = tmp_path / "notes.txt"
    txt.write_text("x")
    r = cli("bench", txt)
    assert r.code == 2 and "not a .tflite or .onnx file" in r.err
    r = cli("bench", "mobilenett")
    assert r.code == 2 and "unknown model" in r.err and "Traceback" not in r.err


def test_input_that_cannot_be_fed_is_named(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3, "H", "W"])
    graph = helper.make_graph([helper.make_node("Relu", ["image"], ["out"])], "g", [x], [y])
    path = tmp_path / "dynamic.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    row = run_point({"runtime": "onnxruntime", "path": str(path), "threads": 1, "protocol": QUICK_PROTOCOL})
    assert row["status"] == "error"
    assert "input 'image' has unknown dimensions" in row["error"]


def _fake_python(tmp_path: Path, body: str) -> str:
    script = tmp_path / "fake python"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_a_crashing_runtime_becomes_an_error_row(tmp_path):
    point = {"runtime": "litert", "path": "m.tflite", "threads": 1, "protocol": QUICK_PROTOCOL}
    row = run_point(point, python=_fake_python(tmp_path, "echo 'Fatal in XNNPACK' >&2; kill -SEGV $$"))
    assert row["status"] == "error" and "crashed (SIGSEGV)" in row["error"]
    assert "Fatal in XNNPACK" in row["error"]


def test_a_hanging_runtime_is_killed_after_the_timeout(tmp_path):
    point = {"runtime": "litert", "path": "m.tflite", "threads": 1, "protocol": QUICK_PROTOCOL}
    row = run_point(point, timeout=1, python=_fake_python(tmp_path, "exec sleep 30"))
    assert row["status"] == "error" and row["error"].startswith("timed out after 1 s")


def _point(i: int) -> dict:
    return {"runtime": "litert", "path": f"m{i}.tflite", "model": f"m{i}", "threads": 1,
            "protocol": QUICK_PROTOCOL, "target": "local", "macs": 1_000_000 * (i + 1)}


def test_sweep_resumes_skipping_measured_points_and_retrying_failures(tmp_path):
    results = tmp_path / "r.jsonl"
    points = [_point(i) for i in range(4)]
    calls: list[str] = []

    def runner(point):
        calls.append(point["model"])
        if point["model"] == "m2" and calls.count("m2") == 1:
            return {**point, "key": point_key(point), "status": "error", "error": "boom"}
        return {**point, "key": point_key(point), "status": "ok", "median_ms": 10.0 - len(calls)}

    rows = run_sweep(points, results, runner=runner, progress=False)
    assert calls == ["m0", "m1", "m2", "m3"] and [r["status"] for r in rows].count("error") == 1
    with results.open("a") as f:
        f.write('{"key": "torn line of a killed ru')  # a kill mid-write must not break resume
    rows = run_sweep(points, results, runner=runner, progress=False)
    assert calls == ["m0", "m1", "m2", "m3", "m2"]  # only the failed point ran again
    assert all(r["status"] == "ok" for r in rows) and len(load_rows(results)) == 4
    run_sweep(points + [_point(9)], results, runner=runner, progress=False)
    assert calls[-1] == "m9" and len(load_rows(results)) == 5


@pytest.mark.slow
def test_table_order_csv_and_plot(tmp_path):
    rows = [{**_point(i), "status": "ok", "median_ms": m, "accuracy": a, "key": str(i)}
            for i, (m, a) in enumerate([(3.0, 0.7), (1.0, 0.6), (2.0, None)])]
    rows.append({**_point(7), "status": "error", "error": "bad file", "key": "7"})
    assert [r["model"] for r in sort_rows(rows)] == ["m1", "m2", "m0", "m7"]
    assert fastest(rows)["m1"]["unknown"]["median_ms"] == 1.0  # no precision recorded
    write_csv(rows, tmp_path / "t.csv")
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert lines[0].startswith("model,runtime,precision,converter,threads") and lines[1].startswith("m1,")
    png = plot(rows, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(tmp_path.glob(".*part"))


def test_help_explains_every_flag(cli):
    r = cli("bench", "--help")
    assert r.code == 0
    from edgecnn.cli import build_parser

    sub = next(a for a in build_parser()._subparsers._group_actions if a.choices)
    parser = sub.choices["bench"]
    for action in parser._actions:
        for flag in action.option_strings:
            assert flag in r.out
        if action.option_strings and action.dest not in ("help", "json") and action.nargs != 0:
            assert "e.g." in (action.help or ""), action.option_strings
    assert "ssh://" in r.out and "--benchmark-binary" in r.out


@pytest.mark.slow
def test_crosscheck_against_benchmark_litert_model(tflite_file):
    from edgecnn.benchmarks.crosscheck import crosscheck

    result = crosscheck(tflite_file, threads=1, runs=5, rounds=2)
    assert result["edgecnn"]["median_ms"] > 0 and result["benchmark_litert_model"]["median_ms"] > 0
    assert result["benchmark_litert_model"]["runs"] == 5 and len(result["edgecnn"]["round_medians_ms"]) == 2
    assert result["median_ratio"] == pytest.approx(
        result["edgecnn"]["median_ms"] / result["benchmark_litert_model"]["median_ms"])


def test_missing_onnx_file_is_an_error_row(tmp_path):
    point = {"runtime": "onnxruntime", "path": str(tmp_path / "missing.onnx"), "threads": 1,
             "protocol": QUICK_PROTOCOL}
    row = run_point(point)
    assert row["status"] == "error" and "No such file" in row["error"] and "missing.onnx" in row["error"]


def _export_folder(tmp_path: Path, tflite: Path, converter: str = "litert") -> Path:
    """A folder shaped like ``edgecnn export``'s output: files named by precision + report.json."""
    folder = tmp_path / "mobilenet_v2_0.35_32"
    folder.mkdir()
    name = "mobilenet_v2_0.35_32_float32.tflite"
    (folder / name).write_bytes(tflite.read_bytes())
    report = {"model": "mobilenet_v2", "name": folder.name, "knobs": {"alpha": 0.35}, "res": 32,
              "num_classes": 10, "in_chans": 3, "macs": 1234567, "converter": converter,
              "files": [{"name": name, "path": str(folder / name), "precision": "float32"}]}
    (folder / "report.json").write_text(json.dumps(report))
    return folder


@pytest.mark.slow
def test_export_folder_gives_file_rows_and_pytorch_rows_from_its_report(cli, tflite_file, tmp_path):
    folder = _export_folder(tmp_path, tflite_file)
    r = cli("bench", folder, "--runtime", "litert,torch", "--threads", "1", *QUICK, "--json")
    assert r.code == 0, r
    rows = {x["runtime"]: x for x in json.loads(r.out)["rows"]}
    assert set(rows) == {"litert", "torch"}
    for row in rows.values():
        assert row["status"] == "ok" and row["model"] == "mobilenet_v2_0.35_32"
        assert row["macs"] == 1234567 and row["gmacs_per_s"] > 0
    assert rows["litert"]["converter"] == "litert" and rows["torch"]["converter"] is None
    assert rows["torch"]["spec"] == {"name": "mobilenet_v2", "knobs": {"alpha": 0.35}, "res": 32,
                                     "num_classes": 10, "in_chans": 3, "label": "mobilenet_v2_0.35_32"}


@pytest.mark.slow
def test_complete_export_folders_are_reused_not_exported_again(tmp_path, monkeypatch):
    import edgecnn.pipelines.export
    from edgecnn.benchmarks.sweep import zoo_spec
    from edgecnn.pipelines.bench import ensure_export

    placeholder = tmp_path / "placeholder.tflite"  # only the file's presence matters here
    placeholder.write_bytes(b"TFL3")
    _export_folder(tmp_path, placeholder)
    calls = []
    monkeypatch.setattr(edgecnn.pipelines.export, "export", lambda *a, **k: calls.append((a, k)))
    spec, macs = zoo_spec("mobilenet_v2", 32, {"alpha": 0.35}, num_classes=10)
    assert spec["label"] == "mobilenet_v2_0.35_32" and macs > 0
    assert ensure_export(spec, ["float32"], tmp_path) == tmp_path / "mobilenet_v2_0.35_32" and not calls
    ensure_export(spec, ["float32", "int8"], tmp_path)  # int8 missing: export is asked for both
    assert calls == [(("mobilenet_v2",), {"res": 32, "num_classes": 10, "in_chans": None,
                                          "quantize": ["float32", "int8"], "converter": "litert",
                                          "out": tmp_path / "mobilenet_v2_0.35_32", "verify": False,
                                          "measure": False, "alpha": 0.35})]


def test_an_export_folder_of_another_converter_is_not_reused(tmp_path, monkeypatch):
    import edgecnn.pipelines.export
    from edgecnn.benchmarks.sweep import zoo_spec
    from edgecnn.pipelines.bench import ensure_export

    placeholder = tmp_path / "placeholder.tflite"
    placeholder.write_bytes(b"TFL3")
    theirs = _export_folder(tmp_path, placeholder, converter="onnx2tf")
    before = sorted(p.name for p in theirs.iterdir())
    calls = []
    monkeypatch.setattr(edgecnn.pipelines.export, "export", lambda *a, **k: calls.append(k))
    spec, _ = zoo_spec("mobilenet_v2", 32, {"alpha": 0.35}, num_classes=10)
    folder = ensure_export(spec, ["float32"], tmp_path, "litert")
    assert folder == tmp_path / "mobilenet_v2_0.35_32_litert" != theirs
    assert [(k["out"], k["converter"]) for k in calls] == [(folder, "litert")]
    assert sorted(p.name for p in theirs.iterdir()) == before  # the other converter's folder is untouched
    calls.clear()
    assert ensure_export(spec, ["float32"], tmp_path, "onnx2tf") == theirs and not calls  # its own: reused


def test_int8_request_skips_float_runtimes_with_a_reason_and_never_compares_precisions(cli):
    r = cli("bench", "mobilenet_v2", "--alpha", "0.35", "--res", "32", "--num-classes", "10",
            "--quantize", "int8", "--runtime", "torch,onnxruntime", "--threads", "1", *QUICK, "--json")
    assert r.code == 0, r
    report = json.loads(r.out)
    rows = {x["runtime"]: x for x in report["rows"]}
    for runtime in ("torch", "onnxruntime"):  # both build the float32 model: not what was asked for
        assert rows[runtime]["status"] == "skipped" and "float32, not the int8" in rows[runtime]["error"]
        assert "converter" in rows[runtime]
    assert rows["onnxruntime"]["converter"] == "torch.onnx" and report["fastest"] == {}
    mixed = [{"model": "m", "precision": p, "runtime": rt, "status": "ok", "median_ms": ms}
             for p, rt, ms in (("int8", "litert", 1.0), ("float32", "torch", 3.0), ("float32", "litert", 2.0))]
    best = fastest(mixed)["m"]
    assert best["int8"]["runtime"] == "litert" and best["float32"]["median_ms"] == 2.0


def test_precision_from_export_file_names():
    from edgecnn.benchmarks.sweep import precision_from_name

    names = {"m_float32.tflite": "float32", "m_float16.tflite": "float16", "m_int8.tflite": "int8",
             "m_dynamic_int8.tflite": "dynamic", "m_int8_uint8io.tflite": "int8", "model.tflite": None}
    assert {n: precision_from_name(Path(n)) for n in names} == names


class _Interpreter:
    """Just enough of the TFLite Interpreter API to check how inputs are fed."""

    def __init__(self, signature, dtype=np.uint8):
        self.signature, self.dtype, self.calls = signature, dtype, []

    def get_input_details(self):
        shape = [1 if s == -1 else s for s in self.signature]
        return [{"name": "image", "index": 0, "shape": np.array(shape), "dtype": self.dtype,
                 "shape_signature": np.array(self.signature)}]

    def resize_tensor_input(self, index, shape):
        self.calls.append(("resize", index, list(shape)))

    def allocate_tensors(self):
        self.calls.append(("allocate",))

    def set_tensor(self, index, value):
        self.calls.append(("set", index, value.shape, value.dtype))

    def invoke(self):
        self.calls.append(("invoke",))


def test_tflite_inputs_dynamic_batch_is_fixed_to_one_other_dynamic_dims_refused():
    interp = _Interpreter([-1, 224, 224, 3])
    run = measure.interpreter_runner(interp)
    assert interp.calls == [("resize", 0, [1, 224, 224, 3]), ("allocate",),
                            ("set", 0, (1, 224, 224, 3), np.dtype(np.uint8))]
    run()
    assert interp.calls[-1] == ("invoke",)
    with pytest.raises(ValueError, match="input 'image' has dynamic dimensions \\[1, -1, -1, 3\\]"):
        measure.interpreter_runner(_Interpreter([1, -1, -1, 3]))
    with pytest.raises(ValueError, match="input 'image' cannot be fed"):
        measure.interpreter_runner(_Interpreter([1, 4], dtype=np.dtype("U8")))
