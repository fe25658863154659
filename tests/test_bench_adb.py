"""edgecnn bench --target adb: the benchmark_model log parser on verbatim outputs of the real tool,
and the adb command construction with a fake ``adb`` on PATH that records its argv.

No real phone was available: the device side is the fake below, the log samples are real.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest

from edgecnn.benchmarks.measure import Protocol
from edgecnn.benchmarks.remote_adb import benchmark_args, parse_benchmark_output

MIB = 1024 * 1024

# Linux build, "INFO: " prefixes, XNNPACK, p5/median/p95 on the count lines, newer memory line.
# (TFLite benchmark_model on mobilenet_quant_v1_224, CPU run, as published in a public repository.)
INFO_XNNPACK = """INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Graph: [mobilenet_quant_v1_224.tflite]
INFO: Signature to run: []
INFO: Use gpu: [0]
INFO: Loaded model mobilenet_quant_v1_224.tflite
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: The input model file size (MB): 4.2761
INFO: Initialized session in 87.639ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=5 first=106436 curr=105929 min=105929 max=106436 avg=106065 std=193 p5=105929 median=105948 p95=106436

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=50 first=106022 curr=105780 min=105416 max=106528 avg=105784 std=260 p5=105485 median=105718 p95=106281

INFO: Inference timings in us: Init: 87639, First inference: 106436, Warmup (avg): 106065, Inference (avg): 105784
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=14.4414 overall=14.8164
"""

# Same source, GPU delegate run (OpenCL), fully delegated.
INFO_GPU = """INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Graph: [mobilenet_quant_v1_224.tflite]
INFO: Signature to run: []
INFO: Use gpu: [1]
INFO: Loaded model mobilenet_quant_v1_224.tflite
INFO: Created TensorFlow Lite delegate for GPU.
INFO: GPU delegate created.
INFO: Loaded OpenCL library with dlopen.
INFO: Initialized OpenCL-based API.
INFO: Created 1 GPU delegate kernels.
INFO: Explicitly applied GPU delegate, and the model graph will be completely executed by the delegate.
INFO: The input model file size (MB): 4.2761
INFO: Initialized session in 1361.24ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=5 first=125113 curr=112537 min=111758 max=125113 avg=115344 std=4959 p5=111758 median=112912 p95=125113

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=50 first=119614 curr=115889 min=111842 max=119614 avg=115246 std=1329 p5=112107 median=115350 p95=116620

INFO: Inference timings in us: Init: 1361236, First inference: 125113, Warmup (avg): 115344, Inference (avg): 115246
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=132.816 overall=132.816
"""

# Older Android build over adb shell, no prefix, "Peak memory footprint" line (yolov5s fp32).
NO_PREFIX_PEAK = """count=50 first=249042 curr=250889 min=247067 max=254474 avg=249684 std=1442
Inference timings in us: Init: 16242, First inference: 360262, Warmup (avg): 304586, Inference (avg): 249684
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Peak memory footprint (MB): init=4.92969 overall=138.809
"""

# Android benchmark app, logcat "time" format, numbers in scientific notation, partial XNNPACK.
LOGCAT_SCIENTIFIC = """07-08 15:33:55.768 I/tflite  ( 5395): Log parameter values verbosely: [0]
07-08 15:33:55.768 I/tflite  ( 5395): Min num runs: [10]
07-08 15:33:55.768 I/tflite  ( 5395): Num threads: [4]
07-08 15:33:55.769 I/tflite  ( 5395): Graph: [/data/local/tmp/yolo26l_fp16.tflite]
07-08 15:33:55.769 I/tflite  ( 5395): Signature to run: []
07-08 15:33:55.769 I/tflite  ( 5395): #threads used for CPU inference: [4]
07-08 15:33:55.769 I/tflite  ( 5395): Use gpu: [0]
07-08 15:33:55.769 I/tflite  ( 5395): Use NNAPI: [0]
07-08 15:33:55.771 I/tflite  ( 5395): Loaded model /data/local/tmp/yolo26l_fp16.tflite
07-08 15:33:55.772 I/tflite  ( 5395): Initialized TensorFlow Lite runtime.
07-08 15:33:55.786 I/tflite  ( 5395): Created TensorFlow Lite XNNPACK delegate for CPU.
07-08 15:33:55.790 I/tflite  ( 5395): Replacing 1036 out of 1097 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 23 partitions for subgraph 0.
07-08 15:33:56.228 I/tflite  ( 5395): The input model file size (MB): 49.9313
07-08 15:33:56.228 I/tflite  ( 5395): Initialized session in 458.883ms.
07-08 15:33:56.256 I/tflite  ( 5395): Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
07-08 15:33:58.992 I/tflite  ( 5395): count=1 curr=2732148 p5=2732148 median=2732148 p95=2732148
07-08 15:33:58.993 I/tflite  ( 5395): Running benchmark for at least 10 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
07-08 15:34:26.201 I/tflite  ( 5395): count=10 first=2653894 curr=2709263 min=2640862 max=3025403 avg=2.71985e+06 std=105101 p5=2640862 median=2709263 p95=3025403
07-08 15:34:26.202 I/tflite  ( 5395): Inference timings in us: Init: 458883, First inference: 2732148, Warmup (avg): 2.73215e+06, Inference (avg): 2.71985e+06
07-08 15:34:26.202 I/tflite  ( 5395): Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
07-08 15:34:26.202 I/tflite  ( 5395): Memory footprint delta from the start of the tool (MB): init=286.73 overall=337
"""

# Android logcat "threadtime" format (benchmark app), int8 model.
LOGCAT_THREADTIME = """07-14 13:14:52.099 22838 22838 I tflite  : Initialized TensorFlow Lite runtime.
07-14 13:14:52.113 22838 22838 I tflite  : Created TensorFlow Lite XNNPACK delegate for CPU.
07-14 13:14:52.115 22838 22838 I tflite  : Replacing 539 out of 548 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 19 partitions for subgraph 0.
07-14 13:14:52.190 22838 22838 I tflite  : The input model file size (MB): 3.06409
07-14 13:14:52.190 22838 22838 I tflite  : Initialized session in 92.318ms.
07-14 13:14:52.218 22838 22838 I tflite  : Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
07-14 13:14:52.859 22838 22838 I tflite  : count=3 first=235158 curr=200386 min=199462 max=235158 avg=211669 std=16613 p5=199462 median=200386 p95=235158
07-14 13:14:52.859 22838 22838 I tflite  : Running benchmark for at least 25 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
07-14 13:14:56.520 22838 22838 I tflite  : count=25 first=187533 curr=140990 min=140071 max=195121 avg=145528 std=13583 p5=140545 median=141253 p95=187533
07-14 13:14:56.521 22838 22838 I tflite  : Inference timings in us: Init: 92318, First inference: 235158, Warmup (avg): 211669, Inference (avg): 145528
07-14 13:14:56.521 22838 22838 I tflite  : Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
07-14 13:14:56.521 22838 22838 I tflite  : Memory footprint delta from the start of the tool (MB): init=54.2852 overall=73.4102
"""

# ChromeOS ML benchmark (tast) notes: GPU run with VERBOSE replacement line and periodic peak memory.
GPU_PERIODIC = """INFO: Created TensorFlow Lite delegate for GPU.
VERBOSE: Replacing 58 out of 58 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 1 partitions for the whole graph.
INFO: Initialized OpenCL-based API.
INFO: Created 1 GPU delegate kernels.
INFO: Explicitly applied GPU delegate, and the model graph will be completely executed by the delegate.
INFO: Initialized session in 842.225ms.
INFO: count=13 first=115098 curr=36666 min=32079 max=115098 avg=40199.8 std=21694
INFO: count=1694 first=35688 curr=33419 min=30394 max=42335 avg=35134.9 std=1733
INFO: Inference timings in us: Init: 842225, First inference: 115098, Warmup (avg): 40199.8, Inference (avg): 35134.9
INFO: Overall peak memory footprint (MB) via periodic monitoring: 74.6641
"""

# NNAPI delegate that the driver does not take (tensorflow/tensorflow#56301, logcat threadtime).
NNAPI_REFUSED_HEAD = """05-31 10:31:13.023 21767 21767 I tflite  : Use NNAPI: [1]
05-31 10:31:13.036 21767 21767 I tflite  : NNAPI accelerators available: [ipuadaptor,nnapi-reference]
05-31 10:31:13.041 21767 21767 I tflite  : Created TensorFlow Lite delegate for NNAPI.
05-31 10:31:13.042 21767 21767 I tflite  : NNAPI delegate created.
05-31 10:31:13.157 21767 21767 I tflite  : Though NNAPI delegate is explicitly applied, the model graph will not be executed by the delegate.
"""

# The tool's failure when the graph cannot be read (its TFLITE_LOG(ERROR) line, then the exit).
MMAP_FAILURE = """INFO: STARTING!
INFO: Graph: [/data/local/tmp/edgecnn/0_missing.tflite]
ERROR: Failed to mmap model /data/local/tmp/edgecnn/0_missing.tflite
"""


def test_info_prefixed_output_with_percentiles():
    r = parse_benchmark_output(INFO_XNNPACK)
    assert r["init_ms"] == pytest.approx(87.639) and r["first_ms"] == pytest.approx(106.436)
    assert r["warmup_ms"] == pytest.approx(106.065) and r["mean_ms"] == pytest.approx(105.784)
    assert r["runs"] == 50  # the measured runs' count line, not the warm-up's (count=5)
    assert r["median_ms"] == pytest.approx(105.718) and r["std_ms"] == pytest.approx(0.260)
    assert (r["min_ms"], r["max_ms"]) == (pytest.approx(105.416), pytest.approx(106.528))
    assert r["p5_ms"] == pytest.approx(105.485) and r["p95_ms"] == pytest.approx(106.281)
    assert r["peak_memory_bytes"] == int(14.8164 * MIB) and r["init_memory_bytes"] == int(14.4414 * MIB)
    assert r["delegates"] == ["XNNPACK"] and r["model_mib"] == pytest.approx(4.2761)


def test_gpu_delegate_lines():
    r = parse_benchmark_output(INFO_GPU)
    assert r["delegates"] == ["GPU"] and r["delegate_coverage"] == {"GPU": "full"}
    assert r["init_ms"] == pytest.approx(1361.236) and r["mean_ms"] == pytest.approx(115.246)
    assert r["median_ms"] == pytest.approx(115.350) and r["peak_memory_bytes"] == int(132.816 * MIB)
    g = parse_benchmark_output(GPU_PERIODIC)
    assert g["runs"] == 1694 and g["std_ms"] == pytest.approx(1.733) and "median_ms" not in g
    assert g["periodic_peak_memory_bytes"] == int(74.6641 * MIB) and "peak_memory_bytes" not in g
    assert g["delegate_coverage"]["GPU"] == "full"
    assert g["delegate_coverage"]["TfLiteGpuDelegateV2"] == "58/58 nodes, 1 partitions"


def test_no_prefix_and_old_peak_memory_line():
    r = parse_benchmark_output(NO_PREFIX_PEAK)
    assert r["mean_ms"] == pytest.approx(249.684) and r["first_ms"] == pytest.approx(360.262)
    assert r["runs"] == 50 and r["std_ms"] == pytest.approx(1.442)
    assert r["init_memory_bytes"] == int(4.92969 * MIB) and r["peak_memory_bytes"] == int(138.809 * MIB)


def test_logcat_prefixes_and_scientific_notation():
    r = parse_benchmark_output(LOGCAT_SCIENTIFIC)
    assert r["mean_ms"] == pytest.approx(2719.85) and r["warmup_ms"] == pytest.approx(2732.15)
    assert r["runs"] == 10 and r["median_ms"] == pytest.approx(2709.263)
    assert r["peak_memory_bytes"] == 337 * MIB and r["threads_reported"] == 4
    assert r["delegate_coverage"]["TfLiteXNNPackDelegate"] == "1036/1097 nodes, 23 partitions"
    t = parse_benchmark_output(LOGCAT_THREADTIME)
    assert t["init_ms"] == pytest.approx(92.318) and t["mean_ms"] == pytest.approx(145.528)
    assert t["runs"] == 25 and t["p95_ms"] == pytest.approx(187.533)
    assert t["peak_memory_bytes"] == int(73.4102 * MIB)


def test_refused_delegate_and_failures_are_reported():
    with pytest.raises(ValueError, match="printed no timings; last line: .*will not be executed"):
        parse_benchmark_output(NNAPI_REFUSED_HEAD)
    r = parse_benchmark_output(NNAPI_REFUSED_HEAD + NO_PREFIX_PEAK)
    assert r["delegate_coverage"] == {"NNAPI": "none"} and r["delegates"] == ["NNAPI"]
    with pytest.raises(ValueError, match="printed no timings: Failed to mmap model /data/local/tmp"):
        parse_benchmark_output(MMAP_FAILURE)
    with pytest.raises(ValueError, match=r"\(no output\)"):
        parse_benchmark_output("")


def test_benchmark_flags():
    args = benchmark_args("/data/local/tmp/edgecnn/0_m.tflite", 4, Protocol(num_runs=200, min_secs=2),
                          use_xnnpack=False, use_gpu=True, use_nnapi=True)
    assert args == ["--graph=/data/local/tmp/edgecnn/0_m.tflite", "--num_runs=200", "--min_secs=2",
                    "--warmup_runs=1", "--warmup_min_secs=0.5", "--max_secs=150",
                    "--use_xnnpack=false", "--num_threads=4", "--use_gpu=true", "--use_nnapi=true"]


FAKE_ADB = '''#!{python}
"""A fake adb: records argv as one JSON line, answers like a phone would."""
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_ADB_LOG"], "a") as f:
    f.write(json.dumps(args) + "\\n")
if args[:1] == ["-s"]:
    args = args[2:]
state = os.environ.get("FAKE_ADB_STATE", "device")
if args[0] == "get-state":
    if state != "device":
        sys.stderr.write("error: no devices/emulators found\\n")
        sys.exit(1)
    print("device")
elif args[0] == "push":
    assert os.path.isfile(args[1]), args[1]  # the local path arrived as ONE argument
    print(f"{{args[1]}}: 1 file pushed, 0 skipped.")
elif args[0] == "shell" and "getprop" in args[1]:
    print("Google\\nPixel 7\\nTensor G2\\ngs201\\n14\\narm64-v8a\\n0-7")
elif args[0] == "shell" and "--graph=" in args[1]:
    sys.stdout.write(open(os.environ["FAKE_ADB_OUTPUT"]).read())
'''


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    adb = bin_dir / "adb"
    adb.write_text(FAKE_ADB.format(python=sys.executable))
    adb.chmod(0o755)
    log = tmp_path / "adb.log"
    output = tmp_path / "bench.out"
    output.write_text(INFO_GPU)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    monkeypatch.setenv("FAKE_ADB_OUTPUT", str(output))
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF fake")
    model = tmp_path / "my model $1;'x.tflite"
    model.write_bytes(b"TFL3 not really")
    return {"log": log, "output": output, "binary": binary, "model": model}


def _calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_adb_commands_and_rows(cli, fake_adb):
    r = cli("bench", fake_adb["model"], "--target", "adb", "--benchmark-binary", fake_adb["binary"],
            "--serial", "emu-5554", "--threads", "1,4", "--runs", "100", "--json")
    assert r.code == 0, r
    calls = _calls(fake_adb["log"])
    assert all(c[:2] == ["-s", "emu-5554"] for c in calls)
    calls = [c[2:] for c in calls]
    assert calls[0] == ["get-state"]
    pushes = [c for c in calls if c[0] == "push"]
    assert pushes == [["push", str(fake_adb["binary"]), "/data/local/tmp/edgecnn/benchmark_model"],
                      ["push", str(fake_adb["model"]), f"/data/local/tmp/edgecnn/0_{fake_adb['model'].name}"]]
    runs = [shlex.split(c[1]) for c in calls if c[0] == "shell" and "--graph" in c[1]]
    assert len(runs) == 2  # one run per thread count, the model pushed once
    for words, threads in zip(runs, (1, 4)):
        assert words[0] == "/data/local/tmp/edgecnn/benchmark_model"
        assert f"--graph=/data/local/tmp/edgecnn/0_{fake_adb['model'].name}" in words
        assert f"--num_threads={threads}" in words and "--use_xnnpack=true" in words and "--num_runs=100" in words
        assert not any(w.startswith(("--use_nnapi", "--use_gpu")) for w in words)
    report = json.loads(r.out)
    assert report["machine"] == {"hostname": None, "device": "Google Pixel 7", "cpu": "Tensor G2", "cores": 8,
                                 "cores_usable": None, "arch": "arm64-v8a", "os": "Android 14", "python": None,
                                 "numpy": None, "load_1min": None}
    for row in report["rows"]:
        assert row["status"] == "ok" and row["target"] == "adb:emu-5554"
        assert row["mean_ms"] == pytest.approx(115.246) and row["delegates"] == ["GPU"]  # the sample's log
        assert row["options"] == {"use_xnnpack": True, "use_gpu": False, "use_nnapi": False}
        assert row["machine"]["device"] == "Google Pixel 7"


def test_gpu_delegate_runs_once_per_file_as_local_gpu_runtimes_do(cli, fake_adb):
    """Thread counts are a CPU setting: with --use-gpu, one run per file and no --num_threads."""
    r = cli("bench", fake_adb["model"], "--target", "adb:emu-5554", "--benchmark-binary", fake_adb["binary"],
            "--use-gpu", "--threads", "1,4", "--json")
    assert r.code == 0, r
    [words] = [shlex.split(c[3]) for c in _calls(fake_adb["log"]) if c[2] == "shell" and "--graph" in c[3]]
    assert "--use_gpu=true" in words and not any(w.startswith("--num_threads") for w in words)
    [row] = json.loads(r.out)["rows"]
    assert row["threads"] is None and row["target"] == "adb:emu-5554" and row["options"]["use_gpu"] is True


def test_adb_tool_failure_is_an_error_row(cli, fake_adb):
    fake_adb["output"].write_text(MMAP_FAILURE)
    r = cli("bench", fake_adb["model"], "--target", "adb", "--benchmark-binary", fake_adb["binary"],
            "--use-nnapi", "--no-xnnpack", "--json")
    assert r.code == 2
    row = json.loads(r.out)["rows"][0]
    assert row["status"] == "error" and "Failed to mmap model" in row["error"]
    words = shlex.split(next(c[1] for c in _calls(fake_adb["log"]) if c[0] == "shell" and "--graph" in c[1]))
    assert "--use_nnapi=true" in words and "--use_xnnpack=false" in words


def test_no_device_missing_adb_and_missing_binary(cli, fake_adb, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_ADB_STATE", "none")
    r = cli("bench", fake_adb["model"], "--target", "adb", "--benchmark-binary", fake_adb["binary"])
    assert r.code == 2 and r.out == ""
    assert r.err == "edgecnn: error: no Android device ready on adb: error: no devices/emulators found\n"
    r = cli("bench", fake_adb["model"], "--target", "adb", "--benchmark-binary", tmp_path / "nope")
    assert r.code == 2 and "benchmark binary" in r.err and "does not exist" in r.err
    r = cli("bench", fake_adb["model"], "--target", "adb")
    assert r.code == 2 and "needs --benchmark-binary" in r.err
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    r = cli("bench", fake_adb["model"], "--target", "adb", "--benchmark-binary", fake_adb["binary"])
    assert r.code == 2 and r.err == "edgecnn: error: adb is not on PATH: install Android platform-tools\n"


def test_serial_is_checked_and_local_paths_never_read_as_options(cli, fake_adb, monkeypatch):
    for serial in ("-s; reboot", "emu 5554", "$(reboot)", "a\nb", ""):
        r = cli("bench", fake_adb["model"], "--target", "adb", "--benchmark-binary", fake_adb["binary"],
                "--serial", serial)
        assert r.code == 2 and r.out == "" and r.err.startswith("edgecnn: error: bad --serial "), r
        assert r.err.count("\n") == 1
    assert not fake_adb["log"].exists()  # adb never ran
    model = fake_adb["model"].with_name("-n.tflite")  # adb push would read "-n.tflite" as its -n flag
    model.write_bytes(b"TFL3 not really")
    monkeypatch.chdir(model.parent)
    r = cli("bench", "./-n.tflite", "--target", "adb", "--benchmark-binary", fake_adb["binary"],
            "--serial", "192.168.1.7:5555", "--threads", "1", "--json")
    assert r.code == 0, r
    pushed = [c[3] for c in _calls(fake_adb["log"]) if c[2] == "push"]
    assert pushed == [str(fake_adb["binary"]), str(model)]  # absolute: no word starts with '-'


def test_prepare_returns_the_phone_in_the_one_machine_shape(fake_adb):
    from edgecnn.benchmarks.remote_adb import AdbTarget
    from edgecnn.benchmarks.target import MACHINE_FIELDS, LocalTarget

    phone = AdbTarget(fake_adb["binary"], serial="emu-5554").prepare()
    assert tuple(phone) == tuple(LocalTarget().prepare()) == MACHINE_FIELDS
    assert (phone["device"], phone["cpu"], phone["cores"], phone["arch"]) == ("Google Pixel 7", "Tensor G2", 8,
                                                                             "arm64-v8a")
