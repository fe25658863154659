"""The reference grid of the bench issue, measured on this machine and written under benchmarks/results/.

Models: MobileNetV1 alpha {0.25, 0.5, 0.75, 1.0} x res {128, 160, 192, 224}, MobileNetV2 1.0/224,
SqueezeNet 1.1, EfficientNet-Lite0, EfficientNet-B0 and ResNet-50, each exported as float32 and int8
``.tflite`` (random weights: latency, memory and size are real; accuracy is not measured here).
Runtimes: LiteRT (XNNPACK) at 1 and 2 threads; ONNX Runtime CPU fp32 and PyTorch eager fp32 at
2 threads. Outputs: ``reference.jsonl`` (resumable: re-running skips measured points and reuses
complete export folders), ``reference.csv``, ``reference.png`` (latency vs MACs), ``reference.md``
(the README table) and ``machine.json``. Run it on a quiet machine::

    nice python benchmarks/studies/reference_results.py [--out benchmarks/results] [--exports-dir exports/reference]
"""

from __future__ import annotations

import argparse
import json
import sys
from itertools import product
from pathlib import Path

from edgecnn.benchmarks.measure import Protocol, machine_info
from edgecnn.benchmarks.sweep import (plot, points_for_files, read_export_dir, run_sweep, sort_rows, write_csv,
                                      zoo_spec)
from edgecnn.pipelines.bench import ensure_export
from edgecnn.errors import EdgeCNNError
from edgecnn.io import write_text

GRID = ([("mobilenet_v1", {"alpha": a}, r) for a, r in product((0.25, 0.5, 0.75, 1.0), (128, 160, 192, 224))]
        + [("mobilenet_v2", {"alpha": 1.0}, 224), ("squeezenet1_1", {}, 224),
           ("efficientnet_lite0", {}, 224), ("efficientnet_b0", {}, 224), ("resnet50", {}, 224)])
PRECISIONS = ["float32", "int8"]


def grid_points(exports_dir: Path, protocol: Protocol, litert_threads: list[int], other_threads: list[int]) -> list[dict]:
    """Every reference point; exports (or reuses) each model's folder on the way."""
    points = []
    for name, knobs, res in GRID:
        spec, macs = zoo_spec(name, res, knobs)
        files, _, info = read_export_dir(ensure_export(spec, PRECISIONS, exports_dir))
        info["macs"] = info.get("macs") or macs
        files = [f for f in files if info["files"].get(f.name, {}).get("precision") in PRECISIONS]
        points += points_for_files(files, litert_threads, protocol, ["litert"], None, info)
        points += points_for_files([], other_threads, protocol, ["onnxruntime", "torch"], spec, info)
    return points


def markdown(rows: list[dict]) -> str:
    """The README table: one line per measured point, fastest first (ms per image, batch 1)."""
    head = ("| model | runtime | precision | threads | median ms | p90 ms | peak memory MiB | file MiB "
            "| MMACs | GMAC/s |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = []
    for r in sort_rows(rows):
        if r.get("status") != "ok":
            continue
        file_mib = f"{r['file_bytes'] / 2**20:.2f}" if r.get("file_bytes") else ""
        lines.append(f"| {r['model']} | {r['runtime']} | {r['precision']} | {r.get('threads') or '-'} "
                     f"| {r['median_ms']:.2f} | {r['p90_ms']:.2f} | {r['peak_memory_bytes'] / 2**20:.1f} "
                     f"| {file_mib} | {r['macs'] / 1e6:.0f} | {r['gmacs_per_s']:.1f} |")
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/studies/reference_results.py",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="default benchmarks/results")
    parser.add_argument("--exports-dir", type=Path, default=Path("exports/reference"),
                        help="where the grid's exports go or are reused (default exports/reference)")
    parser.add_argument("--runs", type=int, default=50, help="minimum measured runs per point (default 50)")
    parser.add_argument("--min-secs", type=float, default=2.0, help="minimum measuring seconds per point (default 2)")
    args = parser.parse_args(argv)
    protocol = Protocol(num_runs=args.runs, min_secs=args.min_secs, warmup_runs=5, warmup_min_secs=1.0)
    try:
        points = grid_points(args.exports_dir, protocol, [1, 2], [2])
        rows = run_sweep(points, args.out / "reference.jsonl", progress=True)
        write_csv(rows, args.out / "reference.csv")
        plot(rows, args.out / "reference.png", title=f"edgecnn reference: {machine_info()['cpu']}")
        write_text(args.out / "reference.md", markdown(rows))
        write_text(args.out / "machine.json", json.dumps(
            {"machine": machine_info(), "protocol": protocol.to_dict(),
             "command": "python benchmarks/studies/reference_results.py " + " ".join(argv or sys.argv[1:])},
            indent=2) + "\n")
    except EdgeCNNError as exc:
        print(f"reference_results: error: {exc}", file=sys.stderr)
        return exc.exit_code
    failed = [r for r in rows if r.get("status") == "error"]
    for r in failed:
        print(f"reference_results: {r['model']} {r['runtime']}: {r.get('error')}", file=sys.stderr)
    print(f"{len(rows) - len(failed)} of {len(rows)} points measured; results in {args.out}/")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
