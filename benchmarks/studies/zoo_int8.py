"""Issue 15's zoo table: does int8 hold across the families, on a labelled test set?

Every family of the issue is trained from scratch on Fashion-MNIST with the same budget
(``--epochs`` of ``--data``, each family's default recipe and input size) through ``edgecnn
pareto``'s code (train -> export float32 and int8 on the default litert back end, verified ->
score the files on the test split -> time them on LiteRT, 1 thread). Then each checkpoint is also
exported int8 through ``--converter onnx2tf`` and scored on the same images.

Per family: float32 top-1, int8 top-1 on both back ends, the paired int8 - float difference with
its 95% bootstrap interval (same 10,000 test images), the float ops left in each int8 file (the
report's op inspection: ops computing in float besides QUANTIZE/DEQUANTIZE), and int8 / float32
latency (LiteRT, XNNPACK, 1 thread, batch 1).

    python benchmarks/studies/zoo_int8.py --data fashion-mnist --epochs 1
    python benchmarks/studies/zoo_int8.py --data /tmp/fm10k --epochs 2 --models lenet5,mobilenet_v2

Writes ``benchmarks/results/zoo_int8.json`` and ``.md`` (``--results`` changes the stem). A re-run
resumes (the pareto rows and onnx2tf exports found in ``--out`` are reused). Not installed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from edgecnn.benchmarks.measure import machine_info
from edgecnn.io import write_text
from edgecnn.paired import change_text
from edgecnn.pipelines.pareto import ParetoConfig, evaluate_tflite, hits, int8_change, run_pareto

RESULTS = Path(__file__).resolve().parents[1] / "results"
MODELS = ["lenet5", "mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "squeezenet1_1",
          "shufflenet_v2_x1_0", "efficientnet_b0", "efficientnet_lite0", "resnet18", "densenet121", "googlenet"]


def float_ops(export_dir: Path, precision: str = "int8") -> dict:
    """The op inspection of ``precision``'s file in an export folder's report.json."""
    report = json.loads((export_dir / "report.json").read_text())
    f = next(f for f in report["files"] if f["precision"] == precision)
    return {"float_ops": f["float_ops"], "float_op_names": f["float_op_names"], "dequantize": f["dequantize"],
            "verified": (f.get("verification") or {}).get("passed")}


def onnx2tf_int8(row: dict, data: str, out: Path) -> dict:
    """The checkpoint's int8 file through onnx2tf (reused when ``out`` has one), scored on ``data``."""
    from edgecnn.errors import VerificationError
    from edgecnn.pipelines.export import ExportOptions, ModelRequest, export

    t0 = time.perf_counter()
    if not (out / "report.json").is_file():
        try:
            export(ModelRequest(Path(row["checkpoint"])), options=ExportOptions(
                precisions=("int8",), converter="onnx2tf", out=out, measure=False, progress=False))
        except VerificationError:  # written and reported: its accuracy says by how much it is off
            pass
    path = next(out.glob("*_int8.tflite"))
    report = json.loads((out / "report.json").read_text())
    scores = evaluate_tflite(path, data, report["preprocess"])
    return {"top1": scores["top1"], "correct": scores["correct"], **float_ops(out),
            "seconds": round(time.perf_counter() - t0, 1)}


def table(rows: list[dict]) -> str:
    lines = ["| model | res | float32 top-1 | int8 litert | change [95% CI] | float ops | int8 onnx2tf | "
             "change [95% CI] | float ops | int8 / float32 latency (ms, 1 thread) |",
             "| --- | ---: | ---: | ---: | --- | ---: | ---: | --- | ---: | --- |"]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"| {r['model']} | | {r.get('error')} ||||||||")
            continue
        f, q, o = r["float32"], r["int8"], r.get("onnx2tf") or {}
        onnx2tf = (f"{100 * o['top1']:.2f}% | {change_text(o.get('change'))} | {o.get('float_ops', '-')}"
                   if "top1" in o else f"{o.get('error', '-')} | - | -")
        lines.append(f"| {r['model']} | {r['res']} | {100 * f['top1']:.2f}% | {100 * q['top1']:.2f}% | "
                     f"{change_text(r['int8_change'])} | {r['litert_ops']['float_ops']} | {onnx2tf} | "
                     f"{q['latency_ms']['1']:.3f} / {f['latency_ms']['1']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--out", type=Path, default=Path("runs/zoo-int8"))
    ap.add_argument("--results", type=Path, default=RESULTS / "zoo_int8.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = []
    for model in args.models.split(","):  # one at a time: the results file grows as each model finishes
        cfg = ParetoConfig(family=model, data=args.data, epochs=args.epochs, out=str(args.out), workers=0,
                           device="cpu", cpus_per_variant=2, threads=[1])
        (r,) = run_pareto(cfg).rows
        rows.append(r)
        if r.get("status") == "ok" and "onnx2tf" not in r:
            r["litert_ops"] = float_ops(Path(r["export_dir"]))
            try:
                o = onnx2tf_int8(r, args.data, Path(r["export_dir"]).parent / "onnx2tf")
                o["change"] = int8_change(hits(r["float32"]), o.pop("correct"))
                r["onnx2tf"] = o
            except Exception as exc:  # one back end failing on one family is a finding, not the end
                r["onnx2tf"] = {"error": " ".join(str(exc).split())[:300]}
        write(args, rows, time.perf_counter() - t0)


def write(args: argparse.Namespace, rows: list[dict], seconds: float) -> None:
    """The JSON and the Markdown table of the rows so far."""
    report = {"machine": machine_info(), "data": args.data, "epochs": args.epochs,
              "wall_seconds": round(seconds, 1),
              "command": f"python benchmarks/studies/zoo_int8.py --data {args.data} --epochs {args.epochs}",
              "rows": rows}
    write_text(args.results, json.dumps(report, indent=2, default=str) + "\n")
    m = report["machine"]
    text = (f"Trained from scratch on {args.data}, {args.epochs} epoch(s), default recipes; test-split top-1 of "
            f"the exported files; {m['cpu']}, {m['cores']} cores; {report['wall_seconds'] / 60:.0f} min.\n\n"
            + table(rows))
    write_text(args.results.with_suffix(".md"), text)
    print(text)


if __name__ == "__main__":
    main()
