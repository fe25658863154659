"""``edgecnn bench`` as a Python API: export what is missing, then measure points one process each.

    from edgecnn.pipelines.bench import bench, bench_files
    result = bench(["mobilenet"], "local", threads=[1, 4], zoo=ZooOptions(alphas=(0.5, 1.0)))
    rows = bench_files(["m_int8.tflite"], "ssh://pi@raspberrypi.local", threads=[4])

:func:`bench` takes what ``edgecnn bench`` takes (files, export folders, zoo model names) and a
target (``local``, ``ssh://[user@]host[:port]``, ``adb[:serial]``, or a
:class:`~edgecnn.benchmarks.target.Target`), and returns a :class:`BenchResult` whose
``to_dict()`` is the ``--json`` object.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from edgecnn.benchmarks.measure import Protocol
from edgecnn.benchmarks import sweep
from edgecnn.benchmarks.sweep import MODEL_SUFFIXES, knob_grid, model_files, read_export_dir, read_report, zoo_spec
from edgecnn.benchmarks.target import LocalTarget, Target
from edgecnn.errors import EdgeCNNError


def _export_made_by(folder: Path) -> tuple[str | None, set[str]]:
    """(converter, precisions present) of an export folder's checked ``report.json``; (None, {}) when
    it has no usable one."""
    try:
        report = read_report(folder)
    except (OSError, EdgeCNNError):
        return None, set()
    if report is None:
        return None, set()
    return report["converter"], {f["precision"] for f in report["files"] if (folder / f["name"]).is_file()}


def ensure_export(spec: dict, precisions: list[str], exports_root: Path, converter: str = "litert") -> Path:
    """``exports_root/<canonical name>/`` holding every precision asked for, made by ``converter``;
    exported when missing.

    A folder whose ``report.json`` names that converter and lists those precisions is reused as it
    is. A folder another converter made (or one without a readable report) is left alone: the
    export goes to ``<canonical name>_<converter>/`` beside it. Exports for benchmarking skip
    verification and the report's quick latency (``edgecnn bench`` measures).
    """
    from edgecnn.pipelines.export import export

    folder = Path(exports_root) / spec["label"]
    made_by, have = _export_made_by(folder)
    if folder.exists() and made_by != converter:
        folder = folder.with_name(f"{folder.name}_{converter}")
        made_by, have = _export_made_by(folder)
    if made_by != converter or not set(precisions) <= have:
        export(spec["name"], res=spec["res"], num_classes=spec.get("num_classes"),
               in_chans=spec.get("in_chans"), quantize=precisions, converter=converter, out=folder,
               verify=False, measure=False, **spec["knobs"])
    return folder


# ---------------------------------------------------------------- targets

def target_from_url(url: str, *, ssh_key: str | None = None, ssh_options: list[str] | tuple = (),
                    remote_python: str = "python3", remote_dir: str | None = None,
                    benchmark_binary: Path | None = None, serial: str | None = None, use_gpu: bool = False,
                    use_nnapi: bool = False, use_xnnpack: bool = True) -> Target:
    """The target ``url`` names: ``local``, ``ssh://[user@]host[:port]`` (with the ``ssh_*``/``remote_*``
    settings) or ``adb`` / ``adb:SERIAL`` (with ``benchmark_binary`` and the delegate flags).

    Untrusted text is checked here, before anything runs: a bad URL, user, host, port or serial
    raises one line (:class:`~edgecnn.errors.EdgeCNNError`).
    """
    if url == "local":
        return LocalTarget()
    if url.startswith("ssh://"):
        from edgecnn.benchmarks.remote_ssh import SSHTarget

        return SSHTarget.parse(url, key=ssh_key, python=remote_python, remote_dir=remote_dir,
                               options=list(ssh_options))
    if url == "adb" or url.startswith("adb:"):
        from edgecnn.benchmarks.remote_adb import AdbTarget

        named = url.partition(":")[2] if ":" in url else None
        if named is not None and serial is not None and named != serial:
            raise EdgeCNNError(f"--target {url} and --serial {serial} name different devices")
        if benchmark_binary is None:
            raise EdgeCNNError("--target adb needs --benchmark-binary (TFLite's benchmark_model for the phone)")
        return AdbTarget(Path(benchmark_binary), serial=named if named is not None else serial, use_gpu=use_gpu,
                         use_nnapi=use_nnapi, use_xnnpack=use_xnnpack)
    raise EdgeCNNError(f"bad --target {url!r}: use local, ssh://[user@]host[:port] or adb[:serial]")


# ---------------------------------------------------------------- what to measure

@dataclass(frozen=True)
class ZooOptions:
    """How zoo model names among the inputs are swept and exported: width multipliers ``alphas`` and
    input sizes ``resolutions`` (px; None: the model's default), the ``precisions`` of the exported
    files, their ``converter``, classifier outputs, input channels, and where exports go (or are reused)."""

    alphas: tuple[float, ...] | None = None
    resolutions: tuple[int, ...] | None = None
    precisions: tuple[str, ...] = ("float32", "int8")
    converter: str = "litert"
    num_classes: int | None = None
    in_chans: int | None = None
    exports_dir: Path = Path("exports")


def _is_path(text: str) -> bool:
    return os.sep in text or text.lower().endswith((".tflite", ".onnx")) or Path(text).exists()


def _zoo_groups(name: str, runtimes: list[str] | None, zoo: ZooOptions) -> list[dict]:
    """Per alpha x res of zoo model ``name``: its exported files (exported when missing) and spec."""
    groups = []
    for knobs, res in knob_grid({"alpha": zoo.alphas}, zoo.resolutions):
        spec, macs = zoo_spec(name, res, knobs, zoo.num_classes, zoo.in_chans)
        files: list[Path] = []
        info = {"macs": macs}
        if runtimes is None or "litert" in runtimes:  # ONNX Runtime needs no file
            folder = ensure_export(spec, list(zoo.precisions), zoo.exports_dir, zoo.converter)
            files, _, info = read_export_dir(folder)
            files = [f for f in files if info["files"].get(f.name, {}).get("precision") in zoo.precisions]
            info["macs"] = info.get("macs") or macs
        groups.append({"files": files, "spec": spec, "info": info, "precisions": list(zoo.precisions)})
    return groups


def _local_groups(inputs: list[str], runtimes: list[str] | None, zoo: ZooOptions) -> list[dict]:
    """What to measure here, per input: files (+ info and spec of an export folder), or a zoo model's
    exports; keyword arguments of :meth:`LocalTarget.points`."""
    groups: list[dict] = []
    for item in map(str, inputs):
        path = Path(item)
        if path.is_dir():
            files, spec, info = read_export_dir(path)
            groups.append({"files": files, "spec": spec, "info": info})
        elif _is_path(item):
            if not path.is_file():
                raise EdgeCNNError(f"{item}: no such file")
            if path.suffix.lower() not in MODEL_SUFFIXES:
                raise EdgeCNNError(f"{item}: not a .tflite or .onnx file")
            groups.append({"files": [path]})
        else:
            groups += _zoo_groups(item, runtimes, zoo)
    return [{**g, "runtimes": runtimes} for g in groups]


def _remote_groups(inputs: list[str]) -> list[dict]:
    """A remote target's files: .tflite files, or those of export folders (checked before connecting)."""
    files = model_files(inputs)
    for f in files:
        if not f.is_file() or f.suffix.lower() != ".tflite":
            raise EdgeCNNError(f"{f}: remote targets run .tflite files only (give a file or an export folder)")
    return [{"files": files}]


# ---------------------------------------------------------------- running

@dataclass
class BenchResult:
    """One ``bench``: the ``target`` as given, its ``machine`` (the :data:`MACHINE_FIELDS` shape), the
    ``protocol``, the ``rows`` in point order, and the files written (JSONL, CSV, PNG)."""

    target: str
    machine: dict
    protocol: Protocol
    rows: list[dict]
    results: Path | None = None
    csv: Path | None = None
    plot: Path | None = None
    fastest: dict = field(init=False)

    def __post_init__(self) -> None:
        self.fastest = sweep.fastest(self.rows)

    @property
    def failed(self) -> list[dict]:
        """Rows of points that could not be measured (status 'error'; 'skipped' ones are not failures)."""
        return [r for r in self.rows if r.get("status") == "error"]

    def to_dict(self) -> dict:
        """The ``edgecnn bench --json`` object."""
        return {"target": self.target, "machine": self.machine, "protocol": self.protocol.to_dict(),
                "rows": self.rows, "fastest": self.fastest, "results": self.results, "csv": self.csv,
                "plot": self.plot}


def bench(inputs: list[str | os.PathLike], target: str | Target = "local", *, threads: list[int] | None = None,
          protocol: Protocol = Protocol(), runtimes: list[str] | None = None, zoo: ZooOptions = ZooOptions(),
          results: Path | None = None, csv: Path | None = None, plot: Path | None = None,
          timeout: float = 600.0, progress: bool = False) -> BenchResult:
    """Measure ``inputs`` (.tflite/.onnx files, export folders, zoo model names) on ``target``.

    ``threads``: CPU thread counts (default 1 and all of the target's cores); ``runtimes``: local
    runtimes to use (default all that apply); ``zoo``: how model names are swept and exported (what
    is missing is exported first); ``results``: a JSONL file that a re-run resumes from; ``csv``,
    ``plot``: also write the table / the latency plot; ``timeout``: seconds per point. The target
    is prepared here and closed at the end (remote ones run .tflite files only). Bad input raises
    :class:`~edgecnn.errors.EdgeCNNError`; a model that cannot run is an error row.
    """
    tgt = target_from_url(target) if isinstance(target, str) else target
    try:
        local = isinstance(tgt, LocalTarget)
        groups = _local_groups(inputs, runtimes, zoo) if local else _remote_groups(inputs)
        machine = tgt.prepare()
        counts = list(threads or sorted({1, machine["cores"] or 1}))
        points = [p for g in groups for p in tgt.points(threads=counts, protocol=protocol, **g)]
        if not points:
            raise EdgeCNNError("nothing to measure: no runtime in --runtime applies to these inputs")
        rows = tgt.run(points, results, timeout, progress)
    finally:
        tgt.close()
    if csv:
        sweep.write_csv(rows, csv)
    if plot:
        sweep.plot(rows, plot)
    return BenchResult(target if isinstance(target, str) else tgt.label, machine, protocol, rows, results, csv,
                       plot)


def bench_files(paths: list[str | os.PathLike], target: str | Target = "local", threads: list[int] | None = None,
                protocol: Protocol = Protocol(), **options) -> list[dict]:
    """The rows of :func:`bench` for model files on one target (``options``: :func:`bench`'s others)."""
    return bench(paths, target, threads=threads, protocol=protocol, **options).rows


def alternating_latency(paths: list[str | os.PathLike], rounds: int = 3, threads: int = 1,
                        protocol: Protocol = Protocol(), target: str | Target = "local",
                        runtime: str = "litert") -> dict[str, dict]:
    """Median latency (ms) of each model file on ``runtime`` over ``rounds`` rounds that alternate the
    files (a drift in machine load hits all of them), one process per measurement (:func:`bench_files`).

    Returns ``{path: {"ms": [median ms of each round], "median_ms": median of those}}`` keyed by the
    paths as given; a file that does not run raises :class:`EdgeCNNError`.
    """
    import statistics

    keys = {str(Path(p).resolve()): str(p) for p in paths}
    out: dict[str, dict] = {str(p): {"ms": []} for p in paths}
    for _ in range(rounds):
        for row in bench_files(list(paths), target, threads=[threads], protocol=protocol, runtimes=[runtime]):
            if row.get("status") != "ok":
                raise EdgeCNNError(f"{row.get('path')}: {row.get('error') or row.get('status')}")
            out[keys[str(Path(row["path"]).resolve())]]["ms"].append(row["median_ms"])
    for entry in out.values():
        entry["median_ms"] = statistics.median(entry["ms"])
    return out
