"""What does attention cost at the edge? DeiT-Tiny and MobileViT-XS against MobileNetV2 1.0 and
EfficientNet-Lite0 at 224 px on LiteRT (XNNPACK, this machine's CPU), 1 and 2 threads, float32 and
full int8 (float I/O), random weights.

Per file: median latency (ms), file size (bytes), MACs, and the ops the int8 file leaves in float
(``float_op_names``) and its TRANSPOSE count, from the export reports. Accuracy is not measured here
(random weights); the exports are the default ``edgecnn export`` ones (litert back end).

    python benchmarks/studies/vit_vs_cnn.py                    # exports into /tmp, ~30 min on 2 cores
    python benchmarks/studies/vit_vs_cnn.py --exports-dir exports --min-secs 2

Writes benchmarks/results/vit_vs_cnn.json and vit_vs_cnn.md. Not part of the installed package.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

MODELS = ["deit_tiny", "mobilevit_xs", "mobilenet_v2", "efficientnet_lite0"]
RESULTS = Path(__file__).resolve().parents[1] / "results"


def run_bench(exports: Path, jsonl: Path, min_secs: float) -> None:
    """``edgecnn bench`` over the four models: exports each at 224 px, then times every file."""
    cmd = [sys.executable, "-m", "edgecnn", "bench", *MODELS, "--res", "224", "--quantize", "float32,int8",
           "--runtime", "litert", "--threads", "1,2", "--min-secs", str(min_secs),
           "--exports-dir", str(exports), "--results", str(jsonl)]
    subprocess.run(cmd, check=True)


def collect(exports: Path, jsonl: Path) -> list[dict]:
    """One row per file and thread count: bench numbers plus the export report's op inspection."""
    inspected = {}
    for report in exports.glob("*/report.json"):
        for f in json.loads(report.read_text())["files"]:
            inspected[Path(f["path"]).name] = f
    rows = []
    for line in jsonl.read_text().splitlines():
        r = json.loads(line)
        f = inspected.get(Path(r["path"]).name, {})
        rows.append({"model": r["model"], "precision": r["precision"], "threads": r["threads"],
                     "median_ms": r.get("median_ms"), "file_bytes": r.get("file_bytes"), "macs": r.get("macs"),
                     "status": r.get("status"), "op_count": f.get("op_count"), "transpose": f.get("transpose"),
                     "float_ops": f.get("float_ops") if r["precision"] != "float32" else None,
                     "float_op_names": f.get("float_op_names") if r["precision"] != "float32" else None})
    return rows


def markdown(rows: list[dict], machine: dict) -> str:
    lines = [f"LiteRT (XNNPACK) on {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, 224 px, random "
             "weights; median latency of `edgecnn bench`; float ops and TRANSPOSEs from the export report.", "",
             "| model | precision | MACs | size (MB) | 1 thread (ms) | 2 threads (ms) | ops | TRANSPOSE | "
             "float ops in the int8 file |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    by_file: dict[tuple, dict] = {}
    for r in rows:
        by_file.setdefault((r["model"], r["precision"]), {})[r["threads"]] = r
    for (model, precision), t in by_file.items():
        r = next(iter(t.values()))
        ms = [f"{t[n]['median_ms']:.2f}" if n in t and t[n]["median_ms"] else "-" for n in (1, 2)]
        floats = ", ".join(f"{k} {v}" for k, v in (r["float_op_names"] or {}).items()) or "-"
        lines.append(f"| {model} | {precision} | {r['macs'] / 1e6:.0f} M | {r['file_bytes'] / 1e6:.2f} | {ms[0]} | "
                     f"{ms[1]} | {r['op_count']} | {r['transpose']} | {floats} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--exports-dir", type=Path, help="where the exports go (default: a temporary folder)")
    p.add_argument("--min-secs", type=float, default=2.0, help="seconds of timed runs per point (default 2)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        exports = args.exports_dir or Path(tmp) / "exports"
        jsonl = Path(tmp) / "bench.jsonl"
        run_bench(exports, jsonl, args.min_secs)
        machine = json.loads(jsonl.read_text().splitlines()[0]).get("machine", {})
        rows = collect(exports, jsonl)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "vit_vs_cnn.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    (RESULTS / "vit_vs_cnn.md").write_text(markdown(rows, machine))
    print(markdown(rows, machine))


if __name__ == "__main__":
    main()
