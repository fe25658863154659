"""The measurement method, in the style of TFLite's ``benchmark_model``.

One call of :func:`measure` times, in the current process: initialisation (load + allocate),
the first inference, warm-up runs (at least ``warmup_runs`` and ``warmup_min_secs``), then the
measured runs (at least ``num_runs`` and ``min_secs``, stopping at ``max_secs``). It reports
mean, median, p90, p99, std, min and max in milliseconds and the peak memory, i.e. the increase of
the process's resident set size (RSS high-water mark) from just before initialisation, in bytes.

This module needs only the standard library and NumPy: it is the method both of the local worker
and of the runner that ``remote_ssh`` ships to a board (inside the same single-file zipapp).
"""

from __future__ import annotations

import os
import platform
import re
import resource
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

# A runtime's "init" callable does the loading and returns the callable that runs one inference.
Init = Callable[[], Callable[[], object]]


@dataclass(frozen=True)
class Protocol:
    """How long to measure; defaults follow ``benchmark_model`` (seconds, run counts)."""

    num_runs: int = 50
    min_secs: float = 1.0
    warmup_runs: int = 1
    warmup_min_secs: float = 0.5
    max_secs: float = 150.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Protocol":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def summarize(times_ms: list[float]) -> dict:
    """Latency statistics of the measured runs (ms)."""
    t = np.asarray(times_ms, dtype=np.float64)
    return {
        "runs": int(t.size),
        "mean_ms": float(t.mean()),
        "median_ms": float(np.median(t)),
        "p90_ms": float(np.percentile(t, 90)),
        "p99_ms": float(np.percentile(t, 99)),
        "std_ms": float(t.std(ddof=1)) if t.size > 1 else 0.0,
        "min_ms": float(t.min()),
        "max_ms": float(t.max()),
    }


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            m = re.search(rf"^{field}:\s+(\d+)\s+kB", f.read(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def current_rss_bytes() -> int:
    """Resident set size now (bytes)."""
    kb = _status_kb("VmRSS")
    if kb is not None:
        return kb * 1024
    return peak_rss_bytes()  # no /proc (macOS): the high-water mark is the best available


def peak_rss_bytes() -> int:
    """RSS high-water mark of this process (bytes): since the last reset where /proc allows it."""
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux kB


def _timed_loop(run: Callable[[], object], min_runs: int, min_secs: float,
                max_secs: float) -> list[float]:
    """Run until both ``min_runs`` and ``min_secs`` are reached, or ``max_secs`` passed (ms each)."""
    times: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        run()
        t1 = time.perf_counter()
        times.append((t1 - t0) * 1e3)
        elapsed = t1 - start
        if (len(times) >= min_runs and elapsed >= min_secs) or elapsed >= max_secs:
            return times


def measure(init: Init, protocol: Protocol = Protocol()) -> dict:
    """Time ``init`` and the inferences of the callable it returns; see the module docstring.

    ``first_ms`` is the first warm-up run and ``warmup_ms`` the mean of all warm-up runs, as in
    ``benchmark_model``. ``init_memory_bytes`` / ``peak_memory_bytes``: RSS high-water mark increase
    after init / after all runs (bytes).
    """
    exact = reset_peak_rss()
    base = current_rss_bytes() if exact else peak_rss_bytes()
    t0 = time.perf_counter()
    run = init()
    init_ms = (time.perf_counter() - t0) * 1e3
    init_peak = peak_rss_bytes()
    warm = _timed_loop(run, max(1, protocol.warmup_runs), protocol.warmup_min_secs,
                       protocol.max_secs)
    times = _timed_loop(run, max(1, protocol.num_runs), protocol.min_secs, protocol.max_secs)
    peak = peak_rss_bytes()
    return {
        "init_ms": init_ms,
        "first_ms": warm[0],
        "warmup_ms": float(np.mean(warm)),
        "warmup_runs": len(warm),
        **summarize(times),
        "init_memory_bytes": max(0, init_peak - base),
        "peak_memory_bytes": max(0, peak - base),
        "memory_method": "VmHWM reset via /proc/self/clear_refs" if exact
        else "ru_maxrss (peak since process start) minus peak before init",
    }


def random_input(shape, dtype, rng: np.random.Generator) -> np.ndarray:
    """A real-shaped input of the right dtype: integers over their full range, floats in [-1, 1]."""
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, int(info.max) + 1, size=shape, dtype=dtype)
    if np.issubdtype(dtype, np.floating):
        return rng.uniform(-1.0, 1.0, size=shape).astype(dtype)
    raise ValueError(f"cannot make an input of dtype {dtype}")


def gmacs_per_s(macs: int | None, median_ms: float | None) -> float | None:
    """Achieved throughput in GMAC/s (1e9 multiply-accumulates per second) at the median latency."""
    if not macs or not median_ms:
        return None
    return macs / (median_ms * 1e-3) / 1e9


# SIMD extensions that change int8/float32 kernel speed several-fold (XNNPACK, oneDNN), best first.
_SIMD_FLAGS = ("amx_int8", "avx512_vnni", "avx512f", "avx_vnni", "avx2",  # x86 /proc/cpuinfo "flags"
               "sme", "sve2", "sve", "i8mm", "asimddp", "asimd")  # ARM "Features"


def cpu_name(cpuinfo: str, fallback: str = "") -> str:
    """The CPU as results should name it, from the text of ``/proc/cpuinfo``: the model, then for x86
    its family/model numbers (one marketing name covers several generations) and the SIMD extensions
    that matter for inference, e.g. ``AMD EPYC (family 25 model 1; avx2)``."""
    # x86: "model name"; Raspberry Pi: "Model" (the board); other ARM: "Hardware" or "CPU part".
    name = fallback
    for key in ("model name", "Model", "Hardware", "cpu model"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", cpuinfo, re.M)
        if m:
            name = m.group(1).strip()
            break
    details = []
    family, model = (re.search(rf"^{k}\s*:\s*(\d+)$", cpuinfo, re.M) for k in ("cpu family", "model"))
    if family and model:
        details.append(f"family {family.group(1)} model {model.group(1)}")
    flags = re.search(r"^(?:flags|Features)\s*:\s*(.*)$", cpuinfo, re.M)
    have = set(flags.group(1).split()) if flags else set()
    simd = [f for f in _SIMD_FLAGS if f in have]
    if simd:
        details.append(" ".join(simd[:3]))
    return f"{name} ({'; '.join(details)})" if details else name


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        text = ""
    return cpu_name(text, platform.processor() or platform.machine())


def _os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            m = re.search(r'^PRETTY_NAME="?([^"\n]+)"?', f.read(), re.M)
        if m:
            return f"{m.group(1)} (kernel {platform.release()})"
    except OSError:
        pass
    return platform.platform()


def machine_info() -> dict:
    """Where the numbers were measured: CPU model, core count, architecture, OS, Python, and the
    1-minute load average when it was measured (above the core count, latencies are inflated)."""
    affinity = getattr(os, "sched_getaffinity", None)
    load = getattr(os, "getloadavg", None)
    return {
        "hostname": platform.node(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(affinity(0)) if affinity else os.cpu_count(),
        "arch": platform.machine(),
        "os": _os_name(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "load_1min": round(load()[0], 2) if load else None,
    }


def interpreter_runner(interpreter, seed: int = 0) -> Callable[[], object]:
    """Feed every input of an allocated TFLite interpreter once; return the timed call (invoke).

    As ``benchmark_model`` does, inputs are set once and only ``invoke()`` is timed. A dynamic
    batch dimension is fixed to 1; any other dynamic dimension cannot be fed and raises ValueError.
    """
    rng = np.random.default_rng(seed)
    resized = False
    for d in interpreter.get_input_details():
        sig = [int(s) for s in d.get("shape_signature", d["shape"])]
        if -1 in sig[1:]:
            raise ValueError(f"input {d['name']!r} has dynamic dimensions {sig}: only the batch may "
                             "be dynamic; export the model with a fixed input size")
        if sig and sig[0] == -1:
            interpreter.resize_tensor_input(d["index"], [1, *sig[1:]])
            resized = True
    if resized:
        interpreter.allocate_tensors()
    for d in interpreter.get_input_details():
        try:
            interpreter.set_tensor(d["index"], random_input(d["shape"], d["dtype"], rng))
        except ValueError as exc:
            raise ValueError(f"input {d['name']!r} cannot be fed: {exc}") from None
    return interpreter.invoke


def tflite_precision(interpreter) -> str:
    """'int8' (full integer), 'dynamic' (int8 weights, float activations), 'float16' or 'float32'.

    Judged from the tensor types of the graph: most tensors integer -> int8; some -> dynamic range.
    """
    counts: dict[str, int] = {}
    for d in interpreter.get_tensor_details():
        name = np.dtype(d["dtype"]).name
        counts[name] = counts.get(name, 0) + 1
    n_int = counts.get("int8", 0) + counts.get("uint8", 0) + counts.get("int16", 0)
    n_float = counts.get("float32", 0)
    if n_int > n_float:
        return "int8"
    if n_int:
        return "dynamic"
    return "float16" if counts.get("float16") else "float32"
