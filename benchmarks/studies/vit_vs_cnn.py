"""What does attention cost at the edge? DeiT-Tiny and MobileViT-XS against MobileNetV2 1.0 and
EfficientNet-Lite0 at 224 px on LiteRT (XNNPACK, this machine's CPU), 1 and 2 threads, float32 and
full int8 (float I/O); then the same four trained on Fashion-MNIST with one budget.

Latency part (random weights, 224 px): per file, median latency (ms), file size (bytes), MACs, and
the ops the int8 file leaves in float (``float_op_names``) and its TRANSPOSE count, from the export
reports; the exports are the default ``edgecnn export`` ones (litert back end).

Accuracy part (``--data``, ``--accuracy-res`` px, ``--epochs``): ``edgecnn pareto`` over the four
names: each model trained from scratch with its family's default recipe for the same number of
epochs, exported float32 and int8, and the exported files scored on the data's test split (top-1,
int8 drop), then timed at that resolution on LiteRT.

    python benchmarks/studies/vit_vs_cnn.py --data fashion-mnist     # ~60 min on 2 cores
    python benchmarks/studies/vit_vs_cnn.py --exports-dir exports --min-secs 2 --skip-accuracy

Writes benchmarks/results/vit_vs_cnn.json and vit_vs_cnn.md. Not part of the installed package.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from edgecnn.paired import change_text

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


def accuracy(data: str, res: int, epochs: int, out: Path) -> list[dict]:
    """``edgecnn pareto`` over :data:`MODELS` at ``res`` px: trained, exported, scored, timed (1 and 2 threads)."""
    from edgecnn.pipelines.pareto import ParetoConfig, run_pareto

    cfg = ParetoConfig(family=",".join(MODELS), data=data, resolutions=[res], epochs=epochs, out=str(out),
                       workers=0, device="cpu", cpus_per_variant=os.cpu_count() or 1, threads=[1, 2])
    return run_pareto(cfg).rows


def accuracy_markdown(rows: list[dict], data: str, res: int, epochs: int) -> str:
    lines = ["", f"Trained from scratch on {data}: {epochs} epoch(s) at {res} px, each family's default recipe "
             "(`edgecnn pareto`); top-1 of the exported files on the test split; latency of those files.", "",
             "| model | params | MACs | float32 top-1 | int8 top-1 | int8 - float32 (points) [95% CI] | int8 ms, 1 thread | "
             "float32 ms, 1 thread | train s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"| {r['model']} | {r.get('error')} |||||||")
            continue
        f, q, c = r["float32"], r["int8"], r["int8_change"]
        lines.append(f"| {r['model']} | {r['params'] / 1e6:.2f} M | {r['macs'] / 1e6:.1f} M | {100 * f['top1']:.2f}% | "
                     f"{100 * q['top1']:.2f}% | {change_text(c)} | "
                     f"{q['latency_ms'].get('1', 0):.3f} | "
                     f"{f['latency_ms'].get('1', 0):.3f} | {r['seconds']['train']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--exports-dir", type=Path, help="where the exports go (default: a temporary folder)")
    p.add_argument("--min-secs", type=float, default=2.0, help="seconds of timed runs per point (default 2)")
    p.add_argument("--data", default="fashion-mnist", help="training data of the accuracy part (default fashion-mnist)")
    p.add_argument("--accuracy-res", type=int, default=64, help="input size of the accuracy part (px, default 64)")
    p.add_argument("--epochs", type=int, default=1, help="training epochs of every model (default 1)")
    p.add_argument("--out", type=Path, default=Path("runs/vit-vs-cnn"), help="the accuracy part's pareto folder")
    p.add_argument("--skip-latency", action="store_true", help="keep the 224 px rows already in the results")
    p.add_argument("--skip-accuracy", action="store_true", help="keep the accuracy rows already in the results")
    args = p.parse_args()
    saved = RESULTS / "vit_vs_cnn.json"
    report = json.loads(saved.read_text()) if saved.is_file() else {"machine": {}, "rows": []}
    if not args.skip_latency:
        with tempfile.TemporaryDirectory() as tmp:
            exports = args.exports_dir or Path(tmp) / "exports"
            jsonl = Path(tmp) / "bench.jsonl"
            run_bench(exports, jsonl, args.min_secs)
            machine = json.loads(jsonl.read_text().splitlines()[0]).get("machine", {})
            report.update(machine=machine, rows=collect(exports, jsonl))
    text = markdown(report["rows"], report["machine"]) if report["rows"] else ""
    if not args.skip_accuracy:
        rows = accuracy(args.data, args.accuracy_res, args.epochs, args.out)
        report["accuracy"] = {"data": args.data, "res": args.accuracy_res, "epochs": args.epochs, "rows": rows}
    if report.get("accuracy"):
        a = report["accuracy"]
        text += accuracy_markdown(a["rows"], a["data"], a["res"], a["epochs"])
    RESULTS.mkdir(exist_ok=True)
    saved.write_text(json.dumps(report, indent=2, default=str) + "\n")
    (RESULTS / "vit_vs_cnn.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
