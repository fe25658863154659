"""Sweeps: points for files, export folders and zoo models; resumable runs; table, CSV and plot.

A sweep is a list of points (see :mod:`edgecnn.benchmarks.runtimes`) over model x alpha x res x
precision x runtime x threads. :func:`run_sweep` measures them one process each, with a progress
bar, rewriting the results JSONL atomically after every point; a re-run with the same file skips
the points already measured (status ok or skipped) and retries those that failed.

Every row says which ``converter`` made the file it measured (from the export's ``report.json``;
``torch.onnx`` for ONNX Runtime on a zoo model, None for PyTorch and for files of unknown origin),
and rows are compared only within one precision (:func:`fastest`).
"""

from __future__ import annotations

import csv
import io
import json
import os
from itertools import product
from pathlib import Path
from typing import Callable, Iterable

from edgecnn.benchmarks.measure import Protocol
from edgecnn.benchmarks.runtimes import RUNTIMES, error_row, point_key, run_point, unavailable_reason
from edgecnn.errors import EdgeCNNError, shorten
from edgecnn.io import atomic_path, write_text
from edgecnn.limits import COUNT, IN_CHANS, NUM_CLASSES, PROBABILITY, RES
from edgecnn.schema import Doc, check_knobs

MODEL_SUFFIXES = (".tflite", ".onnx")
MAX_REPORT_BYTES = 16 << 20  # an export's report.json is a few KiB; a larger one is not one


def precision_from_name(path: Path) -> str | None:
    """The precision an exported file's name states (``..._dynamic_int8.tflite`` -> 'dynamic').

    The endings are those ``edgecnn export`` names its files with (``Variant.suffix``); None for others.
    """
    from edgecnn.converters.base import IO_TYPES, PRECISIONS, variants

    endings = sorted(((v.suffix, v.precision) for v in variants(PRECISIONS, IO_TYPES)),
                     key=lambda e: -len(e[0]))
    stem = path.stem.lower()
    return next((p for suffix, p in endings if stem.endswith("_" + suffix)), None)


def make_points(runtime: str, threads: Iterable[int], protocol: Protocol, device: str | None = None,
                target: str | None = None, options: dict | None = None, **fields) -> list[dict]:
    """The points of one runtime over thread counts: the one constructor of local, ssh and adb points.

    ``device``: where the runtime computes (default :data:`RUNTIMES`' entry; a remote target names
    its own). Threads are a CPU setting: on any other device (CUDA, a phone's GPU delegate) there is
    one point with ``threads`` None. ``target`` (a remote target's label) and ``options`` (its run
    flags) become part of the point's identity; local points carry neither. ``fields``: what to run
    (``path``/``spec``) and the descriptive fields carried into the row.
    """
    device = device or RUNTIMES[runtime].device
    where = {"target": target, "options": options} if target else {}
    counts = list(threads) if device == "cpu" else [None]
    return [{"runtime": runtime, "threads": t, "protocol": protocol.to_dict(), **where, **fields} for t in counts]


def file_fields(path: Path, info: dict | None = None) -> dict:
    """The descriptive fields of a point for one model file: label, precision, bytes, res, MACs.

    ``info`` comes from the export's ``report.json`` (see :func:`read_export_dir`); without it, the
    report beside the file is read when there is one, else the file name says what it can.
    """
    if info is None:
        info = read_export_dir(path.parent)[2] if (path.parent / "report.json").is_file() else {}
    meta = info.get("files", {}).get(path.name, {})
    return {"model": info.get("model") or path.stem, "path": str(path), "converter": info.get("converter"),
            "precision": meta.get("precision") or precision_from_name(path),
            "file_bytes": path.stat().st_size, "res": info.get("res"), "macs": info.get("macs"),
            "accuracy": meta.get("accuracy")}


def points_for_files(files: list[Path], threads: list[int], protocol: Protocol,
                     runtimes: list[str] | None = None, spec: dict | None = None,
                     info: dict | None = None, precisions: list[str] | None = None) -> list[dict]:
    """Points for ``.tflite``/``.onnx`` files of one model, plus PyTorch points when ``spec`` is known.

    ``info`` holds the descriptive fields of that model (``model``, ``res``, ``macs``, ``converter``,
    per-file ``precision``/``accuracy`` under ``files``) read from an export's ``report.json``; None:
    each file's own folder is looked at (:func:`file_fields`). ``precisions``: the precisions asked
    for; a runtime that builds the zoo model in another precision gets a point with a ``skip``
    reason (a 'skipped' row) instead of a measurement of something else.
    """
    wanted = set(runtimes or RUNTIMES)
    points: list[dict] = []
    for path in files:
        fields = file_fields(path, info)
        for name, rt in RUNTIMES.items():
            if rt.suffix == path.suffix.lower() and name in wanted:
                points += make_points(name, threads, protocol, **fields)
    if spec is not None:
        have_onnx = any(p.suffix.lower() == ".onnx" for p in files)
        info = info or {}
        fields = {"model": info.get("model") or spec["label"], "spec": spec, "res": spec["res"],
                  "macs": info.get("macs")}
        for name, rt in RUNTIMES.items():
            if name in wanted and rt.from_spec and not (rt.suffix and have_onnx):
                precision = rt.precision or "float32"  # ONNX Runtime: torch.onnx's float32 graph
                extra = {"converter": "torch.onnx" if rt.suffix == ".onnx" else None}
                if precisions is not None and precision not in precisions:
                    extra["skip"] = (f"{rt.label} runs the zoo model in {precision}, not the "
                                     f"{'/'.join(precisions)} asked for")
                points += make_points(name, threads, protocol, precision=precision, **extra, **fields)
    return points


def read_export_dir(folder: Path) -> tuple[list[Path], dict | None, dict]:
    """The model files of an export folder, the zoo spec and descriptive fields from ``report.json``."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in MODEL_SUFFIXES and p.is_file())
    if not files:
        raise EdgeCNNError(f"{folder} holds no .tflite or .onnx file")
    report = read_report(folder)
    if report is None:
        return files, None, {"model": folder.name}
    return files, report_spec(report), report_info(report, folder)


def read_report(folder: Path) -> dict | None:
    """An export folder's ``report.json`` (None when there is none), checked field by field.

    Only the fields a benchmark uses are kept: ``model`` (a zoo name), ``name``, ``knobs``,
    ``converter``, ``res``, ``num_classes``, ``in_chans``, ``macs`` and per file ``name``,
    ``precision``, ``accuracy``.
    """
    from edgecnn.converters.base import PRECISIONS
    from edgecnn.models import get_spec

    path = folder / "report.json"
    if not path.is_file():
        return None
    try:
        if path.stat().st_size > MAX_REPORT_BYTES:
            raise EdgeCNNError(f"{path} is larger than {MAX_REPORT_BYTES >> 20} MiB: not an export report")
        doc = Doc(json.loads(path.read_bytes()), str(path))
    except (OSError, ValueError) as exc:
        raise EdgeCNNError(f"cannot read {path}: {exc}") from None
    model = doc.get("model", str)
    try:
        tunable = get_spec(model).tunable
    except EdgeCNNError as exc:
        raise EdgeCNNError(f"{path}: {exc}") from None
    report = {"model": model, "name": doc.get("name", str, None), "knobs": check_knobs(doc, "knobs", tunable),
              "converter": doc.get("converter", str, None),
              **{k: doc.get(k, default=None, bound=b) for k, b in
                 (("res", RES), ("num_classes", NUM_CLASSES), ("in_chans", IN_CHANS), ("macs", COUNT))}}
    report["files"] = []
    for i, entry in enumerate(doc.items("files", dict, [])):
        f = Doc(entry, f"{path}: files[{i}]")
        name = f.get("name", str, None) or Path(f.get("path", str)).name
        if not name or Path(name).name != name:
            raise EdgeCNNError(f"{f.where}: name must be a file name, got {shorten(repr(name))}")
        report["files"].append({"name": name, "precision": f.get("precision", str, None, choices=PRECISIONS),
                                "accuracy": f.get("accuracy", default=None, bound=PROBABILITY)})
    return report


def report_spec(report: dict) -> dict | None:
    """The zoo model a checked export report (:func:`read_report`) describes, for PyTorch points."""
    from edgecnn.models import get_spec

    if report["res"] is None:
        return None
    spec = get_spec(report["model"])
    return {"name": spec.name, "knobs": report["knobs"], "res": report["res"],
            "num_classes": report["num_classes"], "in_chans": report["in_chans"],
            "label": report["name"] or spec.name}


def report_info(report: dict, folder: Path) -> dict:
    """``model`` label, ``res``, ``macs``, ``converter`` and per-file precision/accuracy from a checked
    export report."""
    files = {f["name"]: {"precision": f["precision"], "accuracy": f["accuracy"]} for f in report["files"]}
    return {"model": report["name"] or folder.name, "res": report["res"], "macs": report["macs"],
            "converter": report["converter"], "files": files}


def zoo_spec(name: str, res: int | None, knobs: dict, num_classes: int | None = None,
             in_chans: int | None = None) -> tuple[dict, int]:
    """A zoo model's spec for PyTorch points and its MACs at ``res`` (from the meta device)."""
    import torch

    from edgecnn.models import canonical_name, create_model, default_res, get_spec
    from edgecnn.models.registry import resolve_knobs
    from edgecnn.stats import model_stats

    spec = get_spec(name)
    res = spec.check_res(res or default_res(name, **knobs))
    with torch.device("meta"):
        model = create_model(spec.name, num_classes=num_classes, in_chans=in_chans, **knobs)
    macs = model_stats(model, res=res).macs
    return {"name": spec.name, "knobs": resolve_knobs(spec, **knobs), "res": res,
            "num_classes": num_classes, "in_chans": in_chans,
            "label": canonical_name(model.edgecnn_config, res)}, macs


def knob_grid(knobs: dict[str, list | None], resolutions: list[int] | None) -> list[tuple[dict, int | None]]:
    """(knobs, res) for every combination of the knob values and resolutions the user asked for, in
    that order (a knob or resolution not asked for: the model's default)."""
    names = list(knobs)
    return [({k: v for k, v in zip(names, values) if v is not None}, res)
            for *values, res in product(*(knobs[k] or [None] for k in names), resolutions or [None])]


# ---------------------------------------------------------------- running

def load_rows(path: Path | None) -> list[dict]:
    """Rows of a results JSONL (missing file: none; unreadable lines are ignored)."""
    if path is None or not Path(path).is_file():
        return []
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "key" in row:
            rows.append(row)
    return rows


def save_rows(rows: list[dict], path: Path) -> None:
    write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in rows))


def available_here() -> Callable[[dict], str | None]:
    """Why a point cannot run on this machine (its runtime is missing, or it carries a ``skip``
    reason), or None; each runtime is looked up once."""
    reasons: dict[str, str | None] = {}

    def reason(point: dict) -> str | None:
        if point["runtime"] not in reasons:
            reasons[point["runtime"]] = unavailable_reason(point["runtime"])
        return reasons[point["runtime"]] or point.get("skip")

    return reason


def run_sweep(points: list[dict], results: Path | None = None, timeout: float = 600.0,
              runner: Callable[[dict], dict] | None = None, progress: bool = True,
              skip: Callable[[dict], str | None] | None = None) -> list[dict]:
    """Measure every point (skipping those already in ``results``); returns their rows in order.

    ``runner`` measures one point (default: :func:`run_point` locally, with ``timeout`` seconds);
    remote targets pass their own. ``skip`` says why a point cannot run (a 'skipped' row with that
    reason; default :func:`available_here`).
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    runner = runner or (lambda p: run_point(p, timeout=timeout))
    skip = skip or available_here()
    previous = load_rows(results)
    done = {r["key"]: r for r in previous if r.get("status") in ("ok", "skipped")}
    log = [r for r in previous if r["key"] in done]
    rows = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True,
                  disable=not progress) as bar:
        task = bar.add_task("benchmarking", total=len(points))
        for point in points:
            key = point_key(point)
            if key in done:
                rows.append(done[key])
                bar.advance(task)
                continue
            bar.update(task, description=f"{point.get('model')} {point['runtime']} "
                                         f"{point.get('precision') or ''} t={point.get('threads')}")
            reason = skip(point)
            row = error_row(point, reason, status="skipped") if reason else runner(point)
            rows.append(row)
            log = [r for r in log if r["key"] != key] + [row]
            if results is not None:
                save_rows(log, results)
            bar.advance(task)
    return rows


# ---------------------------------------------------------------- reporting

def sort_rows(rows: list[dict]) -> list[dict]:
    """Measured rows by median latency, then skipped, then failed ones."""
    order = {"ok": 0, "skipped": 1}
    return sorted(rows, key=lambda r: (order.get(r.get("status"), 2), r.get("median_ms") or 0.0))


def fastest(rows: list[dict]) -> dict[str, dict[str, dict]]:
    """Per model and precision, the fastest measured row (lowest median): ``{model: {precision: row}}``.

    Rows of different precisions are never compared: an int8 file beating float32 PyTorch says
    nothing about either runtime.
    """
    best: dict[str, dict[str, dict]] = {}
    for r in rows:
        if r.get("status") == "ok" and r.get("median_ms") is not None:
            per = best.setdefault(r.get("model"), {})
            p = r.get("precision") or "unknown"
            if p not in per or r["median_ms"] < per[p]["median_ms"]:
                per[p] = r
    return best


CSV_COLUMNS = ("model", "runtime", "precision", "converter", "threads", "target", "res", "macs", "file_bytes",
               "init_ms", "first_ms", "warmup_ms", "runs", "mean_ms", "median_ms", "p90_ms", "p99_ms",
               "std_ms", "min_ms", "max_ms", "peak_memory_bytes", "gmacs_per_s", "accuracy", "status",
               "error", "path")


def write_csv(rows: list[dict], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for r in sort_rows(rows):
        writer.writerow({k: r.get(k) for k in CSV_COLUMNS})
    write_text(path, buf.getvalue())


def _fmt(v, spec: str = ".2f") -> str:
    return "" if v is None else format(v, spec)


def print_rows(rows: list[dict], title: str, wide: bool = False) -> None:
    """The people's table, sorted by median latency; skipped and failed points last, with reasons
    printed under the table (failures also go to stderr, see the CLI). Narrow outputs drop the
    secondary figures first (``wide``: every column, see :func:`edgecnn.cli.common.print_table`)."""
    from edgecnn.console import human_bytes, human_count, print_table

    table = []
    for r in sort_rows(rows):
        ok = r.get("status") == "ok"
        table.append([
            r.get("model"), r.get("runtime"), r.get("precision") or "", r.get("converter") or "-",
            r.get("threads") or "-",
            _fmt(r.get("median_ms")) if ok else r.get("status"), _fmt(r.get("p90_ms")),
            _fmt(r.get("p99_ms")), _fmt(r.get("std_ms")), _fmt(r.get("init_ms"), ".1f"),
            _fmt(r.get("first_ms")),
            human_bytes(r["peak_memory_bytes"]) if r.get("peak_memory_bytes") is not None else "",
            human_bytes(r["file_bytes"]) if r.get("file_bytes") else "",
            human_count(r["macs"]) if r.get("macs") else "", _fmt(r.get("gmacs_per_s"), ".1f"),
        ])
    print_table(title, ["model", "runtime", "precision", "converter", "threads", "median ms", "p90 ms",
                        "p99 ms", "std ms", "init ms", "first ms", "peak mem", "file", "MACs", "GMAC/s"], table,
                justify=["left"] * 4 + ["right"] * 11, wide=wide,
                optional=["first ms", "init ms", "std ms", "p99 ms", "GMAC/s", "MACs", "converter", "file",
                          "peak mem", "p90 ms"])
    for r in rows:
        if r.get("status") == "skipped":
            print(f"skipped {r.get('model')} [{r['runtime']}]: {r.get('error')}")


def plot(rows: list[dict], path: Path, title: str = "latency vs MACs") -> Path:
    """Latency (median ms) against MACs, and against accuracy when rows have it, as a PNG.

    One marker series per runtime/precision/threads, log-log like the MobileNet paper's trade-off
    figures; each model is labelled once, at its fastest point.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.get("status") == "ok" and r.get("median_ms")]
    axes_for = [("macs", "MACs (multiply-adds per image)", True)]
    if any(r.get("accuracy") is not None for r in ok):
        axes_for.append(("accuracy", "top-1 accuracy", False))
    fig, axes = plt.subplots(1, len(axes_for), figsize=(7 * len(axes_for), 5.5), squeeze=False)
    series: dict[str, list[dict]] = {}
    for r in ok:
        series.setdefault(f"{r['runtime']} {r.get('precision') or ''} "
                          f"{'t=' + str(r['threads']) if r.get('threads') else ''}".strip(), []).append(r)
    for ax, (field, label, logx) in zip(axes[0], axes_for):
        for name, rs in sorted(series.items()):
            pts = [r for r in rs if r.get(field) is not None]
            if not pts:
                continue
            ax.scatter([r[field] for r in pts], [r["median_ms"] for r in pts], label=name, s=22)
        lowest: dict[str, dict] = {}  # label each model once, at its fastest point
        for r in ok:
            if r.get(field) is not None and r["median_ms"] < lowest.get(r.get("model"), {}).get("median_ms", 1e300):
                lowest[r.get("model")] = r
        for model, r in lowest.items():
            ax.annotate(str(model), (r[field], r["median_ms"]), fontsize=6, alpha=0.7,
                        xytext=(3, -8), textcoords="offset points")
        if logx:
            ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("median latency (ms, batch 1)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return Path(path)


def model_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand the user's positional paths: files as they are, folders to their model files."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix.lower() in MODEL_SUFFIXES and q.is_file())
        else:
            out.append(p)
    return out
