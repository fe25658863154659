"""Benchmark on Android over adb with TFLite's own ``benchmark_model`` binary (user-supplied).

The binary and each model are pushed to ``/data/local/tmp/edgecnn/``; each point is one run of
``benchmark_model --graph=... --num_threads=N --use_xnnpack=... [--use_gpu=true]
[--use_nnapi=true]`` whose log is parsed into the same row as local runs. The parser reads the
tool's summary lines wherever they sit in a line, so plain output, ``INFO: `` prefixes and Android
logcat prefixes (``05-31 10:31:13.006 21767 21767 I tflite  : ...``) all parse; numbers may be in
scientific notation (``Warmup (avg): 1.04176e+06``).

Nothing reaches a shell unquoted: adb runs from an argument list, ``--serial`` must look like a
serial (``emulator-5554``, ``R58M123ABC``, ``192.168.1.7:5555``, an mDNS name), local paths go to
``adb push`` absolute (never read as an option) and every word of a device command is quoted with
:func:`shlex.quote` for the device's shell.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from edgecnn.benchmarks.measure import Protocol
from edgecnn.benchmarks.runtimes import error_row, finish_row
from edgecnn.benchmarks.target import Target, machine
from edgecnn.errors import EdgeCNNError

DEVICE_DIR = "/data/local/tmp/edgecnn"
_SERIAL = re.compile(r"[A-Za-z0-9\[][A-Za-z0-9_.:\[\]-]{0,254}")  # USB, emulator, host:port, [v6]:port, mDNS
MIB = 1024 * 1024
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_TIMINGS = re.compile(rf"Inference timings in us:\s*Init:\s*({_NUM}),\s*First inference:\s*({_NUM}),"
                      rf"\s*Warmup \(avg\):\s*({_NUM}),\s*Inference \(avg\):\s*({_NUM})")
# "Peak memory footprint" (older releases) and "Memory footprint delta from the start of the tool"
# (newer) are the same quantity: the tool's max-RSS increase since it started, in MiB.
_MEMORY = re.compile(rf"(?:Peak memory footprint|Memory footprint delta from the start of the tool)"
                     rf" \(MB\):\s*init=({_NUM})\s+overall=({_NUM})")
_PERIODIC = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring:\s*({_NUM})")
_COUNT = re.compile(rf"\bcount=(\d+)((?:\s+\w+={_NUM})*)")
_PAIR = re.compile(rf"(\w+)=({_NUM})")
_SIZE = re.compile(rf"The input model file size \(MB\):\s*({_NUM})")
_THREADS = re.compile(r"(?:#threads used for CPU inference|Num threads):\s*\[(-?\d+)\]")
_CREATED = re.compile(r"Created TensorFlow Lite (XNNPACK )?delegate for (\w+)")
_APPLIED = re.compile(r"Explicitly applied (\w+) delegate, and the model graph will be "
                      r"(completely|partially) executed by the delegate")
_NOT_APPLIED = re.compile(r"Though (\w+) delegate is explicitly applied, the model graph will not be "
                          r"executed by the delegate")
_REPLACING = re.compile(r"Replacing (\d+) out of (\d+) node\(s\) with delegate \((\w+)\) node, "
                        r"yielding (\d+) partitions")
_ERROR = re.compile(r"\b(?:ERROR|E tflite|E/tflite)\b[:\s]*(.*)")


def parse_benchmark_output(text: str) -> dict:
    """``benchmark_model``'s log -> init/first/warm-up/average times (ms), run statistics, memory.

    Returns ``init_ms``, ``first_ms``, ``warmup_ms``, ``mean_ms`` (the tool's "Inference (avg)"),
    from the measured runs' ``count=`` line ``runs``, ``std_ms``, ``min_ms``, ``max_ms`` and, where
    the tool prints them, ``median_ms``/``p5_ms``/``p95_ms``; ``init_memory_bytes`` and
    ``peak_memory_bytes`` (max-RSS increase since the tool started), ``periodic_peak_memory_bytes``,
    ``model_mib``, ``threads_reported``, ``delegates`` (created) and ``delegate_coverage``.
    Raises ValueError with the tool's error line when the summary is missing.
    """
    m = _TIMINGS.search(text)
    if not m:
        errors = [e.group(1).strip() for e in map(_ERROR.search, text.splitlines()) if e and e.group(1).strip()]
        last = [ln.strip() for ln in text.splitlines() if ln.strip()]
        raise ValueError("benchmark_model printed no timings"
                         + (f": {errors[0]}" if errors else f"; last line: {last[-1]}" if last else
                            " (no output)"))
    init_us, first_us, warm_us, avg_us = (float(g) for g in m.groups())
    out: dict = {"init_ms": init_us / 1e3, "first_ms": first_us / 1e3, "warmup_ms": warm_us / 1e3,
                 "mean_ms": avg_us / 1e3}
    counts = list(_COUNT.finditer(text[:m.start()]))
    if counts:  # the last count= line before the summary is the measured (regular) runs
        c = counts[-1]
        out["runs"] = int(c.group(1))
        names = {"std": "std_ms", "min": "min_ms", "max": "max_ms", "median": "median_ms",
                 "p5": "p5_ms", "p95": "p95_ms"}
        for key, value in _PAIR.findall(c.group(2)):
            if key in names:
                out[names[key]] = float(value) / 1e3
    mem = list(_MEMORY.finditer(text))
    if mem:
        out["init_memory_bytes"] = int(float(mem[-1].group(1)) * MIB)
        out["peak_memory_bytes"] = int(float(mem[-1].group(2)) * MIB)
    if p := _PERIODIC.search(text):
        out["periodic_peak_memory_bytes"] = int(float(p.group(1)) * MIB)
    if s := _SIZE.search(text):
        out["model_mib"] = float(s.group(1))
    if t := _THREADS.search(text):
        out["threads_reported"] = int(t.group(1))
    out["delegates"] = sorted({("XNNPACK" if x.group(1) else x.group(2)) for x in _CREATED.finditer(text)})
    coverage = {}
    for a in _APPLIED.finditer(text):
        coverage[a.group(1)] = "full" if a.group(2) == "completely" else "partial"
    for a in _NOT_APPLIED.finditer(text):
        coverage[a.group(1)] = "none"
    for r in _REPLACING.finditer(text):
        coverage.setdefault(r.group(3), f"{r.group(1)}/{r.group(2)} nodes, {r.group(4)} partitions")
    out["delegate_coverage"] = coverage
    return out


def benchmark_args(graph: str, threads: int | None, protocol: Protocol, use_xnnpack: bool = True,
                   use_gpu: bool = False, use_nnapi: bool = False) -> list[str]:
    """The ``benchmark_model`` flags for one point (flag names as the tool spells them)."""
    args = [f"--graph={graph}", f"--num_runs={protocol.num_runs}", f"--min_secs={protocol.min_secs:g}",
            f"--warmup_runs={protocol.warmup_runs}", f"--warmup_min_secs={protocol.warmup_min_secs:g}",
            f"--max_secs={protocol.max_secs:g}", f"--use_xnnpack={str(use_xnnpack).lower()}"]
    if threads:
        args.append(f"--num_threads={threads}")
    if use_gpu:
        args.append("--use_gpu=true")
    if use_nnapi:
        args.append("--use_nnapi=true")
    return args


@dataclass
class AdbTarget(Target):
    """An Android device reached with ``adb`` (``serial`` picks one of several) and the user's
    ``benchmark_model`` binary (the build for the phone's ABI, e.g. android_aarch64)."""

    runtime = "benchmark_model"

    binary: Path
    serial: str | None = None
    use_gpu: bool = False
    use_nnapi: bool = False
    use_xnnpack: bool = True
    _uploaded: dict[str, str] = field(default_factory=dict, init=False)
    _machine: dict = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.serial is not None and not _SERIAL.fullmatch(self.serial):
            raise EdgeCNNError(f"bad --serial {self.serial!r}: letters, digits, '.', '_', ':', '-' and [] "
                               f"(as 'adb devices' lists them)")

    @property
    def label(self) -> str:
        return f"adb:{self.serial}" if self.serial else "adb"

    @property
    def device(self) -> str:
        """'gpu' with the GPU delegate (one point per file: thread counts are a CPU setting), else 'cpu'."""
        return "gpu" if self.use_gpu else "cpu"

    @property
    def run_options(self) -> dict:
        """The delegate flags every point carries (part of its identity in a results file)."""
        return {"use_xnnpack": self.use_xnnpack, "use_gpu": self.use_gpu, "use_nnapi": self.use_nnapi}

    def adb(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        """Run ``adb [-s SERIAL] ARGS`` (an argument list: no local shell)."""
        argv = ["adb"] + (["-s", self.serial] if self.serial else []) + list(args)
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except FileNotFoundError:
            raise EdgeCNNError("adb is not on PATH: install Android platform-tools") from None
        except subprocess.TimeoutExpired:
            raise EdgeCNNError(f"{self.label}: 'adb {args[0]}' gave no answer within {timeout:g} s") from None

    def shell(self, *words: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        """Run one command on the device; each word is quoted for the device's shell."""
        return self.adb("shell", " ".join(shlex.quote(w) for w in words), timeout=timeout)

    def push(self, local: Path, remote: str) -> None:
        proc = self.adb("push", os.path.abspath(local), remote, timeout=600)  # "-x.tflite" is no option
        if proc.returncode != 0:
            raise EdgeCNNError(f"adb push {local} failed: {(proc.stderr or proc.stdout).strip()[:200]}")

    def prepare(self) -> dict:
        """Check adb, the device and the binary; push the binary; returns the phone's machine
        (:func:`~edgecnn.benchmarks.target.machine`: device, SoC, cores, ABI, Android version)."""
        if shutil.which("adb") is None:
            raise EdgeCNNError("adb is not on PATH: install Android platform-tools")
        if not Path(self.binary).is_file():
            raise EdgeCNNError(f"benchmark binary {self.binary} does not exist (download "
                               "android_aarch64_benchmark_model from TFLite's nightly builds)")
        state = self.adb("get-state", timeout=20)
        if state.returncode != 0 or state.stdout.strip() != "device":
            said = (state.stderr or state.stdout).strip().splitlines()
            raise EdgeCNNError(f"no Android device ready on {self.label}: "
                               f"{said[-1] if said else 'adb get-state failed'}")
        self.shell("mkdir", "-p", DEVICE_DIR)
        self.push(self.binary, f"{DEVICE_DIR}/benchmark_model")
        self.shell("chmod", "755", f"{DEVICE_DIR}/benchmark_model")
        props = ["ro.product.manufacturer", "ro.product.model", "ro.soc.model", "ro.board.platform",
                 "ro.build.version.release", "ro.product.cpu.abi"]
        info = self.adb("shell", "; ".join(f"getprop {p}" for p in props)
                        + "; cat /sys/devices/system/cpu/possible").stdout.splitlines()
        values = dict(zip(props + ["cpus"], (v.strip() for v in info + [""] * 7)))
        first, _, last = values["cpus"].partition("-")
        cores = int(last) - int(first) + 1 if first.isdigit() and last.isdigit() else None
        self._machine = machine({
            "device": f"{values['ro.product.manufacturer']} {values['ro.product.model']}".strip(),
            "cpu": values["ro.soc.model"] or values["ro.board.platform"], "cores": cores,
            "arch": values["ro.product.cpu.abi"], "os": f"Android {values['ro.build.version.release']}",
        })
        return self._machine

    def close(self) -> None:
        """Files stay in ``/data/local/tmp/edgecnn/`` on the device (re-runs overwrite them)."""
        self._uploaded.clear()

    def run_point(self, point: dict, timeout: float = 900.0) -> dict:
        """Run ``benchmark_model`` for one point on the device; returns its row."""
        local = point["path"]
        try:
            if local not in self._uploaded:
                remote = f"{DEVICE_DIR}/{len(self._uploaded)}_{Path(local).name}"
                self.push(Path(local), remote)
                self._uploaded[local] = remote
            args = benchmark_args(self._uploaded[local], point.get("threads"),
                                  Protocol.from_dict(point.get("protocol", {})), **self.run_options)
            proc = self.shell(f"{DEVICE_DIR}/benchmark_model", *args, timeout=timeout)
        except EdgeCNNError as exc:
            return error_row(point, str(exc))
        try:
            result = parse_benchmark_output(proc.stdout + "\n" + proc.stderr)
        except ValueError as exc:
            return error_row(point, f"{exc} (exit {proc.returncode})")
        result["machine"] = self._machine
        return finish_row(point, result)
